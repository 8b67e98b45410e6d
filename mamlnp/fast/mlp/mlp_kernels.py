"""Forward, loss, backward and R-pass (exact HVP) of the MLP on one task's points.

Dimension legend: N points, L layers, I = fan_in = sizes[l], O = fan_out = sizes[l+1],
P parameters, Hsum = Σ_{l≥1} sizes[l].  Layout conventions: mamlnp/fast/common/__init__.py.

Compiled twins of mamlnp/nn/mlp.py (``_forward``, ``_backward``, ``_rpass``), layers.py,
activations.py and losses.py; same equations, same order of layers:

    forward     z_l = h_{l-1} W_l + b_l ,  h_l = σ(z_l) (hidden),  ŷ = z_L
    backward    dz_l = dh_l ⊙ σ'(z_l),  dW_l = h_{l-1}ᵀ dz_l,  db_l = Σ_n dz_l,  dh_{l-1} = dz_l W_lᵀ
    R-forward   Rz_l = h_{l-1} V_W + V_b + Rh_{l-1} W_l ,  Rh_l = σ'(z_l) ⊙ Rz_l     (Rh_0 = 0)
    R-backward  Rdz_l = Rdh_l ⊙ σ'(z_l) + dh_l ⊙ σ''(z_l) ⊙ Rz_l
                RdW_l = h_{l-1}ᵀ Rdz_l + Rh_{l-1}ᵀ dz_l ,  Rdb_l = Σ_n Rdz_l
                Rdh_{l-1} = Rdz_l W_lᵀ + dz_l V_Wᵀ                 (H v = [RdW_l | Rdb_l]_l)

The matrix products go through ``linalg.gemm_acc`` on the flat buffers (offsets, no
views): a direct BLAS dgemm call (transposes as flags; a sum of two products, as in
Rz_l or RdW_l, accumulates the second into the first with β = 1), or a loop for the thin
products with a dimension of 1 (D = 1 input, O = 1 output layer), cheaper than the call.
Through BLAS the 10×40 by 40×40 products run about 4× faster than the best hand-written
loop nest we measured (Numba does not SLP-vectorise, and a vectorised axpy loop is
store-bound).  docs/performance.md has the figures.

A *cache* C of one pass is five rows of (at least) N·Hsum floats, C (5, ·): Z (z_l; ŷ for
the last layer), A (h_l; for softmax_xent the last block holds p = softmax(ŷ)), S (σ'(z_l)),
DZ (dz_l; dŷ for the last layer), DH (dh_l); the R-pass has four more, Rb (4, ·): RZ, RH,
RDZ, RDH.  The passes take the model as a Geometry bundle (common/__init__.py).
σ'' is rebuilt from A and S without a transcendental: tanh'' = −2 h σ', softplus'' = σ'(1 − σ'), relu'' = 0 (term skipped).
Elementwise loops run over slices indexed from 0: with ``range(off, off + n)`` indices
LLVM cannot prove i ≥ 0, keeps Numba's negative-index wrap-around test and does not
vectorise (forward took 2.14 µs instead of 1.55 µs on 1-40-40-1, K = 10).

Thin layers: with D = 1 (input) or O = 1 (output) the passes below hand the layer to the
fused loops of thin_layers.py (product, bias, σ' and the sums over points of the layer and
its hidden neighbour in one loop over the (N, H) block: the same operations in the same
order); every other layer takes the general path.  No kernel here allocates or returns an
array, so they are compiled with ``_nrt=False``: a slice is then a plain pointer, not a
reference-counted view (two atomic instructions per slice; docs/performance.md).

Reference: mamlnp/nn/mlp.py (``MLP._forward``, ``MLP._loss_and_grad``, ``MLP._hvp``) and
mamlnp/nn/layers.py, mamlnp/nn/losses.py; tests: tests/test_kernels.py (each pass to 1e-12).
"""
import math

from numba import njit

from ..common.linalg import gemm_acc
from .thin_layers import (input_backward, outer_bias, output_backward, output_r_backward,
                          output_r_backward_rest, rdz_value)


