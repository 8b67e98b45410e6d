"""Batch normalisation on one batch of N points: forward, backward, R-forward, R-backward.

Dimension legend: N points of the batch, O features of the layer (fan_out), Hsum = all
units of all layers (the width of a per-point cache row, mamlnp/fast/common/__init__.py).

Reference: mamlnp/nn/batchnorm.py (``batchnorm_forward``, ``batchnorm_backward``,
``batchnorm_rforward``, ``batchnorm_rbackward``), in its symbols; tests:
tests/test_classify_kernels.py (each pass against its twin to 1e-12). Fused with the
activation that follows (a hidden layer is dense -> batch norm -> σ, σ′ written sp here).
Statistics of the batch itself, biased variance, no running averages
(docs/derivations/batchnorm.md):

    forward     μ = mean(z),  σ² = mean((z − μ)²),  s = 1/√(σ² + ε),  ẑ = (z − μ) s,
                y = γ ⊙ ẑ + β,  h = σ(y)
    backward    dy = dh ⊙ σ′(y),  dβ = Σ_n dy,  dγ = Σ_n dy ⊙ ẑ,
                dz = s ⊙ (dẑ − mean(dẑ) − ẑ ⊙ mean(dẑ ⊙ ẑ)) with dẑ = dy ⊙ γ,
                computed with γ taken out of the means: γ s (dy − dβ/N − ẑ dγ/N)
    R-forward   q = mean(ẑ ⊙ Rz),  Rẑ = s ⊙ (Rz − mean(Rz) − ẑ ⊙ q),
                Ry = V_γ ⊙ ẑ + γ ⊙ Rẑ + V_β,  Rh = σ′(y) ⊙ Ry
    R-backward  Rdy = Rdh ⊙ σ′(y) + dh ⊙ σ″(y) ⊙ Ry,
                Rdβ = Σ_n Rdy,  Rdγ = Σ_n (Rdy ⊙ ẑ + dy ⊙ Rẑ),
                R{s}/s = −s ⊙ q,  Rdẑ = Rdy ⊙ γ + dy ⊙ V_γ,
                Rdz = (R{s}/s) ⊙ dz + s ⊙ (Rdẑ − mean(Rdẑ) − Rẑ ⊙ m − ẑ ⊙ Rm),
                with m = mean(dẑ ⊙ ẑ), Rm = mean(Rdẑ ⊙ ẑ + dẑ ⊙ Rẑ)      (the reference's lines)

Buffers: every (N, O) block sits at element offset ``off`` of a flat cache buffer (row n at
off + n·O), every per-feature vector (s, q) at offset ``co`` of a (Hsum,) buffer; γ, β (and
their directions V_γ, V_β) at offsets ``go``, ``eo`` of θ (or v); their gradients are written
at the same offsets of the gradient. The buffers of one pass come as a bundle:

    Cache(XH, A, S, DZ, DY, DH, SN)    XH ẑ (z on entry to bn_forward), A h = σ(y), S σ′(y),
                                        DZ dz, DY dy, DH dh (N·Hsum each), SN s (Hsum,)
    RCache(RXH, RY, RH, RDY, RDZ, RDH, Q)   Rẑ (Rz on entry), Ry, Rh, Rdy, Rdz, Rdh, q

Sums over points run n = 0, 1, …, N−1 in order (the same bits for any thread count).
"""
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from ..mlp.mlp_kernels import act_forward
from ..mlp.thin_layers import rdz_value


class Cache(NamedTuple):
    """One pass's buffers for N points (flat (N, ·) blocks at N·coff[l]; R per feature)."""
    XH: np.ndarray           # (N·Hsum,) ẑ per hidden layer (z on entry to bn_forward); ŷ
    A: np.ndarray            # (N·Hsum,) h = σ(y); p = softmax(ŷ) in the output block
    S: np.ndarray            # (N·Hsum,) σ′(y)
    DZ: np.ndarray           # (N·Hsum,) dz (the dense layer's output gradient); dŷ
    DY: np.ndarray           # (N·Hsum,) dy = dh ⊙ σ′(y)
    DH: np.ndarray           # (N·Hsum,) dh
    SN: np.ndarray           # (Hsum,) s = 1/√(σ² + ε) (the reference's s; S holds σ′)


