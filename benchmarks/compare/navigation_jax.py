"""A JAX comparison implementation of the 2D-navigation meta-step's derivatives, timed beside
mamlnp by benchmarks/bench_rl_derivatives.py (optional).

Dimension legend: T tasks, M timesteps per task before and after the update, D = 2
observation entries, A = 2 action entries, P parameters.

Not part of mamlnp (which never imports JAX): a measuring instrument, run in any Python
that has jax and numpy (``pip install numpy jax jaxlib``). It computes, the way one writes
it in JAX (autodiff, jit, vmap over tasks, float64), what mamlnp computes by hand:

  meta_gradient   value and gradient of (1/T) Σ_i mean_m′ Â′ log π_θ′_i(a′|s′),
                  θ′_i = θ + α ∇ inner_i(θ); inner = mean Â log π ("maml") or ProMP's
                  mean Â π/⊥π ("lvc", same value and gradient, LVC curvature)
  fvp             one product of the Hessian, at the old θ, of the mean KL between the old
                  and new post-update policies on the post-update observations (jvp of
                  grad, recomputed from scratch at every call, as a JAX CG loop calls it)

Policy: mean = MLP (2, 100, 100, 2) ReLU, state-independent log-std; parameters as the pytree
([(W1, b1), (W2, b2), (W3, b3)], log_std), W_l (fan_in, fan_out): mamlnp's θ reshaped
(``tree``). Workload: T × M samples before and after the update, observations U(−0.5, 0.5)²,
actions and advantages N(0, 1) (bench_rl_derivatives.py's construction), α = 0.5.

    python benchmarks/compare/navigation_jax.py [--tasks 20] [--steps 2000] [--reps 5]
        [--estimator lvc]

prints ``RESULT {json}``: median / min ms over ``reps`` calls after one warm-up call (which
compiles; its time is ``first_call_s``), each call waited for (``block_until_ready``).
tests/test_compare_navigation_jax.py checks its numbers against mamlnp's (skipped without JAX).
"""
import argparse
import json
import statistics
import time

import numpy as np

SIZES = (2, 100, 100, 2)


def tree(theta, sizes=SIZES):
    """mamlnp's flat θ (P,) -> ([(W (in, out), b (out,)), ...], log_std (A,)), NumPy arrays."""
    layers, o = [], 0
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        layers.append((theta[o:o + fi * fo].reshape(fi, fo), theta[o + fi * fo:o + fi * fo + fo]))
        o += fi * fo + fo
    return layers, theta[o:]


def flat(params):
    """The inverse of ``tree``: a NumPy θ (P,)."""
    layers, log_std = params
    return np.concatenate([np.ravel(x) for wb in layers for x in wb] + [np.ravel(log_std)])


def make(alpha=0.5, estimator="lvc"):
    """(meta_grad(params, pre, post) -> (value, grad tree), fvp(params, v, pre, post_obs) ->
    tree): jitted; pre, post = (obs (T, M, D), actions (T, M, A), advantages (T, M))."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    stop = jax.lax.stop_gradient

    def mean(params, obs):
        layers, _ = params
        h = obs
        for W, b in layers[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = layers[-1]
        return h @ W + b                                            # (M, A)

    def log_prob(params, obs, act):
        mu, log_std = mean(params, obs), params[1]
        z = (act - mu) * jnp.exp(-log_std)
        return (-0.5 * jnp.sum(z * z, axis=1) - jnp.sum(log_std)
                - 0.5 * act.shape[1] * jnp.log(2 * jnp.pi))

    def inner(params, obs, act, adv):
        lp = log_prob(params, obs, act)
        if estimator == "lvc":                                      # π/⊥π: LVC curvature
            return jnp.mean(adv * jnp.exp(lp - stop(lp)))
        return jnp.mean(adv * lp)

    def adapted(params, obs, act, adv):
        g = jax.grad(inner)(params, obs, act, adv)
        return jax.tree_util.tree_map(lambda p, d: p + alpha * d, params, g)

    def objective(params, pre, post):
        def task(o, a, adv, o1, a1, adv1):
            return jnp.mean(adv1 * log_prob(adapted(params, o, a, adv), o1, a1))
        return jnp.mean(jax.vmap(task)(*pre, *post))

    def kl(params, old, pre, post_obs):
        def task(o, a, adv, o1):
            new_p, old_p = adapted(params, o, a, adv), stop(adapted(old, o, a, adv))
            mu1, mu0, ls1, ls0 = mean(new_p, o1), mean(old_p, o1), new_p[1], old_p[1]
            per = ls1 - ls0 + (jnp.exp(2 * ls0) + (mu0 - mu1) ** 2) / (2 * jnp.exp(2 * ls1)) - 0.5
            return jnp.mean(jnp.sum(per, axis=1))
        return jnp.mean(jax.vmap(task)(*pre, post_obs))

    meta_grad = jax.jit(jax.value_and_grad(objective))

    @jax.jit
    def fvp(params, v, pre, post_obs):
        grad_kl = lambda p: jax.grad(kl)(p, params, pre, post_obs)     # noqa: E731
        return jax.jvp(grad_kl, (params,), (v,))[1]

    return meta_grad, fvp


def workload(rng, tasks, steps):
    """(obs (T, M, 2), actions (T, M, 2), advantages (T, M)): NumPy."""
    return (rng.uniform(-0.5, 0.5, (tasks, steps, 2)), rng.normal(0, 1, (tasks, steps, 2)),
            rng.normal(0, 1, (tasks, steps)))


def glorot(rng, sizes=SIZES):
    """θ (P,): Glorot-uniform weights, zero biases and log-std (the policy's init)."""
    parts = []
    for fi, fo in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6.0 / (fi + fo))
        parts += [rng.uniform(-bound, bound, fi * fo), np.zeros(fo)]
    return np.concatenate(parts + [np.zeros(sizes[-1])])


def timed(fn, reps):
    import jax
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ms.append(1e3 * (time.perf_counter() - t0))
    return {"median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2),
            "first_call_s": round(first, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--estimator", default="lvc", choices=["lvc", "maml"])
    a = ap.parse_args()
    import jax.numpy as jnp
    meta_grad, fvp = make(0.5, a.estimator)
    rng = np.random.default_rng(0)
    params = jax_tree(jnp, tree(glorot(rng)))
    pre, post = (tuple(jnp.asarray(x) for x in workload(rng, a.tasks, a.steps)) for _ in range(2))
    v = jax_tree(jnp, tree(rng.normal(0, 1, len(flat(tree(glorot(rng)))))))
    out = {"meta_gradient": timed(lambda: meta_grad(params, pre, post), a.reps),
           "fvp": timed(lambda: fvp(params, v, pre, post[0]), a.reps)}
    print("RESULT " + json.dumps({"impl": "jax (benchmarks/compare)", "estimator": a.estimator,
                                  "tasks": a.tasks, "timesteps": a.steps, **out}))


def jax_tree(jnp, params):
    """A NumPy parameter tree as JAX arrays."""
    layers, log_std = params
    return [(jnp.asarray(W), jnp.asarray(b)) for W, b in layers], jnp.asarray(log_std)


if __name__ == "__main__":
    main()
