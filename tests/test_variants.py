"""The methods of mamlnp.meta.variants: gradients against centred finite differences
(Meta-SGD θ and α, pretrain), Reptile against a hand-written loop, MAML/FOMAML
against mamlnp.meta.maml, and the numba twins against the NumPy reference.

Dimension legend: T tasks, K support, Q query, P parameters.
"""
import importlib.util

import numpy as np
import pytest

from mamlnp import MLP, InputError, SinusoidTasks, TaskBatch
from mamlnp.meta import maml as M
from mamlnp.meta.variants import METHODS, get_method

HAS_FAST = importlib.util.find_spec("numba") is not None


def small_case(activation="tanh", seed=0, T=3, K=4, Q=5):
    """A 1-4-4-1 network (P = 33) and a small sinusoid batch."""
    model = MLP((1, 4, 4, 1), activation)
    theta = model.init(seed, scheme="uniform")
    batch = SinusoidTasks().sample(seed + 1, T, K, Q)
    return model, theta, batch


def config(**kw):
    return {"alpha": 0.1, "inner_steps": 2, "first_order": False, **kw}


def fd_grad(f, x, eps=1e-6):
    """Centred FD of scalar f at the vector x."""
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def metasgd_loss(model, theta, alpha, batch, s):
    """(1/T) Σ_t L_Q(θ_s), θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k): written out independently."""
    total = 0.0
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        th = theta
        for _ in range(s):
            th = th - alpha * model.loss_and_grad(th, xs, ys)[1]
        total += model.loss(th, xq, yq)
    return total / batch.num_tasks


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_metasgd_gradients_match_finite_differences(activation):
    model, theta, batch = small_case(activation)
    rng = np.random.default_rng(3)
    alpha = 0.1 * (1.0 + rng.uniform(-0.5, 0.5, model.num_params))   # (P,), not constant
    alpha[:3] *= -1.0                                                  # learned α may be < 0
    method = get_method("metasgd")
    params = {"theta": theta, "alpha": alpha}
    loss, grads = method.step(model, params, batch, config(), "numpy")
    assert loss == pytest.approx(metasgd_loss(model, theta, alpha, batch, 2), rel=1e-12)
    g_theta = fd_grad(lambda th: metasgd_loss(model, th, alpha, batch, 2), theta)
    g_alpha = fd_grad(lambda a: metasgd_loss(model, theta, a, batch, 2), alpha)
    e_theta, e_alpha = rel(grads["theta"], g_theta), rel(grads["alpha"], g_alpha)
    print(f"Meta-SGD {activation}: rel err dθ {e_theta:.2e}, dα {e_alpha:.2e}")
    assert e_theta < 1e-7 and e_alpha < 1e-7


def test_metasgd_init_and_test_time_alpha():
    model, theta, _ = small_case()
    method = get_method("metasgd")
    params = method.init_params(model, theta, config(alpha=0.03))
    assert params["alpha"].shape == (model.num_params,) and np.all(params["alpha"] == 0.03)
    assert params["theta"] is not theta and np.array_equal(params["theta"], theta)
    assert method.adapt_alpha(params, config()) is params["alpha"]
    assert get_method("maml").adapt_alpha({"theta": theta}, config(alpha=0.5)) == 0.5


def test_metasgd_agrees_with_public_reference():
    model, theta, batch = small_case("relu", seed=4)
    alpha = np.full(model.num_params, 0.05)
    loss, grads = get_method("metasgd").step(model, {"theta": theta, "alpha": alpha}, batch,
                                             config(), "numpy")
    ref = M.meta_gradient_alpha(model, theta, batch, alpha, 2)
    assert loss == ref[0]
    np.testing.assert_array_equal(grads["theta"], ref[1])
    np.testing.assert_array_equal(grads["alpha"], ref[2])


def pretrain_loss(model, theta, batch):
    """(1/T) Σ_t MSE_t(θ) on each task's support ∪ query points, task by task."""
    losses = []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        losses.append(model.loss(theta, np.vstack([xs, xq]), np.vstack([ys, yq])))
    return float(np.mean(losses))


