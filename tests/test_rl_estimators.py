"""The meta-policy-gradient estimators (mamlnp/meta/rl.py): each against finite differences
of its own surrogate on fixed samples, the meta Fisher-vector product against finite
differences of the KL's gradient, and the closed-form bandit's Monte Carlo bias.

Dimension legend: T tasks, M samples of a task, P parameters.
"""
import numpy as np
import pytest

import mamlnp
from mamlnp import InputError
from mamlnp.check import rlcheck
from mamlnp.meta import rl, rl_bandit


@pytest.fixture(scope="module")
def case():
    return rlcheck.draw_rl_case(2, "tanh")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_estimators_match_fd_of_their_surrogates(activation):
    policy, theta, pre, post, alpha = rlcheck.draw_rl_case(3, activation)
    rows = rlcheck.estimator_rows(policy, theta, pre, post, alpha, activation)
    for r in rows:
        print(f"{r.label:<36} rel err {r.rel_err:.2e}  ({r.expect})")
    assert all(r.passed for r in rows)
    assert max(r.rel_err for r in rows if r.expect == "agree") < 1e-8


def test_objective_inner_step_and_the_estimators_relations(case, fd):
    policy, theta, pre, post, alpha = case
    theta1 = rl.inner_step(policy, theta, pre[0], alpha)
    obs, act, adv, _ = pre[0]
    g_in = fd.num_grad(lambda t: adv @ policy.log_prob(t, obs, act) / len(adv), theta)
    assert fd.rel_error(theta1 - theta, alpha * g_in) < 1e-8
    obj, _ = mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, "maml")
    thetas1 = [rl.inner_step(policy, theta, p, alpha) for p in pre]
    expected = np.mean([q[2] @ policy.log_prob(t1, q[0], q[1]) / len(q[2])
                        for t1, q in zip(thetas1, post)])
    assert obj == pytest.approx(expected, rel=1e-13)
    grads = {e: mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, e)[1]
             for e in rl.ESTIMATORS}
    no_episodes = [p[:3] for p in pre]                 # without episodes dice = lvc
    g_dice3 = mamlnp.rl_meta_gradient(policy, theta, no_episodes, post, alpha, "dice")[1]
    assert np.array_equal(g_dice3, grads["lvc"])
    assert fd.rel_error(grads["dice"], grads["lvc"]) > 1e-3
    assert fd.rel_error(grads["maml"], grads["lvc"]) > 1e-3
    # one-step episodes: dice's cross terms vanish, so dice = lvc again
    single = [p[:3] + (np.arange(len(p[2])),) for p in pre]
    assert np.allclose(mamlnp.rl_meta_gradient(policy, theta, single, post, alpha, "dice")[1],
                       grads["lvc"], rtol=0, atol=1e-15)


def test_threads_give_the_same_bits(case):
    policy, theta, pre, post, alpha = case
    pre, post = pre * 3, post * 3                       # 6 tasks
    v = np.random.default_rng(3).standard_normal(policy.num_params)
    obs1 = [q[0] for q in post]
    one = (mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, "dice", threads=1),
           rl.meta_fvp(policy, theta, pre, obs1, alpha, v, threads=1))
    for threads in (2, 3):
        other = (mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, "dice", threads=threads),
                 rl.meta_fvp(policy, theta, pre, obs1, alpha, v, threads=threads))
        assert one[0][0] == other[0][0] and np.array_equal(one[0][1], other[0][1])
        assert np.array_equal(one[1], other[1])
    s1, k1 = rl.line_search_fns(policy, theta, pre, post, alpha, threads=1)
    s2, k2 = rl.line_search_fns(policy, theta, pre, post, alpha, threads=2)
    assert (s1(theta + 0.01 * v), k1(theta + 0.01 * v)) == (s2(theta + 0.01 * v), k2(theta + 0.01 * v))
    with pytest.raises(InputError, match="threads"):
        mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, threads=0)


def test_per_task_keeps_task_order_and_raises_a_task_error():
    import threading
    import time
    names = {}

    def fn(i):
        names[i] = threading.current_thread().name
        time.sleep(0.002)
        return i * i
    for threads in (2, 3):
        names.clear()
        assert rl._per_task(fn, range(7), threads) == [i * i for i in range(7)]
        assert threading.current_thread().name in names.values()      # the caller works too
        assert rl._per_task(fn, [5], threads) == [25]

    def bad(i):
        if i == 3:
            raise InputError("task 3")
        return i
    with pytest.raises(InputError, match="task 3"):
        rl._per_task(bad, range(12), 2)
    assert rl._per_task(fn, range(4), 2) == [0, 1, 4, 9]              # the pool still serves


