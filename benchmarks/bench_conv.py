"""The paper's convolutional Omniglot workload (Finn et al. 2017, sec. 5.2), timed beside JAX
and PyTorch implementations of the same network in one run.

Dimension legend: T tasks (meta-batch), N ways, K support and Q query images per class,
s inner steps, P parameters (112,261 at 5-way).

The network is mamlnp.ConvNet's default: 28×28 images, 4 blocks of [3×3 conv, 64 filters,
stride 2, padding 1 -> batch norm (batch statistics) -> ReLU], the spatial mean, a dense head,
softmax cross-entropy; α = 0.4, float64; one fixed random batch (20% of the pixels 1), the same
θ and batch for every implementation (benchmarks/compare/omniglot_conv_common.py).
Configurations (N-K-Q-T-s): 5-1-1-32-1 and 5-5-5-32-1 (5-way 1- and 5-shot, meta-batch 32,
one inner step), 20-1-1-16-5 (20-way 1-shot, meta-batch 16, five steps), each exact second
order (SO) and first order (FO). Printed per configuration:

  * mamlnp (backend="numba", the kernel set's ``meta_gradient_unchecked``): the median ms per
    meta-gradient after two warm-up calls, per meta-iteration (meta-gradient + the compiled
    Adam step), and the CPU ms of all threads per meta-gradient;
  * the FLOP count: T·[(3 + 6·SO)·s·F·N·K + 3·F·N·Q], F = 2·Σ_l Ho·Wo·(C·k²)·F_l + 2·E·O the
    multiply-adds of one image's forward pass (forward 1 F, backward 2 F, R-forward 2 F,
    R-backward 4 F), and the GFLOP/s it makes of each time;
  * JAX (benchmarks/compare/omniglot_conv_jax.py: jit + vmap over the tasks) and PyTorch
    (omniglot_conv_torch.py: a loop over the tasks, autograd.grad with create_graph), each in
    a subprocess of ``--compare-python`` (default $MAMLNP_COMPARE_PYTHON, else this Python),
    interleaved with ours round by round; a framework that is not installed is skipped.
    tests/test_conv_compare.py checks that both give mamlnp's meta-gradient to 1e-10.

    python benchmarks/bench_conv.py                          # everything, ~10 min with peers
    python benchmarks/bench_conv.py --configs 5-1-1-32-1 --orders 2 --rounds 3
    python benchmarks/bench_conv.py --peers none             # ours only
    python benchmarks/bench_conv.py --threads 1 --peer-threads 1    # everyone on one thread

Timings on a shared machine move with its load: compare the figures of one run and quote
medians over rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numba

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(HERE, "compare")]    # this checkout's mamlnp
import omniglot_conv_common as common  # noqa: E402
from mamlnp.fast import kernels_for  # noqa: E402
from mamlnp.meta.optim import Adam  # noqa: E402
from mamlnp.nn.convnet import ConvNet  # noqa: E402
from timing import grad_and_iteration_block  # noqa: E402

ALPHA = 0.4
PEERS = {"jax": "omniglot_conv_jax.py", "torch": "omniglot_conv_torch.py"}


def image_flops(model):
    """F: the multiply-adds ×2 of one image's forward pass (convolutions and head)."""
    k, c, total = model.kernel, model.in_shape[0], 0
    for f, ((Ho, Wo), _) in zip(model.channels, model.maps):
        total += 2 * Ho * Wo * c * k * k * f
        c = f
    return total + 2 * model.features * model.ways


def flops(model, T, K, Q, s, first_order):
    """FLOP per meta-gradient (module docstring)."""
    F, N = image_flops(model), model.ways
    return T * ((3 if first_order else 9) * s * F * N * K + 3 * F * N * Q)


class Ours:
    """mamlnp's compiled path on one configuration."""

    def __init__(self, N, K, Q, T, s, first_order):
        self.model = ConvNet(ways=N)
        self.theta = self.model.init(0)
        self.fast = kernels_for(self.model, "meta_gradient_unchecked")
        xs, ys, xq, yq = common.batch(T, N, K, Q)
        self.data = [a.reshape(T, -1) for a in (xs, ys, xq, yq)]
        self.s, self.fo, self.opt = s, first_order, Adam(lr=1e-3)
        self.grad()
        self.grad()                                              # compile, allocate, warm

    def grad(self):
        return self.fast.meta_gradient_unchecked(self.theta, *self.data, ALPHA, self.s, self.fo)

    def iteration(self):
        _, g = self.grad()
        self.theta = self.fast.adam_step(self.opt, self.theta, g)

    def block(self, n):
        """(median ms per meta-gradient, median ms per meta-iteration, CPU ms per
        meta-gradient, all threads) over n calls each (benchmarks/timing.py)."""
        return grad_and_iteration_block(self.grad, self.iteration, n)


