"""The exact MAML meta-gradient, FOMAML, Meta-SGD's α-gradient and ``adapt``.

Dimension legend: T tasks, K support, Q query, D in, O out, P parameters,
s = inner_steps.

The reference is a centred finite difference of the meta-objective
``maml.meta_loss`` itself (which runs the inner SGD loop), so these tests check
the reverse accumulation  g ← ∇L_Q(θ_s);  g ← g − H_S(θ_k)(α g)  end to end.
Relative errors are printed (``pytest -s``); tolerance 1e-6, observed ~1e-10.
"""
import numpy as np
import pytest

from mamlnp import MLP, TaskBatch, adapt, meta_gradient, meta_loss
from mamlnp.meta import maml
from mamlnp.check.gradcheck import dense_meta_gradient

ACTS = ["relu", "tanh", "softplus"]
TOL = 1e-6
ALPHA = 0.1


def _batch(seed, D=2, O=2, T=2, K=4, Q=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, K + Q, D))                               # (T, K+Q, D)
    y = np.sin(x @ rng.standard_normal((D, O)) + rng.uniform(0, 3, (T, 1, O)))  # (T, K+Q, O)
    return TaskBatch.make(x[:, :K], y[:, :K], x[:, K:], y[:, K:])


def _relu_margin(model, theta, batch, s):
    """min |z| over every hidden pre-activation met while computing the meta-loss."""
    out = np.inf
    for t in range(batch.num_tasks):
        xs, ys, xq, _ = batch.task(t)
        for th in maml.inner_loop(model, theta, xs, ys, ALPHA, s):
            for x in (xs, xq):
                _, caches = model._forward(th, x)
                out = min([out] + [np.abs(a[0]).min() for _, a in caches if a is not None])
    return out


