"""``python -m mamlnp train``: the command line of mamlnp.run.train.meta_train.

Dimension legend: T tasks (--meta-batch), K support points (--shots), Q query points
(--query), s inner steps (--inner-steps).

Each option maps to one key of the run config (mamlnp/run/runconfig.py); options that
are not given keep the task's defaults, or, with --resume, the saved run's values.
"""
import argparse
import os
import sys

from . import classify
from ..errors import DivergenceError, InputError, MamlnpError
from ..meta import maml as M
from ..meta.optim import OPTIMIZERS
from ..meta.variants import INNER_BN, METHODS
from .runconfig import DEFAULTS, TASKS
from .train import TrainingInterrupted, format_score, meta_train


EXAMPLES = """examples:
  mamlnp train sinusoid                                   the paper's protocol, runs/sinusoid-maml
  mamlnp train sinusoid --method pretrain                 the pretrained baseline
  mamlnp train sinusoid --iterations 2000 --out runs/try  a short run
  mamlnp train sinusoid --out runs/try --resume --iterations 5000   continue it (same bits)
  mamlnp train omniglot --ways 5 --shots 1                the paper's 5-way 1-shot protocol
                                                          (defaults: mamlnp/run/classify.py)
  mamlnp train omniglot --model conv --ways 5 --shots 1   the same with the paper's ConvNet
  mamlnp train omniglot --model conv --ways 20 --first-order   20-way, first-order MAML
  mamlnp train omniglot --model conv --first-order --inner-bn fixed   batch norm's γ, β
                                                          learned in the outer loop only

Ctrl-C (or SIGTERM) writes a checkpoint and exits with 130 (143); --resume continues.
Exit codes: 0 done, 1 diverged or could not write, 2 bad input, 130/143 interrupted."""


def task_default(key):
    """The default of config key ``key`` for each task, as --help shows it: "default 1e-3"
    when the tasks agree, else "default: sinusoid 10, omniglot 1 (20-way: …)"."""
    from .classify import omniglot_defaults
    fmt = lambda v: " ".join(map(str, v)) if isinstance(v, list) else str(v)   # noqa: E731
    sin = DEFAULTS[key]
    five = omniglot_defaults({}).get(key, sin)
    twenty = omniglot_defaults({"ways": 20}).get(key, sin)
    if key == "query":
        five = twenty = "= shots"
    if fmt(sin) == fmt(five) == fmt(twenty):
        return f"default {fmt(sin)}"
    om = fmt(five) + ("" if fmt(five) == fmt(twenty) else f"; 20-way {fmt(twenty)}")
    return f"default: sinusoid {fmt(sin)}, omniglot {om}"


def add_arguments(p):
    """Options of ``mamlnp train``. Defaults are None so that --resume can tell which
    options were given explicitly; the real defaults are in DEFAULTS (sinusoid) and
    run/classify.py (Omniglot): --help shows both."""
    d, dflt = DEFAULTS, task_default
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = (p.description or "") + (
        "\n\nEach task has its own protocol defaults (the paper's): an option not given "
        "keeps the\ndefault of the task being trained, shown below as 'sinusoid X, omniglot "
        "Y'.")
    p.epilog = EXAMPLES
    p.add_argument("task", choices=sorted((*TASKS, "navigation")), help="the task family: "
                   "sinusoid regression (sec. 5.1), omniglot N-way K-shot classification "
                   "(sec. 5.2) or navigation (RL, sec. 5.3: python -m mamlnp train navigation -h)")
    p.add_argument("--method", choices=(*METHODS, "oracle"), help=f"meta-learning method "
                   f"({dflt('method')}; --model conv: maml or fomaml; oracle: navigation only)")
    p.add_argument("--first-order", action="store_true", help="first-order MAML: the same as "
                   "--method fomaml (with --method metasgd: its first-order form)")
    p.add_argument("--shots", type=int, help=f"K support points per task (omniglot: per class) "
                   f"({dflt('shots')})")
    p.add_argument("--query", type=int, help=f"Q query points per task (omniglot: per class) "
                   f"({dflt('query')})")
    p.add_argument("--alpha", type=float, help=f"inner step size α ({dflt('alpha')})")
    p.add_argument("--beta", type=float, help=f"meta step size β of Adam ({dflt('beta')})")
    p.add_argument("--inner-steps", type=int, help=f"inner SGD steps ({dflt('inner_steps')}); "
                   f"navigation: 1, the paper's, or K > 1 to meta-train through the test's "
                   f"first K steps, α then --later-alpha")
    p.add_argument("--inner-bn", choices=INNER_BN, help="batch norm's γ, β in MAML's "
                   "inner loop: adapt (default: every parameter takes the inner step) or fixed "
                   "(γ, β of every batch-norm layer kept out of the inner step, α·m with m = 0 "
                   "on them, and learned by the outer optimizer only: cbfinn/maml's convention); "
                   "maml and fomaml on a network with batch norm (--model conv, the omniglot MLP)")
    p.add_argument("--meta-batch", type=int, help=f"tasks per meta-batch ({dflt('meta_batch')})")
    p.add_argument("--iterations", type=int, help=f"meta-iterations ({dflt('iterations')})")
    p.add_argument("--model", choices=("mlp", "conv"), help="omniglot: the network, mlp (the "
                   "batch-norm MLP, default) or conv (the paper's ConvNet: 4 x [3x3 conv, "
                   "stride 2, padding 1, batch norm, ReLU], spatial mean, dense head; the "
                   "same protocol, with --channels and --init xavier as its defaults)")
    p.add_argument("--hidden", type=int, nargs="+", help=f"hidden layer widths "
                   f"({dflt('hidden')}; omniglot with batch norm)")
    p.add_argument("--channels", type=int, nargs="+", help="--model conv: filters per conv "
                   "block (default 64 64 64 64)")
    p.add_argument("--activation", choices=("relu", "tanh", "softplus"),
                   help=f"hidden activation ({dflt('activation')})")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS),
                   help=f"outer optimizer with step β ({dflt('optimizer')})")
    p.add_argument("--init", choices=("normal", "uniform", "xavier"),
                   help=f"θ initialisation scheme, see MLP.init ({dflt('init')}); --model "
                   f"conv: xavier, ConvNet.init's one scheme")
    p.add_argument("--seed", type=int, help=f"seed of the run's only RNG (default {d['seed']})")
    p.add_argument("--backend", choices=M.BACKENDS,
                   help=f"meta-gradient backend (default {M.DEFAULT_BACKEND}; a navigation "
                   "run keeps its own on --resume)")
    p.add_argument("--out", help="run directory (default runs/sinusoid-<method>, "
                   "runs/omniglot-<N>way-<K>shot-<method>, runs/omniglot-<N>way-<K>shot-conv-"
                   "<method>; -bnfixed appended with --inner-bn fixed)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--checkpoint-every", type=int,
                   help=f"iterations between checkpoints ({dflt('checkpoint_every')})")
    p.add_argument("--eval-every", type=int, help="iterations between validation scores "
                   f"(sinusoid: MSE, omniglot: accuracy) on {d['val_tasks']} fixed held-out "
                   f"tasks ({dflt('eval_every')})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lam", type=float, help="imaml: proximal weight λ > 0 (default 1.0)")
    p.add_argument("--cg-steps", type=int, help="imaml: CG steps per implicit solve (default 5)")
    p.add_argument("--epoch-length", type=int, help="mamlpp: iterations per epoch (default 500)")
    p.add_argument("--msl-epochs", type=int, help="mamlpp: epochs of annealed multi-step loss "
                   "(default 10)")
    p.add_argument("--fo-epochs", type=int, help="mamlpp: first-order epochs before second "
                   "order (default 50)")
    p.add_argument("--ways", type=int, help="omniglot: N classes per episode, at least 2 "
                   "(default 5; 20 or more: the 20-way protocol's defaults)")
    p.add_argument("--data-dir", help="omniglot: the data folder (default $MAMLNP_DATA_DIR, "
                   "else the user cache folder; 'mamlnp download omniglot' fills it)")
    from .navigation_cli import add_train_arguments
    add_train_arguments(p)                      # --estimator, --outer, --max-kl, ...


