"""The row passes of the navigation policy's points, compiled: the twins of the NumPy
functions of the same names in mamlnp/nn/policy_ops.py (the reference; its docstring gives
the equations), tested pass by pass in tests/test_policy_kernels.py.

Dimension legend: M samples; H units of a layer (the rows of a transposed (·, M) array);
K the inner dimension of a thin product (D + 1 = 3, A = 2 or 2A = 4 for the navigation
policy).

Layout: every (·, M) array is C-ordered, the M samples along the row, s a bool (H, M) mask.
Each kernel walks one row h at a time: a thin product's K-long sums are written into the
row (16 KB at M = 2000, in L1), their terms added in k = 0, 1, …, K−1 order, then the ReLU
or the mask is applied to the same row before the next, so an (H, M) array goes to memory
once instead of in two or three passes (NumPy's matmul, then maximum and comparison, or the
mask); docs/performance.md times the two (the *_numpy rows of
benchmarks/bench_rl_derivatives.py). max(v, 0) and
s ⊙ x have NumPy's bits exactly (``np.maximum``: +0.0 for v ≤ 0, NaN kept; ``x * s``:
x · 1.0 or x · 0.0); a thin product differs from the BLAS one by the order of its K terms
only (about 1e-16 relative).

No ``fastmath``; ``nogil``: mamlnp/meta/rl.py runs tasks on Python threads, each calling
these on its own arrays. Every kernel checks the shapes it is given before it reads.
"""
from numba import njit

from .. import common  # noqa: F401  (first: drops stale compiled code)


@njit(cache=True, nogil=True, _nrt=False)
def _relu_row(out, s, h, M):
    """Row h: s = out > 0, out = max(out, 0) (NumPy's bits: +0.0 for v ≤ 0, NaN kept)."""
    for m in range(M):
        v = out[h, m]
        p = v > 0.0
        s[h, m] = p
        out[h, m] = v if (p or v != v) else 0.0


@njit(cache=True, nogil=True, _nrt=False)
def _product_row(A, B, out, h, K, M):
    """Row h of out = A B: out[h, m] = ((A[h, 0] B[0, m] + A[h, 1] B[1, m]) + …) + A[h, K−1]
    B[K−1, m], the terms added in k order. K = 2, 3, 4 (the navigation policy's) are one loop
    over m with the K terms written out: the same operations in the same order as the loop
    over k below, which re-reads the row K times."""
    if K == 2:
        a0, a1 = A[h, 0], A[h, 1]
        for m in range(M):
            out[h, m] = a0 * B[0, m] + a1 * B[1, m]
    elif K == 3:
        a0, a1, a2 = A[h, 0], A[h, 1], A[h, 2]
        for m in range(M):
            out[h, m] = a0 * B[0, m] + a1 * B[1, m] + a2 * B[2, m]
    elif K == 4:
        a0, a1, a2, a3 = A[h, 0], A[h, 1], A[h, 2], A[h, 3]
        for m in range(M):
            out[h, m] = a0 * B[0, m] + a1 * B[1, m] + a2 * B[2, m] + a3 * B[3, m]
    else:
        a = A[h, 0]
        for m in range(M):
            out[h, m] = a * B[0, m]
        for k in range(1, K):
            a = A[h, k]
            for m in range(M):
                out[h, m] += a * B[k, m]


@njit(cache=True, nogil=True, _nrt=False)
def _thin_shapes(A, B, s, out, extra_rows):
    """True when A (H, K ≥ 1), B (K, M), s (H, M) and out (H + extra_rows, M) fit together
    (``extra_rows`` ≥ 1: out may have more)."""
    H, K = A.shape
    M = B.shape[1]
    rows_ok = out.shape[0] >= H + extra_rows if extra_rows > 0 else out.shape[0] == H
    return (K >= 1 and B.shape[0] == K and rows_ok and out.shape[1] == M
            and s.shape[0] == H and s.shape[1] == M)


@njit(cache=True, nogil=True, _nrt=False)
def _mask_row(x, s, h, M):
    """Row h: x = s ⊙ x (NumPy's x · 1.0 or x · 0.0)."""
    for m in range(M):
        x[h, m] *= 1.0 if s[h, m] else 0.0


@njit(cache=True, nogil=True, _nrt=False)
def _product_rows(A, B, s, out, relu):
    """Row by row: out[h] = A[h] B, then on the same row the ReLU and its mask s (``relu``)
    or the mask s."""
    H, M = s.shape
    for h in range(H):
        _product_row(A, B, out, h, A.shape[1], M)
        if relu:
            _relu_row(out, s, h, M)
        else:
            _mask_row(out, s, h, M)


@njit(cache=True, nogil=True, _nrt=False)
def relu_rows(out, s):
    """out[H] = 1, out[:H+1] = max(out[:H+1], 0), s = out[:H] > 0 (``policy_ops.relu_rows``)."""
    H, M = s.shape
    if out.shape[0] < H + 1 or out.shape[1] != M:
        raise ValueError("relu_rows: expected out of shape (>= H+1, M) for s of shape (H, M)")
    for h in range(H):
        _relu_row(out, s, h, M)
    out[H, :] = 1.0


@njit(cache=True, nogil=True, _nrt=False)
def product_relu(A, B, out, s):
    """out[:H] = A B, then relu_rows(out, s), row by row (``policy_ops.product_relu``)."""
    if not _thin_shapes(A, B, s, out, 1):
        raise ValueError("product_relu: expected A (H, K >= 1), B (K, M), out (>= H+1, M), "
                         "s (H, M)")
    _product_rows(A, B, s, out, True)
    out[A.shape[0], :] = 1.0


@njit(cache=True, nogil=True, _nrt=False)
def product_mask(A, B, s, out):
    """out = s ⊙ (A B), row by row (``policy_ops.product_mask``)."""
    if not _thin_shapes(A, B, s, out, 0):
        raise ValueError("product_mask: expected A (H, K >= 1), B (K, M), s (H, M), out (H, M)")
    _product_rows(A, B, s, out, False)


@njit(cache=True, nogil=True, _nrt=False)
def mask_rows(x, s):
    """x = s ⊙ x in place (``policy_ops.mask_rows``)."""
    H, M = s.shape
    if x.shape[0] != H or x.shape[1] != M:
        raise ValueError("mask_rows: expected x and s of one shape (H, M)")
    for h in range(H):
        _mask_row(x, s, h, M)
