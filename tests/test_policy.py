"""The Gaussian MLP policy (mamlnp/nn/policy.py): its layout, log-likelihood, sampling, and
every derivative against finite differences (printed relative errors) plus structure
(HVP symmetry and linearity, Fisher symmetric PSD, KL >= 0).

Dimension legend: M samples, D observation entries, A action entries, P parameters.
"""
import numpy as np
import pytest

from mamlnp import GaussianPolicy, InputError
from mamlnp.check import rlcheck
from mamlnp.nn.policy import PolicyPoint, mean_kl_grad, mean_kl_points


def _case(activation="tanh", sizes=(3, 5, 4, 2), m=9, seed=0):
    policy = GaussianPolicy(sizes, activation)
    rng = np.random.default_rng(seed)
    theta = policy.init(seed) + 0.1 * rng.standard_normal(policy.num_params)
    obs = rng.uniform(-1, 1, (m, sizes[0]))
    act = rng.standard_normal((m, sizes[-1]))
    return policy, theta, obs, act, rng


def _log_prob_by_hand(policy, theta, obs, act):
    """log N(a; μ, diag σ²) from the unflattened layers, written out directly."""
    layers, log_std = policy.unflatten(theta)
    h = obs
    for l, (W, b) in enumerate(layers):
        h = h @ W + b
        if l < len(layers) - 1:
            h = np.tanh(h) if policy.activation == "tanh" else np.maximum(h, 0.0)
    sigma = np.exp(log_std)
    z = (act - h) / sigma
    return -0.5 * (z ** 2).sum(1) - np.log(sigma).sum() - 0.5 * act.shape[1] * np.log(2 * np.pi)


def test_layout_and_init():
    policy = GaussianPolicy()
    assert policy.sizes == (2, 100, 100, 2) and policy.activation == "relu"
    assert policy.num_params == 2 * 100 + 100 + 100 * 100 + 100 + 100 * 2 + 2 + 2
    assert (policy.obs_dim, policy.act_dim) == (2, 2)
    theta = policy.init(3)
    layers, log_std = policy.unflatten(theta)
    assert np.all(log_std == 0.0)
    for W, b in layers:                                 # Glorot-uniform W, zero b
        bound = np.sqrt(6.0 / sum(W.shape))
        assert np.all(b == 0.0) and np.abs(W).max() <= bound and np.abs(W).max() > 0.9 * bound
    assert np.array_equal(policy.flatten(layers, log_std), theta)
    assert np.array_equal(policy.init(3), theta) and not np.array_equal(policy.init(4), theta)
    layers[0][1][:] = 7.0                              # views write through
    assert np.all(theta[200:300] == 7.0)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_log_prob_and_mean_match_the_formula(activation):
    policy, theta, obs, act, _ = _case(activation)
    expected = _log_prob_by_hand(policy, theta, obs, act)
    assert np.allclose(policy.log_prob(theta, obs, act), expected, rtol=1e-13, atol=1e-13)
    assert policy.mean(theta, obs).shape == (obs.shape[0], 2)


def test_sample_statistics_and_reproducibility():
    policy, theta, obs, _, _ = _case(m=1)
    obs = np.repeat(obs, 40000, axis=0)
    a = policy.sample(theta, obs, np.random.default_rng(5))
    assert np.array_equal(a, policy.sample(theta, obs, np.random.default_rng(5)))
    mu, sigma = policy.mean(theta, obs[:1])[0], np.exp(policy.unflatten(theta)[1])
    se = sigma / np.sqrt(len(a))
    print("sample mean error / se:", (a.mean(0) - mu) / se)
    assert np.all(np.abs(a.mean(0) - mu) < 5 * se)
    assert np.allclose(a.std(0), sigma, rtol=0.02)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_policy_derivatives_against_finite_differences(activation):
    policy, theta, pre, _, _ = rlcheck.draw_rl_case(1, activation)
    rows = rlcheck.policy_rows(policy, theta, pre[0], activation)
    for r in rows:
        print(f"{r.label:<32} rel err {r.rel_err:.2e}")
    assert all(r.passed for r in rows) and max(r.rel_err for r in rows) < 1e-8


def test_full_gradient_matches_fd_coordinatewise(fd):
    policy, theta, obs, act, rng = _case("softplus")
    c = rng.standard_normal(obs.shape[0])
    g = policy.point(theta, obs, act).vjp(c)
    num = fd.num_grad(lambda t: c @ policy.log_prob(t, obs, act), theta)
    print("gradient rel err", fd.rel_error(g, num))
    assert fd.rel_error(g, num) < 1e-8


