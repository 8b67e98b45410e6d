"""The first layer of the task-group kernels (classify_groups.py): x W1, the Gram matrices
x x_Sᵀ and ∇W1 = Xᵀ E / T.

Dimension legend: T tasks, K support and Q query points per task, M = T(K+Q) stacked rows
(support row t·K + k, then query row T·K + t·Q + q), D inputs, H1 = sizes[1], nz[m] the
nonzero inputs of row m, NCH column chunks of ∇W1 (dense inputs).

Sparse inputs (Omniglot is mostly background): row m's nonzeros are packed into a padded
CSR, columns CI[m, :nz[m]] in increasing order and values CV[m, :nz[m]], by the group that
owns the row, inside the drivers' parallel region (no serial pass over the inputs first):

    z_m          = Σ_j CV[m,j] W1[CI[m,j]]         row m of x W1 (nz[m]·H1 multiply-adds)
    (x_a x_bᵀ)   = Σ_j CV[b,j] x_a[CI[b,j]]         a Gram entry over the nonzeros of b
    ∇W1[d]       = (1/T) Σ_m x_m[d] E[m]           rows m in increasing order

The last is made after the tasks, each thread the rows d0 ≤ d < d1 of ∇W1, scanning every
row's entries for its columns: each entry is the same sum whichever thread makes it.

Dense inputs (``sparse`` False: more than one entry in ``SPARSE_BELOW`` nonzero): a
group's rows of x W1 are one BLAS product per set, its Gram matrices the diagonal blocks
of two products, ∇W1 NCH fixed column chunks of Xᵀ E, one product each (threads take
whole chunks: the same bits for any thread count).

**The one-task-at-a-time kernels' first layer** (classify_kernels.py; below, after the
groups'): The first layer's two big products over all tasks' rows, skipping the zero inputs.

Dimension legend: M = T(K+Q) stacked rows (every task's support then query points),
D inputs, H1 = sizes[1], nnz the nonzero entries of the stacked inputs X (M, D).

    Z    = X W1          (M, H1)     the forward's x W1 for every pass of every task
    ∇W1  = Xᵀ E / T      (D, H1)     E = [ES; EQ] the factors of classify_kernels.py

Omniglot images are mostly background (the peers' benchmark draws 8% ink): X has
nnz ≈ 0.08·M·D, so both products cost nnz·H1 multiply-adds instead of M·D·H1, about
12× fewer. X is stored once per call as CSR (rows) and CSC (columns), both in increasing
order of the other index; Z's row m sums its entries in increasing d (each task makes its
own rows, inside the drivers' parallel region), ∇W1's row d in increasing m (after it, on
the calling thread): fixed orders, so the same bits for any number of threads. A zero input
contributes exactly 0 to both sums, so the skipped terms change nothing but rounding
order. For dense inputs (``dense_enough``) the caller uses BLAS instead.

Reference of the groups' first layer: mamlnp/meta/grouped_parts.py:group_rows, group_grams (called by
grouped_parts.py:group_inputs) and w1_grad (of w1_grad_sparse and w1_grad_dense); the
packed rows only reorder the sums of the products written there. Tests:
tests/test_grouped_reference.py (group_inputs on either path, w1_grad_sparse/dense),
tests/test_classify_groups.py.
Reference of the one-task-at-a-time first layer: NumPy's x @ W1 and Xᵀ @ E / T; tests:
tests/test_classify_kernels.py (CSR/CSC).
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from ..common.linalg import _N, _T, _dgemm

NCH = 16                       # column chunks of a dense ∇W1
SPARSE_BELOW = 1 / 8           # the packed rows pay below this fraction of nonzero inputs


def sparse_pays(nnz, M, D):
    """Whether the packed CSR rows beat BLAS for M rows of D inputs with nnz nonzero
    (measured: ``benchmarks/bench_classification.py --ink``, about 1 in 8 on two cores)."""
    return nnz < SPARSE_BELOW * M * D


class Rows(NamedTuple):
    """A call's inputs as the first layer sees them."""
    sparse: bool
    xs: np.ndarray           # (T·K·D,) support inputs, flat
    xq: np.ndarray           # (T·Q·D,) query inputs, flat
    W1: np.ndarray           # (D·H1,) θ's first weight matrix, flat (a view)
    NZ: np.ndarray           # (M,) int64 nonzeros per row (sparse)
    CI: np.ndarray           # (M, D) int32 their columns
    CV: np.ndarray           # (M, D) their values


@njit(cache=True, _nrt=False)
def pack_row(F, x, xo, D, m):
    """Row m of the padded CSR from the dense row x[xo : xo + D]."""
    ci, cv, k = F.CI[m], F.CV[m], 0
    for c in range(D):
        v = x[xo + c]
        if v != 0.0:
            ci[k], cv[k] = c, v
            k += 1
    F.NZ[m] = k


