"""The task-grouped s = 1 meta-gradient: its NumPy reference (mamlnp/meta/grouped.py,
grouped_parts.py) against mamlnp.meta.maml, then each compiled pass of
mamlnp/fast/bn_mlp/classify_groups.py (and first_layer.py, group_products.py)
against its NumPy pass, one pass at a time.

Dimension legend: T tasks, n tasks of a group, K support and Q query points per task,
N the points of one pass, D inputs, H1 = sizes[1], I, O a layer's fan-in and fan-out,
L dense layers, Pc the b, γ, β entries, Hsum = Σ_{l≥1} sizes[l].

How a pass is checked alone: a fresh workspace is filled with NaN, the outputs of the
NumPy passes BEFORE it are written into the kernel's buffers (the same views that are read
afterwards), the compiled pass runs (``run_pass``: the passes are compiled without NRT and
cannot be called from Python), and every buffer it writes is compared with its NumPy
pass's output. So each pass sees exactly its NumPy twin's inputs, a buffer it reads but
nobody wrote shows up as NaN, and one it should write but does not keeps the NaN.
"""
import numba
import numpy as np
import pytest

from mamlnp.errors import InputError
from mamlnp.fast.bn_mlp import kernelset as FC
from mamlnp.fast.common.blas_threads import one_blas_thread
from mamlnp.fast.bn_mlp import classify_groups as cg
from mamlnp.fast.bn_mlp.first_layer import NCH, Rows, w1_grad_dense, w1_grad_sparse
from mamlnp.fast.bn_mlp.group_products import Ctx, Lowrank, lowrank_acc, product
from mamlnp.meta import grouped as G
from mamlnp.meta import grouped_parts as GP
from mamlnp.meta import maml as M
from mamlnp.nn import batchnorm as BN
from test_classify_kernels import TOL, episodes, net, rel

PASSES = ("group_inputs", "support_forward", "support_backward", "query_forward",
          "query_backward", "r_forward_group", "r_backward_group", "small_into")


# ---- the reference against mamlnp.meta.maml -------------------------------------------------


def check_against_maml(model, theta, batch, alpha=0.4):
    for fo in (False, True):
        want = M.meta_gradient(model, theta, batch, alpha, 1, fo, backend="numpy")
        got = G.meta_gradient(model, theta, batch, alpha, 1, fo)
        assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


@pytest.mark.parametrize("T", [1, 3, 8, 9, 17])
@pytest.mark.parametrize("ink", [0.05, 0.6])
def test_reference_matches_maml(T, ink):
    """T = 9 and 17: groups of 5 + 4 and 6 + 6 + 5 tasks; sparse and dense inputs."""
    model, theta = net(3)
    check_against_maml(model, theta, episodes(np.random.default_rng(T), T, 3, 2, 1, 20, ink))


@pytest.mark.parametrize("act,sizes,K,Q,loss", [("tanh", (12, 10, 7, 6), 1, 3, "softmax_xent"),
                                                ("softplus", (12, 9), 3, 2, "softmax_xent"),
                                                ("relu", (10, 8, 8, 8, 4), 2, 2, "softmax_xent"),
                                                ("tanh", (6, 5, 4), 1, 1, "softmax_xent"),
                                                ("softplus", (12, 7, 5), 2, 2, "mse")])
def test_reference_other_shapes_activations_and_losses(act, sizes, K, Q, loss):
    """σ'' ≠ 0 (tanh, softplus), three hidden layers, one point per batch norm, MSE."""
    model, theta = net(3, act, sizes=sizes)
    if loss == "mse":
        model = type(model)(sizes + (3,), activation=act, loss="mse", batch_norm=True)
    batch = episodes(np.random.default_rng(len(sizes)), 10, 3, K, Q, sizes[0], 0.3)
    check_against_maml(model, theta, batch, 0.1)


def test_reference_refuses_what_it_does_not_do():
    model, theta = net(3)
    batch = episodes(np.random.default_rng(0), 2, 3, 1, 1, 20)
    for args in ((0.4, 2), (np.full(model.num_params, 0.4), 1)):
        with pytest.raises(InputError, match="inner_steps"):
            G.meta_gradient(model, theta, batch, *args)