def test_hvp_is_symmetric_and_linear():
    policy, theta, obs, act, rng = _case()
    c = rng.standard_normal(obs.shape[0])
    pt = policy.point(theta, obs, act)
    pt.vjp(c)
    u, v = rng.standard_normal((2, policy.num_params))
    assert abs(u @ pt.hvp(v) - v @ pt.hvp(u)) < 1e-12 * np.linalg.norm(pt.hvp(v)) * 10
    assert np.allclose(pt.hvp(2 * u - 3 * v), 2 * pt.hvp(u) - 3 * pt.hvp(v), rtol=0, atol=1e-12)
    coeff = lambda q: c * q                             # noqa: E731  (lvc's extra term)
    assert abs(u @ pt.hvp(v, coeff) - v @ pt.hvp(u, coeff)) < 1e-11


def test_fisher_is_symmetric_psd_and_kl_is_a_divergence():
    policy, theta, obs, _, rng = _case(m=6)
    pt = policy.point(theta, obs)
    F = np.array([pt.fisher_vp(e) for e in np.eye(policy.num_params)])   # (P, P)
    assert np.allclose(F, F.T, atol=1e-13)
    eig = np.linalg.eigvalsh((F + F.T) / 2)
    print("Fisher eigenvalues min/max", eig.min(), eig.max())
    assert eig.min() > -1e-12
    other = theta + 0.2 * rng.standard_normal(policy.num_params)
    assert policy.kl(theta, theta, obs) == 0.0 and policy.kl(theta, other, obs) > 0.0
    assert np.allclose(mean_kl_grad(pt, pt), 0.0, atol=1e-15)
    # the Gaussian KL against a Monte Carlo estimate of E_old[log π_old − log π_new]
    o = np.repeat(obs[:1], 200000, axis=0)
    a = policy.sample(theta, o, np.random.default_rng(0))
    mc = np.mean(policy.log_prob(theta, o, a) - policy.log_prob(other, o, a))
    assert abs(mc - policy.kl(theta, other, obs[:1])) < 0.02 * max(mc, 1e-3) + 3e-3


def test_bad_input_is_refused():
    policy, theta, obs, act, _ = _case()
    with pytest.raises(InputError, match="obs"):
        policy.log_prob(theta, np.full_like(obs, np.nan), act)
    with pytest.raises(InputError, match="actions"):
        policy.log_prob(theta, obs, act[:, :1])
    with pytest.raises(InputError, match="theta"):
        policy.log_prob(theta[:-1], obs, act)
    relu = GaussianPolicy(policy.sizes, "relu")
    big = np.full(policy.num_params, 1e200)                   # overflows: inf − inf = NaN means
    big[-2:] = 0.0
    with pytest.raises(InputError, match="NaN or infinite"), np.errstate(all="ignore"):
        relu.log_prob(big, np.abs(obs), act)
    huge_std = theta.copy()
    huge_std[-2:] = -400.0                                    # σ = e^-400: log π overflows
    with pytest.raises(InputError, match="not finite"), np.errstate(all="ignore"):
        policy.log_prob(huge_std, obs, act)
    with pytest.raises(InputError, match="actions"):
        policy.point(theta, obs).vjp(np.ones(len(obs)))
    with pytest.raises(InputError, match="vjp"):
        PolicyPoint(policy, theta, obs, act).hvp(theta)
    with pytest.raises(InputError, match="sizes"):
        GaussianPolicy((2,))
    assert mean_kl_points(policy.point(theta, obs), policy.point(theta, obs)) == 0.0


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
def test_stacked_means_equal_the_mean_task_by_task(activation):
    """GaussianPolicy.means (the sampler's post-update step, one θ′ per task): the same bits
    as ``mean`` per task; bad shapes named."""
    policy = GaussianPolicy((3, 8, 6, 2), activation)
    rng = np.random.default_rng(0)
    thetas = np.stack([policy.init(rng) + 0.2 * rng.standard_normal(policy.num_params)
                       for _ in range(4)])                                 # (T, P)
    obs = rng.standard_normal((4, 5, 3))                                   # (T, N, D)
    got = policy.means(thetas, obs)
    assert got.shape == (4, 5, 2)
    assert np.array_equal(got, np.stack([policy.mean(t, o) for t, o in zip(thetas, obs)]))
    with pytest.raises(InputError, match="obs"):
        policy.means(thetas, obs[:3])
    with pytest.raises(InputError, match="thetas"):
        policy.means(thetas[:, :-1], obs)
