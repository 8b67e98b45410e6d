"""Fused passes through the thin layers: the input layer with D = 1, an output layer with O = 1.

Dimension legend: N points, I = fan_in, O = fan_out of the layer named, H = the width of
the hidden layer next to it.  Layouts: mamlnp/kernels/__init__.py (flat row-major buffers
addressed by offsets; a cache block of N points is (N, width)).

A layer with a dimension of 1 does no matrix product worth a BLAS call: its "product" is
an outer product (x ⊗ w, dz ⊗ w) or a weighted sum of rows (hᵀ dz, xᵀ dz), 400 multiply-adds
for N = 10, H = 40.  Done as ``linalg.thin_product`` loops each is a separate pass over an
(N, H) block, followed by another pass for the bias, the activation or σ' (``add_row``,
``act_forward``, ``mul_sum``, ``mul_into``).  Here the passes that touch the same (N, H)
block are one loop over n = 0 … N−1, h = 0 … H−1.  Nothing is reordered: every output
element is computed by the same floating-point operations, and every sum over the points
adds its terms in the order n = 0, 1, … starting with the n = 0 term written, not added to
0 (as ``thin_product`` and ``mul_sum`` do), so the results have the bits of the unfused
kernels.  tests/test_kernels.py checks them against the NumPy twins like the rest, and
tests/test_thin_layers.py bit for bit against the unfused sequence.

Forward, layer 0 with D = 1 (hidden):
    z = x ⊗ w + b,   h = σ(z),   σ'(z)                              (N, H)
R-forward, layer 0 with D = 1 (hidden):
    Rz = x ⊗ v_w + v_b,   Rh = σ'(z) ⊙ Rz                            (N, H)
Backward, layer 0 with D = 1 (hidden), given dh:
    dz = dh ⊙ σ'(z),   db = Σ_n dz,   dW = xᵀ dz                      (the same for R{·})
Backward, output layer l with O = 1 (l > 0), given dŷ = dz_l (N,):
    dW_l = h_{l−1}ᵀ dz_l,   dh_{l−1} = dz_l ⊗ w_l,   dz_{l−1} = dh_{l−1} ⊙ σ'(z_{l−1}),
    db_{l−1} = Σ_n dz_{l−1}
R-backward, output layer l with O = 1, given R{dŷ} = Rdz_l (N,):
    RdW_l = h_{l−1}ᵀ Rdz_l (then + Rh_{l−1}ᵀ dz_l, a second pass: the first sum must be
    complete before the second is added to it),   Rdh_{l−1} = Rdz_l ⊗ w_l + dz_l ⊗ v_l,
    Rdz_{l−1} = Rdh_{l−1} ⊙ σ' + dh_{l−1} ⊙ σ'' ⊙ Rz_{l−1},   Rdb_{l−1} = Σ_n Rdz_{l−1}
"""
import math

from numba import njit


@njit(cache=True, _nrt=False)
def input_forward(x, N, th, wo, bo, H, aid, Z, A, S):
    """Layer 0, D = 1, hidden: Z = x ⊗ w + b, A = σ(Z), S = σ'(Z) on the (N, H) block at 0.
    (activations.py; aid 0 relu, 1 tanh, 2 softplus)."""
    w, b = th[wo:wo + H], th[bo:bo + H]
    for n in range(N):
        xn = x[n]
        z_, a_, s_ = Z[n * H:(n + 1) * H], A[n * H:(n + 1) * H], S[n * H:(n + 1) * H]
        for h in range(H):
            z = xn * w[h] + b[h]
            z_[h] = z
            if aid == 0:
                a_[h] = z if z > 0.0 else 0.0
                s_[h] = 1.0 if z > 0.0 else 0.0
            elif aid == 1:
                t = math.tanh(z)
                a_[h] = t
                s_[h] = 1.0 - t * t
            else:
                e = math.exp(-abs(z))                    # ≤ 1: no overflow
                a_[h] = max(z, 0.0) + math.log1p(e)      # log(1 + e^z)
                s_[h] = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)


@njit(cache=True, _nrt=False)
def input_r_forward(x, N, v, wo, bo, H, S, RZ, RH):
    """Layer 0, D = 1, hidden: RZ = x ⊗ v_w + v_b, RH = σ'(z) ⊙ RZ on the block at 0."""
    w, b = v[wo:wo + H], v[bo:bo + H]
    for n in range(N):
        xn = x[n]
        s_, rz_, rh_ = S[n * H:(n + 1) * H], RZ[n * H:(n + 1) * H], RH[n * H:(n + 1) * H]
        for h in range(H):
            rz = xn * w[h] + b[h]
            rz_[h] = rz
            rh_[h] = s_[h] * rz


