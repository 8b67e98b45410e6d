"""The convolutional layers by hand (mamlnp/nn/conv.py) and ConvNet's loss, gradient and HVP
(mamlnp/nn/convnet.py) against direct sums and centred finite differences. The meta-gradient,
the family, the API and bad input: tests/test_conv_meta.py.

Dimension legend: N images, H × Wd their size, C channels in, F filters, P parameters.

Shapes are small and odd (H = 7, Wd = 5); strides 1, 2, 3 and paddings 0, 1, 2. The finite
differences are conftest's (``fd``), independent of mamlnp.check. Tolerances: 1e-6 against
centred FD (the errors met are 1e-12 to 1e-9, printed with ``pytest -s``), 1e-12 for
direct sums and symmetry. Derivation: docs/derivations/conv.md.
"""
import numpy as np
import pytest

from mamlnp import ConvNet
from mamlnp.check import convcheck as CC
from mamlnp.nn import batchnorm as BN
from mamlnp.nn import conv as CV

TOL = 1e-6
GEOMS = [(1, 0, 3, 3), (2, 1, 3, 3), (2, 0, 3, 3), (3, 2, 3, 3), (1, 1, 2, 3), (2, 1, 1, 1)]
geoms = pytest.mark.parametrize("stride,pad,kh,kw", GEOMS,
                                ids=[f"s{s}p{p}k{a}x{b}" for s, p, a, b in GEOMS])


def direct_conv(x, W, b, stride, pad):
    """z[n, i, j, f] = b_f + Σ_{c,a,b'} W[f, c, a, b'] x_pad[n, s i + a, s j + b', c], by loops."""
    N, H, Wd, C = x.shape
    F, _, kh, kw = W.shape
    xp = np.zeros((N, H + 2 * pad, Wd + 2 * pad, C))
    xp[:, pad:pad + H, pad:pad + Wd] = x
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (Wd + 2 * pad - kw) // stride + 1
    z = np.empty((N, Ho, Wo, F))
    for n, i, j, f in np.ndindex(N, Ho, Wo, F):
        patch = xp[n, stride * i:stride * i + kh, stride * j:stride * j + kw, :]   # (kh, kw, C)
        z[n, i, j, f] = b[f] + np.sum(W[f] * patch.transpose(2, 0, 1))
    return z


def conv_case(seed, kh=3, kw=3, C=2, F=3):
    rng = np.random.default_rng(seed)
    return (rng, rng.standard_normal((2, 7, 5, C)), rng.standard_normal((F, C, kh, kw)),
            rng.standard_normal(F))


# ---- the convolution ---------------------------------------------------------------------


@geoms
def test_conv_forward_is_the_direct_sum(stride, pad, kh, kw):
    _, x, W, b = conv_case(0, kh, kw)
    z, _ = CV.conv_forward(x, W, b, stride, pad)
    want = direct_conv(x, W, b, stride, pad)
    assert z.shape == want.shape
    np.testing.assert_allclose(z, want, rtol=0, atol=1e-12 * np.abs(want).max())


@geoms
def test_col2im_is_the_adjoint_of_im2col(stride, pad, kh, kw):
    rng, x, _, _ = conv_case(1, kh, kw)
    cols = CV.im2col(x, kh, kw, stride, pad)
    Y = rng.standard_normal(cols.shape)
    lhs, rhs = np.sum(cols * Y), np.sum(x * CV.col2im(Y, x.shape, kh, kw, stride, pad))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