def test_groups_and_compact_are_the_kernels():
    for T in (1, 7, 8, 9, 16, 17, 25, 33):
        assert GP.ngroups(T) == cg.ngroups(T)
        assert [GP.group_range(T, i) for i in range(GP.ngroups(T))] == \
            [tuple(cg.group_range(T, i)) for i in range(cg.ngroups(T))]
    model, _ = net(3, sizes=(10, 8, 8, 8))
    D, H1 = model.sizes[:2]
    assert np.array_equal(GP.compact(model).src - D * H1, FC.compact(FC.geometry(model)).src)


# ---- the compiled passes, called one at a time -----------------------------------------------


@numba.njit
def run_pass(k, i, d, F, g, cp, ws, pinned, alpha, first_order):
    """Pass k of PASSES (8: the whole group_task) of group i on thread 0, as group_task
    calls it."""
    T = d.ys.shape[0]
    K, Q = d.ys.shape[1] // g.sizes[-1], d.yq.shape[1] // g.sizes[-1]
    t0, n = cg.group_range(T, i)
    cs, cq, rc = cg.caches(ws, 0)
    TH1, GS, GQ, V, HV = ws.SM[0, 0], ws.SM[0, 1], ws.SM[0, 2], ws.SM[0, 3], ws.SM[0, 4]
    cx = Ctx(g, cp, pinned, d.rest, ws.TH0, alpha, t0, n, K, Q, ws.PK[0], ws.GR[0])
    if k == 0:
        cg.group_inputs(F, g, ws, 0, T, t0, n, K, Q, cs, cq)
    elif k == 1:
        cg.support_forward(cx, cs)
    elif k == 2:
        cg.support_backward(cx, d.ys, cs, GS)
    elif k == 3:
        cg.query_forward(cx, TH1, cs, cq)
    elif k == 4:
        cg.query_backward(cx, TH1, d.yq, ws.losses, cs, cq, GQ, ws.G[i])
    elif k == 5:
        cg.r_forward_group(cx, V, cs, cq, rc)
    elif k == 6:
        cg.r_backward_group(cx, V, HV, ws.TW[0], cs, cq, rc, ws.G[i])
    elif k == 7:
        cg.small_into(ws.G[i], cp, GQ, HV, n, not first_order)
    else:
        cg.group_task(d, F, g, cp, ws, pinned, alpha, first_order, 0, i)


class Case:
    """One batch, its kernel bundles on a fresh NaN-filled workspace, and group i's NumPy
    passes (attributes named as in mamlnp/meta/grouped.py's group_task)."""

    def __init__(self, T=11, i=1, act="tanh", sizes=(12, 10, 7, 6), N=3, K=2, Q=1, ink=0.3,
                 sparse=True, alpha=0.4):
        self.model, self.theta = net(N, act, sizes=sizes)
        batch = episodes(np.random.default_rng(T + i), T, N, K, Q, sizes[0], ink)
        arrays = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
        self.xs, self.ys, self.xq, self.yq = (np.ascontiguousarray(a) for a in arrays)
        self.flat = [FC.flat(a) for a in arrays]
        self.g, self.alpha, self.i = FC.geometry(self.model), alpha, i
        self.t0, self.n = GP.group_range(T, i)
        self.K, self.Q = N * K, N * Q
        self.kernel_bundles(sparse)
        self.numpy_passes()

    def kernel_bundles(self, sparse):
        """(Targets, Rows, Compact, workspace) as fast/bn_mlp/kernelset.py:group_call makes them, on a
        workspace of our own, every float buffer NaN."""
        g, (xs, ys, xq, yq) = self.g, self.flat
        sz = [int(v) for v in g.sizes]
        D, H1, Pr = sz[0], sz[1], int(g.boff[-1] + sz[-1])
        self.cp = FC.compact(g)
        maxio = max(sz[l] * sz[l + 1] for l in range(1, len(sz) - 1))
        ws = cg.alloc_group_workspace(xs.shape[0], Pr, len(self.cp.src), self.K, self.Q,
                                      sum(sz[1:]), D, H1, maxio)
        for a in ws:
            if a.dtype == np.float64:
                a.fill(np.nan)
        ws.TH0[:] = self.theta[D * H1:][self.cp.src]            # group_meta_grad's first step
        self.ws, self.d = ws, cg.Targets(ys, yq, self.theta[D * H1:])
        self.F = Rows(sparse, xs.ravel(), xq.ravel(), self.theta[:D * H1], ws.NZ, ws.CI, ws.CV)

    def numpy_passes(self):
        """Group i's NumPy passes in group_task's order (second order)."""
        sl, a = slice(self.t0, self.t0 + self.n), self.alpha
        xs, ys, xq, yq = self.xs[sl], self.ys[sl], self.xq[sl], self.yq[sl]
        W1 = self.model._unflatten(self.theta)[0][0]
        self.xw_S, self.xw_Q, self.GSS, self.GQS = GP.group_inputs(W1, xs, xq)
        self.cx = cx = G.context(self.model, self.theta, a, self.GQS)
        self.cs = G.support_forward(cx, self.xw_S)
        self.GS = G.support_backward(cx, self.cs, ys)
        self.TH1 = cx.th0 - a * self.GS
        self.cq = G.query_forward(cx, self.TH1, self.cs, self.xw_Q)
        self.GQ, self.GW_Q = G.query_backward(cx, self.cs, self.cq, yq)
        self.V = a * self.GQ
        self.R = G.r_forward_group(cx, self.V, self.cs, self.cq)
        self.HV, self.GW = G.r_backward_group(cx, self.V, self.cs, self.cq, self.R, self.GW_Q)
        self.Gc = G.small_into(self.GQ, self.HV, True)

    def run(self, k, first_order=False, i=None):
        with one_blas_thread() as pinned:
            run_pass(k, self.i if i is None else i, self.d, self.F, self.g, self.cp, self.ws,
                     pinned, self.alpha, first_order)


