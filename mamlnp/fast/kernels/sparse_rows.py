"""The first layer's two big products over all tasks' rows, skipping the zero inputs.

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

The task groups (classify_groups.py) use two functions of this module: ``share``, whose
NumPy reference is mamlnp/meta/grouped_parts.py:group_range, and ``mean_rows_into``, the
mean of the groups' rows in mamlnp/meta/grouped.py:group_meta_grad; both are checked in
tests/test_grouped_reference.py (group ranges, the driver). The CSR/CSC products serve the
one-task-at-a-time kernels (tests/test_classify_kernels.py).
"""
import numpy as np
from numba import njit


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