@geoms
def test_conv_four_passes_vs_fd(fd, stride, pad, kh, kw):
    """backward vs FD of ⟨G, z⟩; R-forward vs FD of z; R-backward vs FD of the backward, along
    (Rx, V_W, V_b) and R{G}; and with Rx = None (the input image) as Rx = 0."""
    rng, x, W, b = conv_case(2, kh, kw)
    z, cache = CV.conv_forward(x, W, b, stride, pad)
    G, RG = rng.standard_normal((2,) + z.shape)
    Rx, VW, Vb = rng.standard_normal(x.shape), rng.standard_normal(W.shape), rng.standard_normal(b.shape)
    dx, dW, db = CV.conv_backward(G, cache)
    for got, arg in ((dx, 0), (dW, 1), (db, 2)):
        def f(a, arg=arg):
            args = [x, W, b]
            args[arg] = a
            return np.sum(G * CV.conv_forward(*args, stride, pad)[0])
        err = fd.rel_error(got, fd.num_grad(f, [x, W, b][arg]))
        print(f"conv s={stride} p={pad} d{['x', 'W', 'b'][arg]}: {err:.1e}")
        assert err < TOL
    move = lambda r: CV.conv_forward(x + r * Rx, W + r * VW, b + r * Vb, stride, pad)   # noqa: E731
    along = lambda f: fd.num_dir(f, 0.0, 1.0)                            # noqa: E731  d/dr at 0
    flat = lambda arrays: np.concatenate([a.ravel() for a in arrays])    # noqa: E731
    err_f = fd.rel_error(CV.conv_rforward(Rx, cache, VW, Vb), along(lambda r: move(r)[0]))
    err_b = fd.rel_error(flat(CV.conv_rbackward(RG, G, Rx, cache, VW)),
                         along(lambda r: flat(CV.conv_backward(G + r * RG, move(r)[1]))))
    move0 = lambda r: CV.conv_forward(x, W + r * VW, b + r * Vb, stride, pad)   # noqa: E731
    err_0 = fd.rel_error(CV.conv_rforward(None, cache, VW, Vb), along(lambda r: move0(r)[0]))
    print(f"conv s={stride} p={pad}: R-forward {err_f:.1e}, R-backward {err_b:.1e}, Rx=None {err_0:.1e}")
    assert max(err_f, err_b, err_0) < TOL


# ---- batch norm over (N, H, W), max-pool, the spatial mean, the flatten ---------------------


def test_batchnorm2d_normalises_each_channel_over_images_and_pixels():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 5, 4, 2)) * [2.0, 0.5] + [1.0, -3.0]    # (N, H, Wd, C)
    gamma, beta = np.array([1.5, 0.5]), np.array([0.2, -0.1])
    y, _ = CV.batchnorm2d_forward(z, gamma, beta, 1e-3)
    mu, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))            # biased, per channel
    np.testing.assert_allclose(y, gamma * (z - mu) / np.sqrt(var + 1e-3) + beta, atol=1e-13)


def test_batchnorm2d_is_batchnorm_on_pixel_rows():
    """The 2-D passes are nn/batchnorm.py's on the (N·H·Wd, C) rows, bit for bit."""
    rng = np.random.default_rng(4)
    z, dy, Rz, Rdy = rng.standard_normal((4, 2, 3, 5, 4))
    g, e, Vg, Vb = rng.standard_normal((4, 4))
    y, cache = CV.batchnorm2d_forward(z, g, e, 1e-3)
    y2, cache2 = BN.batchnorm_forward(z.reshape(-1, 4), g, e, 1e-3)
    assert np.array_equal(y.reshape(-1, 4), y2)
    assert np.array_equal(CV.batchnorm2d_backward(dy, cache)[0].reshape(-1, 4),
                          BN.batchnorm_backward(dy.reshape(-1, 4), cache2)[0])
    assert np.array_equal(CV.batchnorm2d_rbackward(Rdy, dy, Rz, cache, Vg)[1],
                          BN.batchnorm_rbackward(Rdy.reshape(-1, 4), dy.reshape(-1, 4),
                                                 Rz.reshape(-1, 4), cache2, Vg)[1])


def test_maxpool_forward_by_loops_and_odd_sizes():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 7, 5, 3))                               # odd: row 6, column 4 dropped
    m, _ = CV.maxpool_forward(a)
    assert m.shape == (2, 3, 2, 3)
    for n, i, j, c in np.ndindex(m.shape):
        assert m[n, i, j, c] == a[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].max()


@pytest.mark.parametrize("layer", ["conv s=1 p=0", "conv s=2 p=1", "batch norm over (N, H, W)",
                                   "max-pool 2x2", "spatial mean", "flatten"])
def test_layer_passes_vs_fd(fd, layer):
    """Each layer's backward, R-forward and R-backward vs conftest's FD, on the specs the
    gradcheck rows use (7×5 images, distinct window values for the pool)."""
    inputs, fwd, bwd, rfwd, rbwd = CC._layer_specs(np.random.default_rng(6))[layer]
    rng = np.random.default_rng(7)
    y, cache = fwd(*inputs)
    G, RG = rng.standard_normal((2,) + y.shape)
    R = [rng.standard_normal(a.shape) for a in inputs]
    move = lambda r: fwd(*[a + r * d for a, d in zip(inputs, R)])        # noqa: E731
    flat = lambda arrays: np.concatenate([np.ravel(a) for a in arrays])  # noqa: E731
    along = lambda f: fd.num_dir(f, 0.0, 1.0)                            # noqa: E731  d/dr at 0
    errs = [fd.rel_error(flat(bwd(G, cache)) @ flat(R), along(lambda r: np.sum(G * move(r)[0]))),
            fd.rel_error(rfwd(R, cache), along(lambda r: move(r)[0])),
            fd.rel_error(flat(rbwd(RG, G, R, cache)), along(lambda r: flat(bwd(G + r * RG, move(r)[1]))))]
    print(f"{layer}: backward {errs[0]:.1e}, R-forward {errs[1]:.1e}, R-backward {errs[2]:.1e}")
    assert max(errs) < TOL


