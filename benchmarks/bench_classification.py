"""The classification workload of Finn et al. (2017), "MAML, no conv", timed beside JAX and PyTorch.

784-256-128-64-64-N, each hidden layer dense -> batch norm (batch statistics) -> ReLU,
softmax cross-entropy, α = 0.4, meta-batch T = 32, float64, s inner steps; one fixed random
batch with 8% ink (benchmarks/compare/common.py): the support set N·K points, the query set
N·Q points per task. Printed per configuration (N-way K-shot, SO/FO):

  * median ms per meta-gradient (the kernel set's meta_gradient_unchecked, backend="numba",
    and the NumPy reference once with --numpy) and per meta-iteration (meta-gradient + the
    compiled Adam step on θ; the batch is fixed, as in the comparisons);
  * the FLOP count of the workload as JAX and PyTorch run it, every adapted θ formed:
    T·[(3 + 6·SO)·s·F(N·K) + 3·F(N·Q)] with F(n) = 2·n·Σ_l fan_in·fan_out (forward 1 F,
    backward 2 F, R-forward 2 F, R-backward 4 F), and the GFLOP/s that count makes of our time
    (mamlnp executes fewer: it never forms an adapted first layer, and skips zero inputs);
  * the comparisons of benchmarks/compare/ (``pip install -e ".[compare]"``), in the same run,
    interleaved with ours, round by round: JAX (maml_jax.py --workload omniglot: jit + vmap)
    and, with --torch, PyTorch (maml_torch.py --impl compile|func|loop), each a subprocess of
    the Python --compare-python (default $MAMLNP_COMPARE_PYTHON, else this one); when that
    Python has no jax, ours only. tests/test_compare.py checks that they compute mamlnp's
    meta-gradient.

    python benchmarks/bench_classification.py                     # ~5 min with JAX
    python benchmarks/bench_classification.py --configs 5-1-1 --torch compile --rounds 3
    python benchmarks/bench_classification.py --compare-python ''  # ours only
    python benchmarks/bench_classification.py --threads 1         # ours on one numba thread
    python benchmarks/bench_classification.py --path tasks        # s = 1 one task at a time
    python benchmarks/bench_classification.py --ink 0.05 0.12 0.25 --compare-python ''
    MAMLNP_DATA_DIR=… python benchmarks/bench_classification.py --real --compare-python ''

``--path``: "auto" (the default, what training runs) takes s = 1 in task groups
(mamlnp/fast/bn_mlp/classify_groups.py), "tasks" one task at a time
(classify_kernels.py). ``--ink``: the fraction of nonzero inputs of our batch (the comparisons
draw 8%); several values time ours at each (where the first layer's packed rows stop paying,
bn_mlp/first_layer.sparse_pays). ``--real``: ours on real Omniglot training episodes
(grey-level strokes, about a quarter of the inputs nonzero), the batches the training loop
sees; the comparisons still time their 8% batch.

Timings on a shared machine move with its load: compare figures of one run (each round
times ours, then each comparison, for one configuration) and quote the medians over rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import mamlnp  # noqa: E402
from mamlnp.fast import kernels_for  # noqa: E402
from mamlnp.fast.bn_mlp import kernelset as classify  # noqa: E402
from mamlnp.meta.optim import Adam  # noqa: E402
from timing import grad_and_iteration_block, has_module  # noqa: E402

SIZES, T, ALPHA = (784, 256, 128, 64, 64), 32, 0.4
COMPARE = os.path.join(HERE, "compare")                   # maml_jax.py, maml_torch.py
DEFAULT_PY = os.environ.get("MAMLNP_COMPARE_PYTHON") or sys.executable


def flops(N, K, Q, s, first_order):
    """FLOP per meta-gradient of the workload with every adapted θ formed (module docstring)."""
    sizes = SIZES + (N,)
    per_point = 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return T * ((3 if first_order else 9) * s * per_point * N * K + 3 * per_point * N * Q)


def batch(N, K, Q, seed=0, ink=0.08, real=False):
    """The comparisons' batch (8% ink, one-hot labels), or a real Omniglot training batch (real:
    from $MAMLNP_DATA_DIR), as flat (T, n·C) float64 rows."""
    if real:
        from mamlnp.tasks.omniglot import OmniglotTasks
        b = OmniglotTasks(ways=N).sample(np.random.default_rng(seed), T, K, Q)
        return tuple(np.ascontiguousarray(a, dtype=np.float64).reshape(T, -1)
                     for a in (b.x_support, b.y_support, b.x_query, b.y_query))
    rng = np.random.default_rng(seed)
    xs = (rng.random((T, N * K * 784)) < ink).astype(np.float64)
    xq = (rng.random((T, N * Q * 784)) < ink).astype(np.float64)
    ys = np.tile(np.eye(N), (T, K, 1)).reshape(T, -1)
    yq = np.tile(np.eye(N), (T, Q, 1)).reshape(T, -1)
    return xs, ys, xq, yq


class Ours:
    """mamlnp's compiled path on one configuration."""

    def __init__(self, N, K, Q, s, first_order, path="auto", ink=0.08, real=False):
        self.model = mamlnp.MLP(SIZES + (N,), activation="relu", loss="softmax_xent",
                                batch_norm=True)
        self.theta, self.path = self.model.init(0), path
        self.fast = kernels_for(self.model, "meta_gradient_unchecked")
        self.geom, self.data = classify.geometry(self.model), batch(N, K, Q, ink=ink, real=real)
        self.ink = float(np.mean(self.data[0] != 0))
        self.alpha, self.s, self.fo = float(ALPHA), s, first_order
        self.opt = Adam(lr=1e-3)
        self.grad()                                              # compile, allocate

    def grad(self):
        if self.path == "tasks":
            return classify.meta_gradient_unchecked(self.geom, self.theta, *self.data,
                                                    self.alpha, self.s, self.fo, path="tasks")
        return self.fast.meta_gradient_unchecked(self.theta, *self.data, self.alpha, self.s,
                                                 self.fo)

    def iteration(self):
        _, g = self.grad()
        self.theta = self.fast.adam_step(self.opt, self.theta, g)

    def block(self, n=10):
        """(median ms per meta-gradient, median ms per meta-iteration, CPU ms per
        meta-gradient, all threads) over n calls each (benchmarks/timing.py)."""
        return grad_and_iteration_block(self.grad, self.iteration, n)


