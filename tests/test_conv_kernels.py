"""The ConvNet's compiled path (mamlnp/fast/conv/) against the NumPy reference: im2col/col2im
against mamlnp/nn/conv.py, each pass of the network (forward per block, loss and gradient,
R-forward, R-backward = H v) against mamlnp/nn/convnet.py, the set's meta-gradient (SO and
FO, s = 0…2), adapt, adapt_batch, adapt_curve, adapt_accuracy against mamlnp.meta.maml and
mamlnp.run.classify with backend="numpy", on small odd geometries and on the paper's
28×28 / 64-channel network; a per-parameter α (P,) (random, and masked off batch norm's γ, β:
``--inner-bn fixed``) likewise, a scalar α the same bits as np.full(P, α); the same bits on 1
and 2 threads; what is not compiled."""
import numba
import numpy as np
import pytest

from mamlnp.fast import kernels_for
from mamlnp.fast.bn_mlp.bn_kernels import Cache, RCache, bn_rbackward, bn_rforward
from mamlnp.fast.conv.bn2d import RCache2D, bn2d_rbackward
from mamlnp.fast.conv import conv_kernels as CK
from mamlnp.fast.conv.kernelset import geometry, sizes, workers, workspace_floats
from mamlnp.fast.conv.conv_maml import alloc_workspace
from mamlnp.fast.mlp.mlp_kernels import loss_and_dyhat, r_loss
from mamlnp.meta import maml as M
from mamlnp.nn import conv as CV
from mamlnp.nn import layers as LY
from mamlnp.nn.convnet import ConvNet, block_rforward
from mamlnp.run.classify import accuracy_curve_numpy
from mamlnp.tasks.base import TaskBatch

TOL = 1e-12

# small odd geometries: (in_shape, channels, stride, pad, activation, loss)
GEOMS = [((1, 9, 7), (3, 4), 1, 1, "relu", "softmax_xent"),
         ((2, 9, 7), (3, 4), 2, 0, "tanh", "softmax_xent"),
         ((1, 8, 11), (4, 3, 2), 2, 1, "softplus", "mse"),
         ((3, 7, 7), (5,), 1, 0, "relu", "softmax_xent")]


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)
    print(f"rel err {err:.2e}")
    return err


def model_of(case, ways=3):
    in_shape, channels, stride, pad, act, loss = case
    m = ConvNet(in_shape=in_shape, channels=channels, ways=ways, stride=stride, pad=pad,
                activation=act, loss=loss)
    theta = m.init(1) + 0.2 * np.random.default_rng(2).standard_normal(m.num_params)
    return m, theta


def episodes(rng, m, T, K, Q):
    """T ``ways``-way episodes of K support and Q query images per class (one-hot labels)."""
    N, D = m.ways, m.sizes[0]
    return TaskBatch(rng.standard_normal((T, N * K, D)), np.tile(np.eye(N), (T, K, 1)),
                     rng.standard_normal((T, N * Q, D)), np.tile(np.eye(N), (T, Q, 1)))


def buffers(m, N):
    """A Cache, an RCache, patches, R-patches and col2im scratch for one pass over N images."""
    g = geometry(m)
    P, MS, CS, Fs, DCM = sizes(g)
    c = Cache(*(np.full(N * MS, np.nan) for _ in range(6)), np.full(Fs, np.nan))
    rc = RCache2D(*(np.full(N * MS, np.nan) for _ in range(6)), np.full(Fs, np.nan),
                  np.full(4 * Fs, np.nan))
    return g, c, rc, np.full(N * CS, np.nan), np.full(N * CS, np.nan), np.full(N * DCM, np.nan)


# ---- im2col and col2im against mamlnp/nn/conv.py ------------------------------------------


@pytest.mark.parametrize("case", GEOMS)
def test_im2col_and_col2im_match_the_reference(case):
    m, _ = model_of(case)
    g, rng, N = geometry(m), np.random.default_rng(0), 3
    k, st, p = m.kernel, m.stride, m.pad
    for l in range(len(m.channels)):
        H, Wd, C, Ho, Wo, F = (int(v) for v in g.blk[l])
        x = rng.standard_normal((N, H, Wd, C))
        J = C * k * k
        cols = np.full(5 + N * Ho * Wo * J, np.nan)
        CK.im2col(g, l, x.ravel(), 0, False, N, cols, 5)
        want = CV.im2col(x, k, k, st, p)
        assert rel(cols[5:], want.ravel()) == 0.0
        chw = np.full(N * Ho * Wo * J, np.nan)                     # the input rows' order
        CK.im2col(g, l, np.ascontiguousarray(x.transpose(0, 3, 1, 2)).ravel(), 0, True, N, chw, 0)
        assert rel(chw, want.ravel()) == 0.0
        d = rng.standard_normal((N * Ho * Wo, J))
        out = np.full(3 + x.size, np.nan)
        CK.col2im(g, l, d.ravel(), N, out, 3)
        assert rel(out[3:], CV.col2im(d, x.shape, k, k, st, p).ravel()) <= TOL