def test_segment_sums():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    starts = np.array([0, 2, 3, 6])                    # episodes [0, 1], [2], [3, 4, 5]
    earlier, later = rl._segment_sums(x, starts)
    assert np.array_equal(earlier, [0, 1, 0, 0, 4, 9])
    assert np.array_equal(later, [2, 0, 0, 11, 6, 0])


def test_meta_fvp_matches_fd_and_is_symmetric_psd(case):
    policy, theta, pre, post, alpha = case
    rows = rlcheck.fvp_rows(policy, theta, pre, post, alpha, "tanh")
    for r in rows:
        print(f"{r.label:<36} rel err {r.rel_err:.2e}")
    assert all(r.passed for r in rows)
    obs1 = [q[0] for q in post]
    fvp = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha)
    F = np.array([fvp(e) for e in np.eye(policy.num_params)])           # (P, P)
    asym = np.abs(F - F.T).max() / np.abs(F).max()
    eig = np.linalg.eigvalsh((F + F.T) / 2)
    print(f"meta Fisher: asymmetry {asym:.1e}, eigenvalues {eig.min():.2e} .. {eig.max():.2e}")
    assert asym < 1e-13 and eig.min() > 0.0                           # PSD + damping 1e-5
    for est in ("lvc", "dice"):                    # the estimators' U: symmetric PSD too
        Fe = np.array([rl.meta_fvp(policy, theta, pre, obs1, alpha, e, estimator=est)
                       for e in np.eye(policy.num_params)])
        assert np.abs(Fe - Fe.T).max() < 1e-13 * np.abs(Fe).max()
        assert np.linalg.eigvalsh((Fe + Fe.T) / 2).min() > 0.0
        assert np.abs(Fe - F).max() > 1e-3 * np.abs(F).max()
    v = np.random.default_rng(0).standard_normal(policy.num_params)
    damped = rl.meta_fvp(policy, theta, pre, obs1, alpha, v, damping=0.5)
    assert np.allclose(damped, fvp(v) + (0.5 - rl.DAMPING) * v, rtol=1e-14, atol=1e-14)


def test_line_search_functions(case, fd):
    policy, theta, pre, post, alpha = case
    surrogate, kl = rl.line_search_fns(policy, theta, pre, post, alpha)
    assert surrogate(theta) == pytest.approx(np.mean([q[2].mean() for q in post]), rel=1e-14)
    assert kl(theta) == 0.0
    # the importance-weighted surrogate's gradient at θ is the maml meta-gradient
    g = mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, "maml")[1]
    assert fd.rel_error(fd.num_grad(surrogate, theta), g) < 1e-8
    other = theta + 0.05 * np.random.default_rng(1).standard_normal(policy.num_params)
    thetas_old = [rl.inner_step(policy, theta, p, alpha) for p in pre]
    thetas_new = [rl.inner_step(policy, other, p, alpha) for p in pre]
    expected = rl.mean_kl(policy, thetas_old, thetas_new, [q[0] for q in post])
    assert kl(other) == pytest.approx(expected, rel=1e-14) and expected > 0


def test_bandit_bias_maml_biased_dice_unbiased():
    bandit = rl_bandit.GaussianBandit()
    theta = bandit.default_theta()
    alpha = 0.1
    v = bandit.gradient(theta + alpha * bandit.gradient(theta))
    study, exact = rl_bandit.curvature_study(bandit, theta, v, samples=40_000, batches=20)
    rows = {e: (b, s) for e, b, s in rl_bandit.bias_rows(study, exact)}
    print("curvature:", rows)
    assert rows["maml"][0] > 1.0 and rows["maml"][0] > 20 * rows["maml"][1]
    for e in ("lvc", "dice"):
        assert rows[e][0] < 4 * rows[e][1]
    study, exact = rl_bandit.meta_gradient_study(bandit, theta, alpha, m=200, reps=150)
    rows = {e: (b, s) for e, b, s in rl_bandit.bias_rows(study, exact)}
    print("meta-gradient, M = 200:", rows)
    assert rows["maml"][0] > 0.3 and rows["maml"][0] > 8 * rows["maml"][1]
    assert rows["dice"][0] < 4 * rows["dice"][1] + 0.02


