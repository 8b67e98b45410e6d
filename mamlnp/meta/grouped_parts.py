"""The parts of the task-grouped s = 1 reference (mamlnp/meta/grouped.py): the groups, the
compact vector of b, γ, β entries, a pass's caches, a group's products, the first layer, and
the batch norm + σ of each task (nn/batchnorm.py and nn/layers.py, called as they are).

Dimension legend: T tasks, n tasks of a group (≤ GMAX), K support and Q query points per
task, N the points of one pass (K or Q), D inputs, H1 = sizes[1], I, O a layer's fan-in and
fan-out, L dense layers (index l = 0 … L−1; W[0] = W_1), Pc the b, γ, β entries of θ.

Kernel twins: group_range (fast/bn_mlp/classify_groups.py), Compact (fast/bn_mlp/kernelset.py:compact),
Ctx, product, lowrank_acc, gram_acc (kernels/group_products.py), group_rows, group_grams,
w1_grad (fast/bn_mlp/first_layer.py: w1_grad_sparse, w1_grad_dense), bn_forward,
bn_backward, bn_rforward, bn_rbackward (kernels/bn_kernels.py, fused with σ as there),
loss_and_dyhat (kernels/mlp_kernels.py). Checked in tests/test_grouped_reference.py.
"""
from typing import NamedTuple

import numpy as np

from ..nn import batchnorm as BN
from ..nn import layers as LY

GMAX = 8                       # tasks per group at most (groups depend on T only)


# ---- groups, the compact vector, a group's context ------------------------------------


def ngroups(T):
    """Number of task groups of a call with T tasks."""
    return (T + GMAX - 1) // GMAX


def group_range(T, i):
    """(first task, number of tasks) of group i: T split into ngroups(T) near-equal runs,
    the first T mod ngroups(T) one task longer (first_layer.py: share)."""
    G = ngroups(T)
    q, r = divmod(T, G)
    return i * q + min(i, r), q + (1 if i < r else 0)


class Compact(NamedTuple):
    """θ's b, γ, β entries as one vector of Pc entries, layer by layer b_l, γ_l, β_l."""
    b: list                  # L slices of the compact vector: b_l
    gamma: list              # L slices: γ_l (None for the output layer)
    beta: list               # L slices: β_l (None for the output layer)
    src: np.ndarray          # (Pc,) int64 where each entry sits in θ


def compact(model):
    """The Compact of a batch-norm MLP (the layout of fast/bn_mlp/kernelset.py:compact, offsets in θ)."""
    b, gamma, beta, src = [], [], [], []
    for (_, bb, _), bn in zip(model.layout, model.bn_layout):
        blocks = (bb,) + (bn if bn is not None else (None, None))   # b_l, γ_l, β_l in θ
        for out, block in zip((b, gamma, beta), blocks):
            if block is None:                                        # the output layer
                out.append(None)
                continue
            out.append(slice(len(src), len(src) + block[1] - block[0]))
            src.extend(range(*block))
    return Compact(b, gamma, beta, np.array(src, np.int64))


class Ctx(NamedTuple):
    """One group of n tasks: the model's pieces and the call's settings (group_products.Ctx)."""
    W: list                  # L weight matrices W_l (I, O), views of θ (W[0] = W_1)
    cp: Compact
    th0: np.ndarray          # (Pc,) θ's own b, γ, β
    alpha: float
    eps: float               # ε of the batch norm
    act: tuple               # (σ, σ', σ'') of nn/activations.py
    loss: tuple              # (forward, backward, rbackward) of nn/losses.py
    GR: np.ndarray           # (n, Q, K) x_Q x_Sᵀ per task (group_grams)


class Pass(NamedTuple):
    """The caches of one pass over n tasks of N points: lists over the L layers, each entry
    (n, N, O) unless said. Hidden layer: z → batch norm per task → y → σ → h."""
    z: list                  # dense output h W + b (first layer: x W_1 + b_1)
    zhat: list               # ẑ = (z − μ) s                               (hidden layers)
    s: list                  # (n, O) s = 1/√(σ² + ε) per task (nn/batchnorm.py)
    gamma: list              # (n, O) the γ the pass normalised with
    y: list                  # y = γ ẑ + β
    h: list                  # h = σ(y); the output layer's entry is ŷ = z
    dh: list                 # ∂L/∂h
    dy: list                 # ∂L/∂y = dh ⊙ σ'(y)
    dz: list                 # ∂L/∂z (the output layer's entry: dŷ)
    lcache: list             # per task the loss's cache (p = softmax(ŷ) for softmax_xent)
    losses: np.ndarray       # (n,) per-task losses


