"""Elementwise activations σ with their first and second derivatives.

Dimension legend: N points, H units of one hidden layer. Every function maps
z (N, H) -> (N, H), elementwise.

Three derivatives are needed, and each sits beside its forward:
  * σ(z)   for the forward pass              h = σ(z)
  * σ'(z)  for the backward pass             dz = dh ⊙ σ'(z)
  * σ''(z) for the R-pass (HVP)              R(dz) = R(dh) ⊙ σ'(z) + dh ⊙ σ''(z) ⊙ R(z)

ReLU has σ'' = 0 almost everywhere, so a ReLU network's HVP never exercises the
σ'' term; softplus and tanh do. See docs/derivations/hvp.md.
"""
import numpy as np

# --- ReLU: σ(z) = max(z, 0) -------------------------------------------------
# At z = 0 we take σ'(0) = 0 (the subgradient TensorFlow, PyTorch and JAX use).


def relu(z):
    return np.maximum(z, 0.0)


def relu_d1(z):
    return (z > 0.0).astype(z.dtype)


def relu_d2(z):
    return np.zeros_like(z)


# --- tanh: σ' = 1 - σ², σ'' = -2 σ σ' -----------------------------------------


def tanh(z):
    return np.tanh(z)


def tanh_d1(z):
    t = np.tanh(z)
    return 1.0 - t * t


def tanh_d2(z):
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


# --- softplus: σ(z) = log(1 + e^z), σ' = sigmoid(z), σ'' = s (1 - s) ---------


def softplus(z):
    return np.logaddexp(0.0, z)  # stable for large |z|


def sigmoid(z):
    # exp of a non-positive number only: no overflow for any z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus_d1(z):
    return sigmoid(z)


def softplus_d2(z):
    s = sigmoid(z)
    return s * (1.0 - s)


# name -> (σ, σ', σ'')
ACTIVATIONS = {
    "relu": (relu, relu_d1, relu_d2),
    "tanh": (tanh, tanh_d1, tanh_d2),
    "softplus": (softplus, softplus_d1, softplus_d2),
}
