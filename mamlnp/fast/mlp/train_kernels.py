"""One whole training meta-iteration in compiled code: task inputs, meta-gradient, Adam.

Dimension legend: T tasks, K support points, Q query points, N = K + Q points per task,
P parameters, s = inner_steps, W workers (threads) of a parallel call, D = O = 1 (the
sinusoid tasks: one input, one output).

Twins (tests/test_fused_step.py checks each bit for bit, not to a tolerance):
  * ``sinusoid_task`` = ``SinusoidTasks.sample`` (mamlnp/tasks/sinusoid.py) fed by the draws
    ``rng.random(T·(2 + N))``: ``Generator.uniform(lo, hi, n)`` is ``lo + (hi − lo)·u``
    on the next n doubles u, in draw order (amplitudes, phases, then inputs), so one
    ``random`` call makes the same numbers and leaves the generator in the same state.
    The sine is ``math.sin`` (the C library's ``sin``, which ``numpy.sin`` also calls for
    float64 on our machines); mamlnp.run.trainstep probes that the two agree before it uses
    this kernel, and runs the step-by-step iteration when they do not. Each task makes
    its own data inside the parallel region: 500 sines cost ~8 µs on fresh arguments,
    serial in NumPy, ~4 µs on the critical path here;
  * ``train_step`` = ``batch_meta_grad`` (maml_kernels.py) then Adam (``adam_update``,
    mamlnp/fast/common/adam.py = ``mamlnp.meta.optim.Adam._step``): the per-task
    meta-gradients are summed in the order t = 0 … T−1 starting from 0.0, as
    ``mean_rows``, whichever thread computed them.

``train_step`` has ONE parallel region (a second one costs ~1.5 µs on a quiet machine and,
on a loaded one, a second wait for a descheduled worker), over W workers:
  * the workers take tasks as they ask for them (``maml_kernels.next_task``): the prefix
    worker from the front, 0, 1, …, adding each task gradient to the running sum
    Σ = 0 + g_0 + g_1 + … as soon as it is computed; the others from the back, T−1,
    T−2, …, storing theirs as rows of G. A core the host slows down takes fewer tasks;
  * then, on the calling thread, the rows F … T−1 the prefix worker did not take are
    added to Σ in order, Σ / T, a finiteness check, and Adam's θ', m', v' into fresh
    buffers (θ, m, v are left untouched: the guard can still refuse the step).
Σ is summed in the order t = 0 … T−1 whoever computed which row: the same bits for any
number of threads and any timing.
"""
import math

import numba
from numba import njit, prange

from ..common.adam import adam_update
from .maml_kernels import add_to_sum, next_task, start_claims, task_meta_grad


@njit(cache=True, _nrt=False)
def sinusoid_task(t, draws):
    """Task t's data from draws = SinusoidDraws(u, rg, xs, ys, xq, yq), the uniform draws
    u (T·(2 + N),) = (amplitudes | phases | inputs): A = rg[0] + rg[1]·u[t],
    φ = rg[2] + rg[3]·u[T + t], x_n = rg[4] + rg[5]·u[2T + tN + n],
    y_n = A sin(x_n + rg[6]·φ) (rg[6] = phase_sign), the first K points into xs[t], ys[t],
    the other Q into xq[t], yq[t]   (SinusoidTasks.sample_params, sample_inputs, targets)."""
    u, rg, xs, ys, xq, yq = draws
    T, K, N = xs.shape[0], xs.shape[1], xs.shape[1] + xq.shape[1]
    amp = rg[0] + rg[1] * u[t]
    shift = rg[6] * (rg[2] + rg[3] * u[T + t])
    row = u[2 * T + t * N:2 * T + (t + 1) * N]
    for n in range(N):
        x = rg[4] + rg[5] * row[n]
        y = amp * math.sin(x + shift)
        if n < K:
            xs[t, n], ys[t, n] = x, y
        else:
            xq[t, n - K], yq[t, n - K] = x, y


@njit(cache=True, _nrt=False)
def worker_tasks(w, W, r, theta, draws, inner, geom, ws):
    """Worker w (of W) on thread scratch r: the data of its tasks (``sinusoid_task``),
    then their meta-gradients, as maml_kernels.worker_meta_grad: tasks from ``next_task``,
    the prefix worker keeps ``total`` = SU[0] = 0 + Σ_{t<F} g_t and stores F in CL[2]."""
    xs, ys, xq, yq = draws.xs, draws.ys, draws.xq, draws.yq
    G, CL, total = ws.G, ws.CL, ws.SU[0]
    prefix, F = w == W - 1, 0
    t = next_task(CL, xs.shape[0], prefix, F)
    while t >= 0:
        sinusoid_task(t, draws)
        ws.losses[t] = task_meta_grad(theta, xs[t], ys[t], xq[t], yq[t], inner, geom, ws,
                                      r, t)
        if prefix:
            add_to_sum(total, G[t], t == 0)
            F += 1
        t = next_task(CL, xs.shape[0], prefix, F)
    if prefix:
        CL[2] = F


@njit(cache=True, error_model="numpy", _nrt=False)
def mean_and_adam(theta, ws, adam):
    """After the tasks: total = SU[0] += G[F] + … + G[T−1], F = CL[2] (rows added in order;
    F = 0: total = 0 + G[0] + …), adam.g = total / T, then Adam into adam's out buffers.
    Returns whether g is finite.  (error_model "numpy": no zero-division test in the loops,
    which then vectorise; the same bits.)"""
    F, G, total, g = ws.CL[2], ws.G, ws.SU[0], adam.g
    T, P = G.shape[0], G.shape[1]
    for t in range(F, T):
        add_to_sum(total, G[t], t == 0)
    bad = 0
    for i in range(P):
        x = total[i] / T
        g[i] = x
        d = x - x                                              # 0, or NaN if x is not finite
        bad |= d != d
    adam_update(theta, g, adam.m, adam.v, adam.hp, adam.theta_out, adam.m_out, adam.v_out)
    return bad == 0


@njit(cache=True, parallel=True)
def train_step(theta, draws, inner, geom, ws, W, adam):
    """One meta-iteration from the draws: (meta_loss, g finite?).  Writes the tasks
    (``sinusoid_task``, draws = SinusoidDraws(u, rg, xs, ys, xq, yq)) into xs, ys (T, K),
    xq, yq (T, Q), and, with adam = AdamStep(g, m, v, hp, theta_out, m_out, v_out), the
    meta-gradient g (P,) and Adam's θ', m', v' (P,) from θ, m, v with hyper-parameters hp
    (see ``adam_update``).  inner = Inner(alpha, s, first_order, 0); ws =
    alloc_workspace(T, P, s, K, Q, Hsum, 1); W = min(numba.get_num_threads(), T) workers
    (read in Python: inside, the call would keep the function out of the on-disk cache)."""
    T = draws.xs.shape[0]
    start_claims(ws.CL)
    for w in prange(W):                                        # the one parallel region
        worker_tasks(w, W, numba.get_thread_id(), theta, draws, inner, geom, ws)
    loss = 0.0
    for t in range(T):
        loss += ws.losses[t]
    finite = mean_and_adam(theta, ws, adam)
    return loss / T, finite
