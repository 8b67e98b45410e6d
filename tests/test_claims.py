"""How the parallel drivers hand out tasks: the atomic counter (mamlnp/fast/common/atomics.py)
and ``maml_kernels.next_task``.

Dimension legend: T tasks, W workers, n tickets.

What must hold whatever the timing: every task is handed out exactly once; the prefix
worker gets 0, 1, …, F−1 in order (it sums their rows as it goes), the others get
F … T−1; and the driver's result has the bits of ``mean_rows`` (the rows summed in order)
for every F, F = 0 (the prefix worker got nothing) and F = T included.
"""
import numba
import numpy as np
import pytest
from numba import njit, prange

import mamlnp
from mamlnp.fast.mlp import kernelset as fast
from mamlnp.fast.mlp import maml_kernels as MK
from mamlnp.fast.common.bundles import Inner
from mamlnp.fast.common.atomics import fetch_add


@njit(parallel=True)
def _tickets(n, W, counter, log, counts):
    """W workers take tickets 0 … n−1 from one counter as fast as they can; worker w
    writes the tickets it got to log[w, :counts[w]]."""
    for w in prange(W):
        k = fetch_add(counter, 0, 1)
        while k < n:
            log[w, counts[w]] = k
            counts[w] += 1
            k = fetch_add(counter, 0, 1)


def test_fetch_add_returns_the_old_value_and_adds():
    for f in (fetch_add, njit(lambda a, i, v: fetch_add(a, i, v))):
        a = np.array([5, 7], dtype=np.int64)
        assert f(a, 1, 3) == 7 and a.tolist() == [5, 10]
        assert f(a, 0, -2) == 5 and a.tolist() == [3, 10]


def test_fetch_add_is_atomic_under_threads():
    """Two threads race for 300,000 tickets; each ticket must go to exactly one worker.
    (A plain read-then-write in place of fetch_add fails this: compiled, each worker kept
    the counter in a register and took all 300,000 tickets itself.)"""
    W = numba.get_num_threads()
    if W < 2:
        pytest.skip("needs 2 threads")
    n = 300_000
    for _ in range(3):
        counter, counts = np.zeros(1, np.int64), np.zeros(W, np.int64)
        log = np.full((W, n), -1)
        _tickets(n, W, counter, log, counts)
        got = np.concatenate([log[w, :counts[w]] for w in range(W)])
        print(f"tickets per worker: {counts.tolist()}")
        assert counter[0] == n + W                       # each worker's last ask fails once
        assert got.size == n and np.array_equal(np.sort(got), np.arange(n))


def _hand_out(T, W, order):
    """Python workers asking ``next_task`` in the given order of worker ids until all
    have been refused: {worker: [tasks in the order received]}, F."""
    CL = np.zeros(3, np.int64)
    MK.start_claims.py_func(CL)
    got, done = {w: [] for w in range(W)}, set()
    for w in order:
        if w in done:
            continue
        t = MK.next_task.py_func(CL, T, w == W - 1, len(got[w]))
        if t < 0:
            done.add(w)
        else:
            got[w].append(t)
    return got, len(got[W - 1])


@pytest.mark.parametrize("T,W", [(25, 2), (7, 3), (1, 2), (5, 1), (4, 6)])
def test_next_task_hands_out_each_task_once_prefix_in_order(T, W):
    rng = np.random.default_rng(T * 10 + W)
    for trial in range(200):
        order = rng.integers(0, W, size=4 * (T + W))          # any interleaving of asks
        order = np.r_[order, np.repeat(np.arange(W), T + 1)]  # then everyone until refused
        got, F = _hand_out(T, W, order)
        assert sorted(t for ts in got.values() for t in ts) == list(range(T))
        assert got[W - 1] == list(range(F))                   # the prefix: 0 … F−1, in order
        for w in range(W - 1):                                # the others: from the back
            assert got[w] == sorted(got[w], reverse=True) and all(t >= F for t in got[w])


@pytest.mark.parametrize("F", [0, 1, 3, 7])
def test_driver_sum_has_the_bits_of_mean_rows_for_every_split(F):
    """Whatever split F the timing produces, the driver's mean is mean_rows'. Forced here:
    a back worker takes T − F tasks first (tasks T−1 … F), then the prefix worker
    (worker_meta_grad, compiled) gets the F left, summing them as it goes; then the tail
    (finish_mean) adds rows F … T−1."""
    model = mamlnp.MLP((1, 9, 6, 1), "tanh", "mse")
    theta, T, P = model.init(2), 7, model.num_params
    batch = mamlnp.SinusoidTasks().sample(5, T, 4, 3)
    xs, ys, xq, yq = (a.reshape(T, -1) for a in (batch.x_support, batch.y_support,
                                                 batch.x_query, batch.y_query))
    geom, inner = fast.geometry(model), Inner(np.full(1, 0.05), 2, False, 0)
    ws = MK.alloc_workspace(T, P, 2, 4, 3, int(geom.sizes[1:].sum()), 1)
    G, GA, losses, SU, CL = ws.G, ws.GA, ws.losses, ws.SU, ws.CL
    MK.start_claims(CL)
    for want_t in range(T - 1, F - 1, -1):                     # the back worker, w = 0
        t = MK.next_task(CL, T, False, 0)
        assert t == want_t
        losses[t] = MK.task_meta_grad(theta, xs[t], ys[t], xq[t], yq[t], inner, geom, ws, 0,
                                      t)                       # G[t], GA[t]; thread row 0
    MK.worker_meta_grad(1, 2, 0, theta, xs, ys, xq, yq, inner, geom, ws)   # prefix, w = 1
    assert CL[2] == F
    loss, g, _ = MK.finish_mean(ws)                            # SU + the rows F … T−1
    want = MK.mean_rows(losses, G, GA)
    assert loss == want[0] and g.tobytes() == want[1].tobytes()
