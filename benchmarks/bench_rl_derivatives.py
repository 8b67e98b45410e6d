"""Milliseconds per RL meta-gradient and per meta Fisher-vector product (NumPy reference),
beside the JAX peer in the same run (optional).

    python benchmarks/bench_rl_derivatives.py [--tasks 20] [--steps 2000] [--rounds 3] [--reps 5]
        [--threads 2] [--jax-python PEERS/bin/python --jax-peer PEERS/navigation_jax.py]

Dimension legend: T tasks, M timesteps per task before and after the update, P parameters.

Workload (issue 30's Done-when): the 2D-navigation policy, mean = MLP 2-100-100-2 ReLU,
state-independent log-std, α = 0.5; fixed synthetic batches of T = 20 tasks × M = 2000
timesteps (20 trajectories of 100) before and after the update, observations U(−0.5, 0.5)²,
actions and advantages N(0, 1), the same construction as the JAX peer's. Timed:

  meta_gradient_<est>   mamlnp.rl_meta_gradient(policy, θ, pre, post, 0.5, est)
  fvp_product           one product of meta_fvp_operator (the operator built beforehand, as a
                        conjugate-gradient solve uses it), estimator "lvc": the product the JAX
                        peer computes with --estimator lvc (they agree to 1e-15; the default
                        "maml" U costs the same)
  fvp_with_setup        meta_fvp: the operator built and applied once

mamlnp runs as its commands do: one BLAS thread (mamlnp.run.process.single_blas_thread), the
tasks on ``--threads`` Python threads (default: the cores this process may use).

Rounds interleave: a mamlnp block, then the JAX peer (its own warm-up and repetitions), so a
change of machine load hits both. Medians after one warm-up call per block, min–max, and
GFLOP/s from the counted FLOPs (docs/derivations/policy-gradient.md §8). Nothing is asserted.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np

import mamlnp
from mamlnp.meta import rl
from mamlnp.run.process import single_blas_thread

SIZES = (2, 100, 100, 2)


def flops_per_sample(sizes=SIZES):
    """(forward, backward, R-forward, R-backward) FLOPs per sample: matrix products only."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2 * i * o for i, o in pairs)                  # h W
    first = 2 * pairs[0][0] * pairs[0][1]                   # the input layer has no Rh
    bwd = 2 * fwd                                           # dW = hᵀdz, dh = dz Wᵀ
    rfwd = 2 * fwd - first                                  # h V + Rh W
    rbwd = 4 * fwd - first                                  # hᵀRdz + Rhᵀdz, Rdz Wᵀ + dz Vᵀ
    return fwd, bwd, rfwd, rbwd


def batch(rng, tasks, steps):
    def task():
        return (rng.uniform(-0.5, 0.5, (steps, 2)), rng.normal(0, 1, (steps, 2)),
                rng.normal(0, 1, steps), np.repeat(np.arange(steps // 100 + 1), 100)[:steps])
    return [task() for _ in range(tasks)]


def timed(fn, reps):
    fn()                                                    # warm-up
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def mamlnp_block(policy, theta, pre, post, reps, v, threads):
    obs1 = [p[0] for p in post]
    res = {f"meta_gradient_{e}": timed(lambda e=e: rl.rl_meta_gradient(
        policy, theta, pre, post, 0.5, e, threads=threads), reps) for e in rl.ESTIMATORS}
    fvp = rl.meta_fvp_operator(policy, theta, pre, obs1, 0.5, estimator="lvc", threads=threads)
    res["fvp_product"] = timed(lambda: fvp(v), reps)
    res["fvp_with_setup"] = timed(lambda: rl.meta_fvp(policy, theta, pre, obs1, 0.5, v,
                                                      estimator="lvc", threads=threads), reps)
    return res


def jax_block(python, peer, tasks, steps, reps):
    if not python or not peer:
        return None
    cmd = [python, peer, "--dtype", "float64", "--estimator", "lvc", "--tasks", str(tasks),
           "--steps", str(steps), "--reps", str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print("JAX peer failed:", out.stderr.strip().splitlines()[-1:] or out.returncode)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--jax-python", default="")
    ap.add_argument("--jax-peer", default="")
    a = ap.parse_args()
    blas = single_blas_thread()
    rng = np.random.default_rng(0)
    policy = mamlnp.GaussianPolicy(SIZES, "relu")
    theta = policy.init(0)
    pre, post = batch(rng, a.tasks, a.steps), batch(rng, a.tasks, a.steps)
    v = rng.normal(0, 1, policy.num_params)
    times, jax_ms = {}, {}
    for _ in range(a.rounds):
        for k, t in mamlnp_block(policy, theta, pre, post, a.reps, v, a.threads).items():
            times.setdefault(k, []).extend(t)
        peer = jax_block(a.jax_python, a.jax_peer, a.tasks, a.steps, a.reps)
        for k in ("meta_gradient", "fvp"):
            if peer:
                jax_ms.setdefault(k, []).append(peer[k]["median_ms"])
    fwd, bwd, rfwd, rbwd = flops_per_sample()
    n = a.tasks * a.steps
    work = {"meta_gradient": n * (2 * (fwd + bwd) + rfwd + rbwd),
            "fvp_product": n * (2 * (rfwd + rbwd) + rfwd + bwd)}
    work["fvp_with_setup"] = work["fvp_product"] + n * (2 * fwd + bwd)
    print(f"T = {a.tasks} tasks x M = {a.steps} timesteps, P = {policy.num_params}, "
          f"{a.threads} task thread(s), one BLAS thread in {blas} OpenBLAS; "
          f"median ms [min-max] over {a.rounds} rounds x {a.reps}")
    for k, t in times.items():
        w = work["meta_gradient" if k.startswith("meta_gradient") else k]
        med = statistics.median(t)
        print(f"  {k:<22} {1e3 * med:9.1f} [{1e3 * min(t):.1f}-{1e3 * max(t):.1f}]   "
              f"{w / 1e9:5.1f} GFLOP  {w / med / 1e9:6.1f} GFLOP/s")
    for k, ms in jax_ms.items():
        print(f"  JAX {k:<18} {statistics.median(ms):9.1f} (median of the peer's block medians)")


if __name__ == "__main__":
    main()