# ---- bn2d_rbackward: bn_kernels.bn_rbackward row by row, the same bits --------------------


@pytest.mark.parametrize("aid", [0, 1, 2])
def test_bn2d_rbackward_is_bn_rbackward_row_by_row(aid):
    rng, M, F = np.random.default_rng(aid), 37, 6
    c = Cache(*(rng.standard_normal(M * F) for _ in range(6)), rng.random(F) + 0.5)
    rcs = [kind(*(rng.standard_normal(M * F) for _ in range(6)), rng.standard_normal(F), *extra)
           for kind, extra in ((RCache, ()), (RCache2D, (np.full(4 * F, np.nan),)))]
    for f in range(3, 6):                                       # the same inputs in both
        rcs[1][f][:] = rcs[0][f]
    rcs[1].RXH[:], rcs[1].RY[:], rcs[1].Q[:] = rcs[0].RXH, rcs[0].RY, rcs[0].Q
    th, v = rng.standard_normal(2 * F + 2), rng.standard_normal(2 * F + 2)
    hvs = [np.full(2 * F + 2, np.nan) for _ in range(2)]
    bn_rbackward(c, rcs[0], th, v, 0, M, F, 2, 2 + F, 0, aid, hvs[0])
    bn2d_rbackward(c, rcs[1], th, v, 0, M, F, 2, 2 + F, 0, aid, hvs[1])
    assert np.array_equal(rcs[0].RDZ, rcs[1].RDZ) and np.array_equal(rcs[0].RDY, rcs[1].RDY)
    assert np.array_equal(hvs[0][2:], hvs[1][2:])


# ---- the network's passes against mamlnp/nn/convnet.py -------------------------------------


def reference_r(m, theta, x, v):
    """Rŷ of the reference's R-forward (ConvNet._rpass's first half)."""
    _, caches = m._forward(theta, x)
    V, B, Rh = m._unflatten(v), len(m.channels), None
    for l in range(B):
        Rh, _ = block_rforward(Rh, caches[l], V[l])
    Rf = CV.spatial_mean_forward(Rh)[0]
    return LY.dense_rforward(Rf, caches[B][1], *V[B])


@pytest.mark.parametrize("case", GEOMS)
def test_passes_match_the_reference(case):
    m, theta = model_of(case)
    rng, N, B = np.random.default_rng(1), 6, len(m.channels)
    x, y = rng.standard_normal((N, m.sizes[0])), np.eye(m.ways)[rng.integers(0, m.ways, N)]
    v = rng.standard_normal(m.num_params)
    g, c, rc, cols, rcols, dcols = buffers(m, N)
    CK.forward(g, theta, x.ravel(), N, c, cols)
    for l in range(B):                  # each block's h_l = σ(y_l); after the last, f (N, E)
        h, _ = m._forward(theta, x, stop=l + 1)
        a = c.A[N * g.moff[l + (l == B - 1)]:N * g.moff[l + 1 + (l == B - 1)]]
        assert rel(a, h.ravel()) <= TOL
    yo = N * g.moff[B + 1]
    assert rel(c.XH[yo:yo + N * m.ways], m.forward(theta, x).ravel()) <= TOL
    loss = loss_and_dyhat(c.XH, c.A, c.DZ, yo, y.ravel(), N, m.ways, g.loss_id)
    grad = np.full(m.num_params, np.nan)
    CK.backward(g, theta, N, c, cols, dcols, grad)
    want_loss, want_grad = m.loss_and_grad(theta, x, y)
    assert abs(loss - want_loss) <= TOL * abs(want_loss)
    assert rel(grad, want_grad) <= TOL
    CK.r_forward(g, theta, v, N, c, cols, rc, rcols)
    assert rel(rc.RXH[yo:yo + N * m.ways], reference_r(m, theta, x, v).ravel()) <= TOL
    r_loss(c.A, rc.RXH, rc.RDZ, yo, N, m.ways, g.loss_id)
    hv = np.full(m.num_params, np.nan)
    CK.r_backward(g, theta, v, N, c, cols, rc, rcols, dcols, hv)
    assert rel(hv, m.hvp(theta, x, y, v)) <= TOL


# ---- the set's methods against mamlnp.meta.maml (backend="numpy") ---------------------------


