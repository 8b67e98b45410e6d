"""The training loop's task sampler, and its fused meta-iteration on the Numba backend.

Dimension legend: T tasks (meta-batch), K support points, Q query points, N = K + Q,
P parameters, s = inner_steps.

One meta-iteration (mamlnp.run.train._iteration; Finn et al. 2017, Algorithm 2):

    batch ~ p(T);   loss, g = method.step(θ, batch);   guard;   θ ← Adam_β(θ, g)

On ``backend="numpy"`` (and for every method, model, optimizer or task family without
kernels) the trainer runs exactly these lines: ``sample_batch``, the method's step, the
divergence guard, the optimizer's ``_step``, one Python call each.

``FusedMAML`` is the same iteration for MAML / first-order MAML on the sinusoid tasks with
Adam (the paper's protocol) as ONE compiled call (mamlnp/fast/kernels/train_kernels.py): the
same draws from the run's generator, the same meta-gradient kernel, the same Adam, so the
same bits, without the ~90 µs of Python between them (the whole meta-iteration at s = 1
is ~200 µs). Per iteration:

    u = rng.random(T·(2 + N))      the uniform draws of SinusoidTasks.sample (NumPy)
    train_step(θ, draws, …)        per task (in parallel): x, y = A sin(x + sign·φ), the
                                   task's meta-gradient; then their mean in order, Adam
    guard                          a bad step raises before θ, m, v change

The kernel's sine is math.sin; ``fused_step`` first checks on probe tasks that it gives
numpy.sin's bits (both call the C library's sin here) and otherwise returns None: the
run then goes step by step, with the same bits as ever.
"""
import numpy as np

from ..errors import InputError
from ..nn.mlp import MLP
from ..meta.optim import Adam
from ..tasks.sinusoid import SinusoidTasks
from ..meta.variants import MAML, unchecked_batch

CHUNK = 32                  # at most fast.CHUNK tasks: one kernel call (fast is not imported
                            # here: numba loads only when a numba run starts)


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


def outer_step(opt, theta, grad, backend):
    """θ ← opt(θ, g): ``opt._step`` (NumPy), or on the numba backend for Adam its compiled
    twin ``fast.adam_step`` (the same bits)."""
    if backend == "numba" and type(opt) is Adam:
        from ..fast.api import adam_step
        return adam_step(opt, theta, grad)
    return opt._step(theta, grad)


def fused_step(model, method, cfg, family, optimizers):
    """A FusedMAML for this run, or None when the run has no fused path (then the
    trainer calls sample_batch, method.step and the optimizer one by one)."""
    if (cfg["backend"] == "numba" and isinstance(method, MAML) and type(model) is MLP
            and not model.batch_norm and model.sizes[0] == 1 and model.sizes[-1] == 1
            and type(family) is SinusoidTasks and list(optimizers) == ["theta"]
            and type(optimizers["theta"]) is Adam and cfg["meta_batch"] <= CHUNK):
        fused = FusedMAML(model, cfg, family, method.first_order, optimizers["theta"])
        if fused.sine_agrees_with_numpy():
            return fused
    return None


