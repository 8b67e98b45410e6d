"""Batch norm's R-backward over many pixel rows, row by row (the conv blocks' layout).

Dimension legend: M pixel rows of one block (N·Ho·Wo), F channels.

Reference: mamlnp/nn/batchnorm.py ``batchnorm_rbackward`` (through nn/conv.py
``batchnorm2d_rbackward``, the same function on the (M, F) pixel rows); tests:
tests/test_conv_kernels.py. The forward, backward and R-forward of a block are
mamlnp/fast/bn_mlp/bn_kernels.py's (their loops already run row by row). Its
``bn_rbackward`` sums each channel down its column (n outer inside o), which suits the MLP's
few points; over a conv block's M = N·Ho·Wo pixel rows (980 at the first Omniglot block, 5
images) of 64 channels it walks 500 kB arrays column by column, several times slower than
this version, which makes the same sums in the same order n = 0 … M−1 row by row into
per-channel accumulators ``RCache2D.SC`` (the same bits as bn_rbackward):

    Rdy = Rdh ⊙ σ′(y) + dh ⊙ σ″(y) ⊙ Ry,   Rdβ = Σ_n Rdy,   Rdγ = Σ_n (Rdy ⊙ ẑ + dy ⊙ Rẑ)
    dẑ = dy ⊙ γ,  Rdẑ = Rdy ⊙ γ + dy ⊙ V_γ,  m = mean(dẑ ⊙ ẑ),  Rm = mean(Rdẑ ⊙ ẑ + dẑ ⊙ Rẑ)
    Rdz = (R{s}/s) ⊙ dz + s ⊙ (Rdẑ − mean(Rdẑ) − Rẑ ⊙ m − ẑ ⊙ Rm),   R{s}/s = −s ⊙ q
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from ..mlp.thin_layers import rdz_value


class RCache2D(NamedTuple):
    """bn_kernels.RCache with per-channel scratch: the R-pass's buffers of one conv pass."""
    RXH: np.ndarray          # Rẑ (Rz on entry to bn_rforward); Rŷ in the head's block
    RY: np.ndarray           # Ry
    RH: np.ndarray           # Rh; Rf in the head's block
    RDY: np.ndarray          # R{dy}
    RDZ: np.ndarray          # R{dz}; R{dŷ}
    RDH: np.ndarray          # R{dh}; R{df}
    Q: np.ndarray            # (Fs,) q = mean(ẑ ⊙ Rz) per channel
    SC: np.ndarray           # (4·max F,) scratch: mean(dẑ), m, mean(Rdẑ), Rm


@njit(cache=True, _nrt=False)
def bn2d_rbackward(c, rc, th, v, off, N, O, go, eo, co, aid, hv):
    """bn_kernels.bn_rbackward (same arguments, same bits) with every loop row by row."""
    zh, a_, sp = c.XH[off:off + N * O], c.A[off:off + N * O], c.S[off:off + N * O]
    dy, dh, s = c.DY[off:off + N * O], c.DH[off:off + N * O], c.SN[co:co + O]
    rzh, ry, rdh = rc.RXH[off:off + N * O], rc.RY[off:off + N * O], rc.RDH[off:off + N * O]
    rdy, rdz, q = rc.RDY[off:off + N * O], rc.RDZ[off:off + N * O], rc.Q[co:co + O]
    hg, hb = hv[go:go + O], hv[eo:eo + O]
    g, vg = th[go:go + O], v[go:go + O]
    md, m, mrd, rm = rc.SC[:O], rc.SC[O:2 * O], rc.SC[2 * O:3 * O], rc.SC[3 * O:4 * O]
    for o in range(O):
        hg[o], hb[o], md[o], m[o], mrd[o], rm[o] = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for n in range(N):
        k = n * O
        for o in range(O):
            t = rdz_value(rdh[k + o], sp[k + o], a_[k + o], dh[k + o], ry[k + o], aid)  # Rdy
            rdy[k + o] = t
            hb[o] += t                                            # Rdβ = Σ_n Rdy
            hg[o] += t * zh[k + o] + dy[k + o] * rzh[k + o]       # Rdγ
    for n in range(N):
        k = n * O
        for o in range(O):
            dzh = dy[k + o] * g[o]                                # dẑ = dy ⊙ γ
            rdzh = rdy[k + o] * g[o] + dy[k + o] * vg[o]          # Rdẑ = Rdy ⊙ γ + dy ⊙ V_γ
            md[o] += dzh
            m[o] += dzh * zh[k + o]
            mrd[o] += rdzh
            rm[o] += rdzh * zh[k + o] + dzh * rzh[k + o]
    for o in range(O):
        md[o] /= N
        m[o] /= N                                                 # m = mean(dẑ ⊙ ẑ)
        mrd[o] /= N
        rm[o] /= N                                                # Rm
    for n in range(N):
        k = n * O
        for o in range(O):
            dzh = dy[k + o] * g[o]
            rdzh = rdy[k + o] * g[o] + dy[k + o] * vg[o]
            dz = s[o] * (dzh - md[o] - zh[k + o] * m[o])          # dz (the reference's line)
            rdz[k + o] = (-q[o] * s[o]) * dz + s[o] * (rdzh - mrd[o] - rzh[k + o] * m[o]
                                                       - zh[k + o] * rm[o])
