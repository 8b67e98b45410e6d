"""The s = 1 task-group kernels (mamlnp/fast/bn_mlp/classify_groups.py, first_layer.py)
and BLAS pinning (mamlnp/fast/common/blas_threads.py): the meta-gradient against the NumPy reference
and the one-task-at-a-time kernels, with several groups of unequal size, sparse and dense
inputs; the first-layer pieces against NumPy; the same bits for 1 and 2 threads."""
import numba
import numpy as np
import pytest

import mamlnp
from mamlnp.fast.bn_mlp import kernelset as FC
from mamlnp.fast.common.blas_threads import _scipy_openblas, one_blas_thread
from mamlnp.fast.bn_mlp.classify_groups import GMAX, group_range, ngroups
from mamlnp.fast.bn_mlp.first_layer import (NCH, Rows, group_grams, group_rows,
                                                  w1_grad_dense, w1_grad_sparse)
from mamlnp.meta import maml as M
from mamlnp.nn.mlp import MLP
from test_classify_kernels import TOL, episodes, net, rel


def flat(batch):
    return [FC.flat(a) for a in (batch.x_support, batch.y_support, batch.x_query,
                                  batch.y_query)]


@pytest.mark.parametrize("T", [3, 9, 17])
@pytest.mark.parametrize("ink", [0.05, 0.6])
@pytest.mark.parametrize("first_order", [False, True])
def test_groups_match_the_reference(T, ink, first_order):
    """T = 9 and 17: two and three groups of unequal size (5 + 4, 6 + 6 + 5)."""
    model, theta = net(3)
    batch = episodes(np.random.default_rng(T), T, 3, 2, 1, 20, ink)
    want = M.meta_gradient(model, theta, batch, 0.4, 1, first_order, backend="numpy")
    got = mamlnp.meta_gradient(model, theta, batch, 0.4, 1, first_order, backend="numba")
    assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


@pytest.mark.parametrize("act,sizes,K,Q", [("tanh", (12, 10, 7, 6), 1, 3),
                                            ("softplus", (12, 9), 3, 2),
                                            ("relu", (10, 8, 8, 8, 4), 2, 2)])
def test_groups_other_shapes_and_activations(act, sizes, K, Q):
    model, theta = net(3, act, sizes=sizes)
    batch = episodes(np.random.default_rng(len(sizes)), 10, 3, K, Q, sizes[0], 0.3)
    for fo in (False, True):
        want = M.meta_gradient(model, theta, batch, 0.1, 1, fo, backend="numpy")
        got = mamlnp.meta_gradient(model, theta, batch, 0.1, 1, fo, backend="numba")
        assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


@pytest.mark.parametrize("sparse", [True, False])
def test_groups_either_first_layer_path(sparse, monkeypatch):
    """The same inputs through the packed CSR rows and through BLAS."""
    monkeypatch.setattr(FC, "sparse_pays", lambda *a: sparse)
    model, theta = net(4)
    batch = episodes(np.random.default_rng(11), 10, 4, 1, 2, 20, 0.12)
    for fo in (False, True):
        want = M.meta_gradient(model, theta, batch, 0.4, 1, fo, backend="numpy")
        got = mamlnp.meta_gradient(model, theta, batch, 0.4, 1, fo, backend="numba")
        assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


def test_groups_one_point_per_batch_norm_batch():
    model, theta = net(1, sizes=(6, 5, 4))
    batch = episodes(np.random.default_rng(3), 11, 1, 1, 1, 6)
    for fo in (False, True):
        want = M.meta_gradient(model, theta, batch, 0.4, 1, fo, backend="numpy")
        got = mamlnp.meta_gradient(model, theta, batch, 0.4, 1, fo, backend="numba")
        assert abs(got[0] - want[0]) <= TOL * abs(want[0])
        assert np.abs(got[1] - want[1]).max() <= TOL * max(np.abs(want[1]).max(), 1.0)


def test_groups_at_the_papers_sizes_match_the_task_kernels():
    """784-256-128-64-64-5, 5-way 1-shot, T = 32 (4 groups): the group path against the
    one-task-at-a-time kernels (themselves checked against NumPy in test_classify_kernels)."""
    model = MLP((784, 256, 128, 64, 64, 5), activation="relu", loss="softmax_xent",
                batch_norm=True)
    theta = model.init(0)
    batch = episodes(np.random.default_rng(2), 32, 5, 1, 1, 784, ink=0.08)
    geom = FC.geometry(model)
    for fo in (False, True):
        want = FC.meta_gradient_unchecked(geom, theta, *flat(batch), 0.4, 1, fo, path="tasks")
        got = FC.meta_gradient_unchecked(geom, theta, *flat(batch), 0.4, 1, fo)
        assert rel(got[0], want[0]) < TOL and rel(got[1], want[1]) < TOL


