"""Few-shot evaluation on the held-out task pool: ``python -m mamlnp evaluate DIR``.

Dimension legend: T tasks (the pool holds 600), K support points (shots),
Q query points (100), P parameters, S = max_steps.

For every held-out task t and every K the model is adapted with plain SGD on the
K support points (Finn et al. 2017, sec. 5.1: "fine-tuning with gradient descent
on the K provided points"),

    θ_0 = θ,   θ_{k+1} = θ_k − α ∇L_S,t(θ_k),    k = 0 … S−1,

and the query MSE L_Q,t(θ_k) is recorded for k = 0 … S: the *adaptation curve*
(T, S+1). For every (K, k) we report

    mean  = (1/n) Σ_t L_Q,t(θ_k)             over the n tasks that did not diverge
    ci95  = 1.96 · std / √n                  (std with ddof=0, as cbfinn/maml's main.py)
    diverged = T − n
    median = the median over all T tasks (robust; diverged tasks count as +inf)

A task *diverged* at step k when L_Q,t(θ_k) is NaN, infinite or above
``DIVERGED_MSE``. Plain SGD at α = 0.01 can blow up on a rare task whose few
support points cluster at large |x|; such tasks are counted in ``diverged``,
never silently dropped, and the mean is over the others (n is reported too).
"""
import argparse
import csv
import io
import json
import os
import shlex
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..fast.compile_notice import first_call_notice
from ..meta.maml import adapt_curve, check_alpha, check_batch, check_work
from ..meta.variants import run_alpha  # noqa: F401  (re-exported: the step a run adapts with)
from ..tasks.pool import EvaluationPool, _shot_list
from ..tasks.sinusoid import SinusoidTasks
from ..validation import check_memory, check_model, step_count

# Sinusoid targets satisfy |y| ≤ A ≤ 5, so predicting 0 everywhere costs at most 25.
# A query MSE four times that (predictions off by 10 on average, twice the largest
# amplitude) only happens when the SGD iterates have blown up: such a task is
# counted as diverged. results.json keeps every per-task loss, so any other
# threshold can be applied afterwards.
DIVERGED_MSE = 100.0
Z95 = 1.96
# The pretrained baseline's test-time step per K, tuned by the paper (legends of its Fig.
# 2-3): the default for a run with method "pretrain" (its training α has no inner step).
PRETRAIN_ALPHA = {5: 0.01, 10: 0.02, 20: 0.02}


# ---- the adaptation curve ------------------------------------------------------------


def adaptation_curve(model, theta, batch, alpha, max_steps=10, backend=None):
    """Query MSE after 0 … max_steps SGD steps of size α on each task's support set.

    θ (P,), batch a TaskBatch of T tasks, α a scalar or a (P,) vector (Meta-SGD)
    -> losses (T, max_steps+1); column 0 is the plain query loss at θ.
    Diverging tasks give inf/NaN or huge entries (see ``summarize``); no warning.
    """
    theta = check_model(model).check_theta(theta)
    batch = check_batch(model, batch)
    alpha = check_alpha(model, alpha, schedule=True)
    max_steps = step_count("max_steps", max_steps)
    check_memory("max_steps", max_steps, 8 * batch.num_tasks * (max_steps + 1), "the curve")
    check_work(model, batch.num_tasks, batch.x_support.shape[1], batch.x_query.shape[1],
               max_steps, backend, False, "max_steps")
    with np.errstate(all="ignore"):                                      # divergence is counted
        return np.asarray(adapt_curve(model, theta, batch, alpha, max_steps, backend))  # (T, S+1)


# ---- statistics ----------------------------------------------------------------------


