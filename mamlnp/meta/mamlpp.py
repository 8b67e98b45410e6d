"""MAML++'s learned per-layer, per-step step sizes (LSLR) and multi-step loss (MSL).

Dimension legend: T tasks, K support points, Q query points, P parameters, L layers,
s = inner_steps.

Antoniou, Edwards & Storkey (2019), "How to train your MAML", arXiv:1810.09502, sec. 4.
LSLR: one learned step α_{k,l} per inner step k and layer l (W_l, b_l and, with batch
norm, γ_l, β_l share it), so with A_k = expand(α_k) (P,) the inner loop is

    θ_0 = θ,   θ_{k+1} = θ_k − A_k ⊙ ∇L_S(θ_k)                         (P,)

MSL: the meta-loss weighs the query loss after every step, with weights w (s,):

    M(θ, α) = (1/T) Σ_t Σ_{k=1..s} w_k L_Q,t(θ_k^{(t)})                 (w = e_s: MAML's)

Reverse accumulation (docs/derivations/mamlpp.md), with ḡ_k = dM_t/dθ_k and
c_k = w_k ∇L_Q(θ_k) (c_0 = 0):

    ḡ_s = c_s
    for k = s−1, …, 0:
        dM/dα_{k,l} = −Σ_{i ∈ layer l} ∇L_S(θ_k)_i ḡ_{k+1,i}            (Meta-SGD's, per layer)
        ḡ_k = ḡ_{k+1} − H_S(θ_k)(A_k ⊙ ḡ_{k+1}) + c_k                    (one HVP)
    ∇_θ M = ḡ_0

``first_order=True`` drops the HVP term (derivative-order annealing runs the first epochs
so, then second order; ``msl_weights`` gives the annealed w). Memory O(s·P): the iterates
and support gradients. NumPy reference; no numba kernels.
"""
import numpy as np

from ..errors import InputError
from ..validation import (as_float64, boolean, check_model, nonneg_int, positive_int,
                          step_count)
from .maml import check_batch, check_work


def layer_index(model):
    """(P,) ints: the layer l of every parameter (W_l, b_l, then γ_l, β_l with batch norm)."""
    idx = np.full(model.num_params, -1)
    for l, ((w0, _), (_, b1), _) in enumerate(model.layout):
        idx[w0:b1] = l
        bn = model.bn_layout[l]
        if bn is not None:
            idx[bn[0][0]:bn[1][1]] = l
    assert np.all(idx >= 0)                               # every parameter has its layer
    return idx


def expand(model, lslr):
    """The (s, P) per-step, per-parameter table A_k of LSLR steps ``lslr`` (s, L) (or its
    flat (s·L,) form, as the trainer stores it): A[k, i] = lslr[k, layer of i]."""
    L = len(model.layout)
    lslr = as_float64("lslr", lslr)
    if lslr.ndim == 1 and lslr.size % L == 0 and lslr.size:
        lslr = lslr.reshape(-1, L)                                       # (s·L,) -> (s, L)
    if lslr.ndim != 2 or lslr.shape[1] != L or lslr.shape[0] < 1:
        raise InputError(f"lslr: expected (inner_steps >= 1, L={L}) step sizes, got shape "
                         f"{lslr.shape}")
    return lslr[:, layer_index(model)]                                   # (s, P)


def schedule(epoch, inner_steps, msl_epochs, fo_epochs):
    """(MSL weights w (s,), first_order) at ``epoch`` of training: the annealed multi-step
    loss for the first ``msl_epochs`` (then the last step's loss alone, as in the paper), and
    derivative-order annealing, first order while epoch < ``fo_epochs``."""
    s = positive_int("inner_steps", inner_steps)
    if epoch < msl_epochs:
        w = msl_weights(s, epoch, msl_epochs)
    else:
        w = np.eye(s)[-1]
    return w, epoch < fo_epochs