def run(args):
    if args.task == "navigation":               # MAML for RL: mamlnp/run/navigation*.py
        from .navigation_cli import train
        return train(args)
    from .navigation_cli import NAV_ONLY, refuse
    refuse(args, NAV_ONLY, args.task)           # --estimator etc. mean nothing here
    keys = ("method", "shots", "query", "alpha", "beta", "inner_steps", "meta_batch",
            "iterations", "model", "hidden", "channels", "activation", "optimizer", "init",
            "seed", "backend", "checkpoint_every", "eval_every", "ways", "data_dir", "lam",
            "cg_steps", "epoch_length", "msl_epochs", "fo_epochs", "inner_bn")
    kwargs = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    name = args.task if args.task != "omniglot" else (
        f"omniglot-{args.ways or 5}way-{args.shots or 1}shot"
        + ("-conv" if args.model == "conv" else ""))
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        if args.first_order:
            kwargs.update(first_order_keys(args.method))
        method = kwargs.get("method", DEFAULTS["method"])
        fixed = "-bnfixed" if args.inner_bn == "fixed" else ""          # --inner-bn fixed
        out = args.out or os.path.join("runs", f"{name}-{method}{fixed}")
        result = meta_train(task=args.task, out=out, resume=args.resume,
                            overwrite=args.overwrite, progress=progress, **kwargs)
    except TrainingInterrupted as exc:
        print(f"mamlnp train: {exc}", file=sys.stderr)
        return 128 + int(exc.signum)                    # 130 for Ctrl-C, 143 for SIGTERM
    except DivergenceError as exc:
        print(f"mamlnp train: error: {exc}", file=sys.stderr)
        return 1
    except MamlnpError as exc:
        print(f"mamlnp train: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:                       # e.g. disk full while saving
        last = getattr(exc, "last_checkpoint", None)
        kept = (f"the last checkpoint written there (iteration {last}) is intact (files are "
                f"replaced atomically)" if last is not None else
                "no checkpoint of this run had been written there yet")
        print(f"mamlnp train: error: could not write the run in {out!r} ({exc}); {kept}",
              file=sys.stderr)
        return 1
    _print_summary(result)
    return 0


def first_order_keys(method):
    """The config keys --first-order stands for: method fomaml (from maml or none given), or
    Meta-SGD's first_order=True; other methods have no first-order switch (an error)."""
    if method in (None, "maml", "fomaml"):
        return {"method": "fomaml"}
    if method == "metasgd":
        return {"first_order": True}
    raise InputError(f"--first-order: does not apply to method {method!r} (only maml, as "
                     f"fomaml, and metasgd have a first-order form); drop it")


def _print_summary(result):
    cfg, h = result.config, result.history
    name = classify.history_columns(cfg)[2]
    shown = {"val_mse": "validation MSE", "val_accuracy": "validation accuracy"}[name]
    last = (f"meta-loss {h['meta_loss'][-1]:.4f}, {shown} {format_score(h[name][-1], name)}"
            if len(h["iteration"]) else "no history row")
    print(f"{cfg['method']}: {cfg['iteration']} iterations ({last}); run saved in "
          f"{result.out}/ (checkpoint.npz, config.json, history.csv)")