def summarize(losses, threshold=DIVERGED_MSE):
    """Mean, 95% CI and divergence count of one column of losses (T,).

    Returns {"mean", "ci95", "std", "n", "diverged", "median"}: mean, std and ci95
    are over the n entries that are finite and ≤ threshold; ``diverged`` counts the
    others. The median is over ALL entries (NaN counted as +inf), a robust
    companion to the mean. With n = 0 the mean, std and ci95 are NaN.
    """
    losses = np.asarray(losses, dtype=np.float64)
    median = float(np.median(np.where(np.isnan(losses), np.inf, losses)))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(losses) & (losses <= threshold)                 # (T,)
    kept = losses[ok]
    n = int(kept.size)
    if n == 0:
        mean = std = ci = float("nan")
    else:
        mean, std = float(kept.mean()), float(kept.std())                # ddof = 0
        ci = Z95 * std / np.sqrt(n)
    return {"mean": mean, "ci95": float(ci), "std": std, "n": n,
            "diverged": int(losses.size - n), "median": median}


@dataclass
class EvalResult:
    """One model's evaluation: per-K curves (T, S+1) and the summary rows."""
    label: str
    alpha: dict                      # K -> α used (a float, or a (P,) learned vector)
    max_steps: int
    curves: dict = field(default_factory=dict)   # K -> losses (T, S+1)
    rows: list = field(default_factory=list)     # dicts: method, shots, steps, mean, ci95, …

    def row(self, shots, steps):
        for r in self.rows:
            if r["shots"] == shots and r["steps"] == steps:
                return r
        raise KeyError((shots, steps))


def _alpha_for(alpha, k):
    """α for K = k: ``alpha`` is a scalar, a (P,) vector, or a dict {K: α}."""
    if isinstance(alpha, dict):
        if k not in alpha:
            raise InputError(f"alpha: no step size for K={k} in {sorted(alpha)}")
        return alpha[k]
    return alpha


def evaluate(model, theta, alpha, pool=None, shots=(5, 10, 20), max_steps=10,
             backend=None, label="model"):
    """Adapt to every pool task for each K in ``shots``; mean ± 95% CI per (K, step).

    α: a scalar, a (P,) vector of learned step sizes, or a dict {K: α} (the paper
    tunes the pretrained baseline's step per K). ``pool`` defaults to
    EvaluationPool(SinusoidTasks()) (600 tasks, seed 2017, 100 query points).
    """
    pool = EvaluationPool(SinusoidTasks()) if pool is None else pool
    if not callable(getattr(pool, "batch", None)):
        raise InputError(f"pool: expected a mamlnp.EvaluationPool (or an object with "
                         f".batch(shots) -> TaskBatch), got {pool!r}")
    shots = tuple(dict.fromkeys(_shot_list(shots)))             # 5 -> (5,); each K >= 1, once
    max_steps = step_count("max_steps", max_steps)
    result = EvalResult(label=label, alpha={}, max_steps=max_steps)
    for k in shots:
        a = _alpha_for(alpha, k)
        curve = adaptation_curve(model, theta, pool.batch(k), a, max_steps, backend)
        result.curves[k] = curve
        result.alpha[k] = float(a) if np.ndim(a) == 0 else np.asarray(a, dtype=np.float64)
        shown = float(a) if np.ndim(a) == 0 else "learned"
        for s in range(max_steps + 1):
            result.rows.append({"method": label, "shots": k, "steps": s, "alpha": shown,
                                **summarize(curve[:, s])})
    return result


# ---- tables and files ------------------------------------------------------------------

FIELDS = ("method", "shots", "steps", "alpha", "mean", "ci95", "std", "n", "diverged", "median")


def format_table(results, steps=None):
    """A plain-text table: method, K, steps, α, mean MSE ± CI, n, diverged, median."""
    lines = [f"{'method':<12} {'K':>3} {'steps':>5} {'α':>7} {'query MSE (mean ± 95% CI)':>27} "
             f"{'n':>4} {'diverged':>8} {'median':>8}"]
    for res in results:
        for r in res.rows:
            if steps is not None and r["steps"] not in steps:
                continue
            lines.append(f"{r['method']:<12} {r['shots']:>3} {r['steps']:>5} {r['alpha']:>7} "
                         f"{r['mean']:>17.4f} ± {r['ci95']:<7.4f} {r['n']:>4} {r['diverged']:>8} "
                         f"{r['median']:>8.4f}")
    return "\n".join(lines)


