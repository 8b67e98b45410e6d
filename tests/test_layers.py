"""cs231n-style unit tests of mamlnp/nn/layers.py and mamlnp/nn/activations.py.

Dimension legend: N points, I fan_in, O fan_out.

Each ``*_backward`` is checked against a centred FD of its ``*_forward``; each
R-pass (``*_rforward``, ``*_rbackward``) against a centred FD of the pass it
differentiates, along a random direction. Relative errors are printed (-s).
"""
import numpy as np
import pytest

from mamlnp.nn import layers as LY
from mamlnp.nn.activations import ACTIVATIONS, sigmoid, softplus

N, I, O = 5, 4, 3


def _rng(seed=0):
    return np.random.default_rng(seed)


def _z(rng, shape):
    """Pre-activations at least 0.05 away from ReLU's kink (FD steps are 1e-5)."""
    z = rng.standard_normal(shape)
    return np.where(np.abs(z) < 0.05, z + np.sign(z + 1e-12) * 0.1, z)


# ---- dense layer -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_backward_matches_fd(fd, seed):
    rng = _rng(seed)
    h, W, b, dz = (rng.standard_normal(s) for s in ((N, I), (I, O), (O,), (N, O)))
    z, cache = LY.dense_forward(h, W, b)
    np.testing.assert_allclose(z, h @ W + b, rtol=1e-15)
    dh, dW, db = LY.dense_backward(dz, cache)
    f = lambda hh, WW, bb: np.sum(LY.dense_forward(hh, WW, bb)[0] * dz)   # noqa: E731  <dz, z>
    errs = [fd.rel_error(dh, fd.num_grad(lambda a: f(a, W, b), h)),
            fd.rel_error(dW, fd.num_grad(lambda a: f(h, a, b), W)),
            fd.rel_error(db, fd.num_grad(lambda a: f(h, W, a), b))]
    print("dense backward rel errors dh, dW, db:", errs)
    assert max(errs) < 1e-8


@pytest.mark.parametrize("input_layer", [False, True])
def test_dense_rforward_matches_fd(fd, input_layer):
    rng = _rng(2)
    h, W, b, Rh, VW, Vb = (rng.standard_normal(s) for s in ((N, I), (I, O), (O,), (N, I), (I, O), (O,)))
    if input_layer:
        Rh = np.zeros_like(h)                           # R{x} = 0, passed as None
    _, cache = LY.dense_forward(h, W, b)
    Rz = LY.dense_rforward(None if input_layer else Rh, cache, VW, Vb)
    z_of_r = lambda r: LY.dense_forward(h + r * Rh, W + r * VW, b + r * Vb)[0]  # noqa: E731
    err = fd.rel_error(Rz, fd.num_dir(z_of_r, 0.0, 1.0))
    print("dense R-forward rel error:", err)
    assert err < 1e-8


@pytest.mark.parametrize("input_layer", [False, True])
def test_dense_rbackward_matches_fd(fd, input_layer):
    rng = _rng(3)
    shapes = ((N, I), (I, O), (O,), (N, O), (N, I), (I, O), (N, O))
    h, W, b, dz, Rh, VW, Rdz = (rng.standard_normal(s) for s in shapes)
    if input_layer:
        Rh = np.zeros_like(h)
    _, cache = LY.dense_forward(h, W, b)
    got = LY.dense_rbackward(Rdz, dz, None if input_layer else Rh, cache, VW)

    def backward_of_r(r):                               # dense_backward along the R-direction
        _, c = LY.dense_forward(h + r * Rh, W + r * VW, b)
        return LY.dense_backward(dz + r * Rdz, c)

    want = [(a - m) / 2e-5 for a, m in zip(backward_of_r(1e-5), backward_of_r(-1e-5))]
    errs = [fd.rel_error(g, w) for g, w in zip(got, want)]
    print("dense R-backward rel errors Rdh, RdW, Rdb:", errs)
    assert max(errs) < 1e-8


# ---- activations ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivatives_match_fd(fd, name):
    s, d1, d2 = ACTIVATIONS[name]
    z = _z(_rng(4), (N, O))
    e1 = fd.rel_error(d1(z), fd.num_dir(s, z, np.ones_like(z)))          # elementwise FD
    e2 = fd.rel_error(d2(z), fd.num_dir(d1, z, np.ones_like(z)))
    print(f"{name}: rel error sigma' {e1:.2e}, sigma'' {e2:.2e}")
    assert e1 < 1e-8
    assert e2 < 1e-8                                    # ReLU: both sides exactly 0


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_act_backward_and_rpasses_match_fd(fd, name):
    rng = _rng(5)
    fns = ACTIVATIONS[name]
    z, dh, Rz, Rdh = _z(rng, (N, O)), *(rng.standard_normal((3, N, O)))
    _, cache = LY.act_forward(z, fns)
    dz = LY.act_backward(dh, cache)
    e_b = fd.rel_error(dz, fd.num_grad(lambda a: np.sum(LY.act_forward(a, fns)[0] * dh), z))
    Rh = LY.act_rforward(Rz, cache)
    e_rf = fd.rel_error(Rh, fd.num_dir(lambda a: LY.act_forward(a, fns)[0], z, Rz))
    Rdz = LY.act_rbackward(Rdh, dh, Rz, cache)

    def backward_of_r(r):
        return LY.act_backward(dh + r * Rdh, LY.act_forward(z + r * Rz, fns)[1])

    e_rb = fd.rel_error(Rdz, fd.num_dir(backward_of_r, 0.0, 1.0))
    print(f"{name}: rel errors backward {e_b:.2e}, R-forward {e_rf:.2e}, R-backward {e_rb:.2e}")
    assert max(e_b, e_rf, e_rb) < 1e-8


def test_relu_convention_at_zero():
    relu, d1, d2 = ACTIVATIONS["relu"]
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(relu(z), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(d1(z), [0.0, 0.0, 1.0])     # σ'(0) = 0, as TF/PyTorch/JAX
    np.testing.assert_array_equal(d2(z), [0.0, 0.0, 0.0])


def test_softplus_and_sigmoid_are_stable_at_large_inputs():
    z = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow is fine
        sp, sg = softplus(z), sigmoid(z)
        d2 = ACTIVATIONS["softplus"][2](z)
    assert np.all(np.isfinite(sp)) and np.all(np.isfinite(sg)) and np.all(np.isfinite(d2))
    np.testing.assert_allclose(sp[[2, 4]], [np.log(2.0), 1000.0], rtol=1e-15)
    np.testing.assert_allclose(sg[[0, 2, 4]], [0.0, 0.5, 1.0], atol=1e-300)
