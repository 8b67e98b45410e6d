"""The two-parameter toys (mamlnp/nn/toy.py): hand-written derivatives vs centred
finite differences, agreement with MLP(sizes=(1, 1)), and the closed-form MAML optimum."""
import numpy as np
import pytest

import mamlnp
from mamlnp.meta import maml
from mamlnp.meta import toy as meta_toy
from mamlnp.nn import toy as nn_toy
from mamlnp.tasks import toy as tasks_toy
from mamlnp.errors import InputError

RNG = np.random.default_rng(1703)
THETAS = [np.array([1.3, 0.7]), np.array([-0.4, 2.1]), np.array([2.5, -0.3])]


def rel_err(a, b):
    """‖a − b‖ / max(‖a‖, ‖b‖, 1e-300)."""
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


def fd_grad(f, theta, eps=1e-5):
    """Centred differences of a scalar function f: R² -> R."""
    g = np.zeros_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        g[i] = (f(theta + e) - f(theta - e)) / (2 * eps)
    return g


def data(n=12):
    x = RNG.uniform(-2, 2, size=(n, 1))
    y = RNG.normal(size=(n, 1))
    return x, y


@pytest.mark.parametrize("model", [nn_toy.LinearToy(), nn_toy.TanhToy()], ids=repr)
@pytest.mark.parametrize("k", range(len(THETAS)))
def test_gradient_and_hvp_vs_finite_differences(model, k):
    theta, (x, y) = THETAS[k], data()
    _, g = model.loss_and_grad(theta, x, y)
    g_fd = fd_grad(lambda t: model.loss(t, x, y), theta)
    err_g = rel_err(g, g_fd)
    v = RNG.normal(size=2)
    eps = 1e-5
    hv_fd = (model.loss_and_grad(theta + eps * v, x, y)[1]
             - model.loss_and_grad(theta - eps * v, x, y)[1]) / (2 * eps)
    err_h = rel_err(model.hvp(theta, x, y, v), hv_fd)
    print(f"{model!r} θ={theta}: gradient rel err {err_g:.2e}, HVP rel err {err_h:.2e}")
    assert err_g <= 1e-6 and err_h <= 1e-6
    H = model.hessian(theta, x, y)
    assert np.array_equal(H, H.T)


def test_tanh_residual_curvature_matters():
    """The r·F term is needed: the Gauss-Newton part alone fails the FD check."""
    model, theta, (x, y) = nn_toy.TanhToy(), THETAS[0], data()
    f, J, _ = model._features(theta, x)
    gauss_newton = (2.0 / x.shape[0]) * J.T @ J
    H_fd = np.stack([fd_grad(lambda t: model.loss_and_grad(t, x, y)[1][i], theta)
                     for i in range(2)])
    print(f"full Hessian rel err {rel_err(model.hessian(theta, x, y), H_fd):.2e}, "
          f"Gauss-Newton only {rel_err(gauss_newton, H_fd):.2e}")
    assert rel_err(model.hessian(theta, x, y), H_fd) <= 1e-6
    assert rel_err(gauss_newton, H_fd) > 1e-2


def test_linear_toy_is_mlp_1_1():
    lin, mlp = nn_toy.LinearToy(), mamlnp.MLP(sizes=(1, 1))
    theta, (x, y), v = THETAS[1], data(), RNG.normal(size=2)
    np.testing.assert_allclose(lin.forward(theta, x), mlp.forward(theta, x), rtol=1e-14)
    np.testing.assert_allclose(lin.loss_and_grad(theta, x, y)[1],
                               mlp.loss_and_grad(theta, x, y)[1], rtol=1e-13)
    np.testing.assert_allclose(lin.hvp(theta, x, y, v), mlp.hvp(theta, x, y, v), rtol=1e-13)


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_meta_gradient_on_tanh_toy_vs_finite_differences(inner_steps):
    model = nn_toy.TanhToy()
    batch = tasks_toy.ToyTasks(model, tasks_toy.square_corners((1.5, 1.0), 0.5)).sample(3, 4, 6, 6)
    theta, alpha = np.array([1.2, 0.8]), 0.05
    loss, g = maml.meta_gradient(model, theta, batch, alpha, inner_steps, backend="numpy")
    assert loss == pytest.approx(maml.meta_loss(model, theta, batch, alpha, inner_steps),
                                 rel=1e-14)
    g_fd = fd_grad(lambda t: maml.meta_loss(model, t, batch, alpha, inner_steps), theta)
    _, g_fo = maml.meta_gradient(model, theta, batch, alpha, inner_steps, first_order=True,
                                 backend="numpy")
    err, err_fo = rel_err(g, g_fd), rel_err(g_fo, g_fd)
    print(f"s={inner_steps}: second-order rel err {err:.2e}, first-order rel err {err_fo:.2e}")
    assert err <= 1e-6
    assert err_fo > 1e-3          # the Hessian term is not negligible here


