# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · MAML with two parameters: what the meta-objective looks like
#
# MAML (Finn, Abbeel & Levine 2017, [arXiv:1703.03400](https://arxiv.org/abs/1703.03400))
# looks for an initialisation θ from which a few gradient steps on a new task's
# *support* set give a low loss on that task's *query* set:
#
# $$\theta_0=\theta,\qquad \theta_{k+1}=\theta_k-\alpha\,\nabla L_{S,i}(\theta_k),\qquad
#   M(\theta)=\frac1T\sum_{i=1}^{T} L_{Q,i}(\theta_s^{(i)}).$$
#
# With only two parameters θ = (a, b) we can **draw** M. Everything below is computed
# by the library: the models and tasks live in `mamlnp/nn/toy.py`, the meta-gradient is
# `mamlnp.meta_gradient` — the very function that trains the 1761-parameter sinusoid
# network. This notebook only calls it and draws.
#
# * Part 1 — a linear model, where every task loss is an exact quadratic and the MAML
#   optimum has a closed form we can check training against.
# * Part 2 — sliders for α and the number of inner steps (with a static grid of panels
#   for readers without a kernel).
# * Part 3 — a nonlinear model where MAML's initialisation is **not** the joint-training
#   minimiser, and the Hessian term that makes the difference.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import mamlnp
from mamlnp.meta import toy as meta_toy
from mamlnp.nn import toy as nn_toy
from mamlnp.tasks import toy as tasks_toy

FAST = os.environ.get("MAMLNP_FAST") == "1"     # set by the test suite: coarser grids
GRID = 25 if FAST else 81                        # contour grid resolution per axis
ITERS = 150 if FAST else 400                     # meta-training iterations per run
TASK_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
print(f"mamlnp {mamlnp.__version__}, fast mode: {FAST}")

# %% [markdown]
# ## Part 1 · Linear model, four tasks on the corners of a square
#
# `mamlnp.MLP(sizes=(1, 1))` is exactly $f_\theta(x) = a\,x + b$: θ = [W | b] has two
# entries. Task *i* is realisable: its data are $y = a_i x + b_i$, so its optimum is
# $\theta_i=(a_i,b_i)$. The four optima A, B, C, D sit on the corners of a square.
# Tasks A and B see inputs in [−1, 1], task C in [0, 2] and task D in [−2, 0.5]: their
# losses are quadratics with **different curvatures**.
#
# ### The closed form
# With the mean squared error, task *i*'s support loss is exactly
# $L_{S,i}(\theta)=\tfrac12(\theta-\theta_i)^\top A_i(\theta-\theta_i)$ with Hessian
# $A_i = \tfrac{2}{K}\sum_n \phi_n\phi_n^\top$, $\phi_n=(x_n,1)$ (and $B_i$ for the query set).
# Its gradient is $A_i(\theta-\theta_i)$, so one inner step gives
#
# $$\theta_1-\theta_i=(\theta-\theta_i)-\alpha A_i(\theta-\theta_i)=(I-\alpha A_i)(\theta-\theta_i),
# \qquad \theta_s-\theta_i = M_i(\theta-\theta_i),\quad M_i=(I-\alpha A_i)^s .$$
#
# The meta-objective is a quadratic in θ,
# $\sum_i L_{Q,i}(\theta_s^{(i)})=\tfrac12\sum_i(\theta-\theta_i)^\top M_i^\top B_i M_i(\theta-\theta_i)$,
# and setting its gradient $\sum_i M_i^\top B_i M_i(\theta-\theta_i)$ to zero:
#
# $$\boxed{\theta^\star=\Big(\sum_i M_i^\top B_i M_i\Big)^{-1}\sum_i M_i^\top B_i M_i\,\theta_i}$$
#
# Each task's optimum is weighted by its curvature *after* adaptation. With equal
# curvatures all weights are equal and θ⋆ is the centre of the square; with s = 0 it is
# the joint-training (average-loss) minimiser $(\sum_i B_i)^{-1}\sum_i B_i\theta_i$.
# `meta_toy.maml_optimum_quadratic` implements the box; `meta_toy.task_hessians` assembles
# $A_i$, $B_i$ from the model's own Hessian-vector products.

# %%
linear = mamlnp.MLP(sizes=(1, 1))
optima = tasks_toy.square_corners(centre=(1.0, 0.5), half_width=1.0)
tasks = tasks_toy.ToyTasks(linear, optima, x_ranges=[(-1, 1), (-1, 1), (0, 2), (-2, 0.5)])
batch = tasks.batch(shots=8, query=10)           # every task once, fixed input grids
ALPHA, STEPS = 0.3, 1

