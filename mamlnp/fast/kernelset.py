"""What every kernel set provides: the one face of the compiled path, documented once.

Dimension legend: T tasks, K support points, Q query points, D inputs, O outputs,
P parameters, s = inner_steps.

A *kernel set* is the compiled path of one model kind (mamlnp/fast/mlp/kernelset.py for the
plain MLP, mamlnp/fast/bn_mlp/kernelset.py for the batch-norm MLP, mamlnp/fast/conv/kernelset.py
for the ConvNet). ``mamlnp.fast.kernels_for
(model, method, alpha)`` returns the set of the model's kind when that set compiles
``method`` for that form of α, else None, and then the NumPy reference in mamlnp/meta/ runs.
A set is bound to one model: its geometry is worked out once.

One argument order for every method, the order of the public functions in
mamlnp/meta/maml.py without the model: (θ, data, α, steps, first_order). Arguments are
already validated (by mamlnp/meta/maml.py or by the trainer, which made them itself):

    meta_gradient(θ, batch, α, s, first_order)        -> (meta_loss, ∇θ (P,))
    meta_gradient_alpha(θ, batch, α, s, first_order)  -> (meta_loss, ∇θ (P,), ∇α (() or (P,)))
    meta_gradient_unchecked(θ, xs, ys, xq, yq, α, s, first_order) -> (meta_loss, ∇θ (P,))
        the trainer's hot path: a scalar α (float; the conv set also a (P,) vector), xs (T, K·D),
        ys (T, K·O), xq (T, Q·D), yq (T, Q·O) float64 C-contiguous (a TaskBatch's arrays reshaped), no checks
    adapt(θ, x_support (K, D), y_support (K, O), α, s)  -> θ' (P,)
    adapt_batch(θ, batch, α, s)                       -> θ'_t (T, P)
    adapt_curve(θ, batch, α, s)                       -> (T, s+1) query losses
    adapt_accuracy(θ, batch, α, s)                    -> (T, s+1) query accuracies (classifiers)
    workspace_bytes(T, K, Q, s)                       -> bytes the kernels allocate for a call
    train_step(cfg, family, first_order, opt)         -> a fused meta-iteration, or None
    adam_step(opt, θ, g)                              -> θ' (P,): the optimizer's compiled step

``compiled`` lists, per method, the ranks of α the set compiles (0: one scalar step, 1: one
per parameter, Meta-SGD's); a method not listed is "not compiled" for the kind, and
``kernels_for`` answers None for it. Adding a model kind: docs/architecture.md.
"""
import importlib
import weakref

import numpy as np

SETS = ("conv", "bn_mlp", "mlp")  # the registered kinds (folders of mamlnp/fast/), asked in
                                 # this order; a new kind adds its folder's name here


def flat(a):
    """(T, N, C) -> (T, N·C) float64 C-contiguous (a view when already so): a TaskBatch's
    arrays as the kernels take them."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


class KernelSet:
    """The compiled path of one model kind (the module docstring lists the methods)."""

    kind = None                            # the kind's name (its folder, listed in SETS)
    compiled = {"adam_step": (0,)}         # method -> ranks of α it compiles

    def __init__(self, model):
        """Work out what the kernels need of ``model`` (its geometry); keep no reference to
        it (mamlnp.fast caches one set per model, weakly)."""

    @staticmethod
    def accepts(model):
        """Whether ``model`` is of this set's kind."""
        return False

    def provides(self, method, alpha=0.0):
        """Whether ``method`` is compiled for an α of this rank (0 scalar, 1 per parameter)."""
        return np.ndim(alpha) in self.compiled.get(method, ())

    def _not_compiled(self, method):
        raise NotImplementedError(f"{self.kind}: {method} is not compiled for this kind "
                                  f"(ask mamlnp.fast.kernels_for first; the reference runs)")

    def meta_gradient(self, theta, batch, alpha, inner_steps, first_order=False):
        self._not_compiled("meta_gradient")

    def meta_gradient_alpha(self, theta, batch, alpha, inner_steps, first_order=False):
        self._not_compiled("meta_gradient_alpha")

    def meta_gradient_unchecked(self, theta, xs, ys, xq, yq, alpha, inner_steps, first_order):
        self._not_compiled("meta_gradient_unchecked")

    def adapt(self, theta, x_support, y_support, alpha, inner_steps):
        self._not_compiled("adapt")

    def adapt_batch(self, theta, batch, alpha, inner_steps):
        self._not_compiled("adapt_batch")

    def adapt_curve(self, theta, batch, alpha, steps):
        self._not_compiled("adapt_curve")

    def adapt_accuracy(self, theta, batch, alpha, steps):
        self._not_compiled("adapt_accuracy")

    def workspace_bytes(self, T, K, Q, steps):
        """Bytes of the scratch the kernels allocate for one call on T tasks of K support and
        Q query points with ``steps`` inner steps (memory checks ask here)."""
        self._not_compiled("workspace_bytes")

    def train_step(self, cfg, family, first_order, opt):
        """A callable running one whole meta-iteration (sample, meta-gradient, guard, Adam)
        for this run, or None: then the trainer goes step by step."""
        return None

    def adam_step(self, opt, theta, grad):
        """``opt._step(θ, g)`` of a mamlnp.meta.optim.Adam, compiled (common/adam.py)."""
        from .common.adam import adam_step          # Numba loads with a set, not with fast/
        return adam_step(opt, theta, grad)