class RCache(NamedTuple):
    """The R-pass's buffers (same layout as Cache)."""
    RXH: np.ndarray          # Rẑ (Rz on entry to bn_rforward); Rŷ in the output block
    RY: np.ndarray           # Ry
    RH: np.ndarray           # Rh
    RDY: np.ndarray          # R{dy}
    RDZ: np.ndarray          # R{dz}; R{dŷ}
    RDH: np.ndarray          # R{dh}
    Q: np.ndarray            # (Hsum,) q = mean(ẑ ⊙ Rz)


@njit(cache=True, _nrt=False)
def col_mean(X, off, N, O, out, oo):
    """out[oo : oo+O] = mean_n X[n, :] for the (N, O) block at off (rows in order)."""
    x, mean = X[off:off + N * O], out[oo:oo + O]
    for o in range(O):
        mean[o] = x[o]
    for n in range(1, N):
        xn = x[n * O:(n + 1) * O]
        for o in range(O):
            mean[o] += xn[o]
    for o in range(O):
        mean[o] /= N


@njit(cache=True, _nrt=False)
def bn_forward(c, th, off, N, O, go, eo, co, eps, aid):
    """batchnorm_forward + σ on the (N, O) block at off: c.XH holds z on entry, ẑ on exit;
    c.SN[co:co+O] = s = 1/√(σ² + ε); c.A = σ(y), c.S = σ′(y), y = γ ẑ + β."""
    z, s = c.XH[off:off + N * O], c.SN[co:co + O]
    col_mean(c.XH, off, N, O, c.SN, co)                           # μ (held in s for now)
    for n in range(N):                                            # z − μ
        zn = z[n * O:(n + 1) * O]
        for o in range(O):
            zn[o] -= s[o]
    for o in range(O):
        s[o] = z[o] * z[o]
    for n in range(1, N):                                         # Σ_n (z − μ)²
        zn = z[n * O:(n + 1) * O]
        for o in range(O):
            s[o] += zn[o] * zn[o]
    for o in range(O):
        s[o] = 1.0 / math.sqrt(s[o] / N + eps)                    # s = 1/√(σ² + ε)
    g, b = th[go:go + O], th[eo:eo + O]
    a_ = c.A[off:off + N * O]
    for n in range(N):
        zn, an = z[n * O:(n + 1) * O], a_[n * O:(n + 1) * O]
        for o in range(O):
            zh = zn[o] * s[o]                                     # ẑ
            zn[o] = zh
            an[o] = g[o] * zh + b[o]                              # y (σ applied below)
    act_forward(c.A, c.A, c.S, off, N * O, aid)                   # h = σ(y), σ′(y)


@njit(cache=True, _nrt=False)
def bn_backward(c, th, off, N, O, go, eo, co, grad):
    """batchnorm_backward after σ: from dh (c.DH block), dy into c.DY, dz into c.DZ, dγ, dβ
    into grad[go:], grad[eo:]."""
    zh, dh, sp = c.XH[off:off + N * O], c.DH[off:off + N * O], c.S[off:off + N * O]
    dy, dz = c.DY[off:off + N * O], c.DZ[off:off + N * O]
    dg, db = grad[go:go + O], grad[eo:eo + O]
    for o in range(O):
        dg[o] = 0.0
        db[o] = 0.0
    for n in range(N):
        k = n * O
        for o in range(O):
            d = dh[k + o] * sp[k + o]                             # dy = dh ⊙ σ′(y)
            dy[k + o] = d
            db[o] += d                                            # dβ = Σ_n dy
            dg[o] += d * zh[k + o]                                # dγ = Σ_n dy ⊙ ẑ
    g, s = th[go:go + O], c.SN[co:co + O]
    for n in range(N):
        k = n * O
        for o in range(O):                                        # dz, γ out of the means
            dz[k + o] = g[o] * s[o] * (dy[k + o] - db[o] / N - zh[k + o] * (dg[o] / N))