@pytest.mark.parametrize("ink", [0.05, 0.6])
def test_groups_same_bits_for_one_and_two_threads(ink):
    model, theta = net(3)
    batch = episodes(np.random.default_rng(5), 17, 3, 2, 2, 20, ink)
    before, out = numba.get_num_threads(), []
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            for fo in (False, True):
                loss, g = mamlnp.meta_gradient(model, theta, batch, 0.4, 1, fo, backend="numba")
                out.append((loss, g.tobytes()))
    finally:
        numba.set_num_threads(before)
    assert out[:2] == out[2:]


def test_groups_depend_on_T_only():
    for T in (1, 7, 8, 9, 16, 17, 25, 32, 33):
        runs = [group_range(T, i) for i in range(ngroups(T))]
        sizes = [n for _, n in runs]
        assert sum(sizes) == T and max(sizes) <= GMAX and max(sizes) - min(sizes) <= 1
        assert [t0 for t0, _ in runs] == list(np.cumsum([0] + sizes[:-1]))


# ---- the first layer against NumPy -------------------------------------------------------


def rows_of(batch, W1, sparse):
    T, D = batch.x_support.shape[0], W1.shape[0]
    xs, xq = (FC.flat(a) for a in (batch.x_support, batch.x_query))
    M_ = (xs.size + xq.size) // D
    return Rows(sparse, xs.ravel(), xq.ravel(), W1.ravel(), np.zeros(M_, np.int64),
                np.zeros((M_, D), np.int32), np.zeros((M_, D))), xs.reshape(-1, D), \
        xq.reshape(-1, D)


@pytest.mark.parametrize("sparse", [True, False])
def test_first_layer_rows_and_grams_match_numpy(sparse):
    rng = np.random.default_rng(7)
    T, N, K, Q, D, H = 5, 3, 2, 3, 30, 11
    batch = episodes(rng, T, N, K, Q, D, 0.2)
    W1 = rng.standard_normal((D, H))
    F, XS, XQ = rows_of(batch, W1, sparse)
    k, q = N * K, N * Q
    for t0, n in ((0, 2), (2, 3)):
        zs, zq = np.full(n * k * H, np.nan), np.full(n * q * H, np.nan)
        with one_blas_thread():
            group_rows(F, D, H, T, t0, n, k, q, zs, zq)
        assert rel(zs.reshape(-1, H), XS[t0 * k:(t0 + n) * k] @ W1) < TOL
        assert rel(zq.reshape(-1, H), XQ[t0 * q:(t0 + n) * q] @ W1) < TOL
        GRs = np.full((n, k * k + q * k), np.nan)
        with one_blas_thread():
            group_grams(F, t0, n, k, q, D, np.full(n * n * (k + q) * k, np.nan), GRs)
        for t in range(t0, t0 + n):
            GR = GRs[t - t0]
            xs_t, xq_t = XS[t * k:(t + 1) * k], XQ[t * q:(t + 1) * q]
            assert rel(GR[:k * k].reshape(k, k), xs_t @ xs_t.T) < TOL
            assert rel(GR[k * k:].reshape(q, k), xq_t @ xs_t.T) < TOL


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("support", [True, False])
def test_w1_gradient_pieces_match_numpy_and_split_to_the_same_bits(sparse, support):
    rng = np.random.default_rng(8)
    T, N, K, Q, D, H = 4, 2, 2, 1, 37, 6
    batch = episodes(rng, T, N, K, Q, D, 0.25)
    W1 = rng.standard_normal((D, H))
    F, XS, XQ = rows_of(batch, W1, sparse)
    k, q = N * K, N * Q
    group_rows(F, D, H, T, 0, T, k, q, np.empty(T * k * H), np.empty(T * q * H))  # packs
    E = rng.standard_normal((T * (k + q), H))
    want = (XQ.T @ E[T * k:] + (XS.T @ E[:T * k] if support else 0.0)) / T
    whole, parts = np.empty(D * H), np.empty(D * H)
    if sparse:
        row0 = 0 if support else T * k
        w1_grad_sparse(F, E, row0, T, whole, 0, D)
        for d0, d1 in ((0, 5), (5, 20), (20, D)):
            w1_grad_sparse(F, E, row0, T, parts, d0, d1)
    else:
        with one_blas_thread():
            w1_grad_dense(F, E.ravel(), T * k, T * q, H, D, support, T, whole, 0, NCH)
            for c0, c1 in ((0, 3), (3, NCH)):
                w1_grad_dense(F, E.ravel(), T * k, T * q, H, D, support, T, parts, c0, c1)
    assert rel(whole.reshape(D, H), want) < TOL
    assert whole.tobytes() == parts.tobytes()


# ---- BLAS on one thread ------------------------------------------------------------------


def test_one_blas_thread_restores_the_count_and_nests():
    fns = _scipy_openblas()
    if fns is None:
        with one_blas_thread() as pinned:
            assert pinned is False
        pytest.skip("SciPy's BLAS is not an OpenBLAS this module can find")
    get, put = fns
    before = get()
    try:
        put(2)
        with one_blas_thread() as outer:
            assert outer is True and get() == 1
            with one_blas_thread():
                assert get() == 1
            assert get() == 1
        assert get() == 2
        with pytest.raises(RuntimeError):
            with one_blas_thread():
                raise RuntimeError("inside")
        assert get() == 2
    finally:
        put(before)
