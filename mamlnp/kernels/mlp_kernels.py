"""Forward, loss, backward and R-pass (exact HVP) of the MLP on one task's points.

Dimension legend: N points, L layers, I = fan_in = sizes[l], O = fan_out = sizes[l+1],
P parameters, Hsum = Σ_{l≥1} sizes[l].  Layout conventions: mamlnp/kernels/__init__.py.

Compiled twins of mamlnp/mlp.py (``_forward``, ``_backward``, ``_rpass``), layers.py,
activations.py and losses.py; same equations, same order of layers:

    forward     z_l = h_{l-1} W_l + b_l ,  h_l = σ(z_l) (hidden),  ŷ = z_L
    backward    dz_l = dh_l ⊙ σ'(z_l),  dW_l = h_{l-1}ᵀ dz_l,  db_l = Σ_n dz_l,  dh_{l-1} = dz_l W_lᵀ
    R-forward   Rz_l = h_{l-1} V_W + V_b + Rh_{l-1} W_l ,  Rh_l = σ'(z_l) ⊙ Rz_l     (Rh_0 = 0)
    R-backward  Rdz_l = Rdh_l ⊙ σ'(z_l) + dh_l ⊙ σ''(z_l) ⊙ Rz_l
                RdW_l = h_{l-1}ᵀ Rdz_l + Rh_{l-1}ᵀ dz_l ,  Rdb_l = Σ_n Rdz_l
                Rdh_{l-1} = Rdz_l W_lᵀ + dz_l V_Wᵀ                 (H v = [RdW_l | Rdb_l]_l)

The matrix products go through ``matmul`` on 2-d views (``block``) of the flat buffers:
``np.dot``, i.e. a direct BLAS dgemm call, which for these small shapes (10×40 by 40×40)
ran about 4× faster than the best hand-written loop nest we measured (Numba does not
SLP-vectorise, and a vectorised axpy loop is store-bound); thin products with a dimension
of 1 (D = 1 input, O = 1 output layer) are loops, cheaper than the call overhead.
docs/performance.md has the figures.  A transposed operand (hᵀ, Wᵀ) is a transposed
view: BLAS reads it in place, nothing is copied.

A *cache* of one pass is five flat buffers of N·Hsum floats: Z (z_l; ŷ for the last
layer), A (h_l; for softmax_xent the last block holds p = softmax(ŷ)), S (σ'(z_l)),
DZ (dz_l; dŷ for the last layer), DH (dh_l).  σ'' is rebuilt from A and S without a
transcendental: tanh'' = −2 h σ', softplus'' = σ'(1 − σ'), relu'' = 0 (term skipped).
Elementwise loops run over slices indexed from 0: with ``range(off, off + n)`` indices
LLVM cannot prove i ≥ 0, keeps Numba's negative-index wrap-around test and does not
vectorise (forward took 2.14 µs instead of 1.55 µs on 1-40-40-1, K = 10).
"""
import math

import numpy as np
from numba import njit


@njit(cache=True)
def block(buf, off, rows, cols):
    """buf[off : off + rows·cols] as a (rows, cols) row-major view (no copy)."""
    return buf[off:off + rows * cols].reshape(rows, cols)


@njit(cache=True)
def matmul(A, B, C):
    """C = A B for 2-d views A (M, R), B (R, W), C (M, W) row-major; A or B may be a
    transposed view. BLAS (``np.dot``) except for the thin products of an input layer
    with D = 1 or an output layer with O = 1, where a loop beats the BLAS call overhead:
    R = 1 (outer product), M = 1 (vector·matrix), W = 1 with A column-contiguous (hᵀ dz).
    Each loop sums its R terms in order r = 0, 1, …"""
    M, R, W = A.shape[0], A.shape[1], B.shape[1]
    if R == 1:                                            # C = a ⊗ b
        for m in range(M):
            a = A[m, 0]
            for w in range(W):
                C[m, w] = a * B[0, w]
    elif M == 1:                                          # c = a B
        for w in range(W):
            C[0, w] = A[0, 0] * B[0, w]
        for r in range(1, R):
            a = A[0, r]
            for w in range(W):
                C[0, w] += a * B[r, w]
    elif W == 1 and A.strides[0] == A.itemsize:           # c = A b, A's columns contiguous
        for m in range(M):
            C[m, 0] = A[m, 0] * B[0, 0]
        for r in range(1, R):
            b = B[r, 0]
            for m in range(M):
                C[m, 0] += A[m, r] * b
    else:
        np.dot(A, B, C)


