"""The ConvNet's kernel set (the convolutional classification network), scalar or
per-parameter α.

Dimension legend: T tasks, K support images, Q query images, N = max(K, Q), P parameters,
s = inner_steps, B blocks, MS / CS map / patch floats per image (conv_kernels.py), R =
the workers of a call, min(numba.get_num_threads(), T).

Reference: mamlnp/meta/maml.py (``meta_gradient``, ``adapt``, ``adapt_batch_numpy``,
``adapt_curve_numpy``) and mamlnp/run/classify.py (``query_accuracy``) on
``ConvNet(..., pool=False, head="mean")`` (the paper's Omniglot network and any geometry of
that form: channels, kernel, stride, padding, activation, loss); tests:
tests/test_conv_kernels.py. A ConvNet with the max-pool or the flatten head (the
MiniImageNet variant) is not compiled: ``kernels_for`` answers None and the reference runs.
A per-parameter α (P,) is compiled too (ANIL's masked α, ``--inner-bn fixed``'s α with γ, β
masked, a learned Meta-SGD α to adapt with; Meta-SGD's ∇α is not): the kernels always take a
(P,) vector, a scalar α arriving as np.full(P, α), so a scalar gives the bits it always gave
(α·g is the same product).

One task at a time, the tasks in parallel (conv_maml.py); every convolution is im2col and one
BLAS dgemm with θ's own weights (conv_kernels.py), OpenBLAS held on one thread for the call
(common/blas_threads.py), so a task's arithmetic never depends on the thread running it.

Memory (``workspace_floats``, what ``workspace_bytes`` reports): per worker, S = s + 1
kept passes (2 to adapt) of θ_k (P), the caches (6·N·MS), the patches (N·CS) and the channel
scales, one R-pass (6·K·MS + K·CS), the col2im scratch and 3·P; per call T·(P + 1) (each
task's gradient row). The paper's network (28×28, 64 channels; P = 112,261, MS = 17,029,
CS = 41,508) on 2 workers: 74.5 MB per call at 5-way 1-shot (Q = K, T = 32, s = 1),
221.5 MB at 5-way 5-shot, 361.9 MB at 20-way 1-shot (T = 16, s = 5); on one worker 51.6,
125.1 and 188.2 MB. The workspace stays allocated (per Python thread) for the next call of
the same sizes.
"""
import threading

import numba
import numpy as np

from ...nn.convnet import ConvNet
from ..common import ACT_IDS, LOSS_IDS
from ..common.blas_threads import one_blas_thread
from ..kernelset import GeomKernels, KernelSet, flat
from .conv_kernels import ConvGeometry
from .conv_maml import (Data, alloc_workspace,
                        batch_adapt, batch_meta_grad, workspace_floats)


def geometry(model):
    """ConvGeometry of a ConvNet without pool and with the spatial-mean head."""
    B, k = len(model.channels), model.kernel
    (C, H, Wd), blk = model.in_shape, np.zeros((B, 6), np.int64)
    woff, boff = np.zeros(B + 1, np.int64), np.zeros(B + 1, np.int64)
    goff, eoff = np.zeros(B, np.int64), np.zeros(B, np.int64)
    moff, cpoff, foff = (np.zeros(B + 3, np.int64), np.zeros(B + 1, np.int64),
                         np.zeros(B + 1, np.int64))
    for l, (F, ((Ho, Wo), _)) in enumerate(zip(model.channels, model.maps)):
        blk[l] = H, Wd, C, Ho, Wo, F
        goff[l], eoff[l] = model.bn_layout[l][0][0], model.bn_layout[l][1][0]
        moff[l + 1] = moff[l] + Ho * Wo * F
        cpoff[l + 1] = cpoff[l] + Ho * Wo * C * k * k
        foff[l + 1] = foff[l] + F
        C, H, Wd = F, Ho, Wo
    for l in range(B + 1):
        woff[l], boff[l] = model.layout[l][0][0], model.layout[l][1][0]
    moff[B + 1] = moff[B] + model.features
    moff[B + 2] = moff[B + 1] + model.ways
    for a in (blk, woff, boff, goff, eoff, moff, cpoff, foff):
        a.setflags(write=False)
    conv = np.array([k, model.stride, model.pad], np.int64)
    out = np.array([model.sizes[0], model.features, model.ways], np.int64)
    return ConvGeometry(blk, woff, boff, goff, eoff, moff, cpoff, foff, conv, out,
                        ACT_IDS[model.activation], LOSS_IDS[model.loss_name], float(model.bn_eps))


