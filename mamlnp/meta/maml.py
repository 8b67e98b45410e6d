"""MAML: inner-loop adaptation and the exact meta-gradient (NumPy reference).

Dimension legend: T tasks, K support points, Q query points, D inputs,
O outputs, P parameters, s = inner_steps.

Finn, Abbeel & Levine (2017), Algorithm 2, with s inner SGD steps per task:

    θ_0 = θ,   θ_{k+1} = θ_k − α ∇L_S(θ_k)            (support loss L_S)
    meta-loss  M(θ) = (1/T) Σ_t L_Q,t(θ_s^{(t)})          (query loss L_Q)

The chain rule through the inner steps, using dθ_{k+1}/dθ_k = I − α H_S(θ_k),
gives the exact meta-gradient by reverse accumulation (docs/derivations/meta-gradient.md):

    g ← ∇L_Q(θ_s)
    for k = s−1, …, 0:   g ← g − α H_S(θ_k) g            (one HVP per step)
    ∇M = (1/T) Σ_t g^{(t)}

Memory is O(s·P) for the exact meta-gradient only: its reverse pass needs the iterates
θ_0 … θ_{s−1} (kept, never a graph). Adaptation, the meta-loss, the first-order gradient
and the evaluation curve keep one iterate at a time: O(P).
``first_order=True`` (FOMAML) drops the H_S terms: ∇M ≈ (1/T) Σ_t ∇L_Q(θ_s).

``alpha`` may be a scalar or a per-parameter vector (P,) (Meta-SGD's learned
step sizes); the formulas above then read α ⊙ ·, and H_S(θ_k)(α ⊙ g).

This module is the reference (``backend="numpy"``): one task at a time, one
readable line per equation. ``backend="numba"`` runs the same maths in the compiled kernel
set of the model's kind (mamlnp/fast/, ``mamlnp.fast.kernels_for``), tested against this
file; where the kind compiles no such method (or not for this form of α) this file runs.
"""
import numpy as np

from ..errors import InputError
from ..tasks.base import TaskBatch
from ..validation import (as_float64, boolean, check_memory, check_model, choice,
                          positive_float, probability_rows, step_count)

BACKENDS = ("numpy", "numba")
DEFAULT_BACKEND = "numba"


# ---- argument checks shared by adapt, meta_gradient and the variants --------------


def check_alpha(model, alpha, schedule=False):
    """α: a positive scalar step size, or a finite (P,) vector of per-parameter steps; with
    ``schedule`` also a finite (S, P) table, one row per inner step (``step_alpha``).

    The vector form is Meta-SGD's learned α (Li et al. 2017), which is left
    unconstrained there, so its entries may be zero or negative after training. The table
    is MAML++'s learned per-step, per-layer steps (mamlnp.meta.mamlpp.expand), for adaptation.
    """
    if np.ndim(alpha) == 0:
        return positive_float("alpha", alpha)
    if schedule and np.ndim(alpha) == 2:
        a = as_float64("alpha", alpha, 2)
        if a.shape[0] < 1 or a.shape[1] != model.num_params:
            raise InputError(f"alpha: expected an (S >= 1, P={model.num_params}) table of "
                             f"per-step step sizes, got shape {a.shape}")
        return a
    return as_float64("alpha", alpha, 1, (model.num_params,))


def step_alpha(alpha, k):
    """The step size of inner step k (0-based): α itself, or row min(k, S−1) of an (S, P)
    table (steps past the table reuse its last row)."""
    return alpha[min(k, alpha.shape[0] - 1)] if np.ndim(alpha) == 2 else alpha


def check_batch(model, batch):
    if not isinstance(batch, TaskBatch):
        raise InputError(f"batch: expected a mamlnp.TaskBatch, got {type(batch).__name__}")
    D, O = model.sizes[0], model.sizes[-1]
    if batch.x_support.shape[2] != D or batch.y_support.shape[2] != O:
        raise InputError(
            f"batch: expected inputs of dim D={D} and outputs of dim O={O} (model sizes "
            f"{model.sizes}), got x_support {batch.x_support.shape} and y_support "
            f"{batch.y_support.shape}")
    if getattr(model, "loss_name", None) == "softmax_xent":
        probability_rows("batch.y_support", batch.y_support)
        probability_rows("batch.y_query", batch.y_query)
    return batch


def check_backend(backend):
    return choice("backend", DEFAULT_BACKEND if backend is None else backend, BACKENDS)


def check_work(model, T, K, Q, steps, backend, stored, name="inner_steps"):
    """Refuse (InputError naming ``name``) a call whose arrays would not fit in memory, before
    anything is allocated. NumPy: the s+1 iterates of the exact reverse pass when ``stored``,
    else a few (P,) vectors; numba: what the kernel set says its workspace takes."""
    fast = kernels_for(model, backend, "workspace_bytes")
    if fast is not None:
        nbytes, what = fast.workspace_bytes(T, K, Q, steps), "the compiled kernels' workspace"
    else:
        P = int(model.num_params)
        nbytes = 8 * ((steps + 1) * P if stored else 4 * P)
        what = "the inner iterates (P,) each" if stored else "(P,) vectors"
    check_memory(name, steps, nbytes, what)


