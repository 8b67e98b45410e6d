

@pytest.mark.parametrize("ta,tb,acc", [(False, False, 0), (True, False, 1), (False, True, 1),
                                       (True, True, 0)])
def test_gemm_in_row_blocks_matches_numpy(ta, tb, acc):
    """gemm_chunks.gemm_st above OpenBLAS's threading threshold (M·R·W = 1.2M > 262,144)
    against NumPy, offsets included."""
    from mamlnp.fast.kernels.gemm_chunks import LIMIT, gemm_st
    M, R, W = 75, 128, 130
    assert M * R * W > LIMIT
    rng = np.random.default_rng(12)
    A, B, C = rng.standard_normal(M * R + 3), rng.standard_normal(R * W + 5), rng.standard_normal(M * W + 2)
    opA = A[3:].reshape(R, M).T if ta else A[3:].reshape(M, R)
    opB = B[5:].reshape(W, R).T if tb else B[5:].reshape(R, W)
    want = acc * C[2:].reshape(M, W) + opA @ opB
    gemm_st(A, 3, ta, B, 5, tb, C, 2, M, R, W, acc)
    assert rel(C[2:].reshape(M, W), want) < TOL
