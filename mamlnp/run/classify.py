"""Few-shot classification runs (Omniglot): the protocol, validation and test accuracy.

Dimension legend: T tasks (episodes), N ways, K shots and Q query drawings per class,
S = max_steps, P parameters.

The paper's protocol (Finn, Abbeel & Levine 2017, sec. 5.2 and appendix A.1) and where each
default comes from (cbfinn/maml main.py's usage lines and flags, maml.py, utils.py):

| key | 5-way | 20-way | source |
|---|---|---|---|
| network | 784-256-128-64-64-N, ReLU, batch norm | same | paper sec. 5.2 (non-convolutional network: 256, 128, 64, 64, batch norm, ReLU); maml.py ``dim_hidden = [256, 128, 64, 64]``, ``forward_fc`` with ``normalize(…, relu)`` |
| loss | softmax cross-entropy | same | utils.py ``xent`` |
| meta_batch | 32 | 16 | paper A.1; main.py usage ``--meta_batch_size=32`` / ``16`` |
| inner_steps | 1 | 5 | paper A.1; main.py ``--num_updates=1`` / ``5`` |
| alpha | 2.0 (= 0.4 · 5) | 2.0 (= 0.1 · 20) | paper A.1 α = 0.4 / 0.1, main.py ``--update_lr``: a step on the reference's loss, see below |
| beta | 1e-3 (Adam) | same | main.py ``meta_lr`` 0.001, ``tf.train.AdamOptimizer`` |
| iterations | 60,000 | same | paper A.1 (main.py's usage lines say 40,000) |
| shots, query | K, Q = K | same | main.py ``DataGenerator(update_batch_size * 2, …)``: K support + K query per class |
| second order | exact | same | main.py ``stop_grad`` False |
| init | "normal" (N(0, 0.01²) truncated, b = 0) | same | maml.py ``construct_fc_weights``: ``truncated_normal(stddev=0.01)``, zero biases |

**The conv network** (``model="conv"``, ``--model conv``; paper sec. 5.2 and A.1, cbfinn/maml
``forward_conv``): ``ConvNet``'s defaults, 4 × [3×3 conv with 64 filters, stride 2, padding 1,
batch norm, ReLU], the spatial mean, a dense head (mamlnp/nn/convnet.py); init "xavier" (the one
scheme of ``ConvNet.init``: cbfinn's ``construct_conv_weights``). Every other key of the table
is the same: meta-batch 32 / 16, 1 / 5 inner steps at α = 0.4 / 0.1 on the reference's loss
(2.0 here), Adam 1e-3, 60,000 iterations; at test the paper reads 3 steps (5-way) and 5
(20-way), both in the recorded 0 … 10.

**α.** The reference's inner loss is ``softmax_cross_entropy_with_logits(…) / update_batch_size``
summed by ``tf.gradients`` over the N·K support rows: Σ_i ℓ_i / K = N · (mean of ℓ). mamlnp's
``softmax_xent`` is the mean over the rows, so the paper's step α on the reference's loss is
the step α · N here: 0.4 · 5 = 2.0 (5-way) and 0.1 · 20 = 2.0 (20-way). The meta-loss is
scaled alike (N · mean), which Adam does not feel (up to its ε).

**Test.** main.py tests on 600 episodes (``NUM_TEST_POINTS``) with ``meta_batch_size = 1``,
Q = K, mean ± 1.96 · std / √600, accuracies after 1 … ``test_num_updates`` = 10 steps (main.py
sets 10 for Omniglot at training and test); the paper (A.1) evaluates the 5-way models with 3
steps. :func:`accuracy_curve` records 0 … 10.
"""
import numpy as np

from ..meta.maml import check_alpha, check_batch, inner_loop, kernels_for
from ..validation import check_memory, step_count

CLASSIFICATION_TASKS = ("omniglot",)
TEST_EPISODES, TEST_SEED = 600, 2017                    # main.py NUM_TEST_POINTS; our seed
PAPER_TABLE1_MLP = {(5, 1): (89.7, 1.1), (5, 5): (97.5, 0.6)}   # 5-way, K: % ± 95% CI
PAPER_TABLE1_CONV = {(5, 1): (98.7, 0.4), (5, 5): (99.9, 0.1),    # (N, K): % ± 95% CI, MAML
                     (20, 1): (95.8, 0.3), (20, 5): (98.9, 0.2)}
PAPER_TABLE1 = {"mlp": PAPER_TABLE1_MLP, "conv": PAPER_TABLE1_CONV}
CONV_CHANNELS = [64, 64, 64, 64]                   # ConvNet's defaults: the paper's network
CONV_METHODS = ("maml", "fomaml")                  # the methods a conv run trains with
Z95 = 1.96


