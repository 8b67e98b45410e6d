"""MAML for reinforcement learning: the inner policy-gradient step, the meta-policy-gradient
estimators maml / lvc / dice, the exact meta Fisher-vector product and the mean KL
(mamlnp/meta/rl_trpo.py orders them for one meta-TRPO iteration, each task's points
computed once).

Dimension legend: T tasks, M pre-update samples of a task, M′ post-update samples, D
observation entries, A action entries, P parameters.

A task's samples are ``(obs (M, D), actions (M, A), advantages (M,)[, episodes (M,)])``,
flattened over the valid timesteps of its trajectories; the advantages Â are fixed
(baselined, standardised). ``episodes`` (optional, integer labels, each trajectory's
timesteps contiguous and in time order) is used by ``dice`` only. With c_m = Â_m / M:

    inner step   θ′ = θ + α g(θ),  g = Σ_m c_m ∇ log π_θ(a_m|s_m)                        (P,)
    objective    J = (1/T) Σ_i Σ_m′ c′_m′ log π_θ′_i(a′_m′|s′_m′)  (post-update surrogate)
    estimate     ∇̂ = (1/T) Σ_i (I + α Ĥ_i) g′_i,  g′_i = Σ c′ ∇ log π_θ′_i              (P,)

with Ĥ_i the curvature of the inner surrogate, one per estimator (all symmetric):

    maml   Ĥ = Σ_m c_m ∇² log π_m                       (pre-update samples held fixed)
    lvc    Ĥ = Σ_m c_m [∇² log π_m + s_m s_mᵀ]           (ProMP, Rothfuss et al. 2019)
    dice   Ĥ = lvc + Σ_t c_t [s_t S_<tᵀ + S_<t s_tᵀ]    (Foerster et al. 2018, with the
           baseline of Mao et al. 2019), s_t = ∇ log π_t, S_<t = Σ of s over earlier steps
           of t's episode. Without ``episodes`` every sample is its own episode: dice = lvc.

Ĥ g′ is one R-pass of the policy (``PolicyPoint.hvp``): the s s ᵀ terms enter as extra
output weights e_m, functions of the JVPs q_m = s_m · g′. Meta-TRPO's constraint is the mean
KL between the old and new post-update policies; its Hessian at the old θ is, exactly,

    Uᵀ F U,  U = ∂θ′/∂θ = I + α Σ_m c_m ∇² log π_m  (the map the inner step computes),
    F = the Fisher of π_θ′ on the post-update observations  (``PolicyPoint.fisher_vp``);
    ``estimator="lvc"|"dice"`` puts that estimator's Ĥ in U instead (autodiff's product
    through the LVC / DiCE inner surrogate).

Every product runs on all M samples of a task at once (BLAS matrix products over the rows,
no loop over timesteps); ``threads`` > 1 runs the tasks on that many threads, each task
alone and the results summed in task order (the same bits at any thread count). A policy
with two hidden ReLU layers (the navigation policy) runs ``FactoredPoint``
(mamlnp/nn/policy_factors.py: the passes written out, and in the FVP operator the Jacobian
factors, two (M × H × H) products per HVP or Fisher product instead of six and four);
``factored=False`` runs the general ``PolicyPoint``, the reference it is tested against.

Derivation: docs/derivations/policy-gradient.md.
"""
from concurrent.futures import ThreadPoolExecutor
from threading import Lock

import numpy as np

from ..errors import InputError
from ..nn.policy import PolicyPoint, mean_kl_points
from ..nn.policy_factors import FactoredPoint, factors_apply
from ..validation import as_float64, choice, positive_float, positive_int
from .maml import compiled_point_class

ESTIMATORS = ("maml", "lvc", "dice")


# ---- argument checks ------------------------------------------------------------------


