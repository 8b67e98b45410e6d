"""ANIL (mamlnp.meta.anil): MAML with α masked to the head, checked as such.

Dimension legend: T tasks, K support, Q query, P parameters, s = inner_steps.

The head-only objective (mamlnp.check.familycheck.head_only_meta_loss) is written without
the mask: its finite differences check the masked meta-gradient (docs/derivations/anil.md).
"""
import numpy as np
import pytest

import mamlnp
from mamlnp import InputError, MLP
from mamlnp.check import familycheck as FC
from mamlnp.check.fdcheck import rel_error
from mamlnp.check.gradcheck import draw_meta_case
from mamlnp.meta import anil, maml
from mamlnp.meta.variants import get_method
from mamlnp.run import runconfig as RC


def test_the_mask_is_the_output_layer():
    model = MLP((1, 40, 40, 1))
    a = anil.anil_alpha(model, 0.3)
    (w0, w1), (b0, b1), (fi, fo) = model.layout[-1]
    assert a.shape == (model.num_params,) and np.all(a[w0:b1] == 0.3) and np.all(a[:w0] == 0)
    assert b1 == model.num_params and int(np.count_nonzero(a)) == fi * fo + fo == 41
    with pytest.raises(InputError, match="^alpha:"):
        anil.anil_alpha(model, -1.0)
    with pytest.raises(InputError, match="^alpha:"):
        anil.anil_alpha(model, np.ones(model.num_params))


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("s", [1, 2, 4])
@pytest.mark.parametrize("path", anil.PATHS)
def test_anil_gradient_matches_fd_of_the_head_only_objective(activation, batch_norm, s, path):
    model, theta, batch = draw_meta_case(0, activation, batch_norm=batch_norm)
    row = FC.check_anil(model, theta, batch, 0.1, s, eps=1e-6 if batch_norm else 1e-5, path=path)
    print(f"\n{path} {activation} bn={batch_norm} s={s}: rel {row.rel_err:.1e}")
    assert row.rel_err <= 1e-6


