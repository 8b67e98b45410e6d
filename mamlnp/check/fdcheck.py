"""Finite differences and result rows: the primitives of mamlnp.check.gradcheck.

Dimension legend: P parameters, M check directions, N points.

Centred finite difference of a function f along a direction u (P,):

    D_u f(θ) ≈ [f(θ + ε u) − f(θ − ε u)] / (2ε)

An exact quantity a and its estimate b are compared by the relative error

    rel(a, b) = ‖a − b‖₂ / max(‖a‖₂, ‖b‖₂, 1e-300)

(the worst of M directions when there are several); a row PASSes when rel ≤ tol
(``expect="agree"``) or, for rows that must NOT agree, when rel > tol (``"differ"``).
The checkers built on these are in mamlnp/check/gradcheck.py, which re-exports every name.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validation import as_rng, positive_float, positive_int

TINY = 1e-300          # floor of the relative-error denominator
FULL_FD_LIMIT = 1000   # P up to this: full finite-difference gradient; above: random directions


# ---- result rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One row: ``expect="agree"`` passes iff rel_err <= tol, ``"differ"`` iff rel_err > tol."""
    label: str
    max_abs_err: float
    rel_err: float
    tol: float
    expect: str = "agree"
    skipped: bool = False
    note: str = ""

    @property
    def passed(self):
        if self.skipped:
            return True
        ok = self.rel_err <= self.tol if self.expect == "agree" else self.rel_err > self.tol
        return bool(ok)                                  # NaN fails either way

    @property
    def status(self):
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")


def rel_error(a, b):
    """‖a − b‖₂ / max(‖a‖₂, ‖b‖₂, TINY) for arrays of equal shape; 0 when both are 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), TINY))


def compare(label, exact, estimate, tol, expect="agree", note=""):
    """A CheckResult for exact vs estimate of equal shape. 1-d arrays are compared as one
    vector; for (M, ...) arrays each of the M rows is one direction and the worst row counts."""
    tol = positive_float("tol", tol)
    exact = np.atleast_1d(np.asarray(exact, dtype=np.float64))
    estimate = np.atleast_1d(np.asarray(estimate, dtype=np.float64))
    if exact.shape != estimate.shape:
        raise InputError(f"{label}: exact has shape {exact.shape}, estimate {estimate.shape}")
    rows = exact.reshape(exact.shape[0], -1) if exact.ndim > 1 else exact[None]
    est = estimate.reshape(rows.shape)
    rel = max(rel_error(r, e) for r, e in zip(rows, est))
    return CheckResult(label, float(np.max(np.abs(exact - estimate))), rel, tol, expect, note=note)


def skipped(label, tol, reason):
    return CheckResult(label, float("nan"), float("nan"), tol, skipped=True, note=reason)


def format_table(rows):
    """The rows as one aligned text table: label | max abs err | rel err | tol | status."""
    width = max([len("check")] + [len(r.label) for r in rows])
    lines = [f"{'check':<{width}}  {'max abs err':>11}  {'rel err':>9}  {'tol':>9}  status",
             "-" * (width + 46)]
    for r in rows:
        tol = ("<=" if r.expect == "agree" else ">") + f"{r.tol:.0e}"
        line = f"{r.label:<{width}}  {r.max_abs_err:11.2e}  {r.rel_err:9.2e}  {tol:>9}  {r.status}"
        lines.append(line + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)


# ---- finite differences ------------------------------------------------------------------


def fd_directional(f, theta, directions, eps):
    """[(f(θ + ε u) − f(θ − ε u)) / 2ε for each row u of directions (M, P)].

    f scalar -> (M,); f vector-valued (P,) -> (M, P).
    """
    eps = positive_float("eps", eps)
    return np.array([(np.asarray(f(theta + eps * u)) - np.asarray(f(theta - eps * u))) / (2 * eps)
                     for u in directions])


def directions(num_params, num_directions=None, seed=0):
    """(M, P): the identity (full check) if num_directions is None and P <= FULL_FD_LIMIT,
    otherwise ``num_directions`` (default 10) random unit vectors."""
    if num_directions is None and num_params <= FULL_FD_LIMIT:
        return np.eye(num_params)
    num_params = positive_int("num_params", num_params)
    m = 10 if num_directions is None else positive_int("num_directions", num_directions)
    U = as_rng("seed", seed).standard_normal((m, num_params))     # (M, P)
    return U / np.linalg.norm(U, axis=1, keepdims=True)


def fd_hessian_from_grad(model, theta, x, y, eps=1e-5):
    """Column j = [∇L(θ + ε e_j) − ∇L(θ − ε e_j)] / 2ε: uses backprop only, not the R-pass."""
    grad = lambda t: model._loss_and_grad(t, x, y)[1]                   # noqa: E731
    return fd_directional(grad, theta, np.eye(model.num_params), eps).T  # (P, P)


def fd_hessian_richardson(model, theta, x, y, eps=2e-3):
    """The FD Hessian of the gradient, Richardson-extrapolated twice: D(h) = H + c₂h² + c₄h⁴ + …
    for D = ``fd_hessian_from_grad`` at step h, so with h = ε, ε/2, ε/4

        R₁(h) = [4 D(h/2) − D(h)] / 3 = H + O(h⁴),   R₂ = [16 R₁(ε/2) − R₁(ε)] / 15 = H + O(ε⁶).

    Rounding grows like δ/h (δ ≈ 1e-16·|∇L|), so the larger ε = 2e-3 leaves both errors
    near 1e-12: a check of the dense Hessian to 1e-10 that uses backprop only, not the R-pass.
    Smooth losses only: every step must stay on one side of every ReLU kink.
    """
    D = [fd_hessian_from_grad(model, theta, x, y, eps / 2 ** k) for k in range(3)]   # 3 × (P, P)
    R1 = [(4.0 * D[k + 1] - D[k]) / 3.0 for k in range(2)]
    return (16.0 * R1[1] - R1[0]) / 15.0


def fd_hessian_from_loss(model, theta, x, y, eps=1e-4):
    """H_ij ≈ [L(+ε e_i + ε e_j) − L(+ε e_i − ε e_j) − L(−ε e_i + ε e_j) + L(−ε e_i − ε e_j)] / 4ε².

    Loss values only (no gradient code at all); rounding error grows as δ/ε², hence
    the larger ε and looser tolerance. O(P²) forward passes: tiny nets only.
    """
    P, f = model.num_params, lambda t: model._loss_value(t, x, y)        # noqa: E731
    E, H = eps * np.eye(P), np.empty((P, P))
    for i in range(P):
        for j in range(i, P):
            H[i, j] = H[j, i] = (f(theta + E[i] + E[j]) - f(theta + E[i] - E[j])
                                 - f(theta - E[i] + E[j]) + f(theta - E[i] - E[j])) / (4 * eps * eps)
    return H


def dense_hessian(model, theta, x, y):
    """H (P, P) assembled column by column from P exact HVPs: H e_j."""
    return np.array([model._hvp(theta, x, y, e) for e in np.eye(model.num_params)]).T