def _episode_starts(labels, m, name):
    """Start index of each episode, plus m at the end: (E + 1,) int."""
    lab = np.asarray(labels)
    if lab.shape != (m,) or lab.dtype.kind not in "iu":
        raise InputError(f"{name}: expected integer episode labels of shape ({m},), got "
                         f"shape {lab.shape}, dtype {lab.dtype}")
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    if len(starts) != len(np.unique(lab)):
        raise InputError(f"{name}: expected each episode's timesteps contiguous (a label "
                         f"reappears after another episode)")
    return np.r_[starts, m]


def check_samples(policy, samples, name):
    """(obs, actions, advantages, episode starts or None) of one task, checked."""
    try:
        parts = tuple(samples)
    except TypeError:
        parts = ()
    if len(parts) not in (3, 4):
        raise InputError(f"{name}: expected (obs (M, {policy.obs_dim}), actions (M, "
                         f"{policy.act_dim}), advantages (M,)[, episodes (M,)]), got "
                         f"{type(samples).__name__}")
    obs = policy.check_obs(parts[0], f"{name}[0] (observations)")
    m = obs.shape[0]
    act = policy.check_actions(parts[1], m, f"{name}[1] (actions)")
    adv = as_float64(f"{name}[2] (advantages)", parts[2], 1, (m,))
    starts = _episode_starts(parts[3], m, f"{name}[3] (episodes)") if len(parts) == 4 else None
    return obs, act, adv, starts


def _task_list(policy, tasks, name, obs_only=False):
    if not isinstance(tasks, (list, tuple)) or not tasks:
        raise InputError(f"{name}: expected a non-empty list over tasks, got "
                         f"{type(tasks).__name__}")
    if obs_only:
        return [policy.check_obs(o, f"{name}[{i}]") for i, o in enumerate(tasks)]
    return [check_samples(policy, s, f"{name}[{i}]") for i, s in enumerate(tasks)]


def _pair(policy, pre, post, name_post="post"):
    pre = _task_list(policy, pre, "pre")
    post = _task_list(policy, post, name_post, obs_only=name_post == "post_obs")
    if len(pre) != len(post):
        raise InputError(f"{name_post}: expected one entry per task of pre ({len(pre)}), "
                         f"got {len(post)}")
    return pre, post


_POOLS = {}


def _per_task(fn, items, threads=1):
    """[fn(x) for x in items], on ``threads`` Python threads when threads > 1 (NumPy's matrix
    products and elementwise loops release the GIL; give each thread one BLAS thread, as
    mamlnp's commands do). The list is in task order and every item is computed alone, so
    the sums over tasks that follow have the same bits at any thread count. The calling
    thread is one of the ``threads``: it and threads − 1 pool workers take the next item
    in turn until none is left (no third thread to wake for every finished task)."""
    threads = positive_int("threads", threads)
    if threads == 1 or len(items) < 2:
        return [fn(x) for x in items]
    items = list(items)
    out, turn, lock, failed = [None] * len(items), iter(range(len(items))), Lock(), []

    def take():                                             # the next item's index, or None
        with lock:
            return None if failed else next(turn, None)

    def work():
        try:
            while (i := take()) is not None:
                out[i] = fn(items[i])
        except BaseException:
            failed.append(True)                             # the other threads stop too
            raise
    if threads - 1 not in _POOLS:
        _POOLS[threads - 1] = ThreadPoolExecutor(threads - 1, thread_name_prefix="mamlnp-rl")
    helpers = [_POOLS[threads - 1].submit(work) for _ in range(min(threads, len(items)) - 1)]
    try:
        work()
    finally:
        for h in helpers:                 # one not started has nothing left: cancelled, else
            if not h.cancel():            # waited for (a worker's error is raised here)
                h.result()
    return out


# ---- the inner step ------------------------------------------------------------------------


def _point_class(policy, factored=None, backend=None):
    """FactoredPoint (two hidden ReLU layers, the passes written out; mamlnp/nn/policy_factors.py)
    when it applies and ``factored`` is not False, else the general PolicyPoint. ``backend``
    "numba" (None: mamlnp.meta.maml.DEFAULT_BACKEND) gives the FactoredPoint's compiled twin,
    ``mamlnp.fast.policy.CompiledPoint`` (its row passes compiled: mamlnp/fast/policy/),
    "numpy" the FactoredPoint itself; the general point has no compiled twin."""
    compiled = compiled_point_class(backend)                # None for "numpy"; checks it
    if not _use_factors(policy, factored):
        return PolicyPoint
    return compiled or FactoredPoint