@njit(cache=True, _nrt=False)
def sparse_times(F, m, H, out, oo):
    """out[oo : oo + H1] = x_m W1 over row m's nonzeros, in increasing column order."""
    z = out[oo:oo + H]
    for h in range(H):
        z[h] = 0.0
    ci, cv = F.CI[m], F.CV[m]
    for j in range(F.NZ[m]):
        w, x = F.W1[ci[j] * H:(ci[j] + 1) * H], cv[j]
        for h in range(H):
            z[h] += x * w[h]


@njit(cache=True, _nrt=False)
def group_rows(F, D, H1, T, t0, n, K, Q, xh_s, xh_q):
    """Rows of x W1 of the group's tasks t0 … t0+n−1 (stacked in task order) into xh_s
    (n·K, H1) and xh_q (n·Q, H1), packing their CSR rows first when sparse. Dense: one
    product per set (the caller holds BLAS on one thread)."""
    if not F.sparse:
        _dgemm(_N, _N, H1, n * K, D, F.W1, 0, H1, F.xs, t0 * K * D, D, 0.0, xh_s, 0, H1)
        _dgemm(_N, _N, H1, n * Q, D, F.W1, 0, H1, F.xq, t0 * Q * D, D, 0.0, xh_q, 0, H1)
        return
    for i in range(n * K):
        m = t0 * K + i
        pack_row(F, F.xs, m * D, D, m)
        sparse_times(F, m, H1, xh_s, i * H1)
    for i in range(n * Q):
        m = T * K + t0 * Q + i
        pack_row(F, F.xq, (t0 * Q + i) * D, D, m)
        sparse_times(F, m, H1, xh_q, i * H1)


@njit(cache=True, _nrt=False)
def sparse_gram(F, t, K, Q, D, GR):
    """GR (K·K + Q·K,) = [x_S x_Sᵀ, x_Q x_Sᵀ] of task t (row-major (K, K) then (Q, K)),
    each entry x_a · x_b over the nonzeros of the support row b (its packed CSR row)."""
    for b in range(K):
        ci, cv, nz = F.CI[t * K + b], F.CV[t * K + b], F.NZ[t * K + b]
        for a in range(K + Q):
            x, xo = (F.xs, (t * K + a) * D) if a < K else (F.xq, (t * Q + a - K) * D)
            acc = 0.0
            for j in range(nz):
                acc += x[xo + ci[j]] * cv[j]
            GR[a * K + b] = acc


@njit(cache=True, _nrt=False)
def group_grams(F, t0, n, K, Q, D, S, GRs):
    """GRs[j] = [x_S x_Sᵀ, x_Q x_Sᵀ] of the group's tasks t0 + j: sparse, over each support
    row's nonzeros; dense, the blocks on the diagonal of two products over the group's
    rows, S = [X_S X_Sᵀ (nK, nK); X_Q X_Sᵀ (nQ, nK)] (scratch)."""
    if F.sparse:
        for j in range(n):
            sparse_gram(F, t0 + j, K, Q, D, GRs[j])
        return
    nK, nQ = n * K, n * Q
    _dgemm(_T, _N, nK, nK, D, F.xs, t0 * K * D, D, F.xs, t0 * K * D, D, 0.0, S, 0, nK)
    _dgemm(_T, _N, nK, nQ, D, F.xs, t0 * K * D, D, F.xq, t0 * Q * D, D, 0.0, S, nK * nK, nK)
    for j in range(n):
        GR = GRs[j]
        for a in range(K):
            for b in range(K):
                GR[a * K + b] = S[(j * K + a) * nK + j * K + b]
        for a in range(Q):
            for b in range(K):
                GR[K * K + a * K + b] = S[nK * nK + (j * Q + a) * nK + j * K + b]


@njit(cache=True, _nrt=False)
def w1_grad_sparse(F, E, row0, T, G, d0, d1):
    """G (D·H1,) rows d0 ≤ d < d1 = (1/T) Σ_{m ≥ row0} x_m[d] E[m], m in increasing order."""
    H = E.shape[1]
    for i in range(d0 * H, d1 * H):
        G[i] = 0.0
    for m in range(row0, E.shape[0]):
        e, ci, cv = E[m], F.CI[m], F.CV[m]
        for j in range(F.NZ[m]):
            c = ci[j]
            if c >= d1:
                break
            if c >= d0:
                x, o = cv[j], c * H
                for h in range(H):
                    G[o + h] += x * e[h]
    for i in range(d0 * H, d1 * H):
        G[i] /= T


