"""The ``backend="numba"`` entry points for batch-norm MLPs (the classification network).

Dimension legend: T tasks, K support points, Q query points, D inputs, H1 = sizes[1],
O outputs, P parameters, Pr = P − D·H1, Pc the b, γ, β entries, s = inner_steps.

The same maths as mamlnp/meta/maml.py on ``MLP(..., batch_norm=True)``; mamlnp/fast/api.py
sends batch-norm models here. The first layer is never adapted as a matrix: with scalar α,
every W1 of the inner loop is W1 + x_Sᵀ Cm (a rank ≤ K·s update), so x W1' = x W1 +
(x x_Sᵀ) Cm, and ∇W1 = (1/T)(X_Qᵀ EQ + X_Sᵀ ES) is one product over the stacked rows.

Two kernels make the meta-gradient:

* s = 1 (the paper's Omniglot training): **task groups**, kernels/classify_groups.py. The
  tasks are cut into groups of at most 8 (fixed by T); every product with θ's own weights
  runs once over a group's stacked rows, and the adapted weights W_l − α h_Sᵀ dz_S and the
  HVP's direction α h_Qᵀ dz_Q stay factored (small per-task products). The first layer
  comes from packed CSR rows of the inputs when fewer than 1 in 8 are nonzero, else from
  BLAS (kernels/first_layer_rows.py). Memory per call at 5-way 1-shot, T = 32: 3.9 MB of
  scratch per thread, 5.2 MB per call (19.9 and 16.5 MB per call at 5-way 5-shot and
  20-way 1-shot); never a per-task copy of any weight matrix.
* any other s, or ``path="tasks"``: **one task at a time**, kernels/classify_kernels.py,
  with θ_k's rest formed per task (s ≥ 2) and the first layer from a CSR/CSC of all the
  inputs. Memory: T·Pr + 2·T(K+Q)·H1 floats per call, (s+1)·(Pr + K·H1 + 6·max(K,Q)·Hsum)
  + 6·K·Hsum + 3·Pr per thread (13.3 MB and 2.3 MB at 5-way 1-shot, T = 32, s = 1).

Both hold SciPy's OpenBLAS on one thread for the call (blas_threads.py) and give the same
bits for any number of Numba threads; tests/test_classify_kernels.py and
tests/test_classify_groups.py check them against the NumPy reference to 1e-12. The task
groups' own NumPy rendering, pass by pass: mamlnp/meta/grouped.py
(tests/test_grouped_reference.py).

Per-parameter α (Meta-SGD) breaks the factorisation (α ⊙ x_Sᵀ dz has no rank bound); it runs
the model's own NumPy passes instead (``_numpy_meta_gradient_alpha``), not compiled.
"""
import threading
from functools import lru_cache

import numba
import numpy as np

from .kernels import ACT_IDS, LOSS_IDS
from .kernels.bn_mlp_kernels import BNGeometry
from .kernels.classify_kernels import (CURVE_ACCURACY, CURVE_LOSS, CURVE_NONE, Data, Inputs,
                                       alloc_workspace, batch_adapt, batch_meta_grad)
from .kernels.classify_groups import Compact, Targets, alloc_group_workspace, group_meta_grad
from .kernels.first_layer_rows import Rows, sparse_pays
from .kernels.sparse_rows import build_csr_csc, count_nonzeros, dense_enough
from .blas_threads import one_blas_thread


@lru_cache(maxsize=64)
def _geometry(sizes, activation, loss, eps):
    L, D, H1 = len(sizes) - 1, sizes[0], sizes[1]
    woff, boff, goff, eoff, coff = (np.full(L, -1, np.int64) for _ in range(5))
    o, c = 0, 0
    for l in range(L):
        fi, fo = sizes[l], sizes[l + 1]
        woff[l], boff[l], coff[l] = o, o + fi * fo, c
        o, c = o + fi * fo + fo, c + fo
        if l < L - 1:
            goff[l], eoff[l] = o, o + fo
            o += 2 * fo
    for a in (woff, boff, goff, eoff):                     # offsets into rest = θ[D·H1:]
        a[a >= 0] -= D * H1
    woff[0] = -1
    sz = np.array(sizes, np.int64)
    for a in (sz, woff, boff, goff, eoff, coff):
        a.setflags(write=False)
    return BNGeometry(sz, woff, boff, goff, eoff, coff, ACT_IDS[activation], LOSS_IDS[loss],
                      float(eps))


def geometry(model):
    """BNGeometry of a batch-norm MLP (offsets into θ[D·H1:])."""
    return _geometry(tuple(model.sizes), model.activation, model.loss_name, model.bn_eps)


