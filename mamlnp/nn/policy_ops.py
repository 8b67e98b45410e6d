"""The row passes of ``FactoredPoint`` (mamlnp/nn/policy_factors.py), in NumPy: the ReLU with
its mask, the masks of the backward and R-passes, and the thin products (a few rows of
inputs) fused with them. They are the references of the compiled kernels of the same names
in mamlnp/fast/policy/policy_kernels.py (tests/test_policy_kernels.py checks each pair).

Dimension legend: M samples; H units of a layer (the rows of a transposed (·, M) array);
K the inner dimension of a thin product (D + 1 = 3, A = 2 or 2A = 4 for the navigation
policy).

Every (·, M) array is C-ordered with the M samples along the row (``FactoredPoint``'s
layout), s is a bool mask (H, M). The passes, each in place into ``out`` or ``x``:

    relu_rows(out (2H+1, M), s)          out[H] = 1,  out[:H+1] = max(out[:H+1], 0),
                                         s = out[:H] > 0
    product_relu(A (H, K), B (K, M), out, s)
                                         out[:H] = A B, then relu_rows(out, s)
    product_mask(A (H, K), B (K, M), s, out (H, M))
                                         out = s ⊙ (A B)
    mask_rows(x (H, M), s)               x = s ⊙ x

The mask is s = 1[z > 0] of the forward (z the pre-activation; max(z, 0) > 0 ⇔ z > 0, NaN
included: both false). A product with K ≤ 4 writes an (H, M) array through a K-long sum per
element: memory work, which a BLAS call does in a separate pass from the ReLU or the mask;
the compiled twins do the sum and the mask in one pass over each row.
"""
import numpy as np


def relu_rows(out, s):
    """out[H] = 1, out[:H+1] = max(out[:H+1], 0) in place, s = out[:H] > 0 (H = s.shape[0]):
    h̃ᵀ = [max(zᵀ, 0); 1] and the mask of zᵀ = out[:H] (2H+1, M); rows past H untouched."""
    H = s.shape[0]
    out[H] = 1.0                                                          # the bias row of h̃ᵀ
    np.maximum(out[:H + 1], 0.0, out=out[:H + 1])                         # (H+1, M)
    np.greater(out[:H], 0.0, out=s)                                       # s = 1[z > 0] (H, M)


def product_relu(A, B, out, s):
    """out[:H] = A B (H, M), then ``relu_rows(out, s)``: a layer's forward h̃ᵀ = [max(W̃ᵀ h̃ᵀ,
    0); 1] with A = W̃ᵀ (H, K) and B = h̃ᵀ (K, M) of the layer below."""
    np.matmul(A, B, out=out[:A.shape[0]])                                 # zᵀ = A B (H, M)
    relu_rows(out, s)


def product_mask(A, B, s, out):
    """out = s ⊙ (A B) (H, M), A (H, K), B (K, M): a masked thin product of the backward or
    R-pass, e.g. dz2ᵀ = s2 ⊙ (W3 dᵀ)."""
    np.matmul(A, B, out=out)                                              # (H, M)
    out *= s


def mask_rows(x, s):
    """x = s ⊙ x (H, M) in place: the ReLU's σ′ on a backward or R-pass row."""
    x *= s
