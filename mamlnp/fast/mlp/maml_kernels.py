"""MAML on compiled kernels: inner loop, reverse pass, and drivers parallel over tasks.

Dimension legend: T tasks, K support points, Q query points, D inputs, O outputs,
P parameters, s = inner_steps, Hsum = Σ_{l≥1} sizes[l], PA = 1 (scalar α) or P.

Compiled twin of mamlnp/meta/maml.py (``inner_loop``, ``task_meta_gradient``,
``task_meta_gradient_alpha``, ``meta_gradient``) for one task, then for T tasks:

    θ_0 = θ,  θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k)                       (inner loop, s steps)
    g ← ∇L_Q(θ_s);  for k = s−1 … 0:  g_α −= ∇L_S(θ_k) ⊙ g,  g ← g − H_S(θ_k)(α ⊙ g)
    ∇M = (1/T) Σ_t g^{(t)}      (Finn et al. 2017, Alg. 2; Meta-SGD: Li et al. 2017)

The HVP at θ_k reuses the forward/backward caches the inner loop left at θ_k (no
recomputation). Each task writes its own row of a (T, P) buffer inside ``prange`` (over W
workers, which take tasks as they ask for them: ``next_task``); the rows are summed in the
fixed order t = 0 … T−1, the order of the NumPy reference, so the result has the same bits
for any number of threads: the prefix worker takes the tasks 0, 1, 2, … and adds its rows
as it goes, and the calling thread adds the others after the parallel region
(T = 25, 2 threads: about 12 rows after the region instead of 25 in ``mean_rows``).
Workspace is allocated once per shape (``alloc_workspace``), never inside loops; the
scratch of a task (iterates, caches, R-pass buffers) belongs to the thread running it
(``numba.get_thread_id()``), not to the task: a thread's tasks reuse the same memory,
which stays in its core's L2 cache (one SO task at s = 5 touches ~0.4 MB; 25 tasks' own
buffers, 10 MB, spilled to L3: 1.94–2.2 ms against 1.47–1.55 ms for the 25-task driver
on one thread).  Every buffer is written before it is read within a task, so the
results do not depend on which thread ran which task.

Reference: mamlnp/meta/maml.py (``inner_loop``, ``task_meta_gradient``, ``meta_gradient``,
``task_meta_gradient_alpha``, ``adapt_batch_numpy``, ``adapt_curve_numpy``); tests:
tests/test_kernels.py, tests/test_claims.py (the task counter), tests/test_fused_step.py.
"""
import numba
import numpy as np
from numba import njit, prange

from ..common.atomics import fetch_add
from ..common.bundles import Workspace
from .mlp_kernels import backward, forward, loss_and_dyhat, loss_value, rpass


@njit(cache=True, _nrt=False)
def support_step(th, th_next, g, xs, ys, K, alpha, geom, C):
    """One inner SGD step: the cache C (5, ·) of the support pass at θ_k, g = ∇L_S(θ_k),
    θ_{k+1} = θ_k − α ⊙ g.  Returns L_S(θ_k)."""
    L = geom.sizes.shape[0] - 1
    forward(th, xs, K, geom, C)
    loss = loss_and_dyhat(C[0], C[1], C[3], K * geom.coff[L - 1], ys, K, geom.sizes[L],
                          geom.loss_id)
    backward(th, xs, K, geom, C, g)
    sgd_into(th_next, th, alpha, g)
    return loss


# ---- the step size α: alpha (1,) is one scalar α, alpha (P,) one α per parameter ----------
# A scalar α read once per loop, not α_i from a filled (P,) vector: one stream of P floats
# less through the cache in every loop over the parameters (the same products, the same bits).


@njit(cache=True, _nrt=False)
def sgd_into(out, th, alpha, g):
    """out = θ − α ⊙ g   (P,)."""
    if alpha.shape[0] == 1:
        a = alpha[0]
        for i in range(th.shape[0]):
            out[i] = th[i] - a * g[i]
    else:
        for i in range(th.shape[0]):
            out[i] = th[i] - alpha[i] * g[i]