def sizes(geom):
    """(P, MS, CS, Fs, DCM) of a geometry: parameters, map / patch floats per image,
    channels, the largest block's patch floats per image."""
    B = geom.blk.shape[0]
    P = int(geom.boff[B] + geom.out[2])
    dcm = max(int(geom.cpoff[l + 1] - geom.cpoff[l]) for l in range(B))
    return P, int(geom.moff[B + 2]), int(geom.cpoff[B]), int(geom.foff[B]), dcm


_local = threading.local()          # one workspace per Python thread


def workers(T):
    """R: the workers (and scratch slots) of a call on T tasks."""
    return max(1, min(numba.get_num_threads(), T))


def workspace(geom, T, K, Q, S):
    """This Python thread's Workspace for (T, K, Q, S) and R = workers(T) slots, made again
    when any size changes."""
    key = (sizes(geom), T, K, Q, S, workers(T))
    cached = getattr(_local, "ws", None)
    if cached is None or cached[0] != key:
        _local.ws = None                                    # free the old one first
        _local.ws = cached = (key, alloc_workspace(T, K, Q, *sizes(geom), S=S, R=key[-1]))
    return cached[1]


def step_vector(alpha, P):
    """α as the kernels take it, (P,) float64: a scalar broadcast (np.full(P, α)), a per-
    parameter vector as given."""
    if np.ndim(alpha) == 0:
        return np.full(P, float(alpha))
    return np.ascontiguousarray(alpha, dtype=np.float64)


def _data(xs, ys, xq, yq, theta):
    return Data(flat(xs), flat(ys), flat(xq), flat(yq),
                np.ascontiguousarray(theta, dtype=np.float64))


def meta_gradient_unchecked(geom, theta, xs, ys, xq, yq, alpha, inner_steps, first_order):
    """(meta_loss, ∇θ (P,)) with NO checks: xs (T, K·D), ys (T, K·O), xq, yq likewise,
    float64 C-contiguous; alpha a float or a (P,) vector."""
    d = _data(xs, ys, xq, yq, theta)
    O, T, s = int(geom.out[2]), d.xs.shape[0], int(inner_steps)
    ws = workspace(geom, T, d.ys.shape[1] // O, d.yq.shape[1] // O, s + 1)
    grad = np.empty(d.theta.shape[0])
    with one_blas_thread():
        loss = batch_meta_grad(d, geom, ws, step_vector(alpha, grad.shape[0]), s,
                               bool(first_order), ws.TH.shape[0], grad)
    return float(loss), grad


def adapt_tasks(geom, theta, xs, ys, xq, yq, alpha, n_steps, kind, want_theta=True):
    """(θ_s (T, P) or None, curve (T, n_steps+1)) by batch_adapt, alpha a float or (P,); kind
    CURVE_NONE, CURVE_LOSS (query losses) or CURVE_ACCURACY (query accuracies)."""
    d = _data(xs, ys, xq, yq, theta)
    O, T, s, P = int(geom.out[2]), d.xs.shape[0], int(n_steps), d.theta.shape[0]
    ws = workspace(geom, T, d.ys.shape[1] // O, d.yq.shape[1] // O, 2)
    out = np.empty((T, P) if want_theta else (1, 1))
    curve = np.zeros((T, s + 1))
    with one_blas_thread():
        batch_adapt(d, geom, ws, step_vector(alpha, P), s, kind, want_theta, ws.TH.shape[0],
                    out, curve)
    return (out if want_theta else None), curve


class ConvKernels(GeomKernels):
    """The kernel set of a ConvNet (no pool, spatial-mean head). Methods:
    mamlnp/fast/kernelset.py."""

    kind = "conv"
    compiled = {**KernelSet.compiled, "meta_gradient": (0, 1),
                "meta_gradient_unchecked": (0, 1), "adapt": (0, 1), "adapt_batch": (0, 1),
                "adapt_curve": (0, 1), "adapt_accuracy": (0, 1), "workspace_bytes": (0, 1)}

    @staticmethod
    def accepts(model):
        return isinstance(model, ConvNet) and not model.pool and model.head == "mean"

    _meta_grad = staticmethod(meta_gradient_unchecked)
    _adapt = staticmethod(adapt_tasks)

    def __init__(self, model):
        self.geom = geometry(model)

    def workspace_bytes(self, T, K, Q, steps):
        return 8 * workspace_floats(T, K, Q, *sizes(self.geom), S=max(int(steps) + 1, 2),
                                    R=workers(T))


KERNELS = ConvKernels
