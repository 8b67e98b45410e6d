"""A JAX peer of the MAML meta-iteration, driven by bench_meta_gradient.py (optional).

Dimension legend: T tasks, K support points, Q query points, P = 1761 parameters of
the 1-40-40-1 ReLU MLP, s = inner_steps.

Not part of mamlnp (which never imports JAX): a measuring instrument only. It runs in
any Python that has jax and numpy (e.g. ``/tmp/peers/bin/python``), as a subprocess of
the benchmark, which sends it one JSON command per line on stdin:

    {"s": 1, "first_order": false, "n": 50}   ->   {"meta_iteration": [sec…], "meta_gradient": [sec…]}

so that JAX and mamlnp are timed interleaved, block by block, in the same run.
One meta-iteration here = sample T tasks with NumPy (as mamlnp does), then ONE jitted call
doing the vmapped meta-gradient and the Adam step; "meta_gradient" times the jitted
meta-gradient alone on a fixed batch. Float64 (jax_enable_x64), CPU.
The layout of θ is mamlnp's: [W1 (1×40) | b1 | W2 (40×40) | b2 | W3 (40×1) | b3].
"""
import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

SIZES = (1, 40, 40, 1)
T, K, Q, ALPHA, LR = 25, 10, 10, 0.01, 1e-3


def unflatten(theta):
    out, o = [], 0
    for fi, fo in zip(SIZES[:-1], SIZES[1:]):
        out.append((theta[o:o + fi * fo].reshape(fi, fo), theta[o + fi * fo:o + fi * fo + fo]))
        o += fi * fo + fo
    return out


def mse(theta, x, y):
    h = x
    layers = unflatten(theta)
    for W, b in layers[:-1]:
        h = jax.nn.relu(h @ W + b)
    W, b = layers[-1]
    return jnp.mean((h @ W + b - y) ** 2)


def make_meta_grad(s, first_order):
    def task_loss(theta, xs, ys, xq, yq):
        th = theta
        for _ in range(s):
            g = jax.grad(mse)(th, xs, ys)
            th = th - ALPHA * (jax.lax.stop_gradient(g) if first_order else g)
        return mse(th, xq, yq)

    def meta_loss(theta, xs, ys, xq, yq):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(theta, xs, ys, xq, yq))

    return jax.jit(jax.value_and_grad(meta_loss))


def make_iteration(meta_grad):
    def iteration(theta, m, v, t, xs, ys, xq, yq):
        loss, g = meta_grad(theta, xs, ys, xq, yq)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1.0 - 0.9 ** t), v / (1.0 - 0.999 ** t)
        return theta - LR * m_hat / (jnp.sqrt(v_hat) + 1e-8), m, v, loss
    return jax.jit(iteration)


def sample(rng):
    amp = rng.uniform(0.1, 5.0, T)
    phase = rng.uniform(0.0, np.pi, T)
    x = rng.uniform(-5.0, 5.0, (T, K + Q, 1))
    y = amp[:, None, None] * np.sin(x - phase[:, None, None])
    return x[:, :K], y[:, :K], x[:, K:], y[:, K:]


def main():
    rng = np.random.default_rng(0)
    theta = jnp.asarray(np.random.default_rng(1).uniform(-0.1, 0.1, 1761))
    compiled = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        key = (cmd["s"], cmd["first_order"])
        if key not in compiled:
            mg = make_meta_grad(*key)
            compiled[key] = (mg, make_iteration(mg))
        mg, it = compiled[key]
        m = v = jnp.zeros_like(theta)
        th = theta
        fixed = sample(rng)
        t_it, t_mg = [], []
        for i in range(cmd["n"]):
            t0 = time.perf_counter()
            th, m, v, loss = it(th, m, v, float(i + 1), *sample(rng))
            loss.block_until_ready()
            t1 = time.perf_counter()
            mg(theta, *fixed)[1].block_until_ready()
            t2 = time.perf_counter()
            t_it.append(t1 - t0)
            t_mg.append(t2 - t1)
        print(json.dumps({"meta_iteration": t_it, "meta_gradient": t_mg}), flush=True)


if __name__ == "__main__":
    main()