@njit(cache=True, _nrt=False)
def bn_rforward(c, rc, th, v, off, N, O, go, eo, co):
    """batchnorm_rforward + σ′: from Rz (rc.RXH block on entry), Rẑ into rc.RXH, q into
    rc.Q[co:], Ry into rc.RY, Rh = σ′(y) ⊙ Ry into rc.RH; v holds the direction (V_γ at
    v[go:], V_β at v[eo:])."""
    zh, sp = c.XH[off:off + N * O], c.S[off:off + N * O]
    rz, ry, rh = rc.RXH[off:off + N * O], rc.RY[off:off + N * O], rc.RH[off:off + N * O]
    q, s = rc.Q[co:co + O], c.SN[co:co + O]
    m = rc.RY[off:off + O]                                        # mean(Rz), in Ry's row 0
    for o in range(O):
        m[o] = rz[o]
        q[o] = zh[o] * rz[o]
    for n in range(1, N):
        k = n * O
        for o in range(O):
            m[o] += rz[k + o]
            q[o] += zh[k + o] * rz[k + o]
    for o in range(O):
        m[o] /= N
        q[o] /= N                                                 # q = mean(ẑ ⊙ Rz)
    for n in range(N):
        k = n * O
        for o in range(O):
            rz[k + o] = s[o] * (rz[k + o] - m[o] - zh[k + o] * q[o])   # Rẑ
    g, vg, vb = th[go:go + O], v[go:go + O], v[eo:eo + O]
    for n in range(N):
        k = n * O
        for o in range(O):
            t = vg[o] * zh[k + o] + g[o] * rz[k + o] + vb[o]      # Ry
            ry[k + o] = t
            rh[k + o] = sp[k + o] * t                             # Rh = σ′(y) Ry


@njit(cache=True, _nrt=False)
def bn_rbackward(c, rc, th, v, off, N, O, go, eo, co, aid, hv):
    """batchnorm_rbackward after σ: from Rdh (rc.RDH block), Rdy into rc.RDY, Rdz into
    rc.RDZ, Rdγ, Rdβ into hv[go:], hv[eo:]. Needs the forward/backward cache c (ẑ, σ, σ′, dy,
    dh, s) at the same θ and the R-forward's rc (Rẑ, Ry, q)."""
    zh, a_, sp = c.XH[off:off + N * O], c.A[off:off + N * O], c.S[off:off + N * O]
    dy, dh, s = c.DY[off:off + N * O], c.DH[off:off + N * O], c.SN[co:co + O]
    rzh, ry, rdh = rc.RXH[off:off + N * O], rc.RY[off:off + N * O], rc.RDH[off:off + N * O]
    rdy, rdz, q = rc.RDY[off:off + N * O], rc.RDZ[off:off + N * O], rc.Q[co:co + O]
    hg, hb = hv[go:go + O], hv[eo:eo + O]
    for o in range(O):
        hg[o] = 0.0
        hb[o] = 0.0
    for n in range(N):
        k = n * O
        for o in range(O):
            t = rdz_value(rdh[k + o], sp[k + o], a_[k + o], dh[k + o], ry[k + o], aid)  # Rdy
            rdy[k + o] = t
            hb[o] += t                                            # Rdβ = Σ_n Rdy
            hg[o] += t * zh[k + o] + dy[k + o] * rzh[k + o]       # Rdγ
    g, vg = th[go:go + O], v[go:go + O]
    for o in range(O):
        md, m, mrd, rm = 0.0, 0.0, 0.0, 0.0     # mean(dẑ), m, mean(Rdẑ), Rm
        for n in range(N):
            k = n * O + o
            dzh = dy[k] * g[o]                                    # dẑ = dy ⊙ γ
            rdzh = rdy[k] * g[o] + dy[k] * vg[o]                  # Rdẑ = Rdy ⊙ γ + dy ⊙ V_γ
            md += dzh
            m += dzh * zh[k]
            mrd += rdzh
            rm += rdzh * zh[k] + dzh * rzh[k]
        md /= N
        m /= N                                                    # m = mean(dẑ ⊙ ẑ)
        mrd /= N
        rm /= N                                                   # Rm = mean(Rdẑ ẑ + dẑ Rẑ)
        rs_s = -q[o] * s[o]                                       # R{s}/s = −s q
        for n in range(N):
            k = n * O + o
            dzh = dy[k] * g[o]
            rdzh = rdy[k] * g[o] + dy[k] * vg[o]
            dz = s[o] * (dzh - md - zh[k] * m)                    # dz (the reference's line)
            rdz[k] = rs_s * dz + s[o] * (rdzh - mrd - rzh[k] * m - zh[k] * rm)
