"""What the comparison implementations share: the two workloads, mamlnp's flat layout, timing.

Dimension legend: T tasks, N points of a set (N·K support, N·Q query for N-way), D inputs,
O outputs (N classes for classification), P parameters, s = inner steps.

NumPy only: nothing here imports jax, torch or mamlnp, so ``maml_jax.py`` and
``maml_torch.py`` stay self-contained re-implementations of the same mathematics.

The two workloads (Finn, Abbeel & Levine 2017):

  sinusoid   sec. 5.1: y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5];
             MLP 1-40-40-1 ReLU, MSE (mean over the N·O entries); α = 0.01, T = 25,
             K = 10 support + Q = 10 query points; meta-iteration = sample T tasks on the
             host, meta-gradient, Adam(1e-3).
  omniglot   sec. 5.2, "MAML, no conv": MLP 784-256-128-64-64-N, each hidden layer
             dense -> batch norm (statistics of the batch it normalises, biased variance,
             ε = 1e-3; γ and β adapted like the weights) -> ReLU; softmax cross-entropy
             (mean over the points); α = 0.4, T = 32; one fixed batch whose inputs are
             1 with probability 0.08 (about Omniglot's ink), one-hot targets.

Parameters are ONE flat vector θ in mamlnp's layout (mamlnp/nn/mlp.py): per layer
[W (fan_in × fan_out, row-major) | b], and for a hidden layer of a batch-norm net
[W | b | γ | β]. So a comparison's meta-gradient can be checked against mamlnp's
entry for entry (tests/test_compare.py).
"""
import json
import statistics
import time

import numpy as np

WORKLOADS = {
    "sinusoid": dict(sizes=(1, 40, 40, 1), loss="mse", batch_norm=False, alpha=0.01,
                     meta_batch=25, shots=10, query=10),
    "omniglot": dict(sizes=(784, 256, 128, 64, 64), loss="softmax_xent", batch_norm=True,
                     alpha=0.4, meta_batch=32, ways=5, shots=1, query=1),
}
BN_EPS = 1e-3                       # mamlnp.nn.mlp.BN_EPS (cbfinn/maml's TensorFlow default)
INK = 0.08                          # fraction of nonzero inputs of the omniglot batch


def layout(sizes, batch_norm):
    """[(name, offset, shape)] of every parameter block of θ, in mamlnp's order."""
    out, o, L = [], 0, len(sizes) - 1
    for l, (i, j) in enumerate(zip(sizes[:-1], sizes[1:])):
        blocks = [("W", (i, j)), ("b", (j,))]
        if batch_norm and l < L - 1:
            blocks += [("gamma", (j,)), ("beta", (j,))]
        for name, shape in blocks:
            out.append((f"{name}{l}", o, shape))
            o += int(np.prod(shape))
    return out


def num_params(sizes, batch_norm):
    name, o, shape = layout(sizes, batch_norm)[-1]
    return o + int(np.prod(shape))


def init_theta(sizes, batch_norm, seed=0):
    """A flat θ: W_l, b_l ~ U(±1/√fan_in), γ = 1, β = 0 (the values do not matter for timing)."""
    rng = np.random.default_rng(seed)
    theta = np.empty(num_params(sizes, batch_norm))
    for name, o, shape in layout(sizes, batch_norm):
        n, layer = int(np.prod(shape)), int(name.lstrip("Wbgamet"))
        if name.startswith(("gamma", "beta")):
            theta[o:o + n] = 1.0 if name.startswith("gamma") else 0.0
        else:
            bound = 1.0 / np.sqrt(sizes[layer])                   # fan_in of layer l
            theta[o:o + n] = rng.uniform(-bound, bound, n)
    return theta


def sinusoid_batch(rng, T, K, Q):
    """T sinusoid tasks: (xs, ys) (T, K, 1), (xq, yq) (T, Q, 1), float64."""
    amp = rng.uniform(0.1, 5.0, T)
    phase = rng.uniform(0.0, np.pi, T)
    x = rng.uniform(-5.0, 5.0, (T, K + Q, 1))
    y = amp[:, None, None] * np.sin(x - phase[:, None, None])
    return x[:, :K], y[:, :K], x[:, K:], y[:, K:]


def omniglot_batch(rng, T, ways, shots, query, ink=INK):
    """A fixed random few-shot batch: xs (T, N·K, 784) of 0/1 (1 with probability ink),
    ys (T, N·K, N) one-hot, xq (T, N·Q, 784), yq (T, N·Q, N), float64."""
    xs = (rng.random((T, ways * shots, 784)) < ink).astype(np.float64)
    xq = (rng.random((T, ways * query, 784)) < ink).astype(np.float64)
    ys = np.tile(np.eye(ways), (T, shots, 1))
    yq = np.tile(np.eye(ways), (T, query, 1))
    return xs, ys, xq, yq


