"""The batch-norm classification MLP on one task's points, its first layer held factored.

Dimension legend: N points of one pass, D inputs, H1 = sizes[1] units of the first layer,
L dense layers, Pr = P − D·H1 parameters after W1 (the "rest" of θ), Hsum = Σ_{l≥1} sizes[l].

Compiled twin of mamlnp/nn/mlp.py with ``batch_norm=True`` (hidden layer l: dense ->
batch norm -> σ, output linear; mamlnp/nn/batchnorm.py), except that the first layer's
product z_1 = x W_1 arrives already made. Under MAML every adapted first layer has the form

    W_1^(k) = W_1 + x_Sᵀ Cm_k          (Cm_k (K, H1) = −α Σ_{j<k} dz_1 of support pass j)

since each inner step subtracts α ∇_{W1} L_S = α x_Sᵀ dz_1, a matrix of rank ≤ K. So
x W_1^(k) = x W_1 + (x x_Sᵀ) Cm_k needs only x W_1 (one GEMM for all tasks at once) and the
Gram matrix x x_Sᵀ; W_1^(k) is never formed (mamlnp/fast/bn_mlp/classify_kernels.py).
The passes here therefore start from the first layer's pre-activation in the cache and
leave its dz (backward) or Rdz (R-backward) in the cache, from which the caller forms the
W1 gradient as xᵀ dz (again for all tasks at once); every other parameter is handled here.

Layout: ``rest`` = θ[D·H1:] (Pr,), laid out [b1 | γ1 | β1 | W2 | b2 | γ2 | β2 | … | W_L | b_L]
as in mamlnp.MLP(batch_norm=True); ``BNGeometry`` gives the offsets into it (woff[0] is
unused: W1 is not in ``rest``). Cache bundles: mamlnp/fast/bn_mlp/bn_kernels.py; the output
block of a cache holds ŷ in XH, p = softmax(ŷ) in A (softmax_xent) and dŷ in DZ.

Reference: mamlnp/nn/mlp.py (``MLP._forward``, ``MLP._loss_and_grad``, ``MLP._hvp`` with
``batch_norm=True``); tests: tests/test_classify_kernels.py.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from ..common.linalg import gemm_st
from ..mlp.mlp_kernels import add_row, loss_and_dyhat, r_loss, sum_rows
from .bn_kernels import Cache, bn_backward, bn_forward, bn_rbackward, bn_rforward



class BNGeometry(NamedTuple):
    """A batch-norm MLP as these kernels see it; offsets into ``rest`` = θ[D·H1:]."""
    sizes: np.ndarray        # (L+1,) int64: D, hidden widths, O
    woff: np.ndarray         # (L,) int64: W_l (woff[0] = −1: W1 is not in rest)
    boff: np.ndarray         # (L,) int64: b_l
    goff: np.ndarray         # (L,) int64: γ_l (−1 for the output layer)
    eoff: np.ndarray         # (L,) int64: β_l (−1 for the output layer)
    coff: np.ndarray         # (L,) int64: column offset of layer l in a cache row
    aid: int                 # 0 relu, 1 tanh, 2 softplus
    lid: int                 # 0 mse, 1 softmax_xent
    eps: float               # ε of the batch norm (model.bn_eps)


@njit(cache=True, _nrt=False)
def forward(geom, th, thw, N, c, dw):
    """Forward of N points at ``rest`` = th: c.XH's first block holds z_1 − b_1 = x W_1^(k)
    on entry; on exit every block of c (ẑ, h, σ′, s; ŷ in the last block of XH).
    W_l (l ≥ 2) is thw's W_l block, plus the factored update of dw if dw.factored
    (Direction: the query pass at θ_1 = θ − α ∇L_S(θ), whose W_l is W_l − α h_Sᵀ dz_S)."""
    L = geom.sizes.shape[0] - 1
    for l in range(L):
        I, O, zo = geom.sizes[l], geom.sizes[l + 1], N * geom.coff[l]
        if l > 0:
            ho = N * geom.coff[l - 1]
            gemm_st(c.A, ho, False, thw, geom.woff[l], False, c.XH, zo, N, I, O, 0)   # h W
            if dw.factored:
                h_lowrank(geom, l, N, c.A, ho, c.XH, zo, dw, 1)             # − α (h h_Sᵀ) dz_S
        add_row(c.XH, zo, N, O, th, geom.boff[l])                           # z = h W + b
        if l < L - 1:
            bn_forward(c, th, zo, N, O, geom.goff[l], geom.eoff[l], geom.coff[l], geom.eps,
                       geom.aid)


@njit(cache=True, _nrt=False)
def loss_and_grad(geom, th, thw, y, N, c, grad, dw):
    """L(ŷ, y) and its gradient: grad (Pr,) gets every block but W1; c.DZ's first block
    gets dz_1 (so ∇_{W1} L = xᵀ dz_1). Needs c from ``forward`` (same th, thw, dw)."""
    L = geom.sizes.shape[0] - 1
    loss = loss_and_dyhat(c.XH, c.A, c.DZ, N * geom.coff[L - 1], y, N, geom.sizes[L], geom.lid)
    for l in range(L - 1, -1, -1):
        I, O, zo = geom.sizes[l], geom.sizes[l + 1], N * geom.coff[l]
        if l < L - 1:
            bn_backward(c, th, zo, N, O, geom.goff[l], geom.eoff[l], geom.coff[l], grad)   # dz
        sum_rows(c.DZ, zo, N, O, grad, geom.boff[l])                        # db = Σ_n dz
        if l > 0:
            ho = N * geom.coff[l - 1]
            gemm_st(c.A, ho, True, c.DZ, zo, False, grad, geom.woff[l], I, N, O, 0)  # hᵀ dz
            gemm_st(c.DZ, zo, False, thw, geom.woff[l], True, c.DH, ho, N, O, I, 0)  # dz Wᵀ
            if dw.factored:
                dz_lowrank(geom, l, N, c.DZ, zo, c.DH, ho, dw)              # − α (dz dz_Sᵀ) h_S
    return loss


class Direction(NamedTuple):
    """A W_l-block (l ≥ 2) of rank ≤ Q given by its factors: coeff · h_{l−1,F}ᵀ dz_{l,F} of a
    pass F. Products with it cost N·Q·(I + O) multiply-adds instead of N·I·O:
      * the HVP's direction v = α g while g is still ∇L_Q(θ_s) (the reverse pass's first
        step): F = the query pass, coeff = α;  h V_W = α (h h_Qᵀ) dz_Q,  dz V_Wᵀ = α (dz dz_Qᵀ) h_Q;
      * the update of θ_1 = θ − α ∇L_S(θ) (s = 1): F = the support pass, coeff = −α.
    ``factored`` False: the W_l blocks are read from the vector instead."""
    factored: bool
    cq: Cache                # the factor pass F (its A and DZ blocks)
    Q: int                   # its points
    alpha: float             # coeff
    PK: np.ndarray           # (N·Q,) scratch


@njit(cache=True, _nrt=False)
def scale(x, n, a):
    for i in range(n):
        x[i] *= a


@njit(cache=True, _nrt=False)
def h_lowrank(geom, l, N, H, ho, out, zo, dv, acc):
    """out (N, O) at zo = acc·out + coeff · (h h_Fᵀ) dz_F: h (N, I) the block of H at ho,
    h_F, dz_F layer l's input and output-gradient blocks of the factor pass dv.cq
    (dv.Q points), coeff = dv.alpha (Direction)."""
    I, O, Q, cq = geom.sizes[l], geom.sizes[l + 1], dv.Q, dv.cq
    gemm_st(H, ho, False, cq.A, Q * geom.coff[l - 1], True, dv.PK, 0, N, I, Q, 0)   # h h_Fᵀ
    scale(dv.PK, N * Q, dv.alpha)
    gemm_st(dv.PK, 0, False, cq.DZ, Q * geom.coff[l], False, out, zo, N, Q, O, acc)


@njit(cache=True, _nrt=False)
def dz_lowrank(geom, l, N, DZ, zo, out, ho, dv):
    """out (N, I) at ho += coeff · (dz dz_Fᵀ) h_F (see h_lowrank)."""
    I, O, Q, cq = geom.sizes[l], geom.sizes[l + 1], dv.Q, dv.cq
    gemm_st(DZ, zo, False, cq.DZ, Q * geom.coff[l], True, dv.PK, 0, N, O, Q, 0)    # dz dz_Fᵀ
    scale(dv.PK, N * Q, dv.alpha)
    gemm_st(dv.PK, 0, False, cq.A, Q * geom.coff[l - 1], False, out, ho, N, Q, I, 1)


@njit(cache=True, _nrt=False)
def h_times_v(geom, v, l, N, c, rc, dv):
    """rc.RXH block l = h_{l−1} V_W (N, O), V_W the W_l block of v (see Direction)."""
    I, O, ho, zo = geom.sizes[l], geom.sizes[l + 1], N * geom.coff[l - 1], N * geom.coff[l]
    if not dv.factored:
        gemm_st(c.A, ho, False, v, geom.woff[l], False, rc.RXH, zo, N, I, O, 0)
    else:
        h_lowrank(geom, l, N, c.A, ho, rc.RXH, zo, dv, 0)


@njit(cache=True, _nrt=False)
def dz_times_vt(geom, v, l, N, c, rc, dv):
    """rc.RDH block l−1 += dz_l V_Wᵀ (N, I) (see Direction)."""
    I, O, ho, zo = geom.sizes[l], geom.sizes[l + 1], N * geom.coff[l - 1], N * geom.coff[l]
    if not dv.factored:
        gemm_st(c.DZ, zo, False, v, geom.woff[l], True, rc.RDH, ho, N, O, I, 1)
    else:
        dz_lowrank(geom, l, N, c.DZ, zo, rc.RDH, ho, dv)


@njit(cache=True, _nrt=False)
def r_forward(geom, th, v, N, c, rc, dv):
    """R-forward along v (Pr,): rc.RXH's first block holds Rz_1 − Vb_1 = x V_W1 on entry."""
    L = geom.sizes.shape[0] - 1
    for l in range(L):
        I, O, zo = geom.sizes[l], geom.sizes[l + 1], N * geom.coff[l]
        if l > 0:
            h_times_v(geom, v, l, N, c, rc, dv)                                          # h V_W
            gemm_st(rc.RH, N * geom.coff[l - 1], False, th, geom.woff[l], False, rc.RXH, zo, N, I,
                     O, 1)                                                            # + Rh W
        add_row(rc.RXH, zo, N, O, v, geom.boff[l])                          #   + V_b
        if l < L - 1:
            bn_rforward(c, rc, th, v, zo, N, O, geom.goff[l], geom.eoff[l], geom.coff[l])