class FusedMAML:
    """One meta-iteration of (first-order) MAML + Adam on sinusoid tasks in one kernel call.
    Holds every buffer of the run (allocated here, once) in the kernels' bundles
    (mamlnp/fast/kernels/bundles.py: the draws, the inner loop, the geometry, the workspace),
    and the Adam hyper-parameters of ``opt`` (the run's optimizer, read here: they do not
    change during a run); Adam's state in and out is an AdamStep made per call."""

    def __init__(self, model, cfg, family, first_order, opt):
        import numba                                         # numba loads with a numba run
        from ..fast import api as fast
        from ..fast.kernels.bundles import AdamStep, Inner, SinusoidDraws
        from ..fast.kernels.maml_kernels import alloc_workspace
        from ..fast.kernels.train_kernels import sinusoid_task, train_step
        self.task_kernel, self.step_kernel, self.AdamStep = sinusoid_task, train_step, AdamStep
        self.threads = numba.get_num_threads
        T, K, Q, P = cfg["meta_batch"], cfg["shots"], cfg["query"], model.num_params
        self.geom, s = fast.geometry(model), int(cfg["inner_steps"])
        self.family, u = family, np.empty(T * (2 + K + Q))        # draws: A, φ (T), x (T, N)
        (alo, ahi), (plo, phi), (xlo, xhi) = (tuple(map(float, r)) for r in (
            family.amp_range, family.phase_range, family.x_range))
        rg = np.array([alo, ahi - alo, plo, phi - plo, xlo, xhi - xlo,   # as uniform's
                       float(family.phase_sign)])                        # lo + (hi − lo)·u
        self.draws = SinusoidDraws(u, rg, *(np.empty((T, n)) for n in (K, K, Q, Q)))
        self.u, self.xs, self.ys, self.xq, self.yq = u, *self.draws[2:]
        self.inner = Inner(fast.alpha_vector(float(cfg["alpha"])), s, bool(first_order), 0)
        self.ws = alloc_workspace(T, P, s, K, Q, int(self.geom.sizes[1:].sum()), 1)
        self.g = np.empty(P)
        self.zeros = np.zeros(P)                             # Adam's m, v before step 1
        self.pairs = [(np.empty(P), np.empty(P)), (np.empty(P), np.empty(P))]   # m', v'
        self.T = T
        self.hp = np.array([opt.lr, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2,
                            opt.eps, 0.0, 0.0])              # bias corrections: per step

    def __call__(self, rng, params, opt, guard, iteration, hint):
        """Sample, meta-gradient, guard, Adam: params["theta"] and opt (m, v, t) are
        replaced only if the guard accepts the step. Returns the meta-loss."""
        P = self.g.shape[0]                                  # the kernel indexes with P:
        if params["theta"].shape != (P,) or (opt.m is not None and (    # never another length
                opt.m.shape != (P,) or opt.v.shape != (P,))):
            raise InputError(f"theta, m, v: expected ({P},) arrays of this run's model")
        rng.random(out=self.u)
        t, (m, v) = opt.t + 1, (self.zeros, self.zeros) if opt.m is None else (opt.m, opt.v)
        self.hp[6], self.hp[7] = 1.0 - opt.beta1 ** t, 1.0 - opt.beta2 ** t   # as Adam._step
        m_out, v_out = self.pairs[m is self.pairs[0][0]]     # never the arrays read
        theta_out = np.empty_like(params["theta"])           # a new θ, as Adam._step's
        adam = self.AdamStep(self.g, m, v, self.hp, theta_out, m_out, v_out)
        loss, finite = self.step_kernel(params["theta"], self.draws, self.inner, self.geom,
                                        self.ws, min(self.threads(), self.T), adam)
        if not (finite and guard.accepts(loss)):
            guard.check(iteration, loss, {"theta": self.g}, hint)            # raises
        params["theta"], opt.m, opt.v, opt.t = theta_out, m_out, v_out, t
        return loss

    def sine_agrees_with_numpy(self, batches=40):
        """Whether ``batches`` meta-batches made by the kernel (math.sin) have the bits of
        the same draws through sample_batch (numpy.sin); ~5 ms, once per run."""
        T, K, Q = self.T, self.xs.shape[1], self.xq.shape[1]
        ref, rng, u = np.random.default_rng(2017), np.random.default_rng(2017), self.u.copy()
        draws = self.draws._replace(u=u)                     # the run's draws stay untouched
        for _ in range(batches):
            want = sample_batch(self.family, ref, T, K, Q)
            rng.random(out=u)
            for t in range(T):
                self.task_kernel(t, draws)
            if not all(a.tobytes() == getattr(want, name).tobytes() for a, name in zip(
                    (self.xs, self.ys, self.xq, self.yq),
                    ("x_support", "y_support", "x_query", "y_query"))):
                return False
        return True

    def batch(self):
        """The last iteration's tasks as a TaskBatch (T, K, 1) … (for tests)."""
        return unchecked_batch(*(a[:, :, None] for a in (self.xs, self.ys, self.xq, self.yq)))
