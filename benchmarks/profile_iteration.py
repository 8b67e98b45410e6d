"""Where the time of one training meta-iteration goes: each piece of mamlnp.run.train._iteration.

    python benchmarks/profile_iteration.py [--s 1] [--n 3000]

Dimension legend: T = 25 tasks, K = Q = 10 points, N = K + Q, P = 1761 parameters
(1-40-40-1 ReLU), s = inner_steps.

Two ways through one iteration (both give the same bits, tests/test_fused_step.py):
  * step by step (backend numpy, every method without a fused step, and MAML on numba
    before it): sample_batch, MAML.step (meta_gradient_unchecked for numba), guard.check,
    the Adam step (Adam._step; on numba now fast.adam_step, both rows printed);
  * fused (numba, maml/fomaml + Adam + sinusoid): rng.random, then ONE kernel call
    (mamlnp.run.trainstep.FusedMAML, mamlnp/fast/kernels/train_kernels.py).
Each piece is timed alone, n times in a row on fresh data, wall clock (time.perf_counter):
median µs. The whole _iteration is timed the same way; the pieces do not add up exactly
(caches, branch predictors, thread wake-ups). Nothing is asserted.
"""
import argparse
import time

import numba
import numpy as np

from mamlnp.fast import api as fast
from mamlnp.run import train as TR
from mamlnp.nn.mlp import MLP
from mamlnp.run.runconfig import make_config
from mamlnp.run.trainstep import fused_step, sample_batch
from mamlnp.meta.variants import get_method


def median_us(f, n):
    ts = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        f()
        ts[i] = time.perf_counter() - t0
    return float(np.median(ts) * 1e6)


def setup(s, fused):
    cfg = make_config(inner_steps=s, backend="numba", iterations=10**9, eval_every=10**9)
    method, model = get_method("maml"), MLP(**cfg["model"])
    state = TR._new_state(method, cfg)
    F = fused_step(model, method, cfg, TR._FAMILY["sinusoid"], state.optimizers) if fused else None
    for _ in range(50):                                                    # warm up
        TR._iteration(model, method, cfg, state, None, None, F)
    return cfg, method, model, state, F


def step_by_step_rows(s, n):
    cfg, method, model, state, _ = setup(s, False)
    fam, rng, opt = TR._FAMILY["sinusoid"], state.rng, state.optimizers["theta"]
    batch = sample_batch(fam, rng, 25, 10, 10)
    theta = state.params["theta"]
    loss, grads = method.step(model, state.params, batch, cfg, "numba")
    flat = [a.reshape(25, -1) for a in (batch.x_support, batch.y_support, batch.x_query,
                                        batch.y_query)]
    geom, alpha = fast.geometry(model), np.full(model.num_params, 0.01)
    ws = fast.workspace(geom, 25, model.num_params, s, 10, 10, 1)
    from mamlnp.fast.kernels.maml_kernels import batch_meta_grad, mean_rows
    return [
        ("whole _iteration, step by step", median_us(
            lambda: TR._iteration(model, method, cfg, state, None, None, None), n)),
        ("  sample_batch", median_us(lambda: sample_batch(fam, rng, 25, 10, 10), n)),
        ("  MAML.step (numba)", median_us(
            lambda: method.step(model, state.params, batch, cfg, "numba"), n)),
        ("    batch_meta_grad kernel alone", median_us(
            lambda: batch_meta_grad(theta, *flat, alpha, s, False, 0, *geom, ws,
                                    min(numba.get_num_threads(), 25)), n)),
        ("    mean_rows (the serial mean it had before)", median_us(
            lambda: mean_rows(ws[7], ws[5], ws[6]), n)),
        ("  guard.check", median_us(lambda: state.guard.check(1, float(loss), grads, None), n)),
        ("  Adam._step (NumPy)", median_us(lambda: opt._step(theta, grads["theta"]), n)),
        ("  fast.adam_step (its compiled twin)", median_us(
            lambda: fast.adam_step(opt, theta, grads["theta"]), n)),
    ]


def fused_rows(s, n):
    cfg, method, model, state, F = setup(s, True)
    rng, opt, theta = state.rng, state.optimizers["theta"], state.params["theta"]
    m_out, v_out = F.pairs[0]
    out = np.empty_like(theta)
    W = min(numba.get_num_threads(), 25)

    def kernel():
        rng.random(out=F.u)                                  # fresh draws, as in training
        return F.step_kernel(theta, F.u, F.rg, F.xs, F.ys, F.xq, F.yq, F.alpha, F.s,
                             F.first_order, *F.geom, F.ws, W, F.total, F.g, opt.m, opt.v, F.hp,
                             out, m_out, v_out)
    return [
        ("whole _iteration, fused", median_us(
            lambda: TR._iteration(model, method, cfg, state, None, None, F), n)),
        ("  rng.random(out=u), 550 draws", median_us(lambda: rng.random(out=F.u), n)),
        ("  rng.random + train_step kernel", median_us(kernel, n)),
        ("  guard.accepts", median_us(lambda: state.guard.accepts(1.0), n)),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--s", type=int, nargs="+", default=[1, 5])
    p.add_argument("--n", type=int, default=3000)
    args = p.parse_args(argv)
    print(f"numba threads: {numba.get_num_threads()}")
    for s in args.s:
        print(f"\ninner_steps = {s}, second order (median µs)")
        for name, us in step_by_step_rows(s, args.n) + fused_rows(s, args.n):
            print(f"{name:44s} {us:9.1f}")


if __name__ == "__main__":
    main()