def block(buf, n, N, g, l):
    """Layer l's (n, N, O) block of a flat cache row (the group's rows at n·N·coff[l])."""
    O, o = int(g.sizes[l + 1]), n * N * int(g.coff[l])
    return buf[o:o + n * N * O].reshape(n, N, O)


def per_feature(buf, n, g, l):
    """Layer l's (n, O) per-task vectors (s, q) of a (GMAX·Hsum,) buffer."""
    Hs, c = int(g.sizes[1:].sum()), int(g.coff[l])
    return buf[:n * Hs].reshape(n, Hs)[:, c:c + int(g.sizes[l + 1])]


def forward_fields(c, P, n, N, g, act):
    """(kernel buffer view, NumPy value) of a forward pass: ẑ, h, σ'(y), s; ŷ."""
    L = len(g.sizes) - 1
    out = [(block(c.XH, n, N, g, L - 1), P.h[L - 1])]
    for l in range(L - 1):
        out += [(block(c.XH, n, N, g, l), P.zhat[l]), (block(c.A, n, N, g, l), P.h[l]),
                (block(c.S, n, N, g, l), act[1](P.y[l])), (per_feature(c.SN, n, g, l), P.s[l])]
    return out


def backward_fields(c, P, n, N, g):
    """Of a backward pass: dŷ, p (softmax), dz, dy, dh."""
    L = len(g.sizes) - 1
    out = [(block(c.DZ, n, N, g, L - 1), P.dz[L - 1]),
           (block(c.A, n, N, g, L - 1), np.stack([lc[0] for lc in P.lcache]))]
    for l in range(L - 1):
        out += [(block(c.DZ, n, N, g, l), P.dz[l]), (block(c.DY, n, N, g, l), P.dy[l]),
                (block(c.DH, n, N, g, l), P.dh[l])]
    return out


def r_forward_fields(rc, cs, R, n, N, g):
    """Of the R-forward: Rŷ; Rẑ, q (the kernel keeps them, nn/batchnorm.py recomputes them
    from Rz), Ry, Rh."""
    L = len(g.sizes) - 1
    out = [(block(rc.RXH, n, N, g, L - 1), R.Rz[L - 1])]
    for l in range(L - 1):
        zh, Rzh = cs.zhat[l], [BN._normalise_rows(*a) for a in zip(R.Rz[l], cs.zhat[l], cs.s[l])]
        out += [(block(rc.RXH, n, N, g, l), np.stack(Rzh)),
                (per_feature(rc.Q, n, g, l), (zh * R.Rz[l]).mean(axis=1)),
                (block(rc.RY, n, N, g, l), R.Ry[l]), (block(rc.RH, n, N, g, l), R.Rh[l])]
    return out


