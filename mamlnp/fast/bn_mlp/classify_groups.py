"""MAML at s = 1 on the batch-norm classification MLP, its tasks in groups: every product
with θ's own weights runs once over a group's stacked rows.

Dimension legend: T tasks, n tasks of a group (≤ GMAX), K support and Q query points per
task, NS = n·K and NQ = n·Q stacked rows of a group, D inputs, H1 = sizes[1], I, O a
layer's fan-in and fan-out, Pr = P − D·H1, Pc the b, γ, β entries (``Compact``),
Hsum = Σ_{l≥1} sizes[l], R threads.

At s = 1 every weight matrix a task meets is θ's own W_l, or W_l plus a product of the
task's own factors (classify_kernels.py; bn_mlp_kernels.Direction):

    support pass, R-pass at θ:   h W_l                               the same W_l for all tasks
    query pass at θ_1:           h W_l' = h W_l − α (h h_Sᵀ) dz_S    (W_l' = W_l − α h_Sᵀ dz_S)
    its backward:                dz W_l'ᵀ = dz W_lᵀ − α (dz dz_Sᵀ) h_S
    R-forward, v = α g_Q:        + h V_l = α (h h_Qᵀ) dz_Q
    R-backward:                  + dz V_lᵀ = α (dz dz_Qᵀ) h_Q

So the products with W_l are ONE GEMM over the stacked rows of a group's tasks (40 rows
for 8 tasks of 5-way 1-shot, where the per-task kernel makes 8 products of 5 rows:
OpenBLAS runs 40-row products at about 3× the rate), and the corrections are small
(N × K) products per task. The W_l blocks of the meta-gradient are sums over tasks and
points, so they are one GEMM per group too:

    Σ_{t∈group} [g_Q − H_S v]_{W_l} = H_Qᵀ DZ_Q − H_Sᵀ RDZ − RH_Sᵀ DZ_S     (I, NQ)(NQ, O), …

The batch norms, the losses and the b, γ, β blocks (a compact vector of Pc entries) are
per task. The first layer is as in classify_kernels.py: rows of x W1 from the inputs' CSR,
x W1' = x W1 + (x x_Sᵀ) Cm with Cm = −α dz_{S,1}, and the factors Eq, Es of ∇W1.

Groups depend on T alone (``group_range``) and are handed to the threads on request; a
group's row G[i] (Pr,) is summed over its tasks in order, the rows over i in order: the
same bits for any thread count. The products themselves, with W_l and the factored
corrections, are in group_products.py.

NumPy reference: mamlnp/meta/grouped.py, one function per pass under the same name
(grouped.py:support_forward, support_backward, query_forward, query_backward,
r_forward_group, r_backward_group, small_into, group_task; the driver group_meta_grad;
grouped_parts.py:group_inputs, group_range). Tests: tests/test_grouped_reference.py
(each pass alone against its NumPy pass, group_task, the driver),
tests/test_classify_groups.py.
"""
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from ..common.atomics import fetch_add
from ..mlp.mlp_kernels import add_row, loss_and_dyhat, r_loss, sum_rows
from .bn_kernels import Cache, RCache, bn_backward, bn_forward, bn_rbackward, bn_rforward
from .first_layer import (NCH, group_grams, group_rows, mean_rows_into, share, w1_grad_dense,
                          w1_grad_sparse)
from .group_products import Ctx, Lowrank, gram_acc, lowrank_acc, product, product_add

GMAX = 8                       # tasks per group at most (groups depend on T only)


class Compact(NamedTuple):
    """The b, γ, β entries of θ's rest in a compact vector of n entries."""
    boff: np.ndarray         # (L,) int64 b_l
    goff: np.ndarray         # (L,) int64 γ_l (−1 for the output layer)
    eoff: np.ndarray         # (L,) int64 β_l (−1 for the output layer)
    src: np.ndarray          # (n,) int64 where each entry sits in rest = θ[D·H1:]


class Targets(NamedTuple):
    """A call's targets and θ without W1 (the inputs are first_layer.Rows)."""
    ys: np.ndarray           # (T, K·O) support targets
    yq: np.ndarray           # (T, Q·O) query targets
    rest: np.ndarray         # (Pr,) θ[D·H1:]


