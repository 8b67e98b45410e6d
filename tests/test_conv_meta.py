"""ConvNet through the meta-learning code: the exact meta-gradient against finite differences of
the meta-loss, first order, both backends, FOMAML, Reptile, ANIL, MAML++; and ConvNet's API:
the paper's geometry, the layout, init, config, bad input.

Dimension legend: T tasks, K support images, Q query images, P parameters, s = inner_steps.

Finite differences are conftest's (``fd``); tolerance 1e-6 (errors met ~1e-9, printed with
``pytest -s``). Cases: tiny nets on odd 7×5 images (mamlnp.check.convcheck.draw_conv_case),
every inner iterate at ReLU/pool margin > 1e-4, FD step 1e-6.
"""
import numpy as np
import pytest

import mamlnp
from mamlnp import ConvNet, InputError
from mamlnp.check import convcheck as CC
from mamlnp.check import familycheck as FC
from mamlnp.meta import anil, maml, mamlpp
from mamlnp.meta.variants import get_method

TOL, EPS, ALPHA = 1e-6, 1e-6, 0.1
POOL = {"stride": 1, "pool": True, "head": "flatten"}


def case(options=None, seed=0):
    return CC.draw_conv_case(seed, options)


@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("options", [None, POOL], ids=["s2p1-mean", "s1p1-pool-flatten"])
def test_meta_gradient_vs_fd_of_the_meta_loss(fd, s, options):
    model, theta, batch = case(options)
    loss, g = mamlnp.meta_gradient(model, theta, batch, ALPHA, s, backend="numpy")
    want = fd.num_grad(lambda t: mamlnp.meta_loss(model, t, batch, ALPHA, s), theta, EPS)
    err = fd.rel_error(g, want)
    print(f"conv meta-gradient s={s} {options}: {err:.1e}")
    assert err < TOL and loss == mamlnp.meta_loss(model, theta, batch, ALPHA, s)


def test_first_order_is_the_query_gradient_at_the_adapted_theta_and_differs(fd):
    model, theta, batch = case()
    _, g_fo = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2, first_order=True, backend="numpy")
    want = np.mean([model.loss_and_grad(mamlnp.adapt(model, theta, xs, ys, ALPHA, 2), xq, yq)[1]
                    for xs, ys, xq, yq in (batch.task(t) for t in range(batch.num_tasks))], axis=0)
    np.testing.assert_allclose(g_fo, want, rtol=0, atol=1e-14 * np.abs(want).max())
    _, g_so = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2, backend="numpy")
    assert fd.rel_error(g_fo, g_so) > 1e-3                               # the Hessian terms matter


def test_adapt_is_plain_sgd_on_the_support_loss():
    model, theta, batch = case()
    xs, ys, _, _ = batch.task(1)
    th = theta.copy()
    for _ in range(3):
        th = th - ALPHA * model.loss_and_grad(th, xs, ys)[1]
    assert np.array_equal(mamlnp.adapt(model, theta, xs, ys, ALPHA, 3, backend="numpy"), th)


def test_the_default_backend_runs_the_conv_kernels_or_the_reference():
    """backend="numba" (the default) runs mamlnp/fast/conv/ for the Omniglot form (the same
    numbers as the reference to 1e-12; tests/test_conv_kernels.py checks it pass by pass) and
    the NumPy reference, the same bits, for the pool/flatten form."""
    model, theta, batch = case()
    assert maml.kernels_for(model, "numba") is not None
    a = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2)
    b = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2, backend="numpy")
    assert abs(a[0] - b[0]) <= 1e-12 * abs(b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-12 * np.abs(b[1]).max())
    xs, ys, _, _ = batch.task(0)
    a, b = (mamlnp.adapt(model, theta, xs, ys, ALPHA, 2, backend=k) for k in ("numba", "numpy"))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
    model, theta, batch = case(POOL)
    assert maml.kernels_for(model, "numba") is None
    a = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2)
    b = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2, backend="numpy")
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


# ---- the family ---------------------------------------------------------------------------

CONFIG = {"alpha": ALPHA, "inner_steps": 2, "first_order": False}


def test_fomaml_step_is_the_first_order_meta_gradient():
    model, theta, batch = case()
    params = {"theta": theta}
    loss, out = get_method("fomaml").step(model, params, batch, CONFIG, "numba")
    want = mamlnp.meta_gradient(model, theta, batch, ALPHA, 2, first_order=True, backend="numpy")
    assert abs(loss - want[0]) <= 1e-12 * abs(want[0])                 # compiled vs reference
    np.testing.assert_allclose(out["theta"], want[1], rtol=0, atol=1e-12 * np.abs(want[1]).max())