def numpy_ms(N, K, Q, s, first_order, n=2):
    """The NumPy reference (mamlnp.meta.maml, backend="numpy"), median of n calls."""
    model = mamlnp.MLP(SIZES + (N,), activation="relu", loss="softmax_xent", batch_norm=True)
    xs, ys, xq, yq = batch(N, K, Q)
    b = mamlnp.TaskBatch(xs.reshape(T, N * K, 784), ys.reshape(T, N * K, N),
                         xq.reshape(T, N * Q, 784), yq.reshape(T, N * Q, N))
    theta, ts = model.init(0), []
    for _ in range(n):
        t0 = time.perf_counter()
        mamlnp.meta_gradient(model, theta, b, ALPHA, s, first_order, backend="numpy")
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def peer(args, script, extra, N, K, Q, s, order):
    """One run of a comparison script of benchmarks/compare/; its RESULT dict (or
    {'error': …})."""
    cmd = [args.compare_python, os.path.join(COMPARE, script), "--workload", "omniglot",
           "--dtype", "float64", "--ways", str(N), "--shots", str(K), "--query", str(Q),
           "--meta-batch", str(T), "--steps", str(s), "--order", str(order)] + extra
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.peer_timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (out.stderr.strip().splitlines() or ["no RESULT"])[-1][:200]}



def peers_for(args):
    """[(name, script, extra args)] of the comparisons this run times."""
    if not args.compare_python or not has_module(args.compare_python, "jax"):
        return []
    out = [("jax", "maml_jax.py", ["--reps", "3", "--block", "5"])]
    if args.torch and not has_module(args.compare_python, "torch"):
        raise SystemExit(f"--torch: {args.compare_python} has no torch "
                         f"(pip install -e \".[compare]\")")
    for impl in args.torch:
        out.append((f"torch-{impl}", "maml_torch.py",
                    ["--impl", impl, "--reps", "3", "--block", "3"]))
    return out


