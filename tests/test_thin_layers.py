"""The fused thin-layer passes (mamlnp/fast/mlp/thin_layers.py) against the unfused kernels.

Dimension legend: N points, H width of the hidden layer next to the thin layer.

Each fused pass replaces a sequence of kernels (``linalg.gemm_acc`` thin products, then
``add_row``/``mul_sum``/``r_dz``/``sum_rows``) and promises the
same floating-point operations in the same order: the outputs are compared BIT FOR BIT
(compiled and as Python), not to a tolerance. Against the NumPy reference they are checked,
through the whole MLP, in tests/test_kernels.py.
"""
import numpy as np
import pytest

from mamlnp.fast.mlp import mlp_kernels as MK
from mamlnp.fast.mlp import thin_layers as TL
from mamlnp.fast.common.linalg import gemm_acc

SHAPES = [(10, 40), (3, 7), (1, 5), (6, 1)]                   # (N, H)


def same(a, b):
    return a.tobytes() == b.tobytes()


def rand(rng, n):
    return rng.standard_normal(n)


@pytest.mark.parametrize("N,H", SHAPES)
@pytest.mark.parametrize("py", [False, True])
def test_outer_bias_is_product_then_bias(N, H, py):
    rng = np.random.default_rng(N * H)
    x, th = rand(rng, N), rand(rng, 2 * H + 3)
    wo, bo = 1, H + 2                                         # w, b somewhere inside θ
    Z, Z2 = rand(rng, N * H + 2), np.zeros(N * H + 2)         # a tail that must not change
    Z2[N * H:] = Z[N * H:]
    (TL.outer_bias.py_func if py else TL.outer_bias)(x, N, th, wo, bo, H, Z)
    gemm_acc(x, 0, False, th, wo, False, Z2, 0, N, 1, H, 0)          # z = x ⊗ w
    MK.add_row(Z2, 0, N, H, th, bo)                                  #   + b
    assert same(Z, Z2)


@pytest.mark.parametrize("N,H", SHAPES)
@pytest.mark.parametrize("py", [False, True])
def test_input_backward_is_mul_sum_then_x_transpose_dz(N, H, py):
    rng = np.random.default_rng(7 * N + H)
    x, DH, S = rand(rng, N), rand(rng, N * H), rand(rng, N * H)
    DZ, DZ2 = np.zeros(N * H), np.zeros(N * H)
    out = rand(rng, 2 * H + 4)
    out2 = out.copy()
    (TL.input_backward.py_func if py else TL.input_backward)(x, N, H, DH, S, DZ, out, 2, H + 3)
    MK.mul_sum(DZ2, DH, S, 0, N, H, out2, H + 3)
    gemm_acc(x, 0, True, DZ2, 0, False, out2, 2, 1, N, H, 0)
    assert same(DZ, DZ2) and same(out, out2)


def hidden_block(N, H):
    """(ho, zo, n): a hidden layer's (N, H) block at ho, the output layer's (N,) block at
    zo, in buffers of n floats (not starting at 0, with a tail: offsets are exercised)."""
    return 3, 3 + N * H, 3 + N * H + N + 2


@pytest.mark.parametrize("N,H", SHAPES)
@pytest.mark.parametrize("py", [False, True])
def test_output_backward_is_thin_products_then_mul_sum(N, H, py):
    rng = np.random.default_rng(11 * N + H)
    ho, zo, n = hidden_block(N, H)
    C = np.stack([rand(rng, n), rand(rng, n), rand(rng, n), rand(rng, n), np.zeros(n)])
    A, S, DZ2, DH2 = C[1], C[2], C[3].copy(), C[4].copy()       # the cache: Z, A, S, DZ, DH
    th = rand(rng, 3 * H)
    g, g2 = np.zeros(3 * H), np.zeros(3 * H)
    wo, bo = 2 * H, 0                                         # w and its dW at wo; db at bo
    (TL.output_backward.py_func if py else TL.output_backward)(N, H, ho, zo, th, wo, bo, C, g)
    gemm_acc(A, ho, True, DZ2, zo, False, g2, wo, H, N, 1, 0)        # dW = hᵀ dŷ
    gemm_acc(DZ2, zo, False, th, wo, True, DH2, ho, N, 1, H, 0)      # dh = dŷ wᵀ
    MK.mul_sum(DZ2, DH2, S, ho, N, H, g2, bo)                        # dz, db
    assert same(g, g2) and same(C[3], DZ2) and same(C[4], DH2)


@pytest.mark.parametrize("N,H", SHAPES)
@pytest.mark.parametrize("aid", [0, 1, 2])
@pytest.mark.parametrize("py", [False, True])
def test_output_r_backward_is_thin_products_then_r_dz(N, H, aid, py):
    rng = np.random.default_rng(13 * N + H + aid)
    ho, zo, n = hidden_block(N, H)
    C = np.stack([rand(rng, n) for _ in range(5)])            # the cache: Z, A, S, DZ, DH
    Rb = np.stack([rand(rng, n), rand(rng, n), rand(rng, n), np.zeros(n)])   # RZ RH RDZ RDH
    A, S, DZ, DH, RZ, RH = C[1], C[2], C[3], C[4], Rb[0], Rb[1]
    RDZ2, RDH2 = Rb[2].copy(), Rb[3].copy()
    th, v = rand(rng, 3 * H), rand(rng, 3 * H)
    hv, hv2 = np.zeros(3 * H), np.zeros(3 * H)
    wo, bo = 2 * H, 0                                         # w, v_w and RdW at wo; Rdb at bo
    fused = TL.output_r_backward.py_func if py else TL.output_r_backward
    rest = TL.output_r_backward_rest.py_func if py else TL.output_r_backward_rest
    fused(N, H, ho, zo, th, v, wo, bo, C, Rb, hv, aid)
    rest(N, H, ho, RH, DZ, zo, hv, wo)
    gemm_acc(A, ho, True, RDZ2, zo, False, hv2, wo, H, N, 1, 0)      # RdW = hᵀ Rdŷ
    gemm_acc(RH, ho, True, DZ, zo, False, hv2, wo, H, N, 1, 1)       #     + Rhᵀ dŷ
    gemm_acc(RDZ2, zo, False, th, wo, True, RDH2, ho, N, 1, H, 0)    # Rdh = Rdŷ wᵀ
    gemm_acc(DZ, zo, False, v, wo, True, RDH2, ho, N, 1, H, 1)       #     + dŷ v_wᵀ
    if aid == 0:
        MK.mul_sum(RDZ2, RDH2, S, ho, N, H, hv2, bo)
    else:
        MK.r_dz(A, S, DH, RZ, RDH2, RDZ2, ho, N * H, aid)
        MK.sum_rows(RDZ2, ho, N, H, hv2, bo)
    assert same(hv, hv2) and same(Rb[2], RDZ2) and same(Rb[3], RDH2)
