"""The navigation commands: ``train navigation``, ``evaluate RUN`` of a navigation run and
``reproduce navigation`` (hooked into mamlnp/run/train_cli.py, evaluate.py, reproduce.py).

Dimension legend: T tasks (--meta-batch), N trajectories (--trajectories), G test goals.

``reproduce navigation`` trains MAML with the paper's estimator and with ProMP's lvc (its
own row), the pretrained policy and the oracle (defaults: the protocol, 100 iterations
each; ``--quick``: a few iterations, a smoke test, not a result), evaluates them with a
random initialisation on the same 40 held-out goals, and writes results.md (the table
beside the paper's), results.json, returns.png and trajectories.png. Runs already in
``--out`` are reused (finished) or continued (interrupted); a run trained with another
estimator than its row's is refused.

``--backend`` (numba, the default, or numpy: mamlnp/meta/rl.py's point classes) is the new
training runs' and the evaluation's; a run continued or reused keeps its own, and a
``--backend`` given against it is refused (the two agree to rounding, not bit for bit).
"""
import os
import sys
import time

from ..errors import DivergenceError, InputError, MamlnpError
from ..fast.compile_notice import first_call_notice
from ..meta.maml import check_backend
from . import navigation_eval as NE
from .train import TrainingInterrupted

QUICK_ITERATIONS = 3
TRAIN_KEYS = ("method", "estimator", "outer", "alpha", "beta", "meta_batch", "trajectories",
              "sampler", "inner_steps", "later_alpha",
              "max_kl", "cg_iters", "damping", "backtrack_ratio", "max_backtracks",
              "iterations", "hidden", "activation", "seed", "checkpoint_every", "threads",
              "backend")


OTHER_KEYS = ("shots", "query", "optimizer", "init", "eval_every",
              "ways", "data_dir", "lam", "cg_steps", "epoch_length", "msl_epochs", "fo_epochs",
              "inner_bn")
NAV_ONLY = ("estimator", "outer", "trajectories", "sampler", "later_alpha", "max_kl", "cg_iters", "damping",
            "backtrack_ratio", "max_backtracks", "threads")


def refuse(args, keys, task):
    """InputError naming the first option of ``keys`` given on the command line for ``task``."""
    given = [k for k in keys if getattr(args, k, None) is not None]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')}: not an option of 'train {task}'")


def add_train_arguments(p):
    """The options only navigation has (the shared ones are train_cli's)."""
    p.add_argument("--estimator", choices=("lvc", "dice", "maml"),
                   help="navigation: meta-policy-gradient estimator (default maml, the paper's)")
    p.add_argument("--outer", choices=("trpo", "adam"),
                   help="navigation: outer step, TRPO with exact FVPs or Adam with step --beta "
                        "(default trpo)")
    p.add_argument("--trajectories", type=int,
                   help="navigation: trajectories per task (default 20)")
    p.add_argument("--sampler", choices=("steps", "episodes"),
                   help="navigation: fill each task's batch with trajectories·100 steps of whole "
                        "episodes (steps, maml_rl's batch_size; default) or exactly "
                        "--trajectories episodes (episodes)")
    p.add_argument("--later-alpha", type=float,
                   help="navigation: the step size of inner steps 2, 3, … when --inner-steps > 1 "
                        "(default 0.25, the test's later steps)")
    p.add_argument("--max-kl", type=float, help="navigation: TRPO's mean-KL bound (default 0.01)")
    p.add_argument("--cg-iters", type=int,
                   help="navigation: conjugate-gradient iterations (default 10)")
    p.add_argument("--damping", type=float, help="navigation: FVP damping (default 1e-5)")
    p.add_argument("--backtrack-ratio", type=float,
                   help="navigation: line-search ratio (default 0.8)")
    p.add_argument("--max-backtracks", type=int, help="navigation: line-search tries (default 15)")
    p.add_argument("--threads", type=int, help="navigation: threads over the tasks' derivatives "
                   "(the same bits at any count; default: the cores available)")


