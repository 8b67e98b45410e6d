"""Shared by the conv comparison implementations (omniglot_conv_jax.py, omniglot_conv_torch.py):
mamlnp's ConvNet parameter layout, the workload's batch, the command line, the timing.

Dimension legend: T tasks, N ways, K support and Q query images per class, D = C·H·Wd inputs,
B conv blocks, F_l filters, P parameters.

The network is mamlnp.ConvNet's (mamlnp/nn/convnet.py), written again with each framework's
autodiff: blocks of [k×k conv (stride Δ, zero padding p) + b -> batch norm over (N, H, W)
(batch statistics, biased variance, ε = bn_eps) -> γ, β -> ReLU], the spatial mean, a dense
head, softmax cross-entropy (the mean over the images). θ is mamlnp's flat vector: per block
[W (F, C, k, k) | b | γ | β], then [W_h (E, O) | b_h], so the meta-gradients compare entry
by entry (tests/test_conv_compare.py). Comparison instruments, not project code.
"""
import argparse
import json
import statistics
import time

import numpy as np

GEOMETRY = dict(in_shape=(1, 28, 28), channels=(64, 64, 64, 64), kernel=3, stride=2, pad=1,
                eps=1e-3)                         # the paper's Omniglot network, mamlnp's defaults


def shapes(in_shape, channels, ways, kernel=3, **_):
    """[(W, b, γ, β) shapes per block] + [(W_h, b_h) shapes], in θ's order."""
    out, c = [], in_shape[0]
    for f in channels:
        out.append(((f, c, kernel, kernel), (f,), (f,), (f,)))
        c = f
    return out + [((c, ways), (ways,))]


def split(theta, geom, ways):
    """θ (P,) -> [[W, b, γ, β] per block] + [[W_h, b_h]]: NumPy arrays in θ's order."""
    parts, o = [], 0
    for group in shapes(ways=ways, **geom):
        items = []
        for shp in group:
            n = int(np.prod(shp))
            items.append(np.asarray(theta[o:o + n]).reshape(shp))
            o += n
        parts.append(items)
    assert o == len(theta), (o, len(theta))
    return parts


def num_params(geom, ways):
    return sum(int(np.prod(s)) for g in shapes(ways=ways, **geom) for s in g)


def batch(T, N, K, Q, D=784, ink=0.2, seed=0):
    """(xs (T, N·K, D), ys one-hot, xq (T, N·Q, D), yq): binary images, ``ink`` of them 1."""
    rng = np.random.default_rng(seed)
    xs = (rng.random((T, N * K, D)) < ink).astype(np.float64)
    xq = (rng.random((T, N * Q, D)) < ink).astype(np.float64)
    return xs, np.tile(np.eye(N), (T, K, 1)), xq, np.tile(np.eye(N), (T, Q, 1))


def theta0(geom, ways, seed=0):
    """A θ as mamlnp.ConvNet.init draws it (Glorot conv weights, γ = 1, N(0, 1) head)."""
    rng, parts = np.random.default_rng(seed), []
    for group in shapes(ways=ways, **geom):
        if len(group) == 4:
            (f, c, k, _), bound = group[0], None
            bound = np.sqrt(6.0 / ((c + f) * k * k))
            parts += [rng.uniform(-bound, bound, f * c * k * k), np.zeros(f), np.ones(f),
                      np.zeros(f)]
        else:
            parts += [rng.standard_normal(int(np.prod(group[0]))), np.zeros(group[1][0])]
    return np.concatenate(parts)


def parser(doc):
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--query", type=int, default=1, help="query images per class")
    ap.add_argument("--meta-batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--order", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--alpha", type=float, default=0.4)
    ap.add_argument("--reps", type=int, default=5, help="timed calls after the warm-up")
    ap.add_argument("--threads", type=int, default=0,
                    help="0: the framework's default (JAX honours only 1)")
    return ap


def time_calls(f, reps):
    """(first call s, [ms per later call]): f() must return only when its work is done."""
    t0 = time.perf_counter()
    f()
    first = time.perf_counter() - t0
    f()                                                      # a second warm-up call
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t0) * 1e3)
    return first, ms


def report(impl, a, order, first, ms):
    print("RESULT " + json.dumps({
        "impl": impl, "ways": a.ways, "shots": a.shots, "query": a.query,
        "meta_batch": a.meta_batch, "steps": a.steps, "order": order,
        "median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3), "first_call_s": round(first, 2)}), flush=True)
