"""iMAML: the implicit meta-gradient of a proximal inner loop (NumPy reference).

Dimension legend: T tasks, K support points, Q query points, P parameters,
s = inner_steps, c = cg_steps.

Rajeswaran, Finn, Kakade & Levine (2019), "Meta-Learning with Implicit Gradients",
arXiv:1909.04630. The inner problem of task t is the proximal (regularised) support loss

    φ*(θ) = argmin_φ  L_S(φ) + (λ/2) ‖φ − θ‖²                      (paper eq. 3)

approximated by s gradient steps on it from φ_0 = θ:

    φ_{k+1} = φ_k − α (∇L_S(φ_k) + λ (φ_k − θ))                     (P,)

At the optimum ∇L_S(φ*) + λ (φ* − θ) = 0; differentiating in θ gives
(H_S(φ*) + λ I) dφ*/dθ = λ I, so dφ*/dθ = (I + H_S(φ*)/λ)⁻¹ (symmetric), and

    ∇M = (1/T) Σ_t (I + H_S,t(φ_s)/λ)⁻¹ ∇L_Q,t(φ_s)                 (P,)   (paper eq. 6)

evaluated at the last iterate φ_s in place of φ*. Each solve is conjugate gradient on
v ↦ v + H_S(φ_s) v / λ, one HVP (model._hvp) per CG step. Nothing is stored along the
inner loop: memory is O(P) whatever s is (the point of iMAML; measured in
tests/test_imaml.py). The gradient is exact only when φ_s = φ* (and CG has converged):
it is not the derivative of the s-step loss, which MAML computes.

Derivation: docs/derivations/imaml.md. The numba backend has no iMAML kernels: this
NumPy reference runs for every backend.
"""
import numpy as np

from ..validation import check_model, positive_float, positive_int, step_count
from .maml import check_batch, check_work

CG_STEPS, CG_TOL = 5, 1e-10     # defaults: the paper uses 5 CG steps (sec. 4, appendix)


def proximal_inner_loop(model, theta, xs, ys, alpha, inner_steps, lam):
    """φ_s of s gradient steps on L_S(φ) + (λ/2)‖φ − θ‖² from φ_0 = θ (unchecked; O(P))."""
    phi = theta
    for _ in range(inner_steps):
        _, g = model._loss_and_grad(phi, xs, ys)                         # ∇L_S(φ_k) (P,)
        phi = phi - alpha * (g + lam * (phi - theta))                    # φ_{k+1} (P,)
    return phi


def conjugate_gradient(matvec, b, cg_steps, cg_tol):
    """x ≈ A⁻¹ b for symmetric A given as ``matvec``: at most ``cg_steps`` CG steps from
    x_0 = 0, stopping when ‖r‖ ≤ cg_tol·‖b‖ (Hestenes & Stiefel 1952; Nocedal & Wright
    Algorithm 5.2). Returns (x (P,), steps taken, ‖r‖/‖b‖, indefinite). A direction with
    pᵀAp ≤ 0 (A not positive definite: H_S has an eigenvalue ≤ −λ, which CG cannot solve)
    ends the solve there with ``indefinite`` True and the last iterate x."""
    x, r = np.zeros_like(b), b.copy()                                    # r = b − A x
    p, rr, bnorm = r.copy(), float(r @ r), float(np.linalg.norm(b))
    k, indefinite = 0, False
    while k < cg_steps and np.sqrt(rr) > cg_tol * bnorm:
        Ap = matvec(p)                                                   # (P,)
        pAp = float(p @ Ap)
        if not pAp > 0.0:
            indefinite = True
            break
        a = rr / pAp                                                     # step length
        x, r = x + a * p, r - a * Ap
        rr, rr_old = float(r @ r), rr
        p = r + (rr / rr_old) * p                                        # next A-conjugate p
        k += 1
    return x, k, (np.sqrt(rr) / bnorm if bnorm else 0.0), indefinite


def task_imaml_gradient(model, theta, xs, ys, xq, yq, alpha, inner_steps, lam, cg_steps,
                        cg_tol):
    """One task's (L_Q(φ_s), (I + H_S(φ_s)/λ)⁻¹ ∇L_Q(φ_s) (P,), (CG steps, relative
    residual, indefinite)) (unchecked)."""
    phi = proximal_inner_loop(model, theta, xs, ys, alpha, inner_steps, lam)
    loss_q, g_q = model._loss_and_grad(phi, xq, yq)                     # ∇L_Q(φ_s) (P,)
    matvec = lambda v: v + model._hvp(phi, xs, ys, v) / lam             # noqa: E731  (I + H/λ) v
    g, *report = conjugate_gradient(matvec, g_q, cg_steps, cg_tol)
    return loss_q, g, report