@njit(cache=True, _nrt=False)
def scale_into(out, alpha, g):
    """out = α ⊙ g   (P,)."""
    if alpha.shape[0] == 1:
        a = alpha[0]
        for i in range(g.shape[0]):
            out[i] = a * g[i]
    else:
        for i in range(g.shape[0]):
            out[i] = alpha[i] * g[i]


@njit(cache=True, _nrt=False)
def sub_then_scale(g, hv, alpha, v):
    """g ← g − H v, then the next v = α ⊙ g, in one pass   (P,)."""
    if alpha.shape[0] == 1:
        a = alpha[0]
        for i in range(g.shape[0]):
            gi = g[i] - hv[i]
            g[i] = gi
            v[i] = a * gi
    else:
        for i in range(g.shape[0]):
            gi = g[i] - hv[i]
            g[i] = gi
            v[i] = alpha[i] * gi


@njit(inline="always", _nrt=False)
def iterate(theta, TH, k):
    """θ_k: theta itself for k = 0 (not copied into TH[0]), else TH[k]."""
    return theta if k == 0 else TH[k]


@njit(cache=True, _nrt=False)
def task_meta_grad(theta, xs, ys, xq, yq, inner, geom, ws, r, t):
    """One task, xs (K·D,), ys (K·O,), xq (Q·D,), yq (Q·O,): returns L_Q(θ_s) and writes
    the task's rows g = ws.G[t] (P,) = dL_Q/dθ and ga = ws.GA[t] (PA,) = dL_Q/dα if
    inner.ga_mode > 0 (1: scalar α, summed; 2: per-parameter α), on the scratch of thread
    row r: TH (s+1, P) iterates (row 0 unused: θ_0 = theta), GS (≥s, P) support gradients,
    CA (s+1, 5, ·) caches (Z, A, S, DZ, DH), RB (4, ·) R-pass buffers, SC (2, P) (α ⊙ g,
    H v) — see alloc_workspace."""
    alpha, s, first_order, ga_mode = inner.alpha, inner.s, inner.first_order, inner.ga_mode
    TH, GS, CA, Rb, g, ga = ws.TH[r], ws.GS[r], ws.CA[r], ws.RB[r], ws.G[t], ws.GA[t]
    L, P, O = geom.sizes.shape[0] - 1, theta.shape[0], geom.sizes[-1]
    K, Q = ys.shape[0] // O, yq.shape[0] // O
    v, hv = ws.SC[r, 0], ws.SC[r, 1]
    for k in range(s):                                         # inner loop (θ_0 = theta)
        support_step(iterate(theta, TH, k), TH[k + 1], GS[k], xs, ys, K, alpha, geom, CA[k])
    C, th_s = CA[s], iterate(theta, TH, s)                     # g = ∇L_Q(θ_s)
    forward(th_s, xq, Q, geom, C)
    loss = loss_and_dyhat(C[0], C[1], C[3], Q * geom.coff[L - 1], yq, Q, O, geom.loss_id)
    backward(th_s, xq, Q, geom, C, g)
    ga[:] = 0.0
    if not first_order:
        scale_into(v, alpha, g)                                # v = α ⊙ g
    for k in range(s - 1, -1, -1):                             # reverse pass
        if ga_mode == 1:
            acc = 0.0
            for i in range(P):
                acc += GS[k, i] * g[i]
            ga[0] -= acc                                       # −∇L_S(θ_k) · g
        elif ga_mode == 2:
            for i in range(P):
                ga[i] -= GS[k, i] * g[i]                       # −∇L_S(θ_k) ⊙ g
        if not first_order:
            rpass(iterate(theta, TH, k), v, xs, K, geom, CA[k], Rb, hv)
            if k > 0:
                sub_then_scale(g, hv, alpha, v)                # g ← g − H v, v = α ⊙ g
            else:
                for i in range(P):
                    g[i] -= hv[i]                              # g ← g − H_S(θ_k)(α ⊙ g)
    return loss


