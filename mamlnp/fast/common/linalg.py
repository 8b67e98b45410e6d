"""The matrix product of the kernels: C (+)= op(A) op(B) on flat row-major buffers.

Dimension legend: M rows of C, R the summed dimension, W columns of C.

    gemm_acc:  C[M, W] = acc · C + op(A)[M, R] · op(B)[R, W]        (acc ∈ {0, 1})

where op(A) = A stored (M, R) row-major at A[ao:], or, with ta = True, Aᵀ with A stored
(R, M) at A[ao:]; likewise op(B) = B stored (R, W), or Bᵀ with B stored (W, R) (tb = True);
C is stored (M, W) at C[co:].  Every buffer is a flat float64 array addressed by an
element offset (the layout of mamlnp/fast/common/__init__.py), so no 2-d view is built.

Products with a dimension of 1 (D = 1 input layer, O = 1 output layer) are loops, cheaper
than a BLAS call; the others call BLAS ``dgemm`` directly: scipy's
``scipy.linalg.cython_blas.dgemm`` (32-bit ``int`` dimensions, the BLAS numba's own
``np.dot`` uses), declared to LLVM under the symbol ``mamlnp_dgemm`` and registered with
``llvmlite.binding.add_symbol`` at import, so compiled code refers to it by name and the
numba cache stays valid across processes.  A direct call, compared with ``np.dot`` on
2-d views: no view (a reshape is a C call in numba), no reference counting, no shape
checks, the transposes as BLAS flags, and acc = 1 accumulates inside dgemm (β = 1) instead
of a temporary and an addition.  Row-major C = op(A) op(B) is column-major
Cᵀ = op(B)ᵀ op(A)ᵀ: dgemm is called with the operands swapped.

In Python (a kernel's ``py_func``), ``_dgemm`` is a NumPy twin of the same product.

``gemm_st`` (below): ``gemm_acc`` in pieces small enough that OpenBLAS never starts its own threads.

OpenBLAS runs a dgemm on one thread when M·R·W ≤ 65536·4 (its SMP_THRESHOLD_MIN times
GEMM_MULTITHREAD_THRESHOLD) and on its thread pool above. Inside the drivers' ``prange``
region that pool competes with the drivers' own threads for the two cores: one 5-way
5-shot meta-gradient took 183 ms of CPU instead of 50 ms (OPENBLAS_NUM_THREADS=1). The
sinusoid kernels' products never reach the threshold; the classification network's do
(25 points × 256 × 128). ``gemm_st`` cuts C into blocks of rows under the threshold, each
one dgemm call with the full leading dimensions: the same product, single-threaded, in a
fixed order (so the same bits for any thread count).

Reference: NumPy's matmul (``_dgemm`` below is its Python twin, run by the kernels'
``py_func``); tests: tests/test_kernels.py (``gemm_acc``), tests/test_classify_kernels.py
(``gemm_st``).
"""
import llvmlite.binding as ll
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import get_cython_function_address, intrinsic, overload

ll.add_symbol("mamlnp_dgemm", get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))

_N, _T = ord("N"), ord("T")


@intrinsic
def _dgemm_call(typingctx, ta, tb, m, n, k, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    """Column-major dgemm(ta, tb, m, n, k, 1, a[ao:], lda, b[bo:], ldb, beta, c[co:], ldc):
    every scalar is stored in a stack slot and passed by pointer (Fortran BLAS ABI)."""
    sig = types.void(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, beta, c, co, ldc)

    def codegen(context, builder, signature, args):
        i8, i32, f64 = ir.IntType(8), ir.IntType(32), ir.DoubleType()
        pc, pi, pd = i8.as_pointer(), i32.as_pointer(), f64.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [pc, pc, pi, pi, pi, pd, pd, pi, pd, pi, pd,
                                               pd, pi])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "mamlnp_dgemm")
        st = signature.args

        def slot(ty, i, to):                               # the i-th argument, cast, on stack
            p = cgutils.alloca_once(builder, ty)
            builder.store(context.cast(builder, args[i], st[i], to), p)
            return p

        def ptr(i):                                        # &array_i[offset_{i+1}]
            data = context.make_array(st[i])(context, builder, args[i]).data
            off = context.cast(builder, args[i + 1], st[i + 1], types.intp)
            return builder.gep(data, [off])

        one = cgutils.alloca_once_value(builder, ir.Constant(f64, 1.0))
        builder.call(fn, [slot(i8, 0, types.uint8), slot(i8, 1, types.uint8),
                          slot(i32, 2, types.int32), slot(i32, 3, types.int32),
                          slot(i32, 4, types.int32), one, ptr(5), slot(i32, 7, types.int32),
                          ptr(8), slot(i32, 10, types.int32), slot(f64, 11, types.float64),
                          ptr(12), slot(i32, 14, types.int32)])
        return context.get_dummy_value()
    return sig, codegen