def check_imaml_args(model, theta, batch, alpha, inner_steps, lam, cg_steps=CG_STEPS,
                     cg_tol=CG_TOL):
    """The validated (θ, batch, α, s, λ, cg_steps, cg_tol); InputError names the argument."""
    theta = check_model(model).check_theta(theta)
    batch = check_batch(model, batch)
    alpha = positive_float("alpha", alpha)
    inner_steps = step_count("inner_steps", inner_steps)
    lam = positive_float("lam", lam)
    cg_steps = positive_int("cg_steps", cg_steps)
    cg_tol = positive_float("cg_tol", cg_tol)
    check_work(model, batch.num_tasks, batch.x_support.shape[1], batch.x_query.shape[1],
               0, "numpy", False)                                        # a few (P,) vectors
    return theta, batch, alpha, inner_steps, lam, cg_steps, cg_tol


def imaml_gradient(model, theta, batch, alpha, inner_steps, lam, cg_steps=CG_STEPS,
                   cg_tol=CG_TOL):
    """(meta_loss, implicit meta-gradient (P,)) of iMAML for a TaskBatch.

    meta_loss = (1/T) Σ_t L_Q,t(φ_s^{(t)}), with φ_s the proximal inner loop's last iterate
    (step α, ``inner_steps`` steps, regularisation λ = ``lam`` > 0); the gradient is
    (1/T) Σ_t (I + H_S,t(φ_s)/λ)⁻¹ ∇L_Q,t(φ_s) by at most ``cg_steps`` CG steps each, with
    relative residual tolerance ``cg_tol``. Memory O(P) for any inner_steps. NumPy only.
    The CG diagnostics per task are in ``imaml_gradient_info``.
    """
    return imaml_gradient_info(model, theta, batch, alpha, inner_steps, lam, cg_steps,
                               cg_tol)[:2]


def imaml_gradient_info(model, theta, batch, alpha, inner_steps, lam, cg_steps=CG_STEPS,
                        cg_tol=CG_TOL):
    """imaml_gradient plus {"cg_steps": (T,) steps taken, "residual": (T,) ‖r‖/‖b‖,
    "indefinite": (T,) bool: I + H_S/λ was not positive definite (raise λ)}."""
    theta, batch, alpha, inner_steps, lam, cg_steps, cg_tol = check_imaml_args(
        model, theta, batch, alpha, inner_steps, lam, cg_steps, cg_tol)
    return imaml_unchecked(model, theta, batch, alpha, inner_steps, lam, cg_steps, cg_tol,
                           info=True)


def imaml_unchecked(model, theta, batch, alpha, inner_steps, lam, cg_steps, cg_tol,
                    info=False):
    """imaml_gradient without the argument checks (the trainer's own θ and batch)."""
    total_loss, total_grad, reports = 0.0, np.zeros(model.num_params), []
    for t in range(batch.num_tasks):
        loss_q, g, report = task_imaml_gradient(model, theta, *batch.task(t), alpha,
                                                inner_steps, lam, cg_steps, cg_tol)
        total_loss += loss_q
        total_grad += g
        reports.append(report)
    T = batch.num_tasks
    if not info:
        return total_loss / T, total_grad / T
    steps, residual, indefinite = (np.array(c) for c in zip(*reports))
    return total_loss / T, total_grad / T, {"cg_steps": steps, "residual": residual,
                                            "indefinite": indefinite}


def proximal_meta_loss(model, theta, batch, alpha, inner_steps, lam):
    """(1/T) Σ_t L_Q,t(φ_s^{(t)}(θ)): the objective iMAML's gradient approximates, which it
    equals the derivative of when φ_s = φ* (NumPy; for finite differences)."""
    theta, batch, alpha, inner_steps, lam, _, _ = check_imaml_args(
        model, theta, batch, alpha, inner_steps, lam)
    losses = [model._loss_value(proximal_inner_loop(model, theta, xs, ys, alpha,
                                                    inner_steps, lam), xq, yq)
              for xs, ys, xq, yq in (batch.task(t) for t in range(batch.num_tasks))]
    return float(np.mean(losses))
