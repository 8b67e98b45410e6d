"""MAML on the batch-norm classification MLP: one task's meta-gradient with a factored first
layer, and the drivers over T tasks (prange).

Dimension legend: T tasks, K support points, Q query points, D inputs, H1 = sizes[1],
Pr = P − D·H1 (θ without W1), s = inner_steps, Hsum = Σ_{l≥1} sizes[l], R threads.

The maths is mamlnp/meta/maml.py's (scalar α):

    θ_{k+1} = θ_k − α ∇L_S(θ_k);   g ← ∇L_Q(θ_s);   for k = s−1 … 0:  g ← g − H_S(θ_k)(α g)

with the first layer never formed. Every W1 that occurs is W1 plus a product with x_S or
x_Q in front (bn_mlp_kernels.py):

    W1^(k) = W1 + x_Sᵀ Cm_k,          Cm_{k+1} = Cm_k − α dz_1(support pass k)      (K, H1)
    g_W1   = x_Qᵀ Eq + x_Sᵀ Es,       Eq = dz_1(query pass at θ_s),  Es −= Rdz_1 per HVP
    x W1^(k)     = x W1 + (x x_Sᵀ) Cm_k                    (x W1 from one GEMM over all tasks)
    x_S V_W1     = α (x_S x_Qᵀ Eq + x_S x_Sᵀ Es)           (the HVP's direction, v = α g)

so a task needs x_S W1, x_Q W1 (from the caller's GEMM over all T tasks' rows), the Gram
matrices G_SS = x_S x_Sᵀ (K, K) and G_QS = x_Q x_Sᵀ (Q, K), and gives back the rest of its
gradient (Pr,) and Eq, Es; the caller forms ∇_{W1} = (1/T) [X_Q; X_S]ᵀ [Eq; Es], one GEMM.

Bundles: ``Data`` (the batch, x W1 products, θ's rest), ``BNGeometry`` (bn_mlp_kernels),
``Workspace`` (``alloc_workspace``). Each task writes its own rows (G, EQ, ES, losses);
scratch belongs to the thread running the task; ``mean_rows`` sums the rows in the fixed
order t = 0 … T−1 afterwards: the same bits for any number of threads.

Reference: mamlnp/meta/maml.py (``task_meta_gradient``, ``adapt_batch_numpy``,
``adapt_curve_numpy``) and mamlnp/run/classify.py (``accuracy_curve_numpy``); tests:
tests/test_classify_kernels.py, tests/test_batchnorm_meta.py.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from ..common.linalg import gemm_st
from ..common.atomics import fetch_add
from ..mlp.mlp_kernels import loss_value
from .bn_kernels import Cache, RCache
from .bn_mlp_kernels import Direction, forward, loss_and_grad, r_backward, r_forward
from .first_layer import csc_t_rows, csr_rows, mean_rows_into, share
from ..kernelset import CURVE_ACCURACY, CURVE_LOSS, CURVE_NONE  # batch_adapt's kind



class Data(NamedTuple):
    """One call's batch: flat rows per task, the first layer's products, θ without W1."""
    xs: np.ndarray           # (T, K·D) support inputs
    ys: np.ndarray           # (T, K·O) support targets
    xq: np.ndarray           # (T, Q·D) query inputs
    yq: np.ndarray           # (T, Q·O) query targets
    zs: np.ndarray           # (T, K·H1) x_S W1
    zq: np.ndarray           # (T, Q·H1) x_Q W1
    rest: np.ndarray         # (Pr,) θ[D·H1:]


class Inputs(NamedTuple):
    """The first layer's side of a call: X = [X_S; X_Q] (M = T(K+Q) rows) as CSR and CSC
    (first_layer.py) when ``sparse``, W1, and Z = X W1 (M, H1) (ws.Z)."""
    sparse: bool
    rp: np.ndarray           # (M+1,) int64 CSR row starts
    ci: np.ndarray           # (nnz,) int64 column of each entry
    cv: np.ndarray           # (nnz,) its value
    cp: np.ndarray           # (D+1,) int64 CSC column starts
    ri: np.ndarray           # (nnz,) int64 row of each entry
    rv: np.ndarray           # (nnz,) its value
    W1: np.ndarray           # (D, H1) θ's first weight matrix (a view)
    Z: np.ndarray            # (M, H1) X W1 (written here when sparse)


class Workspace(NamedTuple):
    """Scratch and per-task outputs of a driver call (``alloc_workspace``)."""
    TH: np.ndarray           # (R, s+1, Pr) the iterates' rest (row 0 unused: θ's own rest)
    CM: np.ndarray           # (R, s+1, K·H1) Cm_k: W1^(k) = W1 + x_Sᵀ Cm_k
    CA: np.ndarray           # (R, s+1, 6, max(K,Q)·Hsum) caches XH A S DZ DY DH of each pass
    CR: np.ndarray           # (R, s+1, Hsum) their s = 1/√(σ² + ε) (Cache.SN)
    RC: np.ndarray           # (R, 6, K·Hsum) the R-pass: RXH RY RH RDY RDZ RDH
    RQ: np.ndarray           # (R, Hsum) the R-pass's q
    SC: np.ndarray           # (R, 3, Pr) g_S, v = α g, H v
    VE: np.ndarray           # (R, (Q+K)·H1) α Eq, α Es
    GR: np.ndarray           # (R, K·K + Q·K) x_S x_Sᵀ, x_Q x_Sᵀ
    PK: np.ndarray           # (R, K·Q) scratch of the factored direction (Direction)
    G: np.ndarray            # (T, Pr) per task: meta-gradient without W1
    EQ: np.ndarray           # (T, Q·H1) per task: Eq (a view of E)
    ES: np.ndarray           # (T, K·H1) per task: Es (a view of E)
    losses: np.ndarray       # (T,) per task: L_Q(θ_s)
    E: np.ndarray            # (T·K + T·Q, H1) [ES; EQ] stacked, the rows of X = [X_S; X_Q]
    Z: np.ndarray            # (T·K + T·Q, H1) X W1, stacked the same way
    CL: np.ndarray           # (1,) int64: the tasks handed out so far (``fetch_add``)


def alloc_workspace(T, Pr, s, K, Q, Hsum, H1):
    """Buffers of one driver call. Per thread (R = NUMBA_NUM_THREADS, row numba.get_thread_id()):
    TH (R, s+1, Pr) iterates' rest, CM (R, s+1, K·H1) the Cm_k, CA (R, s+1, 6, max(K,Q)·Hsum)
    caches (XH, A, S, DZ, DY, DH; pass k, query pass s), CR (R, s+1, Hsum) their 1/√(σ²+ε),
    RC (R, 6, K·Hsum), RQ (R, Hsum) the R-pass, SC (R, 3, Pr) scratch (g_S, v, H v),
    VE (R, (Q+K)·H1) α Eq, α Es, GR (R, K·K + Q·K) the Gram matrices.
    Per task: G (T, Pr), EQ (T, Q·H1), ES (T, K·H1), losses (T,); E, Z (T(K+Q), H1)."""
    R, N = numba.config.NUMBA_NUM_THREADS, max(K, Q)
    E = np.empty((T * (K + Q), H1))
    return Workspace(np.empty((R, s + 1, Pr)), np.empty((R, s + 1, K * H1)),
                     np.empty((R, s + 1, 6, N * Hsum)), np.empty((R, s + 1, Hsum)),
                     np.empty((R, 6, K * Hsum)), np.empty((R, Hsum)), np.empty((R, 3, Pr)),
                     np.empty((R, (Q + K) * H1)), np.empty((R, K * K + Q * K)),
                     np.empty((R, K * Q)),
                     np.empty((T, Pr)), E[T * K:].reshape(T, Q * H1),
                     E[:T * K].reshape(T, K * H1), np.empty(T), E,
                     np.empty((T * (K + Q), H1)), np.zeros(1, np.int64))


@njit(cache=True)
def cache_of(ws, r, k):
    """The Cache bundle of pass k on thread scratch r."""
    C = ws.CA[r, k]
    return Cache(C[0], C[1], C[2], C[3], C[4], C[5], ws.CR[r, k])


@njit(cache=True)
def rcache_of(ws, r):
    """The RCache bundle of thread scratch r (RDY, RDZ, RDH share nothing with RXH, RY, RH)."""
    C = ws.RC[r]
    return RCache(C[0], C[1], C[2], C[3], C[4], C[5], ws.RQ[r])


@njit(cache=True, _nrt=False)
def first_layer(c, z0, G, go, M, K, H1, cm, use_cm):
    """c.XH[: M·H1] = z0 (x W1, (M, H1)) + G (M, K at G[go:]) Cm (K, H1): x W1^(k)."""
    xh = c.XH
    for i in range(M * H1):
        xh[i] = z0[i]
    if use_cm:
        gemm_st(G, go, False, cm, 0, False, xh, 0, M, K, H1, 1)


@njit(cache=True, _nrt=False)
def copy_into(out, x):
    """out = x[:len(out)] by a loop (a slice assignment may copy through a temporary)."""
    for i in range(out.shape[0]):
        out[i] = x[i]


@njit(cache=True, _nrt=False)
def axpy_into(out, x, a, y):
    """out = x + a·y   (the SGD step θ_{k+1} = θ_k − α g with a = −α)."""
    for i in range(out.shape[0]):
        out[i] = x[i] + a * y[i]


@njit(inline="always", _nrt=False)
def iterate(rest, TH, k):
    """The rest of θ_k: θ's own rest for k = 0 (not copied into TH[0]), else TH[k]."""
    return rest if k == 0 else TH[k]


