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
# # 04 · Few-shot classification on Omniglot, and batch norm's derivatives checked by hand
#
# Finn, Abbeel & Levine (2017), sec. 5.2: N-way K-shot classification of handwritten
# characters. An episode shows the network K drawings of each of N characters it has never
# seen (the support set), it takes one SGD step of size α on them, and it is scored on other
# drawings of the same characters (the query set). The network is the paper's MLP,
# 784-256-128-64-64-N, each hidden layer dense → **batch norm** → ReLU.
#
# Batch norm is where MAML's classification code confuses most readers: its statistics come
# from the batch being normalised, so the support set and the query set are normalised
# differently, and every derivative (gradient, Hessian-vector product, meta-gradient) has to
# go through the batch mean and variance. Section 2 checks those derivatives live. Section 7
# sets the paper's other Omniglot network, a conv net, beside the MLP: its first-layer filters
# before and after meta-training, and its test accuracy on the same episodes.
#
# The notebook only calls the library and draws: `mamlnp.OmniglotTasks` (episodes, the split),
# `mamlnp.MLP(..., batch_norm=True)` and `mamlnp/nn/batchnorm.py`, `mamlnp.ConvNet`
# (`mamlnp/nn/convnet.py`), `mamlnp.check.gradcheck`,
# `mamlnp.meta_train`, `mamlnp.run.classify` and `mamlnp.run.classify_report` (the evaluation
# of `python -m mamlnp evaluate`). The derivation is
# [docs/derivations/batchnorm.md](../docs/derivations/batchnorm.md).
#
# **Where the trained network comes from.** A run made by the command line is loaded from
# `runs/` when it exists, and the first cell says which one and whether it is the paper's
# protocol (the settings of `mamlnp/run/classify.py`, all 60,000 iterations done); a run that
# is not is labelled so on every figure and table below:
#
# ```bash
# python -m mamlnp download omniglot                    # the data, once (SHA-256 checked)
# python -m mamlnp train omniglot --shots 1             # runs/omniglot-5way-1shot-maml (60,000 iterations)
# python -m mamlnp evaluate runs/omniglot-5way-1shot-maml    # its eval/ folder: 600 test episodes
# ```
#
# (`python -m mamlnp reproduce omniglot` trains and evaluates both 1-shot and 5-shot into
# `runs/reproduce-omniglot/`; it is found too.) Otherwise the notebook trains a short run
# itself. Section 7 finds the conv net's run the same way (its commands are there). The test suite's fast mode (`MAMLNP_FAST=1`) ignores `runs/` and trains a tiny
# network for a few dozen iterations, to check that the notebook runs: its accuracies mean
# nothing.
#
# **Dimension legend.** N ways (classes per episode), K support and Q query drawings per
# class, D = 784 pixels, H hidden units, P parameters, T episodes, s inner steps.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads: NumPy's BLAS on one
                                                    # thread (section 6 says why)
import json
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np

import mamlnp
from mamlnp.check import gradcheck
from mamlnp.meta import maml
from mamlnp.nn import batchnorm as BN
from mamlnp.nn.losses import softmax
from mamlnp.nn.spec import describe, spec_of
from mamlnp.run import classify as CL
from mamlnp.run import classify_report as CR

FAST = os.environ.get("MAMLNP_FAST") == "1"         # set by the test suite
REPO = pathlib.Path(mamlnp.__file__).resolve().parents[1]
RUNS = REPO / "runs"
WAYS, ALPHA = 5, CL.omniglot_defaults({})["alpha"]  # 5-way; α = 2.0 on the mean loss (classify.py)
PAPER_SIZES = (784, 256, 128, 64, 64, WAYS)
BACKEND = "numpy" if FAST else None     # fast mode: the NumPy reference (no kernels to compile)
T0 = time.perf_counter()
print(f"fast mode: {FAST}; command-line runs are looked for in <repository>/{RUNS.name}/")

try:
    family = mamlnp.OmniglotTasks(ways=WAYS)        # $MAMLNP_DATA_DIR, else the user cache
except mamlnp.InputError as exc:
    family = None
    print("No Omniglot data found, so sections 1, 3-6 are skipped and section 2 runs on "
          "synthetic inputs.\nGet the data with:  python -m mamlnp download omniglot\n"
          f"(the library said: {exc})")
else:
    print(family)


def find_run(shots, kind="mlp"):
    """The folder of a command-line 5-way run of the MLP (``kind`` "mlp") or the conv net
    ("conv") with a checkpoint (None in fast mode or if absent)."""
    conv = "-conv" if kind == "conv" else ""
    name = f"omniglot-{WAYS}way-{shots}shot{conv}-maml"
    for d in (RUNS / name, RUNS / f"reproduce-omniglot{conv}" / name):
        if not FAST and (d / "checkpoint.npz").exists():
            return d
    return None


def protocol_gaps(model, cfg, shots, kind="mlp"):
    """How a run of the MLP (``kind`` "mlp") or the conv net ("conv") differs from the paper's
    N-way K-shot protocol (mamlnp/run/classify.py): short phrases, empty for a finished
    protocol run."""
    want = CL.omniglot_defaults({"ways": WAYS, "shots": shots}, kind)
    gaps = [f"{k} = {cfg.get(k)} (protocol: {want[k]})"
            for k in ("ways", "shots", "query", "alpha", "beta", "inner_steps", "meta_batch",
                      "iterations") if cfg.get(k) != want[k]]
    if cfg.get("method") != "maml" or cfg.get("first_order"):
        gaps.append(f"method {cfg.get('method')}, first_order={cfg.get('first_order')} "
                    "(protocol: maml, exact second order)")
    if kind == "conv" and model.config() != mamlnp.ConvNet(ways=WAYS).config():
        gaps.append(f"network {describe(cfg['model'])} (protocol: the paper's conv net)")
    elif kind == "mlp" and (tuple(model.sizes) != (784, *want["hidden"], WAYS)
                            or not model.batch_norm):
        gaps.append(f"network {'-'.join(map(str, model.sizes))} (protocol: the paper's MLP)")
    if cfg["iteration"] < cfg["iterations"]:
        gaps.append(f"stopped at iteration {cfg['iteration']:,} of {cfg['iterations']:,}")
    return gaps


RUN1 = find_run(1) if family is not None else None
RUN_NOTE = ""                     # appended to titles when the run is not the protocol
if RUN1 is not None:
    net, theta_run, run_cfg = mamlnp.load_checkpoint(str(RUN1))
    gaps = protocol_gaps(net, run_cfg, 1)
    print(f"loaded {RUN1.relative_to(REPO)}: {run_cfg['iteration']:,} of "
          f"{run_cfg['iterations']:,} iterations")
    if gaps:
        RUN_NOTE = f" [NOT the protocol: {run_cfg['iteration']:,} iterations]"
        print("THIS RUN IS NOT THE PAPER'S PROTOCOL, so its figures below are not the "
              "protocol's results:\n  " + "\n  ".join(gaps))
    else:
        print("the paper's 5-way 1-shot protocol, finished (mamlnp/run/classify.py)")
