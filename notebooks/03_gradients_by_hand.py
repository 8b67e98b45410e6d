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
# # 03 · Gradients by hand: backprop → R-operator HVP → the meta-gradient
#
# MAML's exact meta-gradient needs two things from the network: its gradient and its
# Hessian-vector products. `mamlnp` writes both by hand. This notebook walks the chain
# one link at a time: for each, the equation, the code it maps to (printed from the
# installed package with `inspect.getsource`, so it cannot drift from the source), and a
# finite-difference check run live with `mamlnp.check.gradcheck`. Then it measures what the
# second-order term adds — how large it is, how it turns the gradient, and what it costs.
#
# The full derivations are in `docs/derivations/` ([backprop.md](../docs/derivations/backprop.md),
# [hvp.md](../docs/derivations/hvp.md), [meta-gradient.md](../docs/derivations/meta-gradient.md)).
#
# **Dimension legend.** N points, T tasks, K support / Q query points, P parameters,
# s inner steps.

# %%
import inspect
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import mamlnp
from mamlnp.check import gradcheck
from mamlnp.nn import layers
from mamlnp.meta import maml

FAST = os.environ.get("MAMLNP_FAST") == "1"     # set by the test suite: shorter runs
TRAIN_ITERS = 40 if FAST else 70000             # the training run of section 4
TIMING_REPEATS = 3 if FAST else 15              # repeats per timing (best reported)


def show(*objects):
    """Print the source of functions/methods exactly as installed."""
    for obj in objects:
        print(inspect.getsource(obj))


model = mamlnp.MLP(sizes=(1, 40, 40, 1), activation="tanh")   # tanh: no kinks for FD
theta = model.init(seed=0, scheme="uniform")
rng = np.random.default_rng(0)
x = rng.uniform(-5, 5, size=(10, 1))
y = 2.0 * np.sin(x - 0.5)
print(model, "P =", model.num_params)

# %% [markdown]
# ## 1 · Backpropagation
#
# Layer *l* maps $h_{l-1}$ (N, fan_in) to $z_l = h_{l-1}W_l + b_l$ (N, fan_out) and
# $h_l = \sigma(z_l)$; the last layer is linear, and
# $L = \frac{1}{NO}\sum (\hat y - y)^2$. Writing $\delta_l = \partial L/\partial z_l$,
# the chain rule read backwards gives
#
# $$\delta_L = \tfrac{2}{NO}(\hat y - y),\qquad
#   \frac{\partial L}{\partial W_l} = h_{l-1}^\top\delta_l,\qquad
#   \frac{\partial L}{\partial b_l} = \textstyle\sum_n \delta_{l,n},\qquad
#   \delta_{l-1} = (\delta_l W_l^\top)\odot\sigma'(z_{l-1}).$$
#
# The dense layer's backward step, and the loop over layers that writes each block of
# the flat gradient:

# %%
show(layers.dense_backward, layers.act_backward, mamlnp.MLP._backward)

# %% [markdown]
# **Check.** Centred differences $[L(\theta+\varepsilon u)-L(\theta-\varepsilon u)]/2\varepsilon$
# along 10 random unit directions u (P = 1761 is too many for a full sweep here; the
# test suite does full sweeps on smaller nets), compared with $u^\top\nabla L$.
# Relative error $\|a-b\|/\max(\|a\|,\|b\|)$; truncation $O(\varepsilon^2)$ and rounding
# $O(10^{-16}/\varepsilon)$ balance near $10^{-10}$ at ε = 1e-5.

# %%
print(gradcheck.format_table([gradcheck.check_gradient(model, theta, x, y)]))