def msl_weights(inner_steps, epoch, msl_epochs, min_fraction=0.03):
    """The paper's annealed MSL weights w (s,) at ``epoch``: all 1/s at epoch 0; each
    non-final weight falls by 1/(s·msl_epochs) per epoch to a floor of min_fraction/s, the
    final one rises by (s−1) times that, to at most 1 − (s−1)·min_fraction/s (both limits
    are reached at the same epoch, msl_epochs·(1 − min_fraction)), so Σ w = 1 at every epoch."""
    s = positive_int("inner_steps", inner_steps)
    epoch, msl_epochs = nonneg_int("epoch", epoch), positive_int("msl_epochs", msl_epochs)
    decay, floor = 1.0 / s / msl_epochs, min_fraction / s
    w = np.full(s, 1.0 / s)
    w[:-1] = np.maximum(w[:-1] - epoch * decay, floor)                   # (s−1,)
    w[-1] = min(w[-1] + epoch * (s - 1) * decay, 1.0 - (s - 1) * floor)
    return w


def task_mamlpp_gradient(model, theta, xs, ys, xq, yq, lslr, weights, layer, first_order):
    """One task's (M_t, ∇_θ M_t (P,), ∇_α M_t (s, L)); lslr (s, L), weights (s,) (unchecked)."""
    s = lslr.shape[0]
    thetas, grads = [theta], []
    for k in range(s):
        _, g_s = model._loss_and_grad(thetas[-1], xs, ys)               # ∇L_S(θ_k) (P,)
        grads.append(g_s)
        thetas.append(thetas[-1] - lslr[k][layer] * g_s)                 # θ_{k+1}
    loss, g = 0.0, np.zeros(model.num_params)
    g_alpha = np.zeros_like(lslr)                                        # (s, L)
    for k in range(s, 0, -1):                                            # ḡ_k = ḡ + c_k
        if weights[k - 1] != 0.0:
            l_q, g_q = model._loss_and_grad(thetas[k], xq, yq)
            loss, g = loss + weights[k - 1] * l_q, g + weights[k - 1] * g_q
        g_alpha[k - 1] = -np.bincount(layer, grads[k - 1] * g, lslr.shape[1])   # (L,)
        if not first_order:
            g = g - model._hvp(thetas[k - 1], xs, ys, lslr[k - 1][layer] * g)   # ḡ_{k−1}
    return loss, g, g_alpha


def mamlpp_gradient(model, theta, batch, lslr, weights=None, first_order=False):
    """(M, ∇_θ M (P,), ∇_α M (s, L)) for a TaskBatch: LSLR steps ``lslr`` (s, L) (any finite
    values: learned), MSL ``weights`` (s,) (None: e_s, the last step's loss alone)."""
    theta = check_model(model).check_theta(theta)
    batch = check_batch(model, batch)
    lslr = as_float64("lslr", lslr, 2)
    if lslr.shape[1] != len(model.layout) or lslr.shape[0] < 1:
        raise InputError(f"lslr: expected (inner_steps >= 1, L={len(model.layout)}) step sizes, "
                         f"got shape {lslr.shape}")
    s = step_count("inner_steps", lslr.shape[0])
    weights = np.eye(s)[-1] if weights is None else as_float64("weights", weights, 1, (s,))
    first_order = boolean("first_order", first_order)
    check_work(model, 1, 1, 1, 2 * s, "numpy", True)                    # iterates, gradients
    return mamlpp_unchecked(model, theta, batch, lslr, weights, first_order)


def mamlpp_unchecked(model, theta, batch, lslr, weights, first_order):
    """``mamlpp_gradient`` without its checks (the trainer's path: its arrays are its own)."""
    layer, total = layer_index(model), [0.0, 0.0, 0.0]
    for t in range(batch.num_tasks):
        out = task_mamlpp_gradient(model, theta, *batch.task(t), lslr, weights, layer,
                                   first_order)
        total = [a + b for a, b in zip(total, out)]
    T = batch.num_tasks
    return total[0] / T, total[1] / T, total[2] / T


def mamlpp_meta_loss(model, theta, batch, lslr, weights=None):
    """M(θ, α) alone, by the forward loop only (for finite differences)."""
    theta, lslr = model.check_theta(theta), as_float64("lslr", lslr, 2)
    s, layer = lslr.shape[0], layer_index(model)
    weights = np.eye(s)[-1] if weights is None else np.asarray(weights, dtype=np.float64)
    total = 0.0
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        th = theta
        for k in range(s):
            th = th - lslr[k][layer] * model._loss_and_grad(th, xs, ys)[1]
            total += weights[k] * model._loss_value(th, xq, yq)
    return total / batch.num_tasks
