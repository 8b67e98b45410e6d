"""The task-grouped, factored s = 1 meta-gradient of the batch-norm MLP, in NumPy: the
readable reference of the compiled task groups (mamlnp/fast/bn_mlp/classify_groups.py,
group_products.py, first_layer.py), pass by pass, with their names.

Dimension legend: T tasks, n tasks of a group (≤ GMAX), K support and Q query points per
task, N the points of one pass (K or Q), D inputs, H1 = sizes[1], I, O a layer's fan-in and
fan-out, L dense layers (index l = 0 … L−1 in the code; W[0] = W_1), P parameters, Pc the
b, γ, β entries of θ (the compact vector, grouped_parts.Compact).

MAML at s = 1 (mamlnp/meta/maml.py): θ_1 = θ − α ∇L_S(θ), and a task's meta-gradient is
g_Q − H_S(θ) v with g_Q = ∇L_Q(θ_1), v = α g_Q. Every W_l a task meets is θ's own W_l or
W_l plus a product of the task's own factors (h the layer's input, dz its output gradient):

    θ_1's W_l = W_l − α h_Sᵀ dz_S:   h W_l' = h W_l − α (h h_Sᵀ) dz_S
                                      dz W_l'ᵀ = dz W_lᵀ − α (dz dz_Sᵀ) h_S
    v's W_l = α h_Qᵀ dz_Q:            h_S V_W = α (h_S h_Qᵀ) dz_Q,  dz_S V_Wᵀ = α (dz_S dz_Qᵀ) h_Q
    first layer (h = x):              x_Q W_1' = x_Q W_1 − α (x_Q x_Sᵀ) dz_S,1
                                      x_S V_W1 = α (x_S x_Qᵀ) Eq,  Eq = dz_Q,1

So the products with W_l run once over a group's n·K (or n·Q) stacked rows (``product``),
the corrections are small products per task (``lowrank_acc``, ``gram_acc``), and no adapted
weight matrix is ever formed. The W_l blocks of the meta-gradient are sums over the group:

    Σ_j [g_Q − H_S v]_{W_l} = H_Qᵀ DZ_Q − (H_Sᵀ RDZ + RH_Sᵀ DZ_S)      (I, n·N)(n·N, O)

The batch norms, the losses and the b, γ, β blocks are per task (nn/batchnorm.py,
nn/losses.py, nn/layers.py's activation passes, called as they are). The first layer's
gradient waits for all groups: ∇W_1 = (X_Qᵀ Eq + X_Sᵀ Es) / T with Es = −Rdz_S,1.

A group's passes in ``group_task``'s order, each a function named as its kernel:
group_inputs, support_forward, support_backward, query_forward, query_backward,
r_forward_group, r_backward_group, small_into; then the driver ``group_meta_grad``. Each
returns what its kernel writes into its buffers. tests/test_grouped_reference.py checks each
kernel pass against its function here (1e-12), and this module against mamlnp.meta.maml.
The packed CSR rows of sparse inputs (fast/bn_mlp/first_layer.py) only reorder the sums of x W_1
and Xᵀ E; the reference writes the products.
"""
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..nn.activations import ACTIVATIONS
from ..nn.losses import LOSSES
from .grouped_parts import (Ctx, RPass, bn_backward, bn_forward, bn_rbackward, bn_rforward,
                            compact, gram_acc, group_inputs, group_range, loss_and_dyhat,
                            lowrank_acc, new_pass, ngroups, per_task, product, stacked,
                            w1_grad)


# ---- the passes of one group ------------------------------------------------------------


