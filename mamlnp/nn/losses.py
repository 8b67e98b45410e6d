"""Losses with their gradient and the R-pass of that gradient.

Dimension legend: N points, O outputs.

Each loss offers three functions:
  * ``*_forward(y_hat, y) -> (loss, cache)``
  * ``*_backward(cache) -> dy_hat``            ∂L/∂ŷ, shape (N, O)
  * ``*_rbackward(Ry_hat, cache) -> R{dy_hat}``  the directional derivative of
    ∂L/∂ŷ along R{ŷ}; this is how the loss's own curvature enters the HVP.
"""
import numpy as np

# --- mean squared error --------------------------------------------------------
#   L = (1 / (N O)) Σ_{n,o} (ŷ_no − y_no)²
#   ∂L/∂ŷ = 2 (ŷ − y) / (N O)
#   R{∂L/∂ŷ} = 2 Rŷ / (N O)          (∂²L/∂ŷ² = 2 I / (N O))


def mse_forward(y_hat, y):
    diff = y_hat - y                                # (N, O)
    return float(np.mean(diff * diff)), (diff,)


def mse_backward(cache):
    (diff,) = cache
    return (2.0 / diff.size) * diff                 # (N, O)


def mse_rbackward(Ry_hat, cache):
    (diff,) = cache
    return (2.0 / diff.size) * Ry_hat               # (N, O)


# --- softmax cross-entropy -------------------------------------------------------
#   p = softmax(ŷ) row-wise, y rows are probability vectors (one-hot for labels)
#   L = −(1/N) Σ_n Σ_o y_no log p_no
#   ∂L/∂ŷ = (p − y) / N
#   R{∂L/∂ŷ} = R{p} / N,   R{p} = p ⊙ (Rŷ − Σ_o p_o Rŷ_o)   (softmax Jacobian)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)            # (N, O), stable
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_xent_forward(y_hat, y):
    z = y_hat - y_hat.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))   # (N, O)
    loss = -float(np.sum(y * log_p)) / y_hat.shape[0]
    return loss, (np.exp(log_p), y)


def softmax_xent_backward(cache):
    p, y = cache
    return (p - y) / p.shape[0]                     # (N, O)


def softmax_xent_rbackward(Ry_hat, cache):
    p, _ = cache
    Rp = p * (Ry_hat - np.sum(p * Ry_hat, axis=1, keepdims=True))  # (N, O)
    return Rp / p.shape[0]


# name -> (forward, backward, rbackward)
LOSSES = {
    "mse": (mse_forward, mse_backward, mse_rbackward),
    "softmax_xent": (softmax_xent_forward, softmax_xent_backward, softmax_xent_rbackward),
}