def test_two_step_chain_lvc_biased_dice_unbiased(fd):
    chain = rl_bandit.TwoStepChain()
    theta = chain.default_theta()
    assert fd.rel_error(chain.gradient(theta), fd.num_grad(chain.expected_return, theta)) < 1e-8
    _, _, adv, episodes = chain.samples(theta, 200_000, np.random.default_rng(1))
    se = adv.reshape(-1, 2).std(0) / np.sqrt(len(adv) // 2)
    assert np.all(np.abs(adv.reshape(-1, 2).mean(0)) < 4 * se)       # baselines are E[R_t]
    assert np.array_equal(episodes[:4], [0, 0, 1, 1])
    v = chain.gradient(theta + 0.1 * chain.gradient(theta))
    study, exact = rl_bandit.curvature_study(chain, theta, v, samples=100_000, batches=20)
    rows = {e: (b, s) for e, b, s in rl_bandit.bias_rows(study, exact)}
    print("two-step chain, curvature:", rows)
    assert rows["maml"][0] > 1.0 and rows["maml"][0] > 20 * rows["maml"][1]
    assert rows["lvc"][0] > 0.2 and rows["lvc"][0] > 5 * rows["lvc"][1]
    assert rows["dice"][0] < 4 * rows["dice"][1]


def test_bandit_closed_forms_match_fd(fd):
    bandit = rl_bandit.GaussianBandit()
    theta = bandit.default_theta() + 0.1
    assert fd.rel_error(bandit.gradient(theta), fd.num_grad(bandit.expected_return, theta)) < 1e-8
    H = np.array([fd.num_dir(bandit.gradient, theta, e) for e in np.eye(len(theta))])
    assert fd.rel_error(bandit.hessian(theta), H) < 1e-8
    obs, act, adv = bandit.samples(theta, 200_000, np.random.default_rng(0))
    assert abs(adv.mean()) < 4 * adv.std() / np.sqrt(len(adv))    # E[r] = J(θ)


def test_bad_input(case):
    policy, theta, pre, post, alpha = case
    with pytest.raises(InputError, match="alpha"):
        mamlnp.rl_meta_gradient(policy, theta, pre, post, 0.0)
    with pytest.raises(InputError, match="alpha"):
        rl.inner_step(policy, theta, pre[0], -1.0)
    with pytest.raises(InputError, match="estimator"):
        mamlnp.rl_meta_gradient(policy, theta, pre, post, alpha, "ppo")
    bad_adv = [(pre[0][0], pre[0][1], np.full(len(pre[0][2]), np.nan))] + list(pre[1:])
    with pytest.raises(InputError, match=r"pre\[0\]\[2\] \(advantages\)"):
        mamlnp.rl_meta_gradient(policy, theta, bad_adv, post, alpha)
    bad_obs = [(np.full_like(post[0][0], np.nan),) + tuple(post[0][1:])] + list(post[1:])
    with pytest.raises(InputError, match=r"post\[0\]\[0\] \(observations\)"):
        mamlnp.rl_meta_gradient(policy, theta, pre, bad_obs, alpha)
    with pytest.raises(InputError, match="one entry per task"):
        mamlnp.rl_meta_gradient(policy, theta, pre, post[:1], alpha)
    with pytest.raises(InputError, match="non-empty list"):
        mamlnp.rl_meta_gradient(policy, theta, [], [], alpha)
    o, a, A, labels = pre[0]
    with pytest.raises(InputError, match="contiguous"):
        rl.inner_step(policy, theta, (o, a, A, np.r_[labels[1:], labels[0]]), alpha)
    with pytest.raises(InputError, match="episodes"):
        rl.inner_step(policy, theta, (o, a, A, labels.astype(float)), alpha)
    for damping in (-1.0, 0.0, np.nan):
        with pytest.raises(InputError, match="damping"):
            rl.meta_fvp(policy, theta, pre, [q[0] for q in post], alpha, theta, damping=damping)
    with pytest.raises(InputError, match="estimator"):
        rl.meta_fvp(policy, theta, pre, [q[0] for q in post], alpha, theta, estimator="x")
    with pytest.raises(InputError, match="v"):
        rl.meta_fvp(policy, theta, pre, [q[0] for q in post], alpha, theta[:-1])