# %% [markdown]
# ## 2 · The exact Hessian-vector product (Pearlmutter's R-operator)
#
# Define $\mathcal R\{f\} = \frac{d}{dr} f(\theta + r v)\big|_{r=0}$. Then
# $\mathcal R\{\nabla L\} = H v$. Apply $\mathcal R$ to **every line** of the forward and
# backward passes (product rule, $\mathcal R\{W\} = V_W$, the slice of v):
#
# $$\mathcal R z_l = \mathcal R h_{l-1} W_l + h_{l-1} V_{W_l} + V_{b_l},\qquad
#   \mathcal R h_l = \sigma'(z_l)\odot\mathcal R z_l$$
# $$\mathcal R\{\partial L/\partial W_l\} = \mathcal R h_{l-1}^\top\delta_l + h_{l-1}^\top\mathcal R\delta_l,\qquad
#   \mathcal R\delta_{l-1} = (\mathcal R\delta_l W_l^\top + \delta_l V_{W_l}^\top)\odot\sigma'(z_{l-1})
#      + (\delta_l W_l^\top)\odot\sigma''(z_{l-1})\odot\mathcal R z_{l-1}$$
#
# One R-forward and one R-backward sweep: about twice the cost of a gradient, exact,
# and no P×P matrix ever exists.

# %%
show(layers.dense_rforward, layers.dense_rbackward, layers.act_rbackward, mamlnp.MLP._rpass)

# %% [markdown]
# **Checks.** (i) $Hv$ against centred differences of the *gradient*,
# $[\nabla L(\theta+\varepsilon v)-\nabla L(\theta-\varepsilon v)]/2\varepsilon$;
# (ii) symmetry $\langle u,Hv\rangle=\langle Hu,v\rangle$ (the R-pass is not symmetric by
# construction, so this is a real test); (iii) linearity in v; (iv) on a tiny network,
# the dense Hessian assembled from P HVPs against a finite-difference Hessian.

# %%
tiny = mamlnp.MLP(sizes=(1, 4, 3, 1), activation="softplus")    # P = 27, softplus: σ'' ≠ 0
theta_tiny = tiny.init(seed=1, scheme="uniform")
rows = [gradcheck.check_hvp(model, theta, x, y),
        gradcheck.check_symmetry(model, theta, x, y),
        gradcheck.check_linearity(model, theta, x, y),
        *gradcheck.check_hessian(tiny, theta_tiny, x, y, label="tiny-net Hessian")]
print(gradcheck.format_table(rows))

# %% [markdown]
# ## 3 · The meta-gradient through s inner steps
#
# $\theta_0=\theta$, $\theta_{k+1}=\theta_k-\alpha\nabla L_S(\theta_k)$, and the task's
# meta-loss is $L_Q(\theta_s)$. Each step's Jacobian is
# $\partial\theta_{k+1}/\partial\theta_k = I-\alpha H_S(\theta_k)$ (symmetric), so the
# chain rule, accumulated from the end like backprop, is
#
# $$g_s=\nabla L_Q(\theta_s),\qquad g_k = (I-\alpha H_S(\theta_k))\,g_{k+1}
#   = g_{k+1}-\alpha\,H_S(\theta_k)\,g_{k+1},\qquad \frac{dL_Q}{d\theta}=g_0 .$$
#
# One HVP per inner step, evaluated at the stored iterate $\theta_k$: memory
# $O(sP)$ for the iterates, never a computation graph. FOMAML drops the Hessian terms
# and uses $g_s$ itself. The reference code is one line per equation:

# %%
show(maml.inner_loop, maml.task_meta_gradient)

# %% [markdown]
# **Checks.** The exact meta-gradient against centred differences of the meta-objective
# `maml.meta_loss` (which only runs the inner loop forwards), for s = 1, 2, 3. The
# first-order gradient must *fail* to match (a "differ" row passes when the error is
# large), and FOMAML plus the Hessian term computed with *dense finite-difference
# Hessians* — no R-pass at all — must match (tiny network).

# %%
tasks = mamlnp.SinusoidTasks()
batch = tasks.sample(rng=1, num_tasks=4, shots=10, query=10)
tiny_batch = tasks.sample(rng=2, num_tasks=2, shots=5, query=5)
rows = []
for s in (1, 2, 3):
    rows.append(gradcheck.check_meta_gradient(model, theta, batch, 0.01, s))
    rows.append(gradcheck.check_meta_gradient(model, theta, batch, 0.01, s, first_order=True))