def is_classification(cfg):
    return cfg.get("task") in CLASSIFICATION_TASKS


def omniglot_defaults(given, kind="mlp"):
    """The protocol's defaults for the keys ``given`` leaves open (the table above), for the
    batch-norm MLP (``kind`` "mlp") or the ConvNet ("conv": its channels instead of hidden
    widths and batch_norm, init "xavier")."""
    ways = given.get("ways", 5)
    five = not (isinstance(ways, (int, np.integer)) and ways >= 20)   # else the 20-way protocol
    shots = given.get("shots", 1)
    query = given.get("query", shots)
    net = ({"channels": list(CONV_CHANNELS), "init": "xavier"} if kind == "conv" else
           {"batch_norm": True, "hidden": [256, 128, 64, 64], "init": "normal"})
    return {"ways": ways, "data_dir": None, **net, "activation": "relu",
            "alpha": 2.0, "beta": 1e-3, "inner_steps": 1 if five else 5,
            "meta_batch": 32 if five else 16, "iterations": 60000,
            "shots": shots, "query": query, "val_tasks": 100, "val_query": query,
            "eval_every": 500, "val_seed": 1234}


def history_columns(cfg):
    """The names of the run's history rows: iteration, meta_loss, and the validation score."""
    return ("iteration", "meta_loss", "val_accuracy" if is_classification(cfg) else "val_mse")


# ---- accuracy ------------------------------------------------------------------------------


def query_accuracy(model, theta, x_query, y_query):
    """Fraction of the query rows whose largest logit is the true class."""
    logits = model.forward(theta, x_query)                                 # (N·Q, N)
    return float(np.mean(logits.argmax(axis=1) == y_query.argmax(axis=1)))


def accuracy_curve(model, theta, batch, alpha, max_steps=10, backend=None):
    """Query accuracy after 0 … max_steps SGD steps of size α on each episode's support set:
    (T, S+1); column 0 is the accuracy at θ itself. A model whose kernel set compiles
    ``adapt_accuracy`` for this α (a batch-norm MLP, scalar α) runs it unless
    ``backend="numpy"``; otherwise ``accuracy_curve_numpy``'s reference runs."""
    theta, batch = model.check_theta(theta), check_batch(model, batch)
    alpha = check_alpha(model, alpha, schedule=True)                   # scalar, (P,) or (S, P)
    max_steps = step_count("max_steps", max_steps)
    fast = kernels_for(model, backend, "adapt_accuracy", alpha)
    check_memory("max_steps", max_steps, 8 * (max_steps + 1) * (batch.num_tasks + (
        0 if fast is not None else model.num_params)), "the accuracy curves" + (
        "" if fast is not None else f" and the {max_steps + 1} iterates of θ (NumPy)"))
    with np.errstate(all="ignore"):                       # a blown-up task scores what it scores
        if fast is not None:
            return fast.adapt_accuracy(theta, batch, alpha, max_steps)
        return accuracy_curve_numpy(model, theta, batch, alpha, max_steps)


def accuracy_curve_numpy(model, theta, batch, alpha, max_steps):
    """The reference of ``accuracy_curve`` (unchecked): per task, the inner loop's iterates."""
    acc = np.empty((batch.num_tasks, max_steps + 1))
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        for s, th in enumerate(inner_loop(model, theta, xs, ys, alpha, max_steps)):
            acc[t, s] = query_accuracy(model, th, xq, yq)
    return acc


def summarize_accuracy(acc):
    """{"mean", "ci95", "std", "n"} of per-episode accuracies (T,), as main.py: ddof = 0."""
    acc = np.asarray(acc, dtype=np.float64)
    std = float(acc.std())
    return {"mean": float(acc.mean()), "ci95": Z95 * std / np.sqrt(acc.size), "std": std,
            "n": int(acc.size)}


# ---- during training --------------------------------------------------------------------


def validation_batch(family, cfg):
    """``val_tasks`` fixed episodes of the validation characters (seed ``val_seed``)."""
    return family.episodes("val", cfg["val_tasks"], cfg["shots"], cfg["val_query"],
                           seed=cfg["val_seed"])


def validation_accuracy(model, method, params, cfg, batch):
    """Mean query accuracy over ``batch`` after the run's inner steps at its α (the run's
    backend: the compiled kernels for a scalar α on a batch-norm MLP)."""
    alpha = method.adapt_alpha(params, cfg)
    s = cfg["inner_steps"]
    return float(accuracy_curve(model, params["theta"], batch, alpha, s,
                                cfg.get("backend"))[:, s].mean())
