"""The MAML family's cost per meta-gradient: MAML, ANIL, iMAML (and FOMAML for scale).

Dimension legend: T tasks, K support, Q query, P parameters, s = inner_steps.

Workloads (--workload):
  sinusoid   the paper's 1-40-40-1 ReLU net (P = 1761), T = 25, K = Q = 10, α = 0.01;
  omniglot   784-256-128-64-64-5 with batch norm (P = 247,621), 5-way 1-shot, one query per
             class, T = 32, α = 0.4, inputs with 8 % ink (the classification benchmark's batch).
Prints the median ms of one meta-gradient after a warm-up (the methods interleaved, 7 rounds)
and the tracemalloc peak of one NumPy meta-gradient. ANIL appears twice: "anil head" (its
default path: body features once, head-only HVPs) and "anil masked" (MAML's gradient with α
masked to the head). iMAML runs in NumPy on every backend.

    python benchmarks/bench_family.py [--steps 1 5] [--backend numpy numba] [--rounds 7]
    python benchmarks/bench_family.py --workload omniglot --steps 1 --backend numba
"""
import argparse
import time
import tracemalloc

import numpy as np

import mamlnp
from mamlnp.meta import anil, imaml, maml


def calls(model, theta, batch, s, backend, a):
    return {"maml": lambda: maml.meta_gradient(model, theta, batch, a, s, backend=backend),
            "fomaml": lambda: maml.meta_gradient(model, theta, batch, a, s, True, backend),
            "anil head": lambda: anil.anil_gradient(model, theta, batch, a, s, backend=backend,
                                                    path="head"),
            "anil masked": lambda: anil.anil_gradient(model, theta, batch, a, s, backend=backend,
                                                      path="masked"),
            "imaml c=5": lambda: imaml.imaml_gradient(model, theta, batch, a, s, 1.0, 5)}


def workload(name):
    """(model, θ, batch, α) of a workload (module docstring)."""
    if name == "sinusoid":
        model = mamlnp.MLP((1, 40, 40, 1))
        batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(0), 25, 10, 10)
        return model, model.init(0), batch, 0.01
    model = mamlnp.MLP((784, 256, 128, 64, 64, 5), "relu", "softmax_xent", batch_norm=True)
    rng = np.random.default_rng(0)
    x = (rng.random((32, 10, 784)) < 0.08).astype(float)                 # (T, K+Q, D)
    y = np.broadcast_to(np.eye(5)[np.tile(np.arange(5), 2)], (32, 10, 5))
    return model, model.init(0), mamlnp.TaskBatch.make(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:]), 0.4


def peak_kb(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5])
    p.add_argument("--backend", nargs="+", default=["numpy", "numba"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--workload", choices=("sinusoid", "omniglot"), default="sinusoid")
    a = p.parse_args()
    model, theta, batch, alpha = workload(a.workload)
    print(f"{a.workload}: {model}, P = {model.num_params}, T = {batch.num_tasks}")
    print(f"{'backend':<8} {'s':>3} {'method':<12} {'ms (median)':>12} {'peak kB (numpy)':>16}")
    for backend in a.backend:
        for s in a.steps:
            fns = calls(model, theta, batch, s, backend, alpha)
            times = {k: [] for k in fns}
            for f in fns.values():
                f()                                                      # warm-up / compile
            for _ in range(a.rounds):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(1e3 * (time.perf_counter() - t0))
            for k, f in fns.items():
                kb = peak_kb(calls(model, theta, batch, s, "numpy", alpha)[k]) if backend == "numpy" else ""
                kb = f"{kb:16.0f}" if kb != "" else f"{'':>16}"
                print(f"{backend:<8} {s:>3} {k:<12} {np.median(times[k]):12.2f} {kb}")


if __name__ == "__main__":
    main()
