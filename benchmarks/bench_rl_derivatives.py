"""Milliseconds per RL meta-gradient and per meta Fisher-vector product, beside a JAX
implementation in the same run (optional).

    python benchmarks/bench_rl_derivatives.py [--tasks 20] [--steps 2000] [--rounds 3] [--reps 5]
        [--threads 2] [--compare-python VENV/bin/python [--jax-script compare/navigation_jax.py]]

Dimension legend: T tasks, M timesteps per task before and after the update, P parameters.

Workload (issue 30's Done-when): the 2D-navigation policy, mean = MLP 2-100-100-2 ReLU,
state-independent log-std, α = 0.5; fixed synthetic batches of T = 20 tasks × M = 2000
timesteps (20 trajectories of 100) before and after the update, observations U(−0.5, 0.5)²,
actions and advantages N(0, 1), the same construction as the JAX peer's. Timed:

  meta_gradient_<est>   mamlnp.rl_meta_gradient(policy, θ, pre, post, 0.5, est): the passes
                        written out for two hidden ReLU layers (mamlnp/nn/policy_factors.py),
                        their row passes compiled (backend "numba", the default:
                        mamlnp/fast/policy/)
  fvp_product           one product of meta_fvp_operator (the operator built beforehand, as a
                        conjugate-gradient solve uses it), estimator "lvc": the product the JAX
                        comparison computes with --estimator lvc (they agree to 1e-15,
                        tests/test_compare_navigation_jax.py; the default "maml" U costs the
                        same), through the Jacobian factors cached when the operator is built
  fvp_with_setup        meta_fvp: the operator built (factors included) and applied once
  *_numpy               the same with backend="numpy": the row passes in NumPy
                        (mamlnp/nn/policy_ops.py, the compiled kernels' reference)
  *_rpass               the same with factored=False: the general R-pass (mamlnp/nn/policy.py),
                        the alternative beside the default, with its cost
  trpo_iteration        the derivatives of one meta-TRPO iteration: meta_trpo_fns (the lvc
                        meta-gradient, the FVP operator, the line-search functions, each task's
                        points computed once) and trpo_step (10 conjugate-gradient products,
                        xᵀFx from them, the backtracking line search; its number
                        of candidates, which the synthetic advantages decide, is printed)

The JAX comparison (benchmarks/compare/navigation_jax.py, our own JAX code for the same
workload) recomputes everything at every call, as jit(jvp(grad)) does: compare its FVP with
fvp_product for a conjugate-gradient solve (10 products at one θ), with fvp_with_setup for
one product alone.

mamlnp runs as its commands do: one BLAS thread (mamlnp.run.process.single_blas_thread), freed
memory kept (keep_freed_memory), the tasks on ``--threads`` Python threads (default: the cores
this process may use).

Rounds interleave: a mamlnp block, then the JAX comparison (its own warm-up and repetitions),
so a change of machine load hits both. Medians after one warm-up call per block, min–max, and
GFLOP/s from the counted FLOPs (docs/derivations/policy-gradient.md §8). Nothing is asserted.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout

import mamlnp                                                                 # noqa: E402
from mamlnp.meta import rl, rl_trpo                                           # noqa: E402
from mamlnp.meta.trpo import trpo_step                                        # noqa: E402
from mamlnp.run.process import keep_freed_memory, single_blas_thread         # noqa: E402

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


def factored_flops_per_sample(sizes=SIZES):
    """(HVP, Fisher product, set-up of a pre point, of a post point) FLOPs per sample through
    the Jacobian factors (mamlnp/nn/policy_factors.py): products and dots with δ1."""
    D, H1, H2, A = sizes
    big = 2 * (H1 + 1) * H2                                 # h̃1 Ṽ2, or h̃1ᵀ(·)
    thin = 2 * (D + 1) * H1 + 2 * A * H1 + 2 * A * H2 + 2 * (H2 + 1) * A
    jvp = vjp = big + thin                                  # x̃Ṽ1, ·δ1, u2 W3 | h̃2Ṽ3 …
    hvp = jvp + vjp + 4 * A * H2                            # + d V3ᵀ, u2ᵀ d
    setup_pre = 2 * A * H1 * H2 + 2 * (D + 1) * A * H1 * H2  # δ1, K
    return hvp, jvp + vjp, setup_pre, 2 * A * H1 * H2


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
    res["meta_gradient_lvc_numpy"] = timed(lambda: rl.rl_meta_gradient(
        policy, theta, pre, post, 0.5, "lvc", threads=threads, backend="numpy"), reps)
    res["meta_gradient_lvc_rpass"] = timed(lambda: rl.rl_meta_gradient(
        policy, theta, pre, post, 0.5, "lvc", threads=threads, factored=False), reps)
    for tag, factored, backend in (("", None, None), ("_numpy", None, "numpy"),
                                   ("_rpass", False, None)):
        fvp = rl.meta_fvp_operator(policy, theta, pre, obs1, 0.5, estimator="lvc",
                                   threads=threads, factored=factored, backend=backend)
        res["fvp_product" + tag] = timed(lambda: fvp(v), reps)
        res["fvp_with_setup" + tag] = timed(lambda: rl.meta_fvp(
            policy, theta, pre, obs1, 0.5, v, estimator="lvc", threads=threads,
            factored=factored, backend=backend), reps)
    def trpo_iteration():
        obj, g, fvp, sur, kl = rl_trpo.meta_trpo_fns(policy, theta, pre, post, 0.5, "lvc",
                                                     threads=threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a rejected step is still timed
            info = trpo_step(theta, g, fvp, sur, kl, cg_iters=10)[1]
        res.setdefault("backtracks", set()).add(info["backtracks"])
    res["trpo_iteration"] = timed(trpo_iteration, reps)
    return res


def jax_block(python, script, tasks, steps, reps):
    if not python:
        return None
    cmd = [python, script, "--estimator", "lvc", "--tasks", str(tasks),
           "--steps", str(steps), "--reps", str(reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print("JAX comparison failed:", out.stderr.strip().splitlines()[-1:] or out.returncode)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--compare-python", dest="jax_python",
                    default=os.environ.get("MAMLNP_COMPARE_PYTHON", ""),
                    help="a Python with jax that runs benchmarks/compare/navigation_jax.py "
                         "(default $MAMLNP_COMPARE_PYTHON; empty: no JAX)")
    ap.add_argument("--jax-script", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "compare", "navigation_jax.py"))
    a = ap.parse_args()
    blas = single_blas_thread()
    keep_freed_memory()
    rng = np.random.default_rng(0)
    policy = mamlnp.GaussianPolicy(SIZES, "relu")
    theta = policy.init(0)
    pre, post = batch(rng, a.tasks, a.steps), batch(rng, a.tasks, a.steps)
    v = rng.normal(0, 1, policy.num_params)
    times, jax_ms = {}, {}
    for _ in range(a.rounds):
        block = mamlnp_block(policy, theta, pre, post, a.reps, v, a.threads)
        backtracks = block.pop("backtracks")
        for k, t in block.items():
            times.setdefault(k, []).extend(t)
        peer = jax_block(a.jax_python, a.jax_script, a.tasks, a.steps, a.reps)
        for k in ("meta_gradient", "fvp"):
            if peer:
                jax_ms.setdefault(k, []).append(peer[k]["median_ms"])
    fwd, bwd, rfwd, rbwd = flops_per_sample()
    hvp, fisher, setup_pre, setup_post = factored_flops_per_sample()
    n = a.tasks * a.steps
    work = {"meta_gradient": n * (2 * (fwd + bwd) + rfwd + rbwd),
            "fvp_product_rpass": n * (2 * (rfwd + rbwd) + rfwd + bwd),
            "fvp_product": n * (2 * hvp + fisher)}
    work["fvp_with_setup_rpass"] = work["fvp_product_rpass"] + n * (2 * fwd + bwd)
    work["fvp_with_setup"] = work["fvp_product"] + n * (2 * fwd + bwd + setup_pre + setup_post)
    work["fvp_product_numpy"], work["fvp_with_setup_numpy"] = work["fvp_product"], work["fvp_with_setup"]
    print(f"T = {a.tasks} tasks x M = {a.steps} timesteps, P = {policy.num_params}, "
          f"{a.threads} task thread(s), one BLAS thread in {blas} OpenBLAS; "
          f"median ms [min-max] over {a.rounds} rounds x {a.reps}")
    for k, t in times.items():
        med = statistics.median(t)
        line = f"  {k:<24} {1e3 * med:9.1f} [{1e3 * min(t):.1f}-{1e3 * max(t):.1f}]   "
        if k == "trpo_iteration":
            print(line + f"line search backtracks: {sorted(backtracks)}")
            continue
        w = work["meta_gradient" if k.startswith("meta_gradient") else k]
        print(line + f"{w / 1e9:5.1f} GFLOP  {w / med / 1e9:6.1f} GFLOP/s")
    for k, ms in jax_ms.items():
        print(f"  JAX {k:<20} {statistics.median(ms):9.1f} (median of the JAX blocks' medians)")


if __name__ == "__main__":
    main()