for s in (1, 2):
    rows.append(gradcheck.check_hessian_term(tiny, theta_tiny, tiny_batch, 0.1, s,
                                             label=f"tiny s={s} FO + dense-FD Hessian term vs FD"))
print(gradcheck.format_table(rows))

# %% [markdown]
# ## 4 · First order vs second order during training
#
# How big is the Hessian term in practice? We meta-train the 1-40-40-1 ReLU network of
# the paper with its full protocol (`mamlnp.meta_train`: α = 0.01, one inner step, K = 10,
# 25 tasks per batch, Adam β = 0.001, 70,000 iterations, with the Numba backend: 20 s on
# quiet cores to a few minutes on the project's two shared cores, printed as it goes, plus
# a one-time compile of the kernels on a fresh install) and, at 60 log-spaced iterations,
# a callback computes the exact (SO) and first-order (FO) meta-gradients at the current θ
# on a fresh batch of 25 tasks. We
# record the relative size of the correction, $\|g_{SO}-g_{FO}\|/\|g_{SO}\|$, and the
# angle between the two.

# %%
relu_net = mamlnp.MLP(sizes=(1, 40, 40, 1), activation="relu")
probe_at = set(np.unique(np.geomspace(1, TRAIN_ITERS, 60).astype(int)).tolist())
probe_rng = np.random.default_rng(7)
probes = []                                              # (iteration, meta-loss, size, angle)


