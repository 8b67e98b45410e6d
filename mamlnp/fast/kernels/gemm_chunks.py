"""``linalg.gemm_acc`` in pieces small enough that OpenBLAS never starts its own threads.

Dimension legend: M rows of C, R the summed dimension, W columns of C.

OpenBLAS runs a dgemm on one thread when M·R·W ≤ 65536·4 (its SMP_THRESHOLD_MIN times
GEMM_MULTITHREAD_THRESHOLD) and on its thread pool above. Inside the drivers' ``prange``
region that pool competes with the drivers' own threads for the two cores: one 5-way
5-shot meta-gradient took 183 ms of CPU instead of 50 ms (OPENBLAS_NUM_THREADS=1). The
sinusoid kernels' products never reach the threshold; the classification network's do
(25 points × 256 × 128). ``gemm_st`` cuts C into blocks of rows under the threshold, each
one dgemm call with the full leading dimensions: the same product, single-threaded, in a
fixed order (so the same bits for any thread count).
"""
from numba import njit

from .linalg import _N, _T, _dgemm, gemm_acc

LIMIT = 65536 * 4


@njit(cache=True, _nrt=False)
def gemm_st(A, ao, ta, B, bo, tb, C, co, M, R, W, acc):
    """C[M, W] = acc·C + op(A) op(B), as ``linalg.gemm_acc``, in row blocks of C with
    (rows)·R·W ≤ LIMIT."""
    if M * R * W <= LIMIT or R == 1 or M == 1 or (W == 1 and ta):
        gemm_acc(A, ao, ta, B, bo, tb, C, co, M, R, W, acc)
        return
    mc = max(1, LIMIT // (R * W))
    lda = M if ta else R
    ldb = R if tb else W
    for m0 in range(0, M, mc):
        m = min(mc, M - m0)
        _dgemm(_T if tb else _N, _T if ta else _N, W, m, R, B, bo, ldb, A,
               ao + (m0 if ta else m0 * R), lda, float(acc), C, co + m0 * W, W)
