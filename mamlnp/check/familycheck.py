"""Checks of the MAML family beyond MAML: iMAML's implicit gradient and ANIL.

Dimension legend: T tasks, K support points, Q query points, P parameters,
s = inner_steps.

iMAML (mamlnp.meta.imaml), two independent routes:
  * the exact linear solve: g = (1/T) Σ_t (I + H_t/λ)⁻¹ ∇L_Q,t(φ_s) with the dense (P, P)
    Hessian H_t = H_S,t(φ_s) (P HVPs, ``dense_hessian``) and numpy.linalg.solve, against
    CG run to convergence (cg_steps = 4P, tolerance 1e-14): tolerance 1e-8;
  * centred finite differences of the proximal meta-loss θ ↦ (1/T) Σ_t L_Q,t(φ_s(θ)) with
    the inner problem solved to convergence (s = 200 steps of α = 0.05 with λ = 4: where
    the proximal loss is strongly convex near φ*, φ_s − φ* shrinks geometrically). The row
    certifies it: the proximal gradient ‖∇L_S(φ_s) + λ(φ_s − θ)‖ must be ≤ 1e-8, else the
    row is a SKIP naming the residual. The
    implicit gradient is the derivative at φ* only; with s = 20 steps, before convergence,
    it must differ from the FD of the 20-step loss ("differ" row, rel > 1e-4). Smooth
    activations only: ReLU's kinks make φ*(θ) non-smooth where a pre-activation is 0,
    and 200 iterates do not keep a safe margin from them.
MAML++ (mamlnp.meta.mamlpp): ∇_θ and ∇_α (LSLR steps (s, L)) of the multi-step loss with
the annealed MSL weights, against centred FD of mamlpp_meta_loss in θ and in α; its first
order version (derivative-order annealing's first epochs) must differ from the FD.
ANIL (mamlnp.meta.anil): its meta-gradient against centred FD of the head-only objective,
written independently (the inner step updates θ[head] alone with ∇L_S's head entries).
"""
import numpy as np

from ..meta import anil, imaml, mamlpp
from .fdcheck import compare, dense_hessian, directions, fd_directional, skipped

LAM, ALPHA, CONVERGED_STEPS, EARLY_STEPS = 4.0, 0.05, 200, 20
CONVERGED = 1e-8    # ‖∇L_S(φ_s) + λ(φ_s − θ)‖ at most this: the inner problem counts as solved


def dense_imaml_gradient(model, theta, batch, alpha, inner_steps, lam):
    """(1/T) Σ_t (I + H_S,t(φ_s)/λ)⁻¹ ∇L_Q,t(φ_s) with dense Hessians and a direct solve."""
    total, eye = np.zeros(model.num_params), np.eye(model.num_params)
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        phi = imaml.proximal_inner_loop(model, theta, xs, ys, alpha, inner_steps, lam)
        H = dense_hessian(model, phi, xs, ys)                            # (P, P)
        total += np.linalg.solve(eye + H / lam, model._loss_and_grad(phi, xq, yq)[1])
    return total / batch.num_tasks


def check_imaml_dense(model, theta, batch, alpha=ALPHA, inner_steps=EARLY_STEPS, lam=LAM,
                      tol=1e-8, label="iMAML CG vs dense solve"):
    """imaml_gradient (CG to convergence) vs ``dense_imaml_gradient``."""
    P = model.num_params
    _, g, info = imaml.imaml_gradient_info(model, theta, batch, alpha, inner_steps, lam,
                                           4 * P, 1e-14)
    note = f"CG steps {info['cg_steps'].max()}, residual {info['residual'].max():.0e}"
    if info["indefinite"].any():
        return skipped(label, tol, f"I + H/lam indefinite ({note}): CG does not apply")
    return compare(label, g, dense_imaml_gradient(model, theta, batch, alpha, inner_steps, lam),
                   tol, note=note)


def check_imaml_fd(model, theta, batch, alpha=ALPHA, inner_steps=CONVERGED_STEPS, lam=LAM,
                   eps=1e-5, tol=1e-6, differ=False, num_directions=None, seed=0, label=None):
    """imaml_gradient vs centred FD of imaml.proximal_meta_loss at the same s; ``differ``:
    the row passes only if they disagree by rel > tol (an unconverged inner loop)."""
    label = label or f"iMAML s={inner_steps} vs FD" + (" (must differ)" if differ else "")
    residual = max(proximal_residual(model, theta, *batch.task(t)[:2], alpha, inner_steps, lam)
                   for t in range(batch.num_tasks))
    if not differ and residual > CONVERGED:
        return skipped(label, tol, f"inner loop not converged: residual {residual:.1e}")
    _, g = imaml.imaml_gradient(model, theta, batch, alpha, inner_steps, lam,
                                4 * model.num_params, 1e-14)
    U = directions(model.num_params, num_directions, seed)               # (M, P)
    fd = fd_directional(lambda t: imaml.proximal_meta_loss(model, t, batch, alpha,
                                                           inner_steps, lam), theta, U, eps)
    return compare(label, U @ g, fd, tol, "differ" if differ else "agree")