A, B = meta_toy.task_hessians(linear, batch)
theta_star = meta_toy.maml_optimum_quadratic(optima, A, B, ALPHA, STEPS)
theta_joint = meta_toy.maml_optimum_quadratic(optima, A, B, ALPHA, inner_steps=0)
theta0 = np.array([-0.5, 2.0])
path, losses = meta_toy.meta_train_path(linear, theta0, batch, ALPHA, STEPS, beta=0.5,
                                   iterations=ITERS)
equal = tasks_toy.ToyTasks(linear, optima, x_ranges=(-1, 1))      # equal curvatures
A_eq, B_eq = meta_toy.task_hessians(linear, equal.batch(8, 10))

print(f"closed-form MAML optimum θ*        = {theta_star}")
print(f"meta-trained θ ({ITERS} GD steps, β=0.5) = {path[-1]}")
print(f"max |trained − closed form|        = {np.abs(path[-1] - theta_star).max():.2e}")
print(f"joint-training minimiser (s = 0)   = {theta_joint}")
print(f"equal curvatures: θ* = {meta_toy.maml_optimum_quadratic(optima, A_eq, B_eq, ALPHA, STEPS)}"
      f" (centre {optima.mean(axis=0)})")

# %% [markdown]
# The trained θ lands on the closed-form point to rounding error, and it is not the
# centre of the square: the curvatures differ, so the tasks pull with different weights.
# Now the picture. Left: each task's own loss (coloured contours, its optimum marked with
# its letter). Right: the MAML meta-objective M(θ) for α = 0.3, one inner step, with the
# meta-training path, θ⋆, and one-step adaptation arrows from the learned θ to each
# task's adapted point $\theta'_i$.

# %%
a_grid = np.linspace(-1.0, 3.0, GRID)
b_grid = np.linspace(-1.0, 2.5, GRID)


def draw_tasks(ax, model, batch, optima, names, a_grid, b_grid):
    """Each task's un-adapted query loss as coloured contours, optima lettered."""
    for t in range(batch.num_tasks):
        Z = meta_toy.loss_surface(model, batch, 0.1, 0, a_grid, b_grid, task=t)
        ax.contour(a_grid, b_grid, Z, levels=np.geomspace(0.02, 4, 5),
                   colors=TASK_COLOURS[t], linewidths=0.8)
        ax.plot(*optima[t], "o", color=TASK_COLOURS[t])
        ax.annotate(names[t], optima[t], xytext=(5, 5), textcoords="offset points",
                    color=TASK_COLOURS[t], fontweight="bold")


def draw_meta(ax, model, batch, alpha, steps, a_grid, b_grid, theta, levels=12):
    """Meta-objective contours and adaptation arrows θ -> θ'_i."""
    Z = meta_toy.loss_surface(model, batch, alpha, steps, a_grid, b_grid)
    cs = ax.contourf(a_grid, b_grid, np.log10(Z), levels=levels, cmap="Greys_r", alpha=0.8)
    for t, tip in enumerate(meta_toy.adapted_points(model, theta, batch, alpha, steps)):
        ax.annotate("", tip, theta, arrowprops=dict(arrowstyle="->", color=TASK_COLOURS[t],
                                                    lw=1.5))
    return cs


fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
draw_tasks(ax0, linear, batch, optima, tasks.names, a_grid, b_grid)
ax0.set_title("each task's loss $L_{Q,i}(\\theta)$ (levels 0.02…4)")
cs = draw_meta(ax1, linear, batch, ALPHA, STEPS, a_grid, b_grid, path[-1])
fig.colorbar(cs, ax=ax1, label="log$_{10}$ M(θ)")
ax1.plot(*path.T, ".-", color="tab:purple", ms=2, lw=1, label="meta-training path")
ax1.plot(*theta_star, "*", color="gold", mec="k", ms=16, label="closed-form θ*")
ax1.plot(*theta_joint, "X", color="white", mec="k", ms=10, label="joint minimiser (s = 0)")
ax1.plot(*optima.T, "o", color="k", ms=4, label="task optima θ_i")
for t, name in enumerate(tasks.names):
    ax1.annotate(name, optima[t], xytext=(5, 5), textcoords="offset points", color="k")
ax1.set_title(f"meta-objective M(θ), α = {ALPHA}, {STEPS} inner step; arrows: θ → $\\theta'_i$")
ax1.legend(loc="upper right", fontsize=8)
for ax in (ax0, ax1):
    ax.set_xlabel("a (slope)")
    ax.set_ylabel("b (intercept)")
    ax.set_xlim(a_grid[0], a_grid[-1])
    ax.set_ylim(b_grid[0], b_grid[-1])
plt.show()

