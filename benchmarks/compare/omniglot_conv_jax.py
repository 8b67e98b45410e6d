"""mamlnp's conv Omniglot workload in JAX: exact second-order (or first-order) MAML by jax.grad
through the inner jax.grad steps, vmap over the tasks, jit; float64.

Dimension legend: T tasks, N ways, K support and Q query images per class, P parameters,
s inner steps.

The network and θ's layout are mamlnp.ConvNet's (omniglot_conv_common.py). ``meta_gradient``
returns (meta-loss, ∇θ (P,)) in mamlnp's layout, which tests/test_conv_compare.py checks
against mamlnp.meta_gradient to 1e-10. Run as a script it times the meta-gradient on one fixed
random batch and prints ``RESULT {json}`` per order (benchmarks/bench_conv.py runs it):

    python benchmarks/compare/omniglot_conv_jax.py --ways 5 --shots 1 --query 1 --steps 1
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import omniglot_conv_common as common  # noqa: E402


def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)
    return jax


def build(ways, geom=common.GEOMETRY):
    """value_and_grad maker: make(s, α, first_order) -> jitted f(params, xs, ys, xq, yq)."""
    jax = _jax()
    jnp = jax.numpy
    C, H, Wd = geom["in_shape"]
    st, p = geom["stride"], geom["pad"]

    def forward(params, x):
        h = x.reshape(-1, C, H, Wd)                                      # NCHW
        for W, b, gamma, beta in params[:-1]:
            z = jax.lax.conv_general_dilated(h, W, (st, st), ((p, p), (p, p)),
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            z = z + b[None, :, None, None]
            mu = z.mean(axis=(0, 2, 3), keepdims=True)
            var = ((z - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)     # biased
            zhat = (z - mu) / jnp.sqrt(var + geom["eps"])
            h = jax.nn.relu(gamma[None, :, None, None] * zhat + beta[None, :, None, None])
        Wh, bh = params[-1]
        return h.mean(axis=(2, 3)) @ Wh + bh

    def loss(params, x, y):
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(forward(params, x)), axis=1))

    def make(steps, alpha, first_order):
        def task(params, xs, ys, xq, yq):
            for _ in range(steps):
                g = jax.grad(loss)(params, xs, ys)
                if first_order:
                    g = jax.lax.stop_gradient(g)
                params = jax.tree_util.tree_map(lambda a, d: a - alpha * d, params, g)
            return loss(params, xq, yq)

        def meta(params, xs, ys, xq, yq):
            return jnp.mean(jax.vmap(task, in_axes=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq))
        return jax.jit(jax.value_and_grad(meta))
    return make


def to_params(theta, ways, geom=common.GEOMETRY):
    jnp = _jax().numpy
    return [[jnp.asarray(a) for a in group] for group in common.split(theta, geom, ways)]


def meta_gradient(theta, xs, ys, xq, yq, alpha, steps, first_order, geom=common.GEOMETRY):
    """(meta-loss, ∇θ (P,)) for mamlnp's flat θ and a batch (T, N·K, D) ..."""
    ways = ys.shape[-1]
    f = build(ways, geom)(steps, alpha, first_order)
    value, grads = f(to_params(theta, ways, geom), xs, ys, xq, yq)
    return float(value), np.concatenate([np.asarray(g).ravel() for grp in grads for g in grp])


def main():
    a = common.parser(__doc__).parse_args()
    if a.threads == 1:                                   # XLA's CPU client: one thread
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1")
    jax = _jax()
    N, geom = a.ways, common.GEOMETRY
    params = to_params(common.theta0(geom, N), N)
    data = [jax.numpy.asarray(v) for v in common.batch(a.meta_batch, N, a.shots, a.query)]
    for order in a.order:
        f = build(N)(a.steps, a.alpha, order == 1)
        first, ms = common.time_calls(lambda: jax.block_until_ready(f(params, *data)), a.reps)
        common.report("jax-jit-vmap", a, order, first, ms)


if __name__ == "__main__":
    main()