def alloc_workspace(T, P, s, K, Q, Hsum, PA):
    """Every buffer of a ``batch_meta_grad`` call (NumPy, called from Python once per shape).
    Per thread (R = numba.config.NUMBA_NUM_THREADS rows, indexed by numba.get_thread_id()):
    TH (R, s+1, P) iterates, GS (R, max(s,1), P) support gradients, CA (R, s+1, 5,
    max(K,Q)·Hsum) caches, RB (R, 4, K·Hsum) R-pass buffers, SC (R, 2, P) scratch.
    Per task: G (T, P) and GA (T, PA) gradients, losses (T,).  SU (2, P): the prefix
    worker's running sums of G and GA rows (``worker_meta_grad``).  CL (3,) int64: the
    task counters of ``next_task``.  Returned as a Workspace (bundles.py) of these ten.
    Reused across calls: a fresh 5 MB allocation per call cost ~2 ms of page faults."""
    R = numba.config.NUMBA_NUM_THREADS
    return Workspace(np.empty((R, s + 1, P)), np.empty((R, max(s, 1), P)),
                     np.empty((R, s + 1, 5, max(K, Q) * Hsum)), np.empty((R, 4, K * Hsum)),
                     np.empty((R, 2, P)), np.empty((T, P)), np.empty((T, PA)), np.empty(T),
                     np.empty((2, P)), np.zeros(3, np.int64))


# ---- handing out the tasks -------------------------------------------------------------
# Workers take tasks as they ask for them, not from fixed ranges: when the host slows one
# core down (another guest, an interrupt), the other core takes more of the batch. The
# prefix worker (w = W − 1) takes tasks from the front, 0, 1, 2, … in order, and adds each
# row to the running sum Σ = 0 + g_0 + g_1 + … as soon as it has it; the others take them
# from the back, T−1, T−2, …; after the parallel region the calling thread adds the rows
# the prefix worker did not have, F … T−1, in order. So Σ is always 0 + g_0 + … + g_{T−1},
# summed in this order whoever computed which row: the same bits for any W and any timing.
# The counters CL (3,): CL[0] tasks handed out, CL[1] of them from the back, CL[2] = F.


@njit(cache=True, _nrt=False)
def start_claims(CL):
    """Reset the task counters before a parallel region."""
    CL[0] = 0
    CL[1] = 0
    CL[2] = 0


@njit(cache=True, _nrt=False)
def next_task(CL, T, prefix, taken):
    """The next task for a worker, or −1 when all T are handed out. ``taken``: how many
    tasks this (prefix) worker has had. Every call that gets a ticket CL[0] < T gets a
    task; F front tickets and T − F back ones give the tasks [0, F) and [F, T) once each."""
    if fetch_add(CL, 0, 1) >= T:
        return -1
    if prefix:
        return taken
    return T - 1 - fetch_add(CL, 1, 1)


@njit(cache=True, _nrt=False)
def add_to_sum(total, row, first):
    """total = row (first) else total += row: the running sum 0 + row_0 + row_1 + … (the
    first term written as 0.0 + row, the bits of mean_rows' sum from zeros)."""
    if first:
        for i in range(total.shape[0]):
            total[i] = 0.0 + row[i]
    else:
        for i in range(total.shape[0]):
            total[i] += row[i]


@njit(cache=True, _nrt=False)
def worker_meta_grad(w, W, r, theta, xs, ys, xq, yq, inner, geom, ws):
    """Worker w of ``batch_meta_grad`` on thread scratch r: the rows of G, GA, losses of
    the tasks ``next_task`` gives it; the prefix worker (w = W − 1) also keeps the
    running sums SU[0] = Σ_{t<F} G[t], SU[1, :PA] = Σ_{t<F} GA[t] and stores F in CL[2]."""
    G, GA, CL = ws.G, ws.GA, ws.CL
    total, total_a = ws.SU[0], ws.SU[1, :GA.shape[1]]
    prefix, F = w == W - 1, 0
    t = next_task(CL, xs.shape[0], prefix, F)
    while t >= 0:
        ws.losses[t] = task_meta_grad(theta, xs[t], ys[t], xq[t], yq[t], inner, geom, ws,
                                      r, t)
        if prefix:
            add_to_sum(total, G[t], t == 0)
            add_to_sum(total_a, GA[t], t == 0)
            F += 1
        t = next_task(CL, xs.shape[0], prefix, F)
    if prefix:
        CL[2] = F


