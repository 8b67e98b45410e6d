"""The MLP's gradient (backprop) and Hessian-vector product (R-pass) against
centred finite differences, and its parameter layout.

Dimension legend: N points, D in, O out, P parameters, H_l hidden widths.

Cases: 1 to 3 hidden layers of various widths, D and O above 1, three
activations, both losses, two seeds. Relative errors are printed (see them with
``pytest -s``); the tolerance is 1e-6 relative, the observed values ~1e-10.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mamlnp import MLP, InputError

ARCHS = [(2, 4, 3), (3, 5, 4, 2), (2, 3, 4, 3, 3)]      # 1, 2, 3 hidden layers
ACTS = ["relu", "tanh", "softplus"]
LOSSES = ["mse", "softmax_xent"]
TOL = 1e-6

grid = pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "-".join(map(str, s)))
acts = pytest.mark.parametrize("activation", ACTS)
losses = pytest.mark.parametrize("loss", LOSSES)


# ---- derivatives against finite differences ---------------------------------------------


@grid
@acts
@losses
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_fd(fd, sizes, activation, loss, seed):
    model, theta, x, y = fd.mlp_case(seed, sizes, activation, loss)
    value, g = model.loss_and_grad(theta, x, y)                          # (P,)
    assert value == model.loss(theta, x, y)
    err = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, x, y), theta))
    print(f"gradient {sizes} {activation} {loss} seed {seed}: rel error {err:.2e}")
    assert err < TOL


@grid
@acts
@losses
@pytest.mark.parametrize("seed", [0, 1])
def test_hvp_matches_fd_of_gradient(fd, sizes, activation, loss, seed):
    model, theta, x, y = fd.mlp_case(seed, sizes, activation, loss)
    grad = lambda t: model.loss_and_grad(t, x, y)[1]                     # noqa: E731
    for v in np.random.default_rng(seed).standard_normal((2, model.num_params)):
        err = fd.rel_error(model.hvp(theta, x, y, v), fd.num_dir(grad, theta, v))
        print(f"HVP {sizes} {activation} {loss} seed {seed}: rel error {err:.2e}")
        assert err < TOL


@grid
@acts
@losses
def test_hvp_symmetric_and_linear(fd, sizes, activation, loss):
    model, theta, x, y = fd.mlp_case(3, sizes, activation, loss)
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal((2, model.num_params))
    a, b = rng.standard_normal(2)
    Hu, Hv = model.hvp(theta, x, y, u), model.hvp(theta, x, y, v)
    sym = abs(u @ Hv - Hu @ v) / max(abs(u @ Hv), abs(Hu @ v))
    lin = fd.rel_error(model.hvp(theta, x, y, a * u + b * v), a * Hu + b * Hv)
    print(f"{sizes} {activation} {loss}: <u,Hv> vs <Hu,v> {sym:.1e}, linearity {lin:.1e}")
    assert sym < 1e-10 and lin < 1e-10


@acts
@losses
def test_dense_hessian_symmetric_and_equal_to_fd_hessian(fd, activation, loss):
    model, theta, x, y = fd.mlp_case(4, (2, 3, 3), activation, loss, n=5)
    E = np.eye(model.num_params)
    H = np.array([model.hvp(theta, x, y, e) for e in E]).T               # (P, P), column j = H e_j
    grad = lambda t: model.loss_and_grad(t, x, y)[1]                     # noqa: E731
    H_fd = np.array([fd.num_dir(grad, theta, e) for e in E]).T           # (P, P)
    err, asym = fd.rel_error(H, H_fd), fd.rel_error(H, H.T)
    print(f"dense Hessian {activation} {loss}: vs FD {err:.2e}, asymmetry {asym:.1e}")
    assert err < TOL and asym < 1e-12
    if activation != "relu":                     # σ'' ≠ 0: some curvature beyond Gauss-Newton
        assert np.abs(H).max() > 0


def test_grad_and_hvp_share_one_pass_and_agree(fd):
    model, theta, x, y = fd.mlp_case(5, (3, 5, 4, 2), "softplus")
    v = np.random.default_rng(5).standard_normal(model.num_params)
    loss, g, Hv = model.grad_and_hvp(theta, x, y, v)
    loss2, g2 = model.loss_and_grad(theta, x, y)
    assert loss == loss2
    np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(Hv, model.hvp(theta, x, y, v))


# ---- layout and forward ------------------------------------------------------------------


def test_unflatten_views_in_documented_order():
    model = MLP((2, 2, 1), "relu")
    assert model.num_params == (2 * 2 + 2) + (2 * 1 + 1)
    theta = np.arange(float(model.num_params))
    (W1, b1), (W2, b2) = model.unflatten(theta)
    np.testing.assert_array_equal(W1, [[0, 1], [2, 3]])                  # row-major (fan_in, fan_out)
    np.testing.assert_array_equal(b1, [4, 5])
    np.testing.assert_array_equal(W2, [[6], [7]])
    np.testing.assert_array_equal(b2, [8])
    W2[1, 0] = -1.0                                                      # views write through
    assert theta[7] == -1.0
    np.testing.assert_array_equal(model.flatten(model.unflatten(theta)), theta)


def test_sinusoid_network_has_1761_parameters():
    assert MLP((1, 40, 40, 1)).num_params == 1761


def test_forward_hand_computed():
    model = MLP((2, 2, 1), "relu")
    theta = model.flatten([(np.array([[1.0, -1.0], [2.0, 0.5]]), np.array([0.5, -1.0])),
                           (np.array([[3.0], [-2.0]]), np.array([0.25]))])
    x = np.array([[1.0, 1.0]])
    # z1 = [1 + 2 + 0.5, −1 + 0.5 − 1] = [3.5, −1.5];  h1 = [3.5, 0];  ŷ = 10.5 + 0.25
    assert model.forward(theta, x)[0, 0] == 10.75
    tanh_model = MLP((2, 2, 1), "tanh")
    np.testing.assert_allclose(tanh_model.forward(theta, x)[0, 0],
                               3 * np.tanh(3.5) - 2 * np.tanh(-1.5) + 0.25, rtol=1e-15)
    assert model.loss(theta, x, np.array([[10.0]])) == 0.75 ** 2


def test_same_seed_same_bits(fd):
    model, theta, x, y = fd.mlp_case(7, (3, 5, 4, 2), "tanh")
    np.testing.assert_array_equal(model.init(11, scheme="uniform"), model.init(11, scheme="uniform"))
    v = np.ones(model.num_params)
    np.testing.assert_array_equal(model.hvp(theta, x, y, v), model.hvp(theta.copy(), x, y, v))


def test_hvp_rejects_bad_direction(fd):
    model, theta, x, y = fd.mlp_case(0, (2, 4, 3), "tanh")
    with pytest.raises(InputError, match="v"):
        model.hvp(theta, x, y, np.ones(model.num_params + 1))
    with pytest.raises(InputError, match="v"):
        model.hvp(theta, x, y, np.full(model.num_params, np.nan))


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=5),
       n=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_shapes_property(sizes, n, seed):
    model = MLP(sizes, "softplus")
    P = sum((fi + 1) * fo for fi, fo in zip(sizes[:-1], sizes[1:]))
    assert model.num_params == P
    theta = model.init(seed, scheme="uniform")
    assert theta.shape == (P,) and theta.dtype == np.float64
    np.testing.assert_array_equal(model.flatten(model.unflatten(theta)), theta)
    x = np.random.default_rng(seed).standard_normal((n, sizes[0]))
    y = np.zeros((n, sizes[-1]))
    assert model.forward(theta, x).shape == (n, sizes[-1])
    _, g, Hv = model.grad_and_hvp(theta, x, y, theta)
    assert g.shape == Hv.shape == (P,)