def run_peer(python, name, N, K, Q, T, s, orders, reps, threads=0):
    """{order: median ms} of one comparison script, or a string saying why there is none."""
    cmd = [python, os.path.join(HERE, "compare", PEERS[name]), "--ways", str(N), "--shots",
           str(K), "--query", str(Q), "--meta-batch", str(T), "--steps", str(s), "--alpha",
           str(ALPHA), "--reps", str(reps), "--threads", str(threads), "--order",
           *map(str, orders)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not run ({type(e).__name__})"
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            found[r["order"]] = r["median_ms"]
    if not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"skipped ({last[:80]})"
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["5-1-1-32-1", "5-5-5-32-1", "20-1-1-16-5"],
                    help="N-K-Q-T-s")
    ap.add_argument("--orders", type=int, nargs="+", default=[2, 1], help="2 SO, 1 FO")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5, help="timed calls per round")
    ap.add_argument("--peers", nargs="+", default=["torch", "jax"],
                    help="torch, jax, or none")
    ap.add_argument("--compare-python", dest="peer_python",
                    default=os.environ.get("MAMLNP_COMPARE_PYTHON") or sys.executable,
                    help="the Python that runs benchmarks/compare/ (default $MAMLNP_COMPARE_PYTHON, "
                         "else this one)")
    ap.add_argument("--threads", type=int, default=0, help="numba threads (0: all)")
    ap.add_argument("--peer-threads", type=int, default=0,
                    help="the peers' threads (0: their default; JAX honours only 1)")
    a = ap.parse_args(argv)
    if a.threads:
        numba.set_num_threads(a.threads)
    peers = [p for p in a.peers if p in PEERS]
    print(f"numba threads {numba.get_num_threads()}, float64, alpha {ALPHA}")
    for cfg in a.configs:
        N, K, Q, T, s = (int(v) for v in cfg.split("-"))
        ours = {o: Ours(N, K, Q, T, s, o == 1) for o in a.orders}
        rows = {o: {"ours": [], "iter": [], "cpu": []} for o in a.orders}
        for _ in range(a.rounds):
            for o in a.orders:
                g, it, cpu = ours[o].block(a.reps)
                rows[o]["ours"].append(g)
                rows[o]["iter"].append(it)
                rows[o]["cpu"].append(cpu)
            for name in peers:
                got = run_peer(a.peer_python, name, N, K, Q, T, s, a.orders, a.reps,
                               a.peer_threads)
                for o in a.orders:
                    rows[o].setdefault(name, []).append(got.get(o) if isinstance(got, dict)
                                                        else got)
        report(cfg, ours, rows, a.orders, peers, N, K, Q, T, s)


def report(cfg, ours, rows, orders, peers, N, K, Q, T, s):
    for o in orders:
        fl = flops(ours[o].model, T, K, Q, s, o == 1)
        r, tag = rows[o], "SO" if o == 2 else "FO"
        g = statistics.median(r["ours"])
        print(f"\n{N}-way {K}-shot, {Q} query/class, T={T}, s={s}, {tag}: "
              f"{fl / 1e9:.2f} GFLOP per meta-gradient")
        print(f"  mamlnp numba   meta-gradient {g:9.1f} ms  (rounds: "
              f"{', '.join(f'{x:.1f}' for x in r['ours'])})  {fl / g / 1e6:6.1f} GFLOP/s")
        print(f"  mamlnp numba   meta-iteration {statistics.median(r['iter']):8.1f} ms "
              f"(+ Adam);  CPU {statistics.median(r['cpu']):.1f} ms per meta-gradient")
        for name in peers:
            vals = r.get(name, [])
            nums = [v for v in vals if isinstance(v, (int, float))]
            if not nums:
                print(f"  {name:14s} {vals[0] if vals else 'skipped'}")
                continue
            m = statistics.median(nums)
            print(f"  {name:14s} meta-gradient {m:9.1f} ms  (rounds: "
                  f"{', '.join(f'{x:.1f}' for x in nums)})  = {m / g:.1f}x ours, "
                  f"{fl / m / 1e6:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
