"""The paper's sinusoid experiment end to end: ``python -m mamlnp reproduce``.

Dimension legend: T tasks, K support points (shots), P parameters.

Finn, Abbeel & Levine (2017), sec. 5.1 and Figures 2-3:

1. meta-train MAML (exact second order) on sinusoids: a 1-40-40-1 ReLU MLP,
   K = 10, α = 0.01, one inner step, Adam with β = 1e-3, meta-batch 25,
   70,000 iterations  (mamlnp.run.train.meta_train, method="maml");
2. train the baseline "pretrained on all of the tasks" with the same network,
   data, optimizer and iterations (method="pretrain");
3. evaluate both on the 600 held-out tasks of EvaluationPool (seed 2017,
   100 query points) for K = 5, 10, 20 and 0 … 10 SGD steps. MAML adapts with its
   α = 0.01; the baseline with the step sizes the paper tuned for it
   (Fig. 2-3 legends: 0.01 for K = 5, 0.02 for K = 10 and 20);
4. write figure2.png, figure3.png, results.csv/json and results.md (the table
   beside the paper's numbers) into ``--out`` and print where everything is.

``--quick`` trains a few hundred iterations only: a smoke test, not a result.
"""
import json
import os
import sys
import time

from . import evaluate as E
from ..errors import InputError

PAPER_ITERATIONS = 70000
QUICK_ITERATIONS = 200
# The baseline's test-time step sizes, tuned by the paper (Fig. 2 and 3 legends).
BASELINE_ALPHA = {5: 0.01, 10: 0.02, 20: 0.02}
# Reference values for K = 5 (query MSE after 1 / 5 / 10 steps), as given in the
# project brief; they agree with the paper's Figure 3, which shows these results as
# curves (docs/results.md).
PAPER = {("maml", 5, 1): 0.67, ("maml", 5, 5): 0.38, ("maml", 5, 10): 0.35,
         ("pretrain", 5, 1): 2.41, ("pretrain", 5, 5): 2.23, ("pretrain", 5, 10): 2.19}
TABLE_STEPS = (0, 1, 5, 10)


def add_arguments(p):
    p.add_argument("--out", default=os.path.join("runs", "reproduce"),
                   help="output directory (default runs/reproduce)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"meta-iterations for both runs (default {PAPER_ITERATIONS})")
    p.add_argument("--shots", type=int, default=10, help="K used for meta-training (default 10)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--init", choices=("normal", "uniform"), default="uniform",
                   help="θ initialisation, see MLP.init (default uniform: PyTorch's "
                        "U(±1/√fan_in); normal: cbfinn's N(0, 0.01²))")
    p.add_argument("--backend", choices=("numpy", "numba"), default=None,
                   help="meta-gradient backend (default mamlnp.meta.maml.DEFAULT_BACKEND)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_ITERATIONS} iterations: a smoke test, not a result")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse, if finished) the runs already in --out")
    p.add_argument("--overwrite", action="store_true", help="replace runs already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_both(out, iterations, shots, seed, backend, resume, overwrite, progress,
               init="normal"):
    """Meta-train MAML and the pretrained baseline; returns {method: (TrainResult, seconds)}."""
    from .train import meta_train
    runs = {}
    for method in ("maml", "pretrain"):
        run_dir = os.path.join(out, f"{method}-k{shots}")
        has_ckpt = os.path.exists(os.path.join(run_dir, "checkpoint.npz"))
        print(f"[reproduce] training {method} (K={shots}, {iterations} iterations) -> {run_dir}",
              flush=True)
        t0 = time.perf_counter()
        res = meta_train(method=method, shots=shots, iterations=iterations, seed=seed,
                         init=init, backend=backend, out=run_dir, resume=resume and has_ckpt,
                         overwrite=overwrite, progress=progress)
        runs[method] = (res, time.perf_counter() - t0)
    return runs


def evaluate_both(runs, backend, max_steps=10, shots=(5, 10, 20)):
    """EvalResults of MAML (its α) and the baseline (the paper's tuned steps)."""
    maml, base = runs["maml"][0], runs["pretrain"][0]
    r_maml = E.evaluate(maml.model, maml.theta, E.run_alpha(maml.config), shots=shots,
                        max_steps=max_steps, backend=backend, label="maml")
    r_base = E.evaluate(base.model, base.theta, BASELINE_ALPHA, shots=shots,
                        max_steps=max_steps, backend=backend, label="pretrain")
    return [r_maml, r_base]


