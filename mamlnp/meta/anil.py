"""ANIL: MAML whose inner loop adapts only the network's head (the output layer).

Dimension legend: T tasks, K support points, Q query points, P parameters,
P_h = H_last·O + O head parameters, s = inner_steps.

Raghu, Raghu, Bengio & Vinyals (2020), "Rapid Learning or Feature Reuse? Towards
Understanding the Effectiveness of MAML", arXiv:1909.09157. The inner loop updates the
head (W_L, b_L) and leaves the body fixed; the outer loop meta-learns everything.

That is MAML's inner loop with the per-parameter step (Meta-SGD's vector form)

    α_i = α  for i in the head (W_L, b_L),   α_i = 0  otherwise         (P,)

so  θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k)  moves only the head, and the exact meta-gradient is
mamlnp.meta.maml.meta_gradient's reverse pass with that α:

    ḡ_s = ∇L_Q(θ_s),   ḡ_k = ḡ_{k+1} − H_S(θ_k) (α ⊙ ḡ_{k+1})          (P,)

The HVP is applied only to vectors v = α ⊙ ḡ that vanish off the head: H v = H[:, head] v_h,
the head's columns of the Hessian (head-head block and body-head cross terms; the
body-body block is never needed). Two paths compute the same gradient:

  * ``path="masked"``: meta_gradient with anil_alpha, the full R-pass through the whole net
    (both backends). It is the statement "ANIL is MAML with a masked α", run as code.
  * ``path="head"``: the body runs once per task, forward on the support and the
    query set, giving features F_S (K, H), F_Q (Q, H); the inner loop and the HVPs are those
    of the linear head on F (the loss's curvature only); the body receives its gradient by ONE
    backward pass per set from the accumulated feature cotangents  (docs/derivations/anil.md §2):

        head step k:    z = F_S W_k + b_k,  δ_k = ℓ'(z)             (K, O)
                        W_{k+1} = W_k − α F_Sᵀ δ_k,   b_{k+1} = b_k − α Σ_n δ_k      (H, O), (O,)
        query:          δ_Q = ℓ'(F_Q W_s + b_s),  ḡ_W = F_Qᵀ δ_Q,  ḡ_b = Σ δ_Q,  dF_Q = δ_Q W_sᵀ
        reverse, k = s−1 … 0, v = α ḡ_head:
                        Rz = F_S v_W + v_b,  Rδ = ℓ''(z) Rz          (K, O)
                        ḡ_W −= F_Sᵀ Rδ,  ḡ_b −= Σ Rδ               (head-head block)
                        dF_S −= δ_k v_Wᵀ + Rδ W_kᵀ                   (body-head block)
        body:           ḡ_body = backprop_S(dF_S) + backprop_Q(dF_Q)

``path=None`` (default) takes the faster of the two for the model and backend: "masked" where
compiled kernels take a per-parameter α (backend="numba": an MLP without batch norm, or the
ConvNet of mamlnp/fast/conv/), else "head". Measured by ``python benchmarks/bench_family.py`` (docs/derivations/anil.md §2).
"""
import numpy as np

from ..errors import InputError
from ..validation import boolean, choice, step_count
from .maml import check_alpha, check_batch, kernels_for, meta_gradient

PATHS = ("head", "masked")


def head_slice(model):
    """slice of θ holding the output layer's W_L then b_L (the layout of nn/mlp.py)."""
    (w0, _), (_, b1), _ = model.layout[-1]
    return slice(w0, b1)


def anil_alpha(model, alpha):
    """The masked step (P,): α on the head's W_L, b_L, 0 on every other parameter."""
    alpha = check_alpha(model, alpha)
    if np.ndim(alpha):
        raise InputError(f"alpha: expected a positive scalar step for ANIL's head, got an "
                         f"array of shape {np.shape(alpha)}")
    vec = np.zeros(model.num_params)
    vec[head_slice(model)] = alpha
    return vec


def default_path(model, backend):
    """"masked" where compiled kernels run a per-parameter α, else "head" (module docstring)."""
    fast = kernels_for(model, backend, "meta_gradient", alpha=np.ones(model.num_params))
    return "masked" if fast is not None else "head"