# %% [markdown]
# One step of size α moves θ along each task's gradient; the learned θ⋆ is where
# those one-step moves land, on average, closest to every task's optimum — *not* where
# the average loss is lowest (the white ✕).
#
# ## Part 2 · How α and the number of inner steps change the optimum
#
# Move the sliders (needs a running kernel and `ipywidgets`); the static grid below the
# sliders shows a few values and renders without a kernel (e.g. on GitHub).
#
# With a small α the inner step moves θ little, every $M_i\approx I$, and θ⋆ stays close
# to the curvature-weighted centre. As α grows, the inner step along a task's steepest
# direction approaches an overshoot: when $\alpha\lambda_{\max}(A_i)$ nears 2, $(I-\alpha A_i)$
# has an eigenvalue near −1, and the adapted point of that task lands on the *other side*
# of its optimum. θ⋆ moves to where these over- and under-shoots land, on average, closest
# to the optima. (Past $\alpha\lambda_{\max}=2$ the inner loop diverges.)

# %%
lam_max = np.linalg.eigvalsh(A).max(axis=1)          # (4,) largest support curvature
for alpha in (0.1, 0.3, 0.4):
    print(f"α = {alpha}: α·λ_max(A_i) = " + ", ".join(
        f"{name} {alpha * lam:.2f}" for name, lam in zip(tasks.names, lam_max)))


def alpha_steps_panel(ax, alpha, steps):
    star = meta_toy.maml_optimum_quadratic(optima, A, B, alpha, steps)
    draw_meta(ax, linear, batch, alpha, steps, a_grid, b_grid, star)
    ax.plot(*star, "*", color="gold", mec="k", ms=14)
    ax.plot(*theta_joint, "X", color="white", mec="k", ms=9)
    ax.plot(*optima.T, "o", color="k", ms=3)
    ax.set_title(f"α = {alpha}, s = {steps}: θ* = ({star[0]:.2f}, {star[1]:.2f})", fontsize=9)
    ax.set_xlabel("a")
    ax.set_ylabel("b")


try:
    import ipywidgets as widgets

    def interactive_panel(alpha=0.3, inner_steps=1):
        fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
        alpha_steps_panel(ax, alpha, inner_steps)
        plt.show()

    widgets.interact(interactive_panel,
                     alpha=widgets.FloatSlider(value=0.3, min=0.05, max=0.6, step=0.05),
                     inner_steps=widgets.IntSlider(value=1, min=1, max=5))
except ImportError:
    print("ipywidgets is not installed: see the static grid below")

# %%
fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True, sharex=True,
                         sharey=True)
for row, alpha in zip(axes, (0.1, 0.4)):
    for ax, steps in zip(row, (1, 2, 5)):
        alpha_steps_panel(ax, alpha, steps)
fig.suptitle("log M(θ) (darker = lower); ★ closed-form MAML optimum, ✕ joint minimiser, "
             "arrows θ* → $\\theta'_i$")
plt.show()

# %% [markdown]
# ## Part 3 · A nonlinear model: MAML's initialisation ≠ the joint-training minimiser
#
# Now $f_\theta(x)=a\tanh(bx)$ (`nn_toy.TanhToy`, gradient and Hessian written by hand and
# checked against finite differences in `tests/test_toy.py`). The four task optima are
# again the corners of a square, centre (1.2, 1), half-width 0.5, inputs in [−2, 2].
# We train three ways from the same start, full-batch gradient descent:
#
# * **joint training** — minimise the average loss, no adaptation (s = 0);
# * **FOMAML** — the first-order approximation, $\nabla M\approx\frac1T\sum_i\nabla L_{Q,i}(\theta'_i)$;
# * **MAML** — the exact meta-gradient
#   $\nabla M=\frac1T\sum_i (I-\alpha H_{S,i}(\theta))\,\nabla L_{Q,i}(\theta'_i)$.

# %%
tanh_model = nn_toy.TanhToy()
tanh_optima = tasks_toy.square_corners(centre=(1.2, 1.0), half_width=0.5)
tanh_tasks = tasks_toy.ToyTasks(tanh_model, tanh_optima, x_ranges=(-2, 2))
tanh_batch = tanh_tasks.batch(shots=10, query=10)
T_ALPHA, T_ITERS = 0.2, (300 if FAST else 1500)
start = np.array([1.2, 1.0])            # the centre of the square
runs = {}
for name, steps, fo in (("joint", 0, False), ("FOMAML", 1, True), ("MAML", 1, False)):
    runs[name] = meta_toy.meta_train_path(tanh_model, start, tanh_batch, T_ALPHA, steps, beta=0.5,
                                     iterations=T_ITERS, first_order=fo)[0]
    print(f"{name:7s} θ = {runs[name][-1]}")