def test_reptile_step_is_theta_minus_the_mean_adapted_theta():
    model, theta, batch = case()
    _, out = get_method("reptile").step(model, {"theta": theta}, batch, CONFIG, "numba")
    adapted = []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        adapted.append(mamlnp.adapt(model, theta, np.concatenate([xs, xq]),
                                    np.concatenate([ys, yq]), ALPHA, 2, backend="numpy"))
    np.testing.assert_allclose(out["theta"], theta - np.mean(adapted, axis=0), rtol=0,
                               atol=1e-12 * np.abs(theta).max())        # compiled adapt_batch


@pytest.mark.parametrize("s", [1, 2])
def test_anil_both_paths_agree_and_match_fd_of_the_head_only_loss(fd, s):
    """The head path (the body once per set; ConvNet's _forward(stop=L−1) and _backprop) and the
    masked path (the full R-pass with α masked to the head) vs FD of the head-only objective."""
    model, theta, batch = case()
    _, g_head = anil.anil_gradient(model, theta, batch, ALPHA, s, path="head")
    _, g_mask = anil.anil_gradient(model, theta, batch, ALPHA, s, path="masked")
    want = fd.num_grad(lambda t: FC.head_only_meta_loss(model, t, batch, ALPHA, s), theta, EPS)
    errs = fd.rel_error(g_head, g_mask), fd.rel_error(g_head, want)
    print(f"ANIL conv s={s}: head vs masked {errs[0]:.1e}, vs FD {errs[1]:.1e}")
    assert errs[0] < 1e-12 and errs[1] < TOL
    (w0, _), (_, b1), (E, O) = model.layout[-1]
    assert (b1 - w0, b1) == (E * O + O, model.num_params)               # the head is last


def test_mamlpp_per_layer_steps_vs_fd(fd):
    """MAML++'s LSLR table has one column per block and one for the head (L = B + 1)."""
    model, theta, batch = case()
    lslr = np.random.default_rng(1).uniform(0.05, 0.15, (2, len(model.channels) + 1))
    _, g, g_lslr = mamlpp.mamlpp_gradient(model, theta, batch, lslr)
    want = fd.num_grad(lambda t: mamlpp.mamlpp_meta_loss(model, t, batch, lslr), theta, EPS)
    want_a = fd.num_grad(lambda a: mamlpp.mamlpp_meta_loss(model, theta, batch, a), lslr, EPS)
    errs = fd.rel_error(g, want), fd.rel_error(g_lslr, want_a)
    print(f"MAML++ conv: dM/dtheta {errs[0]:.1e}, dM/dalpha {errs[1]:.1e}")
    assert max(errs) < TOL


# ---- the API -------------------------------------------------------------------------------


def test_the_defaults_are_the_papers_omniglot_network():
    model = ConvNet()
    assert (model.in_shape, model.channels, model.ways) == ((1, 28, 28), (64,) * 4, 5)
    assert (model.kernel, model.stride, model.pad, model.pool, model.head) == (3, 2, 1, False, "mean")
    assert [m[1] for m in model.maps] == [(14, 14), (7, 7), (4, 4), (2, 2)]   # 28→14→7→4→2
    assert model.bn_eps == 1e-3 and model.loss_name == "softmax_xent" and model.batch_norm
    P = (64 * 1 * 9 + 3 * 64) + 3 * (64 * 64 * 9 + 3 * 64) + (64 * 5 + 5)
    assert model.num_params == P == 112261
    assert model.sizes[0] == 784 and model.sizes[-1] == 5


def test_unflatten_gives_views_in_the_issue_layout_and_flatten_inverts_it():
    model = ConvNet((2, 7, 5), (3, 4), 3)
    theta = np.arange(model.num_params, dtype=float)
    blocks, head = model.unflatten(theta)
    assert [tuple(a.shape for a in b) for b in blocks] == [((3, 2, 3, 3), (3,), (3,), (3,)),
                                                           ((4, 3, 3, 3), (4,), (4,), (4,))]
    assert [a.shape for a in head] == [(4, 3), (3,)]
    assert blocks[0][0][0, 0, 0, 1] == 1.0                               # W row-major, first
    blocks[1][2][0] = -1.0                                               # γ_2 writes through
    assert -1.0 in theta
    assert np.array_equal(model.flatten((blocks, head)), theta)
    with pytest.raises(InputError, match="^params"):
        model.flatten((blocks[:1], head))
    with pytest.raises(InputError, match=r"^params blocks\[0\] W"):
        model.flatten(([(np.zeros((3, 2, 3, 2)),) + blocks[0][1:], blocks[1]], head))