def run_config(args, cfg, peers):
    """Rounds of (ours at each ink, then each comparison) for one configuration; the per-round
    figures (rows "ours_grad" etc. for the first ink, "ours_grad@ink" for the others)."""
    N, K, Q, fo = cfg
    inks = [None] if args.real else args.ink
    ours = [Ours(N, K, Q, args.s, fo, args.path, ink or 0.0, args.real) for ink in inks]
    rows = {"inks": [o.ink for o in ours]}
    for _ in range(args.rounds):
        for i, o in enumerate(ours):
            sfx = "" if i == 0 else f"@{i}"
            for key, x in zip(("ours_grad", "ours_iter", "ours_cpu"), o.block(args.calls)):
                rows.setdefault(key + sfx, []).append(x)
        for name, script, extra in peers:
            r = peer(args, script, extra, N, K, Q, args.s, 1 if fo else 2)
            rows.setdefault(name, []).append(r.get("median_ms", r.get("error")))
    if args.numpy:
        rows["numpy"] = [numpy_ms(N, K, Q, args.s, fo)]
    return rows


def med(xs):
    nums = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(nums) if nums else None


def print_config(cfg, rows, s):
    N, K, Q, fo = cfg
    f = flops(N, K, Q, s, fo)
    og = med(rows["ours_grad"])
    head = f"{N}-way {K}-shot Q={Q}/class {'FO' if fo else 'SO'} s={s}"
    print(f"\n{head}: {f / 1e9:.3f} GFLOP per meta-gradient (every adapted θ formed)")
    for i, ink in enumerate(rows["inks"]):
        sfx = "" if i == 0 else f"@{i}"
        g = med(rows["ours_grad" + sfx])
        print(f"  mamlnp numba     meta-gradient {g:8.2f} ms  (rounds: "
              f"{', '.join(f'{x:.2f}' for x in rows['ours_grad' + sfx])})  = "
              f"{f / g / 1e6:.1f} GFLOP/s, inputs {100 * ink:.1f}% nonzero")
        print(f"  mamlnp numba     meta-iteration {med(rows['ours_iter' + sfx]):7.2f} ms "
              "(meta-gradient + Adam)")
        print(f"  mamlnp numba     CPU time {med(rows['ours_cpu' + sfx]):12.2f} ms per "
              "meta-gradient (all threads)")
    for name, xs in rows.items():
        if name.startswith("ours_") or name == "inks":
            continue
        m = med(xs)
        if m is None:
            print(f"  {name:16s} {xs}")
            continue
        print(f"  {name:16s} meta-gradient {m:8.2f} ms  (rounds: {xs})  "
              f"= {m / og:.1f}x ours, {f / m / 1e6:.1f} GFLOP/s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["5-1-1", "5-5-5", "20-1-1"],
                    help="N-K-Q: N-way K-shot, Q query points per class")
    ap.add_argument("--orders", nargs="+", type=int, default=[2, 1], help="2 SO, 1 FO")
    ap.add_argument("--s", type=int, default=1, help="inner steps")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10, help="our calls per round")
    ap.add_argument("--compare-python", default=DEFAULT_PY,
                    help="the Python that runs benchmarks/compare/ (default "
                         "$MAMLNP_COMPARE_PYTHON, else this one; '': ours only)")
    ap.add_argument("--peer-timeout", type=float, default=900)
    ap.add_argument("--torch", nargs="*", default=[], choices=["compile", "func", "loop"])
    ap.add_argument("--numpy", action="store_true", help="also time the NumPy reference")
    ap.add_argument("--threads", type=int, default=0, help="numba threads (0: numba's own)")
    ap.add_argument("--path", choices=["auto", "tasks"], default="auto",
                    help="s = 1: task groups (auto) or one task at a time")
    ap.add_argument("--ink", nargs="+", type=float, default=[0.08],
                    help="fraction of nonzero inputs of our batch (one run per value)")
    ap.add_argument("--real", action="store_true",
                    help="ours on real Omniglot episodes ($MAMLNP_DATA_DIR)")
    args = ap.parse_args(argv)
    if any(not 0.0 <= x <= 1.0 for x in args.ink):
        ap.error(f"--ink: expected fractions in [0, 1], got {args.ink}")
    import numba
    if args.threads:
        numba.set_num_threads(args.threads)
    print(f"mamlnp {mamlnp.__version__}, numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), T = {T}, float64, path {args.path}"
          f"{', real Omniglot episodes' if args.real else ''}; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    peers = peers_for(args)
    print("comparisons:", [p[0] for p in peers] or "none (pip install -e \".[compare]\")")
    for c in args.configs:
        N, K, Q = map(int, c.split("-"))
        for order in args.orders:
            cfg = (N, K, Q, order == 1)
            print_config(cfg, run_config(args, cfg, peers), args.s)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