def unequal_tasks(model):
    return tasks_toy.ToyTasks(model, tasks_toy.square_corners((1.0, 0.5), 1.0),
                        x_ranges=[(-1, 1), (-1, 1), (0, 2), (-2, 0.5)])


@pytest.mark.parametrize("model", [nn_toy.LinearToy(), mamlnp.MLP(sizes=(1, 1))], ids=repr)
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_closed_form_optimum_matches_training(model, inner_steps):
    batch, alpha = unequal_tasks(model).batch(shots=8, query=10), 0.3
    A, B = meta_toy.task_hessians(model, batch)
    star = meta_toy.maml_optimum_quadratic(unequal_tasks(model).optima, A, B, alpha, inner_steps)
    path, _ = meta_toy.meta_train_path(model, np.zeros(2), batch, alpha, inner_steps,
                                  beta=0.5, iterations=1500)
    _, g_star = maml.meta_gradient(model, star, batch, alpha, inner_steps, backend="numpy")
    err = np.abs(path[-1] - star).max()
    print(f"{model!r} s={inner_steps}: θ* = {star}, trained {path[-1]}, max |Δ| = {err:.1e}, "
          f"‖∇M(θ*)‖ = {np.linalg.norm(g_star):.1e}")
    assert err < 1e-9
    assert np.linalg.norm(g_star) < 1e-12
    joint = meta_toy.maml_optimum_quadratic(unequal_tasks(model).optima, A, B, alpha, 0)
    assert np.abs(star - joint).max() > 1e-2       # unequal curvatures: MAML ≠ joint


def test_equal_curvatures_give_the_centre():
    model = nn_toy.LinearToy()
    fam = tasks_toy.ToyTasks(model, tasks_toy.square_corners((2.0, -1.0), 0.5))
    A, B = meta_toy.task_hessians(model, fam.batch(5, 7))
    for s in (0, 1, 4):
        np.testing.assert_allclose(meta_toy.maml_optimum_quadratic(fam.optima, A, B, 0.2, s),
                                   [2.0, -1.0], rtol=1e-12)


def test_tanh_maml_optimum_differs_from_joint_minimiser():
    """Joint training (s = 0), FOMAML and MAML converge to three different points."""
    model = nn_toy.TanhToy()
    batch = tasks_toy.ToyTasks(model, tasks_toy.square_corners((1.2, 1.0), 0.5), x_ranges=(-2, 2)).batch()
    theta0, alpha = np.array([1.2, 1.0]), 0.2
    points = {}
    for name, s, fo in (("joint", 0, False), ("MAML", 1, False), ("FOMAML", 1, True)):
        points[name] = meta_toy.meta_train_path(model, theta0, batch, alpha, s, 0.5, 1500,
                                           first_order=fo)[0][-1]
        g = maml.meta_gradient(model, points[name], batch, alpha, s, first_order=fo,
                               backend="numpy")[1]
        print(f"{name}: θ = {points[name]}, ‖update direction‖ = {np.linalg.norm(g):.1e}")
        assert np.linalg.norm(g) < 1e-6
    assert np.linalg.norm(points["joint"] - points["MAML"]) > 0.5
    assert np.linalg.norm(points["FOMAML"] - points["MAML"]) > 0.2


def test_tasks_sampling_and_bad_input():
    model = nn_toy.LinearToy()
    fam = unequal_tasks(model)
    b1, b2 = fam.sample(5, 6, 3, 4), fam.sample(5, 6, 3, 4)
    assert np.array_equal(b1.x_support, b2.x_support)
    assert b1.x_support.shape == (6, 3, 1) and b1.y_query.shape == (6, 4, 1)
    assert np.all(b1.x_support >= -2) and np.all(b1.x_support <= 2)
    with pytest.raises(InputError, match="x_ranges"):
        tasks_toy.ToyTasks(model, fam.optima, x_ranges=[(1, 0)] * 4)
    with pytest.raises(InputError, match="theta"):
        model.loss(np.zeros(3), np.zeros((2, 1)), np.zeros((2, 1)))
    with pytest.raises(InputError, match="half_width"):
        tasks_toy.square_corners((0, 0), -1.0)
