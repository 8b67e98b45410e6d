"""The plain MLP's kernel set (sinusoid regression): the maths of mamlnp/meta/maml.py, compiled.

Dimension legend: T tasks, K support points, Q query points, D inputs, O outputs,
P parameters, s = inner_steps, PA = 1 (scalar α) or P (per-parameter α), R = the
threads' rows of the workspace (numba.config.NUMBA_NUM_THREADS).

Reference: mamlnp/meta/maml.py (``meta_gradient``, ``meta_gradient_alpha``, ``adapt``,
``adapt_batch_numpy``, ``adapt_curve_numpy``); tests: tests/test_kernels.py (every kernel
against its NumPy twin to 1e-12), tests/test_meta_gradient.py, tests/test_fused_step.py.

Every method of mamlnp/fast/kernelset.py is compiled here, for a scalar α and for Meta-SGD's
per-parameter α (P,), through one kernel, mlp/maml_kernels.py ``batch_meta_grad`` (inner
loop, reverse pass, the tasks in parallel, their mean in a fixed order) and its twin
``batch_adapt``. ``train_step`` is mlp/fused.py's FusedMAML: a whole (FO)MAML + Adam
iteration on sinusoid tasks as one call.
"""
import threading
from functools import lru_cache

import numba
import numpy as np

from ...nn.mlp import MLP
from ..common import ACT_IDS, LOSS_IDS
from ..common.bundles import Geometry, Inner
from ..kernelset import KernelSet, flat
from .fused import fused_maml
from .maml_kernels import alloc_workspace, batch_adapt, batch_meta_grad, mean_rows

CHUNK = 32           # tasks per kernel call: bounds the per-task part of the workspace
                     # (G, GA, losses; the caches are per thread) and the rows gathered


@lru_cache(maxsize=64)
def _geometry(sizes, activation, loss):
    sizes = np.array(sizes, dtype=np.int64)                     # (L+1,)
    fan_in, fan_out = sizes[:-1], sizes[1:]
    block = fan_in * fan_out + fan_out                          # P_l = I·O + O
    woff = np.concatenate(([0], np.cumsum(block)[:-1])).astype(np.int64)
    boff = woff + fan_in * fan_out
    coff = np.concatenate(([0], np.cumsum(fan_out)[:-1])).astype(np.int64)
    for a in (sizes, woff, boff, coff):
        a.setflags(write=False)
    return Geometry(sizes, woff, boff, coff, ACT_IDS[activation], LOSS_IDS[loss])


def geometry(model):
    """Geometry(sizes, woff, boff, coff, act_id, loss_id) of a plain MLP: the kernels'
    description of it (mamlnp/fast/common/bundles.py; shapes in fast/common/__init__.py)."""
    return _geometry(tuple(model.sizes), model.activation, model.loss_name)


_local = threading.local()          # one workspace per Python thread: calls never share one


def workspace(geom, T, P, s, K, Q, PA):
    """The kernels' scratch buffers for these dimensions, kept between calls (the most
    recent shape per thread), so a training loop allocates them once."""
    key = (T, P, s, K, Q, PA, int(geom.sizes[1:].sum()))
    cached = getattr(_local, "ws", None)
    if cached is None or cached[0] != key:
        _local.ws = cached = (key, alloc_workspace(T, P, s, K, Q, key[-1], PA))
    return cached[1]


def alpha_vector(alpha):
    """α as the kernels take it: (1,) for one scalar step, (P,) for one per parameter."""
    if np.ndim(alpha) == 0:
        return np.full(1, float(alpha))
    return np.ascontiguousarray(alpha, dtype=np.float64)


def meta_grad(geom, theta, xs, ys, xq, yq, alpha, s, first_order, ga_mode):
    """(loss, ∇θ (P,), ∇α (PA,)) of batch_meta_grad, CHUNK tasks a call. For T > CHUNK the
    per-task rows the kernel leaves in its workspace are gathered and averaged by the same
    fixed-order ``mean_rows``, so the result is the one a single call would give.
    ga_mode: 0 no ∇α, 1 scalar α (summed), 2 per parameter."""
    T, P, O = xs.shape[0], theta.shape[0], geom.sizes[-1]
    K, Q, PA = ys.shape[1] // O, yq.shape[1] // O, P if ga_mode == 2 else 1
    inner = Inner(alpha_vector(alpha), s, first_order, ga_mode)
    if T <= CHUNK:
        return batch_meta_grad(theta, xs, ys, xq, yq, inner, geom,
                               workspace(geom, T, P, s, K, Q, PA),
                               min(numba.get_num_threads(), T))
    G, GA, losses = np.empty((T, P)), np.empty((T, PA)), np.empty(T)
    for t0 in range(0, T, CHUNK):
        c = slice(t0, min(t0 + CHUNK, T))
        ws = workspace(geom, c.stop - c.start, P, s, K, Q, PA)
        batch_meta_grad(theta, xs[c], ys[c], xq[c], yq[c], inner, geom, ws,
                        min(numba.get_num_threads(), c.stop - c.start))
        G[c], GA[c], losses[c] = ws.G, ws.GA, ws.losses              # per-task rows
    return mean_rows(losses, G, GA)