@njit(cache=True)
def finish_mean(ws):
    """(Σ_t losses[t] / T, (SU[0] + G[F] + … + G[T−1]) / T, the same for GA from
    SU[1, :PA]), F = CL[2]: the rows after the prefix added in order, so the bits of
    ``mean_rows`` (F = 0: the sums unused).  Returns fresh arrays."""
    F, losses, G, GA = ws.CL[2], ws.losses, ws.G, ws.GA
    total, total_a = ws.SU[0], ws.SU[1, :GA.shape[1]]
    T = G.shape[0]
    loss = 0.0
    for t in range(T):
        loss += losses[t]
    g, ga = total.copy(), total_a.copy()
    for t in range(F, T):
        add_to_sum(g, G[t], t == 0)
        add_to_sum(ga, GA[t], t == 0)
    for i in range(g.shape[0]):
        g[i] /= T
    for i in range(ga.shape[0]):
        ga[i] /= T
    return loss / T, g, ga


@njit(cache=True, parallel=True)
def batch_meta_grad(theta, xs, ys, xq, yq, inner, geom, ws, W):
    """(meta_loss, ∇_θ (P,), ∇_α (PA,)) averaged over T tasks; xs (T, K·D), ys (T, K·O),
    xq (T, Q·D), yq (T, Q·O); inner = Inner(alpha, s, first_order, ga_mode), alpha (1,)
    one scalar α or (P,) one per parameter; geom = mlp.kernelset.geometry(model);
    ws = alloc_workspace(T, P, s, K, Q, Hsum, PA); W = min(numba.get_num_threads(), T)
    workers (``next_task``; any W ≥ 1 gives the same bits).  One parallel region; the
    rows are summed in the order t = 0 … T−1 (the prefix worker's part as it goes)."""
    start_claims(ws.CL)
    for w in prange(W):
        worker_meta_grad(w, W, numba.get_thread_id(), theta, xs, ys, xq, yq, inner, geom, ws)
    return finish_mean(ws)


@njit(cache=True)
def mean_rows(losses, G, GA):
    """(Σ_t losses[t] / T, Σ_t G[t] / T, Σ_t GA[t] / T), summed in the fixed order
    t = 0 … T−1 (the NumPy reference's order). A plain (not parallel) function: inside a
    ``parallel=True`` one every array expression would become a parallel region."""
    T = G.shape[0]
    loss, g, ga = 0.0, np.zeros(G.shape[1]), np.zeros(GA.shape[1])
    for t in range(T):
        loss += losses[t]
        for i in range(G.shape[1]):
            g[i] += G[t, i]
        for i in range(GA.shape[1]):
            ga[i] += GA[t, i]
    for i in range(G.shape[1]):
        g[i] /= T
    for i in range(GA.shape[1]):
        ga[i] /= T
    return loss / T, g, ga


@njit(cache=True, parallel=True)
def batch_adapt(theta, xs, ys, xq, yq, inner, want_curve, geom, ws, out, curve):
    """Adapt T tasks with inner.alpha for inner.s steps: out (T, P) gets θ_s per task and,
    when want_curve, curve (T, s+1) gets curve[t, k] = L_Q,t(θ_k) (query loss after k
    inner steps).  ws = alloc_workspace(T, P, 1, K, Q, Hsum, 1) (only its GS and CA are
    used)."""
    alpha, s, O = inner.alpha, inner.s, geom.sizes[-1]
    T, L = xs.shape[0], geom.sizes.shape[0] - 1
    K, Q = ys.shape[1] // O, yq.shape[1] // O
    GS, CA = ws.GS, ws.CA
    for t in prange(T):
        r = numba.get_thread_id()                              # this thread's scratch
        th, C, zq = out[t], CA[r, 0], Q * geom.coff[L - 1]
        for i in range(theta.shape[0]):
            th[i] = theta[i]                                   # θ_0 = θ
        for k in range(s + 1):
            if want_curve:
                forward(th, xq[t], Q, geom, C)
                curve[t, k] = loss_value(C[0], zq, yq[t], Q, O, geom.loss_id)
            if k < s:
                support_step(th, th, GS[r, 0], xs[t], ys[t], K, alpha, geom, C)
