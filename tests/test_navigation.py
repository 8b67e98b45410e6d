"""The 2D navigation environment, its sampler, baseline and advantages (mamlnp/tasks/navigation.py).

Dimension legend: T tasks, N trajectories, H horizon, D observation dim, A = 2 actions,
M valid steps of a task, F baseline features.

The policy here is a linear Gaussian stand-in (mean = o W + b), so the environment's
semantics are checked by hand without the MLP policy.
"""
import numpy as np
import pytest

from mamlnp.errors import InputError
from mamlnp.tasks import navigation as nav


class LinearGaussian:
    """μ(o) = o W + b, state-independent log σ; θ = [W (D×A) | b (A) | log σ (A)]."""

    def __init__(self, obs_dim=2, act_dim=2):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.num_params = obs_dim * act_dim + 2 * act_dim

    def unflatten(self, theta):
        D, A = self.obs_dim, self.act_dim
        return [(theta[:D * A].reshape(D, A), theta[D * A:D * A + A])], theta[D * A + A:]

    def mean(self, theta, obs):
        (W, b), = self.unflatten(theta)[0]
        return obs @ W + b


def go_to_goal_theta(gain=10.0, log_std=-40.0):
    """Oracle stand-in θ: μ = gain·(g − s) on o = [s, g] (noise e^-40: none in float64)."""
    W = np.array([[-gain, 0], [0, -gain], [gain, 0], [0, gain]], dtype=float)
    return np.concatenate([W.ravel(), np.zeros(2), np.full(2, log_std)])


def test_step_scales_clips_and_rewards_after_the_step():
    s, g = np.array([[0.0, 0.0]]), np.array([[0.3, 0.1]])
    nxt, r, done = nav.env_step(s, np.array([[0.5, -2.0]]), g)
    np.testing.assert_array_equal(nxt, [[0.05, -0.1]])          # 0.1·0.5; 0.1·(−2) clipped
    np.testing.assert_allclose(r, [-np.sqrt(0.25 ** 2 + 0.2 ** 2)], rtol=1e-15)
    assert not done[0]


@pytest.mark.parametrize("action, done", [((0.1, 0.05), True), ((0.1, 0.2), False),
                                          ((-0.1, 0.05), False)])
def test_done_within_0_01_of_the_goal_in_both_coordinates(action, done):
    s, g = np.array([[0.295, 0.1]]), np.array([[0.3, 0.105]])
    nxt, r, d = nav.env_step(s, np.array([action]), g)
    assert bool(d[0]) is done
    assert r[0] == -np.linalg.norm(nxt[0] - g[0])


def test_oracle_rollout_by_hand():
    """A policy walking straight to the goal: 0.1 per step, done on arrival (3 steps)."""
    pol, g = LinearGaussian(4), np.array([[0.3, 0.1]])
    ro = nav.rollout(pol, go_to_goal_theta(), g, 2, np.random.default_rng(0), oracle=True)
    assert ro.lengths.tolist() == [[3, 3]]
    np.testing.assert_allclose(ro.obs[0, 0, :3, :2], [[0, 0], [0.1, 0.1], [0.2, 0.1]], atol=1e-15)
    np.testing.assert_allclose(ro.obs[0, 0, :3, 2:], [[0.3, 0.1]] * 3)
    want = -np.array([np.hypot(0.2, 0.0), 0.1, 0.0])
    np.testing.assert_allclose(ro.rewards[0, 0, :3], want, atol=1e-15)
    assert ro.mask[0, 0].tolist() == [True] * 3 + [False] * 97
    assert not ro.obs[0, 0, 3:].any() and not ro.rewards[0, 0, 3:].any()
    np.testing.assert_allclose(ro.positions(0, 0)[-1], [0.3, 0.1], atol=1e-15)
    np.testing.assert_allclose(ro.returns, want.sum(), atol=1e-15)


