# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · MAML for reinforcement learning: 2D navigation and exact meta-policy-gradients
#
# Finn, Abbeel & Levine (2017), sec. 5.3: a point in the plane must reach a goal it cannot
# see. Each task is a goal; the policy learns it from its own rewards, with one
# policy-gradient step. MAML meta-trains the starting point θ so that one step from it
# already goes to the goal.
#
# This notebook covers
# 1. the task (the environment of cbfinn/maml_rl, stepped by hand) and the policy gradient;
# 2. why the meta-gradient needs the **pre-update sampling term**, which the original
#    MAML-RL estimator drops;
# 3. the estimators `maml`, `lvc` and `dice` measured against an exact meta-gradient (bias
#    and variance) on a bandit whose Hessian is known in closed form;
# 4. a trained policy adapting to new goals, drawn.
#
# It only calls the library: `mamlnp/tasks/navigation.py` (environment, sampler, baseline,
# advantages), `mamlnp.GaussianPolicy` (`mamlnp/nn/policy.py`), `mamlnp/meta/rl.py` (inner
# step, estimators, exact Fisher-vector products), `mamlnp/meta/rl_bandit.py`,
# `mamlnp/run/navigation.py` (the training of `python -m mamlnp train navigation`) and
# `mamlnp/run/navigation_eval.py` (the evaluation of `python -m mamlnp evaluate`). The
# derivation is [docs/derivations/policy-gradient.md](../docs/derivations/policy-gradient.md).
#
# **Where the trained policy comes from.** A run made by the command line is loaded from
# `runs/` when it exists:
#
# ```bash
# python -m mamlnp train navigation          # runs/navigation-maml: the protocol, 100 iterations
# python -m mamlnp evaluate runs/navigation-maml
# ```
#
# Otherwise the notebook trains a short run itself (a small policy, a few dozen iterations:
# enough to see adaptation begin, not the paper's numbers). The test suite's fast mode
# (`MAMLNP_FAST=1`) ignores `runs/` and trains a tiny policy for a few iterations, to check
# that the notebook runs: its returns mean nothing.
#
# **Dimension legend.** T tasks (goals), N trajectories per task, H = 100 steps, M valid
# steps of a task, D = 2 observation entries, A = 2 action entries, P parameters.

# %%
import os
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np

import mamlnp
from mamlnp.meta import rl as RL
from mamlnp.meta import rl_bandit as RB
from mamlnp.run import navigation as NAVRUN
from mamlnp.run import navigation_eval as NE
from mamlnp.run import navigation_plots as NP
from mamlnp.run.process import single_blas_thread
from mamlnp.tasks import navigation as nav

single_blas_thread()                                 # one OpenBLAS thread, as the commands
FAST = os.environ.get("MAMLNP_FAST") == "1"         # set by the test suite
REPO = pathlib.Path(mamlnp.__file__).resolve().parents[1]
RUN = REPO / "runs" / "navigation-maml"
T0 = time.perf_counter()
print(f"fast mode: {FAST}; a command-line run is looked for in <repository>/runs/{RUN.name}/")

# %% [markdown]
# ## 1 · The task and the policy gradient
#
# The environment is `point_env_randgoal` behind rllab's `normalize` (cbfinn/maml_rl): start
# at (0, 0); the action a is scaled to 0.1·a and clipped to [−0.1, 0.1]; the reward is
# −‖s − g‖ *after* the step; the episode ends within 0.01 of the goal or after 100 steps.
# One step, by hand:

# %%
s, g = np.array([[0.0, 0.0]]), np.array([[0.3, 0.1]])
s1, r, done = nav.env_step(s, np.array([[0.5, -2.0]]), g)
print(f"s′ = {s1[0]} (0.1·0.5 = 0.05; 0.1·(−2) clipped to −0.1), r = {r[0]:.4f} "
      f"= −‖(0.05, −0.1) − (0.3, 0.1)‖ = {-np.hypot(0.25, 0.2):.4f}, done = {done[0]}")

# %% [markdown]
# The policy is Gaussian: a ~ N(μ_φ(s), diag(σ²)), μ a 2-100-100-2 ReLU MLP, log σ a
# parameter (it adapts too). The sampler steps all T·N episodes together; per task the
# advantages are the discounted return (γ = 0.99) minus a linear baseline fitted on that
# batch, standardised. A randomly initialised policy wanders:

# %%
policy = mamlnp.GaussianPolicy((2, 100, 100, 2), "relu")
theta0 = policy.init(0)
goals = np.array([[0.3, 0.1], [-0.4, 0.35]])
ro = nav.rollout(policy, theta0, goals, 20, np.random.default_rng(0))
print(f"rollouts: obs {ro.obs.shape}, mask {ro.mask.shape}; average return per goal "
      f"{ro.returns.mean(axis=1).round(1)}")
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for k, ax in enumerate(axes):
    for n in range(5):
        xy = ro.positions(k, n)
        ax.plot(xy[:, 0], xy[:, 1], lw=0.8)
    ax.plot(*goals[k], "r*", ms=12)
    ax.set(xlim=(-0.7, 0.7), ylim=(-0.7, 0.7), aspect="equal", title=f"random θ, goal {goals[k]}")
