"""Batch normalisation by hand: the layer's four passes, the batch-norm MLP's gradient, HVP
and dense Hessian against centred finite differences, b's vanishing gradient, the edge cases,
and broken passes failing the checks. The meta-gradient, layout, config and the paper's
network: tests/test_batchnorm_meta.py.

Dimension legend: N points, H units, D in, O out, P parameters, T tasks, s inner steps.

Relative errors are printed (``pytest -s``). Tolerances: 1e-6 against plain centred FD,
1e-10 for the dense Hessian against a twice Richardson-extrapolated FD of the gradient
(written here from fd.num_dir, independent of mamlnp.check), 1e-12 for symmetry.
Derivation: docs/derivations/batchnorm.md.
"""
import numpy as np
import pytest

from mamlnp import MLP, InputError
from mamlnp.check import gradcheck as GC
from mamlnp.nn import batchnorm as BN
from mamlnp.nn.mlp import BN_EPS

ACTS = ["relu", "tanh", "softplus"]
LOSSES = ["mse", "softmax_xent"]
ARCHS = [(2, 4, 3), (3, 5, 4, 2), (2, 3, 4, 3, 3)]      # 1, 2, 3 hidden layers
TOL = 1e-6
U = 2.0 ** -53                                          # unit roundoff of float64

acts = pytest.mark.parametrize("activation", ACTS)
losses = pytest.mark.parametrize("loss", LOSSES)
grid = pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "-".join(map(str, s)))


def bn_case(seed, sizes, activation, loss="mse", n=6, margin=1e-3):
    """(model, θ, x, y): batch-norm MLP, uniform init with γ, β jittered away from (1, 0);
    for ReLU redrawn until every activation input |u| > margin."""
    model = MLP(sizes, activation, loss, batch_norm=True)
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt, 14])
        theta = model.init(int(rng.integers(2**31)))
        for bn in model.bn_layout[:-1]:
            theta[bn[0][0]:bn[1][1]] += rng.uniform(-0.5, 0.5, bn[1][1] - bn[0][0])
        x = rng.standard_normal((n, sizes[0]))                          # (N, D)
        y = (rng.standard_normal((n, sizes[-1])) if loss == "mse"
             else np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)])     # (N, O), one-hot
        if activation != "relu" or GC.relu_margin(model, theta, x) > margin:
            return model, theta, x, y
    raise RuntimeError("no safe ReLU case")


def layer_case(seed, n=5, h=4):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, h)) * rng.uniform(0.5, 2, h) + rng.standard_normal(h)  # (N, H)
    gamma, beta = rng.uniform(0.5, 1.5, h), rng.standard_normal(h)                       # (H,)
    return rng, z, gamma, beta


# ---- the layer alone -------------------------------------------------------------------