def test_pretrain_gradient_matches_finite_differences():
    model, theta, batch = small_case("tanh", seed=5)
    loss, grads = get_method("pretrain").step(model, {"theta": theta}, batch, config(), "numpy")
    assert loss == pytest.approx(pretrain_loss(model, theta, batch), rel=1e-12)
    g_fd = fd_grad(lambda th: pretrain_loss(model, th, batch), theta)
    err = rel(grads["theta"], g_fd)
    print(f"pretrain: rel err of the gradient vs FD {err:.2e}")
    assert err < 1e-7


def test_reptile_equals_manual_computation():
    model, theta, batch = small_case("relu", seed=6)
    alpha, s = 0.02, 3
    loss, grads = get_method("reptile").step(model, {"theta": theta}, batch,
                                             config(alpha=alpha, inner_steps=s), "numpy")
    adapted, losses = [], []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        x, y = np.vstack([xs, xq]), np.vstack([ys, yq])                # all K+Q points
        th = theta.copy()
        for _ in range(s):
            th = th - alpha * model.loss_and_grad(th, x, y)[1]
        adapted.append(th)
        losses.append(model.loss(th, x, y))
    expected = theta - np.mean(adapted, axis=0)                         # θ − mean θ̃
    err = rel(grads["theta"], expected)
    print(f"Reptile: rel err vs manual loop {err:.2e}")
    assert err < 1e-12
    assert loss == pytest.approx(np.mean(losses), rel=1e-12)
    zero = get_method("reptile").step(model, {"theta": theta}, batch,
                                      config(inner_steps=0), "numpy")[1]["theta"]
    assert np.max(np.abs(zero)) < 1e-15 * max(1.0, np.max(np.abs(theta)))   # rounding only


@pytest.mark.parametrize("name, first_order", [("maml", False), ("fomaml", True)])
def test_maml_methods_are_the_reference_meta_gradient(name, first_order):
    model, theta, batch = small_case("tanh", seed=7)
    loss, grads = get_method(name).step(model, {"theta": theta}, batch, config(), "numpy")
    ref_loss, ref = M.meta_gradient(model, theta, batch, 0.1, 2, first_order, backend="numpy")
    assert loss == ref_loss
    np.testing.assert_array_equal(grads["theta"], ref)


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="method"):
        get_method("protonet")
    assert set(METHODS) == {"maml", "fomaml", "reptile", "metasgd", "pretrain", "imaml", "anil",
                            "mamlpp"}


@pytest.mark.skipif(not HAS_FAST, reason="numba (the numba backend) not available")
@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile", "metasgd", "pretrain"])
def test_numba_backend_matches_numpy(name):
    model = MLP((1, 40, 40, 1), "relu")
    theta = model.init(0)
    batch = SinusoidTasks().sample(1, 5, 10, 10)
    method = get_method(name)
    params = method.init_params(model, theta, config(alpha=0.01))
    cfg = config(alpha=0.01, inner_steps=2, first_order=name == "fomaml")
    loss_np, g_np = method.step(model, params, batch, cfg, "numpy")
    loss_nb, g_nb = method.step(model, params, batch, cfg, "numba")
    assert loss_nb == pytest.approx(loss_np, rel=1e-12)
    for key in g_np:
        err = rel(g_nb[key], g_np[key])
        print(f"{name} numba vs numpy, d{key}: rel err {err:.2e}")
        assert err < 1e-11


def test_batch_shapes_are_respected():
    """pretrain flattens (T, K+Q, D) into T(K+Q) points; a D=1/O=1 batch keeps its pairing."""
    model = MLP((1, 3, 1), "tanh")
    theta = model.init(0, scheme="uniform")
    x = np.arange(2 * 3, dtype=float).reshape(2, 3, 1) / 10
    y = np.sin(x)
    batch = TaskBatch(x[:, :2], y[:, :2], x[:, 2:], y[:, 2:])
    loss, _ = get_method("pretrain").step(model, {"theta": theta}, batch, config(), "numpy")
    assert loss == pytest.approx(pretrain_loss(model, theta, batch), rel=1e-12)