class GroupWorkspace(NamedTuple):
    """Per thread r (rows of R = NUMBA_NUM_THREADS): a group's caches and small vectors;
    per group i: G[i]; per task: the rows of E = [ES; EQ], losses; per row: its CSR."""
    CS: np.ndarray           # (R, 6, GMAX·K·Hsum) support pass XH A S DZ DY DH, stacked rows
    CSR: np.ndarray          # (R, GMAX·Hsum) its s = 1/√(σ² + ε) (Cache.SN), task j at j·Hsum
    CQ: np.ndarray           # (R, 6, GMAX·Q·Hsum) query pass
    CQR: np.ndarray          # (R, GMAX·Hsum)
    RC: np.ndarray           # (R, 6, GMAX·K·Hsum) R-pass RXH RY RH RDY RDZ RDH
    RQ: np.ndarray           # (R, GMAX·Hsum) its q
    SM: np.ndarray           # (R, 5, GMAX, Pc) per task: θ_1, g_S, g_Q, v, H v (compact)
    GR: np.ndarray           # (R, GMAX, K·K + Q·K) x_S x_Sᵀ, x_Q x_Sᵀ per task
    GS2: np.ndarray          # (R, GMAX·(K+Q)·GMAX·K) the group's Gram products (dense inputs)
    PK: np.ndarray           # (R, max(K,Q)²) scratch of the small products
    TW: np.ndarray           # (R, max I·O) scratch of a W_l block
    TH0: np.ndarray          # (Pc,) θ's own b, γ, β
    G: np.ndarray            # (ngroups, Pr) per group: Σ_t meta-gradient without W1
    EQ: np.ndarray           # (T, Q·H1) Eq per task (a view of E)
    ES: np.ndarray           # (T, K·H1) Es per task (a view of E)
    losses: np.ndarray       # (T,)
    E: np.ndarray            # (T·K + T·Q, H1) [ES; EQ]
    NZ: np.ndarray           # (T·K + T·Q,) int64 nonzero inputs per row (first_layer.py)
    CI: np.ndarray           # (T·K + T·Q, D) int32 their columns
    CV: np.ndarray           # (T·K + T·Q, D) their values
    CL: np.ndarray           # (1,) int64 groups handed out so far


def ngroups(T):
    """Number of task groups of a call with T tasks."""
    return (T + GMAX - 1) // GMAX


def alloc_group_workspace(T, Pr, Pc, K, Q, Hsum, D, H1, maxio):
    """Buffers of one ``group_meta_grad`` call (shapes in ``GroupWorkspace``)."""
    R, N = numba.config.NUMBA_NUM_THREADS, max(K, Q)
    E = np.empty((T * (K + Q), H1))
    return GroupWorkspace(
        np.empty((R, 6, GMAX * K * Hsum)), np.empty((R, GMAX * Hsum)),
        np.empty((R, 6, GMAX * Q * Hsum)), np.empty((R, GMAX * Hsum)),
        np.empty((R, 6, GMAX * K * Hsum)), np.empty((R, GMAX * Hsum)),
        np.empty((R, 5, GMAX, Pc)), np.empty((R, GMAX, K * K + Q * K)),
        np.empty((R, GMAX * GMAX * (K + Q) * K)), np.empty((R, N * N)),
        np.empty((R, maxio)), np.empty(Pc), np.empty((ngroups(T), Pr)),
        E[T * K:].reshape(T, Q * H1), E[:T * K].reshape(T, K * H1), np.empty(T), E,
        np.empty(T * (K + Q), np.int64), np.empty((T * (K + Q), D), np.int32),
        np.empty((T * (K + Q), D)), np.zeros(1, np.int64))


