"""Fused passes through the thin layers: the input layer with D = 1, an output layer with O = 1.

Dimension legend: N points, I = fan_in, O = fan_out of the layer named, H = the width of
the hidden layer next to it.  Layouts: mamlnp/fast/common/__init__.py (flat row-major buffers
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

Forward and R-forward, layer 0 with D = 1 (then σ, or σ' for Rh, in mlp_kernels):
    z = x ⊗ w + b,   Rz = x ⊗ v_w + v_b                                (N, H)
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
from numba import njit


@njit(inline="always", _nrt=False)
def first_or_add(out, h, value, first):
    """out[h] = value for the first point (written, not added to 0: the bits of the unfused
    kernels' sums), else out[h] += value."""
    if first:
        out[h] = value
    else:
        out[h] += value


@njit(inline="always", _nrt=False)
def rdz_value(rdh, s, a, dh, rz, aid):
    """One entry of Rdz = Rdh ⊙ σ' + dh ⊙ σ'' ⊙ Rz, σ'' from a = σ(z), s = σ'(z):
    relu'' = 0, tanh'' = −2 a s, softplus'' = s (1 − s) (activations.py). Used here and by
    mlp_kernels.r_dz, so the two write the same expression."""
    if aid == 0:
        return rdh * s
    if aid == 1:
        return rdh * s + dh * (-2.0 * a * s) * rz
    return rdh * s + dh * (s * (1.0 - s)) * rz


@njit(cache=True, _nrt=False)
def outer_bias(x, N, p, wo, bo, H, Z):
    """Layer 0 with D = 1: Z (N, H) at 0 = x ⊗ w + b with w = p[wo:wo+H], b = p[bo:bo+H]
    (p = θ: z of the forward; p = v: Rz of the R-forward), the product and the bias in one
    pass. ``mlp_kernels`` then applies σ (A, S) or σ' (Rh) to the block."""
    w, b = p[wo:wo + H], p[bo:bo + H]
    for n in range(N):
        xn = x[n]
        z_ = Z[n * H:(n + 1) * H]
        for h in range(H):
            z_[h] = xn * w[h] + b[h]


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
            first_or_add(db, h, t, n == 0)
            first_or_add(dw, h, xn * t, n == 0)


@njit(cache=True, _nrt=False)
def output_backward(N, H, ho, zo, th, wo, bo, C, out):
    """Output layer (O = 1) with weights w = th[wo:wo+H] over a hidden layer of width H whose
    block starts at ho, given dŷ = DZ[zo:zo+N], on the cache C (rows Z, A, S, DZ, DH):
    out[wo:wo+H] = hᵀ dŷ (dW), DH = dŷ ⊗ w, DZ = DH ⊙ S on the hidden block,
    out[bo:bo+H] = Σ_n DZ (the hidden layer's db); sums in the order n = 0, 1, …"""
    A, S, DZ, DH = C[1], C[2], C[3], C[4]
    w, dw, db, dy = th[wo:wo + H], out[wo:wo + H], out[bo:bo + H], DZ[zo:zo + N]
    for n in range(N):
        d = dy[n]
        r = ho + n * H
        h_, s_, dh_, dz_ = A[r:r + H], S[r:r + H], DH[r:r + H], DZ[r:r + H]
        for h in range(H):
            dh = d * w[h]
            dh_[h] = dh
            t = dh * s_[h]
            dz_[h] = t
            first_or_add(dw, h, h_[h] * d, n == 0)
            first_or_add(db, h, t, n == 0)


@njit(cache=True, _nrt=False)
def output_r_backward(N, H, ho, zo, th, v, wo, bo, C, Rb, hv, aid):
    """Output layer (O = 1, weights at wo) of the R-pass over a hidden layer of width H
    (block at ho), on the cache C (rows Z, A, S, DZ, DH) and the R-pass rows Rb (RZ, RH,
    RDZ, RDH), given dŷ = DZ[zo:zo+N] and R{dŷ} = RDZ[zo:zo+N]: hv[wo:wo+H] = hᵀ R{dŷ}
    (the first part of RdW; ``output_r_backward_rest`` adds Rhᵀ dŷ),
    RDH = R{dŷ} ⊗ w + dŷ ⊗ v_w, then RDZ = RDH ⊙ σ' + DH ⊙ σ'' ⊙ RZ on the hidden block
    (σ'' from A, S: tanh'' = −2 h σ', softplus'' = σ'(1 − σ'), relu'' = 0) and
    hv[bo:bo+H] = Σ_n RDZ."""
    A, S, DZ, DH, RZ, RDZ, RDH = C[1], C[2], C[3], C[4], Rb[0], Rb[2], Rb[3]
    w, vw = th[wo:wo + H], v[wo:wo + H]
    dw, db, dy, rdy = hv[wo:wo + H], hv[bo:bo + H], DZ[zo:zo + N], RDZ[zo:zo + N]
    for n in range(N):
        d, rd = dy[n], rdy[n]
        r = ho + n * H
        h_, s_, rdh_, rdz_ = A[r:r + H], S[r:r + H], RDH[r:r + H], RDZ[r:r + H]
        dh_, rz_ = DH[r:r + H], RZ[r:r + H]
        for h in range(H):
            rdh = rd * w[h] + d * vw[h]
            rdh_[h] = rdh
            t = rdz_value(rdh, s_[h], h_[h], dh_[h], rz_[h], aid)
            rdz_[h] = t
            first_or_add(dw, h, h_[h] * rd, n == 0)
            first_or_add(db, h, t, n == 0)


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