CURVE_NONE, CURVE_LOSS, CURVE_ACCURACY = 0, 1, 2     # what a batch-adapt driver records


class GeomKernels(KernelSet):
    """The face of a set whose two drivers are functions of the model's geometry ``geom``
    (the batch-norm MLP's and the conv net's sets): ``_meta_grad(geom, θ, xs, ys, xq, yq, α,
    s, first_order) -> (loss, ∇θ)`` on (T, N·C) rows, and ``_adapt(geom, θ, xs, ys, xq, yq,
    α, steps, curve_kind, want_theta) -> (θ_s (T, P) or None, curve (T, steps+1))`` with
    curve_kind CURVE_NONE, CURVE_LOSS (query losses) or CURVE_ACCURACY (query accuracies).
    α reaches the drivers as given (a float, or a (P,) vector where the set's ``compiled``
    says so). A subclass sets ``self.geom`` and the two drivers (as staticmethods)."""

    _meta_grad = _adapt = None

    def meta_gradient(self, theta, batch, alpha, inner_steps, first_order=False):
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        rows = [flat(a) for a in (batch.x_support, batch.y_support, batch.x_query,
                                  batch.y_query)]
        return self._meta_grad(self.geom, theta, *rows, alpha, int(inner_steps),
                               bool(first_order))

    def meta_gradient_unchecked(self, theta, xs, ys, xq, yq, alpha, inner_steps, first_order):
        return self._meta_grad(self.geom, theta, xs, ys, xq, yq, alpha, inner_steps,
                               first_order)

    def adapt(self, theta, x_support, y_support, alpha, inner_steps):
        xs, ys = np.asarray(x_support)[None], np.asarray(y_support)[None]
        return self._adapt(self.geom, theta, xs, ys, xs, ys, alpha, inner_steps,
                           CURVE_NONE)[0][0]

    def _batch(self, theta, batch, alpha, steps, kind):
        return self._adapt(self.geom, theta, batch.x_support, batch.y_support, batch.x_query,
                           batch.y_query, alpha, steps, kind, want_theta=kind == CURVE_NONE)

    def adapt_batch(self, theta, batch, alpha, inner_steps):
        return self._batch(theta, batch, alpha, inner_steps, CURVE_NONE)[0]

    def adapt_curve(self, theta, batch, alpha, steps):
        """(T, steps+1) query losses [t, k] = L_Q,t(θ_k^{(t)}); no adapted θ is formed."""
        return self._batch(theta, batch, alpha, steps, CURVE_LOSS)[1]

    def adapt_accuracy(self, theta, batch, alpha, steps):
        """(T, steps+1) query accuracies [t, k]: the fraction of task t's query points whose
        largest logit at θ_k^{(t)} is the true class (as mamlnp.run.classify.query_accuracy)."""
        return self._batch(theta, batch, alpha, steps, CURVE_ACCURACY)[1]


_sets = weakref.WeakKeyDictionary()          # model -> its KernelSet (or False: no kind)


def _set_of(model):
    """The KernelSet bound to ``model``, made once per model; None if no kind accepts it."""
    try:
        found = _sets.get(model)
    except TypeError:                        # a model that cannot be weakly referenced
        found = None
    if found is None:
        found = False
        for name in SETS:
            cls = importlib.import_module(f"{__package__}.{name}.kernelset").KERNELS
            if cls.accepts(model):
                found = cls(model)
                break
        try:
            _sets[model] = found
        except TypeError:
            pass
    return found or None


def kernels_for(model, method="meta_gradient", alpha=0.0):
    """The kernel set of ``model``'s kind if it compiles ``method`` for an α of this form
    (a scalar, or a (P,) vector: Meta-SGD's), else None: the NumPy reference runs.
    Methods: mamlnp/fast/kernelset.py."""
    found = _set_of(model)
    return found if found is not None and found.provides(method, alpha) else None
