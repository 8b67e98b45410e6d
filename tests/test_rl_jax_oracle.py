"""An independent oracle for the RL derivatives: JAX's autodiff against the Gaussian policy's
hand-written products and the three meta-policy-gradient estimators.

Dimension legend: T tasks, M samples of a task, P parameters.

Skipped unless JAX is installed (not a dependency; CI does not install it). JAX
differentiates a plain re-implementation written here from the documented layout
(θ = [W1 | b1 | … | W_L | b_L | log_std], W_l (fan_in, fan_out) row-major). The estimators
are JAX's derivatives of the surrogates named in docs/derivations/policy-gradient.md, with
stop-gradients: the plain surrogate (maml), Σ c π/⊥π (lvc), and DiCE's magic box
□(x) = exp(x − ⊥x) on Σ c (□_≤t − □_<t) (dice). The meta Fisher-vector product is JAX's
Hessian-vector product of the mean post-update KL at the old θ.
"""
import numpy as np
import pytest

from mamlnp import GaussianPolicy, rl_meta_gradient
from mamlnp.check import rlcheck
from mamlnp.meta import rl

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy
sg = jax.lax.stop_gradient

ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh, "softplus": jax.nn.softplus}
RTOL = 1e-11


def _unflatten(sizes, theta):
    layers, o = [], 0
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        layers.append((theta[o:o + fi * fo].reshape(fi, fo), theta[o + fi * fo:o + fi * fo + fo]))
        o += fi * fo + fo
    return layers, theta[o:]


def _mean(policy, theta, obs):
    layers, _ = _unflatten(policy.sizes, theta)
    h = obs
    for l, (W, b) in enumerate(layers):
        h = h @ W + b
        if l < len(layers) - 1:
            h = ACT[policy.activation](h)
    return h


def _log_prob(policy, theta, obs, act):
    log_std = _unflatten(policy.sizes, theta)[1]
    z = (act - _mean(policy, theta, obs)) * jnp.exp(-log_std)
    return -0.5 * jnp.sum(z ** 2, axis=1) - jnp.sum(log_std) - 0.5 * act.shape[1] * jnp.log(2 * jnp.pi)


def _inner_objective(policy, theta, task, estimator):
    obs, act, adv, labels = (jnp.asarray(x) for x in task)
    c = adv / adv.shape[0]
    lp = _log_prob(policy, theta, obs, act)
    if estimator == "maml":
        return jnp.sum(c * lp)
    if estimator == "lvc":
        return jnp.sum(c * jnp.exp(lp - sg(lp)))
    box = lambda x: jnp.exp(x - sg(x))                                     # noqa: E731
    same = labels[:, None] == labels[None, :]                              # (M, M)
    idx = jnp.arange(len(lp))
    le = jnp.where(same & (idx[None, :] <= idx[:, None]), lp[None, :], 0.0).sum(1)   # Σ_{t'≤t}
    lt = le - lp                                                                      # Σ_{t'<t}
    return jnp.sum(c * (box(le) - box(lt)))


def _meta_objective(policy, theta, pre, post, alpha, estimator):
    total = 0.0
    for task, (obs1, act1, adv1, _) in zip(pre, post):
        theta1 = theta + alpha * jax.grad(lambda t: _inner_objective(policy, t, task, estimator))(theta)
        total = total + jnp.mean(jnp.asarray(adv1) * _log_prob(policy, theta1, obs1, act1))
    return total / len(pre)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(a), 1e-300))


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
def test_policy_products_match_jax(activation):
    policy, theta, pre, _, _ = rlcheck.draw_rl_case(5, activation)
    obs, act, adv, _ = pre[0]
    c = adv / len(adv)
    pt = policy.point(theta, obs, act)
    v = np.random.default_rng(0).standard_normal(policy.num_params)
    f = lambda t: jnp.sum(c * _log_prob(policy, t, obs, act))               # noqa: E731
    assert _rel(pt.vjp(c), jax.grad(f)(theta)) < RTOL
    assert _rel(pt.hvp(v), jax.jvp(jax.grad(f), (theta,), (v,))[1]) < RTOL
    assert _rel(pt.jvp(v), jax.jvp(lambda t: _log_prob(policy, t, obs, act), (theta,), (v,))[1]) < RTOL
    assert _rel(policy.log_prob(theta, obs, act), _log_prob(policy, theta, obs, act)) < 1e-14


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("estimator", rl.ESTIMATORS)
def test_estimators_match_jax(activation, estimator):
    policy, theta, pre, post, alpha = rlcheck.draw_rl_case(6, activation)
    obj, g = rl_meta_gradient(policy, theta, pre, post, alpha, estimator)
    J = lambda t: _meta_objective(policy, t, pre, post, alpha, estimator)   # noqa: E731
    err = _rel(g, jax.grad(J)(theta))
    print(f"{activation} {estimator}: rel err vs JAX {err:.1e}")
    assert err < RTOL and abs(obj - float(J(theta))) < 1e-13 * max(1.0, abs(obj))


@pytest.mark.parametrize("estimator", rl.ESTIMATORS)
def test_meta_fvp_matches_jax_hvp_of_the_kl(estimator):
    policy, theta, pre, post, alpha = rlcheck.draw_rl_case(7, "tanh")
    obs1 = [q[0] for q in post]

    def kl(t):
        total = 0.0
        for task, o in zip(pre, obs1):
            inner = lambda s: _inner_objective(policy, s, task, estimator)  # noqa: E731
            old, new = theta + alpha * jax.grad(inner)(theta), t + alpha * jax.grad(inner)(t)
            ls_o, ls_n = _unflatten(policy.sizes, old)[1], _unflatten(policy.sizes, new)[1]
            mu_o, mu_n = _mean(policy, old, o), _mean(policy, new, o)
            per = ls_n - ls_o + (jnp.exp(2 * (ls_o - ls_n)) + (mu_o - mu_n) ** 2
                                 * jnp.exp(-2 * ls_n)) / 2 - 0.5
            total = total + jnp.mean(jnp.sum(per, axis=1))
        return total / len(pre)

    v = np.random.default_rng(1).standard_normal(policy.num_params)
    ours = rl.meta_fvp(policy, theta, pre, obs1, alpha, v, 1e-5, estimator) - 1e-5 * v
    theirs = jax.jvp(jax.grad(kl), (jnp.asarray(theta),), (jnp.asarray(v),))[1]
    err = _rel(ours, theirs)
    print(f"meta FVP ({estimator}) rel err vs JAX {err:.1e}")
    assert err < 1e-10


def test_policy_is_the_documented_layout():
    policy = GaussianPolicy((2, 3, 2))
    theta = np.arange(policy.num_params, dtype=float)
    (W1, b1), (W2, b2) = policy.unflatten(theta)[0]
    jl, jls = _unflatten(policy.sizes, theta)
    assert np.array_equal(W1, jl[0][0]) and np.array_equal(b2, jl[1][1])
    assert np.array_equal(policy.unflatten(theta)[1], jls)
