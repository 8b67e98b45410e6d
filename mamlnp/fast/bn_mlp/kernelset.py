"""The batch-norm MLP's kernel set (the classification network).

Dimension legend: T tasks, K support points, Q query points, D inputs, H1 = sizes[1],
O outputs, P parameters, Pr = P − D·H1, Pc the b, γ, β entries, s = inner_steps,
R = the threads' rows of a workspace (numba.config.NUMBA_NUM_THREADS).

Reference: mamlnp/meta/maml.py (``meta_gradient``, ``adapt``, ``adapt_batch_numpy``,
``adapt_curve_numpy``) and mamlnp/run/classify.py (``query_accuracy``) on
``MLP(..., batch_norm=True)``; tests: tests/test_classify_kernels.py,
tests/test_classify_groups.py, tests/test_batchnorm_meta.py. The first layer is never adapted as a matrix: with scalar α,
every W1 of the inner loop is W1 + x_Sᵀ Cm (a rank ≤ K·s update), so x W1' = x W1 +
(x x_Sᵀ) Cm, and ∇W1 = (1/T)(X_Qᵀ EQ + X_Sᵀ ES) is one product over the stacked rows.

Two kernels make the meta-gradient:

* s = 1 (the paper's Omniglot training): **task groups**, classify_groups.py. The
  tasks are cut into groups of at most 8 (fixed by T); every product with θ's own weights
  runs once over a group's stacked rows, and the adapted weights W_l − α h_Sᵀ dz_S and the
  HVP's direction α h_Qᵀ dz_Q stay factored (small per-task products). The first layer
  comes from packed CSR rows of the inputs when fewer than 1 in 8 are nonzero, else from
  BLAS (first_layer.py). Memory per call at 5-way 1-shot, T = 32: 3.9 MB of
  scratch per thread, 5.2 MB per call (19.9 and 16.5 MB per call at 5-way 5-shot and
  20-way 1-shot); never a per-task copy of any weight matrix.
* any other s, or ``path="tasks"``: **one task at a time**, classify_kernels.py,
  with θ_k's rest formed per task (s ≥ 2) and the first layer from a CSR/CSC of all the
  inputs. Memory: T·Pr + 2·T(K+Q)·H1 floats per call, (s+1)·(Pr + K·H1 + 6·max(K,Q)·Hsum)
  + 6·K·Hsum + 3·Pr per thread (13.3 MB and 2.3 MB at 5-way 1-shot, T = 32, s = 1).

Both hold SciPy's OpenBLAS on one thread for the call (common/blas_threads.py) and give the same
bits for any number of Numba threads; tests/test_classify_kernels.py and
tests/test_classify_groups.py check them against the NumPy reference to 1e-12. The task
groups' own NumPy rendering, pass by pass: mamlnp/meta/grouped.py
(tests/test_grouped_reference.py).

Per-parameter α (Meta-SGD, ANIL's masked α) breaks the factorisation (α ⊙ x_Sᵀ dz has no
rank bound): this set compiles a scalar α only, and ``kernels_for`` answers None for a (P,)
α, so mamlnp/meta/maml.py runs its reference. No fused training step (``train_step`` None).
"""
import threading
from functools import lru_cache

import numba
import numpy as np

from ...nn.mlp import MLP
from ..common import ACT_IDS, LOSS_IDS
from ..common.blas_threads import one_blas_thread
from ..kernelset import GeomKernels, KernelSet, flat
from .bn_mlp_kernels import BNGeometry
from .classify_groups import (GMAX, Compact, Targets, alloc_group_workspace, group_meta_grad,
                              ngroups)
from .classify_kernels import (Data, Inputs,
                               alloc_workspace, batch_adapt, batch_meta_grad)
from .first_layer import Rows, build_csr_csc, count_nonzeros, dense_enough, sparse_pays


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
    """Compact (classify_groups.py) of a BNGeometry: the b, γ, β entries of
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
    path: "auto" runs s = 1 in task groups (classify_groups.py) and any other s one
    task at a time (classify_kernels.py); "tasks" runs s = 1 that way too."""
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


def adapt_tasks(geom, theta, xs, ys, xq, yq, alpha, steps, curve_kind, want_theta=True):
    """(θ_s (T, P) or None, curve (T, steps+1)): batch_adapt, then W1_t = W1 + x_S,tᵀ Cm_t.
    curve_kind: CURVE_NONE, CURVE_LOSS (query losses) or CURVE_ACCURACY (query accuracies)."""
    theta, steps = np.ascontiguousarray(theta, dtype=np.float64), int(steps)
    xs, ys, xq, yq = flat(xs), flat(ys), flat(xq), flat(yq)
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


def workspace_floats(geom, T, K, Q, s):
    """Floats of the larger of the two drivers' workspaces for one call (alloc_workspace,
    alloc_group_workspace at s = 1), R threads' rows included."""
    sz, R, N = geom.sizes, numba.config.NUMBA_NUM_THREADS, max(K, Q)
    D, H1, Hs, Pr = int(sz[0]), int(sz[1]), int(sz[1:].sum()), int(geom.boff[-1] + sz[-1])
    tasks = (R * ((s + 1) * (Pr + K * H1 + 6 * N * Hs + Hs) + 6 * K * Hs + Hs + 3 * Pr
                  + (Q + K) * H1 + K * K + 2 * Q * K)
             + T * Pr + 2 * T * (K + Q) * H1 + T)
    if s != 1:
        return tasks
    Pc = len(compact(geom).src)
    maxio = max(int(sz[l] * sz[l + 1]) for l in range(1, len(sz) - 1))
    groups = (R * (GMAX * (12 * K + 6 * Q + 3) * Hs + 5 * GMAX * Pc + GMAX * (K * K + Q * K)
                   + GMAX * GMAX * (K + Q) * K + N * N + maxio)
              + Pc + ngroups(T) * Pr + T * (K + Q) * (H1 + 2 + 2 * D) + T)
    return max(tasks, groups)


class BNMLPKernels(GeomKernels):
    """The kernel set of a batch-norm MLP. Methods: mamlnp/fast/kernelset.py."""

    kind = "bn_mlp"
    compiled = {**KernelSet.compiled, "meta_gradient": (0,), "meta_gradient_unchecked": (0,),
                "adapt": (0,), "adapt_batch": (0,), "adapt_curve": (0,), "adapt_accuracy": (0,),
                "workspace_bytes": (0, 1)}

    @staticmethod
    def accepts(model):
        return isinstance(model, MLP) and model.batch_norm

    _meta_grad = staticmethod(meta_gradient_unchecked)
    _adapt = staticmethod(adapt_tasks)

    def __init__(self, model):
        self.geom = geometry(model)

    def workspace_bytes(self, T, K, Q, steps):
        return 8 * workspace_floats(self.geom, T, K, Q, steps)


KERNELS = BNMLPKernels