def w_blocks(Gi, g, GW):
    """The W_l blocks (l ≥ 1) of a group's row G[i] (Pr,) beside the NumPy GW[l] (I, O)."""
    sz = [int(v) for v in g.sizes]
    return [(Gi[int(g.woff[l]):int(g.woff[l]) + sz[l] * sz[l + 1]].reshape(sz[l], sz[l + 1]),
             GW[l]) for l in range(1, len(sz) - 1)]


def fields(c, k):
    """The (buffer view, NumPy value) pairs that pass k writes."""
    ws, g, n, K, Q, cs, cq, rc = c.ws, c.g, c.n, c.K, c.Q, *cg.caches(c.ws, 0)
    if k == 0:
        return [(block(cs.XH, n, K, g, 0), c.xw_S), (block(cq.XH, n, Q, g, 0), c.xw_Q),
                (ws.GR[0][:n, :K * K].reshape(n, K, K), c.GSS),
                (ws.GR[0][:n, K * K:].reshape(n, Q, K), c.GQS)]
    if k == 1:
        return forward_fields(cs, c.cs, n, K, g, c.cx.act)
    if k == 2:
        return backward_fields(cs, c.cs, n, K, g) + [(ws.SM[0, 1, :n], c.GS)]
    if k == 3:
        return forward_fields(cq, c.cq, n, Q, g, c.cx.act)
    if k == 4:
        return (backward_fields(cq, c.cq, n, Q, g) + w_blocks(ws.G[c.i], g, c.GW_Q) +
                [(ws.SM[0, 2, :n], c.GQ), (ws.losses[c.t0:c.t0 + n], c.cq.losses)])
    if k == 5:
        return r_forward_fields(rc, c.cs, c.R, n, K, g)
    if k == 6:
        L = len(g.sizes) - 1
        out = [(block(rc.RDZ, n, K, g, l), c.R.Rdz[l]) for l in range(L)]
        out += [(block(rc.RDY, n, K, g, l), c.R.Rdy[l]) for l in range(L - 1)]
        out += [(block(rc.RDH, n, K, g, l), c.R.Rdh[l]) for l in range(L - 1)]
        return out + w_blocks(ws.G[c.i], g, c.GW) + [(ws.SM[0, 4, :n], c.HV)]
    return [(ws.G[c.i][c.cp.src], c.Gc)]


BETWEEN = {2: lambda c: [(c.ws.SM[0, 0, :c.n], c.TH1)],     # group_task's θ_1 = θ − α GS
           4: lambda c: [(c.ws.SM[0, 3, :c.n], c.V)]}       # and v = α GQ


def load_before(c, k):
    """Write the NumPy passes 0 … k−1's outputs into the kernel's buffers."""
    for j in range(k):
        for view, value in fields(c, j) + BETWEEN.get(j, lambda c: [])(c):
            assert view.base is not None                     # a view, not a copy
            view[...] = value


@pytest.mark.parametrize("k", range(len(PASSES)), ids=PASSES)
@pytest.mark.parametrize("i", [0, 1])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_each_kernel_pass_matches_its_numpy_pass(k, i, act):
    """T = 11: groups of 6 and 5 tasks (i = 1 starts at task 6); 3 layers, K = 6, Q = 3."""
    c = Case(i=i, act=act)
    load_before(c, k)
    c.run(k)
    for view, want in fields(c, k):
        assert rel(view, want) < TOL