def probe(step):
    """mamlnp.meta_train callback: SO vs FO meta-gradient at θ after ``step.iteration``."""
    if step.iteration % 10000 == 0:
        print(f"  {step.iteration:,} / {TRAIN_ITERS:,} iterations, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    if step.iteration not in probe_at:
        return False                                     # False: keep training
    b = tasks.sample(probe_rng, num_tasks=25, shots=10, query=10)
    loss, g_so = mamlnp.meta_gradient(relu_net, step.theta, b, alpha=0.01, inner_steps=1)
    _, g_fo = mamlnp.meta_gradient(relu_net, step.theta, b, alpha=0.01, inner_steps=1,
                                   first_order=True)
    cos = g_so @ g_fo / (np.linalg.norm(g_so) * np.linalg.norm(g_fo))
    probes.append((step.iteration, loss, np.linalg.norm(g_so - g_fo) / np.linalg.norm(g_so),
                   np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return False


print(f"training {TRAIN_ITERS:,} iterations: 20 s (quiet cores) to a few minutes (shared); "
      f"a fresh install first compiles the kernels (1-8 min, once)", flush=True)
t0 = time.perf_counter()
run = mamlnp.meta_train(method="maml", iterations=TRAIN_ITERS, seed=0, progress=False,
                        callback=probe)
th = run.theta                                           # the trained θ (used in section 5)
it, loss, size, angle = map(np.array, zip(*probes))
print(f"{TRAIN_ITERS} meta-iterations in {time.perf_counter() - t0:.0f} s, {len(it)} probes")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
for ax, v, label, title in ((axes[0], loss, "meta-loss (query MSE after 1 step)",
                             "exact-gradient MAML training"),
                            (axes[1], size, "‖SO − FO‖ / ‖SO‖", "relative size of the Hessian term"),
                            (axes[2], angle, "angle(SO, FO) [degrees]",
                             "angle between SO and FO gradients")):
    ax.plot(it, v, "o-", ms=3, lw=0.8)
    ax.set(xlabel="meta-iteration (log scale)", ylabel=label, xscale="log", title=title)
axes[0].set_yscale("log")
axes[1].set_yscale("log")
plt.show()
first, late = it <= 10, it >= TRAIN_ITERS // 10
print(f"first 10 iterations: median ‖SO−FO‖/‖SO‖ = {np.median(size[first]):.3f}, "
      f"median angle = {np.median(angle[first]):.1f}°")
print(f"from iteration {TRAIN_ITERS // 10} on ({late.sum()} probes): median ‖SO−FO‖/‖SO‖ = "
      f"{np.median(size[late]):.3f}, median angle = {np.median(angle[late]):.1f}°, "
      f"max angle = {np.max(angle[late]):.1f}°")

# %% [markdown]
# Read the numbers printed above (they are from the committed full-length run; fast
# mode's are meaningless). The Hessian term is not a small correction on this problem:
# near initialisation it is already about a quarter of the gradient, and as training
# shapes the network's curvature it grows to nearly the size of the gradient and turns it
# by tens of degrees, with some batches far more. That is what FOMAML gives up: in
# notebook 02 it is clearly behind MAML after the one step both were trained for
# (K = 5: 0.88 against 0.58), and stays behind with more test-time steps, though the gap
# narrows (0.45 against 0.35 after ten). The term
# grows with α and with the number of inner steps,
# and the two-parameter model of notebook 01 shows a case where it moves the optimum far
# away.
#
# ## 5 · What each costs
#
# Per task, s inner steps cost s gradients on the support set; the query gradient costs
# one more; the second-order reverse pass adds s HVPs (each ≈ 2 gradients: R-forward plus
# R-backward, re-running the forward/backward pass at $\theta_k$). Memory: the exact
# pass keeps the s iterates $\theta_0\ldots\theta_{s-1}$, $O(sP)$ floats; first order needs
# only the current iterate, $O(P)$. Timings below are the best of several `time.perf_counter` runs on this
# machine, for the NumPy reference and for the compiled `backend="numba"` (the default;
# `mamlnp/fast/mlp/`) — noisy: `benchmarks/` has the careful measurements and
# `docs/performance.md` the figures.

# %%
def best_time(fn, repeats):
    """The fastest of ``repeats`` calls: the least disturbed by other work on the machine."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.min(ts))


def time_meta_gradient(backend, s, first_order):
    call = lambda: mamlnp.meta_gradient(relu_net, th, b, 0.01, s,          # noqa: E731
                                        first_order=first_order, backend=backend)
    call()                                                  # warm-up (and numba compilation)
    return best_time(call, TIMING_REPEATS)


b = tasks.sample(rng=3, num_tasks=25, shots=10, query=10)
steps = [1, 2, 3, 5] if FAST else [1, 2, 3, 4, 5, 7, 10]
try:
    import mamlnp.fast.mlp.kernelset  # noqa: F401  (the numba backend; absent without numba)
    backends = ["numpy", "numba"]
except ImportError:
    backends = ["numpy"]
ms = {(be, fo): [1e3 * time_meta_gradient(be, s, fo) for s in steps]
      for be in backends for fo in (True, False)}
P = relu_net.num_params
print(f"{'s':>3} " + " ".join(f"{be + (' FO' if fo else ' SO') + ' ms':>12}" for be, fo in ms)
      + f" {'SO/FO numpy':>12} {'SO iterates kept (bytes/task)':>30}")
for i, s in enumerate(steps):
    ratio = ms[("numpy", False)][i] / ms[("numpy", True)][i]
    print(f"{s:3d} " + " ".join(f"{v[i]:12.3f}" for v in ms.values())
          + f" {ratio:12.2f} {s * P * 8:30,d}")

fig, ax = plt.subplots(figsize=(8.5, 4), constrained_layout=True)
for (be, fo), v in ms.items():
    ax.plot(steps, v, marker="o" if fo else "s", ls="-" if be == "numpy" else "--",
            label=f"{be}, {'first order (FOMAML)' if fo else 'exact second order (MAML)'}")
ax.set(xlabel="inner steps s", ylabel="ms per meta-gradient (T = 25 tasks)", yscale="log",
       title="cost of one meta-gradient vs inner steps")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: no overlap
plt.show()

# %% [markdown]
# Both orders grow linearly in s; the exact gradient costs a small constant factor more
# (the HVPs), not a factor of P. The compiled backend computes the same numbers
# (`tests/test_kernels.py` checks them to 1e-12) several times faster. That is the whole point of the R-operator: the exact
# second-order meta-gradient is affordable without ever forming a Hessian.

# %% [markdown]
# ## 6 · The MAML family: the same chain, other meta-gradients
#
# Every member of the family that `mamlnp` implements is built from the same two pieces, the
# gradient and the HVP, assembled differently (derivations in `docs/derivations/`:
# [imaml.md](../docs/derivations/imaml.md), [anil.md](../docs/derivations/anil.md),
# [mamlpp.md](../docs/derivations/mamlpp.md)):
#
# | method | inner loop | meta-gradient per task | HVPs |
# |---|---|---|---|
# | MAML | $\theta_{k+1} = \theta_k - \alpha\nabla L_S$ | reverse pass $g \leftarrow g - \alpha H_S(\theta_k) g$ | s |
# | FOMAML | the same | $\nabla L_Q(\theta_s)$ | 0 |
# | Reptile | the same on support ∪ query | $(\theta - \theta_s)/(\alpha s)$ | 0 |
# | Meta-SGD | $\theta_k - \alpha\odot\nabla L_S$, α learned | MAML's reverse pass, plus $\partial/\partial\alpha$ | s |
# | iMAML | proximal: $+\lambda(\phi_k-\theta)$ | $(I + H_S(\phi_s)/\lambda)^{-1}\nabla L_Q(\phi_s)$ by CG | ≤ `cg_steps` |
# | ANIL | the head only | MAML's with α masked to the head; or on the body's features | s (head only) |
# | MAML++ | per-layer, per-step learned α | a weighted sum over steps (MSL), plus $\partial/\partial\alpha$ | s |
#
# Below, each method's meta-gradient (its update direction for θ) on one batch of 25
# sinusoid tasks, from the trainer's own method objects (`mamlnp.meta.variants`), at the same θ:
# how far it points from MAML's exact gradient (cosine), its norm, what it costs, and the
# peak memory of one NumPy call (`tracemalloc`). MAML++ is shown once annealing is over
# (second order, the last step's loss), which is how it trains after its first 25,000 iterations.

# %%
import tracemalloc

from mamlnp.meta.variants import METHODS, get_method
from mamlnp.run import runconfig

fam_batch = tasks.sample(rng=4, num_tasks=25, shots=10, query=10)
fam_theta = relu_net.init(seed=0)
LATE = 25_000                                    # MAML++: past derivative-order annealing


def family_step(name, backend="numpy"):
    """(meta-loss, θ-gradient) of method ``name`` at fam_theta, as the trainer computes it."""
    cfg = runconfig.make_config(method=name)
    method = get_method(name)
    params = method.init_params(relu_net, fam_theta, cfg)
    it = LATE if name == "mamlpp" else 0
    loss, grads = method.step_at(it, relu_net, params, fam_batch, cfg, backend)
    return loss, grads["theta"]


def peak_kib(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1024


g_maml = family_step("maml")[1]
fam = {}
for name in METHODS:
    _, g = family_step(name)
    cos = float(g @ g_maml / (np.linalg.norm(g) * np.linalg.norm(g_maml)))
    ms_np = 1e3 * best_time(lambda: family_step(name), TIMING_REPEATS)
    fam[name] = (cos, float(np.linalg.norm(g)), ms_np, peak_kib(lambda: family_step(name)))
print(f"{'method':<9} {'cos to MAML':>11} {'|g|':>9} {'ms (NumPy)':>11} {'peak KiB':>9}")
for name, (cos, norm, ms_np, kib) in fam.items():
    print(f"{name:<9} {cos:11.3f} {norm:9.3f} {ms_np:11.2f} {kib:9.0f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
names = list(fam)
cosines = [fam[n][0] for n in names]
axes[0].barh(names, cosines, color="tab:blue")
for i, c in enumerate(cosines):
    axes[0].text(c, i, f" {c:.3f}", va="center", fontsize=8)
axes[0].set(xlabel="cosine to MAML's exact meta-gradient",
            xlim=(min(0.0, min(cosines)) if min(cosines) < 0.2 else min(cosines) - 0.15, 1.08),
            title="where each method's θ-update points")
axes[0].invert_yaxis()
axes[1].barh(names, [fam[n][2] for n in names], color="tab:orange")
axes[1].set(xlabel="ms per meta-gradient (NumPy, T = 25, best of repeats)", xscale="log",
            title="what it costs")
axes[1].invert_yaxis()
plt.show()

# %% [markdown]
# Reading the table (θ and the batch are fixed, so the cosines and norms are the same on
# every run; the times are this machine's). At initialisation Meta-SGD and MAML++ *are* MAML:
# their learned step sizes all start at α, so their θ-gradients equal MAML's (cosine 1.000)
# until training moves α. FOMAML (0.965) and ANIL (0.950) point close to MAML here, where
# the Hessian term is small (section 4). With one inner step, Reptile's update is the
# joint-training gradient on support ∪ query, so it points exactly where the pretrained
# baseline's gradient points (0.912 both; only the scale differs). iMAML's implicit gradient
# is another object, the gradient of the *proximal* objective at its inner solution (0.715).
# Costs follow the HVP count: the baseline and the first-order methods are the cheapest,
# iMAML's five CG steps (five HVPs per task) make it the dearest.
#
# **iMAML's point is memory.** MAML's reverse pass keeps every inner iterate, so its memory
# grows with s; iMAML needs only the final $\phi_s$ and the CG vectors, whatever s. Measured:

# %%
s_grid = [1, 5, 10] if FAST else [1, 5, 10, 20, 40]
mem = {"MAML (exact)": [], "iMAML (λ = 1, 5 CG steps)": []}
for s in s_grid:
    mem["MAML (exact)"].append(peak_kib(lambda: maml.meta_gradient(
        relu_net, fam_theta, fam_batch, 0.01, s, backend="numpy")))
    mem["iMAML (λ = 1, 5 CG steps)"].append(peak_kib(lambda: mamlnp.imaml_gradient(
        relu_net, fam_theta, fam_batch, 0.01, s, 1.0, cg_steps=5)))
print(f"{'s':>3} " + " ".join(f"{k + ' KiB':>28}" for k in mem))
for i, s in enumerate(s_grid):
    print(f"{s:3d} " + " ".join(f"{v[i]:28.0f}" for v in mem.values()))
fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
for k, v in mem.items():
    ax.plot(s_grid, v, "o-", label=k)
ax.set(xlabel="inner steps s", ylabel="peak KiB of one meta-gradient (NumPy)",
       title="memory against inner steps: MAML grows, iMAML stays flat")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# **ANIL, two ways.** ANIL is MAML with α masked to the head, and `mamlnp` runs it both
# ways: the masked α through MAML's full reverse pass, and a head-only path that computes
# the body's features once per set, does the inner loop and the HVPs on the linear head, and
# sends the body one backward pass per set ([anil.md](../docs/derivations/anil.md) §2).
# The two agree to rounding, checked live:

# %%
from mamlnp.check.fdcheck import rel_error
from mamlnp.meta import anil

for s in (1, 5):
    _, g_masked = anil.anil_gradient(relu_net, fam_theta, fam_batch, 0.01, s, backend="numpy",
                                     path="masked")
    _, g_head = anil.anil_gradient(relu_net, fam_theta, fam_batch, 0.01, s, path="head")
    t_m = 1e3 * best_time(lambda: anil.anil_gradient(relu_net, fam_theta, fam_batch, 0.01, s,
                                                     backend="numpy", path="masked"),
                          TIMING_REPEATS)
    t_h = 1e3 * best_time(lambda: anil.anil_gradient(relu_net, fam_theta, fam_batch, 0.01, s,
                                                     path="head"), TIMING_REPEATS)
    print(f"s = {s}: rel. difference {rel_error(g_head, g_masked):.1e}; NumPy ms: masked "
          f"{t_m:.1f}, head-only {t_h:.1f}")

# %% [markdown]
# The head-only path skips the R-pass through the body and the body's forward pass at every
# inner step, so its cost barely grows with s. The trained results of every method on one
# budget are in [docs/results.md](../docs/results.md) ("The MAML family on one budget").