def test_forward_statistics_by_hand():
    z = np.array([[1.0, 10.0], [3.0, 10.0]])                            # (N=2, H=2), feature 2 constant
    y, (zhat, s, _) = BN.batchnorm_forward(z, np.array([2.0, 2.0]), np.array([0.5, -1.0]), 1e-3)
    # feature 1: μ = 2, σ² = 1 (biased), ẑ = ±1/√1.001; feature 2: ẑ = 0, y = β
    np.testing.assert_allclose(zhat[:, 0], [-1 / np.sqrt(1.001), 1 / np.sqrt(1.001)], rtol=1e-15)
    np.testing.assert_allclose(y[:, 0], 0.5 + 2 * zhat[:, 0], rtol=1e-15)
    assert np.all(y[:, 1] == -1.0) and s[1] == 1 / np.sqrt(1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_matches_fd(fd, seed):
    rng, z, gamma, beta = layer_case(seed)
    dy = rng.standard_normal(z.shape)                                    # upstream ∂L/∂y
    f = lambda z_, g_, b_: float(np.sum(dy * BN.batchnorm_forward(z_, g_, b_, BN_EPS)[0]))  # noqa: E731
    dz, dg, db = BN.batchnorm_backward(dy, BN.batchnorm_forward(z, gamma, beta, BN_EPS)[1])
    errs = [fd.rel_error(dz, fd.num_grad(lambda a: f(a, gamma, beta), z)),
            fd.rel_error(dg, fd.num_grad(lambda a: f(z, a, beta), gamma)),
            fd.rel_error(db, fd.num_grad(lambda a: f(z, gamma, a), beta))]
    print(f"batchnorm_backward seed {seed}: dz {errs[0]:.1e} dgamma {errs[1]:.1e} dbeta {errs[2]:.1e}")
    assert max(errs) < TOL


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rforward_matches_fd(fd, seed):
    rng, z, gamma, beta = layer_case(seed)
    Rz, Vg, Vb = rng.standard_normal(z.shape), rng.standard_normal(4), rng.standard_normal(4)
    Ry = BN.batchnorm_rforward(Rz, BN.batchnorm_forward(z, gamma, beta, BN_EPS)[1], Vg, Vb)
    f = lambda r: BN.batchnorm_forward(z + r * Rz, gamma + r * Vg, beta + r * Vb, BN_EPS)[0]  # noqa: E731
    err = fd.rel_error(Ry, fd.num_dir(f, 0.0, 1.0))
    print(f"batchnorm_rforward seed {seed}: rel error {err:.1e}")
    assert err < TOL


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rbackward_matches_fd(fd, seed):
    """R{(dz, dγ, dβ)} along (Rz, V_γ, Rdy) vs FD of batchnorm_backward in r."""
    rng, z, gamma, beta = layer_case(seed)
    dy, Rdy, Rz = rng.standard_normal((3,) + z.shape)
    Vg = rng.standard_normal(4)

    def back(r):
        cache = BN.batchnorm_forward(z + r * Rz, gamma + r * Vg, beta, BN_EPS)[1]
        return np.concatenate([a.ravel() for a in BN.batchnorm_backward(dy + r * Rdy, cache)])
    cache = BN.batchnorm_forward(z, gamma, beta, BN_EPS)[1]
    got = np.concatenate([a.ravel() for a in BN.batchnorm_rbackward(Rdy, dy, Rz, cache, Vg)])
    err = fd.rel_error(got, fd.num_dir(back, 0.0, 1.0))
    print(f"batchnorm_rbackward seed {seed}: rel error {err:.1e}")
    assert err < TOL


# ---- the batch-norm MLP: gradient, HVP, Hessian -----------------------------------------


@grid
@acts
@losses
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_matches_fd(fd, sizes, activation, loss, seed):
    model, theta, x, y = bn_case(seed, sizes, activation, loss)
    value, g = model.loss_and_grad(theta, x, y)
    assert value == model.loss(theta, x, y)
    err = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, x, y), theta))
    print(f"BN gradient {sizes} {activation} {loss} seed {seed}: rel error {err:.2e}")
    assert err < TOL


@grid
@acts
@losses
@pytest.mark.parametrize("seed", [0, 1])
def test_hvp_matches_fd_of_gradient(fd, sizes, activation, loss, seed):
    """Unit directions, as in mamlnp.check: a batch-norm feature with a small batch variance
    (s = 1/√(σ² + ε) ≈ 25 occurs here) makes the loss strongly curved, and the FD's O(ε²‖v‖²)
    truncation error would reach ~1e-6 along a raw N(0, I) direction of norm √P."""
    model, theta, x, y = bn_case(seed, sizes, activation, loss)
    grad = lambda t: model.loss_and_grad(t, x, y)[1]                     # noqa: E731
    V = np.random.default_rng(seed).standard_normal((2, model.num_params))
    for v in V / np.linalg.norm(V, axis=1, keepdims=True):
        err = fd.rel_error(model.hvp(theta, x, y, v), fd.num_dir(grad, theta, v))
        print(f"BN HVP {sizes} {activation} {loss} seed {seed}: rel error {err:.2e}")
        assert err < TOL


@grid
@acts
@losses
def test_hvp_symmetric_and_linear(fd, sizes, activation, loss):
    model, theta, x, y = bn_case(3, sizes, activation, loss)
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal((2, model.num_params))
    a, b = rng.standard_normal(2)
    Hu, Hv = model.hvp(theta, x, y, u), model.hvp(theta, x, y, v)
    sym = abs(u @ Hv - Hu @ v) / max(abs(u @ Hv), abs(Hu @ v))
    lin = fd.rel_error(model.hvp(theta, x, y, a * u + b * v), a * Hu + b * Hv)
    print(f"BN {sizes} {activation} {loss}: <u,Hv> vs <Hu,v> {sym:.1e}, linearity {lin:.1e}")
    assert sym < 1e-12 and lin < 1e-12


def richardson_hessian(fd, grad, theta, eps=2e-3):
    """FD Hessian of ``grad`` extrapolated twice (steps ε, ε/2, ε/4): O(ε⁶) truncation."""
    E = np.eye(theta.size)
    D = [np.array([fd.num_dir(grad, theta, e, eps / 2 ** k) for e in E]).T for k in range(3)]
    R1 = [(4 * D[k + 1] - D[k]) / 3 for k in range(2)]
    return (16 * R1[1] - R1[0]) / 15