def support_forward(cx, xw):
    """The support pass at θ: z_l = h_{l−1} W_l + b_l, one product over the n·K stacked rows
    (z_1 = x_S W_1 + b_1, xw (n, K, H1) = x_S W_1 from group_inputs), then per task
    y_l = BN(z_l), h_l = σ(y_l); ŷ = z_L. Returns the Pass."""
    L, n = len(cx.W), xw.shape[0]
    TH, cs, h = np.broadcast_to(cx.th0, (n, cx.th0.shape[0])), new_pass(L, n), None
    for l in range(L):
        z = xw if l == 0 else product(h, cx.W[l])                # (n, K, O)  h W
        cs.z[l] = z + per_task(TH, cx.cp.b[l])                   #            + b
        if l < L - 1:
            bn_forward(cx, cs, l, TH)
        else:
            cs.h[l] = cs.z[l]                                    # ŷ
        h = cs.h[l]
    return cs


def support_backward(cx, cs, y):
    """Backward of the support losses at θ (y (n, K, O)): dh, dy, dz of every layer into
    cs; returns GS (n, Pc), the b, γ, β gradients per task. The W_l gradients h_Sᵀ dz_S are
    never formed: θ_1's W_l stay factored."""
    L, n = len(cx.W), y.shape[0]
    GS = np.zeros((n, cx.th0.shape[0]))
    loss_and_dyhat(cx, cs, y)
    for l in range(L - 1, -1, -1):
        if l < L - 1:
            bn_backward(cx, cs, l, GS)                           # dy, dz; dγ, dβ
        GS[:, cx.cp.b[l]] = cs.dz[l].sum(axis=1)                 # db = Σ_n dz
        if l > 0:
            cs.dh[l - 1] = product(cs.dz[l], cx.W[l].T)          # dz Wᵀ
    return GS


def query_forward(cx, TH1, cs, xw):
    """The query pass at θ_1 (b, γ, β per task in TH1 (n, Pc); W_l factored):
    z_l = h W_l − α (h h_Sᵀ) dz_S + b_l,  z_1 = x_Q W_1 − α (x_Q x_Sᵀ) dz_S,1 + b_1
    (xw (n, Q, H1) = x_Q W_1), then per task BN with θ_1's γ, β and σ. Returns the Pass."""
    L, n = len(cx.W), xw.shape[0]
    cq, h = new_pass(L, n), None
    for l in range(L):
        if l == 0:
            z = xw + gram_acc(cx.GR, cs.dz[0], -cx.alpha)        # (n, Q, H1)
        else:
            z = product(h, cx.W[l]) + lowrank_acc(h, cs.h[l - 1], cs.dz[l], -cx.alpha)
        cq.z[l] = z + per_task(TH1, cx.cp.b[l])                  # (n, Q, O)
        if l < L - 1:
            bn_forward(cx, cq, l, TH1)
        else:
            cq.h[l] = cq.z[l]                                    # ŷ at θ_1
        h = cq.h[l]
    return cq


def query_backward(cx, cs, cq, y):
    """The query losses' gradient g_Q at θ_1 (y (n, Q, O)): the losses into cq.losses,
    dh, dy, dz into cq (cq.dz[0] = Eq); returns (GQ (n, Pc) the b, γ, β blocks per task,
    GW the W_l blocks summed over the group, GW[l] = H_Qᵀ DZ_Q (I, O), GW[0] = None).
    dh = dz W_lᵀ − α (dz dz_Sᵀ) h_S."""
    L, n = len(cx.W), y.shape[0]
    GQ, GW = np.zeros((n, cx.th0.shape[0])), [None] * L
    loss_and_dyhat(cx, cq, y)
    for l in range(L - 1, -1, -1):
        if l < L - 1:
            bn_backward(cx, cq, l, GQ)
        GQ[:, cx.cp.b[l]] = cq.dz[l].sum(axis=1)                 # db
        if l > 0:
            GW[l] = stacked(cq.h[l - 1]).T @ stacked(cq.dz[l])   # (I, n·Q)(n·Q, O)  Σ hᵀ dz
            cq.dh[l - 1] = (product(cq.dz[l], cx.W[l].T)
                            + lowrank_acc(cq.dz[l], cs.dz[l], cs.h[l - 1], -cx.alpha))
    return GQ, GW