@njit(cache=True, _nrt=False)
def add_row(Z, zo, N, O, b, bo):
    """Z (N, O) at zo: every row += b[bo : bo + O]   (z += b)."""
    z, bb = Z[zo:zo + N * O], b[bo:bo + O]
    if O == 1:                                            # one column: a flat loop
        for n in range(N):
            z[n] += bb[0]
        return
    for n in range(N):
        zn = z[n * O:(n + 1) * O]
        for o in range(O):
            zn[o] += bb[o]


@njit(cache=True, _nrt=False)
def sum_rows(D, do, N, O, out, oo):
    """out[oo : oo + O] = Σ_n D[n, :] for D (N, O) at do, rows n = 0, 1, … in order
    (db = Σ_n dz)."""
    d, r = D[do:do + N * O], out[oo:oo + O]
    if O == 1:                                            # one column: a flat loop
        acc = d[0]
        for n in range(1, N):
            acc += d[n]
        r[0] = acc
        return
    for o in range(O):
        r[o] = d[o]
    for n in range(1, N):
        dn = d[n * O:(n + 1) * O]
        for o in range(O):
            r[o] += dn[o]


@njit(cache=True, _nrt=False)
def mul_sum(D, X, Y, off, N, O, out, oo):
    """D = X ⊙ Y on the (N, O) block at off and out[oo : oo + O] = Σ_n D[n, :] (rows in
    order), in one pass: mul_into then sum_rows   (dz = dh ⊙ σ', db = Σ_n dz)."""
    d, x, y, r = D[off:off + N * O], X[off:off + N * O], Y[off:off + N * O], out[oo:oo + O]
    for o in range(O):
        t = x[o] * y[o]
        d[o] = t
        r[o] = t
    for n in range(1, N):
        dn, xn, yn = d[n * O:(n + 1) * O], x[n * O:(n + 1) * O], y[n * O:(n + 1) * O]
        for o in range(O):
            t = xn[o] * yn[o]
            dn[o] = t
            r[o] += t


@njit(cache=True, _nrt=False)
def mul_into(D, X, Y, off, n):
    """D = X ⊙ Y on [off, off+n) (through slices: vectorised, see act_forward)."""
    d, x, y = D[off:off + n], X[off:off + n], Y[off:off + n]
    for i in range(n):
        d[i] = x[i] * y[i]


# ---- activations (aid 0 relu, 1 tanh, 2 softplus) ------------------------------------


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def bias_act(Z, A, S, off, N, O, b, bo, aid):
    """z += b (every row), A = σ(z), S = σ'(z) on the (N, O) block at off: add_row then
    act_forward in one pass (the same operations: the same bits)."""
    bb = b[bo:bo + O]
    for n in range(N):
        r = off + n * O
        z_, a_, s_ = Z[r:r + O], A[r:r + O], S[r:r + O]
        if aid == 0:
            for o in range(O):
                z = z_[o] + bb[o]
                z_[o] = z
                a_[o] = z if z > 0.0 else 0.0
                s_[o] = 1.0 if z > 0.0 else 0.0
        else:
            for o in range(O):
                z_[o] += bb[o]
            act_forward(Z, A, S, r, O, aid)


# ---- forward --------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def layer_input(x, A, N, coff, l):
    """(buffer, offset) of h_{l-1} (N, sizes[l]): the data x for l = 0, else the
    activations of layer l−1 in A."""
    if l == 0:
        return x, 0
    return A, N * coff[l - 1]


@njit(cache=True, _nrt=False)
def forward(th, x, N, geom, C):
    """Fill the cache rows Z, A, S of C for the N points x (N·D,) at parameters th (P,)."""
    sizes, woff, boff, coff, aid = geom.sizes, geom.woff, geom.boff, geom.coff, geom.act_id
    Z, A, S = C[0], C[1], C[2]
    L = sizes.shape[0] - 1
    for l in range(L):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        if l == 0 and I == 1 and L > 1:                   # z = x ⊗ w + b (one pass), σ
            outer_bias(x, N, th, woff[0], boff[0], O, Z)
            act_forward(Z, A, S, 0, N * O, aid)
            continue
        H, ho = layer_input(x, A, N, coff, l)
        gemm_acc(H, ho, False, th, woff[l], False, Z, zo, N, I, O, 0)    # z = h W
        if l < L - 1:
            bias_act(Z, A, S, zo, N, O, th, boff[l], aid)                  #   + b, σ
        else:
            add_row(Z, zo, N, O, th, boff[l])                              #   + b


