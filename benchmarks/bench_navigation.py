"""Seconds per meta-iteration of ``mamlnp train navigation`` at the default protocol, and where
they go.

    python benchmarks/bench_navigation.py [--iterations 5] [--warmup 2] [--threads 2]
        [--method maml] [--estimator maml] [--seed 0] [--inner-steps 1]

Dimension legend: T = 20 tasks (meta-batch), N = 20 trajectories per task, H = 100 steps,
K timed iterations.

Runs the trainer's own iteration (``mamlnp.run.navigation.iteration``, the defaults of
``DEFAULTS``: MAML with the paper's estimator (``--estimator`` for the others), TRPO with
10 conjugate-gradient iterations and exact meta Fisher-vector products) from the run's
seeded initialisation: ``--warmup`` iterations untimed, then K timed ones, each continuing the run (so the episodes are those of a run, not
synthetic; ``--warmup 20`` times iterations 21 to 20 + K). Prints the median over the K iterations of the wall seconds of each stage, as
``info["seconds"]`` splits them:

  sampling       the rollouts before and after adaptation (tasks/navigation.py)
  baseline       discounted returns, the linear baseline's fits, the advantages
  inner_step     θ′_i = θ + α g_i per task (the points kept for the derivatives)
  meta_gradient  the post-update points, their gradients, the meta-gradient's HVPs
  fvp_setup      the Jacobian factors of the FVP (mamlnp/nn/policy_factors.py)
  cg             the conjugate gradient's Fisher-vector products
  line_search    the surrogate and KL of the candidates (an inner step each per task)

then the iteration's total, the remainder (the step, Python), the process's CPU seconds per
iteration (CPU / wall near the thread count when the cores are free), the line search's
candidates per iteration, and the projected wall time of the protocol's 100 iterations and of 500 (× the median).
As the commands do: one BLAS thread, freed memory kept, the tasks on ``--threads`` threads
(default: the cores this process may use). ``--inner-steps 2`` times the extension that
meta-trains through the test's first two steps (mamlnp/meta/rl_steps.py; its inner_step
stage then holds the points at θ_1 too, and its meta_gradient the factors). Nothing is
asserted.
"""
import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout

from mamlnp.run import navigation as NAV                                      # noqa: E402
from mamlnp.run.process import keep_freed_memory, single_blas_thread         # noqa: E402


def run(args):
    """(config, per-iteration rows of stage seconds, wall totals, CPU seconds, line-search
    candidates) of the timed iterations."""
    cfg = NAV.make_config(method=args.method, threads=args.threads, seed=args.seed,
                          inner_steps=args.inner_steps, estimator=args.estimator)
    policy = NAV.GaussianPolicy(**cfg["policy"])
    rng = NAV.np.random.default_rng(cfg["seed"])
    state = NAV._State(policy.init(rng), rng,
                       NAV.Adam(cfg["beta"]) if cfg["outer"] == "adam" else None)
    rows, totals, cpus, backtracks = [], [], [], []
    for k in range(args.warmup + args.iterations):
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # a rejected step is still timed
            _, _, info = NAV.iteration(policy, cfg, state)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        state.iteration += 1
        if k >= args.warmup:
            rows.append(info["seconds"])
            totals.append(total)
            cpus.append(cpu)
            backtracks.append(info.get("backtracks", 0))
        print(f"  iteration {k + 1}{' (warm-up)' if k < args.warmup else ''}: {total:.2f} s",
              file=sys.stderr, flush=True)
    return cfg, rows, totals, cpus, backtracks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations K")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads over the tasks (default: the cores this process may use)")
    ap.add_argument("--method", default="maml", choices=("maml", "pretrain", "oracle"))
    ap.add_argument("--estimator", default="maml", choices=("maml", "lvc", "dice"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inner-steps", type=int, default=1,
                    help="inner steps in training (2: the extension, mamlnp/meta/rl_steps.py)")
    args = ap.parse_args()
    if args.iterations < 1 or args.warmup < 0:
        ap.error("--iterations must be at least 1 and --warmup at least 0")
    keep_freed_memory()
    single_blas_thread()
    cfg, rows, totals, cpus, backtracks = run(args)
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    total = statistics.median(totals)
    print(f"train navigation, method {cfg['method']}, estimator {cfg['estimator']}, "
          f"T = {cfg['meta_batch']}, "
          f"N = {cfg['trajectories']}, H = {cfg['horizon']}, {cfg['cg_iters']} CG iterations, "
          f"{cfg['inner_steps']} inner step(s), "
          f"threads {cfg['threads']}; median of {len(rows)} iterations after {args.warmup} "
          f"warm-up")
    for key, sec in med.items():
        print(f"  {key:<14} {sec:7.3f} s  {100 * sec / total:5.1f} %")
    rest = statistics.median(t - sum(r.values()) for t, r in zip(totals, rows))
    print(f"  {'(rest)':<14} {rest:7.3f} s")
    print(f"  {'iteration':<14} {total:7.3f} s   (min {min(totals):.3f}, max {max(totals):.3f})")
    print(f"  process CPU per iteration: {statistics.median(cpus):.3f} s "
          f"(CPU / wall {statistics.median(c / t for c, t in zip(cpus, totals)):.2f})")
    print(f"  line-search candidates per iteration: {backtracks}")
    print(f"  projected wall time: 100 iterations (the protocol) {100 * total / 60:.1f} min, "
          f"500 iterations {500 * total / 60:.1f} min")


if __name__ == "__main__":
    main()