@acts
@losses
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_hessian_against_fd_and_richardson(fd, activation, loss, seed):
    model, theta, x, y = bn_case(seed, (2, 3, 3), activation, loss, n=5, margin=0.05)
    E = np.eye(model.num_params)
    H = np.array([model.hvp(theta, x, y, e) for e in E]).T               # (P, P), column j = H e_j
    grad = lambda t: model.loss_and_grad(t, x, y)[1]                     # noqa: E731
    H_fd = np.array([fd.num_dir(grad, theta, e) for e in E]).T
    err, err_r = fd.rel_error(H, H_fd), fd.rel_error(H, richardson_hessian(fd, grad, theta))
    asym = fd.rel_error(H, H.T)
    print(f"BN dense Hessian {activation} {loss} seed {seed}: vs FD {err:.1e}, "
          f"vs Richardson FD {err_r:.1e}, asymmetry {asym:.1e}")
    assert err < TOL and err_r < 1e-10 and asym < 1e-12


# ---- b is redundant under batch norm ---------------------------------------------------


@acts
@losses
def test_hidden_bias_gradient_and_hessian_block_vanish(fd, activation, loss):
    """∂L/∂b_l = Σ_n δ_l,n = 0 for a batch-norm layer: zero in exact arithmetic, and in float64
    the rounding residue of a sum that cancels, |Σ_n δ| ≤ 4 N u Σ_n |δ|, never exactly
    guaranteed. The b-blocks of H v (and the b-rows of H) vanish the same way."""
    model, theta, x, y = bn_case(0, (3, 5, 4, 2), activation, loss, n=8)
    _, (_, _, dzs, _, _), g = model._backward(theta, x, y)
    v = np.random.default_rng(0).standard_normal(model.num_params)
    Hv = model.hvp(theta, x, y, v)
    worst = 0.0
    for l, ((_, (b0, b1), _), bn) in enumerate(zip(model.layout, model.bn_layout)):
        if bn is None:
            continue
        bound = 4 * x.shape[0] * U * np.abs(dzs[l]).sum(axis=0)           # (H,)
        assert np.all(np.abs(g[b0:b1]) <= bound)
        worst = max(worst, np.abs(g[b0:b1]).max() / np.abs(g).max(),
                    np.abs(Hv[b0:b1]).max() / np.abs(Hv).max())
    print(f"BN {activation} {loss}: max |db| / max |g| and |(Hv)_b| / max |Hv|: {worst:.1e}")
    assert worst < 1e-13 and np.abs(g).max() > 1e-3
    shifted = theta.copy()
    model.unflatten(shifted)[0][1][:] += 1.0                             # b_1 += 1
    assert abs(model.loss(shifted, x, y) - model.loss(theta, x, y)) < 1e-13


# ---- edge cases ------------------------------------------------------------------------


@acts
def test_batch_of_one_point(fd, activation):
    """N = 1: z − μ = 0 exactly, so ẑ = 0, u = β for every x, and ε keeps s = 1/√ε finite.
    Each hidden layer's output is then σ(β_l) whatever came in: only the last hidden β and
    the output layer have a gradient, and every other entry is exactly 0.0."""
    model, theta, _, _ = bn_case(0, (3, 4, 5, 2), activation, "mse")
    x1, x2 = np.array([[0.3, -2.0, 1.0]]), np.array([[50.0, 1.0, -7.0]])  # (1, D)
    assert np.array_equal(model.forward(theta, x1), model.forward(theta, x2))
    y = np.array([[0.5, -1.0]])
    _, g = model.loss_and_grad(theta, x1, y)
    (be0, be1), w_out = model.bn_layout[-2][1], model.layout[-1][0][0]  # last hidden β; W_L
    live = np.zeros(model.num_params, bool)
    live[be0:be1] = live[w_out:] = True
    assert np.all(g[~live] == 0.0) and np.all(np.isfinite(g)) and np.abs(g[live]).max() > 0
    err = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, x1, y), theta))
    v = np.random.default_rng(1).standard_normal(model.num_params)
    grad = lambda t: model.loss_and_grad(t, x1, y)[1]                   # noqa: E731
    err_h = fd.rel_error(model.hvp(theta, x1, y, v), fd.num_dir(grad, theta, v))
    print(f"BN N=1 {activation}: gradient vs FD {err:.1e}, HVP vs FD {err_h:.1e}")
    assert err < TOL and err_h < TOL


