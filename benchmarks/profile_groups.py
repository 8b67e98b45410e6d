"""Where one task group's time goes: the s = 1 group kernels timed pass by pass.

    python benchmarks/profile_groups.py [--ways 5] [--shots 1] [--query 1] [--ink 0.25]
        [--real] [--fo] [--repeats 21] [--reps 20]

One group of GMAX = 8 tasks (784-256-128-64-64-N with batch norm, α = 0.4) on ONE thread,
BLAS held on one thread as in a call (fast/common/blas_threads.py). ``run_stages`` calls the
passes of ``classify_groups.group_task`` in its order (first-layer rows and Gram
matrices, support forward, support backward, query forward, query backward, R-forward,
R-backward), all of them or one alone on the buffers a whole run left: each pass alone
(median over --repeats timings of --reps runs), their sum, the passes one after another,
then the whole group (``group_task`` itself) and the whole T = 32 call
(``meta_gradient_unchecked`` on 1 and on the default number of Numba threads). One group
run over and over keeps its data in cache, so the passes here are faster than inside a
T = 32 call, where four groups and ∇W1 share the caches. Nothing here is asserted.

``--ink``: the fraction of nonzero inputs of a synthetic batch (0.25, about a real
Omniglot batch's, runs the first layer on BLAS; below 1/8 on packed rows); ``--real``:
real Omniglot episodes from $MAMLNP_DATA_DIR instead.
"""
import argparse
import os
import statistics
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mamlnp  # noqa: E402
from mamlnp.fast.bn_mlp import kernelset as classify  # noqa: E402
from mamlnp.fast.common.blas_threads import one_blas_thread  # noqa: E402
from mamlnp.fast.bn_mlp import classify_groups as cg  # noqa: E402

SIZES, T, ALPHA = (784, 256, 128, 64, 64), 32, 0.4


def batch(N, shots, query, ink, real, seed=0):
    """(xs, ys, xq, yq) flat (T, n·C) float64, ``shots`` and ``query`` points per class:
    synthetic with ``ink`` nonzero, or real."""
    if real:
        from mamlnp.tasks.omniglot import OmniglotTasks
        b = OmniglotTasks(ways=N).sample(np.random.default_rng(seed), T, shots, query)
        return tuple(np.ascontiguousarray(a, dtype=np.float64).reshape(T, -1)
                     for a in (b.x_support, b.y_support, b.x_query, b.y_query))
    rng = np.random.default_rng(seed)
    K, Q = N * shots, N * query
    xs = (rng.random((T, K * 784)) < ink) * rng.random((T, K * 784))        # (T, K·D)
    xq = (rng.random((T, Q * 784)) < ink) * rng.random((T, Q * 784))        # (T, Q·D)
    ys = np.tile(np.eye(N), (T, shots, 1)).reshape(T, -1)                   # (T, K·N)
    yq = np.tile(np.eye(N), (T, query, 1)).reshape(T, -1)                   # (T, Q·N)
    return xs, ys, xq, yq


STAGES = ("first layer: rows of x W1, Gram matrices", "support forward", "support backward",
          "query forward", "query backward", "R-forward", "R-backward")


@numba.njit
def run_stages(first, upto, reps, d, F, g, cp, ws, pinned, alpha):
    """group_task's passes first … upto of group 0 on thread 0 (STAGES), ``reps`` times over.

    The same calls in the same order as ``classify_groups.group_task``, stopped after stage
    ``upto``, from stage ``first`` on (the earlier stages' results are those in the
    buffers); the copies into E and the b, γ, β sums (a few µs) are left out. (The passes
    are compiled without NRT, so Python cannot call them directly: this wrapper can.)"""
    T = d.ys.shape[0]
    K, Q = d.ys.shape[1] // g.sizes[-1], d.yq.shape[1] // g.sizes[-1]
    t0, n = cg.group_range(T, 0)
    cs, cq, rc = cg.caches(ws, 0)
    TH1, GS, GQ, V, HV = ws.SM[0, 0], ws.SM[0, 1], ws.SM[0, 2], ws.SM[0, 3], ws.SM[0, 4]
    cx = cg.Ctx(g, cp, pinned, d.rest, ws.TH0, alpha, t0, n, K, Q, ws.PK[0], ws.GR[0])
    for _ in range(reps):
        if first <= 0:
            cg.group_inputs(F, g, ws, 0, T, t0, n, K, Q, cs, cq)
        if first <= 1 <= upto:
            cg.support_forward(cx, cs)
        if first <= 2 <= upto:
            cg.support_backward(cx, d.ys, cs, GS)
            for j in range(n):
                for c in range(ws.TH0.shape[0]):
                    TH1[j, c] = ws.TH0[c] - alpha * GS[j, c]        # θ_1's b, γ, β
        if first <= 3 <= upto:
            cg.query_forward(cx, TH1, cs, cq)
        if first <= 4 <= upto:
            cg.query_backward(cx, TH1, d.yq, ws.losses, cs, cq, GQ, ws.G[0])
            for j in range(n):
                for c in range(ws.TH0.shape[0]):
                    V[j, c] = alpha * GQ[j, c]                      # v = α g_Q
        if first <= 5 <= upto:
            cg.r_forward_group(cx, V, cs, cq, rc)
        if first <= 6 <= upto:
            cg.r_backward_group(cx, V, HV, ws.TW[0], cs, cq, rc, ws.G[0])