_local = threading.local()          # one workspace per Python thread


def _workspace(geom, T, s, K, Q):
    sz = geom.sizes
    D, H1, Hsum = int(sz[0]), int(sz[1]), int(sz[1:].sum())
    Pr = int(geom.boff[-1] + sz[-1])
    key = (tuple(sz), T, s, K, Q)
    cached = getattr(_local, "ws", None)
    if cached is None or cached[0] != key:
        _local.ws = cached = (key, alloc_workspace(T, Pr, s, K, Q, Hsum, H1))
    return cached[1], D, H1


_compacts = {}


def compact(geom):
    """Compact (kernels/classify_groups.py) of a BNGeometry: the b, γ, β entries of
    θ[D·H1:], layer by layer, and where each sits in θ[D·H1:]."""
    key = tuple(int(v) for v in geom.sizes)
    if key not in _compacts:
        L, o, src = len(key) - 1, 0, []
        boff, goff, eoff = (np.full(L, -1, np.int64) for _ in range(3))
        for l in range(L):
            for off, blocks in ((boff, geom.boff), (goff, geom.goff), (eoff, geom.eoff)):
                if blocks[l] >= 0:
                    off[l], o = o, o + key[l + 1]
                    src.extend(range(blocks[l], blocks[l] + key[l + 1]))
        out = Compact(boff, goff, eoff, np.array(src, np.int64))
        for arr in out:
            arr.setflags(write=False)
        _compacts[key] = out
    return _compacts[key]


def _group_workspace(geom, cp, T, K, Q):
    sz = geom.sizes
    key = ("groups", tuple(sz), T, K, Q)
    cached = getattr(_local, "gws", None)
    if cached is None or cached[0] != key:
        Hsum, Pr = int(sz[1:].sum()), int(geom.boff[-1] + sz[-1])
        maxio = max(int(sz[l] * sz[l + 1]) for l in range(1, len(sz) - 1))
        _local.gws = cached = (key, alloc_group_workspace(T, Pr, len(cp.src), K, Q, Hsum,
                                                          int(sz[0]), int(sz[1]), maxio))
    return cached[1]


def _flat(a):
    """(T, N, C) -> (T, N·C) float64 C-contiguous (a view when already so)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


_EMPTY_I, _EMPTY_F = np.zeros(1, np.int64), np.zeros(1)


def _inputs(xs, xq, W1, Z):
    """The kernels' Inputs for X = [X_S; X_Q]: CSR/CSC when sparse (the tasks then make their
    own rows of Z = X W1), else Z made here by two BLAS GEMMs."""
    D = W1.shape[0]
    M, nnz = (xs.size + xq.size) // D, count_nonzeros(xs, xq)
    if dense_enough(nnz, M, D):
        Ms = xs.size // D
        np.matmul(xs.reshape(-1, D), W1, out=Z[:Ms])
        np.matmul(xq.reshape(-1, D), W1, out=Z[Ms:])
        return Inputs(False, _EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_I, _EMPTY_I, _EMPTY_F, W1, Z)
    rp, cp = np.empty(M + 1, np.int64), np.empty(D + 1, np.int64)
    ci, ri, cv, rv = np.empty(nnz, np.int64), np.empty(nnz, np.int64), np.empty(nnz), np.empty(nnz)
    build_csr_csc(xs, xq, D, rp, ci, cv, cp, ri, rv)
    return Inputs(True, rp, ci, cv, cp, ri, rv, W1, Z)


def _data(geom, theta, xs, ys, xq, yq, ws):
    """(Data, Inputs) of a call: the batch, views of ws.Z, θ's rest; the first layer."""
    T, D, H1 = xs.shape[0], int(geom.sizes[0]), int(geom.sizes[1])
    X = _inputs(xs, xq, theta[:D * H1].reshape(D, H1), ws.Z)
    TK = xs.size // D
    return Data(xs, ys, xq, yq, ws.Z[:TK].reshape(T, -1), ws.Z[TK:].reshape(T, -1),
                theta[D * H1:]), X


