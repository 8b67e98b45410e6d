"""ANIL: MAML whose inner loop adapts only the network's head (the output layer).

Dimension legend: T tasks, K support points, Q query points, P parameters,
P_h = H_last·O + O head parameters, s = inner_steps.

Raghu, Raghu, Bengio & Vinyals (2020), "Rapid Learning or Feature Reuse? Towards
Understanding the Effectiveness of MAML", arXiv:1909.09157. The inner loop updates the
head (W_L, b_L) and leaves the body fixed; the outer loop meta-learns everything.

That is MAML's inner loop with the per-parameter step (Meta-SGD's vector form)

    α_i = α  for i in the head (W_L, b_L),   α_i = 0  otherwise         (P,)

so  θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k)  moves only the head, and the exact meta-gradient is
mamlnp.meta.maml.meta_gradient's reverse pass with that α:

    ḡ_s = ∇L_Q(θ_s),   ḡ_k = ḡ_{k+1} − H_S(θ_k) (α ⊙ ḡ_{k+1})          (P,)

The HVP is applied only to vectors v = α ⊙ ḡ that vanish off the head: H v = H[:, head] v_h,
the head's columns of the Hessian (head-head block and body-head cross terms; the
body-body block is never needed). This module computes it with the full R-pass (the
simplest correct path, both backends); what a head-only path would save is measured in
benchmarks/bench_family.py and discussed in docs/derivations/anil.md.
"""
import numpy as np

from ..errors import InputError
from .maml import check_alpha, meta_gradient


def head_slice(model):
    """slice of θ holding the output layer's W_L then b_L (the layout of nn/mlp.py)."""
    (w0, _), (_, b1), _ = model.layout[-1]
    return slice(w0, b1)


def anil_alpha(model, alpha):
    """The masked step (P,): α on the head's W_L, b_L, 0 on every other parameter."""
    alpha = check_alpha(model, alpha)
    if np.ndim(alpha):
        raise InputError(f"alpha: expected a positive scalar step for ANIL's head, got an "
                         f"array of shape {np.shape(alpha)}")
    vec = np.zeros(model.num_params)
    vec[head_slice(model)] = alpha
    return vec


def anil_gradient(model, theta, batch, alpha, inner_steps, first_order=False, backend=None):
    """(meta_loss, ∇_θ meta_loss (P,)) of ANIL: meta_gradient with α masked to the head."""
    return meta_gradient(model, theta, batch, anil_alpha(model, alpha), inner_steps,
                         first_order, backend)
