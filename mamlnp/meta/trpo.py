"""TRPO's outer step (Schulman et al. 2015) as MAML-RL uses it: conjugate gradient on a
Fisher-vector product, then a backtracking line search under a KL constraint. Generic:
it sees θ, a gradient and three callables, nothing of the policy.

Dimension legend: P parameters.

    x  ≈ F⁻¹ g                                   conjugate gradient, ``iters`` products F p
    β  = √(2 δ / (xᵀ F x + 1e-8))                 the step reaching KL ≈ δ on the quadratic model
                                                  (F x = Σ_k a_k F p_k from CG's own products;
                                                  rllab spends one more product on it)
    θ_k = θ + r^k β x,  k = 0, 1, …, K − 1        r = backtrack_ratio, K = max_backtracks
    accept the first θ_k with surrogate(θ_k) > surrogate(θ) and kl(θ_k) ≤ δ; if none, keep θ

(rllab's ConjugateGradientOptimizer, which cbfinn/maml_rl uses, written for maximisation:
rllab minimises the negated surrogate.) ``ascent_step`` is the simple alternative: Adam
(mamlnp/meta/optim.py) on the negated gradient.
"""
import warnings

import numpy as np

from ..errors import InputError
from ..validation import as_float64, float_in, nonneg_float, positive_float, positive_int


def conjugate_gradient(fvp, g, iters=10, residual_tol=1e-10, with_product=False):
    """x ≈ F⁻¹ g for a symmetric positive definite F given as v ↦ F v (P,) -> (P,).

    Hestenes-Stiefel CG from x = 0, at most ``iters`` products, stopping when rᵀr < residual_tol.
    with_product: return (x, F x) instead, F x = Σ_k a_k F p_k accumulated from the products
    the solve made (x = Σ_k a_k p_k and F is linear: the same vector to rounding, no product
    more)."""
    g = as_float64("g", g, 1)
    iters = positive_int("iters", iters)
    residual_tol = nonneg_float("residual_tol", residual_tol)
    x, Fx = np.zeros_like(g), np.zeros_like(g)
    r, p = g.copy(), g.copy()                                # residual g − F x, direction
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        z = fvp(p)                                           # F p  (P,)
        pz = p @ z
        if not np.isfinite(pz) or pz <= 0.0:
            raise InputError(f"fvp: expected a positive definite product, got pᵀFp = {pz!r} "
                             f"(add damping?)")
        a = rr / pz
        x += a * p
        Fx += a * z                                          # F x  (P,)
        r -= a * z
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return (x, Fx) if with_product else x


def _safe(fn, theta):
    """fn(θ) as a float, NaN when it raises or is not finite (a rejected candidate)."""
    try:
        value = float(fn(theta))
    except (InputError, FloatingPointError, OverflowError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def trpo_step(theta, g, fvp, surrogate_fn, kl_fn, max_kl=0.01, backtrack_ratio=0.8,
              max_backtracks=15, cg_iters=10, surrogate_before=None):
    """One KL-constrained ascent step on the surrogate: -> (θ_new (P,), info dict).

    g (P,) is the surrogate's gradient at θ, fvp v ↦ F v the KL's Hessian (damped), and
    surrogate_fn, kl_fn map a candidate θ to floats. info: accepted, backtracks, step_size,
    surrogate, kl, reason. When no candidate improves the surrogate within the KL, θ is
    returned unchanged, with a warning and info["reason"] saying why."""
    theta = as_float64("theta", theta, 1)
    g = as_float64("g", g, 1, theta.shape)
    max_kl = positive_float("max_kl", max_kl)
    backtrack_ratio = float_in("backtrack_ratio", backtrack_ratio, 0.0, 1.0)
    max_backtracks = positive_int("max_backtracks", max_backtracks)
    before = float(surrogate_fn(theta)) if surrogate_before is None else float(surrogate_before)
    if not np.isfinite(before):
        raise InputError(f"surrogate_fn: expected a finite surrogate at theta, got {before!r}")
    x, Fx = conjugate_gradient(fvp, g, cg_iters, with_product=True)     # F⁻¹ g, F x  (P,)
    xFx = float(x @ Fx)
    info = {"accepted": False, "backtracks": 0, "step_size": 0.0, "surrogate": before,
            "kl": 0.0, "surrogate_before": before, "reason": ""}
    if not np.isfinite(xFx) or xFx < 0.0:
        return _reject(theta, info, f"xᵀFx = {xFx!r} is not a non-negative number")
    beta = float(np.sqrt(2.0 * max_kl / (xFx + 1e-8)))
    for k in range(max_backtracks):
        ratio = backtrack_ratio ** k
        cand = theta + (ratio * beta) * x
        surr, kl = _safe(surrogate_fn, cand), _safe(kl_fn, cand)
        info.update(backtracks=k + 1, step_size=ratio * beta, surrogate=surr, kl=kl)
        if surr > before and kl <= max_kl:
            info["accepted"] = True
            return cand, info
    why = (f"no step of {max_backtracks} backtracks improved the surrogate ({before:.6g}) "
           f"within KL <= {max_kl:g} (last: surrogate {info['surrogate']:.6g}, KL {info['kl']:.3g})")
    return _reject(theta, info, why)


def _reject(theta, info, why):
    info["reason"] = "line search rejected the step; theta kept: " + why
    warnings.warn(info["reason"], RuntimeWarning, stacklevel=3)
    return theta.copy(), info


def ascent_step(optimizer, theta, g):
    """θ ← optimizer.step(θ, −g): an outer step that ascends the surrogate with
    mamlnp.meta.optim's SGD or Adam (which descend)."""
    return optimizer.step(theta, -as_float64("g", g, 1))
