"""The batch-norm classification path of backend="numba" (mamlnp/fast/bn_mlp/kernelset.py and
bn_mlp/bn_kernels.py, bn_mlp_kernels.py, classify_kernels.py) against the NumPy reference:
each batch-norm kernel against its twin in mamlnp/nn/batchnorm.py, the meta-gradient (first
layer factored) against mamlnp.meta.maml with backend="numpy", the same bits for 1 and 2
threads. Small nets (20-16-8-N) for most cases, one at the paper's 784-256-128-64-64-5."""
import numba
import numpy as np
import pytest

import mamlnp
from mamlnp.fast.common import ACT_IDS
from mamlnp.fast.bn_mlp.bn_kernels import (Cache, RCache, bn_backward, bn_forward,
                                            bn_rbackward, bn_rforward)
from mamlnp.meta import maml as M
from mamlnp.nn import batchnorm as BN
from mamlnp.nn import layers as LY
from mamlnp.nn.activations import ACTIVATIONS
from mamlnp.nn.mlp import MLP
from mamlnp.tasks.base import TaskBatch

TOL = 1e-12


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)
    print(f"rel err {err:.2e}")
    return err


def episodes(rng, T, N, K, Q, D, ink=0.15):
    """T N-way K-shot episodes: a fraction ``ink`` of the inputs nonzero (≈ 1, with noise),
    one-hot labels. ink ≤ 0.25 takes the sparse first-layer products, more takes BLAS."""
    def draw(n):
        return (rng.random((T, n, D)) < ink) * (1.0 + 0.1 * rng.standard_normal((T, n, D)))
    return TaskBatch(draw(N * K), np.tile(np.eye(N), (T, K, 1)), draw(N * Q),
                     np.tile(np.eye(N), (T, Q, 1)))


def net(N, act="relu", sizes=(20, 16, 8)):
    model = MLP(sizes + (N,), activation=act, loss="softmax_xent", batch_norm=True)
    theta = model.init(3) + 0.2 * np.random.default_rng(4).standard_normal(model.num_params)
    return model, theta


# ---- the batch-norm passes against mamlnp/nn/batchnorm.py -------------------------------


def bn_case(act, N=6, O=5, seed=0):
    rng = np.random.default_rng(seed)
    z, dh, Rz, Rdh = (rng.standard_normal((N, O)) * 2 for _ in range(4))
    th = rng.standard_normal(2 * O + 3)                          # γ at 3, β at 3 + O
    v = rng.standard_normal(2 * O + 3)
    return z, dh, Rz, Rdh, th, v, 3, 3 + O


def bufs(N, O, extra=7):
    """A Cache and an RCache whose block sits at offset ``extra`` (and r, q at 2)."""
    n = extra + N * O + 3
    return (Cache(*(np.full(n, np.nan) for _ in range(6)), np.full(O + 4, np.nan)),
            RCache(*(np.full(n, np.nan) for _ in range(6)), np.full(O + 4, np.nan)))


def block(a, N, O, off=7):
    return a[off:off + N * O].reshape(N, O)


@pytest.mark.parametrize("act", ["relu", "tanh", "softplus"])
def test_bn_kernels_match_their_twins(act):
    z, dh, Rz, Rdh, th, v, go, eo = bn_case(act)
    N, O = z.shape
    eps, aid, fn = 1e-3, ACT_IDS[act], ACTIVATIONS[act]
    gamma, beta, Vg, Vb = th[go:go + O], th[eo:eo + O], v[go:go + O], v[eo:eo + O]
    u, bcache = BN.batchnorm_forward(z, gamma, beta, eps)               # the twins
    h, acache = LY.act_forward(u, fn)
    dy = LY.act_backward(dh, acache)
    dz, dg, db = BN.batchnorm_backward(dy, bcache)
    Ru = BN.batchnorm_rforward(Rz, bcache, Vg, Vb)
    Rdy = LY.act_rbackward(Rdh, dh, Ru, acache)
    Rdz, Rdg, Rdb = BN.batchnorm_rbackward(Rdy, dy, Rz, bcache, Vg)
    c, rc = bufs(N, O)
    block(c.XH, N, O)[...] = z
    bn_forward(c, th, 7, N, O, go, eo, 2, eps, aid)
    assert rel(block(c.XH, N, O), bcache[0]) < TOL and rel(c.SN[2:2 + O], bcache[1]) < TOL
    assert rel(block(c.A, N, O), h) < TOL
    block(c.DH, N, O)[...] = dh
    grad = np.full(th.shape, np.nan)
    bn_backward(c, th, 7, N, O, go, eo, 2, grad)
    assert rel(block(c.DY, N, O), dy) < TOL and rel(block(c.DZ, N, O), dz) < TOL
    assert rel(grad[go:go + O], dg) < TOL and rel(grad[eo:eo + O], db) < TOL
    block(rc.RXH, N, O)[...] = Rz
    bn_rforward(c, rc, th, v, 7, N, O, go, eo, 2)
    assert rel(block(rc.RY, N, O), Ru) < TOL
    block(rc.RDH, N, O)[...] = Rdh
    hv = np.full(th.shape, np.nan)
    bn_rbackward(c, rc, th, v, 7, N, O, go, eo, 2, aid, hv)
    assert rel(block(rc.RDZ, N, O), Rdz) < TOL
    assert rel(hv[go:go + O], Rdg) < TOL and rel(hv[eo:eo + O], Rdb) < TOL