else:
    net = mamlnp.MLP(PAPER_SIZES, "relu", "softmax_xent", batch_norm=True)
    theta_run = None
    print("no command-line 1-shot run used: sections 2-3 show the untrained network θ₀")
theta_show = theta_run if theta_run is not None else net.init(seed=0, scheme="normal")
print(net, "P =", f"{net.num_params:,}")

# %% [markdown]
# ## 1 · An episode, drawn
#
# **A class is a character in one rotation.** Omniglot has 1623 characters from 50 alphabets,
# each drawn once by 20 people. The MAML split (cbfinn/maml, `mamlnp/tasks/omniglot.py`)
# shuffles the characters with seed 1 and cuts them: meta-training, meta-validation and test
# characters never overlap, so a test episode is made of characters the network never saw.
# Each class of an episode is one character turned by a random multiple of 90°; the same
# character turned differently is a different class, so each split holds four times as many
# classes as characters.

# %%
if family is not None:
    alphabets = {name.split("/")[0] for name in family.keys}
    print(f"{len(family.keys):,} characters from {len(alphabets)} alphabets, 20 drawings each")
    print(f"{'split':<6} {'characters':>10} {'classes (x4 rotations)':>23} {'drawings':>9}")
    for split in ("train", "val", "test"):
        C = len(family.split[split])
        print(f"{split:<6} {C:>10,} {4 * C:>23,} {20 * C:>9,}")

# %% [markdown]
# Test episode 0 of the evaluation (`OmniglotTasks.episodes("test", …, seed=2017)`, the
# 600 episodes `python -m mamlnp evaluate` scores), 5-way 1-shot with one query drawing per
# class (Q = K, as the reference). `episode_classes` says which character, rotation and
# drawings stand behind each label. Labels are assigned at random in every episode: label 0
# means nothing across episodes.

# %%
if family is not None:
    K1 = 1
    episode = family.episodes("test", 1, K1, K1, seed=CL.TEST_SEED)           # T = 1
    xs, ys, xq, yq = episode.task(0)                                          # (N·K, D), (N·K, N), …
    info = family.episode_classes("test", K1, K1, seed=CL.TEST_SEED, index=0)
    fig, axes = plt.subplots(2, WAYS, figsize=(2.1 * WAYS, 5.0), constrained_layout=True)
    for n, c in enumerate(info):
        for row, (x, kind, d) in enumerate(((xs[n], "support", c["support_drawings"][0]),
                                            (xq[n], "query", c["query_drawings"][0]))):
            ax = axes[row, n]
            ax.imshow(x.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{kind}: label {c['label']}\n{c['character'].replace('_', ' ')}\n"
                         f"rotated {c['rotation']}°, drawing {d}", fontsize=7)
    fig.suptitle("A 5-way 1-shot test episode: top, the support set (one drawing per class); "
                 "bottom, the query set (another person's drawing)", fontsize=9)
    plt.show()

# %% [markdown]
# ## 2 · Batch norm by hand
#
# Per hidden unit, over the N rows of the batch being normalised:
# $\mu = \bar z$, $\sigma^2 = \overline{(z-\mu)^2}$, $s = (\sigma^2+\varepsilon)^{-1/2}$,
# $\hat z = (z-\mu)s$, $u = \gamma\odot\hat z + \beta$ (ε = 1e-3, TensorFlow's default, which the
# reference uses). The backward pass has to differentiate through μ and σ², which depend on
# every row:
#
# $$\frac{\partial L}{\partial z} = s\odot\Big(\delta - \bar\delta - \hat z\odot\overline{\delta\odot\hat z}\Big),
#   \qquad \delta = \gamma\odot\frac{\partial L}{\partial u},$$
#
# and the R-passes (for H v) differentiate that once more (`mamlnp/nn/batchnorm.py`). First the
# forward pass on a small batch, N = 6 points, H = 4 units with very different scales:

# %%
rng = np.random.default_rng(0)
z = rng.normal(loc=[0.0, 5.0, -3.0, 100.0], scale=[1.0, 0.1, 4.0, 30.0], size=(6, 4))  # (N, H)
gamma, beta = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.0, 1.0, 0.0, -1.0])           # (H,)
u, cache = BN.batchnorm_forward(z, gamma, beta, eps=1e-3)
zhat = cache[0]
np.set_printoptions(precision=4, suppress=True)
print("z: mean per unit", z.mean(0), " std", z.std(0))
print("ẑ: mean per unit", zhat.mean(0), " std", zhat.std(0),
      " (std = σ/√(σ²+ε): just below 1 for a small σ)")
print("u = γ ẑ + β: mean", u.mean(0), " (= β)  std", u.std(0), " (≈ |γ|)")

# %% [markdown]
# **Live checks.** A small batch-norm network (P small enough for a full finite-difference
# sweep and a dense Hessian), γ and β moved away from their initial 1 and 0, softmax
# cross-entropy on 7 points: the gradient against centred differences of the loss (every
# coordinate), H v from the R-pass against centred differences of the gradient, the symmetry
# of the R-pass, and the dense Hessian (P HVPs: every column) against two finite-difference
# Hessians and its transpose. Then the same checks on the
# paper's 784-256-128-64-64-5 network along random directions, on a support set (real
# drawings, or synthetic inputs without the data). Relative errors
# $\|a-b\|/\max(\|a\|,\|b\|)$.

# %%
small, th_small, x_small, y_small = gradcheck.draw_case(0, (6, 5, 4, 3), "tanh", "softmax_xent",
                                                        n=7, batch_norm=True)
x_paper = xs if family is not None else rng.uniform(0, 1, size=(WAYS, 784))   # (N·K, D)
y_paper = ys if family is not None else np.eye(WAYS)
rows = [gradcheck.check_gradient(small, th_small, x_small, y_small,
                                 label=f"small BN net (P={small.num_params}): gradient"),
        gradcheck.check_hvp(small, th_small, x_small, y_small, num_directions=5,
                            label="small BN net: HVP vs FD (5 directions)"),
        gradcheck.check_symmetry(small, th_small, x_small, y_small, label="small: <u,Hv> = <Hu,v>"),
        *gradcheck.check_hessian(small, th_small, x_small, y_small, label="small: dense H"),
        gradcheck.check_gradient(net, theta_show, x_paper, y_paper,
                                 label="paper net: gradient (10 directions)"),
        gradcheck.check_hvp(net, theta_show, x_paper, y_paper, label="paper net: HVP (3 directions)"),
        gradcheck.check_symmetry(net, theta_show, x_paper, y_paper, label="paper net: <u,Hv> = <Hu,v>")]
