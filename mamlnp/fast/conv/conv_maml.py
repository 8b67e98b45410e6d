"""MAML on the ConvNet, compiled: one task's inner loop and exact meta-gradient, and the
drivers over T tasks (parallel over tasks).

Dimension legend: T tasks, K support images, Q query images, N = max(K, Q), P parameters,
s = inner_steps, MS / CS map / patch floats per image (conv_kernels.py), Fs = Σ_l F_l
channels, DCM = the largest block's patch floats per image, R = the workers of a call
(min(numba.get_num_threads(), T): one slot of scratch each), S = the passes kept per slot
(s + 1, or 2 to adapt).

The maths is mamlnp/meta/maml.py's, one task at a time, with a per-parameter step α (P,)
(a scalar α arrives as np.full(P, α): α·g is the same product, the same bits):

    θ_0 = θ,  θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k);   g ← ∇L_Q(θ_s);
    for k = s−1 … 0:  g ← g − H_S(θ_k)(α ⊙ g)      (first order: g = ∇L_Q(θ_s))

each ∇ one forward + backward of conv_kernels.py, each H v the R-forward + R-backward at the
cache the inner loop left at θ_k (the reference recomputes the same forward/backward). Worker
w of prange(R) takes tasks as it asks (``fetch_add``) and writes only its task's row of G
(T, P) and its loss; its scratch is slot w of the workspace. The rows are then summed in the
order t = 0 … T−1 (``mean_rows_into``, the workers splitting the output entries): the same
bits for any number of threads.

Reference: mamlnp/meta/maml.py (``task_meta_gradient``, ``adapt_batch_numpy``,
``adapt_curve_numpy``) and mamlnp/run/classify.py (``query_accuracy``); tests:
tests/test_conv_kernels.py.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from ..bn_mlp.bn_kernels import Cache
from ..bn_mlp.classify_kernels import accuracy_value
from ..bn_mlp.first_layer import mean_rows_into, share
from ..common.atomics import fetch_add
from ..mlp.mlp_kernels import loss_and_dyhat, loss_value, r_loss
from .bn2d import RCache2D
from .conv_kernels import backward, forward, r_backward, r_forward
from ..kernelset import CURVE_ACCURACY, CURVE_LOSS, CURVE_NONE  # batch_adapt's kind



class Data(NamedTuple):
    """One call's batch, flat rows per task, and θ."""
    xs: np.ndarray           # (T, K·D) support images, each row (C, H, Wd) order
    ys: np.ndarray           # (T, K·O) support targets
    xq: np.ndarray           # (T, Q·D) query images
    yq: np.ndarray           # (T, Q·O) query targets
    theta: np.ndarray        # (P,)


class Workspace(NamedTuple):
    """Scratch (per thread slot r) and per-task outputs of a driver call (``alloc_workspace``)."""
    TH: np.ndarray           # (R, S, P) the iterates θ_k
    CA: np.ndarray           # (R, S, 6, N·MS) each pass's Cache: XH A S DZ DY DH
    CR: np.ndarray           # (R, S, Fs) each pass's s = 1/√(σ² + ε)
    CO: np.ndarray           # (R, S, N·CS) each pass's patches
    RC: np.ndarray           # (R, 6, K·MS) the R-pass: RXH RY RH RDY RDZ RDH
    RQ: np.ndarray           # (R, 5·Fs) the R-pass's q (Fs), then bn2d's scratch (4·Fs)
    RCO: np.ndarray          # (R, K·CS) the R-pass's patches im2col(Rh)
    DC: np.ndarray           # (R, N·DCM) dz W (and Rdz W + dz V) before col2im
    SC: np.ndarray           # (R, 3, P) ∇L_S, v = α ⊙ g, H v
    G: np.ndarray            # (T, P) per task: its meta-gradient
    losses: np.ndarray       # (T,) per task: L_Q(θ_s)
    CL: np.ndarray           # (1,) int64: the tasks handed out so far


def workspace_floats(T, K, Q, P, MS, CS, Fs, DCM, S, R):
    """Floats of ``alloc_workspace`` (the same arguments)."""
    N = max(K, Q)
    return R * (S * (P + 6 * N * MS + Fs + N * CS) + 6 * K * MS + 5 * Fs + K * CS + N * DCM
                + 3 * P) + T * (P + 1)


def alloc_workspace(T, K, Q, P, MS, CS, Fs, DCM, S, R):
    """The buffers of Workspace (shapes there), S passes kept per thread slot."""
    N = max(K, Q)
    return Workspace(np.empty((R, S, P)), np.empty((R, S, 6, N * MS)), np.empty((R, S, Fs)),
                     np.empty((R, S, N * CS)), np.empty((R, 6, K * MS)), np.empty((R, 5 * Fs)),
                     np.empty((R, K * CS)), np.empty((R, N * DCM)), np.empty((R, 3, P)),
                     np.empty((T, P)), np.empty(T), np.zeros(1, np.int64))


@njit(cache=True)
def cache_of(ws, r, i):
    """The Cache bundle of kept pass i in thread slot r."""
    C = ws.CA[r, i]
    return Cache(C[0], C[1], C[2], C[3], C[4], C[5], ws.CR[r, i])


@njit(cache=True)
def rcache_of(ws, r):
    """The RCache2D bundle of thread slot r (q, then scratch, in RQ[r])."""
    C, Fs = ws.RC[r], ws.CR.shape[2]
    return RCache2D(C[0], C[1], C[2], C[3], C[4], C[5], ws.RQ[r, :Fs], ws.RQ[r, Fs:])