@njit(cache=True)
def inner_loop(d, t, geom, ws, r, alpha, s, factored):
    """s support steps of task t from θ: TH[r, k] (rest), CM[r, k] (Cm_k) for k ≤ s, caches
    of the support passes k < s in CA[r, k]; the Gram matrices in GR[r]. ``factored`` (s = 1
    only): TH[r, 1] gets its b, γ, β blocks only, its W_l being W_l − α h_Sᵀ dz_S (Direction)."""
    K, Q, H1 = d.ys.shape[1] // geom.sizes[-1], d.yq.shape[1] // geom.sizes[-1], geom.sizes[1]
    D, GR, gs = geom.sizes[0], ws.GR[r], ws.SC[r, 0]
    gemm_st(d.xs[t], 0, False, d.xs[t], 0, True, GR, 0, K, D, K, 0)          # x_S x_Sᵀ
    gemm_st(d.xq[t], 0, False, d.xs[t], 0, True, GR, K * K, Q, D, K, 0)      # x_Q x_Sᵀ
    TH, CM = ws.TH[r], ws.CM[r]
    CM[0, :] = 0.0
    plain = Direction(False, cache_of(ws, r, 0), K, 0.0, ws.PK[r])
    for k in range(s):
        c, th = cache_of(ws, r, k), iterate(d.rest, TH, k)
        first_layer(c, d.zs[t], GR, 0, K, K, H1, CM[k], k > 0)
        forward(geom, th, th, K, c, plain)
        loss_and_grad(geom, th, th, d.ys[t], K, c, gs, plain)
        if s == 1 and factored:                          # θ_1's W_l stay factored (Direction)
            axpy_non_w(geom, TH[1], th, -alpha, gs)
        else:
            axpy_into(TH[k + 1], th, -alpha, gs)                         # rest − α g
        axpy_into(CM[k + 1], CM[k], -alpha, c.DZ[:K * H1])               # Cm − α dz_1