def _dgemm(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    """NumPy twin of the column-major dgemm call (used when the kernels run as Python)."""
    def op(x, xo, trans, rows, cols, ld):                  # op(X) (rows, cols), a view
        st = (8, 8 * ld) if trans == _N else (8 * ld, 8)
        return np.lib.stride_tricks.as_strided(x[xo:], (rows, cols), st)
    prod = op(a, ao, ta, m, k, lda) @ op(b, bo, tb, k, n, ldb)           # (m, n)
    cv = np.lib.stride_tricks.as_strided(c[co:], (m, n), (8, 8 * ldc))
    if beta == 0.0:
        cv[...] = prod
    else:
        cv += prod


@overload(_dgemm)
def _dgemm_compiled(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
    def impl(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, beta, c, co, ldc):
        _dgemm_call(ta, tb, m, n, k, a, ao, lda, b, bo, ldb, beta, c, co, ldc)
    return impl


@njit(cache=True, _nrt=False)
def gemm_acc(A, ao, ta, B, bo, tb, C, co, M, R, W, acc):
    """C[M, W] = acc·C + op(A) op(B) (see the module docstring; acc is 0 or 1).
    Loops for R = 1 (outer product), M = 1 (vector·matrix) and W = 1 with ta
    (hᵀ dz: A's columns contiguous); each loop sums its R terms in order r = 0, 1, …"""
    if R == 1 or M == 1 or (W == 1 and ta):
        thin_product(A, ao, ta, B, bo, tb, C, co, M, R, W, acc)
        return
    lda = M if ta else R
    ldb = R if tb else W
    _dgemm(_T if tb else _N, _T if ta else _N, W, M, R, B, bo, ldb, A, ao, lda,
           float(acc), C, co, W)


@njit(cache=True, _nrt=False)
def thin_product(A, ao, ta, B, bo, tb, C, co, M, R, W, acc):
    """gemm_acc for R = 1, M = 1 or (W = 1 and ta) by loops over slices indexed from 0
    (vectorised).  op(A)[m, r] = A[ao + m·R + r] (A[ao + r·M + m] if ta), op(B) likewise.
    With acc = 0 the first term is written, not added to a zeroed C (no memset call)."""
    a, b, c = A[ao:ao + M * R], B[bo:bo + R * W], C[co:co + M * W]
    if R == 1:                                            # C (+)= a ⊗ b
        for m in range(M):
            am = a[m]
            cm = c[m * W:(m + 1) * W]
            if acc == 0:
                for w in range(W):
                    cm[w] = am * b[w]
            else:
                for w in range(W):
                    cm[w] += am * b[w]
    elif M == 1:                                          # c (+)= a op(B), rows r in order
        for r in range(R):
            ar = a[r]
            if tb:
                if r == 0 and acc == 0:
                    for w in range(W):
                        c[w] = ar * b[w * R]
                else:
                    for w in range(W):
                        c[w] += ar * b[w * R + r]
            else:
                br = b[r * W:(r + 1) * W]
                if r == 0 and acc == 0:
                    for w in range(W):
                        c[w] = ar * br[w]
                else:
                    for w in range(W):
                        c[w] += ar * br[w]
    else:                                                 # c (+)= Aᵀ b (W = 1, A stored (R, M))
        for r in range(R):
            br = b[r]
            ar = a[r * M:(r + 1) * M]
            if r == 0 and acc == 0:
                for m in range(M):
                    c[m] = ar[m] * br
            else:
                for m in range(M):
                    c[m] += ar[m] * br


# ---- gemm_st: gemm_acc under OpenBLAS's threading threshold ----------------------------


LIMIT = 65536 * 4


@njit(cache=True, _nrt=False)
def gemm_st(A, ao, ta, B, bo, tb, C, co, M, R, W, acc):
    """C[M, W] = acc·C + op(A) op(B), as ``gemm_acc``, in row blocks of C with
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
