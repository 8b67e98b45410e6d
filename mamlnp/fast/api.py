"""The ``backend="numba"`` entry points: the same maths as mamlnp/meta/maml.py, compiled.

Dimension legend: T tasks, K support points, Q query points, D inputs, O outputs,
P parameters, s = inner_steps, PA = 1 (scalar α) or P (per-parameter α).

Three layers of entry point:

* ``meta_gradient``, ``adapt``, ``meta_gradient_alpha``, ``adapt_batch``, ``adapt_curve``:
  called by mamlnp.meta.maml (which has validated the arguments) or directly; they take a
  model and a TaskBatch like the NumPy reference.
* ``meta_gradient_unchecked``: for the training loop's hot path. It takes the
  geometry from ``geometry(model)`` and raw float64 C-contiguous arrays, and checks
  nothing (a wrong shape gives wrong numbers or an IndexError, not an InputError);
  Python-side validation costs tens of µs, a meta-iteration's whole budget is ~200 µs.
* the kernels themselves, in mamlnp/fast/kernels/.

Only a :class:`mamlnp.MLP` has kernels (``supports(model)``); a batch-norm MLP's go through
mamlnp/fast/classify.py (first layer factored, see there), every other MLP's through
kernels/maml_kernels.py. This module never imports
the reference: mamlnp/meta/maml.py is the one place that dispatches, to these entry points
for an MLP and to its own NumPy code for any other model of the model protocol.
The NumPy twins of the batched functions (``adapt_batch``, ``adapt_curve``) are
mamlnp.meta.maml's; tests/test_kernels.py compares.
"""
import sys
import threading
from functools import lru_cache

import numba
import numpy as np

from .kernels import ACT_IDS, LOSS_IDS
from .kernels.bundles import Geometry, Inner
from .kernels.maml_kernels import alloc_workspace, batch_adapt, batch_meta_grad, mean_rows
from .kernels.train_kernels import adam_inplace, adam_update, adam_update_parallel
from . import classify
from ..nn.mlp import MLP


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


def supports(model):
    """Whether ``model`` has compiled kernels: an MLP, with or without batch norm (toy models
    of the protocol run the NumPy reference)."""
    return isinstance(model, MLP)


def geometry(model):
    """Geometry(sizes, woff, boff, coff, act_id, loss_id): the kernels' description of an
    MLP (mamlnp/fast/kernels/bundles.py; shapes in mamlnp/fast/kernels/__init__.py);
    a BNGeometry for a batch-norm MLP (mamlnp/fast/classify.py)."""
    if model.batch_norm:
        return classify.geometry(model)
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


CHUNK = 32           # tasks per kernel call: bounds the per-task part of the workspace
                     # (G, GA, losses; the caches are per thread) and the rows gathered


def _meta_grad(geom, theta, xs, ys, xq, yq, alpha_vec, s, first_order, ga_mode):
    """batch_meta_grad, CHUNK tasks a call. For T > CHUNK the per-task rows the kernel leaves
    in its workspace are gathered and averaged by the same fixed-order ``mean_rows``, so the
    result is the one a single call would give."""
    O = geom.sizes[-1]
    T, K, Q, P = xs.shape[0], ys.shape[1] // O, yq.shape[1] // O, theta.shape[0]
    PA = P if ga_mode == 2 else 1
    inner = Inner(alpha_vec, s, first_order, ga_mode)
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


