"""The Jacobian-factor products of a two-hidden-layer ReLU policy (mamlnp/nn/policy_factors.py)
against the general R-pass (mamlnp/nn/policy.py), and the meta Fisher-vector product they
serve (mamlnp/meta/rl.py, ``factored``) against its general path and finite differences.

Dimension legend: M samples, D observation entries, A action entries, P parameters.
"""
import numpy as np
import pytest

from mamlnp import GaussianPolicy, InputError
from mamlnp.check import rlcheck
from mamlnp.meta import rl
from mamlnp.nn.policy import PolicyPoint
from mamlnp.nn.policy_factors import FactoredPoint, factors_apply

SIZES = [(2, 7, 5, 2), (3, 6, 4, 1), (1, 9, 8, 3)]


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _points(sizes, seed=0, m=40):
    """The general and the factored point at one θ with vjp weights c (their gradients, rel.
    error printed): θ perturbed so both ReLU layers have units on and off, episodes of 10."""
    policy = GaussianPolicy(sizes, "relu")
    rng = np.random.default_rng(seed)
    theta = policy.init(seed) + 0.3 * rng.standard_normal(policy.num_params)
    obs = rng.uniform(-1, 1, (m, sizes[0]))
    act = rng.standard_normal((m, sizes[-1]))
    c = rng.standard_normal(m) / m
    pt, fp = PolicyPoint(policy, theta, obs, act), FactoredPoint(policy, theta, obs, act)
    for name in ("mu", "log_prob", "d_mu", "d_rho"):
        e = _rel(getattr(fp, name), getattr(pt, name))
        print(f"{sizes} {name:<12} rel err {e:.1e}")
        assert e < 1e-13
    e = _rel(fp.vjp(c), pt.vjp(c))
    print(f"{sizes} vjp          rel err {e:.1e}")
    assert e < 1e-12
    return policy, pt, fp, c, np.arange(0, m + 1, 10), rng


@pytest.mark.parametrize("sizes", SIZES)
def test_factored_point_matches_the_general_one(sizes):
    policy, pt, fp, c, starts, rng = _points(sizes)
    assert 0 < fp.s1T.mean() < 1 and 0 < fp.s2T.mean() < 1       # ReLU units on and off
    errs = {}
    V = rng.standard_normal((3, policy.num_params))
    for k, v in enumerate(V):                                   # the passes written out
        errs[f"jvp {k}"] = _rel(fp.jvp(v), pt.jvp(v))
        for est in rl.ESTIMATORS:
            coeffs = rl.score_coefficients(est, c, starts)
            errs[f"hvp {est} {k}"] = _rel(fp.hvp(v, coeffs), pt.hvp(v, coeffs))
    fp.factorize()
    for k, v in enumerate(V):                                   # through the factors
        errs[f"fisher {k}"] = _rel(fp.fisher_vp(v), pt.fisher_vp(v))
        for est in rl.ESTIMATORS:
            coeffs = rl.score_coefficients(est, c, starts)
            errs[f"factored hvp {est} {k}"] = _rel(fp.hvp(v, coeffs), pt.hvp(v, coeffs))
    for name, e in errs.items():
        print(f"{sizes} {name:<18} rel err {e:.1e}")
    assert max(errs.values()) < 1e-12


def test_factored_point_without_weights():
    policy, pt, fp, _, _, rng = _points((2, 7, 5, 2))
    bare = FactoredPoint(policy, pt.theta, pt.obs, pt.actions)
    v = rng.standard_normal(policy.num_params)
    assert _rel(bare.fisher_vp(v), pt.fisher_vp(v)) < 1e-12    # the Fisher needs no weights
    assert bare.K is None and bare.d1T is not None
    with pytest.raises(InputError, match="vjp"):
        bare.hvp(v)
    obs_only = FactoredPoint(policy, pt.theta, pt.obs)
    assert _rel(obs_only.mu, pt.mu) < 1e-13
    with pytest.raises(InputError, match="actions"):
        obs_only.vjp(np.ones(len(pt.obs)))


def test_the_fisher_product_builds_no_cross_products():
    """A point with vjp weights (the post-update point of meta_trpo_fns) multiplies by its
    Fisher through δ1 alone: K (its HVP's factors, (D+1)·A products) is not computed."""
    policy, pt, fp, _, _, rng = _points((2, 7, 5, 2))
    v = rng.standard_normal(policy.num_params)
    assert fp._bp is not None and fp.K is None
    assert _rel(fp.fisher_vp(v), pt.fisher_vp(v)) < 1e-12
    assert fp.d1T is not None and fp.K is None