@njit(cache=True, _nrt=False)
def r_backward(geom, th, v, N, c, rc, dv, hv):
    """R-backward from Rŷ: hv (Pr,) = (H v) without its W1 block; rc.RDZ's first block
    gets Rdz_1 (the W1 block of H v is xᵀ Rdz_1, as Rh_0 = 0)."""
    L = geom.sizes.shape[0] - 1
    r_loss(c.A, rc.RXH, rc.RDZ, N * geom.coff[L - 1], N, geom.sizes[L], geom.lid)     # R{dŷ}
    for l in range(L - 1, -1, -1):
        I, O, zo = geom.sizes[l], geom.sizes[l + 1], N * geom.coff[l]
        if l < L - 1:
            bn_rbackward(c, rc, th, v, zo, N, O, geom.goff[l], geom.eoff[l], geom.coff[l],
                         geom.aid, hv)
        sum_rows(rc.RDZ, zo, N, O, hv, geom.boff[l])                        # Rdb = Σ_n Rdz
        if l > 0:
            ho = N * geom.coff[l - 1]
            gemm_st(c.A, ho, True, rc.RDZ, zo, False, hv, geom.woff[l], I, N, O, 0)  # hᵀ Rdz
            gemm_st(rc.RH, ho, True, c.DZ, zo, False, hv, geom.woff[l], I, N, O, 1)  # + Rhᵀ dz
            gemm_st(rc.RDZ, zo, False, th, geom.woff[l], True, rc.RDH, ho, N, O, I, 0)
            dz_times_vt(geom, v, l, N, c, rc, dv)                                     # + dz V_Wᵀ