@pytest.mark.parametrize("case", GEOMS)
def test_meta_gradient_matches_the_reference(case):
    m, theta = model_of(case)
    batch = episodes(np.random.default_rng(3), m, 3, 2, 1)
    for s in (0, 1, 2):
        for fo in (False, True):
            want = M.meta_gradient(m, theta, batch, 0.3, s, fo, backend="numpy")
            got = M.meta_gradient(m, theta, batch, 0.3, s, fo, backend="numba")
            assert abs(got[0] - want[0]) <= TOL * abs(want[0])
            assert rel(got[1], want[1]) <= TOL, (s, fo)


@pytest.mark.parametrize("case", GEOMS[:2])
def test_adaptation_matches_the_reference(case):
    m, theta = model_of(case)
    batch = episodes(np.random.default_rng(4), m, 3, 1, 2)
    ks = kernels_for(m, "adapt")
    assert ks is not None
    xs, ys = batch.x_support[1], batch.y_support[1]
    assert rel(M.adapt(m, theta, xs, ys, 0.4, 3, backend="numba"),
               M.adapt(m, theta, xs, ys, 0.4, 3, backend="numpy")) <= TOL
    assert rel(ks.adapt_batch(theta, batch, 0.4, 2),
               M.adapt_batch_numpy(m, theta, batch, 0.4, 2)) <= TOL
    assert rel(ks.adapt_curve(theta, batch, 0.4, 3),
               M.adapt_curve_numpy(m, theta, batch, 0.4, 3)) <= TOL
    assert np.array_equal(ks.adapt_accuracy(theta, batch, 0.4, 3),
                          accuracy_curve_numpy(m, theta, batch, 0.4, 3))


def test_the_papers_network_on_one_tiny_batch():
    """28×28, 4 blocks of 64 filters, stride 2, padding 1: 5-way 1-shot, T = 2, s = 1."""
    m = ConvNet()
    theta = m.init(0)
    batch = episodes(np.random.default_rng(5), m, 2, 1, 1)
    for fo in (False, True):
        want = M.meta_gradient(m, theta, batch, 0.4, 1, fo, backend="numpy")
        got = M.meta_gradient(m, theta, batch, 0.4, 1, fo, backend="numba")
        assert abs(got[0] - want[0]) <= TOL * abs(want[0])
        assert rel(got[1], want[1]) <= TOL


# ---- a per-parameter α (P,): random, and masked off batch norm's γ, β -----------------------


def bn_mask(m):
    """m (P,): 0 on every block's γ, β (m.bn_layout), 1 elsewhere (written here, not imported)."""
    mask = np.ones(m.num_params)
    for bn in m.bn_layout:
        if bn is not None:
            (g0, g1), (e0, e1) = bn
            mask[g0:g1], mask[e0:e1] = 0.0, 0.0
    return mask


def step_vectors(m):
    """{name: α (P,)}: random positive steps, and 0.3 · the batch-norm mask."""
    rng = np.random.default_rng(7)
    return {"random": rng.uniform(0.05, 0.5, m.num_params), "bn masked": 0.3 * bn_mask(m)}


@pytest.mark.parametrize("case", GEOMS[:3])
def test_a_per_parameter_alpha_matches_the_reference(case):
    """SO and FO, s = 1, 2: meta-gradient, adapt, adapt_batch, curves against the NumPy path."""
    m, theta = model_of(case)
    batch = episodes(np.random.default_rng(8), m, 3, 2, 1)
    ks = kernels_for(m, "meta_gradient", np.ones(m.num_params))
    assert ks is not None and all(ks.provides(name, np.ones(2)) for name in (
        "meta_gradient", "meta_gradient_unchecked", "adapt", "adapt_batch", "adapt_curve",
        "adapt_accuracy"))
    for name, a in step_vectors(m).items():
        for s in (1, 2):
            for fo in (False, True):
                want = M.meta_gradient(m, theta, batch, a, s, fo, backend="numpy")
                got = M.meta_gradient(m, theta, batch, a, s, fo, backend="numba")
                assert abs(got[0] - want[0]) <= TOL * abs(want[0])
                assert rel(got[1], want[1]) <= TOL, (name, s, fo)
        assert rel(ks.adapt_batch(theta, batch, a, 2),
                   M.adapt_batch_numpy(m, theta, batch, a, 2)) <= TOL
        assert rel(ks.adapt_curve(theta, batch, a, 2),
                   M.adapt_curve_numpy(m, theta, batch, a, 2)) <= TOL
        assert np.array_equal(ks.adapt_accuracy(theta, batch, a, 2),
                              accuracy_curve_numpy(m, theta, batch, a, 2))
        xs, ys = batch.x_support[0], batch.y_support[0]
        assert rel(M.adapt(m, theta, xs, ys, a, 2, backend="numba"),
                   M.adapt(m, theta, xs, ys, a, 2, backend="numpy")) <= TOL


