"""MAML in JAX on the project's two workloads: the comparison the benchmarks time mamlnp against.

Dimension legend: T tasks, K support / Q query points per task (N·K, N·Q for N-way), D inputs,
O outputs, P parameters, s = inner steps.

A measuring instrument, not part of mamlnp (which never imports JAX). Installed with
``pip install -e ".[compare]"``. The network and the meta-objective of common.py, written the
way one writes them in JAX: parameters a dict of arrays (one per block of mamlnp's flat θ),
the inner steps ``p − α ∇L_S(p)`` by ``jax.grad`` (``stop_gradient`` of it for first order),
the query loss after s steps vmapped over the T tasks, and ``jax.value_and_grad`` of its mean,
jitted. Exact second order by autodiff through the inner gradient.

    meta_loss(θ) = (1/T) Σ_t L_Q,t(θ_s^(t)),   θ_{k+1}^(t) = θ_k^(t) − α ∇L_S,t(θ_k^(t))

    python benchmarks/compare/maml_jax.py --workload sinusoid --steps 1 5 --order 2 1
    python benchmarks/compare/maml_jax.py --workload omniglot --ways 5 --shots 1 --query 1
    python benchmarks/compare/maml_jax.py --worker     # stdin/stdout, for bench_meta_gradient.py

prints one ``RESULT {json}`` line per (s, order): median / min / max ms per meta-gradient on
one fixed batch (means of blocks of ``--block`` calls dispatched back to back and synchronised
once, JAX's usual timing), and the first (compiling) call. ``meta_gradient`` below is what
tests/test_compare.py checks against mamlnp's to 1e-10.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def unflatten(theta, sizes, batch_norm, dtype):
    """Flat θ (P,) in mamlnp's layout -> {block name: jnp array}."""
    return {name: jnp.asarray(theta[o:o + int(np.prod(shape))].reshape(shape), dtype)
            for name, o, shape in common.layout(sizes, batch_norm)}


def flatten(params, sizes, batch_norm):
    """{block name: array} -> flat (P,) NumPy float64 in mamlnp's layout."""
    return np.concatenate([np.asarray(params[name]).ravel()
                           for name, _, _ in common.layout(sizes, batch_norm)])


def make_loss(sizes, batch_norm, loss):
    """L(p, x, y): the MLP of common.py on a set x (N, D), y (N, O)."""
    L = len(sizes) - 1

    def forward(p, x):
        h = x
        for l in range(L - 1):
            z = h @ p[f"W{l}"] + p[f"b{l}"]                          # (N, H_l)
            if batch_norm:
                zc = z - z.mean(0)
                s = 1.0 / jnp.sqrt((zc * zc).mean(0) + common.BN_EPS)  # (H_l,)
                z = p[f"gamma{l}"] * zc * s + p[f"beta{l}"]
            h = jax.nn.relu(z)
        return h @ p[f"W{L - 1}"] + p[f"b{L - 1}"]                   # (N, O)

    def value(p, x, y):
        out = forward(p, x)
        if loss == "mse":
            return jnp.mean((out - y) ** 2)
        return -jnp.sum(y * jax.nn.log_softmax(out, axis=1)) / x.shape[0]

    return value


def make_meta_grad(sizes, batch_norm, loss, alpha, steps, first_order):
    """jit((p, xs, ys, xq, yq) -> (meta-loss, ∇p)); xs (T, N·K, D), ys (T, N·K, O), …"""
    value = make_loss(sizes, batch_norm, loss)

    def task_loss(p, xs, ys, xq, yq):
        for _ in range(steps):
            g = jax.grad(value)(p, xs, ys)
            if first_order:
                g = jax.lax.stop_gradient(g)
            p = jax.tree_util.tree_map(lambda a, d: a - alpha * d, p, g)
        return value(p, xq, yq)

    def meta_loss(p, xs, ys, xq, yq):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(p, xs, ys, xq, yq))

    return jax.jit(jax.value_and_grad(meta_loss))


def make_iteration(meta_grad, lr=1e-3):
    """jit of one meta-iteration: the meta-gradient, then Adam(lr, 0.9, 0.999, 1e-8)."""
    def iteration(p, m, v, t, xs, ys, xq, yq):
        loss, g = meta_grad(p, xs, ys, xq, yq)
        m = jax.tree_util.tree_map(lambda a, d: 0.9 * a + 0.1 * d, m, g)
        v = jax.tree_util.tree_map(lambda a, d: 0.999 * a + 0.001 * d * d, v, g)
        c1, c2 = 1.0 - 0.9 ** t, 1.0 - 0.999 ** t
        p = jax.tree_util.tree_map(
            lambda q, a, b: q - lr * (a / c1) / (jnp.sqrt(b / c2) + 1e-8), p, m, v)
        return p, m, v, loss
    return jax.jit(iteration)


def meta_gradient(theta, xs, ys, xq, yq, sizes, batch_norm, loss, alpha, steps,
                  first_order=False):
    """(meta-loss, ∇θ (P,)) in float64 for a flat θ in mamlnp's layout: the checked entry."""
    jax.config.update("jax_enable_x64", True)
    f = make_meta_grad(sizes, batch_norm, loss, alpha, steps, first_order)
    val, g = f(unflatten(theta, sizes, batch_norm, jnp.float64), *map(jnp.asarray,
                                                                     (xs, ys, xq, yq)))
    return float(val), flatten(g, sizes, batch_norm)


class Sinusoid:
    """The worker's state for one (s, order) on the sinusoid workload (common.serve)."""

    def __init__(self, s, first_order, rng):
        w = common.WORKLOADS["sinusoid"]
        self.w, self.rng = w, rng
        mg = make_meta_grad(w["sizes"], False, "mse", w["alpha"], s, first_order)
        self.mg, self.it = mg, make_iteration(mg)
        self.p = unflatten(common.init_theta(w["sizes"], False), w["sizes"], False,
                           jnp.float64)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, self.p)
        self.m, self.v, self.t = zeros, zeros, 0
        self.fixed = [jnp.asarray(a) for a in self.sample()]

    def sample(self):
        w = self.w
        return common.sinusoid_batch(self.rng, w["meta_batch"], w["shots"], w["query"])

    def iterate(self):
        self.t += 1
        self.p, self.m, self.v, loss = self.it(self.p, self.m, self.v, float(self.t),
                                               *self.sample())
        return loss

    def gradient(self):
        return self.mg(self.p, *self.fixed)

    @staticmethod
    def sync(out):
        jax.block_until_ready(out)


def main(argv=None):
    ap = common.workload_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--worker", action="store_true",
                    help="serve bench_meta_gradient.py's JSON commands on stdin (sinusoid)")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", args.dtype == "float64" or args.worker)
    if args.worker:
        return common.serve(Sinusoid)
    sizes, bn, loss, alpha, T, K, Q, data = common.resolve(args)
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    p = unflatten(common.init_theta(sizes, bn), sizes, bn, dtype)
    data = [jnp.asarray(a, dtype) for a in data]
    for s in args.steps:
        for order in args.order:
            f = make_meta_grad(sizes, bn, loss, alpha, s, order == 1)
            first, ms = common.time_blocks(lambda: f(p, *data), jax.block_until_ready,
                                           args.reps, args.block)
            common.report("jax", args, T, K, Q, s, order, first, ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
