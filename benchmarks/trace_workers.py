"""Inside the fused training step: when each worker starts and ends, how many tasks it took.

    python benchmarks/trace_workers.py [--s 1] [--iterations 3000]

Dimension legend: T = 25 tasks, W = 2 workers, F tasks taken by the prefix worker, s =
inner_steps (second order).

A copy of ``train_kernels.train_step`` that reads the CPU's time-stamp counter (LLVM
``readcyclecounter``, an ``@intrinsic``) when the call starts, when each worker starts and
ends its tasks, and when the tail (rows F … T−1, / T, Adam) ends; it calls the same
``worker_tasks`` and ``mean_and_adam`` as the real kernel, on the same workload as
bench_meta_gradient.py. Printed, after a warm-up: the median and 90th percentile µs of each
time stamp from the call's start, and how often the prefix worker took F tasks. On a quiet
machine F is 12 or 13; when the host slows one core for a while, the other takes more.
Nothing is asserted.
"""
import argparse
import sys
import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from mamlnp.run import train as TR
from mamlnp.fast.kernels.maml_kernels import start_claims
from mamlnp.fast.kernels.train_kernels import mean_and_adam, worker_tasks


@intrinsic
def cycles(typingctx):
    """The time-stamp counter (x86 rdtsc through LLVM's readcyclecounter)."""
    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter",
                                              fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])
    return types.uint64(), codegen


@njit
def now():
    return cycles()


@njit(parallel=True)
def traced_step(stamps, theta, u, rg, xs, ys, xq, yq, alpha, s, first_order, sizes, woff, boff,
                coff, aid, lid, ws, W, total, g, m, v, hp, theta_out, m_out, v_out):
    """train_step with stamps: [0] start, [1 + 2w] / [2 + 2w] worker w's start / end,
    [1 + 2W] end of the tail."""
    stamps[0] = cycles()
    start_claims(ws[9])
    for w in prange(W):
        stamps[1 + 2 * w] = cycles()
        worker_tasks(w, W, numba.get_thread_id(), theta, u, rg, xs, ys, xq, yq, alpha, s,
                     first_order, sizes, woff, boff, coff, aid, lid, ws, total)
        stamps[2 + 2 * w] = cycles()
    finite = mean_and_adam(ws[9][2], ws[5], total, g, theta, m, v, hp, theta_out, m_out, v_out)
    stamps[1 + 2 * W] = cycles()
    return finite


def cycles_per_us():
    a, t0 = now(), time.perf_counter()
    time.sleep(0.2)
    return (now() - a) / (time.perf_counter() - t0) / 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--s", type=int, default=1)
    p.add_argument("--iterations", type=int, default=3000)
    args = p.parse_args(argv)
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import bench_meta_gradient as B
    r = B.Runner("numba")
    _, _, state, F = r.training_state(args.s, False)
    W = min(numba.get_num_threads(), F.T)
    th = state.params["theta"]
    m, v, rng = np.zeros_like(th), np.zeros_like(th), np.random.default_rng(0)
    stamps, rows, splits = np.zeros(2 + 2 * W, np.uint64), [], []
    for i in range(args.iterations):
        rng.random(out=F.u)
        traced_step(stamps, th, *F.args, W, F.total, F.g, m, v, F.hp, np.empty_like(th),
                    F.pairs[0][0], F.pairs[0][1])
        if i >= args.iterations // 10:                               # after a warm-up
            rows.append(stamps.astype(np.int64) - int(stamps[0]))
            splits.append(int(F.ws[9][2]))
    us = np.array(rows, dtype=float) / cycles_per_us()
    print(f"s = {args.s}, W = {W}, {len(rows)} iterations; µs from the call's start "
          "(median, p90)")
    for w in range(W):
        role = "prefix worker" if w == W - 1 else "worker"
        print(f"  {role} {w}: start {np.median(us[:, 1 + 2 * w]):7.1f} "
              f"{np.percentile(us[:, 1 + 2 * w], 90):7.1f}   end "
              f"{np.median(us[:, 2 + 2 * w]):7.1f} {np.percentile(us[:, 2 + 2 * w], 90):7.1f}")
    print(f"  tail (rows F … T−1, / T, Adam) ends: {np.median(us[:, -1]):7.1f} "
          f"{np.percentile(us[:, -1], 90):7.1f}")
    counts = np.bincount(splits, minlength=F.T + 1)
    print("  F (tasks of the prefix worker): " + ", ".join(
        f"{f}: {c}" for f, c in enumerate(counts) if c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
