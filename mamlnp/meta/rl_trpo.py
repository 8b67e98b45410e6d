"""One meta-TRPO iteration of MAML-RL with each task's points computed once: the inner steps
(kept from the sampler), the objective and meta-gradient, the exact meta Fisher-vector
product and the line-search functions, and the seconds each stage took.

Dimension legend: T tasks, M pre-update samples of a task, M′ post-update samples, P
parameters.

The equations are mamlnp/meta/rl.py's; this module only orders the work so that nothing is
computed twice. Per task i, with c = Â/M and c′ = Â′/M′:

    inner step    pt_i = the point at θ on pre_i (forward, vjp(c)),  θ′_i = θ + α g_i
                  (``inner_steps``: the sampler needs θ′ before the post-update rollouts,
                  and its points serve everything below)
    stage 1       post_i = the point at θ′_i on post_i (forward),  g′_i = post_i.vjp(c′),
                  objective_i = c′ · log π_θ′_i
    stage 2       the FVP's fixed products: pt_i.factorize(), post_i.factorize(cross=False)
                  (mamlnp/nn/policy_factors.py)
    stage 3       ∇̂_i = g′_i + α Ĥ_i g′_i   (the HVP through stage 2's factors)
    FVP           v ↦ (1/T) Σ_i U_iᵀ F_i U_i v + damping · v  on the points above
    line search   θ_new ↦ surrogate, mean KL against post_i; at θ itself the points are
                  post_i (no inner step recomputed for trpo_step's surrogate at θ)

Against ``rl_meta_gradient`` + ``meta_fvp_operator`` + ``line_search_fns`` (each computes its
own points): the same objective, FVP and line-search values bit for bit, and the
meta-gradient to rounding (its HVP runs through the factors; tests/test_rl_trpo.py).
"""
import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validation import choice, positive_float, positive_int
from . import rl as RL


@dataclass
class InnerSteps:
    """The inner steps of T tasks at one θ (``inner_steps``): the pre-update points (their
    forward pass and vjp(c) kept) and θ′ (T, P)."""
    theta: np.ndarray
    alpha: float
    points: list
    thetas: np.ndarray


def inner_steps(policy, theta, pre, alpha, threads=1, factored=None, backend=None):
    """θ′_i = θ + α ∇_θ (1/M) Σ_m Â_m log π_θ(a_m|s_m) for every task of ``pre``, the tasks on
    ``threads`` threads: an ``InnerSteps`` (``.thetas`` (T, P) the same bits as
    ``rl.inner_step`` task by task), whose points ``meta_trpo_fns(…, inner=…)`` reuses."""
    theta = policy.check_theta(theta)
    alpha = positive_float("alpha", alpha)
    pre = RL._task_list(policy, pre, "pre")
    cls = RL._point_class(policy, factored, backend)
    parts = RL._per_task(lambda task: RL._inner(policy, theta, task, alpha, cls), pre, threads)
    return InnerSteps(theta.copy(), alpha, [p for p, _ in parts],
                      np.stack([t for _, t in parts]))


def _check_inner(inner, theta, pre, alpha, cls):
    """``inner``'s points, if they are the inner steps of these θ, α, samples and class."""
    if not isinstance(inner, InnerSteps):
        raise InputError(f"inner: expected the InnerSteps of inner_steps(…), got "
                         f"{type(inner).__name__}")
    same = (inner.alpha == alpha and np.array_equal(inner.theta, theta)
            and len(inner.points) == len(pre)
            and all(type(p) is cls and np.array_equal(p.obs, obs)
                    and np.array_equal(p.actions, act) and np.array_equal(p._bp[0], adv / len(adv))
                    for p, (obs, act, adv, _) in zip(inner.points, pre)))
    if not same:
        raise InputError("inner: expected the inner steps of this theta, alpha and pre (and "
                         "the same factored and backend options), got those of another")
    return inner.points


def timed(seconds, key, fn, *args, **kwargs):
    """fn(*args, **kwargs), its wall time added to seconds[key] (when seconds is a dict)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if seconds is not None:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0
    return out


def meta_trpo_fns(policy, theta, pre, post, alpha, estimator="dice", damping=RL.DAMPING,
                  fvp_estimator="maml", threads=1, factored=None, inner=None, seconds=None,
                  backend=None):
    """(objective, gradient, fvp, surrogate_fn, kl_fn) of one meta-TRPO iteration at θ: what
    ``rl_meta_gradient(…, estimator)``, ``meta_fvp_operator(…, damping, fvp_estimator)`` and
    ``rl.line_search_fns`` return, each task's pre-update point (forward, backward) and
    post-update point (forward, backward) computed once instead of three times.

    inner : the ``inner_steps(policy, θ, pre, α, threads, factored, backend)`` already taken (the
    sampler's), reused; None takes them here. seconds : a dict to which the wall seconds of
    "meta_gradient" (stages 1 and 3, and the inner steps when taken here) and "fvp_setup"
    (stage 2) are added."""
    theta = policy.check_theta(theta)
    alpha = positive_float("alpha", alpha)
    estimator = choice("estimator", estimator, RL.ESTIMATORS)
    damping = positive_float("damping", damping)
    fvp_estimator = choice("fvp_estimator", fvp_estimator, RL.ESTIMATORS)
    pre, post = RL._pair(policy, pre, post)
    threads = positive_int("threads", threads)
    cls = RL._point_class(policy, factored, backend)
    if inner is not None:
        inner = list(zip(_check_inner(inner, theta, pre, alpha, cls), inner.thetas))
    tasks = range(len(pre))
    run = lambda key, fn: timed(seconds, key, RL._per_task, fn, tasks, threads)  # noqa: E731

    def coeffs(est, i):
        return RL.score_coefficients(est, pre[i][2] / pre[i][2].shape[0], pre[i][3])

    def stage1(i):                       # (pt, post point, g′, objective) of task i
        pt, theta1 = inner[i] if inner is not None else RL._inner(policy, theta, pre[i],
                                                                  alpha, cls)
        obs1, act1, adv1, _ = post[i]
        post_pt = cls(policy, theta1, obs1, act1)
        c1 = adv1 / adv1.shape[0]
        return pt, post_pt, post_pt.vjp(c1), float(c1 @ post_pt.log_prob)

    def stage3(i):                       # ∇̂_i = g′_i + α Ĥ_i g′_i, through stage 2's factors
        pt, _, g1, _ = parts[i]
        return g1 + alpha * pt.hvp(g1, coeffs(estimator, i))
    parts = run("meta_gradient", stage1)
    setup = run("fvp_setup", lambda i: RL._factorized(parts[i][0], coeffs(fvp_estimator, i),
                                                       parts[i][1]))
    grads = run("meta_gradient", stage3)
    obj, grad = 0.0, np.zeros(policy.num_params)
    for (*_, o), g in zip(parts, grads):                    # in task order: any thread count
        obj, grad = obj + o, grad + g
    old = [post_pt for _, post_pt, *_ in parts]
    return (obj / len(pre), grad / len(pre), RL._fvp_closure(setup, alpha, damping, threads),
            *RL._line_search_closures(policy, pre, post, alpha, threads, cls, old, theta))