def proximal_residual(model, theta, xs, ys, alpha, inner_steps, lam):
    """‖∇L_S(φ_s) + λ(φ_s − θ)‖: 0 exactly at the inner optimum φ*."""
    phi = imaml.proximal_inner_loop(model, theta, xs, ys, alpha, inner_steps, lam)
    return float(np.linalg.norm(model._loss_and_grad(phi, xs, ys)[1] + lam * (phi - theta)))


def head_only_meta_loss(model, theta, batch, alpha, inner_steps):
    """(1/T) Σ_t L_Q,t after s steps updating θ[head] alone: ANIL's objective, written
    without the masked α of mamlnp.meta.anil."""
    head, losses = anil.head_slice(model), []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        th = theta.copy()
        for _ in range(inner_steps):
            th[head] -= alpha * model._loss_and_grad(th, xs, ys)[1][head]   # head step
        losses.append(model._loss_value(th, xq, yq))
    return float(np.mean(losses))


def check_anil(model, theta, batch, alpha, inner_steps, eps=1e-5, tol=1e-6, label=None,
               path="head"):
    """anil_gradient (its ``path``) vs centred FD of ``head_only_meta_loss`` (every direction)."""
    label = label or f"ANIL ({path}) meta-grad s={inner_steps} vs FD(head-only loss)"
    _, g = anil.anil_gradient(model, theta, batch, alpha, inner_steps, backend="numpy", path=path)
    P = model.num_params
    fd = fd_directional(lambda t: head_only_meta_loss(model, t, batch, alpha, inner_steps),
                        theta, np.eye(P), eps)
    return compare(label, g, fd, tol)


def check_mamlpp(model, theta, batch, inner_steps=3, epoch=2, msl_epochs=10, eps=1e-5,
                 tol=1e-6, seed=0, tag=""):
    """Three rows: MAML++ ∇_θ and ∇_α vs FD (every direction), and first order (must differ)."""
    L = len(model.layout)
    lslr = np.random.default_rng(seed).uniform(0.05, 0.15, (inner_steps, L))   # (s, L)
    w = mamlpp.msl_weights(inner_steps, epoch, msl_epochs)                      # (s,)
    _, g_t, g_a = mamlpp.mamlpp_gradient(model, theta, batch, lslr, w)
    fd_t = fd_directional(lambda t: mamlpp.mamlpp_meta_loss(model, t, batch, lslr, w), theta,
                          np.eye(model.num_params), eps)
    fd_a = fd_directional(lambda a: mamlpp.mamlpp_meta_loss(
        model, theta, batch, a.reshape(lslr.shape), w), lslr.ravel(), np.eye(lslr.size), eps)
    g_fo = mamlpp.mamlpp_gradient(model, theta, batch, lslr, w, first_order=True)[1]
    name = f"{tag} MAML++ s={inner_steps} MSL w={np.round(w, 2).tolist()}"
    return [compare(f"{name} dM/dtheta vs FD", g_t, fd_t, tol),
            compare(f"{name} dM/dalpha (LSLR {inner_steps}x{L}) vs FD", g_a.ravel(), fd_a, tol),
            compare(f"{name} first order vs FD (must differ)", g_fo, fd_t, 1e-4, "differ")]


def family_checks(draw, tag, activation, quick, eps=1e-5):
    """The iMAML, MAML++ and ANIL rows for one activation; ``draw()`` gives (model, θ, batch).
    A case where I + H_S/λ is indefinite (CG cannot solve it) is a SKIP row saying so.
    iMAML rows only without batch norm: on the cases' K = 5 support points batch norm makes
    the support loss far from convex (H_S eigenvalues down to about −5), so at these α, λ the
    proximal loop often does not converge and I + H_S/λ is often indefinite (seeds 0-2,
    λ = 10: 6 of the 15 dense and converged-FD rows would be SKIPs); tests/test_imaml.py checks a batch-norm case that is not."""
    model, theta, batch = draw()
    lam, rows = LAM, []
    if not model.batch_norm:
        rows.append(check_imaml_dense(model, theta, batch, lam=lam,
                                      label=f"{tag} iMAML CG vs dense solve"))
    if activation != "relu" and not model.batch_norm:
        rows.append(check_imaml_fd(model, theta, batch, lam=lam, eps=eps,
                                   label=f"{tag} iMAML s={CONVERGED_STEPS} (converged) vs FD"))
        rows.append(check_imaml_fd(model, theta, batch, inner_steps=EARLY_STEPS, lam=lam, eps=eps,
                                   tol=1e-4, differ=True,
                                   label=f"{tag} iMAML s={EARLY_STEPS} vs FD (must differ)"))
    rows += check_mamlpp(model, theta, batch, 2 if quick else 3, eps=eps, tag=tag)
    for s in ((1,) if quick else (1, 3)):
        for path in anil.PATHS:
            rows.append(check_anil(model, theta, batch, ALPHA, s, eps, path=path,
                                   label=f"{tag} ANIL ({path}) s={s} vs FD(head-only loss)"))
    return rows
