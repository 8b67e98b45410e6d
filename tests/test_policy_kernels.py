"""The navigation policy's compiled row passes (mamlnp/fast/policy/policy_kernels.py) against
their NumPy twins (mamlnp/nn/policy_ops.py), kernel by kernel, and the point that runs them
(``CompiledPoint``) against the NumPy ``FactoredPoint`` and the general ``PolicyPoint``, pass
by pass; then the RL functions' ``backend`` option.

Dimension legend: H rows (units), K inner dimension of a thin product, M samples,
P parameters.
"""
import numpy as np
import pytest

from mamlnp import GaussianPolicy, InputError
from mamlnp.check import rlcheck
from mamlnp.fast.policy import CompiledPoint, policy_kernels as KER
from mamlnp.meta import rl
from mamlnp.nn import policy_ops as REF
from mamlnp.nn.policy import PolicyPoint
from mamlnp.nn.policy_factors import FactoredPoint

SHAPES = [(1, 1, 1), (5, 2, 7), (7, 3, 33), (4, 4, 9), (3, 5, 17), (100, 3, 2000), (100, 4, 2000)]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _rows(rng, H, M):
    """(H, M) values with zeros of both signs, a NaN and infinities among the normals."""
    z = rng.standard_normal((H, M))
    z.flat[::7] = 0.0
    z.flat[3::11] = -0.0
    if z.size > 20:
        z.flat[5], z.flat[6], z.flat[8] = np.nan, np.inf, -np.inf
    return z


@pytest.mark.parametrize("H,K,M", SHAPES)
def test_relu_rows_and_mask_rows_have_numpys_bits(H, K, M):
    rng = np.random.default_rng(H * 100 + M)
    z = np.full((2 * H + 1, M), 7.0)
    z[:H] = _rows(rng, H, M)
    outs, masks = [z.copy(), z.copy()], [np.empty((H, M), bool), np.empty((H, M), bool)]
    REF.relu_rows(outs[0], masks[0])
    KER.relu_rows(outs[1], masks[1])
    assert np.array_equal(outs[1], outs[0], equal_nan=True)
    assert np.array_equal(np.signbit(outs[1]), np.signbit(outs[0]))      # +0.0 from max(−0.0, 0)
    assert np.array_equal(masks[1], masks[0])
    assert (outs[1][H] == 1.0).all() and (outs[1][H + 1:] == 7.0).all()  # ones; the rest untouched
    x = [_rows(rng, H, M), None]
    x[1] = x[0].copy()
    with np.errstate(invalid="ignore"):                                  # inf · 0.0 = NaN
        REF.mask_rows(x[0], masks[0])
    KER.mask_rows(x[1], masks[0])
    assert np.array_equal(x[1], x[0], equal_nan=True)
    assert np.array_equal(np.signbit(x[1]), np.signbit(x[0]))            # x · 0.0 as NumPy


@pytest.mark.parametrize("H,K,M", SHAPES)
def test_thin_products_match_their_twins(H, K, M):
    rng = np.random.default_rng(K * 1000 + M)
    A, B = rng.standard_normal((H, K)), rng.standard_normal((K, M))
    scale = np.abs(A) @ np.abs(B) + 1e-300                              # (H, M) the sums' size
    outs, masks = [np.full((2 * H + 1, M), 7.0) for _ in range(2)], [
        np.empty((H, M), bool) for _ in range(2)]
    REF.product_relu(A, B, outs[0], masks[0])
    KER.product_relu(A, B, outs[1], masks[1])
    err = float((np.abs(outs[1][:H] - outs[0][:H]) / scale).max())
    print(f"product_relu H={H} K={K} M={M}: max error / (|A| |B|) {err:.1e}")
    assert err < 1e-14 and np.array_equal(outs[1][H:], outs[0][H:])
    assert np.array_equal(masks[1], masks[0])
    s = rng.random((H, M)) < 0.5
    pm = [np.empty((H, M)) for _ in range(2)]
    REF.product_mask(A, B, s, pm[0])
    KER.product_mask(A, B, s, pm[1])
    err = float((np.abs(pm[1] - pm[0]) / scale).max())
    print(f"product_mask H={H} K={K} M={M}: max error / (|A| |B|) {err:.1e}")
    assert err < 1e-14 and (pm[1][~s] == 0.0).all()


def test_a_thin_product_adds_its_terms_in_k_order():
    """1 + 1e-16 + 1e-16 + … is 1 in k order, 1 + 2.2e-16 when the small terms come first:
    the kernels add A[h, k] B[k, m] for k = 0, 1, … (written out for K = 2, 3, 4, looped
    for K = 5)."""
    for K in (2, 3, 4, 5):
        for col in ([1.0] + [1e-16] * (K - 1), [1e-16] * (K - 1) + [1.0]):
            out, acc = np.empty((1, 1)), col[0]
            for x in col[1:]:
                acc += x                                                  # Python: IEEE double
            KER.product_mask(np.ones((1, K)), np.array(col)[:, None], np.ones((1, 1), bool), out)
            assert out[0, 0] == acc
    assert acc != 1.0                                                     # the order shows