def kernels_for(model, backend, method="meta_gradient", alpha=0.0):
    """The kernel set of the model's kind (mamlnp/fast/kernelset.py) when ``backend`` is
    "numba" and the set compiles ``method`` for this form of α, else None: the NumPy code of
    this module runs. The backend is chosen here, the kind in ``mamlnp.fast.kernels_for``;
    the fast path never imports this module back."""
    if check_backend(backend) != "numba":
        return None
    from ..fast import kernels_for as compiled
    return compiled(model, method, alpha)


def compiled_point_class(backend):
    """The navigation policy's compiled point (``mamlnp.fast.policy.CompiledPoint``, a
    FactoredPoint whose row passes are kernels) when ``backend`` is "numba", else None: the
    NumPy FactoredPoint runs (mamlnp/meta/rl.py). Dispatched here, like ``kernels_for``."""
    if check_backend(backend) != "numba":
        return None
    from ..fast import compiled_point
    return compiled_point()


# ---- adaptation --------------------------------------------------------------------


def inner_loop(model, theta, x_support, y_support, alpha, inner_steps):
    """The iterates [θ_0, …, θ_s] of s SGD steps on the support loss (unchecked): O(s·P)
    memory, for the exact meta-gradient's reverse pass; see ``final_iterate``."""
    thetas = [theta]
    for k in range(inner_steps):
        _, g = model._loss_and_grad(thetas[-1], x_support, y_support)   # (P,)
        thetas.append(thetas[-1] - step_alpha(alpha, k) * g)             # θ_{k+1} = θ_k − α g
    return thetas


def final_iterate(model, theta, x_support, y_support, alpha, inner_steps):
    """θ_s of ``inner_loop`` keeping one iterate at a time (O(P) memory; unchecked)."""
    for k in range(inner_steps):
        _, g = model._loss_and_grad(theta, x_support, y_support)         # (P,)
        theta = theta - step_alpha(alpha, k) * g                         # θ_{k+1} = θ_k − α g
    return theta


def adapt(model, theta, x_support, y_support, alpha, inner_steps, backend=None):
    """θ' = θ_s after ``inner_steps`` SGD steps of size α on one task's support set.

    x_support (K, D), y_support (K, O), θ (P,) -> θ' (P,).  inner_steps = 0 returns a copy of θ.
    """
    theta = check_model(model).check_theta(theta)
    x_support, y_support = model.check_xy(x_support, y_support, "x_support", "y_support")
    alpha = check_alpha(model, alpha, schedule=True)
    inner_steps = step_count("inner_steps", inner_steps)
    check_work(model, 1, x_support.shape[0], 1, inner_steps, backend, False)
    fast = kernels_for(model, backend, "adapt", alpha)                  # tables: never
    if fast is not None:
        return fast.adapt(theta, x_support, y_support, alpha, inner_steps)
    return final_iterate(model, theta, x_support, y_support, alpha, inner_steps).copy()


# ---- the meta-gradient ---------------------------------------------------------------


def task_meta_gradient(model, theta, xs, ys, xq, yq, alpha, inner_steps, first_order=False):
    """One task's (L_Q(θ_s), dL_Q(θ_s)/dθ) (unchecked; see meta_gradient)."""
    if first_order:                                                      # θ_s alone: O(P)
        return model._loss_and_grad(final_iterate(model, theta, xs, ys, alpha, inner_steps),
                                    xq, yq)
    thetas = inner_loop(model, theta, xs, ys, alpha, inner_steps)
    loss_q, g = model._loss_and_grad(thetas[-1], xq, yq)                 # ∇L_Q(θ_s) (P,)
    if not first_order:
        for k in range(inner_steps - 1, -1, -1):
            g = g - model._hvp(thetas[k], xs, ys, alpha * g)             # g − H_S(θ_k)(α g)
    return loss_q, g


def meta_gradient(model, theta, batch, alpha, inner_steps, first_order=False, backend=None):
    """(meta_loss, ∇_θ meta_loss) for a TaskBatch.

    meta_loss = (1/T) Σ_t MSE_query,t(θ_s^{(t)}), a float; the gradient is (P,).
    Exact second order through all ``inner_steps`` unless ``first_order``.
    """
    theta = check_model(model).check_theta(theta)
    batch = check_batch(model, batch)
    alpha = check_alpha(model, alpha)
    inner_steps = step_count("inner_steps", inner_steps)
    first_order = boolean("first_order", first_order)
    check_work(model, batch.num_tasks, batch.x_support.shape[1], batch.x_query.shape[1],
               inner_steps, backend, not first_order)
    fast = kernels_for(model, backend, "meta_gradient", alpha)
    if fast is not None:
        return fast.meta_gradient(theta, batch, alpha, inner_steps, first_order)
    total_loss, total_grad = 0.0, np.zeros(model.num_params)
    for t in range(batch.num_tasks):
        loss_q, g = task_meta_gradient(model, theta, *batch.task(t), alpha, inner_steps,
                                       first_order)
        total_loss += loss_q
        total_grad += g
    T = batch.num_tasks
    return total_loss / T, total_grad / T


