"""Time per meta-iteration of mamlnp.run.train.meta_train, and the training loop's own cost.

    python benchmarks/bench_train.py [--iterations 2000] [--methods maml fomaml ...]

Workload: the paper's sinusoid protocol (1-40-40-1 ReLU, meta-batch 25, K = Q = 10,
α = 0.01, one inner step, Adam β = 1e-3), no checkpoints, no validation.
For each method and backend it prints, after a warm-up run:

* per-iteration wall time of meta_train (median, min–max, from a callback's timestamps);
* the method's step alone (meta-gradient(s) on a fixed batch), median;
* their difference: what the loop adds (sampling, Adam, divergence check, bookkeeping).

Timings depend on the machine and its load; nothing here is asserted.
"""
import argparse
import time

import numpy as np

from mamlnp import SinusoidTasks
from mamlnp.meta.maml import BACKENDS
from mamlnp.fast import spin_threads
from mamlnp.run.train import make_config, meta_train
from mamlnp.meta.variants import METHODS, get_method

spin_threads()      # the CLI's thread-spin setting (mamlnp/fast/__init__.py)


def per_iteration_times(method, backend, iterations):
    stamps = []
    meta_train(method=method, backend=backend, iterations=iterations, eval_every=10**9,
               progress=False, callback=lambda step: stamps.append(time.perf_counter()))
    return np.diff(stamps)                                     # (iterations − 1,) seconds


def step_times(method, backend, repeats):
    cfg = make_config(method=method, backend=backend)
    from mamlnp import MLP
    model = MLP(**cfg["model"])
    m = get_method(method)
    params = m.init_params(model, model.init(0), cfg)
    batch = SinusoidTasks().sample(0, cfg["meta_batch"], cfg["shots"], cfg["query"])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        m.step(model, params, batch, cfg, backend)
        times.append(time.perf_counter() - t)
    return np.array(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = p.parse_args(argv)
    print(f"{'method':9s} {'backend':7s} {'meta_train ms/it (median, min-max)':>36s} "
          f"{'step ms':>9s} {'loop ms':>8s}")
    for backend in args.backends:
        try:
            meta_train(backend=backend, iterations=3, progress=False)    # compile / warm up
        except ImportError as exc:
            print(f"backend {backend}: unavailable ({exc})")
            continue
        for method in args.methods:
            n = args.iterations if backend == "numba" or method == "pretrain" else \
                max(args.iterations // 10, 50)
            it = per_iteration_times(method, backend, n) * 1e3
            st = np.median(step_times(method, backend, min(n, 200))) * 1e3
            med = np.median(it)
            print(f"{method:9s} {backend:7s} {med:14.3f} ({it.min():.3f}-{it.max():.3f})"
                  f"{'':6s} {st:9.3f} {med - st:8.3f}")


if __name__ == "__main__":
    main()