def train(args):
    """``mamlnp train navigation``: exit code 0, 1 (diverged / cannot write), 2 (bad input),
    130/143 (interrupted, checkpoint written)."""
    from .navigation import DEFAULTS, train_navigation
    try:
        refuse(args, OTHER_KEYS, "navigation")
    except InputError as exc:
        print(f"mamlnp train: error: {exc}", file=sys.stderr)
        return 2
    kwargs = {k: getattr(args, k, None) for k in TRAIN_KEYS}
    out = args.out or os.path.join("runs", f"navigation-{args.method or DEFAULTS['method']}")
    try:
        result = train_navigation(out=out, resume=args.resume, overwrite=args.overwrite,
                                  progress=not args.no_progress, **kwargs)
    except TrainingInterrupted as exc:
        print(f"mamlnp train: {exc}", file=sys.stderr)
        return 128 + int(exc.signum)
    except DivergenceError as exc:
        print(f"mamlnp train: error: {exc}; the last checkpoint in {out!r} (if any) is kept",
              file=sys.stderr)
        return 1
    except MamlnpError as exc:
        print(f"mamlnp train: error: {exc}", file=sys.stderr)
        return 2
    h = result.history
    last = f"average return before {h[-1, 1]:.2f}, after {h[-1, 2]:.2f}" if len(h) else "no rows"
    print(f"{result.config['method']}: {result.config['iteration']} iterations ({last}); run "
          f"saved in {out}/ (checkpoint.npz, config.json, history.csv)")
    return 0


def _load(path):
    from .navigation_checkpoint import read
    state = read(path)
    return state["policy"], state["theta"], state["config"]


def run_evaluate(args):
    """``mamlnp evaluate RUN`` for a navigation run (with ``--baseline RUN2``): the rows of
    both runs plus a random initialisation, on the 40 held-out goals."""
    entries = {}
    for path in (args.run, args.baseline):
        if path is not None:
            policy, theta, cfg = _load(path)
            row = _row_name(cfg)
            row = row if row not in entries else f"{row} (2)"
            entries[row] = (policy, theta)
    first = next(iter(entries.values()))[0]
    if first.obs_dim == 2:
        from ..nn.policy import GaussianPolicy
        entries["random"] = (GaussianPolicy(first.sizes, NE.RANDOM_ACTIVATION), None)
    steps = NE.EVAL_STEPS if args.max_steps is None else args.max_steps
    sampler = args.sampler or NE.EVAL_SAMPLER
    backend = check_backend(args.backend)
    with first_call_notice(backend=backend):                # kernels compile once
        goals, results = NE.evaluate_policies(entries, steps=steps, keep=not args.no_plots,
                                              sampler=sampler, backend=backend)
    run_dir = os.path.dirname(os.path.abspath(args.run)) if args.run.endswith(".npz") else args.run
    out = args.out or os.path.join(run_dir, "eval")
    print(NE.format_table(results, steps))
    paths = NE.write_results(results, goals, out, meta={"run": args.run, "baseline": args.baseline,
                                                        "backend": backend}, sampler=sampler)
    if not args.no_plots:
        paths += _figures(results, out)
    print("written: " + ", ".join(paths))
    return 0


def _row_name(cfg):
    """A run's row: its method, "maml-lvc" / "maml-dice" for MAML trained with another
    estimator than the paper's (navigation_eval.LABELS names them)."""
    if cfg["method"] == "maml" and cfg["estimator"] != "maml":
        return f"maml-{cfg['estimator']}"
    return cfg["method"]


def _figures(results, out):
    from . import navigation_plots as NP
    paths = [os.path.join(out, "returns.png"), os.path.join(out, "trajectories.png")]
    NP.return_curves(results, paths[0])
    NP.trajectory_panels({r: v["rollouts"] for r, v in results.items() if len(v["rollouts"]) > 1},
                         path=paths[1])
    return paths