def test_bn_kernels_batch_of_one_point():
    """N = 1: ẑ = 0, y = β, dz = 0 and Rdz = 0 exactly (nn/batchnorm.py's docstring)."""
    z, dh, Rz, Rdh, th, v, go, eo = bn_case("tanh", N=1)
    c, rc = bufs(1, 5)
    block(c.XH, 1, 5)[...] = z
    bn_forward(c, th, 7, 1, 5, go, eo, 2, 1e-3, 1)
    assert np.all(block(c.XH, 1, 5) == 0.0)
    block(c.DH, 1, 5)[...] = dh
    bn_backward(c, th, 7, 1, 5, go, eo, 2, np.zeros(th.shape))
    assert np.all(block(c.DZ, 1, 5) == 0.0)
    block(rc.RXH, 1, 5)[...] = Rz
    bn_rforward(c, rc, th, v, 7, 1, 5, go, eo, 2)
    block(rc.RDH, 1, 5)[...] = Rdh
    bn_rbackward(c, rc, th, v, 7, 1, 5, go, eo, 2, 1, np.zeros(th.shape))
    assert np.all(block(rc.RDZ, 1, 5) == 0.0)


# ---- the meta-gradient against the NumPy reference ---------------------------------------


@pytest.mark.parametrize("N,K,Q,ink", [(3, 2, 2, 0.15), (2, 1, 3, 0.15), (5, 1, 1, 0.15),
                                        (3, 2, 2, 0.6)])
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_reference(N, K, Q, ink, s, first_order):
    model, theta = net(N)
    batch = episodes(np.random.default_rng(10 * N + K), 4, N, K, Q, 20, ink)
    want = M.meta_gradient(model, theta, batch, 0.4, s, first_order, backend="numpy")
    got = mamlnp.meta_gradient(model, theta, batch, 0.4, s, first_order, backend="numba")
    assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


@pytest.mark.parametrize("act", ["tanh", "softplus"])
def test_meta_gradient_other_activations_and_s0(act):
    model, theta = net(3, act, sizes=(12, 10, 7, 6))
    batch = episodes(np.random.default_rng(1), 3, 3, 2, 1, 12)
    for s, fo in ((0, False), (2, False), (2, True)):
        want = M.meta_gradient(model, theta, batch, 0.1, s, fo, backend="numpy")
        got = mamlnp.meta_gradient(model, theta, batch, 0.1, s, fo, backend="numba")
        assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


def test_meta_gradient_at_the_papers_sizes():
    """784-256-128-64-64-5, 5-way 1-shot, two tasks, s = 1 SO (the issue's workload)."""
    model = MLP((784, 256, 128, 64, 64, 5), activation="relu", loss="softmax_xent",
                batch_norm=True)
    theta = model.init(0)
    batch = episodes(np.random.default_rng(2), 2, 5, 1, 1, 784, ink=0.08)      # sparse
    want = M.meta_gradient(model, theta, batch, 0.4, 1, False, backend="numpy")
    got = mamlnp.meta_gradient(model, theta, batch, 0.4, 1, False, backend="numba")
    assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


def test_one_point_per_batch():
    """1-way 1-shot: every batch-norm batch has one point (σ² = 0, ε keeps r finite)."""
    model, theta = net(1, sizes=(6, 5, 4))
    batch = episodes(np.random.default_rng(3), 3, 1, 1, 1, 6)
    for fo in (False, True):
        want = M.meta_gradient(model, theta, batch, 0.4, 2, fo, backend="numpy")
        got = mamlnp.meta_gradient(model, theta, batch, 0.4, 2, fo, backend="numba")
        assert abs(got[0] - want[0]) <= TOL * abs(want[0])
        assert np.abs(got[1] - want[1]).max() <= TOL * max(np.abs(want[1]).max(), 1.0)