@acts
def test_constant_feature(fd, activation):
    """A hidden unit whose dense output is the same for every point (its W column is 0):
    σ² = 0 up to rounding, ε keeps it finite, its output is β; the derivatives stay right.
    Along that column the loss varies on the scale √ε ≈ 0.03 (the variance a step creates
    competes with ε), so the FD uses ε_FD = 1e-6 and a unit direction: its truncation is
    ~(ε_FD/√ε)², ~1e-7 at the usual 1e-5."""
    model, theta, x, y = bn_case(1, (3, 4, 2), activation, "mse", n=6)
    W1, b1, g1, be1 = model.unflatten(theta)[0]
    W1[:, 2] = 0.0
    _, caches = model._forward(theta, x)
    u = caches[0][1][0]                                                  # BN output (N, H)
    np.testing.assert_allclose(u[:, 2], be1[2], rtol=0, atol=1e-13)
    _, g = model.loss_and_grad(theta, x, y)
    err = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, x, y), theta, eps=1e-6))
    v = np.random.default_rng(2).standard_normal(model.num_params)
    v /= np.linalg.norm(v)
    grad = lambda t: model.loss_and_grad(t, x, y)[1]                   # noqa: E731
    err_h = fd.rel_error(model.hvp(theta, x, y, v), fd.num_dir(grad, theta, v, eps=1e-6))
    print(f"BN constant feature {activation}: gradient vs FD {err:.1e}, HVP vs FD {err_h:.1e}")
    assert np.all(np.isfinite(g)) and err < TOL and err_h < TOL


def test_large_activations_two_pass_variance():
    """σ² is mean((z − μ)²) (two passes), not mean(z²) − μ², which cancels catastrophically:
    a feature of mean 1e8 and spread 1 normalises as the same feature at mean 0, to the
    1e8 · u ≈ 1e-8 with which z + 1e8 itself is rounded."""
    rng, z, gamma, beta = layer_case(4, n=16)
    y0 = BN.batchnorm_forward(z, gamma, beta, BN_EPS)[0]
    y1 = BN.batchnorm_forward(z + 1e8, gamma, beta, BN_EPS)[0]
    err = np.abs(y1 - y0).max()
    print(f"BN shift by 1e8: max |Δy| {err:.1e}")
    assert err < 1e-7


@acts
def test_large_inputs_scale_out(fd, activation):
    """x scaled by 1e6: the first batch norm divides the scale out (ε negligible), the
    outputs match the unscaled ones to ~ε/σ², and the derivatives still pass FD."""
    model, theta, x, y = bn_case(2, (3, 4, 2), activation, "mse")
    np.testing.assert_allclose(model.forward(theta, 1e6 * x), model.forward(theta, x), rtol=0, atol=1e-2)
    big = 1e6 * x
    _, g = model.loss_and_grad(theta, big, y)
    err = fd.rel_error(g, fd.num_grad(lambda t: model.loss(t, big, y), theta))
    grad = lambda t: model.loss_and_grad(t, big, y)[1]                  # noqa: E731
    v = np.random.default_rng(3).standard_normal(model.num_params)
    err_h = fd.rel_error(model.hvp(theta, big, y, v), fd.num_dir(grad, theta, v))
    print(f"BN x·1e6 {activation}: gradient vs FD {err:.1e}, HVP vs FD {err_h:.1e}")
    assert np.all(np.isfinite(g)) and err < TOL and err_h < TOL


@pytest.mark.parametrize("value", [1, 0, "yes", None, np.array([True, False])])
def test_batch_norm_not_a_bool_is_refused(value):
    with pytest.raises(InputError, match="batch_norm"):
        MLP((2, 3, 1), batch_norm=value)


@pytest.mark.parametrize("value", [0, 0.0, -1e-3, np.nan, np.inf, "1e-3", True])
def test_bn_eps_not_positive_is_refused(value):
    with pytest.raises(InputError, match="bn_eps"):
        MLP((2, 3, 1), batch_norm=True, bn_eps=value)


# ---- the checks can fail ----------------------------------------------------------------


def test_wrong_batchnorm_passes_fail_the_checks(monkeypatch):
    model, theta, x, y = bn_case(0, (3, 4, 2), "softplus", "mse")
    assert GC.check_gradient(model, theta, x, y).passed and GC.check_hvp(model, theta, x, y).passed

    def no_variance_term(dy, cache):                     # drops −ẑ ⊙ mean(dẑ ⊙ ẑ)
        zhat, s, gamma = cache
        dzhat = dy * gamma
        return s * (dzhat - dzhat.mean(axis=0)), (dy * zhat).sum(axis=0), dy.sum(axis=0)
    real_rf = BN.batchnorm_rforward
    monkeypatch.setattr(BN, "batchnorm_rforward",                       # drops V_γ ⊙ ẑ
                        lambda Rz, cache, Vg, Vb: real_rf(Rz, cache, 0 * Vg, Vb))
    assert GC.check_gradient(model, theta, x, y).passed
    assert not GC.check_hvp(model, theta, x, y).passed
    monkeypatch.setattr(BN, "batchnorm_backward", no_variance_term)
    assert not GC.check_gradient(model, theta, x, y).passed
