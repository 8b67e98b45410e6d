"""The products of one task group (classify_groups.py), each a few lines: with θ's own
weights (``product``: one dgemm over the group's stacked rows) and the per-task factored
corrections (``lowrank_acc``, ``gram_acc``) that stand for the adapted weights.

Dimension legend: n tasks of a group, K support and Q query points per task, N rows of one
task's block (K or Q), Kf the rank of a factor pair (K or Q), R1 its inner size, W2 its
output width, I, O a layer's fan-in and fan-out, Pc the b, γ, β entries (``Compact``).

    W_l' = W_l − α h_Sᵀ dz_S:   h W_l' = h W_l + lowrank_acc(h, (h_S, dz_S), −α)
                                 = h W_l − α (h h_Sᵀ) dz_S        (N, I)(I, K)(K, O)
    first layer:                 x_Q W1' = x_Q W1 + gram_acc(x_Q x_Sᵀ, dz_S, −α)

``Ctx.pinned``: the caller holds BLAS on one thread (common/blas_threads.py), so a product
of any size is one dgemm call; else products above OpenBLAS's threading threshold are cut
into row blocks (common/linalg.py gemm_st).

NumPy reference: mamlnp/meta/grouped_parts.py:product, lowrank_acc, gram_acc (and Ctx).
Tests: tests/test_grouped_reference.py (product and lowrank_acc alone; gram_acc inside the
query_forward and r_forward_group passes).
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from ..common.linalg import gemm_acc, gemm_st
from .bn_mlp_kernels import scale


class Ctx(NamedTuple):
    """One group on one thread: the model, the call's settings, the thread's scratch."""
    geom: tuple                 # BNGeometry (bn_mlp_kernels.py)
    cp: tuple                # Compact (classify_groups.py)
    pinned: bool             # BLAS held on one thread (``product``)
    rest: np.ndarray         # (Pr,) θ[D·H1:] (the W_l blocks are read here)
    th0: np.ndarray          # (Pc,) θ's own b, γ, β
    alpha: float
    t0: int                  # the group's first task
    n: int                   # its tasks
    K: int                   # support points per task
    Q: int                   # query points per task
    PK: np.ndarray           # (max(K,Q)²,) scratch of the small products
    GR: np.ndarray           # (GMAX, K·K + Q·K) the Gram matrices of the group's tasks


class Lowrank(NamedTuple):
    """A rank-≤Kf factor pair of ``lowrank_acc``: coeff · (· F1ᵀ) F2."""
    F1: np.ndarray
    f1o: int                 # F1 (Kf, R1) at F1[f1o:]
    F2: np.ndarray
    f2o: int                 # F2 (Kf, W2) at F2[f2o:]
    Kf: int
    coeff: float



@njit(cache=True, _nrt=False)
def product(pinned, A, ao, ta, B, bo, tb, C, co, M, R, W):
    """C[M, W] = op(A) op(B) (linalg.gemm_acc): one dgemm when BLAS is pinned to one
    thread, else in row blocks under OpenBLAS's threading threshold."""
    if pinned:
        gemm_acc(A, ao, ta, B, bo, tb, C, co, M, R, W, 0)
    else:
        gemm_st(A, ao, ta, B, bo, tb, C, co, M, R, W, 0)


@njit(cache=True, _nrt=False)
def product_add(pinned, A, ao, ta, B, bo, tb, C, co, M, R, W):
    """C[M, W] += op(A) op(B), as ``product``."""
    if pinned:
        gemm_acc(A, ao, ta, B, bo, tb, C, co, M, R, W, 1)
    else:
        gemm_st(A, ao, ta, B, bo, tb, C, co, M, R, W, 1)


@njit(cache=True, _nrt=False)
def lowrank_acc(X, xo, lr, N, R1, W2, PK, out, oo):
    """out (N, W2) at oo += coeff · (X F1ᵀ) F2: X (N, R1) at xo, the factors of ``lr``
    (Lowrank): a rank-≤Kf update through PK (N, Kf)."""
    gemm_st(X, xo, False, lr.F1, lr.f1o, True, PK, 0, N, R1, lr.Kf, 0)
    scale(PK, N * lr.Kf, lr.coeff)
    gemm_st(PK, 0, False, lr.F2, lr.f2o, False, out, oo, N, lr.Kf, W2, 1)


@njit(cache=True, _nrt=False)
def gram_acc(cx, j, ta, coeff, F, fo, W, out, oo, acc):
    """out at oo = acc·out + coeff · op(x_Q x_Sᵀ) F for task j of the group: x_Q x_Sᵀ (Q, K)
    (out (Q, W), F (K, W) at fo), or its transpose with ta (out (K, W), F (Q, W))."""
    N, Kf = (cx.K, cx.Q) if ta else (cx.Q, cx.K)
    GR, go, PK = cx.GR[j], cx.K * cx.K, cx.PK
    for i in range(N * Kf):
        PK[i] = coeff * GR[go + i]
    gemm_st(PK, 0, ta, F, fo, False, out, oo, N, Kf, W, acc)