def meta_gradient_unchecked(geom, theta, xs, ys, xq, yq, alpha, inner_steps, first_order,
                            path="auto"):
    """(meta_loss, ∇θ (P,)) with NO checks; geom = geometry(model), alpha a float,
    xs (T, K·D), ys (T, K·O), xq (T, Q·D), yq (T, Q·O) float64 C-contiguous.
    path: "auto" runs s = 1 in task groups (kernels/classify_groups.py) and any other s one
    task at a time (kernels/classify_kernels.py); "tasks" runs s = 1 that way too."""
    s, fo = int(inner_steps), bool(first_order)
    with one_blas_thread() as pinned:
        if s == 1 and path != "tasks":
            return _group_meta_gradient(geom, theta, xs, ys, xq, yq, alpha, fo, pinned)
        return _task_meta_gradient(geom, theta, xs, ys, xq, yq, alpha, s, fo)


def group_call(geom, theta, xs, ys, xq, yq):
    """(Targets, Rows, Compact, workspace) of one task-group call on these arrays: the
    thread's cached workspace, the first layer on packed rows or BLAS (sparse_pays)."""
    O, D, H1 = int(geom.sizes[-1]), int(geom.sizes[0]), int(geom.sizes[1])
    T, K, Q = xs.shape[0], ys.shape[1] // O, yq.shape[1] // O
    cp = compact(geom)
    ws = _group_workspace(geom, cp, T, K, Q)
    sparse = sparse_pays(count_nonzeros(xs, xq), T * (K + Q), D)
    F = Rows(sparse, xs.ravel(), xq.ravel(), theta[:D * H1], ws.NZ, ws.CI, ws.CV)
    return Targets(ys, yq, theta[D * H1:]), F, cp, ws


def _group_meta_gradient(geom, theta, xs, ys, xq, yq, alpha, fo, pinned):
    d, F, cp, ws = group_call(geom, theta, xs, ys, xq, yq)
    grad = np.empty(theta.shape[0])
    loss = group_meta_grad(d, F, geom, cp, ws, pinned, float(alpha), fo,
                           min(numba.get_num_threads(), ws.G.shape[0]), grad)
    return float(loss), grad


def _task_meta_gradient(geom, theta, xs, ys, xq, yq, alpha, s, fo):
    O = int(geom.sizes[-1])
    T, K, Q = xs.shape[0], ys.shape[1] // O, yq.shape[1] // O
    ws, D, H1 = _workspace(geom, T, s, K, Q)
    d, X = _data(geom, theta, xs, ys, xq, yq, ws)
    grad = np.empty(theta.shape[0])
    loss = batch_meta_grad(d, geom, ws, X, float(alpha), s, fo,
                           min(numba.get_num_threads(), T), grad)
    if not X.sparse:                                                   # ∇W1 = Xᵀ E / T, BLAS
        gw = xq.reshape(-1, D).T @ ws.EQ.reshape(-1, H1)
        if not (fo or s == 0):
            gw += xs.reshape(-1, D).T @ ws.ES.reshape(-1, H1)
        grad[:D * H1] = (gw / T).ravel()
    return float(loss), grad


def meta_gradient(model, theta, batch, alpha, inner_steps, first_order=False):
    """(meta_loss, ∇θ (P,)), as mamlnp.meta.maml.meta_gradient (arguments validated)."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    flat = [_flat(a) for a in (batch.x_support, batch.y_support, batch.x_query,
                               batch.y_query)]
    if np.ndim(alpha) > 0:
        return _numpy_meta_gradient_alpha(model, theta, alpha, batch, inner_steps,
                                          first_order)[:2]
    return meta_gradient_unchecked(geometry(model), theta, *flat, float(alpha),
                                   int(inner_steps), bool(first_order))


def _adapt(model, theta, xs, ys, xq, yq, alpha, steps, curve_kind, want_theta=True):
    """(θ_s (T, P) or None, curve (T, steps+1)): batch_adapt, then W1_t = W1 + x_S,tᵀ Cm_t.
    curve_kind: CURVE_NONE, CURVE_LOSS (query losses) or CURVE_ACCURACY (query accuracies)."""
    if np.ndim(alpha) > 0:
        return _numpy_adapt(model, theta, xs, ys, xq, yq, alpha, steps, curve_kind)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    geom, steps = geometry(model), int(steps)
    xs, ys, xq, yq = _flat(xs), _flat(ys), _flat(xq), _flat(yq)
    O, T = int(geom.sizes[-1]), xs.shape[0]
    K, Q = ys.shape[1] // O, yq.shape[1] // O
    ws, D, H1 = _workspace(geom, T, steps, K, Q)
    rest, cm, curve = np.empty((T, theta.shape[0] - D * H1)), np.empty((T, K * H1)), \
        np.zeros((T, steps + 1))
    d, X = _data(geom, theta, xs, ys, xq, yq, ws)
    batch_adapt(d, geom, ws, X, float(alpha), steps, curve_kind, rest, cm, curve)
    if not want_theta:
        return None, curve
    out = np.empty((T, theta.shape[0]))
    W1 = theta[:D * H1].reshape(D, H1)
    for t in range(T):
        out[t, :D * H1] = (W1 + xs[t].reshape(K, D).T @ cm[t].reshape(K, H1)).ravel()
    out[:, D * H1:] = rest
    return out, curve


def adapt(model, theta, x_support, y_support, alpha, inner_steps):
    """θ' (P,) after ``inner_steps`` SGD steps on one task, as mamlnp.meta.maml.adapt."""
    xs, ys = np.asarray(x_support)[None], np.asarray(y_support)[None]
    return _adapt(model, theta, xs, ys, xs, ys, alpha, inner_steps, CURVE_NONE)[0][0]


