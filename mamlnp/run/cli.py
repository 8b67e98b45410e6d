"""mamlnp: MAML by hand in NumPy (the command line; also run as: python -m mamlnp).

Each sub-command lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). Modules are
imported only when their command runs, so ``mamlnp --help`` stays fast.
"""
import argparse
import importlib
import os
import sys

from .._version import __version__
from ..errors import DivergenceError, MamlnpError

# command -> (module, one-line help)
COMMANDS = {
    "gradcheck": ("mamlnp.check.gradcheck", "check every hand-written derivative against finite differences"),
    "train": ("mamlnp.run.train_cli", "meta-train a model on sinusoid regression or Omniglot "
              "classification (MAML, FOMAML, Reptile, Meta-SGD, iMAML, ANIL, MAML++, pretrain)"),
    "evaluate": ("mamlnp.run.evaluate", "evaluate a trained run on its held-out tasks "
                 "(sinusoid: the 600-task pool; Omniglot: 600 test episodes)"),
    "reproduce": ("mamlnp.run.reproduce", "the paper's experiments end to end: sinusoid "
                  "regression (sec. 5.1, default) or Omniglot 5-way classification (Table 1)"),
    "download": ("mamlnp.run.download", "download a dataset (omniglot) into the data folder"),
    "negative-lr": ("mamlnp.run.negative_lr", "MAML's test loss against the inner step on "
                    "mixed linear regression: closed form vs measured (Bernacchia 2021)"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="mamlnp", description=__doc__.splitlines()[0],
                                     epilog="mamlnp COMMAND --help shows the options of one command.")
    parser.add_argument("--version", action="version", version=f"mamlnp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser._subcommands = {}
    for name, (module, help_) in COMMANDS.items():
        p = parser._subcommands[name] = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv=None):
    """Run one sub-command; returns its exit code (see ``_main``). A reader of stdout that
    goes away (``mamlnp train --help | head -1``) ends the command quietly, exit code 141."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv=None):
    """Run one sub-command; returns its exit code.

    Errors meant for the user become one line on stderr, never a traceback:
    ``mamlnp COMMAND: error: <message>`` with exit code 2 for bad input or a bad
    checkpoint (MamlnpError; argparse's own usage errors also exit 2), 1 for a
    diverged run, a file-system error or running out of memory, 130 for Ctrl-C, 3 for an
    unexpected exception (a bug, reported in one line too). See docs/errors.md.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:                    # bare `mamlnp`: the help, exit 0
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        sys.stdout.flush()
        return 0
    if extra:                                   # the sub-command's usage, not the top level's
        parser._subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    from ..fast import spin_threads
    from .process import keep_freed_memory, load_notice, single_blas_thread
    spin_threads()                              # GOMP_SPINCOUNT for our commands only
    keep_freed_memory()                         # glibc: big arrays reuse freed memory
    single_blas_thread()                        # OpenBLAS: no threads of its own
    if getattr(args, "_missing", False):
        print(f"mamlnp {args.command}: not available in this version", file=sys.stderr)
        return 2
    load_notice(args.command)                   # a busy machine: say so, suggest one thread
    try:
        code = int(importlib.import_module(args._module).run(args) or 0)
        sys.stdout.flush()                      # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:                     # `mamlnp ... | head`: the reader left, quietly
        return _quiet_broken_pipe()
    except DivergenceError as exc:
        return _fail(args.command, exc, 1)
    except MamlnpError as exc:
        return _fail(args.command, exc, 2)
    except OSError as exc:              # unwritable --out, disk full, a directory as a file...
        where = f": {exc.filename!r}" if exc.filename else ""
        return _fail(args.command, f"{exc.strerror or exc}{where}", 1)
    except MemoryError as exc:          # e.g. an absurd --max-steps or --meta-batch
        return _fail(args.command, f"out of memory ({exc}); use smaller sizes", 1)
    except KeyboardInterrupt:
        print(f"mamlnp {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:            # a bug in mamlnp: still one line, never a traceback
        return _fail(args.command, f"internal error ({type(exc).__name__}: {exc}); this is a "
                     f"bug in mamlnp, please report it with the command", 3)


def _quiet_broken_pipe():
    """The reader of stdout has gone (``| head``): no message, no second error when Python
    flushes stdout at exit; exit code 141 (128 + SIGPIPE), as a shell tool killed by it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def _fail(command, message, code):
    print(f"mamlnp {command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