def test_the_kernels_check_their_shapes():
    s = np.ones((3, 4), bool)
    with pytest.raises(ValueError, match="relu_rows"):
        KER.relu_rows(np.zeros((3, 4)), s)                               # needs H + 1 rows
    with pytest.raises(ValueError, match="relu_rows"):
        KER.relu_rows(np.zeros((7, 5)), s)
    with pytest.raises(ValueError, match="product_relu"):
        KER.product_relu(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((7, 4)), s)
    with pytest.raises(ValueError, match="product_relu"):
        KER.product_relu(np.zeros((3, 0)), np.zeros((0, 4)), np.zeros((7, 4)), s)
    with pytest.raises(ValueError, match="product_mask"):
        KER.product_mask(np.zeros((3, 2)), np.zeros((2, 5)), s, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="product_mask"):
        KER.product_mask(np.zeros((3, 2)), np.zeros((2, 4)), s, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="mask_rows"):
        KER.mask_rows(np.zeros((4, 3)), s)


SIZES = [(2, 7, 5, 2), (3, 6, 4, 1), (1, 9, 8, 3), (2, 100, 100, 2)]


@pytest.mark.parametrize("sizes", SIZES)
def test_compiled_point_matches_the_numpy_points_pass_by_pass(sizes):
    policy = GaussianPolicy(sizes, "relu")
    rng = np.random.default_rng(len(sizes) + sizes[1])
    theta = policy.init(1) + 0.3 * rng.standard_normal(policy.num_params)
    m = 300
    obs, act = rng.uniform(-1, 1, (m, sizes[0])), rng.standard_normal((m, sizes[-1]))
    c, starts = rng.standard_normal(m) / m, np.arange(0, m + 1, 30)
    ref, new, gen = (cls(policy, theta, obs, act) for cls in (FactoredPoint, CompiledPoint,
                                                             PolicyPoint))
    assert 0 < new.s1T.mean() < 1 and 0 < new.s2T.mean() < 1           # units on and off
    errs = {name: _rel(getattr(new, name), getattr(ref, name))
            for name in ("h1w", "h2w", "mu", "log_prob", "d_mu", "d_rho")}
    errs["h1w"] = _rel(new.h1w[:sizes[1] + 1], ref.h1w[:sizes[1] + 1])     # rows past h̃: scratch
    errs["h2w"] = _rel(new.h2w[:sizes[2] + 1], ref.h2w[:sizes[2] + 1])
    assert np.array_equal(new.s1T, ref.s1T) and np.array_equal(new.s2T, ref.s2T)
    errs["vjp"] = _rel(new.vjp(c), ref.vjp(c))
    errs["vjp vs general"] = _rel(new.vjp(c), gen.vjp(c))
    V = rng.standard_normal((2, policy.num_params))
    for k, v in enumerate(V):
        errs[f"jvp {k}"] = _rel(new.jvp(v), ref.jvp(v))
        for est in rl.ESTIMATORS:
            co = rl.score_coefficients(est, c, starts)
            errs[f"hvp {est} {k}"] = _rel(new.hvp(v, co), ref.hvp(v, co))
            errs[f"hvp {est} {k} vs general"] = _rel(new.hvp(v, co), gen.hvp(v, co))
    new.factorize(), ref.factorize()
    for k, v in enumerate(V):
        errs[f"fisher {k}"] = _rel(new.fisher_vp(v), ref.fisher_vp(v))
        co = rl.score_coefficients("lvc", c, starts)
        errs[f"factored hvp lvc {k}"] = _rel(new.hvp(v, co), ref.hvp(v, co))
    for name, e in errs.items():
        print(f"{sizes} {name:<24} rel err {e:.1e}")
    assert max(errs.values()) < 1e-12


@pytest.mark.parametrize("estimator", rl.ESTIMATORS)
def test_backends_agree_and_threads_keep_the_bits(estimator):
    policy, theta, pre, post, alpha = rlcheck.draw_rl_case(5, "relu", tasks=4)   # 4 tasks
    o0, g0 = rl.rl_meta_gradient(policy, theta, pre, post, alpha, estimator, backend="numpy")
    o1, g1 = rl.rl_meta_gradient(policy, theta, pre, post, alpha, estimator)      # numba
    o2, g2 = rl.rl_meta_gradient(policy, theta, pre, post, alpha, estimator, threads=2)
    print(f"meta-gradient {estimator}: numba vs numpy rel err {_rel(g1, g0):.1e}")
    assert abs(o1 - o0) < 1e-14 and _rel(g1, g0) < 1e-12
    assert o2 == o1 and np.array_equal(g2, g1)
    obs1 = [q[0] for q in post]
    ops = [rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, estimator=estimator, threads=t,
                                backend=b) for b, t in (("numpy", 1), ("numba", 1), ("numba", 2))]
    v = np.random.default_rng(2).standard_normal(policy.num_params)
    f0, f1, f2 = (op(v) for op in ops)
    print(f"meta FVP {estimator}: numba vs numpy rel err {_rel(f1, f0):.1e}")
    assert _rel(f1, f0) < 1e-12 and np.array_equal(f2, f1)


def test_the_backend_picks_the_point():
    relu, tanh = GaussianPolicy((2, 8, 8, 2), "relu"), GaussianPolicy((2, 8, 8, 2), "tanh")
    assert rl._point_class(relu) is CompiledPoint
    assert rl._point_class(relu, backend="numba") is CompiledPoint
    assert rl._point_class(relu, backend="numpy") is FactoredPoint
    assert rl._point_class(relu, factored=False) is PolicyPoint
    assert rl._point_class(tanh) is PolicyPoint                          # no compiled twin
    with pytest.raises(InputError, match="backend"):
        rl._point_class(relu, backend="jax")