class RPass(NamedTuple):
    """The R-pass along v (lists over layers, (n, N, O) each), nn/mlp.py's R-names."""
    Rz: list                 # R{z} (the output layer's entry: Rŷ)
    Ry: list                 # R{y} (batch-norm output)
    Rh: list                 # R{h} = σ'(y) ⊙ Ry
    Rdh: list                # R{dh}
    Rdy: list                # R{dy}
    Rdz: list                # R{dz} (the output layer's entry: R{dŷ})


def new_pass(L, n):
    """An empty Pass of L layers and n tasks."""
    return Pass(*([None] * L for _ in range(9)), [None] * n, np.zeros(n))


def stacked(A):
    """(n, N, C) -> (n·N, C): the group's rows, task after task."""
    return A.reshape(-1, A.shape[-1])


def per_task(c, sl):
    """The entries sl of per-task compact vectors c (n, Pc), as (n, 1, O) beside (n, N, O)."""
    return c[:, None, sl]


# ---- a group's products (group_products.py) ------------------------------------------


def product(A, B):
    """A (n, N, R) times B (R, W): ONE product over the n·N stacked rows -> (n, N, W)."""
    n, N, _ = A.shape
    return (stacked(A) @ B).reshape(n, N, B.shape[1])            # (n·N, R)(R, W)


def lowrank_acc(X, F1, F2, coeff):
    """The term the kernel's lowrank_acc adds: coeff · (X F1ᵀ) F2 per task, rank ≤ Kf.
    X (n, N, R1), F1 (n, Kf, R1), F2 (n, Kf, W2) -> (n, N, W2)."""
    return (coeff * (X @ F1.transpose(0, 2, 1))) @ F2          # (n, N, Kf)(n, Kf, W2)


def gram_acc(GQS, F, coeff, ta=False):
    """coeff · (x_Q x_Sᵀ) F, F (n, K, W) -> (n, Q, W); with ta coeff · (x_S x_Qᵀ) F,
    F (n, Q, W) -> (n, K, W). GQS (n, Q, K) = x_Q x_Sᵀ per task."""
    return (coeff * (GQS.transpose(0, 2, 1) if ta else GQS)) @ F


# ---- the first layer (fast/bn_mlp/first_layer.py) --------------------------------------------


def group_rows(W1, xs, xq):
    """(x_S W_1 (n, K, H1), x_Q W_1 (n, Q, H1)): the first products of both passes."""
    return product(xs, W1), product(xq, W1)


def group_grams(xs, xq):
    """(x_S x_Sᵀ (n, K, K), x_Q x_Sᵀ (n, Q, K)) per task. At s = 1 no pass reads the first
    (the support pass runs at θ's own W_1); the kernel makes it all the same."""
    xsT = xs.transpose(0, 2, 1)                                  # (n, D, K)
    return xs @ xsT, xq @ xsT


def group_inputs(W1, xs, xq):
    """(x_S W_1, x_Q W_1, x_S x_Sᵀ, x_Q x_Sᵀ) of the group's tasks xs (n, K, D), xq (n, Q, D)."""
    return group_rows(W1, xs, xq) + group_grams(xs, xq)


def w1_grad(xs, xq, Es, Eq, T, first_order):
    """∇W_1 (D, H1) = (X_Qᵀ Eq + X_Sᵀ Es) / T over all T tasks' rows (FO: the query rows
    only). xs (T, K, D), xq (T, Q, D), Es (T, K, H1), Eq (T, Q, H1)."""
    g = stacked(xq).T @ stacked(Eq)                              # (D, T·Q)(T·Q, H1)
    if not first_order:
        g = g + stacked(xs).T @ stacked(Es)                      # (D, T·K)(T·K, H1)
    return g / T


# ---- batch norm + σ per task (bn_kernels.py, as nn/batchnorm.py and nn/layers.py) -------


def bn_cache(c, l, j):
    """nn/batchnorm.py's cache (ẑ, s, γ) of layer l, task j of the pass c."""
    return c.zhat[l][j], c.s[l][j], c.gamma[l][j]


