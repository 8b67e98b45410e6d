"""The dense layer and the activation layer: forward, backward, and their R-passes.

Dimension legend: N points, I = fan_in, O = fan_out.

Layers come in cs231n-style pairs: ``*_forward`` returns ``(out, cache)`` and
``*_backward`` takes the cache back. The R-operator versions (Pearlmutter 1994,
"Fast exact multiplication by the Hessian") differentiate each line of the
forward and backward pass along a direction v in parameter space:
R{f} = d/dr f(θ + r v) at r = 0. For a parameter block W, R{W} = V_W (the slice of v).

  forward       z = h W + b                     (N, O) = (N, I)(I, O) + (O,)
  R-forward     Rz = Rh W + h V_W + V_b         same shape
  backward      dW = hᵀ dz,  db = Σ_n dz,  dh = dz Wᵀ
  R-backward    RdW = Rhᵀ dz + hᵀ Rdz           (product rule on each line)
                Rdb = Σ_n Rdz
                Rdh = Rdz Wᵀ + dz V_Wᵀ

Derivation: docs/derivations/backprop.md and docs/derivations/hvp.md.
"""
import numpy as np


def dense_forward(h, W, b):
    """z = h W + b.   h (N, I), W (I, O), b (O,) -> z (N, O)."""
    z = h @ W + b                                   # (N, O)
    return z, (h, W)


def dense_backward(dz, cache):
    """Given dz = ∂L/∂z (N, O): return dh (N, I), dW (I, O), db (O,)."""
    h, W = cache
    dW = h.T @ dz                                   # (I, O) = (I, N)(N, O)
    db = dz.sum(axis=0)                             # (O,)
    dh = dz @ W.T                                   # (N, I) = (N, O)(O, I)
    return dh, dW, db


def dense_rforward(Rh, cache, VW, Vb):
    """Rz = Rh W + h V_W + V_b.   Rh (N, I) or None (input layer: x does not
    depend on θ), V_W (I, O), V_b (O,) -> Rz (N, O)."""
    h, W = cache
    Rz = h @ VW + Vb                                # (N, O)
    if Rh is not None:
        Rz = Rz + Rh @ W                            # (N, O) = (N, I)(I, O)
    return Rz


def dense_rbackward(Rdz, dz, Rh, cache, VW):
    """R-pass of dense_backward.

    Rdz (N, O), dz (N, O), Rh (N, I) or None -> Rdh (N, I), RdW (I, O), Rdb (O,).
    RdW is the W-block of H v; Rdb the b-block.
    """
    h, W = cache
    RdW = h.T @ Rdz                                 # (I, O)
    if Rh is not None:
        RdW = RdW + Rh.T @ dz                       # (I, O)
    Rdb = Rdz.sum(axis=0)                           # (O,)
    Rdh = Rdz @ W.T + dz @ VW.T                     # (N, I)
    return Rdh, RdW, Rdb


def act_forward(z, fns):
    """h = σ(z).  z (N, O) -> h (N, O).  fns = (σ, σ', σ'')."""
    return fns[0](z), (z, fns)


def act_backward(dh, cache):
    """dz = dh ⊙ σ'(z)."""
    z, fns = cache
    return dh * fns[1](z)                           # (N, O)


def act_rforward(Rz, cache):
    """R{h} = σ'(z) ⊙ Rz."""
    z, fns = cache
    return fns[1](z) * Rz                           # (N, O)


def act_rbackward(Rdh, dh, Rz, cache):
    """R{dz} = Rdh ⊙ σ'(z) + dh ⊙ σ''(z) ⊙ Rz   (product rule on dz = dh ⊙ σ'(z))."""
    z, fns = cache
    return Rdh * fns[1](z) + dh * fns[2](z) * Rz    # (N, O)
