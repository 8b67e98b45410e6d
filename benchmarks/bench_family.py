"""The MAML family's cost per meta-gradient: MAML, ANIL, iMAML (and FOMAML for scale).

Dimension legend: T tasks, K support, Q query, P parameters, s = inner_steps.

Sinusoid workload: the paper's 1-40-40-1 ReLU net (P = 1761), T = 25, K = Q = 10, α = 0.01.
Prints the median ms of one meta-gradient after a warm-up (the methods interleaved, 7 rounds)
and the tracemalloc peak of one NumPy meta-gradient. iMAML runs in NumPy on every backend.

    python benchmarks/bench_family.py [--steps 1 5] [--backend numpy numba] [--rounds 7]
"""
import argparse
import time
import tracemalloc

import numpy as np

import mamlnp
from mamlnp.meta import anil, imaml, maml


def calls(model, theta, batch, s, backend):
    return {"maml": lambda: maml.meta_gradient(model, theta, batch, 0.01, s, backend=backend),
            "fomaml": lambda: maml.meta_gradient(model, theta, batch, 0.01, s, True, backend),
            "anil": lambda: anil.anil_gradient(model, theta, batch, 0.01, s, backend=backend),
            "imaml c=5": lambda: imaml.imaml_gradient(model, theta, batch, 0.01, s, 1.0, 5)}


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
    a = p.parse_args()
    model = mamlnp.MLP((1, 40, 40, 1))
    theta = model.init(0)
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(0), 25, 10, 10)
    print(f"{'backend':<8} {'s':>3} {'method':<10} {'ms (median)':>12} {'peak kB (numpy)':>16}")
    for backend in a.backend:
        for s in a.steps:
            fns = calls(model, theta, batch, s, backend)
            times = {k: [] for k in fns}
            for f in fns.values():
                f()                                                      # warm-up / compile
            for _ in range(a.rounds):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(1e3 * (time.perf_counter() - t0))
            for k, f in fns.items():
                kb = peak_kb(calls(model, theta, batch, s, "numpy")[k]) if backend == "numpy" else ""
                kb = f"{kb:16.0f}" if kb != "" else f"{'':>16}"
                print(f"{backend:<8} {s:>3} {k:<10} {np.median(times[k]):12.2f} {kb}")


if __name__ == "__main__":
    main()
