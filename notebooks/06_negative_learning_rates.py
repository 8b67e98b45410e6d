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
# # 06 · MAML in closed form: why the best training step can be negative
#
# Bernacchia ("Meta-learning with negative learning rates", ICLR 2021,
# [arXiv:2102.00940](https://arxiv.org/abs/2102.00940)) computes MAML's expected test
# loss on *mixed linear regression* as a function of the inner step $\alpha_t$ used in
# meta-training and the step $\alpha_r$ used at test. With more parameters than
# validation points, the best $\alpha_t$ is **negative**, while the best $\alpha_r$ stays
# positive.
#
# This notebook draws the closed form derived in
# [docs/derivations/negative-learning-rates.md](../docs/derivations/negative-learning-rates.md)
# (equations (1)–(5) there) and lands MAML on it: each measured point is MAML trained
# with the project's own exact meta-gradient (`mamlnp.meta_gradient`) on a few sampled
# tasks, then tested on new ones, repeated over many independent runs. The settings are
# those of the paper's Fig. 2: $p = 60$ parameters, $m = 3$ training tasks of $n_t = 30$
# support and $n_v = 2$ validation points, test tasks adapting on $n_r = 20$ points,
# noise $\sigma = 1$, task spread $\nu = 0.5$, $\omega_0 = w_0 = 0$.
#
# * Part 1 — the tasks and the model.
# * Part 2 — MAML on three tasks: a quadratic meta-loss with many exact minimisers.
# * Part 3 — the test loss against $\alpha_t$ and $\alpha_r$: closed form, exact value,
#   measured points with their 95 % CIs.
# * Part 4 — where the minimum lies, and why.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import mamlnp
from mamlnp.meta import closed_form as cf
from mamlnp.meta.maml import meta_loss
from mamlnp.nn.linear import LinearRegression
from mamlnp.tasks.linear import MixedLinearTasks

FAST = os.environ.get("MAMLNP_FAST") == "1"     # set by the test suite: fewer runs
S = cf.Setting.figure2()
RUNS_B = 40 if FAST else 1000                    # runs per α_t point (the paper: 1000)
RUNS_A = 40 if FAST else 100                     # runs per α_r point (the paper: 100)
DRAWS = 300 if FAST else 4000                    # input draws for the exact value
GRID_T = np.array([-2.0, -1.0, 0.0, 0.5, 1.0] if FAST else
                  [-2.0, -1.5, -1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0])
GRID_R = np.array([-0.1, 0.1, 0.3] if FAST else [-0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4])
SEED = 0
print(f"mamlnp {mamlnp.__version__}, fast mode: {FAST}")
print(S)

# %% [markdown]
# ## Part 1 · Tasks and model
#
# A task draws weights $w \sim \mathcal N(w_0, \tfrac{\nu^2}{p} I)$, inputs
# $x \sim \mathcal N(0, I_p)$ and labels $y = x^\top w + \varepsilon$,
# $\varepsilon \sim \mathcal N(0, \sigma^2)$ (`mamlnp/tasks/linear.py`). The model is
# $f_\omega(x) = x^\top\omega$ without bias, with the loss
# $L(\omega) = \frac1{2n}\|X\omega - y\|^2$ (`mamlnp/nn/linear.py`): one inner step is
# $\omega' = (I - \alpha H)\,\omega + \frac{\alpha}{n}X^\top y$, $H = X^\top X/n$.
# A quick look at what the sampler draws: the spread of the weights is $\nu^2$ and the
# label variance $\nu^2 + \sigma^2$ (with $w_0 = 0$).

# %%
family, model = MixedLinearTasks(S.p, S.nu, S.sigma), LinearRegression(S.p)
batch, w = family.sample_with_params(np.random.default_rng(1), 2000, 10, 10)
print(f"mean ‖w − w0‖² = {np.mean(np.sum(w ** 2, axis=1)):.4f}   (ν² = {S.nu ** 2})")
print(f"label variance = {batch.y_support.var():.4f}   (ν² + σ² = {S.nu ** 2 + S.sigma ** 2})")

# %% [markdown]
# ## Part 2 · MAML on three tasks
#
# MAML's meta-loss on the $m$ training tasks,
# $M(\omega) = \frac1m\sum_i \frac1{2n_v}\|A_i\omega - b_i\|^2$ with
# $A_i = X_{v,i}(I - \alpha_t H_{t,i})$, is quadratic in $\omega$. There are only
# $k = m n_v = 6$ validation points for $p = 60$ parameters, so it has a 54-dimensional
# set of exact minimisers; gradient descent from $\omega_0$ reaches the one nearest
# $\omega_0$. `cf.train_maml` gets there by conjugate gradient on the meta-gradient
# (at most $k$ steps, each a `mamlnp.meta_gradient` call); a negative $\alpha_t$ goes in
# as the vector $\alpha_t\mathbf 1$ (Meta-SGD's form: a scalar step must be positive).

