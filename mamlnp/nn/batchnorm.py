"""The batch-norm layer (Ioffe & Szegedy 2015, arXiv:1502.03167): forward, backward, and
their R-passes (Pearlmutter's R-operator).

Dimension legend: N points of the batch being normalised, H units of one hidden layer.
Every per-feature quantity (μ, σ², γ, β, ...) is (H,); every per-point one is (N, H).
Means are over the N points of the batch: mean(a) = (1/N) Σ_n a_n, shape (H,).

Statistics always come from the batch being normalised (the support batch in the
inner loop, the query batch after adaptation); there are no running averages. This is
what cbfinn/maml (Finn et al. 2017) does at meta-training and meta-test time: its
``utils.normalize`` calls ``tf.contrib.layers.batch_norm`` with the default is_training=True.

  forward       μ = mean(z),  σ² = mean((z − μ)²)  (biased),  s = 1/√(σ² + ε)
                ẑ = (z − μ) s,   y = γ ⊙ ẑ + β                       (N, H)
  backward      dβ = Σ_n dy,  dγ = Σ_n dy ⊙ ẑ,  dẑ = dy ⊙ γ
                dz = s ⊙ (dẑ − mean(dẑ) − ẑ ⊙ mean(dẑ ⊙ ẑ))         (N, H)
  R-forward     Rẑ = s ⊙ (Rz − mean(Rz) − ẑ ⊙ mean(ẑ ⊙ Rz))           (the same map as dz)
                Ry = V_γ ⊙ ẑ + γ ⊙ Rẑ + V_β
  R-backward    R{s}/s = −s ⊙ mean(ẑ ⊙ Rz)                              (H,)
                Rdβ = Σ_n Rdy,  Rdγ = Σ_n (Rdy ⊙ ẑ + dy ⊙ Rẑ)
                Rdẑ = Rdy ⊙ γ + dy ⊙ V_γ
                Rdz = (R{s}/s) ⊙ dz + s ⊙ (Rdẑ − mean(Rdẑ) − Rẑ ⊙ m − ẑ ⊙ Rm),
                with m = mean(dẑ ⊙ ẑ), Rm = mean(Rdẑ ⊙ ẑ + dẑ ⊙ Rẑ)

The signatures mirror layers.py's dense/activation passes:

  batchnorm_forward(z, gamma, beta, eps)             -> (y, cache)
  batchnorm_backward(dy, cache)                      -> (dz, dgamma, dbeta)
  batchnorm_rforward(Rz, cache, Vgamma, Vbeta)       -> Ry
  batchnorm_rbackward(Rdy, dy, Rz, cache, Vgamma)    -> (Rdz, Rdgamma, Rdbeta)

Like ``dense_rbackward(Rdz, dz, Rh, cache, VW)`` the R-backward takes the R-image of the
layer's input (Rz, from the R-forward) and the upstream gradient of the backward pass
(dy); Rdgamma and Rdbeta are the γ- and β-blocks of H v.

A batch of one point (N = 1) is allowed: z − μ = 0, so ẑ = 0 and y = β whatever z is;
ε keeps s = 1/√ε finite, and dz = 0 exactly (every term carries a factor ẑ or a
difference a − mean(a) of one number). Derivation: docs/derivations/batchnorm.md.
"""
import numpy as np


def _normalise_rows(a, zhat, s):
    """s ⊙ (a − mean(a) − ẑ ⊙ mean(ẑ ⊙ a)): the Jacobian of ẑ(z), symmetric, applied to a (N, H)."""
    return s * (a - a.mean(axis=0) - zhat * (zhat * a).mean(axis=0))


def batchnorm_forward(z, gamma, beta, eps):
    """y = γ ⊙ (z − μ)/√(σ² + ε) + β over the batch.  z (N, H), γ, β (H,), ε > 0 -> y (N, H).

    cache = (ẑ (N, H), s = 1/√(σ² + ε) (H,), γ (H,)).
    """
    zc = z - z.mean(axis=0)                         # (N, H)  z − μ
    var = (zc * zc).mean(axis=0)                    # (H,)    σ², biased
    s = 1.0 / np.sqrt(var + eps)                    # (H,)
    zhat = zc * s                                   # (N, H)
    y = gamma * zhat + beta                         # (N, H)
    return y, (zhat, s, gamma)


def batchnorm_backward(dy, cache):
    """Given dy = ∂L/∂y (N, H): dz (N, H), dγ (H,), dβ (H,)."""
    zhat, s, gamma = cache
    dbeta = dy.sum(axis=0)                          # (H,)
    dgamma = (dy * zhat).sum(axis=0)                # (H,)
    dz = _normalise_rows(dy * gamma, zhat, s)       # (N, H)
    return dz, dgamma, dbeta


def batchnorm_rforward(Rz, cache, Vgamma, Vbeta):
    """Ry = V_γ ⊙ ẑ + γ ⊙ Rẑ + V_β with Rẑ = s ⊙ (Rz − mean(Rz) − ẑ ⊙ mean(ẑ ⊙ Rz)).

    Rz (N, H) (the R-image of this layer's input), V_γ, V_β (H,) -> Ry (N, H)."""
    zhat, s, gamma = cache
    Rzhat = _normalise_rows(Rz, zhat, s)            # (N, H)
    return Vgamma * zhat + gamma * Rzhat + Vbeta    # (N, H)


def batchnorm_rbackward(Rdy, dy, Rz, cache, Vgamma):
    """R-pass of batchnorm_backward (product rule on each of its lines).

    Rdy (N, H), dy (N, H), Rz (N, H), V_γ (H,) -> Rdz (N, H), Rdγ (H,), Rdβ (H,).
    """
    zhat, s, gamma = cache
    Rzhat = _normalise_rows(Rz, zhat, s)            # (N, H)
    Rs_s = -(zhat * Rz).mean(axis=0) * s            # (H,)    R{s}/s = −s mean(ẑ ⊙ Rz)
    dzhat = dy * gamma                              # (N, H)
    Rdzhat = Rdy * gamma + dy * Vgamma              # (N, H)
    m = (dzhat * zhat).mean(axis=0)                 # (H,)
    Rm = (Rdzhat * zhat + dzhat * Rzhat).mean(axis=0)   # (H,)
    dz = _normalise_rows(dzhat, zhat, s)            # (N, H)
    Rdz = Rs_s * dz + s * (Rdzhat - Rdzhat.mean(axis=0) - Rzhat * m - zhat * Rm)
    Rdgamma = (Rdy * zhat + dy * Rzhat).sum(axis=0) # (H,)
    Rdbeta = Rdy.sum(axis=0)                        # (H,)
    return Rdz, Rdgamma, Rdbeta