def run_reproduce(args):
    """``mamlnp reproduce navigation``: train (or reuse) maml (the paper's estimator),
    maml-lvc (the same with ProMP's lvc estimator), pretrain, oracle; evaluate the five rows
    (with a random initialisation); write the table and the figures."""
    from ..nn.policy import GaussianPolicy
    if args.iterations is not None and args.quick:
        raise InputError("--iterations and --quick: expected at most one of them")
    name = "reproduce-navigation" + ("-quick" if args.quick else "")
    out = args.out or os.path.join("runs", name)
    t0, entries = time.perf_counter(), {}
    runs = {"maml": {"estimator": "maml"}, "maml-lvc": {"estimator": "lvc"},
            "pretrain": {}, "oracle": {}}
    for row, extra in runs.items():
        try:
            entries[row] = _train_or_reuse(args, row.split("-")[0], os.path.join(out, row),
                                           **extra)
        except TrainingInterrupted as exc:
            print(f"mamlnp reproduce: {exc}; run the same command again to continue",
                  file=sys.stderr)
            return 128 + int(exc.signum)
    sizes = entries["maml"][0].sizes
    entries = {"maml": entries["maml"], "pretrain": entries["pretrain"],
               "random": (GaussianPolicy(sizes, NE.RANDOM_ACTIVATION), None),
               "oracle": entries["oracle"], "maml-lvc": entries["maml-lvc"]}
    t1 = time.perf_counter()
    print("[reproduce] evaluating on the 40 held-out goals", flush=True)
    n, backend = 4 if args.quick else NE.EVAL_TRAJECTORIES, check_backend(args.backend)
    goals, results = NE.evaluate_policies(entries, keep=True, trajectories=n, backend=backend)
    print(NE.format_table(results))
    extra = _extra_tables(entries, n, backend)
    paths = NE.write_results(results, goals, out, meta={
        "command": "mamlnp reproduce navigation" + (" --quick" if args.quick else ""),
        "backend": backend,
        "train_seconds_this_call": round(t1 - t0, 1),
        "evaluate_seconds": round(time.perf_counter() - t1, 1)}, trajectories=n, extra=extra)
    paths += _figures(results, out)
    print("written: " + ", ".join(paths))
    return 0


def _extra_tables(entries, n, backend):
    """The same policies on the paper's own 40 test goals, and on the held-out goals with
    batches of exactly n episodes (the "40 trajectories" reading of the test script)."""
    out = []
    for title, goals, sampler in (
            ("The paper's own 40 test goals (test_maml_point.py's seed)", NE.paper_goals(),
             "steps"),
            ("Held-out goals, each batch exactly n episodes", NE.held_out_goals(), "episodes")):
        g, res = NE.evaluate_policies(entries, goals=goals, trajectories=n, sampler=sampler,
                                      backend=backend)
        print(f"\n{title}\n" + NE.format_table(res))
        out.append((title, g, res, sampler))
    return out


def _train_or_reuse(args, method, run, **extra):
    """(policy, θ) of the run ``run``: reused if finished, continued if not (on its own
    backend; --backend, if given, must be it), else trained with ``extra`` options on
    --backend (--quick: a tiny policy for QUICK_ITERATIONS iterations, a smoke test)."""
    from .navigation import train_navigation
    from .navigation_checkpoint import read, with_old_defaults
    iterations = QUICK_ITERATIONS if args.quick else args.iterations
    print(f"[reproduce] {method}: {run}", flush=True)
    if not args.overwrite and os.path.exists(os.path.join(run, "checkpoint.npz")):
        have = read(run)
        _same_backend(args, run, with_old_defaults(have["config"])["backend"])
        _same_options(run, have["config"], extra)
        if have["iteration"] < (iterations or have["config"]["iterations"]):
            train_navigation(out=run, resume=True, iterations=iterations,
                             progress=not args.no_progress)
    else:
        small = dict(meta_batch=2, trajectories=4, hidden=[16, 16]) if args.quick else {}
        train_navigation(out=run, overwrite=args.overwrite, method=method, seed=args.seed,
                         iterations=iterations, progress=not args.no_progress,
                         backend=args.backend, **small, **extra)
    policy, theta, _ = _load(run)
    return policy, theta


def _same_options(run, saved, extra):
    """InputError when the run in ``run`` was trained with other values of the row's own
    options (``extra``: say the estimator) than the row stands for."""
    for key, value in extra.items():
        if saved.get(key) != value:
            raise InputError(f"reproduce navigation: the run in {run!r} was trained with "
                             f"{key}={saved.get(key)!r}, but its row needs {key}={value!r}; "
                             f"give --overwrite to train it again, or another --out")


def _same_backend(args, run, saved):
    """InputError naming --backend when it is given and the run in ``run`` was trained on
    another backend (the two agree to rounding, not bit for bit)."""
    if args.backend is not None and check_backend(args.backend) != saved:
        raise InputError(f"--backend: the run in {run!r} was trained with backend {saved!r}, "
                         f"got {args.backend!r}; drop --backend (the runs keep their own), "
                         f"give --backend {saved}, or --overwrite to train them again")