print(gradcheck.format_table(rows))
print("all passed" if all(r.passed for r in rows) else "SOME CHECK FAILED")

# %% [markdown]
# **The bias before batch norm has zero gradient.** Adding a constant c to $b_l$ adds c to
# every row of $z_l$ and to its mean μ, so $z - \mu$, σ² and everything after are unchanged:
# the loss does not depend on $b_l$ at all. Its exact gradient is zero, and so is its row of
# the Hessian; what the code computes is zero up to rounding (backprop sums
# $\partial L/\partial z$ over the rows, and those sum to zero by the formula above). The
# parameter is redundant, kept only so that the layout matches the reference's; its
# meta-gradient is zero too, so meta-training never moves it. The output layer's bias has no
# batch norm after it and a normal gradient.

# %%
def block_norms(model, vec, x):
    """max |·| of ``vec`` (P,) per block: W_l, b_l (and γ_l, β_l) of each layer."""
    out = []
    for l, block in enumerate(model.unflatten(vec), start=1):
        names = ("W", "b", "γ", "β")[:len(block)]
        out.append([f"{n}{l}" + f" {np.abs(v).max():.1e}" for n, v in zip(names, block)])
    return out


_, g_paper = net.loss_and_grad(theta_show, x_paper, y_paper)
v = np.random.default_rng(1).standard_normal(net.num_params)
hv_paper = net.hvp(theta_show, x_paper, y_paper, v)
for name, vec in (("∇L", g_paper), ("H v", hv_paper)):
    print(f"max |{name}| per block (paper net, one support set):")
    for layer in block_norms(net, vec, x_paper):
        print("   " + "   ".join(layer))
b_hidden = [np.abs(blk[1]).max() for blk in net.unflatten(g_paper)[:-1]]
w_hidden = [np.abs(blk[0]).max() for blk in net.unflatten(g_paper)[:-1]]
print(f"\nhidden layers: largest |∂L/∂b_l| over all of them = {max(b_hidden):.1e}; largest "
      f"|∂L/∂W_l| at least {min(w_hidden):.1e} in every one")

# %% [markdown]
# **Support and query statistics differ.** In the inner loop, batch norm normalises the
# support rows with the support batch's μ and σ²; after adaptation the query rows are
# normalised with the query batch's own (the reference's `tf.contrib.layers.batch_norm` runs
# with `is_training=True` at test time too, and `mamlnp` does the same; there are no running
# averages). With 5 drawings in each batch the two sets of statistics differ; the line under
# the figure measures by how much. Below,
# the first layer's pre-normalisation $z_1 = xW_1 + b_1$ on the episode of section 1 (or on
# synthetic inputs), per unit: the query batch's mean and standard deviation against the
# support batch's.

# %%
x_sup = x_paper
x_qry = xq if family is not None else rng.uniform(0, 1, size=(WAYS, 784))
W1, b1 = net.unflatten(theta_show)[0][:2]
z_s, z_q = x_sup @ W1 + b1, x_qry @ W1 + b1                 # (N·K, H1), (N·Q, H1)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
for ax, (a, b, what) in zip(axes, ((z_s.mean(0), z_q.mean(0), "mean μ"),
                                   (z_s.std(0), z_q.std(0), "standard deviation σ"))):
    ax.plot(a, b, ".", ms=4)
    lim = [min(a.min(), b.min()), max(a.max(), b.max())]
    ax.plot(lim, lim, "k:", lw=1, label="equal")
    ax.set(xlabel=f"support batch {what}", ylabel=f"query batch {what}",
           title=f"layer 1, one point per unit: {what}")
    ax.legend(fontsize=8)
fig.suptitle("Batch statistics of the support and query batches of one episode "
             "(pre-normalisation z₁; the dotted line is equality)", fontsize=9)
plt.show()
rel_mu = np.median(np.abs(z_q.mean(0) - z_s.mean(0)) / z_s.std(0))
rel_sd = np.median(np.abs(z_q.std(0) / z_s.std(0) - 1))
print(f"median over units: |μ_Q − μ_S| = {rel_mu:.2f} σ_S, |σ_Q/σ_S − 1| = {rel_sd:.2f}")

# %% [markdown]
# **What that does at test time: a query point's prediction depends on the other query
# points.** Adapt θ on the support set (one step), then classify query drawing 0 three ways:
# in its own query batch (the protocol), in a batch with the other query drawings replaced by
# those of another test episode, and alone (a batch of one: z − μ = 0, so every hidden unit
# outputs β and the prediction is the same whatever the drawing). Then, over several test
# episodes, how often a query point's predicted class changes when its batch-mates are swapped.
# Evaluation is therefore *transductive*: the 600-episode accuracies of section 5 are those of
# whole query batches, as in the reference.

# %%
theta_1 = mamlnp.adapt(net, theta_show, x_sup, y_paper, ALPHA, 1, backend=BACKEND)
if family is not None:
    other = family.episodes("test", 1, 1, 1, seed=CL.TEST_SEED, start=1).x_query[0]
else:
    other = rng.uniform(0, 1, size=(WAYS, 784))
batches = {"own query batch": x_qry,
           "with another episode's query drawings": np.vstack([x_qry[:1], other[1:]]),
           "alone (batch of one)": x_qry[:1]}
print("class probabilities of query drawing 0 (true label 0) after one step:")
for name, xb in batches.items():
    p = softmax(net.forward(theta_1, xb))[0]
    print(f"  {name:<40} {np.array2string(p, precision=3)}  -> predicted {p.argmax()}")
p_alone = softmax(net.forward(theta_1, x_qry[:1])), softmax(net.forward(theta_1, other[:1]))
print("alone, two different drawings get identical outputs:",
      np.allclose(p_alone[0], p_alone[1]))

if family is not None:
    E = 10 if FAST else 100
    eps_a = family.episodes("test", E, 1, 1, seed=CL.TEST_SEED)
    eps_b = family.episodes("test", E, 1, 1, seed=CL.TEST_SEED, start=E)   # other episodes
    changed = 0
    for t in range(E):
        xs_t, ys_t, xq_t, _ = eps_a.task(t)
        th_t = mamlnp.adapt(net, theta_show, xs_t, ys_t, ALPHA, 1, backend=BACKEND)
        own = net.forward(th_t, xq_t).argmax(1)
        for i in range(WAYS):                    # point i with the others from episode E + t
            mixed = eps_b.x_query[t].copy()
            mixed[i] = xq_t[i]
            changed += int(net.forward(th_t, mixed)[i].argmax() != own[i])
    print(f"\nover {E} test episodes: {changed} of {E * WAYS} query predictions "
          f"({100 * changed / (E * WAYS):.1f} %) change when the other query drawings are "
          f"replaced by another episode's")

