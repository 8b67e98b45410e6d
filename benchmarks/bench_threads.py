"""What an idle OpenMP worker should do: ms per meta-iteration for several GOMP_SPINCOUNT.

    python benchmarks/bench_threads.py [--iterations 2000] [--spins 10000 default 1000000]

Dimension legend: T = 25 tasks, K = Q = 10 points, s = inner_steps (1, second order).

Numba's ``omp`` threading layer runs the fused training step (mamlnp.run.trainstep) on GNU
libgomp's thread pool. Between two parallel regions, and at the barrier that ends one, a
thread with nothing to do spins GOMP_SPINCOUNT times (libgomp's default: 300,000, about
8 ms here) and then sleeps in the kernel; a sleeping thread costs a wake-up the next time
(tens of µs in a VM). Each setting is timed in fresh processes (libgomp reads the variable
once, at start) in three situations:
  * quiet: nothing else running;
  * 1 hog: one CPU-bound process (a Python busy loop) shares the two cores;
  * 2 runs: two training processes at once, each with its 2 threads.
Printed: the median ms per meta-iteration (mamlnp.run.train._iteration, s = 1 SO) of each
process, after a warm-up of a fifth of the iterations. Nothing is asserted; the default
set in mamlnp/fast/kernels/__init__.py is argued from these figures in docs/performance.md.
"""
import argparse
import os
import subprocess
import sys
import time

CHILD = """
import sys, time, numpy as np
sys.path.insert(0, {here!r})
import bench_meta_gradient as B
from mamlnp.run import train as TR
r = B.Runner("numba")
method, cfg, state, fused = r.training_state(1, False)
n = {n}
ts = np.empty(n)
for i in range(n):
    t0 = time.perf_counter()
    TR._iteration(r.model, method, cfg, state, None, None, fused)
    ts[i] = time.perf_counter() - t0
print(np.median(ts[n // 5:]) * 1e3)
"""
HOG = "while True: pass"
HERE = os.path.dirname(os.path.abspath(__file__))


def child(spins, n):
    env = dict(os.environ)
    if spins == "default":
        env.pop("GOMP_SPINCOUNT", None)
    else:
        env["GOMP_SPINCOUNT"] = str(spins)
    env.pop("OMP_WAIT_POLICY", None)
    return subprocess.Popen([sys.executable, "-c", CHILD.format(here=HERE, n=n)], env=env,
                            stdout=subprocess.PIPE, text=True)


def medians(procs):
    out = [float(p.communicate()[0]) for p in procs]
    return " ".join(f"{m:7.3f}" for m in out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--spins", nargs="+", default=["10000", "default", "1000000"])
    args = p.parse_args(argv)
    print("median ms per meta-iteration (s = 1, SO), one figure per process")
    print(f"{'GOMP_SPINCOUNT':>15s} {'quiet':>8s} {'1 hog':>8s} {'2 runs':>16s}")
    for spins in args.spins:
        quiet = medians([child(spins, args.iterations)])
        hog = subprocess.Popen([sys.executable, "-c", HOG])
        try:
            time.sleep(0.5)
            hogged = medians([child(spins, args.iterations)])
        finally:
            hog.kill()
            hog.wait()
        both = medians([child(spins, args.iterations), child(spins, args.iterations)])
        print(f"{spins:>15s} {quiet:>8s} {hogged:>8s} {both:>16s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