def test_init_follows_cbfinn_and_is_reproducible():
    model = ConvNet((1, 28, 28), (8, 8), 5)
    theta = model.init(0)
    assert np.array_equal(theta, model.init(0)) and not np.array_equal(theta, model.init(1))
    blocks, (Wh, bh) = model.unflatten(theta)
    for (W, b, g, e), c_in in zip(blocks, (1, 8)):
        bound = np.sqrt(6.0 / ((c_in + 8) * 9))                          # Xavier for conv2d
        assert np.abs(W).max() <= bound and np.abs(W).max() > 0.8 * bound
        assert not b.any() and np.all(g == 1.0) and not e.any()
    assert not bh.any() and 0.5 < Wh.std() < 1.5                         # head W ~ N(0, 1)


def test_config_rebuilds_the_model():
    model = ConvNet((3, 11, 10), (5, 6), 4, kernel=3, stride=1, pad=0, pool=True, head="flatten",
                    activation="tanh", bn_eps=1e-4)
    again = ConvNet(**model.config())
    assert again.config() == model.config() and again.num_params == model.num_params
    assert repr(again).startswith("ConvNet(in_shape=[3, 11, 10]")
    assert again.features == 6 * 1 * 1          # rows 11→9→4→2→1, columns 10→8→4→2→1


@pytest.mark.parametrize("kwargs,match", [
    ({"in_shape": (28, 28)}, "^in_shape"), ({"in_shape": (1, 0, 28)}, r"^in_shape\[1\]"),
    ({"channels": ()}, "^channels"), ({"channels": 64}, "^channels"), ({"ways": 0}, "^ways"),
    ({"kernel": 0}, "^kernel"), ({"stride": 0}, "^stride"), ({"pad": -1}, "^pad"),
    ({"pool": 1}, "^pool"), ({"head": "max"}, "^head"), ({"bn_eps": 0.0}, "^bn_eps"),
    ({"in_shape": (1, 4, 4), "channels": (2, 2), "pad": 0}, "^in_shape: expected images large enough"),
    ({"in_shape": (1, 5, 5), "stride": 1, "pool": True, "channels": (2, 2, 2)}, "^in_shape"),
    ({"channels": (2**31 - 1,) * 2}, "^in_shape and channels: expected a size whose arrays fit"),
    ({"in_shape": (2**31 - 1, 2**31 - 1, 3), "channels": (1,)}, "^in_shape and channels"),
])
def test_bad_arguments_are_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        ConvNet(**kwargs)


def test_bad_data_are_input_errors():
    model, theta, batch = case()
    xs, ys, _, _ = batch.task(0)
    with pytest.raises(InputError, match="^x"):
        model.loss(theta, xs[:, :-1], ys)
    with pytest.raises(InputError, match="^y"):
        model.loss(theta, xs, 2 * ys)                                    # not probability rows
    with pytest.raises(InputError, match="^theta"):
        model.loss(theta[:-1], xs, ys)
    with pytest.raises(InputError, match="^v"):
        model.hvp(theta, xs, ys, np.full(model.num_params, np.nan))
    with pytest.raises(InputError, match="^x"):
        model.forward(theta, np.zeros((0, model.sizes[0])))


def test_evaluation_curve_and_imaml_accept_a_convnet():
    """mamlnp.run.evaluate.adaptation_curve and mamlnp.imaml_gradient on the protocol alone."""
    from mamlnp.run.evaluate import adaptation_curve
    model, theta, batch = case()
    curve = adaptation_curve(model, theta, batch, ALPHA, 2)
    assert curve.shape == (batch.num_tasks, 3)
    xs, ys, xq, yq = batch.task(1)
    th2 = mamlnp.adapt(model, theta, xs, ys, ALPHA, 2, backend="numpy")
    assert curve[1, 0] == model.loss(theta, xq, yq) and curve[1, 2] == model.loss(th2, xq, yq)
    loss, g = mamlnp.imaml_gradient(model, theta, batch, ALPHA, 3, 2.0)
    assert np.isfinite(loss) and g.shape == (model.num_params,) and np.all(np.isfinite(g))


def test_the_miniimagenet_variant_geometry_on_synthetic_images():
    """cbfinn's MiniImageNet conv_block: 32 filters, stride 1 ('SAME' → padding 1 here), a 2×2
    max-pool, 84 → 42 → 21 → 10 → 5, the 5·5·32 maps flattened into the head. No MiniImageNet
    data here: two random 84×84 RGB images give a finite loss and gradient."""
    model = ConvNet((3, 84, 84), (32,) * 4, 5, stride=1, pool=True, head="flatten")
    assert [m[1] for m in model.maps] == [(42, 42), (21, 21), (10, 10), (5, 5)]
    assert model.features == 800
    assert model.num_params == (32 * 3 * 9 + 96) + 3 * (32 * 32 * 9 + 96) + (800 * 5 + 5) == 32901
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 3 * 84 * 84)), np.eye(5)[[1, 3]]
    loss, g = model.loss_and_grad(model.init(0), x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(g)) and np.abs(g).max() > 0