@njit(cache=True)
def add_into(dst, src):
    """dst += src, both (rows, cols)."""
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] += src[i, j]


@njit(cache=True)
def add_row(dst, b):
    """dst[n, :] += b for every row n: (N, O) += (O,)."""
    for n in range(dst.shape[0]):
        for o in range(dst.shape[1]):
            dst[n, o] += b[o]


@njit(cache=True)
def sum_rows(src, out):
    """out (O,) = Σ_n src[n, :]   (db = Σ_n dz)."""
    out[:] = 0.0
    for n in range(src.shape[0]):
        for o in range(src.shape[1]):
            out[o] += src[n, o]


@njit(cache=True)
def mul_into(D, X, Y, off, n):
    """D = X ⊙ Y on [off, off+n) (through slices: vectorised, see act_forward)."""
    d, x, y = D[off:off + n], X[off:off + n], Y[off:off + n]
    for i in range(n):
        d[i] = x[i] * y[i]


# ---- activations (aid 0 relu, 1 tanh, 2 softplus) ------------------------------------


@njit(cache=True)
def act_forward(Z, A, S, off, n, aid):
    """A = σ(Z), S = σ'(Z) on [off, off+n) (elementwise; activations.py). The loops run
    over slices from 0, so LLVM sees non-negative indices and vectorises them."""
    z_, a_, s_ = Z[off:off + n], A[off:off + n], S[off:off + n]
    if aid == 0:
        for i in range(n):
            z = z_[i]
            a_[i] = z if z > 0.0 else 0.0
            s_[i] = 1.0 if z > 0.0 else 0.0
    elif aid == 1:
        for i in range(n):
            t = math.tanh(z_[i])
            a_[i] = t
            s_[i] = 1.0 - t * t
    else:
        for i in range(n):
            z = z_[i]
            e = math.exp(-abs(z))                        # ≤ 1: no overflow
            a_[i] = max(z, 0.0) + math.log1p(e)          # log(1 + e^z), as np.logaddexp(0, z)
            s_[i] = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)   # sigmoid(z)


# ---- forward --------------------------------------------------------------------------


@njit(cache=True)
def layer_input(x, A, N, sizes, coff, l):
    """h_{l-1} (N, sizes[l]): the data x for l = 0, else the activations of layer l−1."""
    if l == 0:
        return block(x, 0, N, sizes[0])
    return block(A, N * coff[l - 1], N, sizes[l])


@njit(cache=True)
def forward(th, x, N, sizes, woff, boff, coff, aid, Z, A, S):
    """Fill Z, A, S for the N points x (N·D,) at parameters th (P,)."""
    L = sizes.shape[0] - 1
    for l in range(L):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        z = block(Z, zo, N, O)
        matmul(layer_input(x, A, N, sizes, coff, l), block(th, woff[l], I, O), z)  # h W
        add_row(z, th[boff[l]:boff[l] + O])                                          # + b
        if l < L - 1:
            act_forward(Z, A, S, zo, N * O, aid)


# ---- losses (lid 0 mse, 1 softmax_xent) -------------------------------------------------


