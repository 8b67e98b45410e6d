"""The ConvNet's passes, compiled: im2col/col2im, forward, backward, R-forward, R-backward.

Dimension legend: N images of one pass, B conv blocks, block l maps an input (N, H, Wd, C)
to (N, Ho, Wo, F) (``ConvGeometry.blk[l]``), k the kernel, Δ the stride, p the padding,
J = C·k·k entries of a patch, M = N·Ho·Wo output pixels, E = F_B features, O outputs, P
parameters, MS = moff[B+2] map floats per image, CS = cpoff[B] patch floats per image.

Reference: mamlnp/nn/conv.py (``im2col``, ``col2im``, ``conv_forward``, ``conv_backward``,
``conv_rforward``, ``conv_rbackward``, ``spatial_mean_forward``/``_backward``) and
mamlnp/nn/convnet.py (``ConvNet._forward``, ``_backward``, ``_rpass``), in their symbols;
the batch norm + σ of a block is mamlnp/fast/bn_mlp/bn_kernels.py on the block's M pixel
rows (nn/conv.py's ``batchnorm2d_*`` are nn/batchnorm.py on the same rows), the loss the
plain MLP's kernels (mamlnp/fast/mlp/mlp_kernels.py). Tests: tests/test_conv_kernels.py
(each pass against its twin to 1e-12).

The structure is the reference's, pass by pass (no other NumPy rendering is needed):

    forward      cols_l = im2col(h_{l−1}),  z_l = cols_l W_lᵀ + b_l          (M, F) BLAS
                 ẑ_l, y_l = γ ẑ_l + β, a_l = σ(y_l)                          bn_forward
                 f = mean over pixels of a_B (N, E),  ŷ = f W_h + b_h        (N, O)
    backward     dW_h = fᵀ dŷ, db_h = Σ dŷ, df = dŷ W_hᵀ, dh_B = df / (Ho·Wo)
                 dz_l (bn_backward), dW_l = dz_lᵀ cols_l (F, J), db_l = Σ dz_l,
                 dh_{l−1} = col2im(dz_l W_l)
    R-forward    Rz_l = cols_l V_lᵀ + im2col(Rh_{l−1}) W_lᵀ + V_b   (Rh_0 = 0), bn_rforward,
                 Rf = mean(Rh_B),  Rŷ = f V_h + Rf W_h + V_bh
    R-backward   Rdŷ = ∂²L/∂ŷ² Rŷ;  RdW_h = fᵀ Rdŷ + Rfᵀ dŷ;  Rdf = Rdŷ W_hᵀ + dŷ V_hᵀ;
                 Rdz_l (bn_rbackward), RdW_l = Rdz_lᵀ cols_l + dz_lᵀ Rcols_l,
                 Rdh_{l−1} = col2im(Rdz_l W_l + dz_l V_l)

Buffers of one pass over N images (flat; block l's maps at N·moff[l], its patches at
N·cpoff[l], its per-channel s, q at foff[l]): a bn_kernels ``Cache`` (XH ẑ, A σ(y), S σ′,
DZ, DY, DH; the head's f in A and df in DH at N·moff[B], ŷ in XH, p in A, dŷ in DZ at
N·moff[B+1]), the patches ``cols`` (N·CS,), and for the R-pass an ``RCache2D`` (bn2d.py;
Rf in RH,
Rdf in RDH, Rŷ in RXH, Rdŷ in RDZ at the head's offsets) and ``rcols`` = im2col(Rh).
``dcols`` (N·max M·J / N,) is scratch for dz W before col2im. Products: common/linalg.py
``gemm_acc`` (BLAS dgemm; the caller holds OpenBLAS on one thread). Every sum runs in a fixed
order: the same bits on any thread.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from ..bn_mlp.bn_kernels import bn_backward, bn_forward, bn_rforward
from ..common.linalg import gemm_acc
from ..mlp.mlp_kernels import add_row, sum_rows
from .bn2d import bn2d_rbackward


class ConvGeometry(NamedTuple):
    """A ConvNet as the kernels see it (``mamlnp.fast.conv.kernelset.geometry(model)``)."""
    blk: np.ndarray          # (B, 6) int64: H, Wd, C (input), Ho, Wo, F (output) of block l
    woff: np.ndarray         # (B+1,) int64: W_l (F, C, k, k) in θ; the head's W_h (E, O) last
    boff: np.ndarray         # (B+1,) int64: b_l; b_h last
    goff: np.ndarray         # (B,) int64: γ_l
    eoff: np.ndarray         # (B,) int64: β_l
    moff: np.ndarray         # (B+3,) int64: per-image map offsets (blocks, f, ŷ, end)
    cpoff: np.ndarray        # (B+1,) int64: per-image patch offsets (blocks, end)
    foff: np.ndarray         # (B+1,) int64: channel offsets of s, q (blocks, end)
    conv: np.ndarray         # (3,) int64: k, Δ, p
    out: np.ndarray          # (3,) int64: D inputs, E features, O outputs
    act_id: int              # 0 relu, 1 tanh, 2 softplus
    loss_id: int             # 0 mse, 1 softmax_xent
    eps: float               # the batch norms' ε


# ---- im2col and its adjoint (nn/conv.py im2col, col2im) ------------------------------------


@njit(cache=True, _nrt=False)
def im2col(g, l, src, so, chw, N, cols, co):
    """cols[co:] (N·Ho·Wo, J) = block l's patches of the images at src[so:]: NHWC maps
    (N, H, Wd, C), or with ``chw`` the input rows (N, C·H·Wd); column (c, a, b') as W's."""
    H, Wd, C, Ho, Wo, _ = g.blk[l]
    k, st, p = g.conv[0], g.conv[1], g.conv[2]
    kk, J = k * k, C * k * k
    cs = H * Wd if chw else 1                                  # the stride between channels
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                row = cols[co + ((n * Ho + i) * Wo + j) * J:co + ((n * Ho + i) * Wo + j + 1) * J]
                for a in range(k):
                    y = st * i + a - p
                    for b in range(k):
                        x = st * j + b - p
                        e = a * k + b
                        if 0 <= y < H and 0 <= x < Wd:
                            px = so + (n * C * H * Wd + y * Wd + x if chw
                                       else ((n * H + y) * Wd + x) * C)
                            for c in range(C):
                                row[c * kk + e] = src[px + c * cs]
                        else:
                            for c in range(C):
                                row[c * kk + e] = 0.0


@njit(cache=True, _nrt=False)
def col2im(g, l, dcols, N, dst, do):
    """dst[do:] (N, H, Wd, C) = the adjoint of im2col applied to dcols (N·Ho·Wo, J): each
    patch entry added onto its pixel, kernel offsets (a, b') in order as the reference."""
    H, Wd, C, Ho, Wo, _ = g.blk[l]
    k, st, p = g.conv[0], g.conv[1], g.conv[2]
    kk, J = k * k, C * k * k
    d = dst[do:do + N * H * Wd * C]
    for i in range(N * H * Wd * C):
        d[i] = 0.0
    for n in range(N):
        for a in range(k):
            for b in range(k):
                for i in range(Ho):
                    y = st * i + a - p
                    if y < 0 or y >= H:
                        continue
                    for j in range(Wo):
                        x = st * j + b - p
                        if x < 0 or x >= Wd:
                            continue
                        row = ((n * Ho + i) * Wo + j) * J + a * k + b
                        pix = ((n * H + y) * Wd + x) * C
                        for c in range(C):
                            d[pix + c] += dcols[row + c * kk]


# ---- the spatial mean (nn/conv.py spatial_mean_forward / _backward) ---------------------------


@njit(cache=True, _nrt=False)
def spatial_mean(X, xo, N, HW, F, out, oo):
    """out[oo:] (N, F) = the mean over the HW pixels of the maps X[xo:] (N, HW, F), in order."""
    for n in range(N):
        f = out[oo + n * F:oo + (n + 1) * F]
        for c in range(F):
            f[c] = X[xo + n * HW * F + c]
        for q in range(1, HW):
            xq = X[xo + (n * HW + q) * F:xo + (n * HW + q + 1) * F]
            for c in range(F):
                f[c] += xq[c]
        for c in range(F):
            f[c] /= HW


@njit(cache=True, _nrt=False)
def spatial_mean_back(D, do, N, HW, F, out, oo):
    """out[oo:] (N, HW, F) = D[do:] (N, F) / HW at every pixel."""
    for n in range(N):
        for q in range(HW):
            for c in range(F):
                out[oo + (n * HW + q) * F + c] = D[do + n * F + c] / HW


# ---- the network's passes (nn/convnet.py) ---------------------------------------------------


@njit(cache=True, _nrt=False)
def forward(g, th, x, N, c, cols):
    """ŷ (N, O) into c.XH at N·moff[B+1]: the blocks, the spatial mean f (c.A at N·moff[B]),
    the head; x (N·D,) the images as input rows."""
    B = g.blk.shape[0]
    for l in range(B):
        H, Wd, C, Ho, Wo, F = g.blk[l]
        M, J, off = N * Ho * Wo, C * g.conv[0] * g.conv[0], N * g.moff[l]
        if l == 0:
            im2col(g, 0, x, 0, True, N, cols, N * g.cpoff[0])
        else:
            im2col(g, l, c.A, N * g.moff[l - 1], False, N, cols, N * g.cpoff[l])
        gemm_acc(cols, N * g.cpoff[l], False, th, g.woff[l], True, c.XH, off, M, J, F, 0)
        add_row(c.XH, off, M, F, th, g.boff[l])                       # z = cols Wᵀ + b
        bn_forward(c, th, off, M, F, g.goff[l], g.eoff[l], g.foff[l], g.eps, g.act_id)
    E, O = g.out[1], g.out[2]
    HW = g.blk[B - 1, 3] * g.blk[B - 1, 4]
    fo, yo = N * g.moff[B], N * g.moff[B + 1]
    spatial_mean(c.A, N * g.moff[B - 1], N, HW, E, c.A, fo)           # f (N, E)
    gemm_acc(c.A, fo, False, th, g.woff[B], False, c.XH, yo, N, E, O, 0)
    add_row(c.XH, yo, N, O, th, g.boff[B])                            # ŷ = f W_h + b_h


@njit(cache=True, _nrt=False)
def backward(g, th, N, c, cols, dcols, grad):
    """∇L (P,) into grad from dŷ (c.DZ at N·moff[B+1]); fills c.DH, c.DY, c.DZ of every block."""
    B = g.blk.shape[0]
    E, O = g.out[1], g.out[2]
    fo, yo = N * g.moff[B], N * g.moff[B + 1]
    gemm_acc(c.A, fo, True, c.DZ, yo, False, grad, g.woff[B], E, N, O, 0)     # dW_h = fᵀ dŷ
    sum_rows(c.DZ, yo, N, O, grad, g.boff[B])                                 # db_h = Σ dŷ
    gemm_acc(c.DZ, yo, False, th, g.woff[B], True, c.DH, fo, N, O, E, 0)      # df = dŷ W_hᵀ
    HW = g.blk[B - 1, 3] * g.blk[B - 1, 4]
    spatial_mean_back(c.DH, fo, N, HW, E, c.DH, N * g.moff[B - 1])            # dh_B
    for l in range(B - 1, -1, -1):
        H, Wd, C, Ho, Wo, F = g.blk[l]
        M, J, off, co = N * Ho * Wo, C * g.conv[0] * g.conv[0], N * g.moff[l], N * g.cpoff[l]
        bn_backward(c, th, off, M, F, g.goff[l], g.eoff[l], g.foff[l], grad)  # dz, dγ, dβ
        gemm_acc(c.DZ, off, True, cols, co, False, grad, g.woff[l], F, M, J, 0)   # dW = dzᵀ cols
        sum_rows(c.DZ, off, M, F, grad, g.boff[l])                            # db = Σ dz
        if l > 0:                                                             # dh_{l−1}
            gemm_acc(c.DZ, off, False, th, g.woff[l], False, dcols, 0, M, F, J, 0)
            col2im(g, l, dcols, N, c.DH, N * g.moff[l - 1])


@njit(cache=True, _nrt=False)
def r_forward(g, th, v, N, c, cols, rc, rcols):
    """Rŷ (N, O) into rc.RXH at N·moff[B+1] along the direction v (P,), at the cache c of a
    forward pass at θ = th; keeps Rẑ, Ry, Rh (rc) and im2col(Rh) (rcols) per block."""
    B = g.blk.shape[0]
    for l in range(B):
        H, Wd, C, Ho, Wo, F = g.blk[l]
        M, J, off, co = N * Ho * Wo, C * g.conv[0] * g.conv[0], N * g.moff[l], N * g.cpoff[l]
        gemm_acc(cols, co, False, v, g.woff[l], True, rc.RXH, off, M, J, F, 0)   # cols V_Wᵀ
        if l > 0:                                                            # + Rcols Wᵀ
            im2col(g, l, rc.RH, N * g.moff[l - 1], False, N, rcols, co)
            gemm_acc(rcols, co, False, th, g.woff[l], True, rc.RXH, off, M, J, F, 1)
        add_row(rc.RXH, off, M, F, v, g.boff[l])                             # + V_b: Rz
        bn_rforward(c, rc, th, v, off, M, F, g.goff[l], g.eoff[l], g.foff[l])
    E, O = g.out[1], g.out[2]
    HW = g.blk[B - 1, 3] * g.blk[B - 1, 4]
    fo, yo = N * g.moff[B], N * g.moff[B + 1]
    spatial_mean(rc.RH, N * g.moff[B - 1], N, HW, E, rc.RH, fo)                # Rf
    gemm_acc(c.A, fo, False, v, g.woff[B], False, rc.RXH, yo, N, E, O, 0)       # f V_h
    gemm_acc(rc.RH, fo, False, th, g.woff[B], False, rc.RXH, yo, N, E, O, 1)    # + Rf W_h
    add_row(rc.RXH, yo, N, O, v, g.boff[B])                                     # + V_bh


@njit(cache=True, _nrt=False)
def r_backward(g, th, v, N, c, cols, rc, rcols, dcols, hv):
    """H v (P,) into hv from R{dŷ} (rc.RDZ at N·moff[B+1]) after r_forward."""
    B = g.blk.shape[0]
    E, O = g.out[1], g.out[2]
    fo, yo, wh = N * g.moff[B], N * g.moff[B + 1], g.woff[B]
    gemm_acc(c.A, fo, True, rc.RDZ, yo, False, hv, wh, E, N, O, 0)       # RdW_h = fᵀ Rdŷ
    gemm_acc(rc.RH, fo, True, c.DZ, yo, False, hv, wh, E, N, O, 1)       #   + Rfᵀ dŷ
    sum_rows(rc.RDZ, yo, N, O, hv, g.boff[B])                            # Rdb_h = Σ Rdŷ
    gemm_acc(rc.RDZ, yo, False, th, wh, True, rc.RDH, fo, N, O, E, 0)    # Rdf = Rdŷ W_hᵀ
    gemm_acc(c.DZ, yo, False, v, wh, True, rc.RDH, fo, N, O, E, 1)       #   + dŷ V_hᵀ
    HW = g.blk[B - 1, 3] * g.blk[B - 1, 4]
    spatial_mean_back(rc.RDH, fo, N, HW, E, rc.RDH, N * g.moff[B - 1])
    for l in range(B - 1, -1, -1):
        H, Wd, C, Ho, Wo, F = g.blk[l]
        M, J, off, co = N * Ho * Wo, C * g.conv[0] * g.conv[0], N * g.moff[l], N * g.cpoff[l]
        bn2d_rbackward(c, rc, th, v, off, M, F, g.goff[l], g.eoff[l], g.foff[l], g.act_id, hv)
        gemm_acc(rc.RDZ, off, True, cols, co, False, hv, g.woff[l], F, M, J, 0)  # Rdzᵀ cols
        if l > 0:
            gemm_acc(c.DZ, off, True, rcols, co, False, hv, g.woff[l], F, M, J, 1)  # + dzᵀ Rcols
        sum_rows(rc.RDZ, off, M, F, hv, g.boff[l])                             # Rdb = Σ Rdz
        if l > 0:                                            # Rdh_{l−1} = col2im(Rdz W + dz V)
            gemm_acc(rc.RDZ, off, False, th, g.woff[l], False, dcols, 0, M, F, J, 0)
            gemm_acc(c.DZ, off, False, v, g.woff[l], False, dcols, 0, M, F, J, 1)
            col2im(g, l, dcols, N, rc.RDH, N * g.moff[l - 1])