@njit(cache=True, _nrt=False)
def w1_grad_dense(F, Ef, TK, TQ, H, D, with_support, T, G, c0, c1):
    """G (D·H1,) chunks c0 ≤ c < c1 of NCH: G[d] = (1/T)(X_Qᵀ EQ + X_Sᵀ ES)[d], each chunk
    of columns one product per set (Ef = E flat, its TK support rows first)."""
    for c in range(c0, c1):
        d0, d1 = share(D, NCH, c)
        if d1 == d0:
            continue
        _dgemm(_N, _T, H, d1 - d0, TQ, Ef, TK * H, H, F.xq, d0, D, 0.0, G, d0 * H, H)
        if with_support:
            _dgemm(_N, _T, H, d1 - d0, TK, Ef, 0, H, F.xs, d0, D, 1.0, G, d0 * H, H)
        for i in range(d0 * H, d1 * H):
            G[i] /= T


# ---- CSR/CSC rows of all the tasks (classify_kernels.py) ---------------------------------



def dense_enough(nnz, M, D):
    """Whether BLAS on the dense X is the better way (more than 1 entry in 4 nonzero)."""
    return nnz > 0.25 * M * D


@njit(cache=True)
def count_nonzeros(xs, xq):
    """Number of nonzero entries of the stacked rows [xs; xq] (both (T, ·) flat)."""
    n = 0
    for a in (xs, xq):
        flat = a.ravel()
        for i in range(flat.shape[0]):
            if flat[i] != 0.0:
                n += 1
    return n


@njit(cache=True)
def build_csr_csc(xs, xq, D, rp, ci, cv, cp, ri, rv):
    """CSR (rp (M+1,), ci, cv (nnz,)) and CSC (cp (D+1,), ri, rv (nnz,)) of X = [xs; xq]
    with xs (T, K·D), xq (T, Q·D) read as (T·K, D) and (T·Q, D) rows."""
    a, b = xs.ravel(), xq.ravel()
    Ms, M = a.shape[0] // D, (a.shape[0] + b.shape[0]) // D
    cnt = np.zeros(D + 1, np.int64)
    rp[0], k = 0, 0
    for m in range(M):
        src, base = (a, m * D) if m < Ms else (b, (m - Ms) * D)
        for d in range(D):
            x = src[base + d]
            if x != 0.0:
                ci[k], cv[k] = d, x
                cnt[d + 1] += 1
                k += 1
        rp[m + 1] = k
    for d in range(D):
        cnt[d + 1] += cnt[d]
    cp[:] = cnt
    for m in range(M):                                     # rows in increasing m per column
        for j in range(rp[m], rp[m + 1]):
            d = ci[j]
            ri[cnt[d]], rv[cnt[d]] = m, cv[j]
            cnt[d] += 1


@njit(cache=True, _nrt=False)
def csr_rows(rp, ci, cv, W, Z, m0, m1):
    """Z[m] = Σ_j cv[j] W[ci[j]] for the rows m0 ≤ m < m1 of X (CSR)   (X W1, some rows)."""
    H = W.shape[1]
    for m in range(m0, m1):
        z = Z[m]
        for h in range(H):
            z[h] = 0.0
        for j in range(rp[m], rp[m + 1]):
            w, x = W[ci[j]], cv[j]
            for h in range(H):
                z[h] += x * w[h]


@njit(cache=True, _nrt=False)
def csc_t_rows(cp, ri, rv, E, row0, T, G, d0=0, d1=-1):
    """G (D·H,) flat = Xᵀ E / T over the rows m ≥ row0 of X (CSC) and E (M, H): row d of G
    sums its entries in increasing m. Only the rows d0 ≤ d < d1 of G (d1 = −1: all, D), so
    that threads can split G by rows: each row's sum is the same whichever thread makes it."""
    H = E.shape[1]
    d1 = cp.shape[0] - 1 if d1 < 0 else d1
    for d in range(d0, d1):
        g = G[d * H:(d + 1) * H]
        for h in range(H):
            g[h] = 0.0
        for j in range(cp[d], cp[d + 1]):
            m = ri[j]
            if m >= row0:
                e, x = E[m], rv[j]
                for h in range(H):
                    g[h] += x * e[h]
        for h in range(H):
            g[h] /= T


@njit(cache=True, _nrt=False)
def mean_rows_into(G, out, i0=0, i1=-1, n=0):
    """out (P,) = (Σ_t G[t]) / n, rows t = 0, 1, … in order (n = 0: n = the number of rows
    T; the task groups pass their T tasks, G holding one row per group); only the entries
    i0 ≤ i < i1 (i1 = −1: all, P), for threads that split out by entries (the same bits
    either way)."""
    T, P = G.shape
    i1 = P if i1 < 0 else i1
    n = T if n <= 0 else n
    for i in range(i0, i1):
        out[i] = G[0, i]
    for t in range(1, T):
        g = G[t]
        for i in range(i0, i1):
            out[i] += g[i]
    for i in range(i0, i1):
        out[i] /= n


@njit(cache=True, _nrt=False)
def share(n, W, w):
    """(start, stop) of worker w's contiguous share of n items split over W workers."""
    q, r = n // W, n % W
    start = w * q + min(w, r)
    return start, start + q + (1 if w < r else 0)