# %% [markdown]
# Why they differ: at each final point, split the exact meta-gradient into its
# first-order part and the Hessian term,
# $\nabla M = \underbrace{\tfrac1T\sum_i\nabla L_{Q,i}(\theta'_i)}_{\text{FOMAML}}
#  \;\underbrace{-\,\alpha\,\tfrac1T\sum_i H_{S,i}(\theta)\nabla L_{Q,i}(\theta'_i)}_{\text{Hessian term}}$.
# Both parts come from `mamlnp.meta_gradient` (with and without `first_order=True`).

# %%
print(f"{'point':8s} {'‖∇ joint loss‖':>15s} {'‖FO part‖':>10s} {'‖Hessian term‖':>15s} "
      f"{'‖exact ∇M‖':>11s}")
for name, p in runs.items():
    theta = p[-1]
    _, g_joint = mamlnp.meta_gradient(tanh_model, theta, tanh_batch, T_ALPHA, 0, backend="numpy")
    _, g_fo = mamlnp.meta_gradient(tanh_model, theta, tanh_batch, T_ALPHA, 1, first_order=True,
                                   backend="numpy")
    _, g_so = mamlnp.meta_gradient(tanh_model, theta, tanh_batch, T_ALPHA, 1, backend="numpy")
    print(f"{name:8s} {np.linalg.norm(g_joint):15.2e} {np.linalg.norm(g_fo):10.2e} "
          f"{np.linalg.norm(g_so - g_fo):15.2e} {np.linalg.norm(g_so):11.2e}")

# %% [markdown]
# At the joint minimiser the average-loss gradient is zero but the meta-gradient is not.
# At the FOMAML point the first-order part is zero but the Hessian term is not, so the
# exact meta-gradient still points away. Only at the MAML point do the first-order part
# and the Hessian term cancel: MAML's initialisation is where the adapted losses are
# stationary *accounting for how adaptation itself moves with θ*. For the linear model
# with equal curvatures all three coincide at the centre; here the curvature
# $H_{S,i}(\theta)$ changes with θ and with the task.
#
# Where MAML goes is telling. It leaves the square for a small input scale b and a large
# amplitude a: there $a\tanh(bx)\approx abx$ is nearly flat, a poor model of every task
# *before* adaptation, but its loss is very **sensitive** to b (∂f/∂b = a x sech²(bx) is
# large), so one step of size α swings it towards whichever task the support set shows.
# This is the paper's intuition in two dimensions: MAML looks for parameters "such that
# small changes in the parameters will produce large improvements on the loss function of
# any task" (Finn et al. 2017, sec. 2.2).

# %%
ta_grid = np.linspace(0.3, 2.3, GRID)
tb_grid = np.linspace(0.0, 1.8, GRID)
fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
marks = {"joint": ("X", "white"), "FOMAML": ("P", "tab:cyan"), "MAML": ("*", "gold")}
for ax, steps, title in ((axes[0], 0, "joint loss (average task loss, s = 0)"),
                         (axes[1], 1, f"MAML meta-objective (α = {T_ALPHA}, s = 1)")):
    theta_end = runs["MAML"][-1] if steps else runs["joint"][-1]
    cs = draw_meta(ax, tanh_model, tanh_batch, T_ALPHA, steps, ta_grid, tb_grid, theta_end)
    fig.colorbar(cs, ax=ax, label="log$_{10}$ loss")
    for name, p in runs.items():
        m, c = marks[name]
        ax.plot(*p.T, "-", color=c, lw=1, alpha=0.9)
        ax.plot(*p[-1], m, color=c, mec="k", ms=13 if m == "*" else 10, label=name)
    for t in range(4):
        ax.plot(*tanh_optima[t], "o", color=TASK_COLOURS[t], mec="k")
        ax.annotate(tanh_tasks.names[t], tanh_optima[t], xytext=(5, 5),
                    textcoords="offset points", color=TASK_COLOURS[t], fontweight="bold")
    ax.set_title(title + ("; arrows: MAML θ → $\\theta'_i$" if steps else ""), fontsize=10)
    ax.set_xlabel("a (amplitude)")
    ax.set_ylabel("b (input scale)")
    ax.legend(loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# **Takeaways.** MAML does not look for the point that is best *before* adaptation; it
# looks for the point whose *adapted* versions are best. For quadratic losses that point
# has the closed form above and training reaches it; for a nonlinear model the difference
# from joint training (and from FOMAML) is carried by the Hessian term
# $-\alpha H_{S,i}\nabla L_{Q,i}$, which is what the exact meta-gradient in
# `mamlnp/meta/maml.py` computes with one Hessian-vector product per inner step
# (notebook 03 derives it).