def _inner(policy, theta, task, alpha, cls=PolicyPoint):
    """(pre-update point of class ``cls`` with Σ c log π's deltas kept, θ′)."""
    obs, act, adv, _ = task
    pt = cls(policy, theta, obs, act)
    g = pt.vjp(adv / adv.shape[0])                         # Σ_m c_m ∇ log π_m   (P,)
    return pt, theta + alpha * g


def inner_step(policy, theta, pre, alpha, backend=None):
    """θ′ = θ + α ∇_θ (1/M) Σ_m Â_m log π_θ(a_m|s_m) for one task's samples ``pre``;
    ``backend`` as in ``rl_meta_gradient``."""
    theta = policy.check_theta(theta)
    alpha = positive_float("alpha", alpha)
    return _inner(policy, theta, check_samples(policy, pre, "pre"), alpha,
                  _point_class(policy, backend=backend))[1]


# ---- the estimators' curvature ------------------------------------------------------------


def _segment_sums(x, starts):
    """(Σ of x over earlier steps of each step's episode, Σ over later steps): (M,), (M,)."""
    seg = np.repeat(np.arange(len(starts) - 1), np.diff(starts))          # episode of each step
    cs = np.cumsum(x)                                                       # (M,)
    before = np.r_[0.0, cs][starts]                                         # Σ x before each start
    earlier = cs - x - before[seg]
    later = before[seg + 1] - cs
    return earlier, later


def score_coefficients(estimator, c, starts):
    """The callable q ↦ e (M,) of the estimator's Σ_m e_m s_m term, or None for maml.

    lvc:  e = c ⊙ q                                            (Σ_m c_m s_m s_mᵀ v)
    dice: e_t = c_t q_t + c_t (S_<t · v) + Σ_{t′ > t} c_t′ q_t′  (within t's episode)
    """
    if estimator == "maml":
        return None
    if estimator == "lvc" or starts is None:
        return lambda q: c * q
    def dice(q):
        earlier, _ = _segment_sums(q, starts)                              # S_<t · v
        _, later = _segment_sums(c * q, starts)                            # Σ_{t′>t} c_t′ q_t′
        return c * q + c * earlier + later
    return dice


# ---- the meta-gradient -----------------------------------------------------------------------


def _task_meta_gradient(policy, theta, pre, post, alpha, estimator, cls):
    """(objective, (I + α Ĥ) g′) of one task, its points of class ``cls``."""
    pt, theta1 = _inner(policy, theta, pre, alpha, cls)
    obs1, act1, adv1, _ = post
    c1 = adv1 / adv1.shape[0]
    post_pt = cls(policy, theta1, obs1, act1)
    g1 = post_pt.vjp(c1)                                                    # g′ (P,)
    c = pre[2] / pre[2].shape[0]
    coeffs = score_coefficients(estimator, c, pre[3])
    return float(c1 @ post_pt.log_prob), g1 + alpha * pt.hvp(g1, coeffs)


def rl_meta_gradient(policy, theta, pre, post, alpha, estimator="dice", threads=1,
                     factored=None, backend=None):
    """(objective, gradient (P,)): the post-update surrogate (1/T) Σ_i mean_m′ Â′ log π_θ′_i
    and the estimator's meta-gradient, ``estimator`` in "maml" | "lvc" | "dice"; the tasks
    on ``threads`` threads (the same bits at any count). ``factored``: None (default) runs
    a two-hidden-layer ReLU policy's passes written out (mamlnp/nn/policy_factors.py), False
    the general R-pass, True requires the former; ``backend`` "numba" (default) runs the
    former's row passes compiled, "numpy" their NumPy twins (``_point_class``)."""
    theta = policy.check_theta(theta)
    alpha = positive_float("alpha", alpha)
    estimator = choice("estimator", estimator, ESTIMATORS)
    pre, post = _pair(policy, pre, post)
    cls = _point_class(policy, factored, backend)
    parts = _per_task(lambda ab: _task_meta_gradient(policy, theta, ab[0], ab[1], alpha,
                                                     estimator, cls), list(zip(pre, post)),
                      threads)
    obj, grad = 0.0, np.zeros(policy.num_params)
    for o, g in parts:
        obj, grad = obj + o, grad + g
    return obj / len(pre), grad / len(pre)


