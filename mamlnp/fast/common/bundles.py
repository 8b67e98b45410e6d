"""The named bundles the kernels take: model geometry, workspace, per-call settings.

Dimension legend: T tasks, K support points, Q query points, N = K + Q (sinusoid draws),
P parameters, L dense layers, s = inner_steps, Hsum = sizes[1] + … + sizes[L],
PA = 1 (scalar α) or P (per-parameter α), R = numba.config.NUMBA_NUM_THREADS.

A kernel's signature reads: data (θ, the task arrays), then the bundles, then its
outputs. Each bundle is a ``typing.NamedTuple``: Numba types it as a (heterogeneous)
named tuple, reads a field as ``geom.woff`` (a static offset, no cost in the compiled
code), and caches the kernels on disk, since the classes live at module level here.
Shapes and meanings: the module docstring of mamlnp/fast/common/__init__.py.

Reference: none (named tuples); the kernels that take them are tested in tests/test_kernels.py,
tests/test_fused_step.py.
"""
from typing import NamedTuple

import numpy as np


class Geometry(NamedTuple):
    """An MLP as the kernels see it (``mamlnp.fast.mlp.kernelset.geometry(model)``)."""
    sizes: np.ndarray        # (L+1,) int64: D, hidden widths, O
    woff: np.ndarray         # (L,) int64: offset of W_l in θ
    boff: np.ndarray         # (L,) int64: offset of b_l in θ
    coff: np.ndarray         # (L,) int64: column offset of layer l in a cache row (Hsum wide)
    act_id: int              # 0 relu, 1 tanh, 2 softplus
    loss_id: int             # 0 mse, 1 softmax_xent


class Workspace(NamedTuple):
    """Every scratch buffer of a driver call (``maml_kernels.alloc_workspace``)."""
    TH: np.ndarray           # (R, s+1, P) inner-loop iterates θ_k (row 0 unused: θ_0 = θ)
    GS: np.ndarray           # (R, max(s,1), P) support gradients ∇L_S(θ_k)
    CA: np.ndarray           # (R, s+1, 5, max(K,Q)·Hsum) caches of the passes: Z, A, S, DZ, DH
    RB: np.ndarray           # (R, 4, K·Hsum) R-pass buffers: RZ, RH, RDZ, RDH
    SC: np.ndarray           # (R, 2, P) scratch: v = α ⊙ g, H v
    G: np.ndarray            # (T, P) per-task meta-gradients
    GA: np.ndarray           # (T, PA) per-task gradients with respect to α
    losses: np.ndarray       # (T,) per-task query losses
    SU: np.ndarray           # (2, P) the prefix worker's running sums of G and GA rows
    CL: np.ndarray           # (3,) int64 task counters of ``next_task``


class Inner(NamedTuple):
    """The inner loop of one call: θ_{k+1} = θ_k − α ⊙ ∇L_S(θ_k), k < s."""
    alpha: np.ndarray        # (1,) one scalar α, or (P,) one per parameter (Meta-SGD)
    s: int                   # inner_steps ≥ 0
    first_order: bool        # drop the Hessian terms (FOMAML)
    ga_mode: int             # dL/dα: 0 not wanted, 1 scalar α (summed), 2 per parameter


class SinusoidDraws(NamedTuple):
    """The fused training step's task sampler (``train_kernels.sinusoid_task``)."""
    u: np.ndarray            # (T·(2 + N),) uniform draws: amplitudes | phases | inputs
    rg: np.ndarray           # (7,) amp lo, span, phase lo, span, x lo, span, phase_sign
    xs: np.ndarray           # (T, K) support inputs   (written)
    ys: np.ndarray           # (T, K) support targets  (written)
    xq: np.ndarray           # (T, Q) query inputs     (written)
    yq: np.ndarray           # (T, Q) query targets    (written)


class AdamStep(NamedTuple):
    """Adam's state in and out (``train_kernels.adam_update``), out of place."""
    g: np.ndarray            # (P,) the meta-gradient (written)
    m: np.ndarray            # (P,) first moment in
    v: np.ndarray            # (P,) second moment in
    hp: np.ndarray           # (8,) lr, β1, 1 − β1, β2, 1 − β2, ε, bc1, bc2
    theta_out: np.ndarray    # (P,) θ'   (written)
    m_out: np.ndarray        # (P,) m'   (written)
    v_out: np.ndarray        # (P,) v'   (written)
