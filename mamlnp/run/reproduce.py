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

``--quick`` trains a few hundred iterations only: a smoke test, not a result; it writes to
its own folder (runs/reproduce-quick), so a smoke test never blocks the real job.

Running it again is safe and cheap: the runs already in ``--out`` are reused (finished:
only re-evaluated, a few seconds, the same table) or continued (interrupted: from their last
checkpoint, to the same bits); ``--overwrite`` trains them again from scratch. Ctrl-C keeps
the checkpoint and prints the command that continues.
"""
import os
import shlex
import sys
import time

from . import evaluate as E
from ..errors import CheckpointError, InputError
from ..fast.compile_notice import first_call_notice
from ..meta.maml import DEFAULT_BACKEND
from ..meta.variants import INNER_BN
from .rundir import config_value, training_seconds  # noqa: F401  (re-exported)

PAPER_ITERATIONS = 70000
QUICK_ITERATIONS = 200
# The baseline's test-time step sizes, tuned by the paper (Fig. 2 and 3 legends); the same
# dict is evaluate's default for a pretrained run.
BASELINE_ALPHA = E.PRETRAIN_ALPHA
# Reference values for K = 5 (query MSE after 1 / 5 / 10 steps), read from the paper's
# Figure 3, which shows these results only as curves (docs/results.md).
PAPER = {("maml", 5, 1): 0.67, ("maml", 5, 5): 0.38, ("maml", 5, 10): 0.35,
         ("pretrain", 5, 1): 2.41, ("pretrain", 5, 5): 2.23, ("pretrain", 5, 10): 2.19}
TABLE_STEPS = (0, 1, 5, 10)


def add_arguments(p):
    p.add_argument("task", nargs="?", choices=("sinusoid", "omniglot", "navigation"),
                   default="sinusoid", help="sinusoid (sec. 5.1, default), omniglot (5-way 1- "
                   "and 5-shot, Table 1) or navigation (2D navigation, sec. 5.3, Fig. 4)")
    p.add_argument("--data-dir", default=None, help="omniglot: the data folder (default "
                   "$MAMLNP_DATA_DIR, else the user cache folder; 'mamlnp download omniglot' "
                   "fills it)")
    p.add_argument("--out", default=None,
                   help="output directory (default: sinusoid runs/reproduce, omniglot "
                        "runs/reproduce-omniglot, -conv with --model conv, -bnfixed with "
                        "--inner-bn fixed; with --quick runs/reproduce-quick, "
                        "runs/reproduce-omniglot[-conv][-bnfixed]-quick)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"meta-iterations for both runs (default: sinusoid {PAPER_ITERATIONS}, "
                        f"omniglot 60000)")
    p.add_argument("--shots", type=int, default=None,
                   help="sinusoid: K used for meta-training (default 10; omniglot trains "
                        "1-shot and 5-shot)")
    p.add_argument("--model", choices=("mlp", "conv"), default=None,
                   help="omniglot: the network, mlp (the batch-norm MLP, Table 1's MLP row; "
                        "default) or conv (the paper's ConvNet, Table 1's conv row)")
    p.add_argument("--inner-bn", choices=INNER_BN, default=None,
                   help="omniglot: batch norm's γ, β adapted in the inner loop (adapt, default) "
                        "or learned in the outer loop only (fixed, cbfinn/maml's convention; "
                        "the runs go to ...-bnfixed); see train --inner-bn")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--init", choices=("normal", "uniform"), default=None,
                   help="sinusoid: θ initialisation, see MLP.init (default uniform: PyTorch's "
                        "U(±1/√fan_in); normal: cbfinn's N(0, 0.01²); omniglot uses normal)")
    p.add_argument("--backend", choices=("numpy", "numba"), default=None,
                   help=f"meta-gradient backend (default {DEFAULT_BACKEND}; navigation: the "
                   "runs already in --out must have been trained on it)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_ITERATIONS} iterations: a smoke test, not a result")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse, if finished) the runs already in --out: the "
                        "default, kept for scripts")
    p.add_argument("--overwrite", action="store_true",
                   help="train again from scratch, replacing the runs already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_both(out, iterations, shots, seed, backend, resume, overwrite, progress,
               init="normal"):
    """Meta-train MAML and the pretrained baseline; returns {method: (TrainResult, seconds)}.
    A run already in ``out`` is continued, or reused if finished (``resume``), unless
    ``overwrite``."""
    from .train import meta_train
    runs = {}
    for method in ("maml", "pretrain"):
        run_dir = os.path.join(out, f"{method}-k{shots}")
        has_ckpt = os.path.exists(os.path.join(run_dir, "checkpoint.npz")) and not overwrite
        print(f"[reproduce] {_what(method, run_dir, has_ckpt and resume, iterations, shots)}",
              flush=True)
        t0 = time.perf_counter()
        try:
            res = meta_train(method=method, shots=shots, iterations=iterations, seed=seed,
                             init=init, backend=backend, out=run_dir,
                             resume=resume and has_ckpt, overwrite=overwrite, progress=progress)
        except (CheckpointError, InputError) as exc:
            if not (resume and has_ckpt):
                raise
            raise type(exc)(f"{exc} (reproduce reuses the runs in {out!r}: pass --overwrite "
                            f"to train them again, or choose another --out)") from None
        runs[method] = (res, time.perf_counter() - t0)
    return runs


def _what(method, run_dir, resuming, iterations, shots):
    """The line announcing one run: new, continued or reused."""
    if not resuming:
        return f"training {method} (K={shots}, {iterations} iterations) -> {run_dir}"
    done = config_value(run_dir, "iteration")
    done = done if isinstance(done, int) else None
    if done is not None and done >= iterations:
        return (f"{method}: reusing the finished run in {run_dir} ({done} iterations; "
                f"--overwrite trains it again)")
    return f"{method}: continuing the run in {run_dir} from iteration {done} to {iterations}"


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
    task = getattr(args, "task", "sinusoid")
    if getattr(args, "inner_bn", None) is not None and task != "omniglot":
        raise InputError(f"--inner-bn: does not apply to reproduce {task} (its networks have "
                         f"no batch norm); drop it")
    if getattr(args, "task", "sinusoid") == "navigation":
        from .navigation_cli import run_reproduce
        return run_reproduce(args)
    if getattr(args, "task", "sinusoid") == "omniglot":
        from .classify_report import run_reproduce
        return run_reproduce(args)
    if getattr(args, "data_dir", None) is not None:
        raise InputError("--data-dir: does not apply to reproduce sinusoid (its tasks are "
                         "generated, not read); drop it")
    if getattr(args, "model", None) is not None:
        raise InputError("--model: does not apply to reproduce sinusoid (its network is the "
                         "paper's 1-40-40-1 MLP); drop it")
    if args.iterations is not None and args.quick:
        raise InputError("--iterations and --quick: expected at most one of them")
    if args.resume and args.overwrite:
        raise InputError("--resume and --overwrite: expected at most one of them")
    args.shots = 10 if args.shots is None else args.shots
    args.init = "uniform" if args.init is None else args.init
    if args.quick:
        print(f"[reproduce] --quick: {QUICK_ITERATIONS} iterations per run, a smoke test of the "
              f"pipeline, NOT a result", flush=True)
    iterations = (QUICK_ITERATIONS if args.quick else
                  PAPER_ITERATIONS if args.iterations is None else args.iterations)
    out = args.out or os.path.join("runs", "reproduce-quick" if args.quick else "reproduce")
    progress = not args.no_progress and sys.stderr.isatty()
    from .train import TrainingInterrupted
    t0 = time.perf_counter()
    try:
        runs = train_both(out, iterations, args.shots, args.seed, args.backend,
                          not args.overwrite, args.overwrite, progress, args.init)
    except TrainingInterrupted as exc:
        return _interrupted(args, out, exc.result, exc.signum)
    t1 = time.perf_counter()
    print("[reproduce] evaluating on the 600 held-out tasks", flush=True)
    try:
        with first_call_notice(backend=args.backend):       # kernels compile once
            results = evaluate_both(runs, args.backend)
    except KeyboardInterrupt:
        print(f"mamlnp reproduce: interrupted while evaluating; the trained runs in {out} are "
              f"kept: {_again(args, out)} reuses them", file=sys.stderr)
        return 130
    eval_seconds = time.perf_counter() - t1
    print(E.format_table(results, steps=TABLE_STEPS))
    paths = list(E.write_results(results, out, meta={
        "iterations": iterations, "shots": args.shots, "seed": args.seed, "init": args.init,
        "baseline_alpha": BASELINE_ALPHA, "quick": bool(args.quick)}))
    paths.append(write_report(out, results, runs, eval_seconds, args.quick))
    from . import plots
    paths += plots.save_all([(r, runs[m][0].model, runs[m][0].theta)
                             for r, m in zip(results, ("maml", "pretrain"))], out,
                            note=plots.SMOKE_NOTE if args.quick else None)
    smoke = " (--quick: a smoke test, NOT a result)" if args.quick else ""
    print(f"\n[reproduce] done in {time.perf_counter() - t0:.0f} s{smoke}. Wrote:")
    for m in runs:
        print(f"  {runs[m][0].out}/  (checkpoint.npz, config.json, history.csv)")
    print("  " + "\n  ".join(paths))
    return 0


def _interrupted(args, out, res, signum):
    """Ctrl-C (SIGTERM) while training: where the checkpoint is, how to continue; the exit code."""
    print(f"mamlnp reproduce: interrupted: {res.config['method']} at iteration "
          f"{res.config['iteration']}, checkpoint kept in "
          f"{os.path.join(res.out, 'checkpoint.npz')}\nmamlnp reproduce: to continue, run "
          f"the same command again: {_again(args, out)}", file=sys.stderr)
    return 128 + int(signum)                            # 130 for Ctrl-C, 143 for SIGTERM


def _again(args, out):
    """The command line that continues an interrupted reproduce."""
    cmd = ["python -m mamlnp reproduce"]
    if args.quick:
        cmd.append("--quick")
    elif args.iterations is not None:
        cmd.append(f"--iterations {args.iterations}")
    if args.out is not None:
        cmd.append(f"--out {shlex.quote(out)}")
    for opt, default in (("shots", 10), ("seed", 0), ("init", "uniform"), ("backend", None)):
        if getattr(args, opt) != default:
            cmd.append(f"--{opt} {getattr(args, opt)}")
    return " ".join(cmd)