@numba.njit
def group_tasks(reps, d, F, g, cp, ws, pinned, alpha, first_order):
    """classify_groups.group_task on group 0, thread 0, ``reps`` times."""
    for _ in range(reps):
        cg.group_task(d, F, g, cp, ws, pinned, alpha, first_order, 0, 0)


def median_ms(f, reps, repeats):
    """Median over ``repeats`` timings of f(reps), per rep, in ms."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(reps)
        ts.append((time.perf_counter() - t0) / reps)
    return 1e3 * statistics.median(ts)


def setup(N, shots, query, ink, real):
    """Everything group_task sees, as a call sets it up (classify.group_call), θ's b, γ, β
    already in ws.TH0 (group_meta_grad's first step)."""
    model = mamlnp.MLP(SIZES + (N,), activation="relu", loss="softmax_xent", batch_norm=True)
    theta, geom = model.init(0), classify.geometry(model)
    data = batch(N, shots, query, ink, real)
    d, F, cp, ws = classify.group_call(geom, theta, *data)
    ws.TH0[:] = d.rest[cp.src]
    return theta, geom, data, cp, ws, F, d


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--query", type=int, default=1, help="query points per class")
    p.add_argument("--ink", type=float, default=0.25)
    p.add_argument("--real", action="store_true")
    p.add_argument("--repeats", type=int, default=21, help="timings, each of --reps runs")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--fo", action="store_true", help="first order (no R-pass)")
    return p.parse_args(argv)


def time_group(d, F, geom, cp, ws, fo, reps, repeats):
    """([ms of each pass alone], ms of the passes in a row, ms of group_task) on 1 thread."""
    last = 4 if fo else 6
    with one_blas_thread() as pinned:
        run = lambda a, b: lambda n: run_stages(a, b, n, d, F, geom, cp, ws,  # noqa: E731
                                                pinned, ALPHA)
        whole = lambda n: group_tasks(n, d, F, geom, cp, ws, pinned, ALPHA, fo)  # noqa: E731
        run(0, last)(1), whole(1)                                   # compile the wrappers
        alone = []
        for k in range(last + 1):
            run(0, last)(1)                                     # every buffer as in a call
            alone.append(median_ms(run(k, k), reps, repeats))
        return alone, median_ms(run(0, last), reps, repeats), median_ms(whole, reps, repeats)


def main(argv=None):
    args = parse(argv)
    N, fo = args.ways, args.fo
    theta, geom, data, cp, ws, F, d = setup(N, args.shots, args.query, args.ink, args.real)
    full = lambda: classify.meta_gradient_unchecked(geom, theta, *data, ALPHA, 1, fo)  # noqa: E731
    full()                                       # compile, allocate, fill every buffer
    print(f"{N}-way {args.shots}-shot, {args.query} query/class, {'FO' if fo else 'SO'}, "
          f"T = {T}, groups of {cg.group_range(T, 0)[1]} tasks, inputs "
          f"{np.mean(data[0] != 0):.1%} nonzero ({'packed rows' if F.sparse else 'BLAS'}), "
          f"median of {args.repeats} timings of {args.reps} runs each, ms")
    alone, passes, group = time_group(d, F, geom, cp, ws, fo, args.reps, args.repeats)
    for lab, t in zip(STAGES, alone):
        print(f"  {lab:<44s} {t:7.3f}")
    print(f"  {'sum of the passes timed alone':<44s} {sum(alone):7.3f}")
    print(f"  {'the passes one after another (run_stages)':<44s} {passes:7.3f}")
    print(f"  {'the whole group (group_task, one thread)':<44s} {group:7.3f}")
    threads = numba.get_num_threads()
    for th in sorted({1, threads}):
        numba.set_num_threads(th)
        ms = median_ms(lambda n: [full() for _ in range(n)], 5, args.repeats)
        print(f"  {'the T = 32 call, %d thread%s' % (th, 's' * (th > 1)):<44s} {ms:7.3f}")
    numba.set_num_threads(threads)


if __name__ == "__main__":
    main()