def _case(seed, activation, s, sizes=(2, 4, 3, 2)):
    """(model, θ, batch); for ReLU redrawn until no pre-activation is within 1e-3 of 0."""
    model = MLP(sizes, activation)
    for attempt in range(50):
        theta = model.init(100 * seed + attempt, scheme="uniform")
        batch = _batch(100 * seed + attempt)
        if activation != "relu" or _relu_margin(model, theta, batch, s) > 1e-3:
            return model, theta, batch
    raise RuntimeError("no safe ReLU case")


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("s", [0, 1, 2, 3, 4, 5])
def test_second_order_meta_gradient_matches_fd(fd, activation, s):
    model, theta, batch = _case(s, activation, s)
    loss, g = meta_gradient(model, theta, batch, ALPHA, s)
    # the default backend is numba: its loss agrees with the NumPy meta_loss to ulps, not bits
    assert loss == pytest.approx(meta_loss(model, theta, batch, ALPHA, s), rel=1e-12)
    g_fd = fd.num_grad(lambda t: meta_loss(model, t, batch, ALPHA, s), theta)
    err = fd.rel_error(g, g_fd)
    print(f"meta-gradient SO {activation} s={s}: rel error {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("activation", ACTS)
def test_softmax_xent_meta_gradient_matches_fd(fd, activation):
    """Classification MAML: one-hot targets, 3 classes, s = 2."""
    model = MLP((2, 4, 3), activation, "softmax_xent")
    for seed in range(7, 50):                            # ReLU: first case with a safe margin
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2, 9, 2))                               # (T, K+Q, D)
        y = np.eye(3)[np.argmax(x @ rng.standard_normal((2, 2, 3)), axis=2)]   # (T, K+Q, O)
        batch = TaskBatch.make(x[:, :4], y[:, :4], x[:, 4:], y[:, 4:])
        theta = model.init(seed, scheme="uniform")
        if activation != "relu" or _relu_margin(model, theta, batch, 2) > 1e-3:
            break
    _, g = meta_gradient(model, theta, batch, ALPHA, 2)
    err = fd.rel_error(g, fd.num_grad(lambda t: meta_loss(model, t, batch, ALPHA, 2), theta))
    print(f"meta-gradient SO softmax_xent {activation} s=2: rel error {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("activation", ACTS)
def test_first_order_equals_second_order_at_zero_steps(activation):
    model, theta, batch = _case(0, activation, 0)
    fo = meta_gradient(model, theta, batch, ALPHA, 0, first_order=True)
    so = meta_gradient(model, theta, batch, ALPHA, 0, first_order=False)
    assert fo[0] == so[0]
    np.testing.assert_array_equal(fo[1], so[1])


@pytest.mark.parametrize("activation", ACTS)
def test_one_step_fo_and_so_differ_by_exactly_the_hessian_term(fd, activation):
    """s = 1:  SO − FO = −(1/T) Σ_t H_S(θ) (α ∇L_Q(θ_1^{(t)}))."""
    model, theta, batch = _case(1, activation, 1)
    _, so = meta_gradient(model, theta, batch, ALPHA, 1)
    _, fo = meta_gradient(model, theta, batch, ALPHA, 1, first_order=True)
    term = np.zeros(model.num_params)
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        theta_1 = theta - ALPHA * model.loss_and_grad(theta, xs, ys)[1]
        g_q = model.loss_and_grad(theta_1, xq, yq)[1]                    # ∇L_Q(θ_1) (P,)
        term -= model.hvp(theta, xs, ys, ALPHA * g_q) / batch.num_tasks
    err = fd.rel_error(so - fo, term)
    fo_vs_fd = fd.rel_error(fo, fd.num_grad(lambda t: meta_loss(model, t, batch, ALPHA, 1), theta))
    print(f"{activation}: SO-FO vs Hessian term {err:.1e}; FO vs FD {fo_vs_fd:.1e}")
    assert err < 1e-10
    assert fo_vs_fd > 1e-3                      # FOMAML is NOT the gradient of the meta-loss


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
@pytest.mark.parametrize("s", [2, 5])
def test_so_is_fo_times_the_product_of_dense_jacobians(fd, activation, s):
    """SO = (1/T) Σ_t (I − H_0 α)⋯(I − H_{s−1} α) ∇L_Q(θ_s): dense Hessians from exact
    HVPs (to rounding) and from FD of the gradient (no R-pass at all, to FD accuracy)."""
    model, theta, batch = _case(2, activation, s)
    _, so = meta_gradient(model, theta, batch, ALPHA, s)
    e_hvp = fd.rel_error(so, dense_meta_gradient(model, theta, batch, ALPHA, s, hessian="hvp"))
    e_fd = fd.rel_error(so, dense_meta_gradient(model, theta, batch, ALPHA, s, hessian="fd"))
    print(f"{activation} s={s}: SO vs dense product, HVP Hessians {e_hvp:.1e}, FD Hessians {e_fd:.1e}")
    assert e_hvp < 1e-12 and e_fd < TOL


def test_per_parameter_alpha_meta_gradient_matches_fd(fd):
    model, theta, batch = _case(3, "softplus", 3)
    alpha = np.random.default_rng(3).uniform(0.05, 0.15, model.num_params)   # (P,)
    _, g = meta_gradient(model, theta, batch, alpha, 3)
    err = fd.rel_error(g, fd.num_grad(lambda t: meta_loss(model, t, batch, alpha, 3), theta))
    print(f"meta-gradient with alpha (P,): rel error {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "per-param"])
def test_metasgd_alpha_gradient_matches_fd(fd, activation, vector):
    s = 3
    model, theta, batch = _case(4, activation, s)
    rng = np.random.default_rng(4)
    alpha = rng.uniform(0.05, 0.15, model.num_params) if vector else ALPHA
    loss, g_theta, g_alpha = maml.meta_gradient_alpha(model, theta, batch, alpha, s)
    g_alpha_fd = fd.num_grad(lambda a: meta_loss(model, theta, batch, a if vector else float(a), s),
                             np.asarray(alpha))
    err = fd.rel_error(g_alpha, g_alpha_fd)
    print(f"Meta-SGD dM/dalpha {activation} {'(P,)' if vector else 'scalar'}: rel error {err:.2e}")
    assert err < TOL
    ref_loss, ref_g = meta_gradient(model, theta, batch, alpha, s)
    assert loss == pytest.approx(ref_loss, rel=1e-12)     # NumPy vs the default (numba) backend
    np.testing.assert_allclose(g_theta, ref_g, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("s", [0, 1, 4])
def test_adapt_equals_manual_sgd_loop(s):
    model, theta, batch = _case(5, "tanh", s)
    xs, ys, _, _ = batch.task(0)
    manual = theta.copy()
    for _ in range(s):
        manual = manual - ALPHA * model.loss_and_grad(manual, xs, ys)[1]   # θ ← θ − α ∇L_S(θ)
    adapted = adapt(model, theta, xs, ys, ALPHA, s, backend="numpy")    # same ops: same bits
    np.testing.assert_array_equal(adapted, manual)
    np.testing.assert_allclose(adapt(model, theta, xs, ys, ALPHA, s), manual, rtol=1e-12)
    assert adapted is not theta


def test_meta_gradient_same_seed_same_bits():
    model, theta, batch = _case(6, "softplus", 3)
    a = meta_gradient(model, theta, batch, ALPHA, 3)
    b = meta_gradient(model, theta.copy(), batch, ALPHA, 3)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
