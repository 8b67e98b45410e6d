"""The batch-norm MLP as a model of MAML: its layout, init, config and checkpoint, where its
statistics come from, its meta-gradient through s = 1 … 5 inner steps on both backends,
and the paper's classification network.

Dimension legend: N points, D in, O out, P parameters, T tasks, K support, Q query, s inner steps.

Relative errors are printed (``pytest -s``); the tolerance against centred finite
differences is 1e-6. The layer and the network's own derivatives: tests/test_batchnorm.py.
"""
import json

import numpy as np
import pytest

from mamlnp import MLP, InputError
from mamlnp.check import gradcheck as GC
from mamlnp.meta.maml import adapt, meta_gradient, meta_loss
from mamlnp.nn.mlp import BN_EPS
from mamlnp.tasks.base import TaskBatch

ACTS = ["relu", "tanh", "softplus"]
TOL = 1e-6


def bn_case(seed, sizes, activation, loss="mse", n=6):
    """(model, θ, x, y): gradcheck's case drawing (γ, β jittered, ReLU margin 1e-3)."""
    return GC.draw_case(seed, sizes, activation, loss, n=n, batch_norm=True)


# ---- layout, config, checkpoint -----------------------------------------------------------


def test_layout_in_documented_order_and_flatten_inverts():
    model = MLP((2, 3, 4, 1), "tanh", batch_norm=True)
    assert model.num_params == (2 * 3 + 3 + 3 + 3) + (3 * 4 + 4 + 4 + 4) + (4 + 1) == 44
    theta = np.arange(44, dtype=float)
    (W1, b1, g1, be1), (W2, b2, g2, be2), (W3, b3) = model.unflatten(theta)
    np.testing.assert_array_equal(W1, np.arange(6.0).reshape(2, 3))      # row-major
    assert (b1[0], g1[0], be1[0], W2[0, 0], be2[-1], W3[0, 0], b3[0]) == (6, 9, 12, 15, 38, 39, 43)
    np.testing.assert_array_equal(model.flatten(model.unflatten(theta)), theta)
    with pytest.raises(InputError, match="gamma, beta"):
        model.flatten([(W1, b1), (W2, b2), (W3, b3)])
    with pytest.raises(InputError, match=r"gamma_1"):
        model.flatten([(W1, b1, g1[:2], be1), (W2, b2, g2, be2), (W3, b3)])


@pytest.mark.parametrize("scheme", ["uniform", "normal"])
def test_init_gamma_one_beta_zero(scheme):
    model = MLP((3, 5, 4, 2), batch_norm=True)
    for W, b, *gb in model.unflatten(model.init(0, scheme=scheme)):
        if gb:
            assert np.all(gb[0] == 1.0) and np.all(gb[1] == 0.0)


def test_config_round_trips_and_plain_config_unchanged():
    for model in (MLP((2, 3, 1), "tanh", batch_norm=True),
                  MLP((2, 3, 1), "relu", "softmax_xent", batch_norm=True, bn_eps=1e-5)):
        config = json.loads(json.dumps(model.config()))
        again = MLP(**config)
        assert config["batch_norm"] is True and config["bn_eps"] == model.bn_eps
        assert repr(again) == repr(model) and again.num_params == model.num_params
    assert MLP((2, 3, 1)).config() == {"sizes": [2, 3, 1], "activation": "relu", "loss": "mse"}
    assert MLP((2, 3, 1)).bn_eps == BN_EPS == 1e-3 and MLP((2, 3, 1)).batch_norm is False


def test_checkpoint_carries_the_flag(tmp_path):
    from mamlnp.run.checkpoint import load_checkpoint, save_checkpoint
    model, theta, x, y = bn_case(0, (3, 4, 2), "tanh", "mse")
    model = MLP((3, 4, 2), "tanh", batch_norm=True, bn_eps=1e-4)
    save_checkpoint(tmp_path, {"model": model.config(), "method": "maml", "alpha": 0.1},
                    {"theta": theta})
    loaded, theta2, _ = load_checkpoint(tmp_path)
    assert loaded.batch_norm is True and loaded.bn_eps == 1e-4
    assert loaded.loss(theta2, x, y) == model.loss(theta, x, y)


# ---- statistics from the batch being normalised --------------------------------------------


def test_statistics_come_from_the_batch_and_query_is_one_batch():
    """Each point's output depends on the rest of its batch; the meta-loss evaluates the
    adapted θ on the query set as one batch (its own statistics, no running averages)."""
    model, theta, x, y = bn_case(0, (2, 4, 1), "tanh", "mse", n=8)
    assert not np.allclose(model.forward(theta, x[:4]), model.forward(theta, x)[:4])
    xs, ys, xq, yq = x[None, :4], y[None, :4], x[None, 4:], y[None, 4:]
    batch = TaskBatch.make(xs, ys, xq, yq)
    adapted = adapt(model, theta, xs[0], ys[0], 0.1, 3)
    assert meta_loss(model, theta, batch, 0.1, 3) == pytest.approx(model.loss(adapted, xq[0], yq[0]), rel=1e-14)