@njit(cache=True)
def pass_grad(g, th, x, y, N, ws, r, i, grad):
    """L(th; x, y) and ∇L into grad, the pass kept in slot (r, i)."""
    c, B, O = cache_of(ws, r, i), g.blk.shape[0], g.out[2]
    forward(g, th, x, N, c, ws.CO[r, i])
    loss = loss_and_dyhat(c.XH, c.A, c.DZ, N * g.moff[B + 1], y, N, O, g.loss_id)
    backward(g, th, N, c, ws.CO[r, i], ws.DC[r], grad)
    return loss


@njit(cache=True, _nrt=False)
def sgd_step(th, alpha, grad, out):
    """out = th − α ⊙ grad   (θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k)); alpha (P,)."""
    for i in range(th.shape[0]):
        out[i] = th[i] - alpha[i] * grad[i]


@njit(cache=True)
def task_meta_grad(d, t, g, ws, r, alpha, s, first_order):
    """Task t's L_Q(θ_s); its meta-gradient into G[t] (thread slot r keeps s + 1 passes);
    alpha (P,)."""
    O = g.out[2]
    K, Q = d.ys.shape[1] // O, d.yq.shape[1] // O
    TH, gs, gr = ws.TH[r], ws.SC[r, 0], ws.G[t]
    TH[0, :] = d.theta
    for k in range(s):                                          # inner loop, passes kept
        pass_grad(g, TH[k], d.xs[t], d.ys[t], K, ws, r, k, gs)
        sgd_step(TH[k], alpha, gs, TH[k + 1])
    loss = pass_grad(g, TH[s], d.xq[t], d.yq[t], Q, ws, r, s, gr)    # ∇L_Q(θ_s)
    if first_order:
        return loss
    v, hv, rc, B = ws.SC[r, 1], ws.SC[r, 2], rcache_of(ws, r), g.blk.shape[0]
    for k in range(s - 1, -1, -1):                              # g ← g − H_S(θ_k)(α ⊙ g)
        for i in range(gr.shape[0]):
            v[i] = alpha[i] * gr[i]
        c = cache_of(ws, r, k)
        r_forward(g, TH[k], v, K, c, ws.CO[r, k], rc, ws.RCO[r])
        r_loss(c.A, rc.RXH, rc.RDZ, K * g.moff[B + 1], K, O, g.loss_id)
        r_backward(g, TH[k], v, K, c, ws.CO[r, k], rc, ws.RCO[r], ws.DC[r], hv)
        for i in range(gr.shape[0]):
            gr[i] -= hv[i]
    return loss


@njit(cache=True, parallel=True)
def batch_meta_grad(d, g, ws, alpha, s, first_order, W, grad):
    """The meta-gradient of the T tasks of d into grad (P,), steps alpha (P,); returns the
    meta-loss. W workers
    (worker w owns the workspace's slot w) take tasks as they ask; then the rows of G are
    averaged in task order."""
    T, CL, losses = d.xs.shape[0], ws.CL, ws.losses
    CL[0] = 0
    for w in prange(W):
        t = fetch_add(CL, 0, 1)
        while t < T:
            losses[t] = task_meta_grad(d, t, g, ws, w, alpha, s, first_order)
            t = fetch_add(CL, 0, 1)
    P = grad.shape[0]
    for w in prange(W):
        i0, i1 = share(P, W, w)
        mean_rows_into(ws.G, grad, i0, i1)
    loss = 0.0
    for t in range(T):
        loss += losses[t]
    return loss / T


@njit(cache=True)
def task_adapt(d, t, g, ws, r, alpha, s, kind, curve):
    """Adapt task t for s steps (passes in slots 0 (support) and 1 (query), iterates
    alternating in TH[r, 0], TH[r, 1]); curve[t, k] the query loss or accuracy at θ_k.
    Returns the slot holding θ_s."""
    O = g.out[2]
    K, Q, B = d.ys.shape[1] // O, d.yq.shape[1] // O, g.blk.shape[0]
    TH, gs = ws.TH[r], ws.SC[r, 0]
    TH[0, :] = d.theta
    for k in range(s + 1):
        i = k & 1
        if kind != CURVE_NONE:                                  # the query at θ_k
            c = cache_of(ws, r, 1)
            forward(g, TH[i], d.xq[t], Q, c, ws.CO[r, 1])
            off = Q * g.moff[B + 1]
            if kind == CURVE_LOSS:
                curve[t, k] = loss_value(c.XH, off, d.yq[t], Q, O, g.loss_id)
            else:
                curve[t, k] = accuracy_value(c.XH, off, d.yq[t], Q, O)
        if k < s:
            pass_grad(g, TH[i], d.xs[t], d.ys[t], K, ws, r, 0, gs)
            sgd_step(TH[i], alpha, gs, TH[1 - i])
    return s & 1


@njit(cache=True, parallel=True)
def batch_adapt(d, g, ws, alpha, s, kind, want, W, out, curve):
    """θ_s of every task into out (T, P) when ``want``, steps alpha (P,); curve (T, s+1) by
    ``kind``; W workers
    (worker w owns slot w) take tasks as they ask."""
    T, CL = d.xs.shape[0], ws.CL
    CL[0] = 0
    for w in prange(W):
        t = fetch_add(CL, 0, 1)
        while t < T:
            i = task_adapt(d, t, g, ws, w, alpha, s, kind, curve)
            if want:
                out[t, :] = ws.TH[w, i]
            t = fetch_add(CL, 0, 1)