def markdown_table(results, steps=TABLE_STEPS):
    """Markdown: method, K, steps, measured mean ± 95% CI, tasks diverged, median, and the
    reference value (paper, Fig. 3) where there is one."""
    lines = ["| method | K | steps | α | query MSE (mean ± 95% CI) | diverged | median | reference |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in res.rows:
            if r["steps"] not in steps:
                continue
            ref = PAPER.get((r["method"], r["shots"], r["steps"]))
            lines.append(f"| {r['method']} | {r['shots']} | {r['steps']} | {r['alpha']} | "
                         f"{r['mean']:.3f} ± {r['ci95']:.3f} | {r['diverged']}/{r['n'] + r['diverged']} | "
                         f"{r['median']:.3f} | {'' if ref is None else f'{ref:.2f}'} |")
    return "\n".join(lines)


def training_seconds(run_dir, fallback):
    """The run's own training wall time (config.json metadata; summed over resumes)."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            return float(json.load(f)["metadata"]["wall_time_s"])
    except (OSError, KeyError, TypeError, ValueError, RecursionError):
        return fallback


def write_report(out, results, runs, eval_seconds, quick):
    """results.md: the protocol, the table beside the paper's numbers, timings."""
    lines = ["# mamlnp reproduce: sinusoid regression (Finn et al. 2017, sec. 5.1)", ""]
    if quick:
        lines += ["**--quick: a smoke test with few iterations, NOT a reproduction.**", ""]
    for method, (res, secs) in runs.items():
        c = res.config
        lines.append(f"- {method}: {c['iteration']} iterations, K={c['shots']}, Q={c['query']}, "
                     f"α={c['alpha']}, β={c['beta']}, meta-batch {c['meta_batch']}, "
                     f"init {c['init']}, seed {c['seed']}, backend {c['backend']}: training wall "
                     f"time {training_seconds(res.out, secs):.0f} s")
    lines += [f"- evaluation on 600 held-out tasks (EvaluationPool seed 2017, 100 query points): "
              f"{eval_seconds:.0f} s",
              f"- mean over tasks whose query MSE is finite and ≤ {E.DIVERGED_MSE:g}; the others "
              f"are counted in 'diverged' (diverged/total); the median is over all tasks.",
              "- reference: K=5 values for the paper's Figure 3 curves (source: docs/results.md).",
              "",
              markdown_table(results), ""]
    path = os.path.join(out, "results.md")
    from .checkpoint import atomic_write                 # atomic, never through a link
    atomic_write(path, lambda f: f.write("\n".join(lines).encode()))
    return path


def run(args):
    if args.iterations is not None and args.quick:
        raise InputError("--iterations and --quick: expected at most one of them")
    if args.resume and args.overwrite:
        raise InputError("--resume and --overwrite: expected at most one of them")
    iterations = (QUICK_ITERATIONS if args.quick else
                  PAPER_ITERATIONS if args.iterations is None else args.iterations)
    progress = not args.no_progress and sys.stderr.isatty()
    t0 = time.perf_counter()
    runs = train_both(args.out, iterations, args.shots, args.seed, args.backend,
                      args.resume, args.overwrite, progress, args.init)
    t1 = time.perf_counter()
    print("[reproduce] evaluating on the 600 held-out tasks", flush=True)
    results = evaluate_both(runs, args.backend)
    eval_seconds = time.perf_counter() - t1
    print(E.format_table(results, steps=TABLE_STEPS))
    paths = list(E.write_results(results, args.out, meta={
        "iterations": iterations, "shots": args.shots, "seed": args.seed, "init": args.init,
        "baseline_alpha": BASELINE_ALPHA, "quick": bool(args.quick)}))
    paths.append(write_report(args.out, results, runs, eval_seconds, args.quick))
    from . import plots
    paths += plots.save_all([(r, runs[m][0].model, runs[m][0].theta)
                             for r, m in zip(results, ("maml", "pretrain"))], args.out)
    print(f"\n[reproduce] done in {time.perf_counter() - t0:.0f} s. Wrote:")
    for m in runs:
        print(f"  {runs[m][0].out}/  (checkpoint.npz, config.json, history.csv)")
    print("  " + "\n  ".join(paths))
    return 0