@pytest.mark.parametrize("sparse", [True, False])
def test_group_inputs_either_first_layer_path(sparse):
    """group_inputs on packed CSR rows and on BLAS, group 1 of T = 11 (tasks 6 … 10)."""
    c = Case(i=1, sparse=sparse, ink=0.1)
    c.run(0)
    for view, want in fields(c, 0):
        assert rel(view, want) < TOL


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("sparse", [True, False])
def test_group_task_matches_numpy(first_order, sparse):
    """The whole group_task (its passes and the steps between them) against grouped.py's:
    the group's losses, rows of E = [Es; Eq], and row G[i]."""
    c = Case(i=1, sparse=sparse)
    c.run(8, first_order)
    sl, (T, K, Q, n, t0) = slice(c.t0, c.t0 + c.n), (c.xs.shape[0], c.K, c.Q, c.n, c.t0)
    want = G.group_task(c.model, c.theta, c.xs[sl], c.ys[sl], c.xq[sl], c.yq[sl], c.alpha,
                        first_order)
    E = c.ws.E
    pairs = [(c.ws.losses[sl], want.losses), (c.ws.G[c.i][c.cp.src], want.Gc),
             (E[t0 * K:(t0 + n) * K].reshape(n, K, -1), want.Es),
             (E[T * K + t0 * Q:T * K + (t0 + n) * Q].reshape(n, Q, -1), want.Eq)]
    for got, w in pairs + w_blocks(c.ws.G[c.i], c.g, want.GW):
        assert rel(got, w) < TOL
    if first_order:
        assert not want.Es.any()


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("sparse", [True, False])
def test_w1_grad_matches_numpy(first_order, sparse):
    """w1_grad_sparse (packed rows) and w1_grad_dense (NCH chunks) against grouped_parts.w1_grad."""
    c = Case(sparse=sparse)
    T, K, Q, (D, H1) = c.xs.shape[0], c.K, c.Q, c.g.sizes[:2]
    for i in range(GP.ngroups(T)):
        c.run(0, i=i)                                           # packs every group's rows
    c.ws.E[:] = np.random.default_rng(1).standard_normal(c.ws.E.shape)
    E, got = c.ws.E, np.full(D * H1, np.nan)
    if sparse:
        w1_grad_sparse(c.F, E, T * K if first_order else 0, T, got, 0, D)
    else:
        with one_blas_thread():
            w1_grad_dense(c.F, E.ravel(), T * K, T * Q, H1, D, not first_order, T, got, 0, NCH)
    want = GP.w1_grad(c.xs, c.xq, E[:T * K].reshape(T, K, H1), E[T * K:].reshape(T, Q, H1),
                      T, first_order)
    assert rel(got.reshape(D, H1), want) < TOL


@pytest.mark.parametrize("T", [3, 11, 17])
@pytest.mark.parametrize("sparse", [True, False])
def test_driver_matches_numpy(T, sparse, monkeypatch):
    """group_meta_grad (all groups on the threads, ∇W1, the mean of the rows) against
    grouped.group_meta_grad."""
    monkeypatch.setattr(FC, "sparse_pays", lambda *a: sparse)
    c = Case(T=T, i=0, act="relu", sizes=(20, 16, 8, 8), ink=0.1)
    for fo in (False, True):
        got = FC.meta_gradient_unchecked(c.g, c.theta, *c.flat, c.alpha, 1, fo)
        want = G.group_meta_grad(c.model, c.theta, c.xs, c.ys, c.xq, c.yq, c.alpha, fo)
        assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


@numba.njit
def run_product(pinned, A, B, C, M, R, W):
    product(pinned, A, 0, False, B, 0, False, C, 0, M, R, W)


@numba.njit
def run_lowrank(X, F1, F2, Kf, coeff, N, R1, W2, PK, out):
    lowrank_acc(X, 0, Lowrank(F1, 0, F2, 0, Kf, coeff), N, R1, W2, PK, out, 0)


def test_group_products_match_numpy():
    """product (pinned and not) and lowrank_acc of group_products.py against grouped_parts'
    product and lowrank_acc (one task: n = 1)."""
    rng = np.random.default_rng(2)
    N, R1, Kf, W2 = 7, 9, 3, 5
    X, F1, F2, B = (rng.standard_normal(s) for s in ((N, R1), (Kf, R1), (Kf, W2), (R1, W2)))
    want = GP.product(X[None], B)[0]
    for pinned in (True, False):
        got = np.full(N * W2, np.nan)
        with one_blas_thread() as held:
            run_product(pinned and held, X.ravel(), B.ravel(), got, N, R1, W2)
        assert rel(got.reshape(N, W2), want) < TOL
    base = rng.standard_normal((N, W2))
    out = base.ravel().copy()
    run_lowrank(X.ravel(), F1.ravel(), F2.ravel(), Kf, -0.4, N, R1, W2, np.full(N * Kf, np.nan),
                out)
    want = base + GP.lowrank_acc(X[None], F1[None], F2[None], -0.4)[0]
    assert rel(out.reshape(N, W2), want) < TOL