plt.tight_layout()
plt.show()

# %% [markdown]
# The inner step is one vanilla policy-gradient step on the task's samples,
#
#     θ′ = θ + α ∇_θ (1/M) Σ_m A_m log π_θ(a_m | s_m),        α = 0.5
#
# (the code behind the paper's figure uses 0.5; its text says 0.1). The gradient is the
# policy's weighted VJP; here it is checked against centred finite differences of the
# surrogate, live:

# %%
samples = nav.to_samples(ro)
obs, act, adv, _ = samples[0]
pt = policy.point(theta0, obs, act)
grad = pt.vjp(adv / adv.size)                        # Σ_m c_m ∇ log π_m, c = A/M  (P,)
surrogate = lambda th: float(np.mean(adv * policy.log_prob(th, obs, act)))   # noqa: E731
rng = np.random.default_rng(1)
idx = rng.choice(policy.num_params, 12, replace=False)
fd = []
for i in idx:
    e = np.zeros(policy.num_params)
    e[i] = 1e-5
    fd.append((surrogate(theta0 + e) - surrogate(theta0 - e)) / 2e-5)
rel = np.linalg.norm(grad[idx] - fd) / np.linalg.norm(fd)
print(f"policy gradient vs finite differences on 12 coordinates: relative error {rel:.1e}")
theta1 = RL.inner_step(policy, theta0, samples[0], 0.5)
ro1 = nav.rollout(policy, theta1, goals[:1], 20, np.random.default_rng(2))
print(f"goal {goals[0]}: average return {ro.returns[0].mean():.1f} before, "
      f"{ro1.returns[0].mean():.1f} after one step from a random θ")

# %% [markdown]
# ## 2 · Why the meta-gradient needs the pre-update sampling term
#
# MAML maximises J(θ) = E_{τ′ ~ π_θ′}[R(τ′)] with θ′ = θ + α ∇̂J(θ), where ∇̂J is *estimated
# from samples drawn with π_θ*. θ enters twice: through θ′, and through the distribution of
# the pre-update samples that decide θ′. The exact meta-gradient is
#
#     ∇_θ J = (I + α ∇²J(θ)) ∇J(θ′),
#
# and ∇²J, the Hessian of an *expected* return, has two parts (Rothfuss et al. 2019, sec. 4):
#
#     ∇²J = E[ Σ A ∇² log π ]  +  E[ A ∇log π ∇log πᵀ ]  (+ cross-time terms)
#
# The original MAML-RL code differentiates the inner surrogate Σ A log π with the samples
# held fixed, so its Ĥ has only the first part: it drops the term that comes from the
# samples' own dependence on θ. `lvc` (ProMP) adds Σ c s sᵀ per step; `dice` (Foerster et
# al. 2018) also adds the cross-time products within an episode, which makes it unbiased.
# All three are Hessian-vector products of the same policy (`PolicyPoint.hvp`), one R-pass.
#
# ## 3 · The estimators' bias and variance, measured
#
# A one-step Gaussian bandit (`mamlnp/meta/rl_bandit.py`) has J, ∇J and ∇²J in closed form.
# First the curvature alone: the Monte Carlo mean of each Ĥ v against ∇²J v.

# %%
bandit = RB.GaussianBandit()
th_b, alpha_b = bandit.default_theta(), 0.1
v = bandit.gradient(th_b + alpha_b * bandit.gradient(th_b))
study, exact = RB.curvature_study(bandit, th_b, v, samples=20_000 if FAST else 200_000, seed=0)
print(f"{'estimator':<10}{'rel. bias of Ĥv':>18}{'MC noise':>10}")
for e, b, se in RB.bias_rows(study, exact):
    print(f"{e:<10}{b:>18.4f}{se:>10.4f}")

# %% [markdown]
# `maml`'s curvature is off by far more than its noise: it misses E[A s sᵀ]. `lvc` and
# `dice` (the same thing on one-step episodes) agree with the exact Hessian within noise.
# Now the whole meta-gradient, M pre- and M post-update samples per repetition; the bias is
# ‖mean − exact‖ / ‖exact‖ and the spread is the per-repetition standard deviation (the
# variance a training step sees):

