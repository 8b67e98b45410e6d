"""Where a training iteration's wall time goes, piece by piece (Omniglot by default).

    MAMLNP_DATA_DIR=... python benchmarks/profile_train.py [--iterations 1500] [--ways 5]
        [--shots 1] [--out DIR]

Runs ``mamlnp.meta_train`` as ``python -m mamlnp train omniglot`` does (the same settings:
GOMP_SPINCOUNT, malloc, one BLAS thread; validation every 500 iterations, a checkpoint every 1000 into a
temporary run directory) with the functions
below wrapped in ``time.perf_counter`` timers (a few µs each, far less than cProfile's
per-call cost), then prints ms per iteration of each piece (nested pieces are included in
their parents: ``_iteration`` holds ``step_at``, which holds the kernel). The first
iteration (compilation) is left out of every figure. Nothing here is asserted.
"""
import argparse
import collections
import importlib
import os
import tempfile
import time

import numpy as np

from mamlnp.fast import spin_threads
from mamlnp.run.process import keep_freed_memory, single_blas_thread

spin_threads()          # the CLI's settings (MAMLNP_SPIN=0, MAMLNP_MALLOC=0, MAMLNP_BLAS=0
keep_freed_memory()     # turn them off)
single_blas_thread()

PIECES = [          # (module, attribute, label): wrapped where the caller looks them up
    ("mamlnp.run.train", "_iteration", "_iteration (all of one iteration)"),
    ("mamlnp.run.train", "sample_batch", "  sample_batch"),
    ("mamlnp.meta.variants", "Method.step_at", "  method.step_at"),
    ("mamlnp.fast.bn_mlp.kernelset", "group_meta_grad", "    group_meta_grad (s = 1: task groups)"),
    ("mamlnp.fast.bn_mlp.kernelset", "_inputs", "    kernelset._inputs (other s: CSR/CSC)"),
    ("mamlnp.fast.bn_mlp.kernelset", "batch_meta_grad", "    batch_meta_grad (other s)"),
    ("mamlnp.run.runguard", "DivergenceGuard.check", "  guard.check"),
    ("mamlnp.run.train", "outer_step", "  outer_step (Adam)"),
    ("mamlnp.run.runguard", "DivergenceGuard.record", "  guard.record"),
    ("mamlnp.run.train", "_history_row", "  _history_row (validation)"),
    ("mamlnp.run.train", "_check_state", "_check_state (before a checkpoint)"),
    ("mamlnp.run.train", "_save", "_save (checkpoint)"),
    ("mamlnp.run.train", "_show", "_show (progress bar)"),
]


def wrap(totals, counts):
    """Replace each piece by a timed wrapper; returns the undo list."""
    undo = []
    for modname, attr, label in PIECES:
        owner = importlib.import_module(modname)
        *path, name = attr.split(".")
        for p in path:
            owner = getattr(owner, p)
        orig = owner.__dict__[name]

        def timed(*a, _orig=orig, _label=label, **k):
            t = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                if counts["iter"] > 1:                         # not the compiling first one
                    totals[_label].append(time.perf_counter() - t)
        setattr(owner, name, timed)
        undo.append((owner, name, orig))
    return undo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = p.parse_args(argv)
    from mamlnp.run.train import meta_train
    totals, counts = collections.defaultdict(list), collections.Counter()
    counts["iter"] = 0
    stamps = []

    def callback(step):
        counts["iter"] += 1
        stamps.append(time.perf_counter())

    undo = wrap(totals, counts)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or os.path.join(tmp, "run")
            t0 = time.perf_counter()
            meta_train(task="omniglot", ways=args.ways, shots=args.shots, seed=0,
                       iterations=args.iterations, out=out, progress=False,
                       callback=callback)
            wall = time.perf_counter() - t0
    finally:
        for owner, name, orig in undo:
            setattr(owner, name, orig)
    n = len(stamps) - 1
    per = (stamps[-1] - stamps[0]) / n
    print(f"{args.iterations} iterations, {wall:.1f} s of meta_train; iterations 2..end "
          f"{1e3 * per:.2f} ms each (callback to callback)")
    print(f"{'piece':40s} {'ms/iteration':>12s} {'calls':>6s} {'median':>7s} {'p90':>7s} "
          f"{'max':>7s} (ms per call)")
    for _, _, label in PIECES:
        t = 1e3 * np.array(totals[label] or [0.0])
        print(f"{label:40s} {t.sum() / n:12.3f} {len(totals[label]):6d} {np.median(t):7.3f} "
              f"{np.percentile(t, 90):7.3f} {t.max():7.1f}")


if __name__ == "__main__":
    main()