# ---- the meta-gradient ---------------------------------------------------------------------


def meta_case(seed, activation, loss="mse"):
    model, theta, _, _ = bn_case(seed, (2, 5, 4, 1 if loss == "mse" else 3), activation, loss)
    rng = np.random.default_rng([seed, 5])
    x = rng.standard_normal((2, 11, 2))                                  # (T, K+Q, D)
    if loss == "mse":
        y = np.sin(x.sum(axis=2, keepdims=True) + rng.uniform(0, np.pi, (2, 1, 1)))
    else:
        y = np.eye(3)[np.argmax(x @ rng.standard_normal((2, 2, 3)), axis=2)]
    return model, theta, TaskBatch.make(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
@pytest.mark.parametrize("s", [1, 2, 3, 4, 5])
def test_meta_gradient_matches_fd_and_first_order_differs(fd, activation, s):
    """Smooth activations: the full FD of the meta-loss; ReLU's kinks are handled by the
    gradcheck rows, whose cases keep every iterate's margin (test below). ε = 1e-6, as in
    gradcheck's batch-norm rows: batch norm over K = 5 support points makes the meta-loss
    strongly curved, and at ε = 1e-5 the FD's O(ε²) truncation alone reaches ~1e-6 here."""
    model, theta, batch = meta_case(s, activation)
    g_fd = fd.num_grad(lambda t: meta_loss(model, t, batch, 0.1, s), theta, eps=1e-6)
    _, so = meta_gradient(model, theta, batch, 0.1, s, backend="numpy")
    _, fo = meta_gradient(model, theta, batch, 0.1, s, first_order=True, backend="numpy")
    err, gap = fd.rel_error(so, g_fd), fd.rel_error(fo, g_fd)
    print(f"BN meta-gradient {activation} s={s}: SO vs FD {err:.1e}, FO vs FD {gap:.1e}")
    assert err < TOL and gap > 1e-4


@pytest.mark.parametrize("activation", ACTS)
def test_meta_gradient_rows_of_the_command_pass(activation):
    """The gradcheck rows for batch norm (ReLU cases keep every iterate 1e-3 from the kink),
    s = 1…5, SO against FD and FO required to differ."""
    rows = GC.meta_checks(activation, 0, quick=False, backend="numpy", batch_norm=True)
    worst = max(r.rel_err for r in rows if r.expect == "agree")
    print(f"BN meta rows {activation}: worst agree-row rel error {worst:.1e}")
    assert len(rows) == 18 and all(r.passed for r in rows)


@pytest.mark.parametrize("first_order", [False, True])
def test_numba_backend_matches_the_reference(first_order):
    """backend="numba" on a batch-norm MLP runs the factored kernels of its kernel set,
    mamlnp/fast/bn_mlp/ (tests/test_classify_kernels.py has the rest): the reference's numbers
    to 1e-12."""
    from mamlnp.fast.bn_mlp.kernelset import BNMLPKernels
    from mamlnp.meta.maml import kernels_for
    model, theta, batch = meta_case(0, "softplus")
    assert isinstance(kernels_for(model, "numba"), BNMLPKernels)
    for s in (1, 3, 5):
        a = meta_gradient(model, theta, batch, 0.1, s, first_order, backend="numba")
        b = meta_gradient(model, theta, batch, 0.1, s, first_order, backend="numpy")
        assert abs(a[0] - b[0]) <= 1e-12 * abs(b[0])
        assert np.abs(a[1] - b[1]).max() <= 1e-12 * np.abs(b[1]).max()


def test_softmax_xent_meta_gradient(fd):
    model, theta, batch = meta_case(0, "tanh", "softmax_xent")
    _, g = meta_gradient(model, theta, batch, 0.1, 2)
    err = fd.rel_error(g, fd.num_grad(lambda t: meta_loss(model, t, batch, 0.1, 2), theta))
    print(f"BN softmax_xent meta-gradient s=2: rel error {err:.1e}")
    assert err < TOL


# ---- the paper's network -----------------------------------------------------------------


def test_paper_network_builds_and_its_gradient_checks():
    """"MAML, no conv" (Finn et al. 2017, sec. 5.2), 5-way: 784-256-128-64-64-5, BN, ReLU."""
    model = MLP((784, 256, 128, 64, 64, 5), activation="relu", loss="softmax_xent", batch_norm=True)
    dense = sum((i + 1) * o for i, o in zip(model.sizes[:-1], model.sizes[1:]))
    assert model.num_params == dense + 2 * (256 + 128 + 64 + 64) == 247621
    rows = GC.paper_net_checks(0)
    for r in rows:
        print(f"{r.label}: rel error {r.rel_err:.1e}")
    assert len(rows) == 2 and all(r.status == "PASS" for r in rows)
