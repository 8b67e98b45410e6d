"""The plain MLP's fused training step: one (FO)MAML + Adam meta-iteration on sinusoid tasks
as ONE compiled call (mlp/train_kernels.py ``train_step``).

Dimension legend: T tasks (meta-batch), K support points, Q query points, N = K + Q,
P parameters, s = inner_steps.

Reference: the step-by-step iteration of mamlnp/run/train.py ``_iteration`` (sample_batch,
MAML.step, the guard, Adam._step); tests: tests/test_fused_step.py (the same bits, not a
tolerance). Per iteration:

    u = rng.random(T·(2 + N))      the uniform draws of SinusoidTasks.sample (NumPy)
    train_step(θ, draws, …)        per task (in parallel): x, y = A sin(x + sign·φ), the
                                   task's meta-gradient; then their mean in order, Adam
    guard                          a bad step raises before θ, m, v change

The kernel's sine is math.sin; ``fused_maml`` first checks on probe tasks that it gives
numpy.sin's bits (both call the C library's sin here) and otherwise returns None: the
run then goes step by step, with the same bits as ever.
"""
import numba
import numpy as np

from ...errors import InputError
from ...tasks.base import TaskBatch
from ...tasks.sinusoid import SinusoidTasks
from ..common.bundles import AdamStep, Inner, SinusoidDraws
from .maml_kernels import alloc_workspace
from .train_kernels import sinusoid_task, train_step


def fused_maml(geom, cfg, family, first_order, opt):
    """A FusedMAML for this run, or None when it has no fused path: inputs and outputs of
    dimension 1, SinusoidTasks, and math.sin agreeing with numpy.sin."""
    if geom.sizes[0] != 1 or geom.sizes[-1] != 1 or type(family) is not SinusoidTasks:
        return None
    fused = FusedMAML(geom, cfg, family, first_order, opt)
    return fused if fused.sine_agrees_with_numpy() else None


def reference_batch(family, rng, T, K, Q):
    """SinusoidTasks.sample's draws and arrays without its checks (run/trainstep.sample_batch)."""
    params = family.sample_params(rng, T)
    x = family.sample_inputs(rng, T, K + Q)                                # (T, K+Q, 1)
    y = family.targets(params, x)                                          # (T, K+Q, 1)
    return x[:, :K], y[:, :K], x[:, K:], y[:, K:]


class FusedMAML:
    """One meta-iteration of (first-order) MAML + Adam on sinusoid tasks in one kernel call.
    Holds every buffer of the run (allocated here, once) in the kernels' bundles
    (mamlnp/fast/common/bundles.py: the draws, the inner loop, the geometry, the workspace),
    and the Adam hyper-parameters of ``opt`` (the run's optimizer, read here: they do not
    change during a run). Adam's m, v (``opt._m``, ``opt._v``, its private buffers) are read
    and replaced by two pairs of buffers this object owns, used in turn."""

    def __init__(self, geom, cfg, family, first_order, opt):
        T, K, Q = cfg["meta_batch"], cfg["shots"], cfg["query"]
        P = int(geom.boff[-1] + geom.sizes[-1])
        self.geom, s = geom, int(cfg["inner_steps"])
        self.family, u = family, np.empty(T * (2 + K + Q))        # draws: A, φ (T), x (T, N)
        (alo, ahi), (plo, phi), (xlo, xhi) = (tuple(map(float, r)) for r in (
            family.amp_range, family.phase_range, family.x_range))
        rg = np.array([alo, ahi - alo, plo, phi - plo, xlo, xhi - xlo,   # as uniform's
                       float(family.phase_sign)])                        # lo + (hi − lo)·u
        self.draws = SinusoidDraws(u, rg, *(np.empty((T, n)) for n in (K, K, Q, Q)))
        self.u, self.xs, self.ys, self.xq, self.yq = u, *self.draws[2:]
        self.inner = Inner(np.full(1, float(cfg["alpha"])), s, bool(first_order), 0)  # (1,)
        self.ws = alloc_workspace(T, P, s, K, Q, int(geom.sizes[1:].sum()), 1)
        self.g = np.empty(P)
        self.zeros = np.zeros(P)                             # Adam's m, v before step 1
        self.pairs = [(np.empty(P), np.empty(P)), (np.empty(P), np.empty(P))]   # m', v'
        self.T = T
        self.hp = np.array([opt.lr, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2,
                            opt.eps, 0.0, 0.0])              # bias corrections: per step

    def __call__(self, rng, params, opt, guard, iteration, hint):
        """Sample, meta-gradient, guard, Adam: params["theta"] and opt (m, v, t) are
        replaced only if the guard accepts the step. Returns the meta-loss."""
        P, m, v = self.g.shape[0], opt._m, opt._v            # the kernel indexes with P:
        if params["theta"].shape != (P,) or (m is not None and (       # never another length
                m.shape != (P,) or v.shape != (P,))):
            raise InputError(f"theta, m, v: expected ({P},) arrays of this run's model")
        rng.random(out=self.u)
        t, (m, v) = opt.t + 1, (self.zeros, self.zeros) if m is None else (m, v)
        self.hp[6], self.hp[7] = 1.0 - opt.beta1 ** t, 1.0 - opt.beta2 ** t   # as Adam._step
        m_out, v_out = self.pairs[m is self.pairs[0][0]]     # never the arrays read
        theta_out = np.empty_like(params["theta"])           # a new θ, as Adam._step's
        adam = AdamStep(self.g, m, v, self.hp, theta_out, m_out, v_out)
        loss, finite = train_step(params["theta"], self.draws, self.inner, self.geom,
                                  self.ws, min(numba.get_num_threads(), self.T), adam)
        if not (finite and guard.accepts(loss)):
            guard.check(iteration, loss, {"theta": self.g}, hint)            # raises
        params["theta"], opt._m, opt._v, opt.t = theta_out, m_out, v_out, t
        return loss

    def sine_agrees_with_numpy(self, batches=40):
        """Whether ``batches`` meta-batches made by the kernel (math.sin) have the bits of
        the same draws through SinusoidTasks' own methods (numpy.sin); ~5 ms, once per run."""
        T, K, Q = self.T, self.xs.shape[1], self.xq.shape[1]
        ref, rng, u = np.random.default_rng(2017), np.random.default_rng(2017), self.u.copy()
        draws = self.draws._replace(u=u)                     # the run's draws stay untouched
        for _ in range(batches):
            want = reference_batch(self.family, ref, T, K, Q)
            rng.random(out=u)
            for t in range(T):
                sinusoid_task(t, draws)
            if not all(a.tobytes() == np.ascontiguousarray(w[:, :, 0]).tobytes()
                       for a, w in zip((self.xs, self.ys, self.xq, self.yq), want)):
                return False
        return True

    def batch(self):
        """The last iteration's tasks as a TaskBatch (T, K, 1) … (for tests)."""
        return TaskBatch(*(a[:, :, None].copy() for a in (self.xs, self.ys, self.xq, self.yq)))