@njit(cache=True, _nrt=False)
def axpy_non_w(geom, out, x, a, y):
    """out = x + a·y on the b, γ, β blocks only (θ_1's W_l blocks are left factored)."""
    L, P = geom.sizes.shape[0] - 1, x.shape[0]
    for l in range(L):
        hi = geom.woff[l + 1] if l + 1 < L else P
        for i in range(geom.boff[l], hi):
            out[i] = x[i] + a * y[i]


@njit(cache=True, _nrt=False)
def scale_direction(geom, v, gr, alpha, factored):
    """v = α g (Pr,); with ``factored`` (Direction) only the b, γ, β blocks: the W_l blocks
    of v are then never read."""
    L, P = geom.sizes.shape[0] - 1, gr.shape[0]
    if not factored:
        for i in range(P):
            v[i] = alpha * gr[i]
        return
    for l in range(L):
        hi = geom.woff[l + 1] if l + 1 < L else P
        for i in range(geom.boff[l], hi):
            v[i] = alpha * gr[i]


@njit(cache=True)
def task_meta_grad(d, t, geom, ws, r, alpha, s, first_order):
    """Task t's L_Q(θ_s); G[t] (Pr,) = its gradient but W1, EQ[t], ES[t] the W1 factors."""
    K, Q, H1 = d.ys.shape[1] // geom.sizes[-1], d.yq.shape[1] // geom.sizes[-1], geom.sizes[1]
    inner_loop(d, t, geom, ws, r, alpha, s, True)
    gr, eq, es, GR = ws.G[t], ws.EQ[t], ws.ES[t], ws.GR[r]
    c = cq = cache_of(ws, r, s)                                          # query pass at θ_s
    first_layer(c, d.zq[t], GR, K * K, Q, K, H1, ws.CM[r, s], s > 0)
    th = iterate(d.rest, ws.TH[r], s)
    dw = Direction(s == 1, cache_of(ws, r, 0), K, -alpha, ws.PK[r])     # W_l − α h_Sᵀ dz_S
    thw = d.rest if s == 1 else th
    forward(geom, th, thw, Q, c, dw)
    loss = loss_and_grad(geom, th, thw, d.yq[t], Q, c, gr, dw)
    copy_into(eq, c.DZ)                                                  # Eq = dz_1
    es[:] = 0.0
    if first_order:
        return loss
    v, hv, ve, rc = ws.SC[r, 1], ws.SC[r, 2], ws.VE[r], rcache_of(ws, r)
    for k in range(s - 1, -1, -1):                                       # reverse pass
        scale_direction(geom, v, gr, alpha, k == s - 1)                     # v = α g
        for i in range(Q * H1):
            ve[i] = alpha * eq[i]
        for i in range(K * H1):
            ve[Q * H1 + i] = alpha * es[i]
        gemm_st(GR, K * K, True, ve, 0, False, rc.RXH, 0, K, Q, H1, 0)  # x_S x_Qᵀ αEq
        gemm_st(GR, 0, False, ve, Q * H1, False, rc.RXH, 0, K, K, H1, 1)  # + x_S x_Sᵀ αEs
        c = cache_of(ws, r, k)
        th = iterate(d.rest, ws.TH[r], k)
        dv = Direction(k == s - 1, cq, Q, alpha, ws.PK[r])         # g = ∇L_Q(θ_s) still?
        r_forward(geom, th, v, K, c, rc, dv)
        r_backward(geom, th, v, K, c, rc, dv, hv)
        for i in range(gr.shape[0]):
            gr[i] -= hv[i]                                               # g − H v
        for i in range(K * H1):
            es[i] -= rc.RDZ[i]                                           # W1 block: x_Sᵀ Rdz_1
    return loss