# ---- meta-TRPO: the exact Fisher-vector product, the KL, the surrogate ----------------------


DAMPING = 1e-5      # cbfinn/maml_rl's reg_coeff of the Fisher-vector product


def meta_fvp_operator(policy, theta, pre, post_obs, alpha, damping=DAMPING, estimator="maml",
                      threads=1, factored=None, backend=None):
    """v ↦ (1/T) Σ_i U_iᵀ F_i U_i v + damping · v, with the forward passes of every task
    computed once (a conjugate-gradient solve calls it ~10 times). damping > 0 keeps the
    product positive definite (the undamped one is singular where F is).

    estimator "maml" (default): U = I + α Σ c ∇² log π, the Jacobian of the inner step as
    computed, so the product is the exact Hessian of the mean post-update KL. "lvc" / "dice":
    U = I + α Ĥ with that estimator's curvature, the product autodiff gives when the KL is
    written through the LVC / DiCE inner surrogate (ProMP's and the JAX peer's form).
    The tasks run on ``threads`` threads (the same bits at any count).

    factored: None (default) uses the cached Jacobian factors (mamlnp/nn/policy_factors.py:
    two (M × H × H) products per HVP or Fisher product instead of six and four) when the
    policy has two hidden ReLU layers, else the general R-pass; False forces the R-pass
    (the reference the factored products are tested against), True requires the factors."""
    theta = policy.check_theta(theta)
    alpha = positive_float("alpha", alpha)
    damping = positive_float("damping", damping)
    estimator = choice("estimator", estimator, ESTIMATORS)
    pre, post_obs = _pair(policy, pre, post_obs, "post_obs")
    threads = positive_int("threads", threads)
    cls = _point_class(policy, factored, backend)
    def build(item):
        task, obs1 = item
        pt, theta1 = _inner(policy, theta, task, alpha, cls)
        coeffs = score_coefficients(estimator, task[2] / task[2].shape[0], task[3])
        return _factorized(pt, coeffs, cls(policy, theta1, obs1))
    return _fvp_closure(_per_task(build, list(zip(pre, post_obs)), threads), alpha, damping,
                        threads)


def _factorized(pt, coeffs, post_pt):
    """(pt, coeffs, post_pt) of one task's FVP, a FactoredPoint's fixed products computed
    once for the whole solve (the post point's Fisher needs no cross products K)."""
    if isinstance(pt, FactoredPoint):
        pt.factorize(), post_pt.factorize(cross=False)
    return pt, coeffs, post_pt


def _fvp_closure(parts, alpha, damping, threads):
    """v ↦ (1/T) Σ_i U_iᵀ F_i U_i v + damping · v over the tasks' (pt, coeffs, post_pt)."""
    def fvp(v):
        def one(part):
            pt, coeffs, post_pt = part
            u = v + alpha * pt.hvp(v, coeffs)                               # U v
            w = post_pt.fisher_vp(u)                                        # F U v
            return w + alpha * pt.hvp(w, coeffs)                            # Uᵀ F U v
        out = damping * v
        for x in _per_task(one, parts, threads):
            out = out + x / len(parts)
        return out
    return fvp