# %%
train = family.sample(np.random.default_rng(2), S.m, S.n_t, S.n_v)
for alpha_t in (-1.0, 0.5):
    a_vec = np.full(S.p, alpha_t)
    omega = cf.train_maml(model, train, alpha_t, np.zeros(S.p))
    print(f"α_t = {alpha_t:+.1f}: meta-loss {meta_loss(model, np.zeros(S.p), train, a_vec, 1):.4f}"
          f" at ω0 → {meta_loss(model, omega, train, a_vec, 1):.1e} at ω*,  ‖ω*‖² = "
          f"{omega @ omega:.4f}")

# %% [markdown]
# Both steps fit the six validation points exactly, but they land on different $\omega^*$,
# and $\|\omega^* - w_0\|^2$ is what a new task pays for, through the test loss of an
# initialisation (exact, eq. (2)):
#
# $$\mathcal L_{\text{test}}(\omega) = \tfrac12\Big[\sigma^2\big(1 + \alpha_r^2\tfrac{p}{n_r}\big) + c(\alpha_r, n_r)\big(\nu^2 + \|\omega - w_0\|^2\big)\Big], \qquad c(\alpha, n) = (1 - \alpha)^2 + \alpha^2\tfrac{p+1}{n}.$$
#
# Averaged over the training tasks (eq. (3), exact at $\alpha_t = 0$, leading order in
# $k/p$ elsewhere):
#
# $$\mathbb E\|\omega^* - w_0\|^2 \approx \nu^2\,\frac kp\Big(1 + \frac{k - n_v}{p - k - 1}\Big) + \sigma^2\,\frac{k}{p - k - 1}\cdot\frac{1 + \alpha_t^2\,p/n_t}{c(\alpha_t, n_t)}.$$
#
# ## Part 3 · The test loss against the training step (Fig. 2b) and the test step (Fig. 2a)
#
# The closed form is drawn as a curve; the exact value of (3), the training inputs
# sampled and everything else integrated, as open circles; the measured means of MAML
# runs with their 95 % CIs as error bars. The runs share their tasks across the grid.

# %%
curve_t = np.linspace(-2.5, 1.5, 401)
losses_b = cf.measure(S, GRID_T, 0.2, RUNS_B, SEED)                  # (G, R)
mean_b, half_b = cf.summary(losses_b)
exact_b = np.array([cf.test_loss_of_init(cf.trained_error_exact(
    a, S, np.random.default_rng([SEED, 7]), DRAWS)[0], 0.2, S) for a in GRID_T])
theory_b = cf.expected_test_loss(GRID_T, 0.2, S)
print("  α_t   closed form   exact    measured ± 95% CI")
for a, t, e, m, h in zip(GRID_T, theory_b, exact_b, mean_b, half_b):
    print(f"{a:6.2f}   {t:.4f}     {e:.4f}   {m:.4f} ± {h:.4f}  {'in CI' if abs(m - t) <= h else 'OUT'}")
a_star = cf.optimal_training_step(S)
print(f"optimal α_t (closed form, eq. 4): {a_star:.4f}")

# %%
curve_r = np.linspace(-0.3, 0.5, 401)
losses_a = cf.measure(S, 0.2, GRID_R, RUNS_A, SEED)
mean_a, half_a = cf.summary(losses_a)
theory_a = cf.expected_test_loss(0.2, GRID_R, S)
print("  α_r   closed form   measured ± 95% CI")
for a, t, m, h in zip(GRID_R, theory_a, mean_a, half_a):
    print(f"{a:6.2f}   {t:.4f}      {m:.4f} ± {h:.4f}  {'in CI' if abs(m - t) <= h else 'OUT'}")
r_star = cf.optimal_test_step(0.2, S)
print(f"optimal α_r at α_t = 0.2 (closed form, eq. 5): {r_star:.4f}")

# %%
fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
ax_a.plot(curve_r, cf.expected_test_loss(0.2, curve_r, S), "k-", label="closed form (2)∘(3)")
ax_a.errorbar(GRID_R, mean_a, half_a, fmt="o", color="tab:blue", capsize=3,
              label=f"MAML, mean ± 95% CI ({RUNS_A} runs)")