class MLPKernels(KernelSet):
    """The kernel set of a plain MLP (no batch norm). Methods: mamlnp/fast/kernelset.py."""

    kind = "mlp"
    compiled = {**KernelSet.compiled, "meta_gradient": (0, 1), "meta_gradient_alpha": (0, 1),
                "meta_gradient_unchecked": (0,), "adapt": (0, 1), "adapt_batch": (0, 1),
                "adapt_curve": (0, 1), "workspace_bytes": (0, 1), "train_step": (0,)}

    @staticmethod
    def accepts(model):
        return isinstance(model, MLP) and not model.batch_norm

    def __init__(self, model):
        self.geom, self.P = geometry(model), int(model.num_params)

    def meta_gradient(self, theta, batch, alpha, inner_steps, first_order=False):
        loss, g, _ = self._meta(theta, batch, alpha, inner_steps, first_order, 0)
        return float(loss), g

    def meta_gradient_alpha(self, theta, batch, alpha, inner_steps, first_order=False):
        scalar = np.ndim(alpha) == 0
        loss, g, ga = self._meta(theta, batch, alpha, inner_steps, first_order,
                                 1 if scalar else 2)
        return float(loss), g, (ga[0] if scalar else ga)

    def _meta(self, theta, batch, alpha, s, first_order, ga_mode):
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        return meta_grad(self.geom, theta, flat(batch.x_support), flat(batch.y_support),
                         flat(batch.x_query), flat(batch.y_query), alpha, int(s),
                         bool(first_order), ga_mode)

    def meta_gradient_unchecked(self, theta, xs, ys, xq, yq, alpha, inner_steps, first_order):
        loss, g, _ = meta_grad(self.geom, theta, xs, ys, xq, yq, alpha, inner_steps,
                               first_order, 0)
        return loss, g

    def _adapt(self, theta, xs, ys, xq, yq, alpha, steps, want_curve):
        """(θ_s (T, P), curve (T, steps+1)) from the batch_adapt kernel, CHUNK tasks a call."""
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        geom, (T, P), steps = self.geom, (len(xs), theta.shape[0]), int(steps)
        xs, ys, xq, yq = flat(xs), flat(ys), flat(xq), flat(yq)
        O, inner = geom.sizes[-1], Inner(alpha_vector(alpha), steps, False, 0)
        out, curve = np.empty((T, P)), np.zeros((T, steps + 1))
        for t0 in range(0, T, CHUNK):
            c = slice(t0, min(t0 + CHUNK, T))
            ws = workspace(geom, c.stop - c.start, P, 1, ys.shape[1] // O, yq.shape[1] // O, 1)
            batch_adapt(theta, xs[c], ys[c], xq[c], yq[c], inner, want_curve, geom, ws,
                        out[c], curve[c])
        return out, curve

    def adapt(self, theta, x_support, y_support, alpha, inner_steps):
        xs, ys = np.asarray(x_support)[None], np.asarray(y_support)[None]
        return self._adapt(theta, xs, ys, xs, ys, alpha, inner_steps, False)[0][0]

    def adapt_batch(self, theta, batch, alpha, inner_steps):
        return self._adapt(theta, batch.x_support, batch.y_support, batch.x_query,
                           batch.y_query, alpha, inner_steps, False)[0]

    def adapt_curve(self, theta, batch, alpha, steps):
        return self._adapt(theta, batch.x_support, batch.y_support, batch.x_query,
                           batch.y_query, alpha, steps, True)[1]

    def workspace_bytes(self, T, K, Q, steps):
        """alloc_workspace's floats: per thread (s+1)·(2P + 5·max(K, Q)·Hsum), plus the
        per-task rows (T, P) twice (G and the gathered rows)."""
        R, H = numba.config.NUMBA_NUM_THREADS, int(self.geom.sizes[1:].sum())
        return 8 * (R * (steps + 1) * (2 * self.P + 5 * max(K, Q) * H) + 2 * T * self.P)

    def train_step(self, cfg, family, first_order, opt):
        """mlp/fused.py's FusedMAML for runs of at most CHUNK tasks (one kernel call), or None."""
        if cfg["meta_batch"] > CHUNK:
            return None
        return fused_maml(self.geom, cfg, family, first_order, opt)


KERNELS = MLPKernels
