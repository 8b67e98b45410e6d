"""Two checkouts of mamlnp, timed against each other: ms per training meta-iteration.

    git worktree add /tmp/mamlnp-old <commit>          # the code to compare with
    python benchmarks/ab_trees.py /tmp/mamlnp-old . [--s 1 5] [--rounds 4] [--seconds 4]

Dimension legend: T = 25 tasks, K = Q = 10 points, s = inner_steps (second order).

Each round runs, for every s and in turn for every tree, a fresh process that imports
mamlnp FROM THAT TREE, warms up 50 iterations, then times ``mamlnp.run.train._iteration``
(the fused step on numba, the standard workload of bench_meta_gradient.py) for --seconds.
Alternating the trees round after round spreads the host's slow minutes over both.
Printed per tree and s: median, mean, 75th and 90th percentile ms over all its rounds'
iterations (a change of who-runs-what between threads shows in the tail of the
distribution before it shows in the median). Nothing is asserted.
"""
import argparse
import io
import os
import subprocess
import sys

import numpy as np

CHILD = """
import sys, time, numpy as np
root = {root!r}
sys.path[:0] = [root, root + "/benchmarks"]
import mamlnp
assert mamlnp.__file__.startswith(root), mamlnp.__file__
import bench_meta_gradient as B
from mamlnp.run import train as TR
r = B.Runner("numba")
method, cfg, state, fused = r.training_state({s}, False)
for _ in range(50):
    TR._iteration(r.model, method, cfg, state, None, None, fused)
ts, end = [], time.perf_counter() + {seconds}
while time.perf_counter() < end:
    t0 = time.perf_counter()
    TR._iteration(r.model, method, cfg, state, None, None, fused)
    ts.append(time.perf_counter() - t0)
np.save(sys.stdout.buffer, np.array(ts))
"""


def run(root, s, seconds):
    """Per-iteration seconds of one fresh process on the tree ``root``."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=root, s=s, seconds=seconds)],
                         check=True, capture_output=True, cwd=root)
    return np.load(io.BytesIO(out.stdout))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs=2, help="two checkouts (folders holding mamlnp/)")
    p.add_argument("--s", type=int, nargs="+", default=[1, 5])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args(argv)
    trees = [os.path.abspath(t) for t in args.trees]
    times = {(t, s): [] for t in trees for s in args.s}
    for _ in range(args.rounds):
        for s in args.s:
            for t in trees:
                times[t, s].append(run(t, s, args.seconds))
    print(f"{'tree':40s} {'s':>2s} {'iterations':>10s} {'median':>7s} {'mean':>7s} "
          f"{'p75':>7s} {'p90':>7s}   (ms per meta-iteration)")
    for (t, s), parts in times.items():
        v = np.concatenate(parts) * 1e3
        print(f"{t[-40:]:40s} {s:2d} {v.size:10d} {np.median(v):7.3f} {v.mean():7.3f} "
              f"{np.percentile(v, 75):7.3f} {np.percentile(v, 90):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