@njit(cache=True)
def loss_and_dyhat(Z, A, DZ, off, y, N, O, lid):
    """L(ŷ, y) with ŷ = Z[off:off+N·O]; writes dŷ into DZ (and p into A for softmax_xent)."""
    if lid == 0:                                          # L = mean (ŷ − y)²
        c, n = 2.0 / (N * O), N * O
        z, dz = Z[off:off + n], DZ[off:off + n]
        total = 0.0
        for i in range(n):
            d = z[i] - y[i]
            total += d * d
            dz[i] = c * d                                 # 2 (ŷ − y) / (N O)
        return total / n
    total = 0.0                                           # L = −(1/N) Σ y log softmax(ŷ)
    for n in range(N):
        r = off + n * O
        lse = log_sum_exp(Z, r, O)
        for o in range(O):
            logp = Z[r + o] - lse
            total += y[n * O + o] * logp
            A[r + o] = math.exp(logp)                     # p
            DZ[r + o] = (A[r + o] - y[n * O + o]) / N     # (p − y) / N
    return -total / N


@njit(cache=True)
def log_sum_exp(Z, r, O):
    """log Σ_o exp(Z[r + o]), shifted by the max for stability."""
    m = Z[r]
    for o in range(1, O):
        m = max(m, Z[r + o])
    se = 0.0
    for o in range(O):
        se += math.exp(Z[r + o] - m)
    return m + math.log(se)


@njit(cache=True)
def loss_value(Z, off, y, N, O, lid):
    """L(ŷ, y) alone, ŷ = Z[off:off+N·O]."""
    total = 0.0
    if lid == 0:
        z = Z[off:off + N * O]
        for i in range(N * O):
            d = z[i] - y[i]
            total += d * d
        return total / (N * O)
    for n in range(N):
        r = off + n * O
        lse = log_sum_exp(Z, r, O)
        for o in range(O):
            total += y[n * O + o] * (Z[r + o] - lse)
    return -total / N


# ---- backward ----------------------------------------------------------------------------


@njit(cache=True)
def backward(th, x, N, sizes, woff, boff, coff, A, S, DZ, DH, grad):
    """∇L (P,) into grad, given the forward caches and dŷ in DZ; fills DZ and DH."""
    L = sizes.shape[0] - 1
    for l in range(L - 1, -1, -1):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        if l < L - 1:                                     # dz = dh ⊙ σ'(z)
            mul_into(DZ, DH, S, zo, N * O)
        dz = block(DZ, zo, N, O)
        matmul(layer_input(x, A, N, sizes, coff, l).T, dz, block(grad, woff[l], I, O))  # hᵀ dz
        sum_rows(dz, grad[boff[l]:boff[l] + O])                                         # Σ_n dz
        if l > 0:
            matmul(dz, block(th, woff[l], I, O).T, block(DH, N * coff[l - 1], N, I))   # dz Wᵀ


# ---- R-pass: H v -----------------------------------------------------------------------------


@njit(cache=True)
def r_forward(th, v, x, N, sizes, woff, boff, coff, A, S, RZ, RH, tmp):
    """R-forward along v: Rz_l = h_{l-1} V_W + V_b + Rh_{l-1} W_l, Rh_l = σ'(z_l) ⊙ Rz_l."""
    L = sizes.shape[0] - 1
    for l in range(L):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        rz = block(RZ, zo, N, O)
        matmul(layer_input(x, A, N, sizes, coff, l), block(v, woff[l], I, O), rz)   # h V_W
        add_row(rz, v[boff[l]:boff[l] + O])                                          # + V_b
        if l > 0:
            t = block(tmp, 0, N, O)
            matmul(block(RH, N * coff[l - 1], N, I), block(th, woff[l], I, O), t)
            add_into(rz, t)                                                          # + Rh W
        if l < L - 1:
            mul_into(RH, S, RZ, zo, N * O)                # Rh = σ'(z) ⊙ Rz