def test_the_masked_step_leaves_gamma_and_beta_where_they_are():
    """α masked off γ, β: every adapted θ'_t has θ's γ, β exactly (the kernels' own rows)."""
    m, theta = model_of(GEOMS[0])
    batch = episodes(np.random.default_rng(9), m, 3, 2, 1)
    mask = bn_mask(m)
    adapted = kernels_for(m, "adapt_batch", mask).adapt_batch(theta, batch, 0.3 * mask, 3)
    assert np.array_equal(adapted[:, mask == 0], np.tile(theta[mask == 0], (3, 1)))
    moved = adapted[:, mask == 1] != theta[mask == 1]     # (a conv bias before batch norm
    assert moved.mean() > 0.5                              # has zero gradient: it stays)


def test_a_scalar_alpha_is_the_full_vector_bit_for_bit():
    """A scalar α runs the (P,) kernels as np.full(P, α): the same bits (and so those of the
    scalar kernels before, checked when they changed), and the reference to 1e-12."""
    m, theta = model_of(GEOMS[1])
    batch = episodes(np.random.default_rng(10), m, 4, 2, 2)
    ks, full = kernels_for(m), np.full(m.num_params, 0.3)
    for s in (1, 2):
        for fo in (False, True):
            a, b = ks.meta_gradient(theta, batch, 0.3, s, fo), ks.meta_gradient(theta, batch,
                                                                              full, s, fo)
            assert a[0] == b[0] and np.array_equal(a[1], b[1]), (s, fo)
            want = M.meta_gradient(m, theta, batch, 0.3, s, fo, backend="numpy")
            assert rel(a[1], want[1]) <= TOL
    assert np.array_equal(ks.adapt_curve(theta, batch, 0.3, 3),
                          ks.adapt_curve(theta, batch, full, 3))


# ---- same bits, memory, what is not compiled ------------------------------------------------


def test_same_bits_on_one_and_two_threads():
    m, theta = model_of(GEOMS[1])
    batch = episodes(np.random.default_rng(6), m, 5, 2, 2)
    ks, n = kernels_for(m), numba.get_num_threads()
    ref = ks.meta_gradient(theta, batch, 0.3, 2, False)
    vectors = step_vectors(m)
    ref_vec = [ks.meta_gradient(theta, batch, a, 2, False) for a in vectors.values()]
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            got = ks.meta_gradient(theta, batch, 0.3, 2, False)
            assert got[0] == ref[0] and np.array_equal(got[1], ref[1]), f"{threads} threads"
            assert np.array_equal(ks.adapt_curve(theta, batch, 0.3, 2),
                                  M.adapt_curve(m, theta, batch, 0.3, 2, backend="numba"))
            for a, want in zip(vectors.values(), ref_vec):                  # α (P,)
                got = ks.meta_gradient(theta, batch, a, 2, False)
                assert got[0] == want[0] and np.array_equal(got[1], want[1]), threads
    finally:
        numba.set_num_threads(n)


def test_workspace_bytes_is_what_is_allocated():
    m, _ = model_of(GEOMS[2])
    g = geometry(m)
    for T, K, Q, S, R in ((3, 2, 5, 3, 2), (1, 4, 1, 2, 1)):
        ws = alloc_workspace(T, K, Q, *sizes(g), S=S, R=R)
        assert sum(a.size for a in ws) - 1 == workspace_floats(T, K, Q, *sizes(g), S=S, R=R)
    assert kernels_for(m, "workspace_bytes").workspace_bytes(3, 2, 5, 2) == \
        8 * workspace_floats(3, 2, 5, *sizes(g), S=3, R=workers(3))


def test_what_is_not_compiled_runs_the_reference():
    m, _ = model_of(GEOMS[0])
    assert kernels_for(m, "meta_gradient_alpha") is None                          # Meta-SGD's ∇α
    assert kernels_for(m, "meta_gradient_alpha", np.full(m.num_params, 0.1)) is None
    assert kernels_for(m, "train_step") is None
    for kw in (dict(pool=True), dict(head="flatten")):                      # MiniImageNet form
        other = ConvNet(in_shape=(1, 12, 12), channels=(3,), ways=2, stride=1, **kw)
        assert kernels_for(other) is None


def test_no_conv_kernel_takes_more_than_12_arguments():
    """Every @njit function of mamlnp/fast/conv/ (read with ast) takes at most 12 arguments."""
    import ast
    import pathlib
    counts = {}
    for path in sorted(pathlib.Path(CK.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                    "njit" in ast.unparse(d) for d in node.decorator_list):
                counts[f"{path.name}:{node.name}"] = len(node.args.args)
    assert len(counts) > 15                                 # the kernels were found
    longest = max(counts, key=counts.get)
    print(f"{len(counts)} compiled kernels; longest signature {longest}: {counts[longest]}")
    assert counts[longest] <= 12, {k: n for k, n in counts.items() if n > 12}
