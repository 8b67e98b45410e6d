"""Milliseconds per MAML meta-iteration: NumPy reference, Numba kernels, JAX and PyTorch.

    python benchmarks/bench_meta_gradient.py [--rounds 5] [--block 40] [--cold]
        [--compare jax torch-func …] [--compare-python PY] [--json results.json]

Dimension legend: T tasks, K support points, Q query points, P parameters,
s = inner_steps, I/O fan-in/fan-out of a layer.

Workload (Finn et al. 2017, sec. 5.1): sinusoid tasks, MLP 1-40-40-1 ReLU, MSE, float64,
α = 0.01, meta-batch T = 25, K = 10 support + Q = 10 query points, Adam(1e-3).
One *meta-iteration* is what mamlnp.run.train does per step, timed by calling the training
loop's own ``mamlnp.run.train._iteration``: sample T tasks, the meta-gradient, the divergence
guard, one Adam step (numba: the fused step of mamlnp.run.trainstep, one kernel call; numpy:
sample_batch, MAML.step, Adam._step). The *meta-gradient* rows
time the meta-gradient alone on a fixed batch: through the unchecked entry
(the kernel set's meta_gradient_unchecked, the training loop's) and through the public, validating
``mamlnp.meta_gradient``.

Configurations (s = 1, 5) × (second order SO, first order FO) are timed in blocks,
INTERLEAVED: numba block, numpy block, JAX block, next configuration, … for several
rounds, so that a change of machine load hits every backend alike. Medians and min–max
over all iterations after one warm-up block, and the mean. GFLOP/s = counted FLOPs / median.
Nothing is asserted.

The comparisons (--compare, default: jax when the Python of --compare-python has it) are
the implementations of benchmarks/compare/ (``pip install -e ".[compare]"``), each run as a
subprocess worker (``maml_jax.py --worker``: jit + vmap, parameters as a pytree, the
meta-gradient and Adam in one jitted call; ``maml_torch.py --impl func|loop|compile
--worker``: the meta-gradient, then torch.optim.Adam), timed block by block in the same run.
tests/test_compare.py checks that they compute mamlnp's meta-gradient.

Statistics. ``meta_iteration`` / ``meta_gradient``: one call timed alone, its result in
hand (mamlnp's calls are synchronous; JAX's ``meta_iteration`` waits for each iteration's
loss). ``*_chunk``: the mean per call over chunks of 10 consecutive calls, which is how a
JAX loop runs at full speed (asynchronous dispatch: the host samples the next batch while
the last step runs; synchronised once per chunk). Compare backends on the same row.

First call: a fresh subprocess imports mamlnp and calls the kernel set's meta_gradient once, and another
one imports mamlnp and runs a one-iteration meta_train (the fused step's kernels, the
validation), with the on-disk Numba cache warm (cache-load time); with --cold also with an
empty cache directory (NUMBA_CACHE_DIR, the full compile CI pays once).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import mamlnp
from timing import has_module       # benchmarks/timing.py (the script's folder)
from mamlnp.fast.mlp import kernelset as fast
from mamlnp.meta import maml
from mamlnp.run import train as TR
from mamlnp.run.runconfig import family_for, make_config
from mamlnp.run.trainstep import fused_step
from mamlnp.meta.variants import get_method
from mamlnp.fast import spin_threads

COMPARE_ENV = dict(os.environ)   # the comparisons run without mamlnp's spin setting (below)
spin_threads()      # the CLI's thread-spin setting (mamlnp/fast/__init__.py)

SIZES, T, K, Q, ALPHA = (1, 40, 40, 1), 25, 10, 10, 0.01
CONFIGS = [(1, False), (1, True), (5, False), (5, True)]          # (s, first_order)
PAUSE = 0.12         # s between blocks: XLA's and OpenMP's worker threads spin for a while
                     # after work (our numba worker ~70 ms with GOMP_SPINCOUNT = 3,000,000,
                     # measured from /proc/self/task); a block must not start while another
                     # backend's threads still spin on a core
JAX_CHUNK = 10       # comparison iterations dispatched back to back per timed sample
HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "compare")
COMPARISONS = {"jax": ["maml_jax.py"], "torch-func": ["maml_torch.py", "--impl", "func"],
               "torch-loop": ["maml_torch.py", "--impl", "loop"],
               "torch-compile": ["maml_torch.py", "--impl", "compile"]}


# ---- work per meta-iteration ---------------------------------------------------------------

FLOP_FORMULA = """FLOPs counted (multiply-add = 2) in the matrix products only, per point:
  m = Σ_l I_l·O_l (all layers), m' = Σ_(l>1) I_l·O_l (layers after the first)
  forward 2m, backward 2(m + m'), HVP (R-forward 2(m + m'), R-backward 2(m + 3m'))
  SO: T·[ s·K·(4m + 2m' + 4m + 8m') + Q·(4m + 2m') ]     FO: T·(s·K + Q)·(4m + 2m')
  (elementwise work — biases, activations, the α-updates — adds a few % and is not counted)"""


def flops(sizes, s, first_order, T=T, K=K, Q=Q):
    prods = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    m, m2 = sum(prods), sum(prods[1:])
    grad = 4 * m + 2 * m2                                    # forward + backward, per point
    hvp = 4 * m + 8 * m2                                     # R-forward + R-backward
    if first_order:
        return T * (s * K + Q) * grad
    return T * (s * K * (grad + hvp) + Q * grad)


# ---- the mamlnp meta-iteration, as the training loop does it ------------------------------


class Runner:
    """Times blocks of meta-iterations for one backend on the standard workload.

    The meta-iteration is ``mamlnp.run.train._iteration`` itself, on a state made by
    ``mamlnp.run.train._new_state``: what ``meta_train`` runs per iteration (for numba the fused
    step of mamlnp.run.trainstep, built by the same ``fused_step`` call as in ``_run``; for
    numpy sample_batch + MAML.step + the guard + Adam._step). No validation row falls in a
    block (eval_every is larger than the run)."""

    def __init__(self, backend, seed=0):
        self.backend = backend
        self.model = mamlnp.MLP(SIZES, "relu", "mse")
        self.fast = fast.MLPKernels(self.model)
        self.fixed = mamlnp.SinusoidTasks().sample(1, T, K, Q)
        self.seed = seed

    def grad(self, batch, s, fo):
        if self.backend == "numba":
            flat = [a.reshape(T, -1) for a in (batch.x_support, batch.y_support,
                                               batch.x_query, batch.y_query)]
            return self.fast.meta_gradient_unchecked(self.theta, *flat, ALPHA, s, fo)
        return maml.meta_gradient(self.model, self.theta, batch, ALPHA, s, fo, backend="numpy")

    def training_state(self, s, fo):
        """(method, config, state, fused) of a fresh run, as meta_train builds them."""
        cfg = make_config(method="fomaml" if fo else "maml", inner_steps=s, alpha=ALPHA,
                          meta_batch=T, shots=K, query=Q, hidden=list(SIZES[1:-1]),
                          beta=1e-3, backend=self.backend, seed=self.seed,
                          iterations=10**9, eval_every=10**9)
        method = get_method(cfg["method"])
        state = TR._new_state(method, cfg)
        fused = fused_step(self.model, method, cfg, family_for(cfg), state.optimizers)
        return method, cfg, state, fused

    def block(self, s, fo, n):
        """n meta-iterations, then n meta-gradients alone: dict of lists of seconds."""
        method, cfg, state, fused = self.training_state(s, fo)
        out = {"meta_iteration": [], "meta_gradient": [], "meta_gradient_checked": []}
        for _ in range(n):
            t0 = time.perf_counter()
            TR._iteration(self.model, method, cfg, state, None, None, fused)
            out["meta_iteration"].append(time.perf_counter() - t0)
        self.theta = state.params["theta"]
        for _ in range(n):
            t0 = time.perf_counter()
            self.grad(self.fixed, s, fo)
            t1 = time.perf_counter()
            if self.backend == "numba":
                mamlnp.meta_gradient(self.model, self.theta, self.fixed, ALPHA, s, fo,
                                     backend="numba")
                out["meta_gradient_checked"].append(time.perf_counter() - t1)
            out["meta_gradient"].append(t1 - t0)
        for what in ("meta_iteration", "meta_gradient"):           # JAX's statistic (below)
            out[what + "_chunk"] = chunk_means(out[what], min(n, JAX_CHUNK))
        return out


def chunk_means(times, chunk):
    """Means of consecutive chunks of ``chunk`` per-iteration times (a partial chunk dropped)."""
    return [float(np.mean(times[i:i + chunk])) for i in range(0, len(times) - chunk + 1, chunk)]


class CompareRunner:
    """A comparison of benchmarks/compare/ as a worker subprocess, one JSON line per block
    (benchmarks/compare/common.py, ``serve``)."""

    def __init__(self, python, name):
        script, *extra = COMPARISONS[name]
        self.name = name
        self.proc = subprocess.Popen([python, os.path.join(COMPARE, script), "--worker"] + extra,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=COMPARE_ENV)

    def block(self, s, fo, n):
        cmd = {"s": s, "first_order": fo, "n": n, "chunk": min(n, JAX_CHUNK)}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---- first call in a fresh process -----------------------------------------------------------

FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np, mamlnp
from mamlnp.fast.mlp import kernelset as fast
t1 = time.perf_counter()
m = mamlnp.MLP((1, 40, 40, 1), "relu", "mse")
b = mamlnp.SinusoidTasks().sample(0, 25, 10, 10)
fast.MLPKernels(m).meta_gradient(m.init(0), b, 0.01, 1, False)
t2 = time.perf_counter()
fast.MLPKernels(m).meta_gradient(m.init(0), b, 0.01, 1, False)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""
FIRST_TRAIN = """
import time
t0 = time.perf_counter()
import mamlnp
mamlnp.meta_train(iterations=1, val_tasks=1, eval_every=10**9, progress=False)
print(time.perf_counter() - t0)
"""


def first_call(cache_dir=None):
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = [subprocess.run([sys.executable, "-c", script], env=env, check=True,
                          capture_output=True, text=True).stdout.split()
           for script in (FIRST_CALL, FIRST_TRAIN)]
    return dict(zip(("import_s", "first_call_s", "second_call_s", "first_train_s"),
                    map(float, out[0] + out[1])))


# ---- driver ---------------------------------------------------------------------------------


def summary(times):
    ms = np.asarray(times) * 1e3
    return {"median_ms": float(np.median(ms)), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean()), "n": int(ms.size)}


def run(args):
    runners = {"numba": Runner("numba"), "numpy": Runner("numpy")}
    for name in args.compare:
        runners[name] = CompareRunner(args.compare_python, name)
    blocks = {name: args.block for name in runners}
    blocks["numpy"] = args.numpy_block
    results = {}
    try:
        for r in range(args.rounds + 1):                     # round 0 = warm-up, discarded
            for s, fo in CONFIGS:
                for name, runner in runners.items():
                    time.sleep(PAUSE)                        # the previous block's threads idle
                    out = runner.block(s, fo, blocks[name] if r else 2)
                    if r == 0:
                        continue
                    for what, ts in out.items():
                        results.setdefault((name, s, fo, what), []).extend(ts)
    finally:
        for name in args.compare:
            runners[name].close()
    return {k: summary(v) for k, v in results.items() if v}


def print_table(stats):
    print(f"\n{'backend':7s} {'s':>2s} {'order':5s} {'what':22s} {'median ms':>10s} "
          f"{'min–max ms':>17s} {'mean ms':>8s} {'MFLOP':>7s} {'GFLOP/s':>8s}")
    for (name, s, fo, what), st in sorted(stats.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                         kv[0][3], kv[0][0])):
        mf = flops(SIZES, s, fo) / 1e6
        print(f"{name:7s} {s:2d} {'FO' if fo else 'SO':5s} {what:22s} {st['median_ms']:10.3f} "
              f"{st['min_ms']:8.3f}–{st['max_ms']:<8.3f} {st['mean_ms']:8.3f} {mf:7.2f} "
              f"{mf / st['median_ms']:8.1f}")



def machine():
    import numba
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "numpy": np.__version__,
            "numba": numba.__version__, "numba_threads": numba.config.NUMBA_NUM_THREADS,
            "python": sys.version.split()[0]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (after a warm-up)")
    p.add_argument("--block", type=int, default=40, help="iterations per numba/JAX block")
    p.add_argument("--numpy-block", type=int, default=2, help="iterations per NumPy block")
    p.add_argument("--compare", nargs="*", choices=sorted(COMPARISONS),
                   help="comparison implementations timed in the same run (default: jax when "
                        "--compare-python has it; --compare alone: none)")
    p.add_argument("--compare-python", default=os.environ.get("MAMLNP_COMPARE_PYTHON")
                   or sys.executable, help="the Python that runs them (default "
                   "$MAMLNP_COMPARE_PYTHON, else this one)")
    p.add_argument("--cold", action="store_true", help="also time a compile from an empty cache")
    p.add_argument("--json", help="write all figures to this file")
    args = p.parse_args(argv)
    if args.compare is None:
        args.compare = ["jax"] if has_module(args.compare_python, "jax") else []
    print("comparisons:", ", ".join(args.compare) or "none (pip install -e \".[compare]\")")

    info = machine()
    print("machine:", ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"workload: MLP {SIZES} relu mse float64, T={T} K={K} Q={Q} α={ALPHA}, Adam(1e-3)")
    print(FLOP_FORMULA)
    for s, fo in CONFIGS:
        print(f"  s={s} {'FO' if fo else 'SO'}: {flops(SIZES, s, fo) / 1e6:.2f} MFLOP")
    fc = {"warm_cache": first_call()}
    if args.cold:
        with tempfile.TemporaryDirectory() as d:
            fc["cold_cache"] = first_call(d)
    for k, v in fc.items():
        print(f"first call ({k}): import {v['import_s']:.2f} s, first meta_gradient "
              f"{v['first_call_s']:.2f} s, second {v['second_call_s'] * 1e3:.2f} ms; another "
              f"fresh process: import + a 1-iteration meta_train {v['first_train_s']:.2f} s")
    stats = run(args)
    print_table(stats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "first_call": fc,
                       "results": [dict(backend=k[0], s=k[1], first_order=k[2], what=k[3],
                                        mflop=flops(SIZES, k[1], k[2]) / 1e6, **v)
                                   for k, v in stats.items()]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