def write_results(results, out_dir, meta=None):
    """Write ``results.csv`` (one row per method, K, step) and ``results.json`` (the
    rows plus every per-task curve, so other statistics can be recomputed). The two are
    replaced together (mamlnp.run.rundir.atomic_write_all): a failed write keeps the
    previous version of both, and a symbolic link planted at either path is replaced, never
    followed."""
    from .rundir import atomic_write_all, make_output_dir
    make_output_dir(out_dir)
    csv_path = os.path.join(out_dir, "results.csv")
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=FIELDS)
    w.writeheader()
    for res in results:
        w.writerows(res.rows)
    json_path = os.path.join(out_dir, "results.json")
    curves = {res.label: {str(k): np.where(np.isfinite(c), c, None).tolist()
                          for k, c in res.curves.items()} for res in results}
    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
             for k, v in r.items()} for res in results for r in res.rows]  # strict JSON
    doc = {"meta": meta or {}, "diverged_mse": DIVERGED_MSE,
           "mean_over": "tasks whose query MSE is finite and <= diverged_mse",
           "rows": rows,
           "curves": curves, "curves_note": "per method and K: (tasks, steps+1) query MSEs; "
                                            "null = NaN or inf"}
    doc = json.dumps(doc, indent=1, allow_nan=False).encode()
    atomic_write_all({csv_path: text.getvalue().encode(), json_path: doc})   # both or neither
    return csv_path, json_path


def default_alpha(config, shots, model=None):
    """The test-time step of a run evaluated without --alpha: the paper's tuned steps
    (PRETRAIN_ALPHA, per K) for a pretrained baseline, as reproduce uses; else run_alpha."""
    if config.get("method") == "pretrain":
        return {k: PRETRAIN_ALPHA.get(k, float(config["alpha"])) for k in shots}
    return run_alpha(config, model)


# ---- command line ----------------------------------------------------------------------


ALPHA_HELP = ("test-time step: one value, or one per K as K=α (e.g. 5=0.01 10=0.02); default: "
              "the {}'s α, or for a pretrained run the paper's tuned steps "
              "5=0.01 10=0.02 20=0.02 (as reproduce)")


def alpha_arg(text):
    """argparse type of --alpha/--baseline-alpha: '0.01' -> 0.01, '10=0.02' -> (10, 0.02)."""
    k, sep, a = text.rpartition("=")
    try:
        return (int(k), float(a)) if sep else float(a)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a step size or K=step, got {text!r}") from None


def alpha_option(values):
    """The parsed --alpha values -> None, a float, or a dict {K: α}."""
    if not values:
        return None
    if len(values) == 1 and not isinstance(values[0], tuple):
        return values[0]
    if not all(isinstance(v, tuple) for v in values):
        raise InputError(f"alpha: expected one step size or K=step pairs, got {values!r}")
    return dict(values)


def add_arguments(p):
    from ..meta.maml import DEFAULT_BACKEND
    p.add_argument("run", metavar="DIR", help="a training run directory (or its checkpoint.npz)")
    p.add_argument("--shots", type=int, nargs="+", default=None,
                   help="sinusoid runs: support-set sizes K to evaluate (the pool holds 5, 10, "
                        "20; default 5 10 20); an Omniglot run is tested at its own K")
    p.add_argument("--max-steps", type=int, default=None,
                   help="SGD steps at test time (default 10; navigation runs: 3)")
    p.add_argument("--alpha", type=alpha_arg, nargs="+", default=None,
                   help=ALPHA_HELP.format("run"))
    p.add_argument("--baseline", metavar="DIR2", default=None,
                   help="sinusoid runs: a second run to compare against, e.g. the pretrained "
                        "baseline")
    p.add_argument("--baseline-alpha", type=alpha_arg, nargs="+", default=None,
                   help=ALPHA_HELP.format("baseline run"))
    p.add_argument("--backend", choices=("numpy", "numba"), default=None,
                   help=f"adaptation backend (default {DEFAULT_BACKEND})")
    p.add_argument("--out", default=None, help="output directory (default: DIR/eval)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--sampler", choices=("steps", "episodes"), default=None,
                   help="navigation runs: each test batch holds 40·100 steps of whole episodes "
                        "(steps, the test script's batch_size; default) or exactly 40 "
                        "episodes (episodes)")
    p.add_argument("--data-dir", default=None, help="omniglot runs: the data folder (default: "
                   "the run's, else $MAMLNP_DATA_DIR, else the user cache folder)")