def test_flatten_is_in_channel_row_column_order():
    h = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)      # (N, H, Wd, C)
    f, _ = CV.flatten_forward(h)
    assert np.array_equal(f, h.transpose(0, 3, 1, 2).reshape(2, -1))   # (N, C·H·Wd)


def test_a_wrong_r_backward_fails_the_layer_check():
    """The gradcheck rows can fail: a convolution R-backward without the dz V_Wᵀ term of Rdx
    (the cross term of the product rule) fails its row, and only that row."""
    inputs, fwd, bwd, rfwd, _ = CC._layer_specs(np.random.default_rng(8))["conv s=2 p=1"]

    def broken(RG, G, R, c):                             # c = (dense cache, x shape, geometry)
        Rdx, RdW, Rdb = CV.conv_rbackward(RG, G, R[0], c, R[1])
        cross = CV.col2im(CV._rows(G) @ CV._matrix(R[1]).T, c[1], *c[2])  # the dz V_Wᵀ term
        return Rdx - cross, RdW, Rdb
    rows = CC.check_layer("broken", (inputs, fwd, bwd, rfwd, broken))
    assert [r.passed for r in rows] == [True, True, False]


# ---- the network ---------------------------------------------------------------------------


def direct_convnet(model, theta, x):
    """ŷ by direct sums from unflatten's blocks: conv (direct_conv), batch norm by its formula,
    σ = ReLU, the 2×2 max-pool by loops, the spatial mean or the (C, H, Wd) flatten, the head."""
    blocks, (Wh, bh) = model.unflatten(theta)
    C, H, Wd = model.in_shape
    h = x.reshape(-1, C, H, Wd).transpose(0, 2, 3, 1)
    for W, b, g, e in blocks:
        z = direct_conv(h, W, b, model.stride, model.pad)
        mu, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        h = np.maximum(g * (z - mu) / np.sqrt(var + model.bn_eps) + e, 0.0)
        if model.pool:
            N, Hh, Ww, F = h.shape
            h = np.array([[[[h[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, f].max() for f in range(F)]
                            for j in range(Ww // 2)] for i in range(Hh // 2)] for n in range(N)])
    f = h.mean(axis=(1, 2)) if model.head == "mean" else h.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return f @ Wh + bh


VARIANTS = {"s2 p1 mean": {}, "s1 p0 mean": {"stride": 1, "pad": 0},
            "k2 s2 p0 mean": {"kernel": 2, "pad": 0},
            "s1 p1 pool flatten": {"stride": 1, "pool": True, "head": "flatten"},
            "s1 p1 pool mean": {"stride": 1, "pool": True}}
variants = pytest.mark.parametrize("variant", list(VARIANTS))


def net_case(variant, seed=0, activation="relu", loss="softmax_xent"):
    """(model, θ, x (6, 70), y) at ReLU/pool margin > 1e-4 (convcheck's draw)."""
    model, theta, batch = CC.draw_conv_case(seed, VARIANTS[variant], activation, loss, steps=0)
    xs, ys, xq, yq = batch.task(0)
    return model, theta, np.concatenate([xs, xq]), np.concatenate([ys, yq])


@variants
def test_convnet_forward_is_the_direct_network(variant):
    model, theta, x, _ = net_case(variant)
    want = direct_convnet(model, theta, x)
    np.testing.assert_allclose(model.forward(theta, x), want, rtol=0, atol=1e-12 * np.abs(want).max())


@variants
def test_convnet_gradient_and_hvp_vs_fd(fd, variant):
    model, theta, x, y = net_case(variant)
    _, g = model.loss_and_grad(theta, x, y)
    err_g = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, x, y), theta, eps=1e-6))
    v = np.random.default_rng(9).standard_normal(model.num_params)
    v /= np.linalg.norm(v)
    err_h = fd.rel_error(model.hvp(theta, x, y, v),
                         fd.num_dir(lambda t: model.loss_and_grad(t, x, y)[1], theta, v, 1e-6))
    print(f"{variant}: gradient {err_g:.1e}, HVP {err_h:.1e}")
    assert err_g < TOL and err_h < TOL


@pytest.mark.parametrize("activation,loss", [("tanh", "mse"), ("softplus", "softmax_xent")])
def test_smooth_convnet_dense_hessian_vs_fd_and_symmetric(fd, activation, loss):
    """The dense H from P HVPs vs FD of the gradient, column by column, on a smooth net
    (no kink), and ‖H − Hᵀ‖ / ‖H‖."""
    model = ConvNet((1, 5, 4), (2, 3), 2, activation=activation, loss=loss)
    rng = np.random.default_rng(10)
    theta = model.init(3) + 0.3 * rng.standard_normal(model.num_params)
    x = rng.standard_normal((4, 20))
    y = rng.standard_normal((4, 2)) if loss == "mse" else np.eye(2)[[0, 1, 1, 0]]
    E = np.eye(model.num_params)
    H = np.array([model.hvp(theta, x, y, e) for e in E]).T                   # (P, P)
    FD = np.array([fd.num_dir(lambda t: model.loss_and_grad(t, x, y)[1], theta, e) for e in E]).T
    err, sym = fd.rel_error(H, FD), np.linalg.norm(H - H.T) / np.linalg.norm(H)
    print(f"{activation}/{loss} P={model.num_params}: Hessian vs FD {err:.1e}, asymmetry {sym:.1e}")
    assert err < TOL and sym < 1e-12


@variants
def test_convnet_hvp_symmetric_and_linear(variant):
    model, theta, x, y = net_case(variant)
    u, v = np.random.default_rng(11).standard_normal((2, model.num_params))
    Hu, Hv = model.hvp(theta, x, y, u), model.hvp(theta, x, y, v)
    assert abs(u @ Hv - v @ Hu) <= 1e-12 * np.linalg.norm(Hu) * np.linalg.norm(v)
    np.testing.assert_allclose(model.hvp(theta, x, y, 2 * u - 3 * v), 2 * Hu - 3 * Hv,
                               rtol=0, atol=1e-12 * np.abs(Hu).max())


def test_grad_and_hvp_shares_the_pass():
    model, theta, x, y = net_case("s2 p1 mean")
    v = np.random.default_rng(12).standard_normal(model.num_params)
    loss, g, Hv = model.grad_and_hvp(theta, x, y, v)
    loss2, g2 = model.loss_and_grad(theta, x, y)
    assert loss == loss2 and np.array_equal(g, g2)
    assert np.array_equal(Hv, model.hvp(theta, x, y, v))


def test_block_biases_have_zero_gradient_under_batch_norm():
    """b_l is redundant under batch norm (docs/derivations/batchnorm.md §4): its gradient and
    its rows of H v are rounding residues, far below the rest."""
    model, theta, x, y = net_case("s2 p1 mean")
    g = model.loss_and_grad(theta, x, y)[1]
    Hv = model.hvp(theta, x, y, np.random.default_rng(13).standard_normal(model.num_params))
    for (_, (b0, b1), _), bn in zip(model.layout, model.bn_layout):
        if bn is not None:
            assert np.abs(g[b0:b1]).max() < 1e-13 * np.abs(g).max()
            assert np.abs(Hv[b0:b1]).max() < 1e-13 * np.abs(Hv).max()


def test_a_wrong_r_forward_fails_the_network_hvp_row_only(monkeypatch):
    """A convolution R-forward that forgets X V_W: the gradient row still passes, the HVP row
    of mamlnp.check.gradcheck fails (the network rows can fail)."""
    from mamlnp.check import gradcheck as GC
    from mamlnp.nn import convnet as CN
    model, theta, x, y = net_case("s2 p1 mean")
    right = CV.conv_rforward
    monkeypatch.setattr(CN.CV, "conv_rforward", lambda Rx, c, VW, Vb: right(Rx, c, 0 * VW, Vb))
    rows = [GC.check_gradient(model, theta, x, y, 1e-6), GC.check_hvp(model, theta, x, y, eps=1e-6)]
    print([f"{r.label}: {r.rel_err:.1e} {r.status}" for r in rows])
    assert [r.passed for r in rows] == [True, False]