@njit(cache=True, _nrt=False)
def group_range(T, i):
    """(first task, number of tasks) of group i: T split into ngroups(T) near-equal runs."""
    t0, t1 = share(T, (T + GMAX - 1) // GMAX, i)
    return t0, t1 - t0


@njit(cache=True)
def caches(ws, r):
    """(support Cache, query Cache, RCache) of thread r."""
    S, Q, Rb = ws.CS[r], ws.CQ[r], ws.RC[r]
    return (Cache(S[0], S[1], S[2], S[3], S[4], S[5], ws.CSR[r]),
            Cache(Q[0], Q[1], Q[2], Q[3], Q[4], Q[5], ws.CQR[r]),
            RCache(Rb[0], Rb[1], Rb[2], Rb[3], Rb[4], Rb[5], ws.RQ[r]))


@njit(cache=True, _nrt=False)
def group_inputs(F, geom, ws, r, T, t0, n, K, Q, cs, cq):
    """The first blocks of both passes, cs.XH ← x_S W1 and cq.XH ← x_Q W1 (the group's
    rows, stacked in task order), and the Gram matrices of its tasks (first_layer.py)."""
    D, H1 = geom.sizes[0], geom.sizes[1]
    group_rows(F, D, H1, T, t0, n, K, Q, cs.XH, cq.XH)
    group_grams(F, t0, n, K, Q, D, ws.GS2[r], ws.GR[r])


@njit(cache=True, _nrt=False)
def support_forward(cx, cs):
    """The support pass of the group's tasks at θ: every h W_l one product over NS rows,
    the batch norms per task. cs.XH's first block holds x_S W1 on entry."""
    geom, cp, pinned, rest, th0, alpha = cx.geom, cx.cp, cx.pinned, cx.rest, cx.th0, cx.alpha
    t0, n, K, Q = cx.t0, cx.n, cx.K, cx.Q
    L, NS = geom.sizes.shape[0] - 1, n * K
    Hs = geom.coff[geom.coff.shape[0] - 1] + geom.sizes[-1]
    for l in range(L):
        I, O, zo = geom.sizes[l], geom.sizes[l + 1], NS * geom.coff[l]
        if l > 0:
            product(pinned, cs.A, NS * geom.coff[l - 1], False, rest, geom.woff[l], False,
                    cs.XH, zo, NS, I, O)                                         # h W
        add_row(cs.XH, zo, NS, O, th0, cp.boff[l])                              # + b
        if l < L - 1:
            for j in range(n):
                bn_forward(cs, th0, zo + j * K * O, K, O, cp.goff[l], cp.eoff[l],
                           j * Hs + geom.coff[l], geom.eps, geom.aid)


@njit(cache=True, _nrt=False)
def support_backward(cx, y, cs, GS):
    """Backward of the support losses at θ: dz of every layer in cs.DZ, the b, γ, β
    gradients per task in GS[j] (compact). The W_l gradients are never formed: θ_1's W_l
    stay factored, W_l − α h_Sᵀ dz_S."""
    geom, cp, pinned, rest, th0, alpha = cx.geom, cx.cp, cx.pinned, cx.rest, cx.th0, cx.alpha
    t0, n, K, Q = cx.t0, cx.n, cx.K, cx.Q
    L, NS = geom.sizes.shape[0] - 1, n * K
    Hs = geom.coff[geom.coff.shape[0] - 1] + geom.sizes[-1]
    for j in range(n):
        loss_and_dyhat(cs.XH, cs.A, cs.DZ, NS * geom.coff[L - 1] + j * K * geom.sizes[L], y[t0 + j],
                       K, geom.sizes[L], geom.lid)
    for l in range(L - 1, -1, -1):
        I, O, zo = geom.sizes[l], geom.sizes[l + 1], NS * geom.coff[l]
        for j in range(n):
            if l < L - 1:
                bn_backward(cs, th0, zo + j * K * O, K, O, cp.goff[l], cp.eoff[l],
                            j * Hs + geom.coff[l], GS[j])
            sum_rows(cs.DZ, zo + j * K * O, K, O, GS[j], cp.boff[l])            # db
        if l > 0:
            product(pinned, cs.DZ, zo, False, rest, geom.woff[l], True, cs.DH,
                    NS * geom.coff[l - 1], NS, O, I)                             # dz Wᵀ


@njit(cache=True, _nrt=False)
def query_forward(cx, TH1, cs, cq):
    """The query pass at θ_1 of every task: θ_1's b, γ, β in TH1[j]; its W_l factored
    (h W_l − α (h h_Sᵀ) dz_S); its W1 through Cm = −α dz_{S,1}. cq.XH's first block holds
    x_Q W1 on entry."""
    geom, cp, pinned, rest, th0, alpha = cx.geom, cx.cp, cx.pinned, cx.rest, cx.th0, cx.alpha
    t0, n, K, Q = cx.t0, cx.n, cx.K, cx.Q
    L, NS, NQ = geom.sizes.shape[0] - 1, n * K, n * Q
    Hs = geom.coff[geom.coff.shape[0] - 1] + geom.sizes[-1]
    for l in range(L):
        I, O, zo, zs = geom.sizes[l], geom.sizes[l + 1], NQ * geom.coff[l], NS * geom.coff[l]
        if l > 0:
            ho, hs = NQ * geom.coff[l - 1], NS * geom.coff[l - 1]
            product(pinned, cq.A, ho, False, rest, geom.woff[l], False, cq.XH, zo, NQ, I, O)
        for j in range(n):
            if l == 0:                                          # + (x_Q x_Sᵀ)(−α dz_S,1)
                gram_acc(cx, j, False, -alpha, cs.DZ, j * K * O, O, cq.XH, j * Q * O, 1)
            else:                                               # − α (h h_Sᵀ) dz_S
                lr = Lowrank(cs.A, hs + j * K * I, cs.DZ, zs + j * K * O, K, -alpha)
                lowrank_acc(cq.A, ho + j * Q * I, lr, Q, I, O, cx.PK, cq.XH, zo + j * Q * O)
            add_row(cq.XH, zo + j * Q * O, Q, O, TH1[j], cp.boff[l])
            if l < L - 1:
                bn_forward(cq, TH1[j], zo + j * Q * O, Q, O, cp.goff[l], cp.eoff[l],
                           j * Hs + geom.coff[l], geom.eps, geom.aid)


@njit(cache=True, _nrt=False)
def query_backward(cx, TH1, yq, losses, cs, cq, GQ, Gi):
    """The query losses' gradient at θ_1: returns Σ_j L_Q; the b, γ, β blocks per task
    in GQ[j]; the W_l blocks summed over the group into Gi (one product each); the dz of
    every layer in cq.DZ (its first block: Eq). dh = dz W_lᵀ − α (dz dz_Sᵀ) h_S."""
    geom, cp, pinned, rest, th0, alpha = cx.geom, cx.cp, cx.pinned, cx.rest, cx.th0, cx.alpha
    t0, n, K, Q = cx.t0, cx.n, cx.K, cx.Q
    L, NS, NQ = geom.sizes.shape[0] - 1, n * K, n * Q
    Hs = geom.coff[geom.coff.shape[0] - 1] + geom.sizes[-1]
    for j in range(n):
        losses[t0 + j] = loss_and_dyhat(cq.XH, cq.A, cq.DZ,
                                        NQ * geom.coff[L - 1] + j * Q * geom.sizes[L],
                                        yq[t0 + j], Q, geom.sizes[L], geom.lid)
    for l in range(L - 1, -1, -1):
        I, O, zo, zs = geom.sizes[l], geom.sizes[l + 1], NQ * geom.coff[l], NS * geom.coff[l]
        for j in range(n):
            if l < L - 1:
                bn_backward(cq, TH1[j], zo + j * Q * O, Q, O, cp.goff[l], cp.eoff[l],
                            j * Hs + geom.coff[l], GQ[j])
            sum_rows(cq.DZ, zo + j * Q * O, Q, O, GQ[j], cp.boff[l])            # db
        if l > 0:
            ho, hs = NQ * geom.coff[l - 1], NS * geom.coff[l - 1]
            product(pinned, cq.A, ho, True, cq.DZ, zo, False, Gi, geom.woff[l], I, NQ, O)  # hᵀdz
            product(pinned, cq.DZ, zo, False, rest, geom.woff[l], True, cq.DH, ho, NQ, O, I)
            for j in range(n):                                  # − α (dz dz_Sᵀ) h_S
                lr = Lowrank(cs.DZ, zs + j * K * O, cs.A, hs + j * K * I, K, -alpha)
                lowrank_acc(cq.DZ, zo + j * Q * O, lr, Q, O, I, cx.PK, cq.DH, ho + j * Q * I)


@njit(cache=True, _nrt=False)
def r_forward_group(cx, V, cs, cq, rc):
    """R-forward of the support pass at θ along v = α g_Q of each task: V[j] its b, γ, β
    (compact), its W_l block α h_Qᵀ dz_Q and W1 block α x_Qᵀ Eq factored:
    Rz_l = Rh W_l + α (h_S h_Qᵀ) dz_Q + V_b, Rz_1 = α (x_S x_Qᵀ) Eq + V_b1."""
    geom, cp, pinned, rest, th0, alpha = cx.geom, cx.cp, cx.pinned, cx.rest, cx.th0, cx.alpha
    t0, n, K, Q = cx.t0, cx.n, cx.K, cx.Q
    L, NS, NQ = geom.sizes.shape[0] - 1, n * K, n * Q
    Hs = geom.coff[geom.coff.shape[0] - 1] + geom.sizes[-1]
    for l in range(L):
        I, O, zo, zq = geom.sizes[l], geom.sizes[l + 1], NS * geom.coff[l], NQ * geom.coff[l]
        if l > 0:
            ho, hq = NS * geom.coff[l - 1], NQ * geom.coff[l - 1]
            product(pinned, rc.RH, ho, False, rest, geom.woff[l], False, rc.RXH, zo, NS, I, O)
        for j in range(n):
            if l == 0:
                gram_acc(cx, j, True, alpha, cq.DZ, j * Q * O, O, rc.RXH, j * K * O, 0)
            else:
                lr = Lowrank(cq.A, hq + j * Q * I, cq.DZ, zq + j * Q * O, Q, alpha)
                lowrank_acc(cs.A, ho + j * K * I, lr, K, I, O, cx.PK, rc.RXH, zo + j * K * O)
            add_row(rc.RXH, zo + j * K * O, K, O, V[j], cp.boff[l])
            if l < L - 1:
                bn_rforward(cs, rc, th0, V[j], zo + j * K * O, K, O, cp.goff[l], cp.eoff[l],
                            j * Hs + geom.coff[l])


@njit(cache=True, _nrt=False)
def r_backward_group(cx, V, HV, TW, cs, cq, rc, Gi):
    """R-backward from Rŷ: H v per task, its b, γ, β into HV[j]; its W_l blocks summed
    over the group and taken off Gi (Gi_W −= H_Sᵀ RDZ + RH_Sᵀ DZ_S); Rdz_1 in rc.RDZ's
    first block. Rdh = Rdz W_lᵀ + α (dz_S dz_Qᵀ) h_Q."""
    geom, cp, pinned, rest, th0, alpha = cx.geom, cx.cp, cx.pinned, cx.rest, cx.th0, cx.alpha
    t0, n, K, Q = cx.t0, cx.n, cx.K, cx.Q
    L, NS, NQ = geom.sizes.shape[0] - 1, n * K, n * Q
    Hs = geom.coff[geom.coff.shape[0] - 1] + geom.sizes[-1]
    for j in range(n):
        r_loss(cs.A, rc.RXH, rc.RDZ, NS * geom.coff[L - 1] + j * K * geom.sizes[L], K,
               geom.sizes[L], geom.lid)                                             # R{dŷ}
    for l in range(L - 1, -1, -1):
        I, O, zo, zq = geom.sizes[l], geom.sizes[l + 1], NS * geom.coff[l], NQ * geom.coff[l]
        for j in range(n):
            if l < L - 1:
                bn_rbackward(cs, rc, th0, V[j], zo + j * K * O, K, O, cp.goff[l], cp.eoff[l],
                             j * Hs + geom.coff[l], geom.aid, HV[j])
            sum_rows(rc.RDZ, zo + j * K * O, K, O, HV[j], cp.boff[l])           # Rdb
        if l > 0:
            ho, hq, wo = NS * geom.coff[l - 1], NQ * geom.coff[l - 1], geom.woff[l]
            product(pinned, cs.A, ho, True, rc.RDZ, zo, False, TW, 0, I, NS, O)   # hᵀ Rdz
            product_add(pinned, rc.RH, ho, True, cs.DZ, zo, False, TW, 0, I, NS, O)   # + Rhᵀ dz
            for k in range(I * O):
                Gi[wo + k] -= TW[k]
            product(pinned, rc.RDZ, zo, False, rest, wo, True, rc.RDH, ho, NS, O, I)
            for j in range(n):                                  # + α (dz_S dz_Qᵀ) h_Q
                lr = Lowrank(cq.DZ, zq + j * Q * O, cq.A, hq + j * Q * I, Q, alpha)
                lowrank_acc(cs.DZ, zo + j * K * O, lr, K, O, I, cx.PK, rc.RDH, ho + j * K * I)


@njit(cache=True, _nrt=False)
def small_into(Gi, cp, GQ, HV, n, minus):
    """Gi's b, γ, β entries = Σ_j (GQ[j] − HV[j]) (or Σ_j GQ[j]), tasks j in order."""
    for c in range(cp.src.shape[0]):
        acc = GQ[0, c] - HV[0, c] if minus else GQ[0, c]
        for j in range(1, n):
            acc += GQ[j, c] - HV[j, c] if minus else GQ[j, c]
        Gi[cp.src[c]] = acc


@njit(cache=True)
def group_task(d, F, geom, cp, ws, pinned, alpha, first_order, r, i):
    """Group i on thread r: its tasks' losses, rows of E and Z, and G[i] (the Σ over its
    tasks of the meta-gradient without W1)."""
    T, H1 = d.ys.shape[0], geom.sizes[1]
    K, Q = d.ys.shape[1] // geom.sizes[-1], d.yq.shape[1] // geom.sizes[-1]
    t0, n = group_range(T, i)
    cs, cq, rc = caches(ws, r)
    TH1, GS, GQ, V, HV = ws.SM[r, 0], ws.SM[r, 1], ws.SM[r, 2], ws.SM[r, 3], ws.SM[r, 4]
    Gi, th0, rest = ws.G[i], ws.TH0, d.rest
    group_inputs(F, geom, ws, r, T, t0, n, K, Q, cs, cq)
    cx = Ctx(geom, cp, pinned, rest, th0, alpha, t0, n, K, Q, ws.PK[r], ws.GR[r])
    support_forward(cx, cs)
    support_backward(cx, d.ys, cs, GS)
    for j in range(n):
        for c in range(th0.shape[0]):
            TH1[j, c] = th0[c] - alpha * GS[j, c]                  # θ_1's b, γ, β
    query_forward(cx, TH1, cs, cq)
    query_backward(cx, TH1, d.yq, ws.losses, cs, cq, GQ, Gi)
    e0, s0 = T * K + t0 * Q, t0 * K
    for m in range(n * Q):
        for h in range(H1):
            ws.E[e0 + m, h] = cq.DZ[m * H1 + h]                    # Eq = dz_{Q,1}
    if first_order:
        for m in range(n * K):
            for h in range(H1):
                ws.E[s0 + m, h] = 0.0
        small_into(Gi, cp, GQ, HV, n, False)
        return
    for j in range(n):
        for c in range(th0.shape[0]):
            V[j, c] = alpha * GQ[j, c]                             # v = α g_Q
    r_forward_group(cx, V, cs, cq, rc)
    r_backward_group(cx, V, HV, ws.TW[r], cs, cq, rc, Gi)
    for m in range(n * K):
        for h in range(H1):
            ws.E[s0 + m, h] = -rc.RDZ[m * H1 + h]                  # Es = −Rdz_{S,1}
    small_into(Gi, cp, GQ, HV, n, True)


@njit(cache=True, parallel=True)
def group_meta_grad(d, F, geom, cp, ws, pinned, alpha, first_order, W, grad):
    """The s = 1 meta-gradient of the T tasks of d into grad (P,); returns the meta-loss.
    W workers take the groups as they ask (``fetch_add``); then they split the OUTPUT
    entries of ∇W1 = Xᵀ E / T (the query rows only for FO) and Σ_i G[i] / T, each entry
    summed in the same order whichever worker makes it: the same bits for any W."""
    T = d.ys.shape[0]
    K = d.ys.shape[1] // geom.sizes[-1]
    for c in range(cp.src.shape[0]):
        ws.TH0[c] = d.rest[cp.src[c]]
    NG, CL = ws.G.shape[0], ws.CL
    CL[0] = 0
    for w in prange(W):
        r = numba.get_thread_id()
        i = fetch_add(CL, 0, 1)
        while i < NG:
            group_task(d, F, geom, cp, ws, pinned, alpha, first_order, r, i)
            i = fetch_add(CL, 0, 1)
    D, H1, Pr = geom.sizes[0], geom.sizes[1], ws.G.shape[1]
    Q = d.yq.shape[1] // geom.sizes[-1]
    Ef = ws.E.reshape(ws.E.size)                                   # a flat view, made once
    for w in prange(W):
        if F.sparse:
            d0, d1 = share(D, W, w)
            w1_grad_sparse(F, ws.E, T * K if first_order else 0, T, grad[:D * H1], d0, d1)
        else:
            c0, c1 = share(NCH, W, w)
            w1_grad_dense(F, Ef, T * K, T * Q, H1, D, not first_order, T,
                          grad[:D * H1], c0, c1)
        i0, i1 = share(Pr, W, w)
        mean_rows_into(ws.G, grad[D * H1:], i0, i1, T)
    loss = 0.0
    for t in range(T):
        loss += ws.losses[t]
    return loss / T