# ---- losses (lid 0 mse, 1 softmax_xent) -------------------------------------------------


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def log_sum_exp(Z, r, O):
    """log Σ_o exp(Z[r + o]), shifted by the max for stability."""
    m = Z[r]
    for o in range(1, O):
        m = max(m, Z[r + o])
    se = 0.0
    for o in range(O):
        se += math.exp(Z[r + o] - m)
    return m + math.log(se)


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def backward(th, x, N, geom, C, grad):
    """∇L (P,) into grad, given the forward cache C (A, S) and dŷ in its row DZ; fills the
    rows DZ and DH. Thin layers (O = 1 output, D = 1 input) go through the fused passes of
    thin_layers.py; ``done``: dz and db of layer l were already made by the fused pass of
    layer l + 1."""
    sizes, woff, boff, coff = geom.sizes, geom.woff, geom.boff, geom.coff
    A, S, DZ, DH = C[1], C[2], C[3], C[4]
    L = sizes.shape[0] - 1
    done = False
    for l in range(L - 1, -1, -1):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        if l == L - 1:
            sum_rows(DZ, zo, N, O, grad, boff[l])                          # db = Σ_n dz
        elif l == 0 and I == 1 and not done:              # dz, db, dW = xᵀ dz: one pass
            input_backward(x, N, O, DH, S, DZ, grad, woff[0], boff[0])
            return
        elif not done:                                    # dz = dh ⊙ σ'(z), db = Σ_n dz
            mul_sum(DZ, DH, S, zo, N, O, grad, boff[l])
        done = l > 0 and O == 1
        if done:                                          # dW, dh, dz and db below: one pass
            output_backward(N, I, N * coff[l - 1], zo, th, woff[l], boff[l - 1], C, grad)
            continue
        H, ho = layer_input(x, A, N, coff, l)
        gemm_acc(H, ho, True, DZ, zo, False, grad, woff[l], I, N, O, 0)   # dW = hᵀ dz
        if l > 0:
            gemm_acc(DZ, zo, False, th, woff[l], True, DH, N * coff[l - 1], N, O, I, 0)  # dz Wᵀ


# ---- R-pass: H v -----------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def r_forward(th, v, x, N, geom, C, Rb):
    """R-forward along v into the rows RZ, RH of Rb, from the cache C (A, S):
    Rz_l = h_{l-1} V_W + V_b + Rh_{l-1} W_l, Rh_l = σ'(z_l) ⊙ Rz_l."""
    sizes, woff, boff, coff = geom.sizes, geom.woff, geom.boff, geom.coff
    A, S, RZ, RH = C[1], C[2], Rb[0], Rb[1]
    L = sizes.shape[0] - 1
    for l in range(L):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        if l == 0 and I == 1 and L > 1:                   # Rz = x ⊗ v_w + v_b (one pass)
            outer_bias(x, N, v, woff[0], boff[0], O, RZ)
            mul_into(RH, S, RZ, 0, N * O)                 # Rh = σ'(z) ⊙ Rz
            continue
        H, ho = layer_input(x, A, N, coff, l)
        gemm_acc(H, ho, False, v, woff[l], False, RZ, zo, N, I, O, 0)     # Rz = h V_W
        add_row(RZ, zo, N, O, v, boff[l])                                  #    + V_b
        if l > 0:
            gemm_acc(RH, N * coff[l - 1], False, th, woff[l], False, RZ, zo, N, I, O, 1)  # + Rh W
        if l < L - 1:
            mul_into(RH, S, RZ, zo, N * O)                # Rh = σ'(z) ⊙ Rz


