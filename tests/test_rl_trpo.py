"""One meta-TRPO iteration with each task's points computed once (mamlnp/meta/rl_trpo.py)
against the separate calls of mamlnp/meta/rl.py, the inner steps kept from the sampler, the
surrogate at θ reused, and conjugate gradient's F x without one product more (meta/trpo.py).

Dimension legend: T tasks, P parameters.
"""
import numpy as np
import pytest

from mamlnp import InputError
from mamlnp.check import rlcheck
from mamlnp.meta import rl, rl_trpo, trpo


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def relu_case():
    return rlcheck.draw_rl_case(3, "relu", tasks=3)


@pytest.mark.parametrize("factored", [None, False])
def test_meta_trpo_fns_equal_the_separate_calls(relu_case, factored):
    policy, theta, pre, post, alpha = relu_case
    obs1 = [q[0] for q in post]
    v = np.random.default_rng(4).standard_normal(policy.num_params)
    for est, fvp_est in (("dice", "maml"), ("lvc", "lvc"), ("maml", "maml")):
        seconds = {}
        obj, grad, fvp, sur, kl = rl_trpo.meta_trpo_fns(
            policy, theta, pre, post, alpha, est, fvp_estimator=fvp_est, factored=factored,
            seconds=seconds)
        o0, g0 = rl.rl_meta_gradient(policy, theta, pre, post, alpha, est, factored=factored)
        fvp0 = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, estimator=fvp_est,
                                    factored=factored)
        sur0, kl0 = rl.line_search_fns(policy, theta, pre, post, alpha, factored=factored)
        theta_new = theta + 1e-2 * g0
        print(f"{est}/{fvp_est} factored={factored}: meta-gradient rel err {_rel(grad, g0):.1e}")
        assert obj == o0 and _rel(grad, g0) < 1e-12     # the HVP through the factors: rounding
        assert np.array_equal(fvp(v), fvp0(v)) and np.array_equal(fvp(v), fvp0(v))
        assert sur(theta_new) == sur0(theta_new) and kl(theta_new) == kl0(theta_new)
        assert sur(theta) == sur0(theta) and kl(theta) == kl0(theta) == 0.0
        assert sorted(seconds) == ["fvp_setup", "meta_gradient"]
        assert all(s >= 0.0 for s in seconds.values())
    two = rl_trpo.meta_trpo_fns(policy, theta, pre, post, alpha, threads=2, factored=factored)
    one = rl_trpo.meta_trpo_fns(policy, theta, pre, post, alpha, threads=1, factored=factored)
    assert one[0] == two[0] and np.array_equal(one[1], two[1])
    assert np.array_equal(one[2](v), two[2](v))
    with pytest.raises(InputError, match="fvp_estimator"):
        rl_trpo.meta_trpo_fns(policy, theta, pre, post, alpha, fvp_estimator="x")


@pytest.mark.parametrize("threads", [1, 2])
def test_the_sampler_inner_steps_are_reused_to_the_same_bits(relu_case, threads):
    policy, theta, pre, post, alpha = relu_case
    inner = rl_trpo.inner_steps(policy, theta, pre, alpha, threads)
    for t, task in zip(inner.thetas, pre):
        assert np.array_equal(t, rl.inner_step(policy, theta, task, alpha))
    v = np.random.default_rng(5).standard_normal(policy.num_params)
    fresh = rl_trpo.meta_trpo_fns(policy, theta, pre, post, alpha, "lvc", threads=threads)
    kept = rl_trpo.meta_trpo_fns(policy, theta, pre, post, alpha, "lvc", threads=threads,
                                 inner=inner)
    theta_new = theta + 1e-2 * fresh[1]
    assert fresh[0] == kept[0] and np.array_equal(fresh[1], kept[1])
    assert np.array_equal(fresh[2](v), kept[2](v))
    assert fresh[3](theta_new) == kept[3](theta_new) and fresh[4](theta_new) == kept[4](theta_new)


def test_inner_steps_of_another_theta_are_refused(relu_case):
    policy, theta, pre, post, alpha = relu_case
    inner = rl_trpo.inner_steps(policy, theta, pre, alpha)
    for bad, kw in ((dict(theta=theta + 1e-3), {}), (dict(alpha=alpha * 2), {}),
                    (dict(pre=pre[::-1], post=post[::-1]), {}), ({}, dict(factored=False)),
                    ({}, dict(inner=inner.thetas))):
        args = {**dict(theta=theta, pre=pre, post=post, alpha=alpha), **bad}
        with pytest.raises(InputError, match="inner"):
            rl_trpo.meta_trpo_fns(policy, args["theta"], args["pre"], args["post"],
                                  args["alpha"], **{"inner": inner, **kw})


def test_the_surrogate_at_theta_reuses_the_old_points_with_the_same_bits(relu_case):
    policy, theta, pre, post, alpha = relu_case
    sur, kl = rl.line_search_fns(policy, theta, pre, post, alpha)
    reused = sur(theta)                                       # the old points, no inner step
    assert reused == float(np.mean([np.mean(q[2]) for q in post]))     # exp(0) = 1
    sur(theta + 1e-3)                                         # another θ: the memo moves on
    assert sur(theta) == reused and kl(theta) == 0.0          # recomputed: the same bits


def test_cg_returns_f_x_from_its_own_products(relu_case):
    policy, theta, pre, post, alpha = relu_case
    g = rl.rl_meta_gradient(policy, theta, pre, post, alpha, "lvc")[1]
    fvp = rl.meta_fvp_operator(policy, theta, pre, [q[0] for q in post], alpha)
    calls = []
    counted = lambda v: calls.append(1) or fvp(v)                       # noqa: E731
    x, Fx = trpo.conjugate_gradient(counted, g, 10, with_product=True)
    assert len(calls) == 10 and np.array_equal(x, trpo.conjugate_gradient(fvp, g, 10))
    e = _rel(Fx, fvp(x))
    print(f"CG's F x against a product F x: rel err {e:.1e}, xᵀFx rel err "
          f"{abs(x @ Fx - x @ fvp(x)) / (x @ fvp(x)):.1e}")
    assert e < 1e-10 and abs(x @ Fx - x @ fvp(x)) < 1e-12 * (x @ fvp(x))
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    F = B @ B.T + 0.1 * np.eye(6)
    x, Fx = trpo.conjugate_gradient(lambda v: F @ v, np.ones(6), 3, with_product=True)
    assert _rel(Fx, F @ x) < 1e-13                            # not converged: still F x