def test_rollout_shapes_masks_and_determinism():
    pol, rng = LinearGaussian(), np.random.default_rng(1)
    theta = rng.normal(size=pol.num_params) * 0.3
    goals = nav.sample_goals(rng, 3)
    a = nav.rollout(pol, theta, goals, 4, np.random.default_rng(7))
    b = nav.rollout(pol, theta, goals, 4, np.random.default_rng(7))
    for name in ("obs", "actions", "rewards", "mask", "lengths", "final"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.obs.shape == (3, 4, 100, 2) and a.actions.shape == (3, 4, 100, 2)
    assert a.rewards.shape == a.mask.shape == (3, 4, 100) and a.lengths.shape == (3, 4)
    assert np.array_equal(a.mask.sum(axis=2), a.lengths)
    assert np.all(a.mask[..., :-1] >= a.mask[..., 1:])             # a prefix of each row
    per_task = nav.rollout(pol, np.tile(theta, (3, 1)), goals, 4, np.random.default_rng(7))
    np.testing.assert_allclose(per_task.obs, a.obs, rtol=0, atol=1e-15)


def test_actions_are_mean_plus_sigma_noise_drawn_up_front():
    pol = LinearGaussian()
    theta = np.concatenate([np.zeros(6), np.log([0.5, 2.0])])     # μ = 0, σ = (0.5, 2)
    ro = nav.rollout(pol, theta, np.zeros((2, 2)), 3, np.random.default_rng(3), horizon=5)
    eps = np.random.default_rng(3).standard_normal((5, 2, 3, 2))   # (H, T, N, A)
    np.testing.assert_array_equal(ro.actions, np.transpose(eps, (1, 2, 0, 3)) * [0.5, 2.0])


def test_discounted_returns_against_the_sum():
    r = np.random.default_rng(2).normal(size=(3, 7))
    R = nav.discounted_returns(r, 0.9)
    want = [[sum(0.9 ** k * r[i, t + k] for k in range(7 - t)) for t in range(7)] for i in range(3)]
    np.testing.assert_allclose(R, want, rtol=1e-13)


def test_baseline_features_and_fit_against_lstsq():
    rng = np.random.default_rng(4)
    obs = rng.normal(size=(5, 100, 2)) * 8
    phi = nav.baseline_features(obs)
    assert phi.shape == (5, 100, 8)
    np.testing.assert_array_equal(phi[..., :2], np.clip(obs, -10, 10))
    np.testing.assert_array_equal(phi[0, 37, 4:], [0.37, 0.37 ** 2, 0.37 ** 3, 1.0])
    X, R = phi.reshape(-1, 8), rng.normal(size=500)
    c = nav.fit_baseline(X, R)
    aug = np.vstack([X, np.sqrt(nav.RIDGE) * np.eye(8)])            # ridge as least squares
    want = np.linalg.lstsq(aug, np.concatenate([R, np.zeros(8)]), rcond=None)[0]
    err = np.linalg.norm(c - want) / np.linalg.norm(want)
    print(f"baseline vs lstsq: relative error {err:.2e}")
    assert err < 1e-8


def test_advantages_are_gae_lambda_1_standardised():
    pol, rng = LinearGaussian(), np.random.default_rng(5)
    ro = nav.rollout(pol, go_to_goal_theta(gain=0.5, log_std=-1.0)[[0, 1, 2, 3, 8, 9, 10, 11]],
                     nav.sample_goals(rng, 1), 6, rng, horizon=30)
    obs, rew, m = ro.obs[0], ro.rewards[0], ro.mask[0]
    adv = nav.task_advantages(obs, rew, m)
    phi = nav.baseline_features(obs)
    c = nav.fit_baseline(phi[m], nav.discounted_returns(rew)[m])
    gae = []                                                        # rllab: discount_cumsum(δ)
    for i in range(6):
        L = int(m[i].sum())
        b = np.append(phi[i, :L] @ c, 0.0)
        delta = rew[i, :L] + 0.99 * b[1:] - b[:-1]
        gae.append(nav.discounted_returns(delta[None], 0.99)[0])
    gae = np.concatenate(gae)
    np.testing.assert_allclose(adv, (gae - gae.mean()) / (gae.std() + 1e-8), rtol=1e-9, atol=1e-12)
    assert abs(adv.mean()) < 1e-12 and abs(adv.std() - 1) < 1e-6


def test_samples_flatten_valid_steps_trajectory_major():
    pol, rng = LinearGaussian(4), np.random.default_rng(6)
    goals = np.array([[0.3, 0.1], [-0.2, 0.4]])
    ro = nav.rollout(pol, go_to_goal_theta(log_std=-3.0), goals, 3, rng, oracle=True)
    out = nav.to_samples(ro)
    assert len(out) == 2
    for k, (o, a, adv, ep) in enumerate(out):
        M = int(ro.lengths[k].sum())
        assert o.shape == (M, 4) and a.shape == (M, 2) and adv.shape == (M,)
        assert ep.tolist() == sum(([n] * int(L) for n, L in enumerate(ro.lengths[k])), [])
        L0 = int(ro.lengths[k, 0])
        np.testing.assert_array_equal(o[:L0], ro.obs[k, 0, :L0])
        np.testing.assert_array_equal(a[L0:L0 + 2], ro.actions[k, 1, :2])


def test_bad_input_is_named():
    pol = LinearGaussian()
    theta = np.zeros(pol.num_params)
    with pytest.raises(InputError, match=r"goals\[1\]"):
        nav.rollout(pol, theta, [[0.1, 0.1], [0.6, 0.0]], 2, np.random.default_rng(0))
    with pytest.raises(InputError, match="thetas"):
        nav.rollout(pol, np.full(pol.num_params, np.nan), [[0.1, 0.1]], 2, np.random.default_rng(0))
    big = np.concatenate([np.full(6, 1.7e308), np.zeros(2)])      # inf at step 1
    with pytest.raises(InputError, match="NaN or infinite at step"), np.errstate(over="ignore"):
        nav.rollout(pol, big, [[0.3, 0.3]], 2, np.random.default_rng(0))
    with pytest.raises(InputError, match="dim 4"):
        nav.rollout(pol, theta, [[0.1, 0.1]], 2, np.random.default_rng(0), oracle=True)
    ro = nav.rollout(pol, theta, [[0.1, 0.1]], 2, np.random.default_rng(0), horizon=3)
    ro.rewards[0, 1, 1] = np.nan
    with pytest.raises(InputError, match="rewards"):
        nav.to_samples(ro)


# ---- the "steps" sampler: whole episodes until a task holds N·H steps (rllab's batch_size) --


def test_steps_sampler_equals_episodes_when_no_episode_ends_early():
    """Episodes that all run H steps fill the budget in one round: the same draws, the same bits."""
    pol, goals = LinearGaussian(), np.array([[0.3, 0.1], [-0.2, 0.4]])
    theta = np.zeros(pol.num_params)                               # μ = 0, σ = 1: never done
    a = nav.rollout(pol, theta, goals, 3, np.random.default_rng(1), horizon=7)
    b = nav.rollout_steps(pol, theta, goals, 3, np.random.default_rng(1), horizon=7)
    assert a.lengths.min() == 7
    for f in ("obs", "actions", "rewards", "mask", "lengths", "final"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(b.average_return(), a.returns.mean(axis=1))


def test_steps_sampler_keeps_episodes_until_the_budget_by_hand():
    """The oracle walks to (0.3, 0.1) in 3 steps: a budget of 2·5 = 10 steps takes 4 episodes
    (3 + 3 + 3 + 3 ≥ 10), drawn in two rounds of 2; the second goal (0.1, 0.1) takes 1 step
    per episode: 10 episodes. The first task is padded with 6 empty episodes."""
    pol = LinearGaussian(4)
    goals = np.array([[0.3, 0.1], [0.1, 0.1]])
    ro = nav.rollout_steps(pol, go_to_goal_theta(), goals, 2, np.random.default_rng(0),
                           horizon=5, oracle=True)
    assert ro.lengths.tolist() == [[3] * 4 + [0] * 6, [1] * 10]
    assert ro.episodes.tolist() == [4, 10]
    assert not ro.mask[0, 4:].any() and not ro.obs[0, 4:].any()
    want = -np.array([0.2 + 0.1 + 0.0, 0.0])                       # Σ_t −‖s_{t+1} − g‖
    np.testing.assert_allclose(ro.average_return(), want, atol=1e-15)
    smp = nav.to_samples(ro)
    assert [s[0].shape[0] for s in smp] == [12, 10]                 # empty episodes add no step
    assert smp[0][3].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_steps_sampler_per_task_thetas_and_its_limits(monkeypatch):
    pol = LinearGaussian(4)
    goals = np.array([[0.3, 0.1], [-0.2, 0.4]])
    thetas = np.stack([go_to_goal_theta(), np.zeros(pol.num_params)])   # walks / wanders
    ro = nav.sample(pol, thetas, goals, 2, np.random.default_rng(2), horizon=6, oracle=True)
    assert ro.lengths.sum(axis=1)[0] >= 12 and ro.lengths[1].tolist()[:2] == [6, 6]
    assert ro.episodes[0] == 4 and ro.episodes[1] == 2
    with pytest.raises(InputError, match="sampler"):
        nav.sample(pol, thetas, goals, 2, np.random.default_rng(2), sampler="paths")
    import mamlnp.validation as V
    monkeypatch.setattr(V, "memory_limit", lambda: 2_000)    # bytes: 2 episodes fit, 11 do not
    with pytest.raises(InputError, match=r"num_traj: .*fit in memory.*11 episodes of 5 steps"):
        nav.rollout_steps(pol, go_to_goal_theta(), goals[:1], 2, np.random.default_rng(0),
                          horizon=5, oracle=True)
    nav.rollout(pol, go_to_goal_theta(), goals[:1], 2, np.random.default_rng(0), horizon=5,
                oracle=True)                                # 2 episodes: fits
    with pytest.raises(InputError, match=r"num_traj: .*fit in memory"):
        nav.rollout(pol, go_to_goal_theta(), goals[:1], 100, np.random.default_rng(0),
                    horizon=5, oracle=True)