@njit(cache=True, _nrt=False)
def r_dz(A, S, DH, RZ, RDH, RDZ, off, n, aid):
    """Rdz = Rdh ⊙ σ'(z) + dh ⊙ σ''(z) ⊙ Rz on [off, off+n) (the σ'' term is 0 for relu)."""
    a_, s_, dh, rz = A[off:off + n], S[off:off + n], DH[off:off + n], RZ[off:off + n]
    rdh, rdz = RDH[off:off + n], RDZ[off:off + n]
    for i in range(n):
        rdz[i] = rdz_value(rdh[i], s_[i], a_[i], dh[i], rz[i], aid)   # σ'' per activation


@njit(cache=True, _nrt=False)
def r_backward(th, v, x, N, geom, C, Rb, hv):
    """R-backward from R{dŷ} (already in the last block of Rb's row RDZ) down to layer 1;
    hv = H v (P,).  Thin layers through thin_layers.py, as in ``backward`` (``done``
    likewise)."""
    sizes, woff, boff, coff, aid = geom.sizes, geom.woff, geom.boff, geom.coff, geom.act_id
    A, S, DZ, DH = C[1], C[2], C[3], C[4]
    RZ, RH, RDZ, RDH = Rb[0], Rb[1], Rb[2], Rb[3]
    L = sizes.shape[0] - 1
    done = False
    for l in range(L - 1, -1, -1):
        I, O, zo = sizes[l], sizes[l + 1], N * coff[l]
        if l == 0 and I == 1 and aid == 0 and not done and L > 1:   # relu, D = 1: one pass
            input_backward(x, N, O, RDH, S, RDZ, hv, woff[0], boff[0])
            return
        if l < L - 1 and aid == 0 and not done:           # relu: Rdz = Rdh ⊙ σ', Rdb
            mul_sum(RDZ, RDH, S, zo, N, O, hv, boff[l])
        elif not done:                                    # (done: made by the pass above)
            if l < L - 1:
                r_dz(A, S, DH, RZ, RDH, RDZ, zo, N * O, aid)
            sum_rows(RDZ, zo, N, O, hv, boff[l])                           # Rdb = Σ_n Rdz
        done = l > 0 and O == 1
        if done:                                          # RdW, Rdh, Rdz, Rdb below: fused
            ho = N * coff[l - 1]
            output_r_backward(N, I, ho, zo, th, v, woff[l], boff[l - 1], C, Rb, hv, aid)
            output_r_backward_rest(N, I, ho, RH, DZ, zo, hv, woff[l])         # + Rhᵀ dz
            continue
        H, ho = layer_input(x, A, N, coff, l)
        gemm_acc(H, ho, True, RDZ, zo, False, hv, woff[l], I, N, O, 0)    # RdW = hᵀ Rdz
        if l > 0:
            ho = N * coff[l - 1]
            gemm_acc(RH, ho, True, DZ, zo, False, hv, woff[l], I, N, O, 1)      # + Rhᵀ dz
            gemm_acc(RDZ, zo, False, th, woff[l], True, RDH, ho, N, O, I, 0)   # Rdh = Rdz Wᵀ
            gemm_acc(DZ, zo, False, v, woff[l], True, RDH, ho, N, O, I, 1)     #     + dz V_Wᵀ


@njit(cache=True, _nrt=False)
def rpass(th, v, x, N, geom, C, Rb, hv):
    """hv = H_θ v (P,), exact (Pearlmutter), reusing the cache C (A, S, DZ, DH) that
    ``forward`` and ``backward`` left for these N points at the same θ.
    Rb (4, ≥ N·Hsum): scratch rows RZ, RH, RDZ, RDH."""
    sizes, coff = geom.sizes, geom.coff
    L = sizes.shape[0] - 1
    r_forward(th, v, x, N, geom, C, Rb)
    r_loss(C[1], Rb[0], Rb[2], N * coff[L - 1], N, sizes[L], geom.loss_id)   # R{dŷ}
    r_backward(th, v, x, N, geom, C, Rb, hv)


@njit(cache=True, _nrt=False)
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
