"""Adam's compiled twin: the outer step of the numba backend, the same bits as Adam._step.

Dimension legend: P parameters, W workers (threads) of a parallel call.

Reference: mamlnp/meta/optim.py ``Adam._step``; tests: tests/test_fused_step.py (bit for bit,
not to a tolerance). The kernels follow ``Adam._step``'s order of operations:

    m' = β1 m + (1 − β1) g,   v' = β2 v + ((1 − β2) g) g,
    θ' = θ − (lr · (m' / bc1)) / (√(v' / bc2) + ε),   bc_i = 1 − β_i^t (from Python)

  * ``adam_update``: out of place (θ', m', v' into fresh buffers), for small P and the fused
    training step (mamlnp/fast/mlp/train_kernels.py);
  * ``adam_inplace``: m, v in place, θ' into a buffer;
  * ``adam_update_parallel``: ``adam_inplace`` on W contiguous shares (any W: the same bits).

``adam_step(opt, theta, grad)`` drives them for a mamlnp.meta.optim.Adam. Ownership is
explicit: the optimizer's m and v are private buffers (``Adam._m``, ``Adam._v``) that it
never hands out (its ``m``, ``v`` and ``state_dict`` give copies, ``load_state_dict`` copies
in), so this twin may overwrite them in place; θ' always goes into fresh memory, because the
caller's θ may be held anywhere (a callback, a history).
"""
import math

import numba
import numpy as np
from numba import njit, prange

PARALLEL_ADAM = 1 << 15      # P from which adam_step runs in parallel, in place: below, a
                             # parallel region (µs) costs more than the serial loop (µs)


def hyper(opt, t):
    """hp (8,) of step t: (lr, β1, 1 − β1, β2, 1 − β2, ε, bc1, bc2), bc_i = 1 − β_i^t."""
    return np.array([opt.lr, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2, opt.eps,
                     1.0 - opt.beta1 ** t, 1.0 - opt.beta2 ** t])


def adam_step(opt, theta, grad):
    """``opt._step(theta, grad)`` compiled: the same new θ (P,) returned, the same state
    (m, v, t) kept, the same bits. For P < PARALLEL_ADAM ``adam_update`` into fresh m', v'
    (~3 µs instead of ~14 µs for P = 1761); from PARALLEL_ADAM on ``adam_update_parallel``
    (all threads, the same bits at any count) with the optimizer's private m, v in place."""
    P = grad.shape[0]
    if opt._m is None:
        opt._m, opt._v = np.zeros(P), np.zeros(P)
    opt.t += 1
    hp, out = hyper(opt, opt.t), np.empty(P)                    # θ' (P,): fresh memory
    if P < PARALLEL_ADAM:
        m, v = np.empty(P), np.empty(P)
        adam_update(theta, grad, opt._m, opt._v, hp, out, m, v)
        opt._m, opt._v = m, v
        return out
    W = numba.get_num_threads()
    if W == 1:                                                  # no parallel region to start
        adam_inplace(theta, grad, opt._m, opt._v, hp, out)
    else:
        adam_update_parallel(theta, grad, opt._m, opt._v, hp, out, W)
    return out


@njit(cache=True, error_model="numpy", _nrt=False)
def adam_update(theta, g, m, v, hp, theta_out, m_out, v_out):
    """Adam on every entry of these (equal-length) vectors, out of place; hp (8,) =
    (lr, β1, 1 − β1, β2, 1 − β2, ε, bc1, bc2) with bc_i = 1 − β_i^t.  error_model "numpy":
    the divisions raise no ZeroDivisionError (NumPy's semantics, and Adam._step's), so
    the loop vectorises: 3.5 µs instead of 12 µs for P = 1761."""
    lr, b1, c1, b2, c2, eps, bc1, bc2 = hp[0], hp[1], hp[2], hp[3], hp[4], hp[5], hp[6], hp[7]
    for i in range(theta.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + (c2 * gi) * gi
        m_out[i] = mi
        v_out[i] = vi
        theta_out[i] = theta[i] - (lr * (mi / bc1)) / (math.sqrt(vi / bc2) + eps)


@njit(cache=True, error_model="numpy", _nrt=False)
def adam_inplace(theta, g, m, v, hp, theta_out):
    """``adam_update`` with m, v updated in place (m ← m', v ← v') and θ' into theta_out:
    the same operations in the same order, so the same bits. Its own loop: adam_update
    with m_out = m fails LLVM's runtime alias check and runs scalar, ~4× slower."""
    lr, b1, c1, b2, c2, eps, bc1, bc2 = hp[0], hp[1], hp[2], hp[3], hp[4], hp[5], hp[6], hp[7]
    for i in range(theta.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + (c2 * gi) * gi
        m[i] = mi
        v[i] = vi
        theta_out[i] = theta[i] - (lr * (mi / bc1)) / (math.sqrt(vi / bc2) + eps)


@njit(cache=True, parallel=True)
def adam_update_parallel(theta, g, m, v, hp, theta_out, W):
    """Adam on θ, g, m, v (P,) as ``adam_inplace`` (m, v in place, θ' into theta_out (P,)),
    the entries cut into W contiguous shares [w·P/W, (w+1)·P/W), one per worker. Each entry
    is computed alone, by the same operations: the same bits for any W. W from Python
    (numba.get_num_threads() inside would keep the function out of the on-disk cache)."""
    P = theta.shape[0]
    for w in prange(W):
        lo, hi = w * P // W, (w + 1) * P // W          # slices: the loop inside vectorises
        adam_inplace(theta[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], hp, theta_out[lo:hi])