def workload_args(ap):
    """The command-line options every comparison script takes."""
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="sinusoid")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--ways", type=int, default=5, help="omniglot: N classes")
    ap.add_argument("--shots", type=int, help="K (default: the workload's)")
    ap.add_argument("--query", type=int, help="Q (default: the workload's)")
    ap.add_argument("--meta-batch", type=int, help="T (default: the workload's)")
    ap.add_argument("--steps", type=int, nargs="+", default=[1], help="inner steps s")
    ap.add_argument("--order", type=int, nargs="+", default=[2, 1], help="2 SO, 1 FO")
    ap.add_argument("--reps", type=int, default=5, help="timed blocks")
    ap.add_argument("--block", type=int, default=10, help="calls per timed block")
    return ap


def resolve(args):
    """(sizes, batch_norm, loss, alpha, T, K, Q, batch) of the command line's workload."""
    w = WORKLOADS[args.workload]
    T = args.meta_batch or w["meta_batch"]
    K, Q = args.shots or w["shots"], args.query or w["query"]
    rng = np.random.default_rng(0)
    if args.workload == "sinusoid":
        return w["sizes"], False, "mse", w["alpha"], T, K, Q, sinusoid_batch(rng, T, K, Q)
    sizes = w["sizes"] + (args.ways,)
    data = omniglot_batch(rng, T, args.ways, K, Q)
    return sizes, True, "softmax_xent", w["alpha"], T, K, Q, data


def time_blocks(call, sync, reps, block):
    """(seconds of the first call, [ms per call, the mean of each block of ``block`` calls
    synchronised once at its end]) after that first, compiling call."""
    t0 = time.perf_counter()
    sync(call())
    first = time.perf_counter() - t0
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(block):
            out = call()
        sync(out)
        ms.append((time.perf_counter() - t0) / block * 1e3)
    return first, ms


def report(impl, args, T, K, Q, s, order, first, ms):
    """One ``RESULT {json}`` line, the format bench_*.py parse."""
    print("RESULT " + json.dumps({
        "impl": impl, "workload": args.workload, "dtype": args.dtype,
        "ways": args.ways if args.workload == "omniglot" else None, "shots": K, "query": Q,
        "meta_batch": T, "steps": s, "order": order,
        "median_ms": round(statistics.median(ms), 4), "min_ms": round(min(ms), 4),
        "max_ms": round(max(ms), 4), "first_call_s": round(first, 2)}), flush=True)


def serve(make):
    """The worker loop bench_meta_gradient.py drives (sinusoid): one JSON command a line,

        {"s": 1, "first_order": false, "n": 40, "chunk": 10}
          -> {"meta_iteration": [s…], "meta_iteration_chunk": [s…], "meta_gradient_chunk": [s…]}

    ``make(s, first_order, rng)`` builds (once per configuration) an object with
    ``iterate()`` (sample T tasks on the host, meta-gradient, Adam: one meta-iteration),
    ``gradient()`` (the meta-gradient on a fixed batch) and ``sync(out)`` (wait for a
    result). ``meta_iteration``: one iteration timed alone, its loss awaited (as a training
    loop that reads every loss waits); ``*_chunk``: the mean per call over chunks of C
    calls dispatched back to back and synchronised once (how an asynchronous framework
    runs at full speed)."""
    import sys
    rng, built = np.random.default_rng(0), {}
    for line in sys.stdin:
        cmd = json.loads(line)
        key = (int(cmd["s"]), bool(cmd["first_order"]))
        if key not in built:
            built[key] = make(*key, rng)
        w, n, chunk = built[key], int(cmd["n"]), int(cmd.get("chunk", 10))
        out = {"meta_iteration_chunk": _chunks(w.iterate, w.sync, n, chunk),
               "meta_gradient_chunk": _chunks(w.gradient, w.sync, n, chunk),
               "meta_iteration": _chunks(w.iterate, w.sync, n, 1)}
        print(json.dumps(out), flush=True)
    return 0


def _chunks(call, sync, n, chunk):
    """n calls in chunks of ``chunk``, one sync per chunk: seconds per call, per chunk."""
    out = []
    for _ in range(max(1, n // chunk)):
        t0 = time.perf_counter()
        for _ in range(chunk):
            res = call()
        sync(res)
        out.append((time.perf_counter() - t0) / chunk)
    return out