def adapt_batch(model, theta, batch, alpha, inner_steps):
    """θ'_t (T, P): every task of ``batch`` adapted on its support set (query unused)."""
    return _adapt(model, theta, batch.x_support, batch.y_support, batch.x_query,
                  batch.y_query, alpha, inner_steps, CURVE_NONE)[0]


def adapt_curve(model, theta, batch, alpha, steps):
    """(T, steps+1) query losses [t, k] = L_Q,t(θ_k^{(t)}); no adapted θ is formed."""
    return _adapt(model, theta, batch.x_support, batch.y_support, batch.x_query,
                  batch.y_query, alpha, steps, CURVE_LOSS, want_theta=False)[1]


def adapt_accuracy(model, theta, batch, alpha, steps):
    """(T, steps+1) query accuracies [t, k]: the fraction of task t's query points whose
    largest logit at θ_k^{(t)} is the true class (as mamlnp.run.classify.query_accuracy)."""
    return _adapt(model, theta, batch.x_support, batch.y_support, batch.x_query,
                  batch.y_query, alpha, steps, CURVE_ACCURACY, want_theta=False)[1]


# ---- per-parameter α: the model's NumPy passes (not compiled) ---------------------------


def _numpy_inner(model, theta, xs, ys, alpha, s):
    thetas, grads = [theta], []
    for _ in range(s):
        _, g = model._loss_and_grad(thetas[-1], xs, ys)                 # ∇L_S(θ_k) (P,)
        grads.append(g)
        thetas.append(thetas[-1] - alpha * g)                           # θ_{k+1}
    return thetas, grads


def _numpy_meta_gradient_alpha(model, theta, alpha, batch, s, first_order):
    """(meta_loss, ∇θ, ∇α): the equations of mamlnp.meta.maml.task_meta_gradient_alpha."""
    scalar, T = np.ndim(alpha) == 0, batch.x_support.shape[0]
    loss, gt, ga = 0.0, np.zeros(theta.shape[0]), np.zeros(np.shape(alpha))
    for t in range(T):
        xs, ys, xq, yq = (batch.x_support[t], batch.y_support[t], batch.x_query[t],
                          batch.y_query[t])
        thetas, grads = _numpy_inner(model, theta, xs, ys, alpha, s)
        lq, g = model._loss_and_grad(thetas[-1], xq, yq)
        for k in range(s - 1, -1, -1):
            ga = ga - (grads[k] @ g if scalar else grads[k] * g)
            if not first_order:
                g = g - model._hvp(thetas[k], xs, ys, alpha * g)
        loss, gt = loss + lq, gt + g
    return loss / T, gt / T, ga / T


def _numpy_adapt(model, theta, xs, ys, xq, yq, alpha, steps, curve_kind):
    out, curve = np.empty((len(xs), theta.shape[0])), np.zeros((len(xs), steps + 1))
    for t in range(len(xs)):
        thetas, _ = _numpy_inner(model, theta, xs[t], ys[t], alpha, steps)
        out[t] = thetas[-1]
        if curve_kind == CURVE_LOSS:
            curve[t] = [model._loss_value(th, xq[t], yq[t]) for th in thetas]
        elif curve_kind == CURVE_ACCURACY:
            curve[t] = [np.mean(model._forward(th, xq[t])[0].argmax(axis=1) ==
                                yq[t].argmax(axis=1)) for th in thetas]
    return out, curve


def meta_gradient_alpha(model, theta, alpha, batch, inner_steps, first_order=False):
    """(meta_loss, ∇θ, ∇α) for a batch-norm MLP: the NumPy passes (see the module docstring)."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    return _numpy_meta_gradient_alpha(model, theta, alpha, batch, int(inner_steps),
                                      bool(first_order))