def r_forward_group(cx, V, cs, cq):
    """R-forward of the support pass at θ along v = α g_Q of each task: V (n, Pc) its
    b, γ, β; its W_l block α h_Qᵀ dz_Q and W_1 block α x_Qᵀ Eq factored:
    Rz_l = Rh_{l−1} W_l + α (h_S h_Qᵀ) dz_Q + V_b,  Rz_1 = α (x_S x_Qᵀ) Eq + V_b1;
    Ry, Rh per task (BN's R-forward at θ, σ'). Returns the RPass."""
    L = len(cx.W)
    rc = RPass(*([None] * L for _ in range(6)))
    for l in range(L):
        if l == 0:
            Rz = gram_acc(cx.GR, cq.dz[0], cx.alpha, ta=True)    # (n, K, H1)
        else:
            Rz = (product(rc.Rh[l - 1], cx.W[l])
                  + lowrank_acc(cs.h[l - 1], cq.h[l - 1], cq.dz[l], cx.alpha))
        rc.Rz[l] = Rz + per_task(V, cx.cp.b[l])                  # (n, K, O)
        if l < L - 1:
            bn_rforward(cx, cs, rc, l, V)
        else:
            rc.Rh[l] = rc.Rz[l]                                  # Rŷ
    return rc


def r_backward_group(cx, V, cs, cq, rc, GW):
    """R-backward from Rŷ: returns (HV (n, Pc) the b, γ, β blocks of H_S v per task, GW with
    the W_l blocks of Σ_j H_S v taken off: GW[l] − (H_Sᵀ RDZ + RH_Sᵀ DZ_S)); Rdz_1 in
    rc.Rdz[0]. Rdh = Rdz W_lᵀ + α (dz_S dz_Qᵀ) h_Q."""
    L, n = len(cx.W), V.shape[0]
    HV, GW = np.zeros_like(V), list(GW)
    rc.Rdz[L - 1] = np.stack([cx.loss[2](rc.Rh[L - 1][j], cs.lcache[j])
                              for j in range(n)])                # R{dŷ} (n, K, O)
    for l in range(L - 1, -1, -1):
        if l < L - 1:
            bn_rbackward(cx, cs, rc, l, V, HV)
        HV[:, cx.cp.b[l]] = rc.Rdz[l].sum(axis=1)                # Rdb
        if l > 0:
            hS, RhS = stacked(cs.h[l - 1]), stacked(rc.Rh[l - 1])   # (n·K, I)
            GW[l] = GW[l] - (hS.T @ stacked(rc.Rdz[l]) + RhS.T @ stacked(cs.dz[l]))
            rc.Rdh[l - 1] = (product(rc.Rdz[l], cx.W[l].T)
                             + lowrank_acc(cs.dz[l], cq.dz[l], cq.h[l - 1], cx.alpha))
    return HV, GW


def small_into(GQ, HV, minus):
    """The group's b, γ, β entries Σ_j (GQ[j] − HV[j]) (or Σ_j GQ[j]) (Pc,)."""
    return (GQ - HV).sum(axis=0) if minus else GQ.sum(axis=0)


# ---- one group, then all of them ---------------------------------------------------------


class GroupOut(NamedTuple):
    """What a group leaves for the driver (the kernel: losses, rows of E, G[i])."""
    losses: np.ndarray       # (n,) query losses L_Q(θ_1)
    Es: np.ndarray           # (n, K, H1) −Rdz_S,1 (zeros for first order)
    Eq: np.ndarray           # (n, Q, H1) dz_Q,1
    GW: list                 # W_l blocks (l ≥ 1) of Σ_j meta-gradient, (I, O); GW[0] None
    Gc: np.ndarray           # (Pc,) its b, γ, β entries


def context(model, theta, alpha, GR):
    """The Ctx of a group of a batch-norm MLP at θ (P,), GR (n, Q, K) = x_Q x_Sᵀ."""
    W = [w for w, *_ in model._unflatten(theta)]
    cp = compact(model)
    return Ctx(W, cp, theta[cp.src], float(alpha), model.bn_eps,
               ACTIVATIONS[model.activation], LOSSES[model.loss_name], GR)