@njit(cache=True, _nrt=False)
def input_backward(x, N, H, DH, S, DZ, out, wo, bo):
    """Layer 0, D = 1, hidden, given DH on the block at 0: DZ = DH ⊙ S,
    out[bo:bo+H] = Σ_n DZ (db), out[wo:wo+H] = xᵀ DZ (dW), sums in the order n = 0, 1, …
    (also the R-pass's Rdz, Rdb, RdW for relu, with RDH, RDZ in place of DH, DZ)."""
    dw, db = out[wo:wo + H], out[bo:bo + H]
    for n in range(N):
        xn = x[n]
        dh_, s_, dz_ = DH[n * H:(n + 1) * H], S[n * H:(n + 1) * H], DZ[n * H:(n + 1) * H]
        for h in range(H):
            t = dh_[h] * s_[h]
            dz_[h] = t
            if n == 0:
                db[h] = t
                dw[h] = xn * t
            else:
                db[h] += t
                dw[h] += xn * t


@njit(cache=True, _nrt=False)
def output_backward(N, H, ho, A, S, th, wo, zo, DZ, DH, out, gwo, gbo):
    """Output layer (O = 1) over a hidden layer of width H whose block starts at ho, given
    dŷ = DZ[zo:zo+N]: out[gwo:gwo+H] = hᵀ dŷ (dW), DH = dŷ ⊗ w, DZ = DH ⊙ S on the hidden
    block, out[gbo:gbo+H] = Σ_n DZ (the hidden layer's db); sums in the order n = 0, 1, …"""
    w, dw, db, dy = th[wo:wo + H], out[gwo:gwo + H], out[gbo:gbo + H], DZ[zo:zo + N]
    for n in range(N):
        d = dy[n]
        r = ho + n * H
        h_, s_, dh_, dz_ = A[r:r + H], S[r:r + H], DH[r:r + H], DZ[r:r + H]
        for h in range(H):
            dh = d * w[h]
            dh_[h] = dh
            t = dh * s_[h]
            dz_[h] = t
            if n == 0:
                dw[h] = h_[h] * d
                db[h] = t
            else:
                dw[h] += h_[h] * d
                db[h] += t


@njit(cache=True, _nrt=False)
def output_r_backward(N, H, ho, A, S, DH, RZ, th, v, wo, zo, DZ, RDZ, RDH, hv, gwo, gbo,
                      aid):
    """Output layer (O = 1) of the R-pass over a hidden layer of width H (block at ho),
    given dŷ = DZ[zo:zo+N] and R{dŷ} = RDZ[zo:zo+N]: hv[gwo:gwo+H] = hᵀ R{dŷ} (the first
    part of RdW; ``output_r_backward_rest`` adds Rhᵀ dŷ), RDH = R{dŷ} ⊗ w + dŷ ⊗ v_w, then
    RDZ = RDH ⊙ σ' + DH ⊙ σ'' ⊙ RZ on the hidden block (σ'' from A, S: tanh'' = −2 h σ',
    softplus'' = σ'(1 − σ'), relu'' = 0) and hv[gbo:gbo+H] = Σ_n RDZ."""
    w, vw = th[wo:wo + H], v[wo:wo + H]
    dw, db, dy, rdy = hv[gwo:gwo + H], hv[gbo:gbo + H], DZ[zo:zo + N], RDZ[zo:zo + N]
    for n in range(N):
        d, rd = dy[n], rdy[n]
        r = ho + n * H
        h_, s_, rdh_, rdz_ = A[r:r + H], S[r:r + H], RDH[r:r + H], RDZ[r:r + H]
        dh_, rz_ = DH[r:r + H], RZ[r:r + H]
        for h in range(H):
            rdh = rd * w[h] + d * vw[h]
            rdh_[h] = rdh
            s = s_[h]
            if aid == 0:
                t = rdh * s
            elif aid == 1:
                t = rdh * s + dh_[h] * (-2.0 * h_[h] * s) * rz_[h]
            else:
                t = rdh * s + dh_[h] * (s * (1.0 - s)) * rz_[h]
            rdz_[h] = t
            if n == 0:
                dw[h] = h_[h] * rd
                db[h] = t
            else:
                dw[h] += h_[h] * rd
                db[h] += t


@njit(cache=True, _nrt=False)
def output_r_backward_rest(N, H, ho, RH, DZ, zo, hv, gwo):
    """hv[gwo:gwo+H] += Rhᵀ dŷ (the second part of the output layer's RdW), terms added in
    the order n = 0, 1, … to the completed first part."""
    dw, dy = hv[gwo:gwo + H], DZ[zo:zo + N]
    for n in range(N):
        d = dy[n]
        rh_ = RH[ho + n * H:ho + (n + 1) * H]
        for h in range(H):
            dw[h] += rh_[h] * d