@pytest.mark.parametrize("loss", ["mse", "softmax_xent"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_the_head_path_is_mamls_masked_gradient(loss, activation, batch_norm, first_order):
    """The head-only path (features once, the head's HVPs, one body backward per set) gives
    meta_gradient's numbers with α masked to the head, at s = 0 … 3."""
    model, theta, batch = draw_meta_case(2, activation, loss, sizes=(3, 6, 5, 1), tasks=3,
                                         batch_norm=batch_norm)
    for s in range(4):
        l_m, g_m = anil.anil_gradient(model, theta, batch, 0.2, s, first_order,
                                      backend="numpy", path="masked")
        l_h, g_h = anil.anil_gradient(model, theta, batch, 0.2, s, first_order, path="head")
        assert abs(l_h - l_m) <= 1e-13 * max(1.0, abs(l_m))
        assert rel_error(g_h, g_m) < 1e-12, (s, rel_error(g_h, g_m))


def test_the_head_path_on_the_omniglot_network_matches_the_numba_masked_gradient():
    model = MLP((784, 256, 128, 64, 64, 5), "relu", "softmax_xent", batch_norm=True)
    theta = model.init(0)
    rng = np.random.default_rng(0)
    x = (rng.random((2, 10, 784)) < 0.08).astype(float)                  # (T, K+Q, D)
    y = np.eye(5)[np.tile(np.arange(5), (2, 2))]                         # (T, K+Q, 5)
    batch = mamlnp.TaskBatch.make(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    g_m = anil.anil_gradient(model, theta, batch, 0.4, 2, backend="numba", path="masked")[1]
    g_h = anil.anil_gradient(model, theta, batch, 0.4, 2)[1]
    assert anil.default_path(model, "numba") == "head" and rel_error(g_h, g_m) < 1e-12
    assert anil.default_path(MLP((1, 40, 40, 1)), "numba") == "masked"
    assert anil.default_path(MLP((1, 40, 40, 1)), "numpy") == "head"


def test_on_the_conv_net_the_default_is_the_compiled_masked_path():
    """The conv kernel set takes a (P,) α: ANIL on a ConvNet runs "masked" on numba, the
    same gradient as the head-only path to 1e-12."""
    model = mamlnp.ConvNet(in_shape=(1, 7, 7), channels=(3, 4), ways=3, stride=2)
    theta = model.init(0)
    rng = np.random.default_rng(1)
    y = np.tile(np.eye(3), (2, 2, 1))                                     # (T, 2·3, 3)
    batch = mamlnp.TaskBatch.make(rng.standard_normal((2, 6, 49)), y,
                                  rng.standard_normal((2, 6, 49)), y)
    assert anil.default_path(model, "numba") == "masked"
    assert anil.default_path(model, "numpy") == "head"
    g_m = anil.anil_gradient(model, theta, batch, 0.4, 2, backend="numba")[1]
    g_h = anil.anil_gradient(model, theta, batch, 0.4, 2, path="head")[1]
    print(f"conv ANIL masked (numba) vs head: rel {rel_error(g_m, g_h):.1e}")
    assert rel_error(g_m, g_h) < 1e-12


def test_the_path_argument_is_checked():
    model, theta, batch = draw_meta_case(0, "tanh")
    with pytest.raises(InputError, match="^path:"):
        anil.anil_gradient(model, theta, batch, 0.1, 1, path="fast")


def test_the_inner_loop_moves_only_the_head_and_matches_head_only_sgd():
    model, theta, batch = draw_meta_case(1, "tanh")
    xs, ys, _, _ = batch.task(0)
    head = anil.head_slice(model)
    adapted = mamlnp.adapt(model, theta, xs, ys, anil.anil_alpha(model, 0.1), 3, backend="numpy")
    manual = theta.copy()
    for _ in range(3):
        manual[head] -= 0.1 * model.loss_and_grad(manual, xs, ys)[1][head]
    assert np.array_equal(adapted[:head.start], theta[:head.start])
    assert rel_error(adapted, manual) < 1e-15


def test_anil_differs_from_maml_and_from_its_first_order_version():
    model, theta, batch = draw_meta_case(0, "tanh")
    g_anil = anil.anil_gradient(model, theta, batch, 0.1, 2, backend="numpy")[1]
    g_maml = maml.meta_gradient(model, theta, batch, 0.1, 2, backend="numpy")[1]
    g_fo = anil.anil_gradient(model, theta, batch, 0.1, 2, first_order=True, backend="numpy")[1]
    assert rel_error(g_anil, g_maml) > 1e-3 and rel_error(g_anil, g_fo) > 1e-4
    head = anil.head_slice(model)                   # the body's gradient flows only through
    assert np.any(g_anil[:head.start] != g_fo[:head.start])   # the head's adaptation


def test_numba_backend_matches_numpy():
    model = MLP((1, 40, 40, 1))
    theta = model.init(0)
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(0), 5, 10, 10)
    a = anil.anil_gradient(model, theta, batch, 0.01, 3, backend="numpy")
    b = anil.anil_gradient(model, theta, batch, 0.01, 3, backend="numba")
    assert abs(a[0] - b[0]) <= 1e-12 * abs(a[0]) and rel_error(a[1], b[1]) < 1e-12


def test_trainer_step_and_test_time_alpha():
    cfg = RC.make_config(method="anil", inner_steps=2, iterations=1)
    model = MLP(**cfg["model"])
    method, theta = get_method("anil"), model.init(1)
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(1), 4, 10, 10)
    loss, g = method.step(model, {"theta": theta}, batch, cfg, "numpy")
    want = anil.anil_gradient(model, theta, batch, 0.01, 2, backend="numpy")
    assert loss == want[0] and np.array_equal(g["theta"], want[1])
    assert np.array_equal(method.adapt_alpha({"theta": theta}, cfg), anil.anil_alpha(model, 0.01))