def load_and_evaluate(path, alpha, shots, max_steps, backend, label=None):
    """Load a run (mamlnp.load_checkpoint) and evaluate it; returns (result, model, θ, config)."""
    from .checkpoint import load_checkpoint
    model, theta, config = load_checkpoint(path)
    shots = tuple(dict.fromkeys(_shot_list(shots)))
    alpha = default_alpha(config, shots, model) if alpha is None else alpha
    label = label or config.get("method", "model")
    res = evaluate(model, theta, alpha, shots=shots, max_steps=max_steps,
                   backend=backend, label=label)
    return res, model, theta, config


DEFAULT_SHOTS = (5, 10, 20)


def run(args):
    for name, path in (("DIR", args.run), ("--baseline", args.baseline)):
        if path is not None and not os.path.exists(path):
            raise InputError(f"{name}: no such run directory or checkpoint file: {path!r}")
        if path is not None:
            _check_holds_a_run(name, path)
    from .navigation_checkpoint import is_navigation
    if is_navigation(args.run):                   # MAML for RL: returns on 40 held-out goals
        from .navigation_cli import run_evaluate
        return run_evaluate(args)
    if getattr(args, "sampler", None) is not None:
        raise InputError("--sampler: applies to navigation runs only; drop it")
    args.max_steps = 10 if args.max_steps is None else args.max_steps
    if _is_classification_run(args.run):          # Omniglot: accuracy on 600 test episodes
        from .classify_report import run_evaluate
        return run_evaluate(args, alpha_option(args.alpha))
    if getattr(args, "data_dir", None) is not None:
        raise InputError("--data-dir: does not apply to a sinusoid run (its tasks are "
                         "generated, not read); drop it")
    args.shots = DEFAULT_SHOTS if args.shots is None else args.shots
    with first_call_notice(backend=args.backend):           # kernels compile once
        runs = [load_and_evaluate(args.run, alpha_option(args.alpha), args.shots,
                                  args.max_steps, args.backend)]
    if args.baseline is not None:
        base = load_and_evaluate(args.baseline, alpha_option(args.baseline_alpha), args.shots,
                                 args.max_steps, args.backend)
        if base[0].label == runs[0][0].label:
            base[0].label = f"{base[0].label} (baseline)"
            for r in base[0].rows:
                r["method"] = base[0].label
        runs.append(base)
    run_dir = os.path.dirname(os.path.abspath(args.run)) if args.run.endswith(".npz") else args.run
    out = args.out or os.path.join(run_dir, "eval")
    results = [r[0] for r in runs]
    print(format_table(results))
    paths = list(write_results(results, out, meta={"run": args.run, "baseline": args.baseline}))
    if not args.no_plots:
        from . import plots
        paths += plots.save_all([(r[0], r[1], r[2]) for r in runs], out)
    print("\nwrote:\n  " + "\n  ".join(paths))
    return 0


def _check_holds_a_run(name, path):
    """A folder without a checkpoint.npz that holds runs (``runs/reproduce``): name them."""
    from .rundir import CHECKPOINT_NAME
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, CHECKPOINT_NAME)):
        return
    try:
        inside = sorted(os.path.join(path, d) for d in os.listdir(path)
                        if os.path.isfile(os.path.join(path, d, CHECKPOINT_NAME)))
    except OSError:
        inside = []
    if inside:
        raise InputError(f"{name}: {path!r} holds no {CHECKPOINT_NAME} of its own but the runs "
                         f"{', '.join(inside)}; evaluate one of them, e.g. python -m mamlnp "
                         f"evaluate {shlex.quote(inside[0])}")


def _is_classification_run(path):
    """Whether the run in ``path`` (a directory or its checkpoint.npz) is a classification run."""
    from .checkpoint import read_checkpoint
    from .classify import is_classification
    return is_classification(read_checkpoint(path)["config"])