# %%
reps = 100 if FAST else 500
rows = []
for m in (20, 200) if FAST else (20, 200, 2000):
    study, exact = RB.meta_gradient_study(bandit, th_b, alpha_b, m=m, reps=reps, seed=0)
    for (e, b, se), (mean, sem) in zip(RB.bias_rows(study, exact), study.values()):
        spread = np.linalg.norm(sem) * np.sqrt(reps) / np.linalg.norm(exact)
        rows.append((m, e, b, se, spread))
        print(f"M = {m:<5} {e:<5} bias {b:.4f} (MC noise {se:.4f}), spread per draw {spread:.3f}")
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for e, color in zip(RL.ESTIMATORS, ("tab:red", "tab:blue", "tab:green")):
    ms = [r[0] for r in rows if r[1] == e]
    ax.errorbar(ms, [r[2] for r in rows if r[1] == e], yerr=[1.96 * r[3] for r in rows if r[1] == e],
                fmt="o-", color=color, label=e, capsize=3)
ax.set(xscale="log", xlabel="samples per task M", ylabel="relative bias of the meta-gradient",
       title="bandit: bias against the exact meta-gradient")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# `maml` stays biased whatever M; `lvc` and `dice` approach the exact meta-gradient as M
# grows (what remains, O(α/M), comes from θ′ and Ĥ sharing the pre-update samples). On
# navigation, episodes last 100 steps and `dice`'s cross-time sums make its variance grow
# with the horizon. The default of `python -m mamlnp train navigation` is nevertheless the
# paper's `maml`: on navigation, over five training seeds, its policies adapted better than
# `lvc`'s after 3 test steps on every seed and after 2 on four (docs/results.md has the
# seeds); `--estimator lvc|dice` trains with the others. A less biased meta-gradient is not always a better training signal.
#
# ## 4 · A trained policy adapting
#
# Meta-training alternates, per iteration: 20 goals; for each, whole episodes with θ until
# the goal's batch holds 2,000 steps (rllab's `batch_size`); the inner step per goal; a batch
# the same way with each θ′_i; the meta-gradient; a TRPO step whose Fisher-vector product is
# exact (Uᵀ F U, U = ∂θ′/∂θ). Below: the command-line run if there is one, else a short run
# trained here.

# %%
if not FAST and (RUN / "checkpoint.npz").exists():
    policy, theta, cfg = mamlnp.load_checkpoint(str(RUN))
    print(f"loaded runs/{RUN.name}: {cfg['iteration']} of {cfg['iterations']} iterations")
else:
    size = dict(meta_batch=2, trajectories=4, hidden=[16], iterations=3) if FAST else dict(
        meta_batch=10, trajectories=10, hidden=[32, 32], iterations=40)
    res = NAVRUN.train_navigation(progress=False, **size)
    policy, theta, cfg = res.policy, res.theta, res.config
    h = res.history
    print(f"trained here: {cfg['iteration']} iterations of {size}; average return on the "
          f"training goals before/after the inner step, first → last iteration: "
          f"{h[0, 1]:.1f}/{h[0, 2]:.1f} → {h[-1, 1]:.1f}/{h[-1, 2]:.1f}")

# %% [markdown]
# The test of the paper, made smaller to keep this notebook quick: held-out goals (20 here,
# 40 in the protocol), plain policy-gradient steps of 0.5 then 0.25, a fresh batch after
# each step (2,000 steps of whole episodes here, 4,000 in the protocol), average return
# after 0-3 steps (mean ± 95 % CI over goals), beside a randomly initialised policy of the
# same shape. `python -m mamlnp reproduce navigation` runs the full test; docs/results.md
# has its table: with the paper's protocol and estimator, our MAML policy is within our 95 %
# intervals of the paper's returns after 1, 2 and 3 steps or above them for three training
# seeds of five; one of the others falls short after 2-3 steps (the later steps of 0.25
# carry the policy past the far goals), and one fails in training (its pre-update policy
# drifts away from the start, whichever estimator).

# %%
n_goals, n_traj = (6, 5) if FAST else (20, 20)
goals_test = NE.held_out_goals(n_goals)
entries = {"maml": (policy, theta),
           "random": (mamlnp.GaussianPolicy(policy.sizes, NE.RANDOM_ACTIVATION), None)}
_, results = NE.evaluate_policies(entries, goals=goals_test, trajectories=n_traj, keep=True)
print(NE.format_table(results))
NP.return_curves(results, paper=not FAST)
plt.show()

# %% [markdown]
# And the paths, as in the paper's Fig. 4 (bottom): one trajectory per goal before the step
# and after 1, 2, 3 steps.

# %%
NP.trajectory_panels({r: v["rollouts"] for r, v in results.items()}, goal_indices=(0, 1))
plt.show()
print(f"notebook time: {time.perf_counter() - T0:.0f} s")

# %% [markdown]
# The full protocol (`python -m mamlnp reproduce navigation`) trains MAML (with the paper's
# estimator and with `lvc`), the pretrained policy and the oracle for 100 iterations each,
# and writes the table of the paper's Fig. 4 with our rows beside it.