@pytest.mark.parametrize("ink", [0.15, 0.6])
def test_same_bits_for_one_and_two_threads(ink):
    model, theta = net(3)
    batch = episodes(np.random.default_rng(5), 7, 3, 2, 2, 20, ink)
    before = numba.get_num_threads()
    out = []
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            for fo in (False, True):
                loss, g = mamlnp.meta_gradient(model, theta, batch, 0.4, 2, fo, backend="numba")
                out.append((loss, g.tobytes()))
            out.append((0.0, mamlnp.meta.maml.adapt_curve(model, theta, batch, 0.4, 2,
                                                           backend="numba").tobytes()))
    finally:
        numba.set_num_threads(before)
    assert out[:3] == out[3:]


# ---- adaptation and the variants ---------------------------------------------------------


@pytest.mark.parametrize("ink", [0.15, 0.6])
def test_adapt_batch_and_curve_match_reference(ink):
    model, theta = net(3)
    batch = episodes(np.random.default_rng(6), 4, 3, 2, 3, 20, ink)
    want = M.adapt_batch(model, theta, batch, 0.4, 3, backend="numpy")
    assert rel(M.adapt_batch(model, theta, batch, 0.4, 3, backend="numba"), want) < TOL
    want = M.adapt_curve(model, theta, batch, 0.4, 4, backend="numpy")
    assert rel(M.adapt_curve(model, theta, batch, 0.4, 4, backend="numba"), want) < TOL
    xs, ys = batch.x_support[1], batch.y_support[1]
    want = M.adapt(model, theta, xs, ys, 0.4, 2, backend="numpy")
    assert rel(mamlnp.adapt(model, theta, xs, ys, 0.4, 2, backend="numba"), want) < TOL


@pytest.mark.parametrize("ink", [0.15, 0.6])
def test_accuracy_curve_on_the_kernels_matches_the_numpy_loop(ink):
    """The evaluation's accuracies (mamlnp.run.classify.accuracy_curve) from the compiled
    batch_adapt equal the NumPy inner loop's, episode by episode and step by step."""
    from mamlnp.run import classify as CL
    model, theta = net(5)
    batch = episodes(np.random.default_rng(7), 12, 5, 1, 3, 20, ink)
    want = CL.accuracy_curve(model, theta, batch, 0.4, 6, backend="numpy")
    got = CL.accuracy_curve(model, theta, batch, 0.4, 6, backend="numba")
    assert got.shape == (12, 7) and np.array_equal(got, want)
    assert 0 < want.min() <= want.max() <= 1 and len(np.unique(want)) > 2   # not all alike
    acc = CL.accuracy_curve(model, theta, batch, 100.0, 3, backend="numba")  # blows up
    ref = CL.accuracy_curve(model, theta, batch, 100.0, 3, backend="numpy")
    assert np.array_equal(acc, ref)


def test_accuracy_kernel_breaks_ties_and_nans_as_np_argmax():
    from mamlnp.fast.bn_mlp.classify_kernels import accuracy_value
    z = np.array([1.0, 3.0, 3.0, 0.0, np.nan, 5.0, np.nan, 7.0, 2.0, 2.0, 2.0, 2.0])  # 4 rows
    for label in range(3):
        y = np.zeros(12)
        y[label::3] = 1.0
        want = np.mean(z.reshape(4, 3).argmax(axis=1) == y.reshape(4, 3).argmax(axis=1))
        assert accuracy_value(z, 0, y, 4, 3) == want


def test_per_parameter_alpha_runs_the_reference():
    """Meta-SGD's α (P,) has no factored first layer: the kernel set does not compile it
    (kernels_for answers None) and mamlnp/meta/maml.py's reference runs, the same numbers."""
    model, theta = net(3)
    batch = episodes(np.random.default_rng(7), 3, 3, 1, 2, 20)
    alpha = np.random.default_rng(8).uniform(0.05, 0.5, model.num_params)
    want = M.meta_gradient(model, theta, batch, alpha, 2, False, backend="numpy")
    got = M.meta_gradient(model, theta, batch, alpha, 2, False, backend="numba")
    assert rel(got[1], want[1]) < TOL
    assert M.kernels_for(model, "numba", "meta_gradient", alpha) is None
    assert M.kernels_for(model, "numba", "meta_gradient_alpha", 0.1) is None
    assert M.kernels_for(model, "numba", "meta_gradient", 0.1) is not None