def test_which_policies_take_the_factors():
    assert factors_apply(GaussianPolicy((2, 100, 100, 2), "relu"))
    assert not factors_apply(GaussianPolicy((2, 100, 100, 2), "tanh"))
    assert not factors_apply(GaussianPolicy((2, 8, 8, 8, 2), "relu"))
    assert not factors_apply(GaussianPolicy((2, 8, 2), "relu"))


@pytest.fixture(scope="module")
def relu_case():
    return rlcheck.draw_rl_case(3, "relu", tasks=3)


@pytest.mark.parametrize("estimator", rl.ESTIMATORS)
def test_meta_fvp_factored_matches_general(relu_case, estimator):
    policy, theta, pre, post, alpha = relu_case
    obs1 = [q[0] for q in post]
    rng = np.random.default_rng(1)
    general = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, estimator=estimator,
                                   factored=False)
    fast = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, estimator=estimator,
                                factored=True)
    default = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, estimator=estimator)
    for _ in range(3):                                   # the operator is reused, as in CG
        v = rng.standard_normal(policy.num_params)
        e = _rel(fast(v), general(v))
        print(f"meta FVP {estimator}: factored vs R-pass rel err {e:.1e}")
        assert e < 1e-12
        assert np.array_equal(default(v), fast(v))       # the default takes the factors


@pytest.mark.parametrize("estimator", rl.ESTIMATORS)
def test_meta_gradient_and_line_search_factored_match_general(relu_case, estimator):
    policy, theta, pre, post, alpha = relu_case
    o0, g0 = rl.rl_meta_gradient(policy, theta, pre, post, alpha, estimator, factored=False)
    o1, g1 = rl.rl_meta_gradient(policy, theta, pre, post, alpha, estimator)
    print(f"meta-gradient {estimator}: written out vs R-pass rel err {_rel(g1, g0):.1e}")
    assert abs(o1 - o0) < 1e-14 and _rel(g1, g0) < 1e-12
    theta_new = theta + 1e-2 * g0
    fns = [rl.line_search_fns(policy, theta, pre, post, alpha, factored=f) for f in (False, None)]
    assert fns[1][0](theta_new) == pytest.approx(fns[0][0](theta_new), rel=1e-13, abs=1e-15)
    assert fns[1][1](theta_new) == pytest.approx(fns[0][1](theta_new), rel=1e-10, abs=1e-17)


def test_meta_fvp_factored_matches_fd_and_threads(relu_case):
    policy, theta, pre, post, alpha = relu_case
    rows = rlcheck.fvp_rows(policy, theta, pre, post, alpha, "relu (factored)")
    for r in rows:
        print(f"{r.label:<40} rel err {r.rel_err:.2e}")
    assert all(r.passed for r in rows)
    obs1 = [q[0] for q in post]
    v = np.random.default_rng(2).standard_normal(policy.num_params)
    one = rl.meta_fvp(policy, theta, pre, obs1, alpha, v, estimator="lvc", threads=1)
    two = rl.meta_fvp(policy, theta, pre, obs1, alpha, v, estimator="lvc", threads=2)
    assert np.array_equal(one, two)
    one = rl.rl_meta_gradient(policy, theta, pre, post, alpha, "dice", threads=1)
    two = rl.rl_meta_gradient(policy, theta, pre, post, alpha, "dice", threads=2)
    assert one[0] == two[0] and np.array_equal(one[1], two[1])


def test_factored_option_bad_input(relu_case):
    policy, theta, pre, post, alpha = relu_case
    obs1 = [q[0] for q in post]
    with pytest.raises(InputError, match="factored"):
        rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, factored="yes")
    tanh = GaussianPolicy(policy.sizes, "tanh")
    with pytest.raises(InputError, match="two hidden ReLU layers"):
        rl.meta_fvp_operator(tanh, theta, pre, obs1, alpha, factored=True)


def test_kl_gradient_on_factored_points():
    from mamlnp.nn.policy import mean_kl_grad
    policy, pt, fp, _, _, rng = _points((2, 7, 5, 2))
    theta_old = pt.theta + 0.1 * rng.standard_normal(policy.num_params)
    old = PolicyPoint(policy, theta_old, pt.obs)
    assert _rel(mean_kl_grad(old, fp), mean_kl_grad(old, pt)) < 1e-12
