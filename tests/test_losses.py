"""cs231n-style unit tests of mamlnp/nn/losses.py.

Dimension legend: N points, O outputs.

For each loss: the value on a hand-computed example, ``*_backward`` against a
centred FD of ``*_forward``, and ``*_rbackward`` (the loss curvature times Rŷ)
against a centred FD of ``*_backward`` along Rŷ. Relative errors are printed.
"""
import numpy as np
import pytest

from mamlnp.nn.losses import LOSSES, mse_forward, softmax, softmax_xent_forward

N, O = 6, 3


def _data(name, seed):
    rng = np.random.default_rng(seed)
    y_hat, Ry = rng.standard_normal((2, N, O))
    if name == "mse":
        y = rng.standard_normal((N, O))
    elif seed % 2:                                       # soft labels: probability rows
        y = rng.dirichlet(np.ones(O), size=N)
    else:
        y = np.eye(O)[rng.integers(0, O, N)]             # one-hot labels
    return y_hat, y, Ry


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_and_rbackward_match_fd(fd, name, seed):
    forward, backward, rbackward = LOSSES[name]
    y_hat, y, Ry = _data(name, seed)
    _, cache = forward(y_hat, y)
    e_b = fd.rel_error(backward(cache), fd.num_grad(lambda a: forward(a, y)[0], y_hat))
    e_r = fd.rel_error(rbackward(Ry, cache),
                       fd.num_dir(lambda a: backward(forward(a, y)[1]), y_hat, Ry))
    print(f"{name} seed {seed}: rel error backward {e_b:.2e}, R-backward {e_r:.2e}")
    assert e_b < 1e-8 and e_r < 1e-8


def test_mse_hand_computed():
    y_hat = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = np.array([[0.0, 2.0], [3.0, 6.0]])
    loss, _ = mse_forward(y_hat, y)
    assert loss == (1.0 + 0.0 + 0.0 + 4.0) / 4           # mean over all N·O entries


def test_softmax_xent_hand_computed_and_stable():
    y_hat = np.array([[0.0, np.log(3.0)], [1000.0, 0.0]])   # p = (1/4, 3/4); a huge logit
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    loss, _ = softmax_xent_forward(y_hat, y)
    np.testing.assert_allclose(loss, -(np.log(0.75) + 0.0) / 2, rtol=1e-14)
    p = softmax(np.array([[1000.0, -1000.0, 0.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)


def test_softmax_xent_curvature_is_psd_and_kills_constant_shifts():
    """R{∂L/∂ŷ} along a constant shift of a row is 0 (softmax is shift invariant),
    and ⟨Rŷ, R{∂L/∂ŷ}⟩ >= 0 (the loss is convex in ŷ)."""
    _, _, rbackward = LOSSES["softmax_xent"]
    y_hat, y, Ry = _data("softmax_xent", 0)
    _, cache = softmax_xent_forward(y_hat, y)
    shift = np.repeat(np.arange(1.0, N + 1)[:, None], O, axis=1)         # (N, O), constant rows
    np.testing.assert_allclose(rbackward(shift, cache), 0.0, atol=1e-15)
    assert np.sum(Ry * rbackward(Ry, cache)) > 0.0