def _use_factors(policy, factored):
    """The ``factored`` option resolved to a bool (None: when the factors apply)."""
    if factored is None:
        return factors_apply(policy)
    if factored not in (True, False):
        raise InputError(f"factored: expected None, True or False, got {factored!r}")
    if factored and not factors_apply(policy):
        raise InputError(f"factored: the Jacobian-factor products need two hidden ReLU layers "
                         f"(sizes (D, H1, H2, A), activation 'relu'), got {policy!r}")
    return factored


def meta_fvp(policy, theta, pre, post_obs, alpha, v, damping=DAMPING, estimator="maml",
             threads=1, factored=None, backend=None):
    """(1/T) Σ_i U_iᵀ F_i U_i v + damping · v: the Hessian of the mean post-update KL at θ
    (``meta_fvp_operator`` for ``estimator``)."""
    fvp = meta_fvp_operator(policy, theta, pre, post_obs, alpha, damping, estimator, threads,
                            factored, backend)
    return fvp(policy.check_theta(v, "v"))


def mean_kl(policy, old_thetas, new_thetas, post_obs):
    """(1/T) Σ_i (1/M′) Σ_m KL(π_θ′old_i(·|s′_m) ‖ π_θ′new_i(·|s′_m)): lists over tasks."""
    post_obs = _task_list(policy, post_obs, "post_obs", obs_only=True)
    if len(old_thetas) != len(post_obs) or len(new_thetas) != len(post_obs):
        raise InputError(f"old_thetas, new_thetas: expected one θ′ per task ({len(post_obs)}),"
                         f" got {len(old_thetas)} and {len(new_thetas)}")
    kls = [mean_kl_points(policy.point(a, o), policy.point(b, o))
           for a, b, o in zip(old_thetas, new_thetas, post_obs)]
    return float(np.mean(kls))


def line_search_fns(policy, theta, pre, post, alpha, threads=1, factored=None, backend=None):
    """(surrogate_fn, kl_fn) of meta-TRPO's line search, both of a candidate θ_new:

      surrogate(θ_new) = (1/T) Σ_i mean_m′ Â′ exp(log π_θ′new_i − log π_θ′old_i)  (maml_rl's)
      kl(θ_new)        = mean KL between π_θ′old_i and π_θ′new_i on the post observations

    θ′new_i = inner_step(θ_new, pre_i); the last candidate's adapted points are reused.
    ``factored`` and ``backend`` as in ``rl_meta_gradient``."""
    theta = policy.check_theta(theta)
    alpha = positive_float("alpha", alpha)
    pre, post = _pair(policy, pre, post)
    threads = positive_int("threads", threads)
    cls = _point_class(policy, factored, backend)
    return _line_search_closures(policy, pre, post, alpha, threads, cls,
                                 _adapted_points(policy, theta, pre, post, alpha, threads, cls),
                                 theta)


def _adapted_points(policy, theta, pre, post, alpha, threads, cls):
    """The post-update points at θ′_i = inner_step(θ, pre_i) on post_i's samples."""
    return _per_task(lambda ab: cls(policy, _inner(policy, theta, ab[0], alpha, cls)[1],
                                    ab[1][0], ab[1][1]), list(zip(pre, post)), threads)


def _line_search_closures(policy, pre, post, alpha, threads, cls, old, theta):
    """(surrogate_fn, kl_fn) against the old post-update points ``old``, those of θ: at θ
    itself (trpo_step's surrogate before the step) they are reused, not recomputed."""
    memo = {theta.tobytes(): old}
    def adapted(theta_new):
        key = theta_new.tobytes()
        if key not in memo:
            memo.clear()
            memo[key] = _adapted_points(policy, theta_new, pre, post, alpha, threads, cls)
        return memo[key]
    def surrogate(theta_new):
        pts = adapted(policy.check_theta(theta_new, "theta_new"))
        return float(np.mean([np.mean(b[2] * np.exp(p.log_prob - o.log_prob))
                              for p, o, b in zip(pts, old, post)]))
    def kl(theta_new):
        pts = adapted(policy.check_theta(theta_new, "theta_new"))
        return float(np.mean([mean_kl_points(o, p) for p, o in zip(pts, old)]))
    return surrogate, kl