@njit(cache=True)
def task_rows(X, d, t, K, Q, T):
    """Task t's x W1 rows into Z (its K support rows, then its Q query rows) when X holds
    the inputs' CSR (X.sparse); with dense inputs the caller made Z by BLAS beforehand."""
    if X.sparse:
        csr_rows(X.rp, X.ci, X.cv, X.W1, X.Z, t * K, t * K + K)
        csr_rows(X.rp, X.ci, X.cv, X.W1, X.Z, T * K + t * Q, T * K + t * Q + Q)


@njit(cache=True, parallel=True)
def batch_meta_grad(d, geom, ws, X, alpha, s, first_order, W, grad):
    """The meta-gradient of the T tasks of d into grad (P,); returns the meta-loss.
    One parallel region: W workers take tasks as they ask (``fetch_add`` on a counter:
    a core the host slows takes fewer), each writing only its task's rows (Z, G, EQ, ES,
    losses); then a second parallel region sums the rows in task order, the W workers
    splitting the OUTPUT entries (each entry's sum is the same whichever worker makes it: the
    same bits for any W): ∇W1 = Xᵀ E / T (the query rows only for FO), ∇rest = Σ_t G[t] / T."""
    T = d.xs.shape[0]
    K, Q = d.ys.shape[1] // geom.sizes[-1], d.yq.shape[1] // geom.sizes[-1]
    losses, CL = ws.losses, ws.CL
    CL[0] = 0
    for w in prange(W):
        r = numba.get_thread_id()
        t = fetch_add(CL, 0, 1)
        while t < T:
            task_rows(X, d, t, K, Q, T)
            losses[t] = task_meta_grad(d, t, geom, ws, r, alpha, s, first_order)
            t = fetch_add(CL, 0, 1)
    D, H1 = geom.sizes[0], geom.sizes[1]
    row0, Pr = T * K if first_order or s == 0 else 0, ws.G.shape[1]
    for w in prange(W):                  # the sums, split by output entries over the workers
        if X.sparse:
            d0, d1 = share(D, W, w)
            csc_t_rows(X.cp, X.ri, X.rv, ws.E, row0, T, grad[:D * H1], d0, d1)
        i0, i1 = share(Pr, W, w)
        mean_rows_into(ws.G, grad[D * H1:], i0, i1)
    loss = 0.0
    for t in range(T):
        loss += losses[t]
    return loss / T