ax_a.axvline(r_star, color="tab:green", ls=":", label=f"optimum α_r = {r_star:.3f}")
ax_a.set(xlabel="test step α_r", ylabel="expected test loss", title="a) α_t = 0.2")
ax_b.plot(curve_t, cf.expected_test_loss(curve_t, 0.2, S), "k-", label="closed form (2)∘(3)")
ax_b.plot(GRID_T, exact_b, "o", mfc="none", mec="k", ms=10, label="exact (inputs sampled)")
ax_b.errorbar(GRID_T, mean_b, half_b, fmt="o", color="tab:red", capsize=3,
              label=f"MAML, mean ± 95% CI ({RUNS_B} runs)")
ax_b.axvline(a_star, color="tab:green", ls=":", label=f"optimum α_t = {a_star:.3f}")
ax_b.axvline(0.0, color="0.6", lw=0.8)
ax_b.set(xlabel="training step α_t", ylabel="expected test loss", title="b) α_r = 0.2")
for ax in (ax_a, ax_b):
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Part 4 · Where the minimum lies, and why
#
# Only the last term of (3) depends on $\alpha_t$, through the ratio
#
# $$\rho(\alpha_t) = \frac{1 + \alpha_t^2\,p/n_t}{(1 - \alpha_t)^2 + \alpha_t^2\,(p+1)/n_t}.$$
#
# MAML's $\omega^*$ fits the $k$ validation points exactly, so it inherits their noise.
# The numerator is that noise per point: the validation label's own plus the support
# labels' noise, which the inner step carries into the adapted model. The denominator is
# how strongly the adapted model depends on $\omega$ — the "signal" with which the
# validation points pin $\omega$. A small positive step shrinks that dependence,
# $(1-\alpha_t)^2 < 1$, while adding noise. A negative step *stretches* it,
# $\omega' = (I + |\alpha_t| H)\,\omega + \dots$, faster than it adds noise, so the six
# points determine $\omega$ with less noise. $\rho' = 0$ at
# $1 - \alpha(1 + 1/n_t) - \alpha^2 p/n_t = 0$: the negative root is the minimum (eq. 4).
# At test time the aim is the opposite — use the new task's data — and the best $\alpha_r$
# is positive (eq. 5).

# %%
rho = lambda a: (1 + a * a * S.p / S.n_t) / cf.adaptation_factor(a, S.n_t, S.p)  # noqa: E731
fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
ax.plot(curve_t, 1 + curve_t ** 2 * S.p / S.n_t, label="noise: 1 + α²p/n_t")
ax.plot(curve_t, cf.adaptation_factor(curve_t, S.n_t, S.p), label="signal: c(α, n_t)")
ax.plot(curve_t, rho(curve_t), "k-", lw=2, label="ratio ρ(α_t)")
ax.plot(a_star, rho(a_star), "o", color="tab:green", label=f"minimum ρ = {rho(a_star):.3f}")
ax.axhline(1.0, color="0.6", lw=0.8)
ax.set(xlabel="training step α_t", yscale="log", title="what the validation points carry")
ax.legend(fontsize=8)
plt.show()
best = int(np.argmin(mean_b))
d, h = cf.summary(losses_b[best] - losses_b[GRID_T == 0.0][0])
print(f"ρ(0) = 1, ρ(α_t*) = {rho(a_star):.3f}: half the noise of α_t = 0")
print(f"lowest measured point α_t = {GRID_T[best]:g}; paired L({GRID_T[best]:g}) − L(0) = "
      f"{d[0]:.4f} ± {h[0]:.4f}")

# %% [markdown]
# **Closing note.** `python -m mamlnp negative-lr` prints the Fig. 2b table with the
# settings above (1000 runs per point, seed 0; the full run of this notebook draws the
# same numbers). The closed form's minimum is at $\alpha_t^* = -1.011$; the lowest
# measured point is $\alpha_t = -1$, 0.6878 ± 0.0015 against the closed form's 0.6869
# (exact 0.6871), and $\alpha_t = 0$ gives 0.7084 ± 0.0022 against 0.7086: on the same
# tasks, $L(-1) - L(0) = -0.0206 \pm 0.0019$. All nine measured points lie within their
# 95 % CIs of the exact value, and eight of nine of the closed form: at $\alpha_t = 1$
# the closed form, 0.7291, is below the measured 0.7328 ± 0.0032 by its leading-order
# error (exact: 0.7323). `python -m mamlnp negative-lr --panel adapt` prints Fig. 2a's.
