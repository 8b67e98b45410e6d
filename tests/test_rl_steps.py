"""Meta-TRPO through K inner steps (mamlnp/meta/rl_steps.py): K = 1 against rl_trpo's
iteration, K = 2 and 3 against finite differences of the line-search functions (the
surrogate's gradient at θ is the objective's; the KL's Hessian at θ is the FVP), the same bits
at any thread count, and the checks.

Dimension legend: T tasks, K inner steps, P parameters.
"""
import numpy as np
import pytest

from mamlnp import InputError
from mamlnp.check import rlcheck
from mamlnp.meta import rl, rl_steps, rl_trpo


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _case(K, activation="tanh", factored=None, threads=1, seed=3):
    """(policy, chain) of K steps on drawn batches (tanh: smooth for finite differences)."""
    policy, theta, pre, post, _ = rlcheck.draw_rl_case(seed, activation, tasks=3)
    rng = np.random.default_rng(seed)
    alphas = (0.3, 0.15, 0.1)[:K]
    chain = rl_steps.start_chain(policy, theta, pre, alphas, threads, factored)
    for k in range(K):
        batch = post if k == 0 else [(o + 0.1 * rng.standard_normal(o.shape),
                                      a[::-1].copy(), rng.standard_normal(len(d)), e)
                                     for o, a, d, e in post]
        rl_steps.extend(policy, chain, batch, threads, factored)
    return policy, theta, pre, post, chain


@pytest.mark.parametrize("factored", [None, False])
def test_one_step_is_rl_trpo_iteration(factored):
    policy, theta, pre, post, chain = _case(1, "relu", factored)
    v = np.random.default_rng(1).standard_normal(policy.num_params)
    for est in ("maml", "lvc", "dice"):
        obj, grad, fvp, sur, kl = rl_steps.multistep_trpo_fns(policy, chain, est)
        o0, g0, fvp0, sur0, kl0 = rl_trpo.meta_trpo_fns(policy, theta, pre, post, 0.3, est,
                                                        factored=factored)
        theta_new = theta + 1e-2 * g0
        err = _rel(grad, g0)
        print(f"K=1 {est} factored={factored}: gradient rel err {err:.1e}, "
              f"FVP {_rel(fvp(v), fvp0(v)):.1e}")
        assert abs(obj - o0) < 1e-14 * abs(o0) + 1e-15 and err < 1e-12
        assert _rel(fvp(v), fvp0(v)) < 1e-12
        assert abs(sur(theta_new) - sur0(theta_new)) < 1e-13
        assert abs(kl(theta_new) - kl0(theta_new)) < 1e-13
        assert kl(theta) == 0.0


def _fd1(f, theta, V, h=1e-5):
    """Directional first derivatives, the 5-point stencil (error O(h⁴): the surrogate's exp
    has a large third derivative, which leaves the 3-point one at 2e-7)."""
    return np.array([(8 * (f(theta + h * v) - f(theta - h * v))
                      - (f(theta + 2 * h * v) - f(theta - 2 * h * v))) / (12 * h) for v in V])


def _fd2(f, theta, V, h=1e-4):
    """Directional second derivatives, the 5-point stencil."""
    return np.array([(16 * (f(theta + h * v) + f(theta - h * v)) - 30 * f(theta)
                      - (f(theta + 2 * h * v) + f(theta - 2 * h * v))) / (12 * h * h)
                     for v in V])


@pytest.mark.parametrize("K", [2, 3])
def test_gradient_and_fvp_against_finite_differences(K):
    policy, theta, _, _, chain = _case(K)
    # the samples held fixed, the "maml" curvature is the exact derivative of the chain
    obj, grad, fvp, sur, kl = rl_steps.multistep_trpo_fns(policy, chain, "maml",
                                                          damping=1e-300)
    V = np.random.default_rng(2).standard_normal((3, policy.num_params))
    err = _rel(V @ grad, _fd1(sur, theta, V))                 # ∇ surrogate at θ = ∇ J
    quad = np.array([v @ fvp(v) for v in V])                  # vᵀ (∇² mean KL) v
    err2 = _rel(quad, _fd2(kl, theta, V))
    print(f"K={K}: meta-gradient rel err {err:.1e}, vᵀ FVP v rel err {err2:.1e}")
    assert err < 1e-9 and err2 < 1e-6
    assert np.isclose(sur(theta), np.mean([b[2].mean() for k in range(1, K + 1)
                                           for b in chain.batches[k]]))
    w = V[1]
    assert np.isclose(V[0] @ fvp(w), w @ fvp(V[0]), rtol=1e-10)          # symmetric
    assert quad.min() > 0                                                # positive


def test_lvc_adds_its_curvature_and_threads_keep_the_bits():
    _, _, _, _, one = _case(2, "relu", threads=1)
    policy, theta, _, _, two = _case(2, "relu", threads=2)
    v = np.random.default_rng(6).standard_normal(policy.num_params)
    a = rl_steps.multistep_trpo_fns(policy, one, "lvc", threads=1)
    b = rl_steps.multistep_trpo_fns(policy, two, "lvc", threads=2)
    m = rl_steps.multistep_trpo_fns(policy, one, "maml")
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2](v), b[2](v))
    assert a[0] == m[0] and _rel(a[1], m[1]) > 1e-6        # same objective, another estimate


def test_chain_checks():
    policy, theta, pre, post, chain = _case(1)
    with pytest.raises(InputError, match="alphas"):
        rl_steps.start_chain(policy, theta, pre, (0.5, -1.0))
    with pytest.raises(InputError, match="alphas"):
        rl_steps.start_chain(policy, theta, pre, ())
    with pytest.raises(InputError, match="already holds"):
        rl_steps.extend(policy, chain, post)
    short = rl_steps.start_chain(policy, theta, pre, (0.5, 0.25))
    with pytest.raises(InputError, match="chain"):
        rl_steps.multistep_trpo_fns(policy, short)
    with pytest.raises(InputError, match=r"batches\[1\]"):
        rl_steps.extend(policy, short, post[:2])
    with pytest.raises(InputError, match="estimator"):
        rl_steps.multistep_trpo_fns(policy, chain, "x")