# %% [markdown]
# ## 3 · One inner step, seen
#
# The class probabilities the network gives each query drawing of the episode of section 1,
# before adaptation (θ), after one SGD step on the 5 support drawings (the training protocol)
# and after 10 (`mamlnp.meta.maml.inner_loop`, α = 2.0 on the mean cross-entropy). Rows: the
# query drawing's true label; columns: the predicted class. Learning from one example is the
# mass moving to the diagonal.

# %%
if family is not None:
    show_steps = (0, 1, 10)
    thetas = maml.inner_loop(net, theta_show, xs, ys, ALPHA, max(show_steps))
    probs = {s: softmax(net.forward(thetas[s], xq)) for s in show_steps}   # (N·Q, N) each
    fig, axes = plt.subplots(1, len(show_steps), figsize=(12, 4), constrained_layout=True)
    for ax, s in zip(axes, show_steps):
        im = ax.imshow(probs[s], vmin=0, vmax=1, cmap="Blues")
        for i in range(WAYS):
            for j in range(WAYS):
                ax.text(j, i, f"{probs[s][i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if probs[s][i, j] > 0.6 else "black")
        acc = np.mean(probs[s].argmax(1) == yq.argmax(1))
        ax.set(xticks=range(WAYS), yticks=range(WAYS), xlabel="predicted class",
               ylabel="query drawing's true label",
               title=f"{'before adaptation' if s == 0 else f'after {s} step' + 's' * (s > 1)}"
                     f" (accuracy {acc:.0%})")
    fig.colorbar(im, ax=axes, shrink=0.8, label="class probability")
    fig.suptitle("Query class probabilities of one test episode as the network adapts to "
                 "its 5 support drawings", fontsize=10)
    plt.show()
    for s in show_steps:
        print(f"after {s:2d} steps: mean probability of the true class "
              f"{np.mean(probs[s][yq.astype(bool)]):.3f}")

# %% [markdown]
# ## 4 · Training
#
# `mamlnp.meta_train(task="omniglot", …)` with the protocol of `mamlnp/run/classify.py`:
# 32 episodes per meta-batch, one inner step of α = 2.0, exact second order, Adam β = 0.001,
# 60,000 iterations; every 500 iterations the history records the mean meta-loss (query
# cross-entropy after the inner step) and the accuracy on 100 fixed validation episodes
# (validation characters). The loaded run's curve is read from its `history.csv` (the line
# under the figure says how many iterations that run did); without a run, a short one is
# trained here (fast mode: a tiny 784-64-64-5 network), its duration announced from a
# measured meta-gradient.

# %%
def read_history(run_dir):
    rows = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    return {k: np.atleast_1d(rows[k]) for k in rows.dtype.names}


# a short run's settings when no command-line run exists (section 7's conv net uses them too)
SHORT = dict(task="omniglot", ways=WAYS, shots=1, seed=0, progress=False, backend=BACKEND,
             meta_batch=8 if FAST else 32, iterations=40 if FAST else 1000,
             eval_every=10 if FAST else 100, val_tasks=20 if FAST else 100)


def train_here(cfg, model, theta0, what):
    """A short run of ``cfg`` (meta_train's keywords) trained here, its duration announced
    first from one meta-gradient of ``model`` (cfg's network) at ``theta0``: its TrainResult."""
    b = family.sample(0, cfg["meta_batch"], 1)
    mamlnp.meta_gradient(model, theta0, b, ALPHA, 1, backend=BACKEND)   # warm-up (compiles)
    t = time.perf_counter()
    mamlnp.meta_gradient(model, theta0, b, ALPHA, 1, backend=BACKEND)
    per_it = time.perf_counter() - t
    print(f"training {cfg['iterations']} iterations of {what} here: about "
          f"{per_it * cfg['iterations']:.0f} s (one meta-gradient took {per_it:.2f} s)"
          f", plus validation", flush=True)
    t = time.perf_counter()
    res = mamlnp.meta_train(**cfg)
    print(f"trained in {time.perf_counter() - t:.0f} s")
    return res


if family is None:
    history = None
elif RUN1 is not None:
    history = read_history(RUN1)
    curve_source = f"command-line run {RUN1.relative_to(REPO)}{RUN_NOTE}"
    trained_model, trained_theta, trained_cfg = net, theta_run, run_cfg
else:
    small_cfg = dict(SHORT, hidden=[64, 64] if FAST else [256, 128, 64, 64])
    probe_model = mamlnp.MLP((784, *small_cfg["hidden"], WAYS), "relu", "softmax_xent",
                             batch_norm=True)
    res = train_here(small_cfg, probe_model, probe_model.init(0, "normal"),
                     f"a 784-{'-'.join(map(str, small_cfg['hidden']))}-5 network")
    history = res.history
    curve_source = f"trained in this notebook, {small_cfg['iterations']} iterations: NOT the protocol"
    trained_model, trained_theta, trained_cfg = res.model, res.theta, res.config

if history is not None:
    c = trained_cfg
    print(f"protocol of this run: {c['meta_batch']} episodes per meta-batch, {c['inner_steps']} "
          f"inner step(s) of α = {c['alpha']}, {'first' if c['first_order'] else 'exact second'} "
          f"order, {c['optimizer']} β = {c['beta']}, {c['iteration']:,} of {c['iterations']:,} "
          f"iterations done, network "
          f"{'-'.join(map(str, trained_model.sizes))}")
    fig, ax1 = plt.subplots(figsize=(8.5, 3.8), constrained_layout=True)
    mark = dict(marker="o", ms=3 if len(history["iteration"]) > 20 else 5)   # one row shows too
    ax1.plot(history["iteration"], history["meta_loss"], color="C0", **mark)
    ax1.set(xlabel="meta-iteration", ylabel="meta-loss (query cross-entropy)", yscale="log")
    ax1.yaxis.label.set_color("C0")
    ax2 = ax1.twinx()
    ax2.plot(history["iteration"], 100 * history["val_accuracy"], color="C1", **mark)
    ax2.set_ylabel("validation accuracy (%), 1 step", color="C1")
    ax1.set_title(f"MAML 5-way 1-shot meta-training ({curve_source})", fontsize=9)
    plt.show()
    print(f"{len(history['iteration'])} history rows; last, iteration "
          f"{int(history['iteration'][-1]):,}: meta-loss "
          f"{history['meta_loss'][-1]:.3f}, validation accuracy {100 * history['val_accuracy'][-1]:.1f} %"
          f"; best validation accuracy {100 * history['val_accuracy'].max():.1f} %")

# %% [markdown]
# ## 5 · Results: accuracy against inner steps, beside the paper
#
# Test accuracy on 600 fixed test episodes (test characters), after 0 … 10 SGD steps at α,
# mean ± 95% CI (1.96 · std / √600, as cbfinn/maml's `main.py`), read from the run's
# `eval/omniglot_results.json` (written by `python -m mamlnp evaluate RUN`). The paper's
# Table 1 reports the MLP at 89.7 ± 1.1 % (5-way 1-shot) and 97.5 ± 0.6 % (5-way 5-shot),
# tested with 3 steps (appendix A.1). Without an evaluation, the network of section 4 is
# evaluated here by the same function (`classify_report.evaluate_run`) on the same episodes
# (fast mode: only the first few).

# %%
def load_eval(run_dir, cfg):
    """The run's evaluation (rows, per-episode accuracies (T, S+1)) if its eval/ is at least
    as new as its checkpoint and scored 0 … 10 steps at the run's α (``cfg``); else None."""
    path = run_dir / "eval" / "omniglot_results.json"
    if not path.exists():
        return None
    if path.stat().st_mtime < (run_dir / "checkpoint.npz").stat().st_mtime:
        print(f"{path.relative_to(REPO)} is older than the checkpoint: not used")
        return None
    with open(path) as f:
        doc = json.load(f)
    if len(doc["rows"]) < 11 or any(r["alpha"] != cfg["alpha"] for r in doc["rows"]):
        print(f"{path.relative_to(REPO)} is not 0 … 10 steps at the run's α: not used")
        return None
    return doc["rows"], np.array(doc["accuracy"])


results, episode_acc = {}, {}          # K: (rows, source), K: accuracies (T, S+1)
if family is not None:
    for K in (1, 5):
        run_dir = find_run(K)
        if run_dir is None:
            continue
        model_k, _, cfg_k = mamlnp.load_checkpoint(str(run_dir))
        ev = load_eval(run_dir, cfg_k)
        if ev is not None:
            rows_k, episode_acc[K] = ev
            note = (f" [NOT the protocol: {cfg_k['iteration']:,} iterations]"
                    if protocol_gaps(model_k, cfg_k, K) else "")
            results[K] = (rows_k, f"{run_dir.relative_to(REPO)}/eval{note}")
    if 1 not in results:
        n_eval = 20 if FAST else CL.TEST_EPISODES          # 600, as `evaluate`
        r = CR.evaluate_run(trained_model, trained_theta, trained_cfg, episodes=n_eval,
                            family=family)
        results[1] = (r["rows"], f"the network of section 4 ({curve_source}), evaluated here "
                                 f"on the first {n_eval} of the {CL.TEST_EPISODES} test episodes")
        episode_acc[1] = r["accuracy"]

if results:
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    shown = []                                          # every value drawn, for the y-range
    for K, (rows_k, src) in sorted(results.items()):
        steps = np.array([r["steps"] for r in rows_k])
        mean, ci = (np.array([100 * r[k] for r in rows_k]) for k in ("mean", "ci95"))
        after = steps >= 1                              # 0 steps (chance, ~20 %) is in the table
        label = f"mamlnp MAML 5-way {K}-shot (0 steps: {mean[~after][0]:.1f} %, off the axis)"
        if "NOT the protocol" in src:
            label += "\n" + (src[src.index("[NOT"):] if "[NOT" in src
                              else "[NOT the protocol: a short run trained here]")
        line, = ax.plot(steps[after], mean[after], "o-", ms=3, label=label)
        ax.fill_between(steps[after], (mean - ci)[after], (mean + ci)[after],
                        color=line.get_color(), alpha=0.2)
        p = CL.PAPER_TABLE1_MLP[(5, K)]
        ax.errorbar([3], [p[0]], [p[1]], fmt="s", color=line.get_color(), capsize=3,
                    label=f"paper, Table 1 MLP, {K}-shot (3 steps)")
        shown += [*(mean - ci)[after], *(mean + ci)[after], p[0] - p[1], p[0] + p[1]]
    ax.set_ylim(np.floor(min(shown)) - 1, min(100.5, np.ceil(max(shown)) + 1))
    ax.set(xlabel="SGD steps on the support set", ylabel="test accuracy (%)",
           xticks=steps[steps >= 1],
           title="Omniglot 5-way: test accuracy after 1 … 10 inner steps (band: 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plt.show()

    print(f"{'5-way':<7} {'steps':>5} {'mamlnp (mean ± 95% CI)':>24} {'episodes':>9} "
          f"{'paper, Table 1 MLP':>19}")
    for K in (1, 5):
        paper = "{} ± {} %".format(*CL.PAPER_TABLE1_MLP[(5, K)])
        if K not in results:
            print(f"{K}-shot  not run yet (python -m mamlnp train omniglot --shots {K}, then "
                  f"python -m mamlnp evaluate runs/omniglot-5way-{K}shot-maml); paper: {paper}")
            continue
        for r in results[K][0]:
            if r["steps"] in CR.TABLE_STEPS:
                print(f"{K}-shot  {r['steps']:>5} {100 * r['mean']:>14.1f} ± {100 * r['ci95']:.1f} % "
                      f"{r['n']:>9} {paper if r['steps'] == 3 else '':>19}")
    for K, (_, src) in sorted(results.items()):
        print(f"{K}-shot rows from: {src}")

# %% [markdown]
# ## 6 · Second order versus first order on classification
#
# FOMAML drops the Hessian terms of the meta-gradient (it uses $\nabla L_Q(\theta')$ as if
# θ' did not depend on θ). What that saves and what it costs here, measured in this notebook:
# (a) the time of one meta-gradient on a protocol meta-batch of the paper's network, exact
# (SO) against first order (FO), for the NumPy reference (with NumPy's BLAS on one thread,
# set in the first cell: on products this small a multi-threaded OpenBLAS mostly waits for
# its own threads, and on a machine shared with other jobs it can be many times slower) and
# (in full mode) the compiled backend that training uses by default; (b) a short training of each from the same θ₀ on the same
# budget (same iterations, same episodes: the run's one seed), their validation accuracy and
# wall time; (c) the size of the Hessian term, $\|g_{SO}-g_{FO}\|/\|g_{SO}\|$, on a fixed
# batch of training episodes at checkpoints of θ during the short SO training, and at the
# full run's θ when it exists.

# %%
if family is not None:
    T_time, repeats, times = (4, 2, {}) if FAST else (32, 3, {})
    b_time = family.sample(1, T_time, 1)
    backends = ["numpy"] if FAST or maml.kernels_for(net, "numba") is None else ["numpy", "numba"]
    th_time = net.init(0, "normal")
    import numba
    print(f"paper net, one meta-gradient on T = {T_time} episodes (5-way 1-shot), 1 inner step, "
          f"best of {repeats} after a warm-up; NumPy's BLAS threads: OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}, compiled path: "
          f"{numba.get_num_threads()} Numba thread(s):")
    for be in backends:
        ms = {}
        for fo in (False, True):
            mamlnp.meta_gradient(net, th_time, b_time, ALPHA, 1, first_order=fo, backend=be)
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                mamlnp.meta_gradient(net, th_time, b_time, ALPHA, 1, first_order=fo, backend=be)
                ts.append(time.perf_counter() - t)
            ms[fo] = 1e3 * min(ts)
        print(f"  {be:>5}: SO {ms[False]:8.1f} ms   FO {ms[True]:8.1f} ms   "
              f"SO/FO = {ms[False] / ms[True]:.2f}")
        times[be] = ms
    if "numba" in times:
        print(f"  numpy / numba: SO {times['numpy'][False] / times['numba'][False]:.1f}x, "
              f"FO {times['numpy'][True] / times['numba'][True]:.1f}x")

# %% [markdown]
# **What the NumPy/compiled ratio measures** (full mode). Not the same arithmetic done
# faster. The NumPy reference (`mamlnp/meta/maml.py`) is the textbook algorithm: one task at
# a time, it forms each task's adapted parameters θ′, a new 784×256 first layer included (32
# of them per meta-gradient), and multiplies 5-row matrices, where BLAS runs far below its
# peak, on one thread. The compiled path computes the same meta-gradient (to 1e-12,
# `tests/test_classify_kernels.py`) with less work, on all of Numba's threads: with a scalar α
# the adapted first layer is W₁ plus a rank-K correction and is never formed, the tasks of a
# group are stacked into one product per layer, and the zero pixels of the drawings are
# skipped ([docs/performance.md](../docs/performance.md) has the details). The ratio is
# therefore algorithm, compilation and thread count together.

# %%
if family is not None:
    budget = dict(task="omniglot", ways=WAYS, shots=1, seed=0, progress=False, backend=BACKEND,
                  hidden=[64, 64] if FAST else [256, 128, 64, 64],
                  meta_batch=8 if FAST else 32, iterations=30 if FAST else 600,
                  eval_every=10 if FAST else 100, val_tasks=20 if FAST else 100)
    probe_batch = family.sample(99, 16, 1)
    probe_at = set(np.unique(np.geomspace(1, budget["iterations"], 8).astype(int)).tolist())
    hessian_term = []                                   # (iteration, ‖g_SO − g_FO‖ / ‖g_SO‖)
    probe_seconds = [0.0]                               # the probes' time, not the training's

    def probe(step):
        """meta_train callback: the Hessian term at θ after ``step.iteration`` (False: go on)."""
        if step.iteration in probe_at:
            t_probe, m = time.perf_counter(), probe_model_6
            _, g_so = mamlnp.meta_gradient(m, step.theta, probe_batch, ALPHA, 1, backend=BACKEND)
            _, g_fo = mamlnp.meta_gradient(m, step.theta, probe_batch, ALPHA, 1, first_order=True,
                                           backend=BACKEND)
            hessian_term.append((step.iteration, np.linalg.norm(g_so - g_fo) / np.linalg.norm(g_so)))
            probe_seconds[0] += time.perf_counter() - t_probe
        return False

    probe_model_6 = mamlnp.MLP((784, *budget["hidden"], WAYS), "relu", "softmax_xent",
                               batch_norm=True)
    runs6 = {}
    for method in ("maml", "fomaml"):
        print(f"{method}: {budget['iterations']} iterations of 784-"
              f"{'-'.join(map(str, budget['hidden']))}-5, {budget['meta_batch']} episodes each",
              flush=True)
        t = time.perf_counter()
        r6 = mamlnp.meta_train(method=method, callback=probe if method == "maml" else None,
                               **budget)
        wall = time.perf_counter() - t - (probe_seconds[0] if method == "maml" else 0.0)
        runs6[method] = (r6, wall)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    for method, (r6, wall) in runs6.items():
        axes[0].plot(r6.history["iteration"], 100 * r6.history["val_accuracy"], "o-", ms=3,
                     label=f"{'MAML (exact SO)' if method == 'maml' else 'FOMAML (FO)'}, {wall:.1f} s")
    axes[0].set(xlabel="meta-iteration", ylabel="validation accuracy (%), 1 step",
                title="same budget: exact second order vs first order")
    axes[0].legend(fontsize=8)
    it6, size6 = map(np.array, zip(*hessian_term))
    axes[1].plot(it6, size6, "o-", ms=3)
    axes[1].set(xlabel="meta-iteration of the SO run (log scale)", xscale="log",
                ylabel="‖g_SO − g_FO‖ / ‖g_SO‖", title="relative size of the Hessian term")
    fig.suptitle("Second vs first order, 5-way 1-shot, a short training of each "
                 "(validation: fixed validation episodes)", fontsize=9)
    plt.show()
    for method, (r6, wall) in runs6.items():
        print(f"{method:>6}: final validation accuracy {100 * r6.history['val_accuracy'][-1]:.1f} %"
              f", wall time {wall:.1f} s (training and validation; the probes' time taken out)")
    acc6 = {m: 100 * r6.history["val_accuracy"][-1] for m, (r6, _) in runs6.items()}
    ahead = max(acc6, key=acc6.get)
    print(f"on this budget {ahead} ends {abs(acc6['maml'] - acc6['fomaml']):.1f} points ahead "
          f"on the validation episodes; SO/FO wall time "
          f"{runs6['maml'][1] / runs6['fomaml'][1]:.2f}")
    print("Hessian term during the SO run: " + ", ".join(f"it {i}: {s:.3f}" for i, s in hessian_term))
    for label, m, th in (("paper net at θ₀", net, net.init(0, "normal")),
                         (f"paper net at the command-line run's θ (iteration "
                          f"{run_cfg['iteration']:,})" if RUN1 else "", net, theta_run)):
        if th is None:
            continue
        _, g_so = mamlnp.meta_gradient(m, th, probe_batch, ALPHA, 1, backend=BACKEND)
        _, g_fo = mamlnp.meta_gradient(m, th, probe_batch, ALPHA, 1, first_order=True,
                                       backend=BACKEND)
        cos = g_so @ g_fo / (np.linalg.norm(g_so) * np.linalg.norm(g_fo))
        print(f"{label}: ‖g_SO − g_FO‖/‖g_SO‖ = "
              f"{np.linalg.norm(g_so - g_fo) / np.linalg.norm(g_so):.3f}, angle "
              f"{np.degrees(np.arccos(np.clip(cos, -1, 1))):.1f}°")

# %% [markdown]
# Read the printed numbers, not a summary written in advance: a short training on a small
# budget says how the two compare early on, not after 60,000 iterations, and in fast mode
# (a tiny network, a few dozen iterations) the comparison means nothing. The cost ratio is
# what one Hessian-vector product per inner step adds to the meta-gradient. The Hessian term
# is what FOMAML gives up: a ratio ‖g_SO − g_FO‖/‖g_SO‖ near 1 with an angle near 90° means
# the first-order direction is nearly orthogonal to the exact one. A large step (α = 2.0 on
# the mean loss of 5 support drawings) takes θ' far from θ, and $\nabla L_Q(\theta')$ then
# says little about how $L_Q(\theta')$ changes with θ; the factor $(I - \alpha H_S)$ it drops
# is far from the identity.

# %% [markdown]
# ## 7 · The paper's conv net: its first-layer filters, and its accuracy beside the MLP's
#
# The paper's other Omniglot network (sec. 5.2; cbfinn/maml's `forward_conv`) is
# `mamlnp.ConvNet` (`mamlnp/nn/convnet.py`, derivation
# [docs/derivations/conv.md](../docs/derivations/conv.md)): four blocks, each a 3×3
# convolution with 64 filters, stride 2 and zero padding 1, batch norm per channel (over the
# N·H_l·W_l pixels of the batch, so the support/query remarks of section 2 hold here too) and
# ReLU. A drawing, one 28×28 channel, becomes maps of 14×14×64, 7×7×64, 4×4×64 and 2×2×64; the
# spatial mean of the last maps gives 64 features, a dense layer the N logits. Its forward,
# backward and R-passes are written by hand like the MLP's, and it is meta-trained by the same
# code on the same protocol; only the network differs. The first cell below prints each
# block's shapes and parameter count from the model itself. The run is found like the MLP's:
#
# ```bash
# python -m mamlnp train omniglot --model conv --ways 5 --shots 1   # runs/omniglot-5way-1shot-conv-maml
# python -m mamlnp evaluate runs/omniglot-5way-1shot-conv-maml      # its eval/: 600 test episodes
# ```
#
# (`python -m mamlnp reproduce omniglot --model conv` writes `runs/reproduce-omniglot-conv/`;
# it is found too.) Otherwise a short run of the conv net is trained here with the settings
# of section 4's short run (fast mode: a tiny net of 16 filters per block, and its numbers
# mean nothing). The cell says which run was loaded, its iteration, and whether it is the
# protocol.

# %%
def conv_shapes(model):
    """One line per layer of a ConvNet: what it does, its output map, its parameters."""
    (C, H, Wd), k, lines = model.in_shape, model.kernel, []
    for l, (F, ((Ho, Wo), _)) in enumerate(zip(model.channels, model.maps)):
        n = model.bn_layout[l][1][1] - model.layout[l][0][0]         # W_l, b_l, γ_l, β_l
        lines.append((f"block {l + 1}: conv {k}×{k}, stride {model.stride}, pad {model.pad}, "
                      f"batch norm, {model.activation}", f"{H}×{Wd}×{C} → {Ho}×{Wo}×{F}", n))
        C, H, Wd = F, Ho, Wo
    lines.append(("spatial mean", f"{H}×{Wd}×{C} → {model.features}", 0))
    lines.append(("dense head", f"{model.features} → {model.ways}",
                  model.num_params - model.layout[-1][0][0]))
    return "\n".join(f"{a:<52} {b:<18} {n:>7,} parameters" for a, b, n in lines) + \
        f"\nP = {model.num_params:,}"


RUN_CONV = find_run(1, "conv") if family is not None else None
CONV_NOTE = ""                                  # appended to titles when not the protocol
if RUN_CONV is not None:
    conv_net, conv_theta, conv_cfg = mamlnp.load_checkpoint(str(RUN_CONV))
    conv_source = f"command-line run {RUN_CONV.relative_to(REPO)}"
    print(f"loaded {RUN_CONV.relative_to(REPO)}: {conv_cfg['iteration']:,} of "
          f"{conv_cfg['iterations']:,} iterations")
    gaps = protocol_gaps(conv_net, conv_cfg, 1, "conv")
    if gaps:
        CONV_NOTE = f" [NOT the protocol: {conv_cfg['iteration']:,} iterations]"
        print("THIS RUN IS NOT THE PAPER'S PROTOCOL, so its figures below are not the "
              "protocol's results:\n  " + "\n  ".join(gaps))
    else:
        print("the paper's 5-way 1-shot protocol with its conv net, finished "
              "(mamlnp/run/classify.py)")
elif family is not None:
    conv_small = dict(SHORT, model="conv", channels=[16] * 4 if FAST else CL.CONV_CHANNELS)
    probe_conv = mamlnp.ConvNet(channels=conv_small["channels"], ways=WAYS)
    res_conv = train_here(conv_small, probe_conv, probe_conv.init(0),
                          f"the {describe(spec_of(probe_conv))} net")
    conv_net, conv_theta, conv_cfg = res_conv.model, res_conv.theta, res_conv.config
    conv_source = "trained in this notebook"
    CONV_NOTE = f" [NOT the protocol: a short run here, {conv_cfg['iteration']:,} iterations]"
    print(f"no command-line conv run used: the short run above{CONV_NOTE}")
else:
    conv_net = mamlnp.ConvNet(ways=WAYS)
    print("no Omniglot data: the paper's conv net's shapes only (nothing trained)")
print(conv_shapes(conv_net))

# %% [markdown]
# **The first layer's filters, before and after meta-training.** Block 1's filters
# W₁ (64, 1, 3, 3) at the run's initial θ₀ and at its final θ. θ₀ is drawn again from the run's
# seed as `mamlnp train` draws it (`mamlnp/run/train.py`: `ConvNet.init` with
# `numpy.random.default_rng(seed)`, cbfinn's Xavier-uniform initialisation), so it is the θ₀
# that run started from. Batch norm follows the convolution, so a filter's bias and scale
# hardly matter (z − μ removes the bias, and a factor c on a filter divides out of
# (z − μ)/√(σ² + ε) while c²σ² ≫ ε): only its pattern does. Each filter is therefore drawn on
# its own colour scale, ± its largest |weight| (red positive, blue negative), in the same
# position in both panels. The lines under the figure say how far the patterns turned (the
# angle between each filter before and after) and how their norms changed.

# %%
def filter_mosaic(W):
    """(F, 1, k, k) filters -> one image: a grid of k×k tiles, each scaled to ± its largest
    |w|, NaN gaps between the tiles."""
    F, _, k, _ = W.shape
    cols = int(np.ceil(np.sqrt(F)))
    img = np.full((-(-F // cols) * (k + 1) - 1, cols * (k + 1) - 1), np.nan)
    for f in range(F):
        r, c = (k + 1) * np.array(divmod(f, cols))                      # the tile's corner
        img[r:r + k, c:c + k] = W[f, 0] / np.abs(W[f, 0]).max()
    return img


if family is not None:
    theta0_conv = conv_net.init(np.random.default_rng(conv_cfg["seed"]))    # as mamlnp train
    W_before = conv_net.unflatten(theta0_conv)[0][0][0]                     # (F, C, k, k)
    W_after = conv_net.unflatten(conv_theta)[0][0][0]                       # (F, C, k, k)
    cmap = plt.get_cmap("RdBu_r").copy()
    cmap.set_bad("white")
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), constrained_layout=True)
    for ax, W, title in ((axes[0], W_before, f"before: θ₀ from the run's seed {conv_cfg['seed']}"),
                         (axes[1], W_after, f"after: iteration {conv_cfg['iteration']:,}")):
        im = ax.imshow(filter_mosaic(W), cmap=cmap, vmin=-1, vmax=1)
        ax.set(xticks=[], yticks=[], title=title)
    fig.colorbar(im, ax=axes, shrink=0.7, label="weight / the filter's largest |weight|")
    fig.suptitle(f"The conv net's {W_after.shape[0]} first-layer {W_after.shape[2]}×"
                 f"{W_after.shape[3]} filters ({conv_source}{CONV_NOTE})", fontsize=9)
    plt.show()
    flat0, flat1 = W_before.reshape(len(W_before), -1), W_after.reshape(len(W_after), -1)
    n0, n1 = np.linalg.norm(flat0, axis=1), np.linalg.norm(flat1, axis=1)       # (F,) each
    angle = np.degrees(np.arccos(np.clip((flat0 * flat1).sum(1) / (n0 * n1), -1, 1)))
    print(f"angle between a filter before and after: median {np.median(angle):.0f}°, range "
          f"{angle.min():.0f}° … {angle.max():.0f}° (90°: unrelated patterns)")
    print(f"filter norm after / before: median {np.median(n1 / n0):.2f}, range "
          f"{(n1 / n0).min():.2f} … {(n1 / n0).max():.2f}")

# %% [markdown]
# **Accuracy against adaptation steps, conv beside MLP.** Both networks on the same test
# episodes: the first n of `OmniglotTasks.episodes("test", …, seed=2017)` (the 600 of
# `python -m mamlnp evaluate`), adapted by 0 … 10 SGD steps of the run's α on each support
# set and scored on its query set. The per-episode accuracies are read from each run's
# `eval/omniglot_results.json` when it is there (the MLP's as in section 5), otherwise
# computed here by `classify_report.evaluate_run` (fast mode: a few episodes); n is the
# smaller count, printed under the table. Mean ± 95% CI (1.96 · std / √n); the last column is
# the per-episode difference conv − MLP and its 95% CI (the same episodes make it a paired
# comparison: how hard an episode is cancels). The squares at 3 steps are the paper's
# Table 1 (MLP and conv rows, 5-way 1-shot), its test setting. The numbers to read are in the
# printed table.

# %%
if family is not None:
    ev = load_eval(RUN_CONV, conv_cfg) if RUN_CONV is not None else None
    if ev is not None:
        conv_acc, conv_from = ev[1], f"{RUN_CONV.relative_to(REPO)}/eval"
    else:
        n_conv = 20 if FAST else CL.TEST_EPISODES                 # 600, as `evaluate`
        t = time.perf_counter()
        conv_acc = CR.evaluate_run(conv_net, conv_theta, conv_cfg, episodes=n_conv,
                                   family=family, backend=BACKEND)["accuracy"]
        conv_from = f"evaluated here ({time.perf_counter() - t:.0f} s)"
    n_both = min(len(conv_acc), len(episode_acc[1]))
    steps = np.arange(11)                                         # 0 … 10
    acc = {"MLP": episode_acc[1][:n_both, :11], "conv": conv_acc[:n_both, :11]}   # (n, 11) each
    summ = {m: [CL.summarize_accuracy(a[:, s]) for s in steps] for m, a in acc.items()}
    diff = [CL.summarize_accuracy(acc["conv"][:, s] - acc["MLP"][:, s]) for s in steps]
    notes = {"MLP": (RUN_NOTE if RUN1 is not None else
                     " [NOT the protocol: a short run trained here]").strip(),
             "conv": CONV_NOTE.strip()}

    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    shown = []
    for (m, s_m), kind in zip(summ.items(), ("mlp", "conv")):
        mean = np.array([100 * r["mean"] for r in s_m])
        ci = np.array([100 * r["ci95"] for r in s_m])
        line, = ax.plot(steps[1:], mean[1:], "o-", ms=3,
                        label=f"{m} (0 steps: {mean[0]:.1f} %, off the axis)"
                              + (f"\n{notes[m]}" if notes[m] else ""))
        ax.fill_between(steps[1:], (mean - ci)[1:], (mean + ci)[1:], color=line.get_color(),
                        alpha=0.2)
        p = CL.PAPER_TABLE1[kind][(WAYS, 1)]
        ax.errorbar([3], [p[0]], [p[1]], fmt="s", color=line.get_color(), capsize=3,
                    label=f"paper, Table 1 {m}, 1-shot (3 steps)")
        shown += [*(mean - ci)[1:], *(mean + ci)[1:], p[0] - p[1], p[0] + p[1]]
    ax.set_ylim(np.floor(min(shown)) - 1, min(100.5, np.ceil(max(shown)) + 1))
    ax.set(xlabel="SGD steps on the support set", ylabel="test accuracy (%)", xticks=steps[1:],
           title=f"Omniglot 5-way 1-shot, the same {n_both} test episodes: conv net and MLP "
                 f"(band: 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    plt.show()

    print(f"{'steps':>5} {'MLP (mean ± 95% CI)':>21} {'conv (mean ± 95% CI)':>21} "
          f"{'conv − MLP (paired)':>21}")
    for s in steps:
        cells = [f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f} %"
                 for r in (summ["MLP"][s], summ["conv"][s], diff[s])]
        print(f"{s:>5} {cells[0]:>21} {cells[1]:>21} {cells[2]:>21}")
    print(f"\nthe same {n_both} test episodes for both (the first {n_both} of "
          f"{CL.TEST_EPISODES}, seed {CL.TEST_SEED}); paper, Table 1, 5-way 1-shot at 3 steps: "
          + ", ".join(f"{m} {p[0]} ± {p[1]} %" for m, p in
                      (("MLP", CL.PAPER_TABLE1_MLP[(WAYS, 1)]),
                       ("conv", CL.PAPER_TABLE1_CONV[(WAYS, 1)]))))
    print(f"MLP rows: {results[1][1]}")
    print(f"conv rows: {conv_source}{CONV_NOTE}, {conv_from}")

# %%
print(f"notebook executed in {time.perf_counter() - T0:.0f} s (fast mode: {FAST})")
