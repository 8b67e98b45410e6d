"""Would a faster product routine keep the bits? Counts of bit-identical results.

    python benchmarks/probe_bits.py [--cases 400]

Dimension legend: M rows, R summed dimension, W columns of C = op(A) op(B).

The kernels' products go through OpenBLAS (``linalg.gemm_acc``). Two rearrangements would be
faster, and this script counts, over random float64 inputs, how often each gives the SAME
BITS as the product the kernels make now:

  1. ``dz Wᵀ`` (B transposed: OpenBLAS's nt kernel, the slower one) computed as an nn
     product on an explicitly transposed copy of W (which could be made once per
     meta-iteration at θ);
  2. the thin ``h w`` (W = 1) products as a loop over R with fused multiply-adds in the
     order r = 0, 1, …, instead of a dgemm call.

A count below the number of cases means the rearrangement changes results, and with them
the training trajectory and every figure of docs/results.md. Nothing is asserted.
"""
import argparse

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from mamlnp.fast.kernels.linalg import gemm_acc


@intrinsic
def fma(typingctx, a, b, c):
    """llvm.fma.f64: a·b + c rounded once."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType()] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f64")
        return builder.call(fn, args)
    return sig, codegen


@njit
def nt_and_nn(A, B, Bt, C1, C2, M, R, W):
    gemm_acc(A, 0, False, B, 0, True, C1, 0, M, R, W, 0)          # A Bᵀ, B stored (W, R)
    gemm_acc(A, 0, False, Bt, 0, False, C2, 0, M, R, W, 0)        # A (Bᵀ), a copy (R, W)


@njit
def thin_blas_and_loop(H, w, C1, C2, M, R):
    gemm_acc(H, 0, False, w, 0, False, C1, 0, M, R, 1, 0)
    for m in range(M):
        c = 0.0
        for r in range(R):
            c = fma(H[m * R + r], w[r], c)
        C2[m] = c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=400)
    n = p.parse_args(argv).cases
    rng = np.random.default_rng(0)
    print(f"bit-identical results out of {n} random cases each")
    for M, R, W in [(10, 40, 40), (10, 20, 20), (10, 5, 7)]:
        same = 0
        for _ in range(n):
            A, B = rng.standard_normal(M * R), rng.standard_normal(W * R)
            Bt = B.reshape(W, R).T.copy().ravel()
            C1, C2 = np.empty(M * W), np.empty(M * W)
            nt_and_nn(A, B, Bt, C1, C2, M, R, W)
            same += C1.tobytes() == C2.tobytes()
        print(f"  dz Wᵀ as nn on a transposed copy, {M}×{R}·({W}×{R})ᵀ: {same}")
    for M, R in [(10, 40), (10, 7)]:
        same = 0
        for _ in range(n):
            H, w = rng.standard_normal(M * R), rng.standard_normal(R)
            C1, C2 = np.empty(M), np.empty(M)
            thin_blas_and_loop(H, w, C1, C2, M, R)
            same += C1.tobytes() == C2.tobytes()
        print(f"  h w as an fma loop, {M}×{R}·{R}×1: {same}")
    return 0


if __name__ == "__main__":
    main()