@njit(cache=True, _nrt=False)
def accuracy_value(Z, off, y, N, O):
    """Fraction of the N rows of ŷ = Z[off:off+N·O] (N, O) whose argmax is y's argmax; the
    argmax as np.argmax takes it: the first largest entry, a NaN counting as the largest."""
    hits = 0
    for n in range(N):
        r, q = off + n * O, n * O
        bz, by = 0, 0
        for o in range(O):
            v = Z[r + o]
            if v != v:                                                  # NaN: np.argmax's pick
                bz = o
                break
            if v > Z[r + bz]:
                bz = o
        for o in range(1, O):
            if y[q + o] > y[q + by]:
                by = o
        hits += bz == by
    return hits / N


@njit(cache=True, parallel=True)
def batch_adapt(d, geom, ws, X, alpha, s, curve_kind, out_rest, out_cm, curve):
    """Adapt T tasks: out_rest (T, Pr) the rest of θ_s, out_cm (T, K·H1) its Cm_s
    (W1^(s) = W1 + x_Sᵀ Cm_s); curve (T, s+1) the query losses L_Q(θ_k) (curve_kind
    CURVE_LOSS) or query accuracies (CURVE_ACCURACY), nothing for CURVE_NONE."""
    K, Q, H1, L = (d.ys.shape[1] // geom.sizes[-1], d.yq.shape[1] // geom.sizes[-1], geom.sizes[1],
                   geom.sizes.shape[0] - 1)
    for t in prange(d.xs.shape[0]):
        r = numba.get_thread_id()
        task_rows(X, d, t, K, Q, d.xs.shape[0])
        inner_loop(d, t, geom, ws, r, alpha, s, False)
        copy_into(out_rest[t], iterate(d.rest, ws.TH[r], s))
        copy_into(out_cm[t], ws.CM[r, s])
        if curve_kind != CURVE_NONE:
            c = cache_of(ws, r, s)
            plain = Direction(False, c, K, 0.0, ws.PK[r])
            for k in range(s + 1):
                first_layer(c, d.zq[t], ws.GR[r], K * K, Q, K, H1, ws.CM[r, k], k > 0)
                th = iterate(d.rest, ws.TH[r], k)
                forward(geom, th, th, Q, c, plain)
                off = Q * geom.coff[L - 1]
                if curve_kind == CURVE_LOSS:
                    curve[t, k] = loss_value(c.XH, off, d.yq[t], Q, geom.sizes[L], geom.lid)
                else:
                    curve[t, k] = accuracy_value(c.XH, off, d.yq[t], Q, geom.sizes[L])