def bn_forward(cx, c, l, TH):
    """Layer l of the pass c, per task j over its N points (γ, β of TH[j], TH (n, Pc)):
    μ = mean z, σ² = mean (z − μ)², s = 1/√(σ² + ε), ẑ = (z − μ) s, y = γ ẑ + β; h = σ(y)."""
    gam, bet = TH[:, cx.cp.gamma[l]], TH[:, cx.cp.beta[l]]      # (n, O) each
    out = [BN.batchnorm_forward(z, g, b, cx.eps) for z, g, b in zip(c.z[l], gam, bet)]
    c.y[l] = np.stack([y for y, _ in out])                      # (n, N, O)
    c.zhat[l], c.s[l], c.gamma[l] = (np.stack([bc[i] for _, bc in out]) for i in range(3))
    c.h[l] = LY.act_forward(c.y[l], cx.act)[0]                   # (n, N, O)


def bn_backward(cx, c, l, G):
    """From dh: dy = dh ⊙ σ'(y), then per task dβ = Σ_n dy, dγ = Σ_n dy ⊙ ẑ (into G (n, Pc))
    and dz = s (dẑ − mean dẑ − ẑ mean(dẑ ⊙ ẑ)), dẑ = γ dy."""
    c.dy[l] = LY.act_backward(c.dh[l], (c.y[l], cx.act))        # (n, N, O)
    out = [BN.batchnorm_backward(c.dy[l][j], bn_cache(c, l, j)) for j in range(len(G))]
    c.dz[l] = np.stack([dz for dz, _, _ in out])                 # (n, N, O)
    G[:, cx.cp.gamma[l]] = [dg for _, dg, _ in out]
    G[:, cx.cp.beta[l]] = [db for _, _, db in out]


def bn_rforward(cx, c, rc, l, V):
    """From Rz: per task Ry = Vγ ẑ + γ Rẑ + Vβ, Rẑ = s (Rz − mean Rz − ẑ mean(ẑ ⊙ Rz)) at the
    pass c's γ (Vγ, Vβ of V[j], V (n, Pc)); Rh = σ'(y) ⊙ Ry."""
    vg, vb = V[:, cx.cp.gamma[l]], V[:, cx.cp.beta[l]]           # (n, O) each
    rc.Ry[l] = np.stack([BN.batchnorm_rforward(rc.Rz[l][j], bn_cache(c, l, j), vg[j], vb[j])
                         for j in range(len(V))])                # (n, N, O)
    rc.Rh[l] = LY.act_rforward(rc.Ry[l], (c.y[l], cx.act))       # (n, N, O)


def bn_rbackward(cx, c, rc, l, V, HV):
    """From Rdh: Rdy = Rdh ⊙ σ'(y) + dh ⊙ σ''(y) ⊙ Ry, then per task BN's R-backward
    (nn/batchnorm.py): Rdz, and Rdβ = Σ_n Rdy, Rdγ = Σ_n (Rdy ⊙ ẑ + dy ⊙ Rẑ), the β, γ
    blocks of H v, into HV (n, Pc)."""
    rc.Rdy[l] = LY.act_rbackward(rc.Rdh[l], c.dh[l], rc.Ry[l], (c.y[l], cx.act))
    vg = V[:, cx.cp.gamma[l]]                                    # (n, O)
    out = [BN.batchnorm_rbackward(rc.Rdy[l][j], c.dy[l][j], rc.Rz[l][j], bn_cache(c, l, j),
                                  vg[j]) for j in range(len(V))]
    rc.Rdz[l] = np.stack([r for r, _, _ in out])                 # (n, N, O)
    HV[:, cx.cp.gamma[l]] = [rg for _, rg, _ in out]
    HV[:, cx.cp.beta[l]] = [rb for _, _, rb in out]


def loss_and_dyhat(cx, c, y):
    """Per task L(ŷ, y) (nn/losses.py) into c.losses and its cache into c.lcache; dŷ into
    c.dz[L−1]. y (n, N, O)."""
    L = len(cx.W)
    out = [cx.loss[0](yh, yt) for yh, yt in zip(c.h[L - 1], y)]
    c.losses[:] = [lv for lv, _ in out]
    c.lcache[:] = [lc for _, lc in out]
    c.dz[L - 1] = np.stack([cx.loss[1](lc) for _, lc in out])   # (n, N, O) dŷ
