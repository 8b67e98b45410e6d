"""An independent oracle: JAX's autodiff against every hand-written derivative.

Dimension legend: N points, T tasks, K support / Q query points, D inputs, O outputs,
P parameters, s = inner_steps.

Skipped unless JAX is installed (it is not a dependency: CI does not install it). To run:
``pip install jax`` in an environment with mamlnp, then ``python -m pytest tests/test_jax_oracle.py``.
JAX differentiates a plain re-implementation of the same network written here from the
layout documented in mamlnp/nn/mlp.py (W_l (fan_in, fan_out) then b_l, layer by layer);
nothing of mamlnp's derivative code is used on the JAX side. Compared: the gradient, the
HVP (JAX: forward-over-reverse, jvp of grad), the SO and FO meta-gradients for s = 0 … 3
on both backends, and Meta-SGD's α-gradient, for every activation and both losses.
"""
import numpy as np
import pytest

import mamlnp
from mamlnp.meta import maml

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh, "softplus": jax.nn.softplus}
CASES = [((2, 7, 5, 3), "relu", "mse"), ((1, 6, 6, 1), "tanh", "mse"),
         ((3, 5, 4), "softplus", "mse"), ((2, 6, 3), "tanh", "softmax_xent"),
         ((2, 5, 5, 4), "softplus", "softmax_xent")]
RTOL = 1e-12                 # measured: at most 5.8e-16 (exact math, float64 rounding only)


def jax_loss(sizes, activation, loss):
    """L(θ, x, y) written directly in JAX from the flat layout."""
    def forward(theta, x):
        h, o = x, 0
        for l, (i, j) in enumerate(zip(sizes[:-1], sizes[1:])):
            W = theta[o:o + i * j].reshape(i, j)
            b = theta[o + i * j:o + i * j + j]
            o += i * j + j
            h = h @ W + b
            if l < len(sizes) - 2:
                h = ACT[activation](h)
        return h

    def value(theta, x, y):
        y_hat = forward(theta, x)
        if loss == "mse":
            return jnp.mean((y_hat - y) ** 2)
        return -jnp.sum(y * jax.nn.log_softmax(y_hat, axis=1)) / y.shape[0]
    return value


def jax_meta_loss(L, inner_steps, first_order):
    """(1/T) Σ_t L_Q(θ_s^(t)) with θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k); α scalar or (P,)."""
    def task(theta, alpha, xs, ys, xq, yq):
        th = theta
        for _ in range(inner_steps):
            g = jax.grad(L)(th, xs, ys)
            th = th - alpha * (jax.lax.stop_gradient(g) if first_order else g)
        return L(th, xq, yq)

    def meta(theta, alpha, xs, ys, xq, yq):
        return jnp.mean(jax.vmap(task, in_axes=(None, None, 0, 0, 0, 0))(theta, alpha, xs, ys,
                                                                          xq, yq))
    return meta


def targets(rng, loss, shape):
    if loss == "mse":
        return rng.standard_normal(shape)
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])       # rows of probabilities


def case(sizes, activation, loss, seed=0, T=3, K=6, Q=5):
    rng = np.random.default_rng(seed)
    model = mamlnp.MLP(sizes, activation, loss)
    theta = model.init(seed, scheme="uniform")
    D, O = sizes[0], sizes[-1]
    batch = mamlnp.TaskBatch(rng.uniform(-2, 2, (T, K, D)), targets(rng, loss, (T, K, O)),
                             rng.uniform(-2, 2, (T, Q, D)), targets(rng, loss, (T, Q, O)))
    return model, theta, batch, jax_loss(sizes, activation, loss)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("sizes, activation, loss", CASES)
def test_gradient_and_hvp_match_jax(sizes, activation, loss):
    model, theta, batch, L = case(sizes, activation, loss)
    x, y = batch.x_support[0], batch.y_support[0]
    value, grad = model.loss_and_grad(theta, x, y)
    v = np.random.default_rng(1).standard_normal(model.num_params)
    hv = model.hvp(theta, x, y, v)
    _, hv_jax = jax.jvp(lambda t: jax.grad(L)(t, x, y), (theta,), (v,))   # forward-over-reverse
    errs = (rel(value, L(theta, x, y)), rel(grad, jax.grad(L)(theta, x, y)), rel(hv, hv_jax))
    print(f"{activation}/{loss} {sizes}: loss {errs[0]:.1e}  grad {errs[1]:.1e}  HVP {errs[2]:.1e}")
    assert max(errs) <= RTOL


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("sizes, activation, loss", CASES)
def test_meta_gradient_matches_jax(sizes, activation, loss, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    model, theta, batch, L = case(sizes, activation, loss, seed=2)
    alpha = 0.1
    for s in range(4):
        for fo in (False, True):
            m, g = maml.meta_gradient(model, theta, batch, alpha, s, fo, backend=backend)
            f = jax_meta_loss(L, s, fo)
            args = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
            m_jax, g_jax = jax.value_and_grad(f)(theta, alpha, *args)
            err = max(rel(m, m_jax), rel(g, g_jax))
            print(f"{backend} {activation}/{loss} s={s} {'FO' if fo else 'SO'}: rel err {err:.1e}")
            assert err <= RTOL


@pytest.mark.parametrize("sizes, activation, loss", CASES[:3])
def test_metasgd_alpha_gradient_matches_jax(sizes, activation, loss):
    model, theta, batch, L = case(sizes, activation, loss, seed=3)
    alpha = np.random.default_rng(4).uniform(0.02, 0.2, model.num_params)     # (P,)
    args = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
    for s in (1, 2, 3):
        m, g, ga = maml.meta_gradient_alpha(model, theta, batch, alpha, s)
        _, (g_jax, ga_jax) = jax.value_and_grad(jax_meta_loss(L, s, False), argnums=(0, 1))(
            theta, alpha, *args)
        err = max(rel(g, g_jax), rel(ga, ga_jax))
        print(f"Meta-SGD {activation}/{loss} s={s}: rel err {err:.1e}")
        assert err <= RTOL