@njit(cache=True)
def r_dz(A, S, DH, RZ, RDH, RDZ, off, n, aid):
    """Rdz = Rdh ⊙ σ'(z) + dh ⊙ σ''(z) ⊙ Rz on [off, off+n) (the σ'' term is 0 for relu)."""
    a_, s_, dh, rz = A[off:off + n], S[off:off + n], DH[off:off + n], RZ[off:off + n]
    rdh, rdz = RDH[off:off + n], RDZ[off:off + n]
    if aid == 0:
        for i in range(n):
            rdz[i] = rdh[i] * s_[i]
    elif aid == 1:
        for i in range(n):
            rdz[i] = rdh[i] * s_[i] + dh[i] * (-2.0 * a_[i] * s_[i]) * rz[i]  # tanh'' = −2 t (1 − t²)
    else:
        for i in range(n):
            rdz[i] = rdh[i] * s_[i] + dh[i] * (s_[i] * (1.0 - s_[i])) * rz[i]  # softplus'' = s (1 − s)


@njit(cache=True)
def r_backward(th, v, x, N, sizes, woff, boff, coff, aid, A, S, DZ, DH, RZ, RH, RDZ, RDH,
               tmp, hv):
    """R-backward from R{dŷ} (already in RDZ's last block) down to layer 1; hv = H v (P,)."""
    L = sizes.shape[0] - 1
    for l in range(L - 1, -1, -1):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        if l < L - 1:
            r_dz(A, S, DH, RZ, RDH, RDZ, zo, N * O, aid)
        rdz, dz, hvW = block(RDZ, zo, N, O), block(DZ, zo, N, O), block(hv, woff[l], I, O)
        matmul(layer_input(x, A, N, sizes, coff, l).T, rdz, hvW)                   # hᵀ Rdz
        sum_rows(rdz, hv[boff[l]:boff[l] + O])                                      # Σ_n Rdz
        if l > 0:
            ho = N * coff[l - 1]
            t = block(tmp, 0, I, O)
            matmul(block(RH, ho, N, I).T, dz, t)
            add_into(hvW, t)                                                        # + Rhᵀ dz
            rdh, t = block(RDH, ho, N, I), block(tmp, 0, N, I)
            matmul(rdz, block(th, woff[l], I, O).T, rdh)                            # Rdz Wᵀ
            matmul(dz, block(v, woff[l], I, O).T, t)
            add_into(rdh, t)                                                        # + dz V_Wᵀ


@njit(cache=True)
def rpass(th, v, x, N, sizes, woff, boff, coff, aid, lid, A, S, DZ, DH, RZ, RH, RDZ, RDH,
          tmp, hv):
    """hv = H_θ v (P,), exact (Pearlmutter), reusing the caches A, S, DZ, DH that
    ``forward`` and ``backward`` left for these N points at the same θ.
    RZ, RH, RDZ, RDH: N·Hsum scratch; tmp: max(N, I)·O scratch for every layer."""
    L = sizes.shape[0] - 1
    r_forward(th, v, x, N, sizes, woff, boff, coff, A, S, RZ, RH, tmp)
    r_loss(A, RZ, RDZ, N * coff[L - 1], N, sizes[L], lid)             # R{dŷ}
    r_backward(th, v, x, N, sizes, woff, boff, coff, aid, A, S, DZ, DH, RZ, RH, RDZ, RDH,
               tmp, hv)


@njit(cache=True)
def r_loss(A, RZ, RDZ, off, N, O, lid):
    """R{dŷ} into RDZ[off:off+N·O] from Rŷ = RZ[off:…] (losses.py ``*_rbackward``)."""
    if lid == 0:
        c, n = 2.0 / (N * O), N * O
        rz, rdz = RZ[off:off + n], RDZ[off:off + n]
        for i in range(n):
            rdz[i] = c * rz[i]                            # 2 Rŷ / (N O)
        return
    for n in range(N):                                    # p ⊙ (Rŷ − Σ_o p_o Rŷ_o) / N
        r = off + n * O
        s = 0.0
        for o in range(O):
            s += A[r + o] * RZ[r + o]
        for o in range(O):
            RDZ[r + o] = A[r + o] * (RZ[r + o] - s) / N