def test_the_cases_take_both_first_layer_paths():
    """ink 0.15 runs the sparse products (bn_mlp/first_layer.py), ink 0.6 BLAS; the sparse
    ones give X W1 and Xᵀ E to rounding."""
    from mamlnp.fast.bn_mlp.kernelset import _inputs
    from mamlnp.fast.bn_mlp.first_layer import csc_t_rows, csr_rows
    rng = np.random.default_rng(9)
    W, E = rng.standard_normal((20, 16)), rng.standard_normal((36, 16))   # M = 4·(3 + 6)
    for ink, sparse in ((0.15, True), (0.6, False)):
        b = episodes(rng, 4, 3, 1, 2, 20, ink)
        xs, xq = b.x_support.reshape(4, -1), b.x_query.reshape(4, -1)
        X = _inputs(xs, xq, W, np.empty((36, 16)))
        assert X.sparse is sparse
        dense = np.concatenate([b.x_support.reshape(-1, 20), b.x_query.reshape(-1, 20)])
        if not sparse:
            assert rel(X.Z, dense @ W) < TOL
            continue
        csr_rows(X.rp, X.ci, X.cv, W, X.Z, 0, 36)
        assert rel(X.Z, dense @ W) < TOL
        G = np.empty(20 * 16)
        for row0 in (0, 12):
            csc_t_rows(X.cp, X.ri, X.rv, E, row0, 4, G)
            assert rel(G.reshape(20, 16), dense[row0:].T @ E[row0:] / 4) < TOL


@pytest.mark.parametrize("method", ["maml", "fomaml", "reptile", "metasgd", "pretrain"])
def test_training_steps_on_a_batch_norm_net(method):
    """The trainer's step of every method gives the NumPy backend's numbers on a batch-norm
    MLP (MAML/FOMAML through the factored kernels, Reptile through adapt_batch, Meta-SGD and
    Pretrain on NumPy passes)."""
    from mamlnp.meta.variants import get_method
    model, theta = net(3)
    batch = episodes(np.random.default_rng(11), 4, 3, 2, 2, 20)
    config = {"alpha": 0.4, "inner_steps": 2}
    m = get_method(method)
    params = m.init_params(model, theta, config)
    want = m.step(model, params, batch, config, "numpy")
    got = m.step(model, params, batch, config, "numba")
    assert rel(got[0], want[0]) < TOL
    for name in want[1]:
        assert rel(got[1][name], want[1][name]) < TOL


@pytest.mark.parametrize("ta,tb,acc", [(False, False, 0), (True, False, 1), (False, True, 1),
                                       (True, True, 0)])
def test_gemm_in_row_blocks_matches_numpy(ta, tb, acc):
    """gemm_chunks.gemm_st above OpenBLAS's threading threshold (M·R·W = 1.2M > 262,144)
    against NumPy, offsets included."""
    from mamlnp.fast.common.linalg import LIMIT, gemm_st
    M, R, W = 75, 128, 130
    assert M * R * W > LIMIT
    rng = np.random.default_rng(12)
    A = rng.standard_normal(M * R + 3)
    B = rng.standard_normal(R * W + 5)
    C = rng.standard_normal(M * W + 2)
    opA = A[3:].reshape(R, M).T if ta else A[3:].reshape(M, R)
    opB = B[5:].reshape(W, R).T if tb else B[5:].reshape(R, W)
    want = acc * C[2:].reshape(M, W) + opA @ opB
    gemm_st(A, 3, ta, B, 5, tb, C, 2, M, R, W, acc)
    assert rel(C[2:].reshape(M, W), want) < TOL


def test_the_sums_split_over_workers_give_the_same_bits():
    """batch_meta_grad's second region: share() partitions the entries, and the split
    csc_t_rows / mean_rows_into give the whole call's bits."""
    from mamlnp.fast.bn_mlp.first_layer import (build_csr_csc, count_nonzeros, csc_t_rows,
                                                 mean_rows_into, share)
    for n in (0, 1, 5, 784, 46917):
        for W in (1, 2, 3, 8):
            parts = [share(n, W, w) for w in range(W)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
    rng = np.random.default_rng(8)
    xs, xq = ((rng.random((4, 3 * 20)) < 0.2) * 1.0 for _ in range(2))
    M, nnz = 24, count_nonzeros(xs, xq)
    rp, cp = np.empty(M + 1, np.int64), np.empty(21, np.int64)
    ci, ri, cv, rv = (np.empty(nnz, np.int64), np.empty(nnz, np.int64), np.empty(nnz),
                      np.empty(nnz))
    build_csr_csc(xs, xq, 20, rp, ci, cv, cp, ri, rv)
    E, Gr = rng.standard_normal((M, 7)), rng.standard_normal((4, 33))
    whole, split = np.empty(140), np.empty(140)
    csc_t_rows(cp, ri, rv, E, 0, 4, whole)
    m_whole, m_split = np.empty(33), np.empty(33)
    mean_rows_into(Gr, m_whole)
    for w in range(3):
        csc_t_rows(cp, ri, rv, E, 0, 4, split, *share(20, 3, w))
        mean_rows_into(Gr, m_split, *share(33, 3, w))
    assert whole.tobytes() == split.tobytes() and m_whole.tobytes() == m_split.tobytes()
