"""TRPO's outer step (mamlnp/meta/trpo.py): conjugate gradient, the KL-constrained
backtracking line search, the Adam alternative, and one meta-TRPO step on a real policy.

Dimension legend: P parameters.
"""
import warnings

import numpy as np
import pytest

from mamlnp import InputError
from mamlnp.check import rlcheck
from mamlnp.meta import rl, trpo
from mamlnp.meta.optim import Adam


def _spd(p=12, seed=0, cond=50.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return Q @ np.diag(np.geomspace(1.0, cond, p)) @ Q.T, rng.standard_normal(p)


def test_cg_solves_spd_systems():
    F, g = _spd()
    x = trpo.conjugate_gradient(lambda v: F @ v, g, iters=len(g), residual_tol=0.0)
    err = np.linalg.norm(x - np.linalg.solve(F, g)) / np.linalg.norm(np.linalg.solve(F, g))
    print("CG relative error after P iterations", err)
    assert err < 1e-8
    x10 = trpo.conjugate_gradient(lambda v: F @ v, g, iters=3)
    assert np.linalg.norm(F @ x10 - g) < np.linalg.norm(g)        # progress after 3 steps
    assert np.array_equal(trpo.conjugate_gradient(lambda v: F @ v, 0 * g), 0 * g)


def test_cg_refuses_an_indefinite_operator():
    with pytest.raises(InputError, match="positive definite"):
        trpo.conjugate_gradient(lambda v: -v, np.ones(3))


def _quadratic_problem(F, g):
    """surrogate(θ) = gᵀθ − ½‖θ‖² ... and kl(θ) = ½ θᵀFθ, both around θ = 0."""
    surrogate = lambda t: g @ t - 0.05 * t @ t                   # noqa: E731
    kl = lambda t: 0.5 * t @ F @ t                                # noqa: E731
    return surrogate, kl


def test_trpo_step_respects_the_kl_and_improves():
    F, g = _spd()
    surrogate, kl = _quadratic_problem(F, g)
    theta0 = np.zeros(len(g))
    theta, info = trpo.trpo_step(theta0, g, lambda v: F @ v, surrogate, kl, max_kl=0.01,
                                 cg_iters=len(g))
    print(info)
    assert info["accepted"] and kl(theta) <= 0.01 and surrogate(theta) > surrogate(theta0)
    direction = np.linalg.solve(F, g)                             # the natural gradient
    cos = theta @ direction / np.linalg.norm(theta) / np.linalg.norm(direction)
    assert cos > 1 - 1e-8
    assert kl(theta) == pytest.approx(0.01 * 0.8 ** (2 * (info["backtracks"] - 1)), rel=1e-6)


def test_line_search_keeps_theta_when_no_step_works():
    F, g = _spd()
    theta0 = np.arange(len(g), dtype=float)
    worse = lambda t: -np.sum((t - theta0) ** 2)                   # noqa: E731  never improves
    kl = lambda t: 0.5 * (t - theta0) @ F @ (t - theta0)           # noqa: E731
    with pytest.warns(RuntimeWarning, match="theta kept"):
        theta, info = trpo.trpo_step(theta0, g, lambda v: F @ v, worse, kl)
    assert np.array_equal(theta, theta0) and not info["accepted"]
    assert info["backtracks"] == 15 and "no step of 15 backtracks" in info["reason"]
    nan_kl = lambda t: float("nan")                                # noqa: E731
    with pytest.warns(RuntimeWarning, match="theta kept"):
        theta, info = trpo.trpo_step(theta0, g, lambda v: F @ v, lambda t: g @ t, nan_kl)
    assert np.array_equal(theta, theta0) and not info["accepted"]


def test_trpo_refuses_bad_input():
    F, g = _spd(4)
    fvp = lambda v: F @ v                                          # noqa: E731
    s, k = _quadratic_problem(F, g)
    with pytest.raises(InputError, match="theta"):
        trpo.trpo_step(np.full(4, np.nan), g, fvp, s, k)
    with pytest.raises(InputError, match="g"):
        trpo.trpo_step(np.zeros(4), np.r_[g[:3], np.nan], fvp, s, k)
    with pytest.raises(InputError, match="max_kl"):
        trpo.trpo_step(np.zeros(4), g, fvp, s, k, max_kl=0.0)
    with pytest.raises(InputError, match="backtrack_ratio"):
        trpo.trpo_step(np.zeros(4), g, fvp, s, k, backtrack_ratio=1.5)
    with pytest.raises(InputError, match="surrogate_fn"):
        trpo.trpo_step(np.zeros(4), g, fvp, lambda t: float("nan"), k)


def test_ascent_step_with_adam_climbs():
    F, g = _spd(5)
    surrogate, _ = _quadratic_problem(F, g)
    theta, opt = np.zeros(5), Adam(lr=0.01)
    for _ in range(20):
        theta = trpo.ascent_step(opt, theta, g - 0.1 * theta)       # ∇ surrogate
    assert surrogate(theta) > surrogate(np.zeros(5))


def test_one_meta_trpo_step_on_a_policy():
    policy, theta, pre, post, alpha = rlcheck.draw_rl_case(4, "tanh", m=30, episode=10)
    _, g = rl.rl_meta_gradient(policy, theta, pre, post, alpha, "dice")
    fvp = rl.meta_fvp_operator(policy, theta, pre, [q[0] for q in post], alpha, damping=1e-5)
    surrogate, kl = rl.line_search_fns(policy, theta, pre, post, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # the step must be accepted
        new, info = trpo.trpo_step(theta, g, fvp, surrogate, kl, max_kl=0.01)
    print(info)
    assert info["accepted"] and 0 < kl(new) <= 0.01 and surrogate(new) > surrogate(theta)