def anil_gradient(model, theta, batch, alpha, inner_steps, first_order=False, backend=None,
                  path=None):
    """(meta_loss, ∇_θ meta_loss (P,)) of ANIL over a TaskBatch.

    ``path="head"``: the body's features once per task, the head's inner loop and HVPs on them
    (``task_head_gradient``; NumPy, whatever ``backend``). ``path="masked"``: meta_gradient with
    α masked to the head, on ``backend``. None: ``default_path``. The same numbers to rounding
    (tests/test_anil.py).
    """
    vec = anil_alpha(model, alpha)
    path = default_path(model, backend) if path is None else choice("path", path, PATHS)
    if path == "masked" or not hasattr(model, "_backprop"):
        return meta_gradient(model, theta, batch, vec, inner_steps, first_order, backend)
    theta = model.check_theta(theta)
    batch = check_batch(model, batch)
    inner_steps = step_count("inner_steps", inner_steps)
    first_order = boolean("first_order", first_order)
    total_loss, total_grad = 0.0, np.zeros(model.num_params)
    for t in range(batch.num_tasks):
        loss_q, g = task_head_gradient(model, theta, *batch.task(t), float(alpha),
                                       inner_steps, first_order)
        total_loss += loss_q
        total_grad += g
    return total_loss / batch.num_tasks, total_grad / batch.num_tasks


def _head_grad(lossf, F, W, b, y):
    """(loss, δ = ∂L/∂z (N, O), loss cache, ∇_W (H, O), ∇_b (O,)) of the head z = F W + b."""
    loss, cache = lossf[0](F @ W + b, y)                                 # z (N, O)
    delta = lossf[1](cache)                                              # (N, O)
    return loss, delta, cache, F.T @ delta, delta.sum(axis=0)


def task_head_gradient(model, theta, xs, ys, xq, yq, alpha, inner_steps, first_order=False):
    """One task's (L_Q(φ_s), dL_Q/dθ (P,)) by the head-only path (module docstring; unchecked)."""
    L, lossf = len(model.layout), model._loss
    (w0, w1), (b0, b1), shape = model.layout[-1]
    F_S, cache_S = model._forward(theta, xs, stop=L - 1)                 # (K, H)
    F_Q, cache_Q = model._forward(theta, xq, stop=L - 1)                 # (Q, H)
    heads, deltas = [(theta[w0:w1].reshape(shape), theta[b0:b1])], []
    for _ in range(inner_steps):                                         # the head's SGD
        W, b = heads[-1]
        _, delta, cache, gW, gb = _head_grad(lossf, F_S, W, b, ys)
        deltas.append((delta, cache))
        heads.append((W - alpha * gW, b - alpha * gb))                   # (H, O), (O,)
    W, b = heads[-1]
    loss_q, delta_q, _, gW, gb = _head_grad(lossf, F_Q, W, b, yq)        # ḡ_head at φ_s
    dF_Q, dF_S = delta_q @ W.T, np.zeros_like(F_S)                       # (Q, H), (K, H)
    for k in range(inner_steps - 1, -1, -1) if not first_order else ():
        (W, _), (delta, cache) = heads[k], deltas[k]
        vW, vb = alpha * gW, alpha * gb                                  # v = α ḡ_head
        Rdelta = lossf[2](F_S @ vW + vb, cache)                          # ℓ''(z) Rz (K, O)
        dF_S -= delta @ vW.T + Rdelta @ W.T                              # body-head block
        gW, gb = gW - F_S.T @ Rdelta, gb - Rdelta.sum(axis=0)            # head-head block
    grad = np.zeros(model.num_params)
    model._backprop(cache_Q, dF_Q, grad)                                 # body rows from Q
    if not first_order and inner_steps:
        body = np.zeros(model.num_params)
        model._backprop(cache_S, dF_S, body)                             # body rows from S
        grad += body
    grad[w0:w1], grad[b0:b1] = gW.ravel(), gb
    return loss_q, grad
