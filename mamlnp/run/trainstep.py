"""The training loop's task sampler, and its fused meta-iteration on the Numba backend.

Dimension legend: T tasks (meta-batch), K support points, Q query points, N = K + Q,
P parameters, s = inner_steps.

One meta-iteration (mamlnp.run.train._iteration; Finn et al. 2017, Algorithm 2):

    batch ~ p(T);   loss, g = method.step(θ, batch);   guard;   θ ← Adam_β(θ, g)

On ``backend="numpy"`` (and for every method, model, optimizer or task family without
kernels) the trainer runs exactly these lines: ``sample_batch``, the method's step, the
divergence guard, the optimizer's ``_step``, one Python call each.

A kernel set may fuse the whole iteration into one compiled call (``KernelSet.train_step``,
mamlnp/fast/kernelset.py): today the plain MLP's set does, for MAML / first-order MAML on the
sinusoid tasks with Adam (the paper's protocol; mamlnp/fast/mlp/fused.py): the same draws
from the run's generator, the same meta-gradient kernel, the same Adam, so the same bits,
without the ~90 µs of Python between them (the whole meta-iteration at s = 1 is ~200 µs).
``fused_step`` asks for it; this module imports no kernels (Numba loads only when a numba
run starts, through mamlnp.meta.maml.kernels_for).
"""
from ..meta.maml import kernels_for
from ..meta.optim import Adam
from ..meta.variants import MAML, unchecked_batch


def sample_batch(family, rng, T, K, Q, backend="numpy"):
    """``family.sample(rng, T, K, Q)`` without its argument checks and TaskBatch
    validation (~0.1 ms): the same draws in the same order, hence the same bits.
    For the training loop, whose T, K, Q were checked once and whose data are fresh.
    Families of whole episodes (``episodic``, e.g. OmniglotTasks) draw with their ``sample``,
    or on the numba backend through mamlnp.fast.episodes.sample_compiled when they have
    ``sample_with`` (the same bits)."""
    if getattr(family, "episodic", False):
        if backend == "numba" and hasattr(family, "sample_with"):
            from ..fast import episodes
            return episodes.sample_compiled(family, rng, T, K, Q)
        return family.sample(rng, T, K, Q)
    params = family.sample_params(rng, T)
    x = family.sample_inputs(rng, T, K + Q)                                # (T, K+Q, D)
    y = family.targets(params, x)                                          # (T, K+Q, O)
    return unchecked_batch(x[:, :K], y[:, :K], x[:, K:], y[:, K:])


def outer_step(opt, theta, grad, fast=None):
    """θ ← opt(θ, g): ``opt._step`` (NumPy), or for Adam the compiled twin of the kernel set
    ``fast`` (``kernels_for(model, backend, "adam_step")``; the same bits)."""
    if fast is not None and type(opt) is Adam:
        return fast.adam_step(opt, theta, grad)
    return opt._step(theta, grad)


def fused_step(model, method, cfg, family, optimizers):
    """The kernel set's fused meta-iteration for this run (``KernelSet.train_step``), or None
    when the run has none (then the trainer calls sample_batch, method.step and the optimizer
    one by one). Only (FO)MAML with one Adam on θ is ever fused."""
    fast = kernels_for(model, cfg["backend"], "train_step", cfg["alpha"])
    if (fast is None or not isinstance(method, MAML) or list(optimizers) != ["theta"]
            or type(optimizers["theta"]) is not Adam):
        return None
    return fast.train_step(cfg, family, method.first_order, optimizers["theta"])