def group_task(model, theta, xs, ys, xq, yq, alpha, first_order):
    """One group's tasks xs (n, K, D), ys (n, K, O), xq (n, Q, D), yq (n, Q, O) -> GroupOut."""
    W1 = model._unflatten(theta)[0][0]                           # (D, H1)
    xw_S, xw_Q, _, GQS = group_inputs(W1, xs, xq)
    cx = context(model, theta, alpha, GQS)
    cs = support_forward(cx, xw_S)
    GS = support_backward(cx, cs, ys)
    TH1 = cx.th0 - cx.alpha * GS                                 # θ_1's b, γ, β (n, Pc)
    cq = query_forward(cx, TH1, cs, xw_Q)
    GQ, GW = query_backward(cx, cs, cq, yq)
    if first_order:
        return GroupOut(cq.losses, np.zeros_like(xw_S), cq.dz[0], GW,
                        small_into(GQ, None, False))
    V = cx.alpha * GQ                                            # v = α g_Q (n, Pc)
    rc = r_forward_group(cx, V, cs, cq)
    HV, GW = r_backward_group(cx, V, cs, cq, rc, GW)
    return GroupOut(cq.losses, -rc.Rdz[0], cq.dz[0], GW, small_into(GQ, HV, True))


def group_meta_grad(model, theta, xs, ys, xq, yq, alpha, first_order=False):
    """(meta-loss, ∇θ (P,)) at s = 1 of the T tasks xs (T, K, D), ys (T, K, O), xq (T, Q, D),
    yq (T, Q, O) (unchecked): the groups one after another, their W_l and b, γ, β rows
    summed in group order, ∇W_1 = (X_Qᵀ Eq + X_Sᵀ Es) / T, all divided by T."""
    T = xs.shape[0]
    outs = []
    for i in range(ngroups(T)):
        t0, n = group_range(T, i)
        sl = slice(t0, t0 + n)
        outs.append(group_task(model, theta, xs[sl], ys[sl], xq[sl], yq[sl], alpha,
                               first_order))
    Es, Eq = (np.concatenate([getattr(o, e) for o in outs]) for e in ("Es", "Eq"))
    grad = np.zeros(model.num_params)
    (w0, w1), _, _ = model.layout[0]
    grad[w0:w1] = w1_grad(xs, xq, Es, Eq, T, first_order).ravel()      # ∇W_1 (D·H1,)
    for l, ((w0, w1), _, _) in enumerate(model.layout[1:], start=1):
        grad[w0:w1] = (sum(o.GW[l] for o in outs) / T).ravel()          # ∇W_l (I·O,)
    grad[compact(model).src] = sum(o.Gc for o in outs) / T               # b, γ, β (Pc,)
    return float(np.concatenate([o.losses for o in outs]).sum() / T), grad


def meta_gradient(model, theta, batch, alpha, inner_steps=1, first_order=False):
    """(meta_loss, ∇θ) as mamlnp.meta.maml.meta_gradient (same argument order), by the task
    groups: a batch-norm MLP, scalar α, inner_steps = 1 only. θ and the batch are taken as
    given (float64 arrays of the model's shapes; maml.meta_gradient checks them)."""
    if not getattr(model, "batch_norm", False):
        raise InputError(f"model: expected an MLP with batch_norm=True, got {model!r}")
    if inner_steps != 1 or np.ndim(alpha) != 0:
        raise InputError(f"inner_steps, alpha: the task groups are for inner_steps = 1 and "
                         f"a scalar alpha, got {inner_steps!r} and alpha of shape "
                         f"{np.shape(alpha)}")
    arrays = (batch.x_support, batch.y_support, batch.x_query, batch.y_query)
    return group_meta_grad(model, np.asarray(theta, np.float64),
                           *(np.asarray(a, np.float64) for a in arrays), alpha, first_order)