def task_meta_gradient_alpha(model, theta, xs, ys, xq, yq, alpha, inner_steps, first_order=False):
    """One task's (L_Q, dL_Q/dθ, dL_Q/dα) for learned step sizes (Meta-SGD; Li et al. 2017).

    θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k)  gives  ∂θ_{k+1}/∂α = −diag(∇L_S(θ_k)), so with
    ḡ_{k+1} = dL_Q/dθ_{k+1}:   dL_Q/dα = −Σ_k ∇L_S(θ_k) ⊙ ḡ_{k+1}   (summed to a scalar
    when α is a scalar), and ḡ_k = ḡ_{k+1} − H_S(θ_k)(α ⊙ ḡ_{k+1}) as in MAML.
    """
    thetas, grads = [theta], []
    for _ in range(inner_steps):
        _, g_s = model._loss_and_grad(thetas[-1], xs, ys)                 # ∇L_S(θ_k) (P,)
        grads.append(g_s)
        thetas.append(thetas[-1] - alpha * g_s)
    loss_q, g = model._loss_and_grad(thetas[-1], xq, yq)                  # ḡ_s (P,)
    g_alpha = np.zeros(np.shape(alpha))                                   # () or (P,)
    for k in range(inner_steps - 1, -1, -1):
        g_alpha = g_alpha - (grads[k] * g if g_alpha.ndim else grads[k] @ g)
        if not first_order:
            g = g - model._hvp(thetas[k], xs, ys, alpha * g)              # ḡ_k
    return loss_q, g, g_alpha


def meta_gradient_alpha(model, theta, batch, alpha, inner_steps, first_order=False):
    """(meta_loss, ∇_θ, ∇_α) averaged over the batch (NumPy reference, Meta-SGD)."""
    theta = check_model(model).check_theta(theta)
    batch = check_batch(model, batch)
    alpha = check_alpha(model, alpha)
    inner_steps = step_count("inner_steps", inner_steps)
    first_order = boolean("first_order", first_order)
    check_work(model, 1, 1, 1, 2 * inner_steps, "numpy", True)          # iterates, gradients
    total = [0.0, np.zeros(model.num_params), np.zeros(np.shape(alpha))]
    for t in range(batch.num_tasks):
        out = task_meta_gradient_alpha(model, theta, *batch.task(t), alpha, inner_steps,
                                       first_order)
        for i in range(3):
            total[i] = total[i] + out[i]
    T = batch.num_tasks
    return total[0] / T, total[1] / T, total[2] / T


def meta_loss(model, theta, batch, alpha, inner_steps):
    """The meta-objective alone: (1/T) Σ_t L_Q,t(θ_s^{(t)}) (NumPy reference)."""
    theta = check_model(model).check_theta(theta)
    batch = check_batch(model, batch)
    alpha = check_alpha(model, alpha)
    inner_steps = step_count("inner_steps", inner_steps)
    losses = []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        theta_s = final_iterate(model, theta, xs, ys, alpha, inner_steps)
        losses.append(model._loss_value(theta_s, xq, yq))
    return float(np.mean(losses))


# ---- batched adaptation (evaluation, Reptile) ------------------------------------------


def adapt_batch_numpy(model, theta, batch, alpha, inner_steps):
    """θ'_t (T, P): every task of ``batch`` adapted on its support set (unchecked reference
    of the kernel sets' ``adapt_batch``)."""
    return np.stack([final_iterate(model, theta, *batch.task(t)[:2], alpha, inner_steps)
                     for t in range(batch.num_tasks)])


def adapt_curve_numpy(model, theta, batch, alpha, steps):
    """(T, steps+1) query losses [t, k] = L_Q,t(θ_k^{(t)}) along inner_loop (unchecked
    reference of the kernel sets' ``adapt_curve``)."""
    curve = np.empty((batch.num_tasks, steps + 1))
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        th = theta
        for k in range(steps + 1):                               # one iterate at a time: O(P)
            if k:
                th = th - step_alpha(alpha, k - 1) * model._loss_and_grad(th, xs, ys)[1]  # θ_k
            curve[t, k] = model._loss_value(th, xq, yq)          # L_Q(θ_k)
    return curve


def adapt_batch(model, theta, batch, alpha, inner_steps, backend=None):
    """θ'_t (T, P) for every task of a validated batch, on the chosen backend."""
    fast = kernels_for(model, backend, "adapt_batch", alpha)            # tables: never
    if fast is not None:
        return fast.adapt_batch(theta, batch, alpha, inner_steps)
    return adapt_batch_numpy(model, theta, batch, alpha, inner_steps)


def adapt_curve(model, theta, batch, alpha, steps, backend=None):
    """(T, steps+1) query losses after 0 … steps inner steps, on the chosen backend."""
    fast = kernels_for(model, backend, "adapt_curve", alpha)            # tables: never
    if fast is not None:
        return fast.adapt_curve(theta, batch, alpha, steps)
    return adapt_curve_numpy(model, theta, batch, alpha, steps)