def _flat(a):
    """(T, N, C) -> (T, N·C) float64 C-contiguous (a view when already so)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def alpha_vector(alpha):
    """α as the kernels take it: (1,) for one scalar step, (P,) for one per parameter."""
    if np.ndim(alpha) == 0:
        return np.full(1, float(alpha))
    return np.ascontiguousarray(alpha, dtype=np.float64)


def meta_gradient_unchecked(geom, theta, xs, ys, xq, yq, alpha_vec, inner_steps, first_order):
    """(meta_loss, ∇θ (P,)) with NO checks: the training loop's hot path.

    geom = geometry(model); theta (P,), alpha_vec (1,) for a scalar α or (P,) per parameter,
    xs (T, K·D), ys (T, K·O), xq (T, Q·D), yq (T, Q·O): float64, C-contiguous (a
    TaskBatch's (T, K, D) arrays reshaped, which is free). inner_steps int ≥ 0.
    A batch-norm geometry takes scalar α only.
    """
    if isinstance(geom, classify.BNGeometry):
        return classify.meta_gradient_unchecked(geom, theta, xs, ys, xq, yq, alpha_vec[0],
                                                inner_steps, first_order)
    loss, g, _ = _meta_grad(geom, theta, xs, ys, xq, yq, alpha_vec, inner_steps,
                            first_order, 0)
    return loss, g


def meta_gradient(model, theta, batch, alpha, inner_steps, first_order=False):
    """(meta_loss, ∇θ (P,)), as mamlnp.meta.maml.meta_gradient (arguments already validated)."""
    if model.batch_norm:
        return classify.meta_gradient(model, theta, batch, alpha, inner_steps, first_order)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    loss, g, _ = _meta_grad(geometry(model), theta, _flat(batch.x_support),
                            _flat(batch.y_support), _flat(batch.x_query), _flat(batch.y_query),
                            alpha_vector(alpha), int(inner_steps),
                            bool(first_order), 0)
    return float(loss), g


def meta_gradient_alpha(model, theta, alpha, batch, inner_steps, first_order=False):
    """(meta_loss, ∇θ (P,), ∇α (() or (P,))), as mamlnp.meta.maml.meta_gradient_alpha (Meta-SGD)."""
    if model.batch_norm:
        return classify.meta_gradient_alpha(model, theta, alpha, batch, inner_steps, first_order)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    scalar = np.ndim(alpha) == 0
    loss, g, ga = _meta_grad(geometry(model), theta, _flat(batch.x_support),
                             _flat(batch.y_support), _flat(batch.x_query), _flat(batch.y_query),
                             alpha_vector(alpha), int(inner_steps),
                             bool(first_order), 1 if scalar else 2)
    return float(loss), g, (ga[0] if scalar else ga)


PARALLEL_ADAM = 1 << 15      # P from which adam_step runs in parallel, in place: below, a
                             # parallel region (µs) costs more than the serial loop (µs)


class _Probe:
    pass


def _alone(obj, name):
    """Whether nothing but the attribute ``obj.name`` refers to that object (no variable,
    container or view elsewhere): its reference count compared with ``_ALONE``'s."""
    return sys.getrefcount(getattr(obj, name, None)) == _ALONE


def _calibrate():
    """The reference count ``_alone`` sees for an object only an attribute holds, as this
    Python counts it (the interpreter's own temporaries differ between versions)."""
    probe = _Probe()
    probe.a = np.empty(1)
    return sys.getrefcount(getattr(probe, "a", None))


_ALONE = _calibrate()


def _reusable(a, P):
    """Whether ``a`` can be written by the compiled Adam: a float64 (P,) C-contiguous
    writable ndarray owning its memory (not a view of some other array)."""
    return (type(a) is np.ndarray and a.dtype == np.float64 and a.shape == (P,)
            and a.flags.c_contiguous and a.flags.writeable and a.base is None)


def adam_step(opt, theta, grad):
    """``opt._step(theta, grad)`` for a mamlnp.meta.optim.Adam, compiled: the same bits, the
    same new θ (P,) returned and state (m, v, t) kept. For P < PARALLEL_ADAM through
    ``kernels.train_kernels.adam_update`` into fresh arrays (~3 µs instead of ~14 µs for
    P = 1761); from PARALLEL_ADAM on through ``adam_update_parallel`` (all threads, the
    same bits at any count) into arrays it reuses: opt.m and opt.v in place, θ' into the θ
    of the step before (kept in ``opt._spare_theta``). An array is overwritten only if
    nothing but the optimizer refers to it (``_alone``): an array anyone else holds — an
    earlier θ a callback kept, an m taken from opt.m, a loaded checkpoint's array — never
    changes, the step then writes into fresh memory as Adam._step does. (Fresh 2 MB arrays
    cost ~1.5 ms of page faults each on this machine: the reason for the reuse.)"""
    P = grad.shape[0]
    if opt.m is None:
        opt.m, opt.v = np.zeros_like(grad), np.zeros_like(grad)
    opt.t += 1
    hp = np.array([opt.lr, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2, opt.eps,
                   1.0 - opt.beta1 ** opt.t, 1.0 - opt.beta2 ** opt.t])
    if P < PARALLEL_ADAM:
        out, m, v = np.empty_like(theta), np.empty_like(grad), np.empty_like(grad)
        adam_update(theta, grad, opt.m, opt.v, hp, out, m, v)
        opt.m, opt.v = m, v
        return out
    for name in ("m", "v"):                             # written in place: opt's alone
        if not (_alone(opt, name) and _reusable(getattr(opt, name), P)):
            setattr(opt, name, np.array(getattr(opt, name), dtype=np.float64))
    free = _alone(opt, "_spare_theta") and _reusable(getattr(opt, "_spare_theta", None), P)
    out = opt._spare_theta if free else np.empty(P)     # θ' (P,)
    opt._spare_theta = None
    W = numba.get_num_threads()
    if W == 1:                                          # no parallel region to start
        adam_inplace(theta, grad, opt.m, opt.v, hp, out)
    else:
        adam_update_parallel(theta, grad, opt.m, opt.v, hp, out, W)
    if _reusable(theta, P):
        opt._spare_theta = theta                        # written next step if let go
    return out


def _adapt(model, theta, xs, ys, xq, yq, alpha, steps, want_curve):
    """(θ_s (T, P), curve (T, steps+1)) from the batch_adapt kernel, CHUNK tasks a call."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    geom, (T, P), steps = geometry(model), (len(xs), theta.shape[0]), int(steps)
    xs, ys, xq, yq = _flat(xs), _flat(ys), _flat(xq), _flat(yq)
    O, inner = geom.sizes[-1], Inner(alpha_vector(alpha), steps, False, 0)
    out, curve = np.empty((T, P)), np.zeros((T, steps + 1))
    for t0 in range(0, T, CHUNK):
        c = slice(t0, min(t0 + CHUNK, T))
        ws = workspace(geom, c.stop - c.start, P, 1, ys.shape[1] // O, yq.shape[1] // O, 1)
        batch_adapt(theta, xs[c], ys[c], xq[c], yq[c], inner, want_curve, geom, ws, out[c],
                    curve[c])
    return out, curve


def adapt(model, theta, x_support, y_support, alpha, inner_steps):
    """θ' (P,) after ``inner_steps`` SGD steps on one task, as mamlnp.meta.maml.adapt."""
    if model.batch_norm:
        return classify.adapt(model, theta, x_support, y_support, alpha, inner_steps)
    xs, ys = np.asarray(x_support)[None], np.asarray(y_support)[None]
    return _adapt(model, theta, xs, ys, xs, ys, alpha, inner_steps, False)[0][0]


def adapt_batch(model, theta, batch, alpha, inner_steps):
    """θ'_t (T, P): every task of ``batch`` adapted on its support set (query unused)."""
    if model.batch_norm:
        return classify.adapt_batch(model, theta, batch, alpha, inner_steps)
    return _adapt(model, theta, batch.x_support, batch.y_support, batch.x_query,
                  batch.y_query, alpha, inner_steps, False)[0]


def adapt_curve(model, theta, batch, alpha, steps):
    """Query losses during adaptation, (T, steps+1): [t, k] = L_Q,t(θ_k^{(t)}), θ_k after k
    inner SGD steps on task t's support set (k = 0 is the un-adapted θ). Evaluation's curve
    (Finn et al. 2017, Fig. 3: loss against number of gradient steps)."""
    if model.batch_norm:
        return classify.adapt_curve(model, theta, batch, alpha, steps)
    return _adapt(model, theta, batch.x_support, batch.y_support, batch.x_query,
                  batch.y_query, alpha, steps, True)[1]


def adapt_accuracy(model, theta, batch, alpha, steps):
    """Query accuracies during adaptation, (T, steps+1), of a batch-norm classification MLP
    (mamlnp.fast.classify.adapt_accuracy; only those: mamlnp.run.classify.accuracy_curve
    runs its NumPy loop for the others)."""
    return classify.adapt_accuracy(model, theta, batch, alpha, steps)
