"""A JAX peer of the MAML meta-iteration, driven by bench_meta_gradient.py (optional).

Dimension legend: T tasks, K support points, Q query points, P = 1761 parameters of
the 1-40-40-1 ReLU MLP, s = inner_steps, C iterations per timed chunk.

Not part of mamlnp (which never imports JAX): a measuring instrument only. It runs in
any Python that has jax and numpy (e.g. a virtual environment made with ``pip install numpy jax jaxlib``), as a subprocess of
the benchmark, which sends it one JSON command per line on stdin:

    {"s": 1, "first_order": false, "n": 40, "chunk": 10}
        ->  {"meta_iteration": [sec…], "meta_iteration_chunk": [sec…],
             "meta_gradient_chunk": [sec…]}

so that JAX and mamlnp are timed interleaved, block by block, in the same run.

One meta-iteration = sample T tasks with NumPy on the host (as mamlnp does), then ONE
jitted call: the vmapped meta-gradient and the Adam step. Float64 (jax_enable_x64), CPU.
The parameters are a pytree [(W1, b1), (W2, b2), (W3, b3)], W_l (I, O), as one writes
it in JAX (a flat θ sliced inside the jitted function made the call ~1.5× slower here).

How JAX is timed, as the JAX examples and benchmark scripts time it: a JAX call returns
before its work is done (asynchronous dispatch), so the host samples the next batch
while the previous step runs. ``meta_iteration_chunk``: each chunk of C iterations is
dispatched back to back and synchronised once at its end; the sample is the chunk's
time / C (a mean per iteration, like the peers' block means). ``meta_gradient_chunk``:
the same for the jitted meta-gradient alone on a fixed batch. ``meta_iteration``: one
iteration timed alone, waiting for its result (``block_until_ready``), as a training loop
that reads every iteration's loss (mamlnp's divergence guard does) waits, and as
mamlnp's own iterations are timed.
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


def init(seed=1):
    """[(W, b)] per layer, uniform ±0.1 (the values do not matter for timing)."""
    rng = np.random.default_rng(seed)
    return [(jnp.asarray(rng.uniform(-0.1, 0.1, (i, o))), jnp.asarray(rng.uniform(-0.1, 0.1, o)))
            for i, o in zip(SIZES[:-1], SIZES[1:])]


def mse(params, x, y):
    """x (N, 1), y (N, 1): mean((f(x) − y)²), f = ReLU MLP."""
    h = x
    for W, b in params[:-1]:
        h = jax.nn.relu(h @ W + b)                                   # (N, H)
    W, b = params[-1]
    return jnp.mean((h @ W + b - y) ** 2)


def make_meta_grad(s, first_order):
    """(θ, xs, ys, xq, yq) -> (meta-loss, ∇θ), jitted; xs, ys (T, K, 1), xq, yq (T, Q, 1)."""
    def task_loss(params, xs, ys, xq, yq):
        p = params
        for _ in range(s):
            g = jax.grad(mse)(p, xs, ys)
            if first_order:
                g = jax.lax.stop_gradient(g)
            p = jax.tree_util.tree_map(lambda a, d: a - ALPHA * d, p, g)
        return mse(p, xq, yq)

    def meta_loss(params, xs, ys, xq, yq):
        losses = jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq)
        return jnp.mean(losses)                                      # over the T tasks

    return jax.jit(jax.value_and_grad(meta_loss))


def make_iteration(meta_grad):
    """One meta-iteration: meta-gradient then Adam(LR), in one jitted call."""
    def iteration(params, m, v, t, xs, ys, xq, yq):
        loss, g = meta_grad(params, xs, ys, xq, yq)
        m = jax.tree_util.tree_map(lambda a, d: 0.9 * a + 0.1 * d, m, g)
        v = jax.tree_util.tree_map(lambda a, d: 0.999 * a + 0.001 * d * d, v, g)
        bc1, bc2 = 1.0 - 0.9 ** t, 1.0 - 0.999 ** t
        params = jax.tree_util.tree_map(
            lambda p, a, b: p - LR * (a / bc1) / (jnp.sqrt(b / bc2) + 1e-8), params, m, v)
        return params, m, v, loss
    return jax.jit(iteration)


def sample(rng):
    """T sinusoid tasks on the host: y = A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π]."""
    amp = rng.uniform(0.1, 5.0, T)
    phase = rng.uniform(0.0, np.pi, T)
    x = rng.uniform(-5.0, 5.0, (T, K + Q, 1))
    y = amp[:, None, None] * np.sin(x - phase[:, None, None])
    return x[:, :K], y[:, :K], x[:, K:], y[:, K:]


def chunk_means(step, sync, n, chunk):
    """n calls of step() in chunks of C = chunk, one sync per chunk: seconds per call."""
    out = []
    for _ in range(max(1, n // chunk)):
        t0 = time.perf_counter()
        for _ in range(chunk):
            step()
        sync()
        out.append((time.perf_counter() - t0) / chunk)
    return out


def block(cmd, rng, compiled):
    """Answer one command: the three series of the module docstring."""
    key = (cmd["s"], cmd["first_order"])
    if key not in compiled:
        mg = make_meta_grad(*key)
        compiled[key] = (mg, make_iteration(mg))
    mg, it = compiled[key]
    n, chunk = cmd["n"], cmd.get("chunk", 10)
    params = init()
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    st = {"p": params, "m": zeros, "v": zeros, "t": 0, "loss": None, "g": None}
    fixed = sample(rng)

    def iterate():
        st["t"] += 1
        st["p"], st["m"], st["v"], st["loss"] = it(st["p"], st["m"], st["v"], float(st["t"]),
                                                   *sample(rng))

    def gradient():
        st["g"] = mg(params, *fixed)

    wait_loss, wait_grad = (lambda: st["loss"].block_until_ready(),
                            lambda: jax.block_until_ready(st["g"]))
    return {"meta_iteration_chunk": chunk_means(iterate, wait_loss, n, chunk),
            "meta_gradient_chunk": chunk_means(gradient, wait_grad, n, chunk),
            "meta_iteration": chunk_means(iterate, wait_loss, n, 1)}


def main():
    rng, compiled = np.random.default_rng(0), {}
    for line in sys.stdin:
        print(json.dumps(block(json.loads(line), rng, compiled)), flush=True)


if __name__ == "__main__":
    main()
