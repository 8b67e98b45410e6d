"""MAML on mixed linear regression in closed form: the expected test loss as a function of
the inner step α_t used in training and α_r used at test (Bernacchia 2021).

Dimension legend: p parameters (= inputs), m training tasks, n_t support (training) and
n_v query (validation) points per training task, n_r support points of a test task,
k = m·n_v validation points in all, R runs, G grid points.

Bernacchia, "Meta-learning with negative learning rates", ICLR 2021, arXiv:2102.00940,
its overparameterized case p > k. Tasks: mamlnp/tasks/linear.py; model f_ω(x) = xᵀω
with L = (1/2n)‖Xω − y‖² (mamlnp/nn/linear.py). One inner step of size α on n points,
ω' = (I − αH)ω + (α/n)Xᵀy with H = XᵀX/n. MAML's meta-loss on the m training tasks,

    M(ω) = (1/m) Σ_i (1/2n_v) ‖A_i ω − b_i‖²,   A_i = X_v,i (I − α_t H_t,i)  (n_v, p),

is quadratic; for p > k it has a (p − k)-dimensional set of exact minimisers, and gradient
descent from ω₀ converges to the one nearest ω₀:  ω* = ω₀ + A⁺(b − A ω₀).  Then
(docs/derivations/negative-learning-rates.md, where each line is derived):

    c(α, n)    = (1 − α)² + α² (p + 1)/n          E[(I − αH)²] = c·I, exact       (1)
    L_test(ω)  = ½ [σ² (1 + α_r² p/n_r) + c(α_r, n_r) (ν² + ‖ω − w₀‖²)], exact   (2)
    E‖ω* − w₀‖² ≈ (1 − k/p) ‖w₀ − ω₀‖² + ν² (k/p) (1 + (k − n_v)/(p − k − 1))
                  + σ² k (1 + α_t² p/n_t) / (c(α_t, n_t) (p − k − 1))              (3)

(1) and (2) are exact at every size. (3) is exact at α_t = 0 (A's rows are then standard
Gaussian, AAᵀ a Wishart matrix) and for its first term at every α_t; at α_t ≠ 0 the rows
of A_i have the covariance (I − α_t H_t,i)², which (3) replaces by its mean c·I, and the
noise covariance S by its mean as if independent of AAᵀ (leading order in k/p). The exact
value is an expectation over the training inputs only, which
:func:`trained_error_exact` averages by sampling (labels, weights and the test task
integrated analytically). The α_t-dependence sits in the last term of (3) alone, and its
minimum is at the negative root of 1 − α(1 + 1/n_t) − α² p/n_t = 0
(:func:`optimal_training_step`).
"""
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validation import (as_float64, as_rng, check_memory, nonneg_float, nonneg_int,
                          positive_int)
from ..nn.linear import LinearRegression
from ..tasks.linear import MixedLinearTasks
from .imaml import conjugate_gradient
from .maml import adapt_curve_numpy, meta_gradient


@dataclass(frozen=True)
class Setting:
    """The sizes and scales of Bernacchia's mixed linear regression.

    p parameters; m training tasks of n_t support and n_v validation points; test tasks
    adapt on n_r points; σ label noise; ν task spread; ``delta0`` = ‖w₀ − ω₀‖² (the
    distance from the tasks' mean to the outer loop's start). Requires p > m·n_v + 1
    (overparameterized, and the inverse moment of (3) finite).
    """
    p: int
    n_t: int
    n_v: int
    n_r: int
    m: int
    sigma: float
    nu: float
    delta0: float = 0.0

    def __post_init__(self):
        for name in ("p", "n_t", "n_v", "n_r", "m"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        for name in ("sigma", "nu", "delta0"):
            object.__setattr__(self, name, nonneg_float(name, getattr(self, name)))
        if not self.p > self.k + 1:
            raise InputError(f"p: expected p > m*n_v + 1 = {self.k + 1} (the overparameterized "
                             f"case of the closed form), got p={self.p}")

    @property
    def k(self):
        """k = m·n_v, the number of validation points MAML fits exactly."""
        return self.m * self.n_v

    @classmethod
    def figure2(cls):
        """The paper's Fig. 2: n_t = 30, n_v = 2, n_r = 20, m = 3, p = 60, σ = 1, ν = 0.5,
        ω₀ = w₀ = 0 (so delta0 = 0)."""
        return cls(p=60, n_t=30, n_v=2, n_r=20, m=3, sigma=1.0, nu=0.5)


# ---- the closed form ----------------------------------------------------------------


def check_steps(name, value, scalar=False):
    """Step sizes α (a scalar, or an array unless ``scalar``; any sign, finite) as float64,
    else InputError naming ``name``."""
    return as_float64(name, value, 0 if scalar else None)


def check_setting(s):
    if not isinstance(s, Setting):
        raise InputError(f"s: expected a mamlnp.meta.closed_form.Setting, got {type(s).__name__}")
    return s


def adaptation_factor(alpha, n, p):
    """(1): c(α, n) = (1 − α)² + α²(p + 1)/n, with E[(I − αH)²] = c·I for H = XᵀX/n and
    X (n, p) standard normal (E H = I, E H² = (1 + (p + 1)/n) I). α: scalar or array."""
    alpha = check_steps("alpha", alpha)
    return (1.0 - alpha) ** 2 + alpha ** 2 * (p + 1) / n


def test_loss_of_init(dist2, alpha_r, s):
    """(2): the expected test loss of an initialisation ω at squared distance ``dist2`` =
    ‖ω − w₀‖² from the tasks' mean, after one step α_r on n_r points of a new task
    (expectation over the task, its points, its noise and the query point; exact)."""
    s, alpha_r = check_setting(s), check_steps("alpha_r", alpha_r)
    dist2 = as_float64("dist2", dist2)
    c_r = adaptation_factor(alpha_r, s.n_r, s.p)
    noise = s.sigma ** 2 * (1.0 + alpha_r ** 2 * s.p / s.n_r)
    return 0.5 * (noise + c_r * (s.nu ** 2 + dist2))


def trained_error(alpha_t, s):
    """(3): E‖ω* − w₀‖² of MAML's trained initialisation (exact at α_t = 0, leading order
    in k/p elsewhere): the start's offset, the task spread and the label noise that the
    k validation points pass on to ω*."""
    s, alpha_t = check_setting(s), check_steps("alpha_t", alpha_t)
    k, p, dof = s.k, s.p, s.p - s.k - 1                              # p − k − 1 > 0
    signal = adaptation_factor(alpha_t, s.n_t, p)                    # c(α_t, n_t)
    noise = 1.0 + alpha_t ** 2 * p / s.n_t                           # E S = (1 + α²p/n_t) I
    return ((1.0 - k / p) * s.delta0 + s.nu ** 2 * (k / p) * (1.0 + (k - s.n_v) / dof)
            + s.sigma ** 2 * k * noise / (signal * dof))


def expected_test_loss(alpha_t, alpha_r, s):
    """The closed form: (2) at (3). α_t, α_r scalars or arrays (broadcast together)."""
    return test_loss_of_init(trained_error(alpha_t, s), alpha_r, s)


def optimal_training_step(s):
    """The α_t minimising (3) (for σ > 0): the negative root of 1 − α(1 + 1/n_t) − α²p/n_t,
    where d/dα of (1 + α²p/n_t)/c(α, n_t) changes sign from − to +."""
    a, b = s.p / s.n_t, 1.0 + 1.0 / s.n_t
    return float((-b - np.sqrt(b * b + 4.0 * a)) / (2.0 * a))


def optimal_test_step(alpha_t, s):
    """The α_r minimising (2) at the trained error (3): α_r = E/(E(1 + (p+1)/n_r) + σ²p/n_r),
    E = ν² + E‖ω* − w₀‖² (setting d/dα_r of (2) to zero)."""
    e = s.nu ** 2 + trained_error(alpha_t, s)
    return float(e / (e * (1.0 + (s.p + 1) / s.n_r) + s.sigma ** 2 * s.p / s.n_r))


# ---- the exact expectation, by sampling the training inputs only ----------------------


def trained_error_exact(alpha_t, s, rng, draws=2000, chunk=250):
    """(mean, standard error) of the exact E‖ω* − w₀‖² at one α_t.

    Given the training inputs, ω* − w₀ = −(I − P)(w₀ − ω₀) + A⁺(D δ + e), with P = A⁺A, the
    task offsets δ_i ~ N(0, ν²/p I) and the noise e_i = z_v − (α_t/n_t) X_v X_tᵀ z_t, so
    E[‖ω* − w₀‖² | X] = (w₀ − ω₀)ᵀ(I − P)(w₀ − ω₀) + tr(G⁻¹C), whose first term averages to
    (1 − k/p)‖w₀ − ω₀‖² exactly (E P = (k/p) I by rotation invariance); G = AAᵀ (k, k),
    C = blockdiag_i((ν²/p) A_iA_iᵀ + σ² S_i),
    S_i = I + (α_t/n_t)² (X_v X_tᵀ)(X_v X_tᵀ)ᵀ. tr(G⁻¹C) is averaged over ``draws`` draws of
    the inputs (in chunks of ``chunk``)."""
    s, alpha_t = check_setting(s), float(check_steps("alpha_t", alpha_t, scalar=True))
    rng = as_rng("rng", rng)
    draws, chunk = positive_int("draws", draws), positive_int("chunk", chunk)
    check_memory("draws", draws, 16 * draws, "a trace per draw")
    values, done = [], 0
    while done < draws:
        r = min(chunk, draws - done)
        values.append(_trace_term(alpha_t, s, rng, r))
        done += r
    v = np.concatenate(values)                                          # (draws,)
    mean = (1.0 - s.k / s.p) * s.delta0 + float(v.mean())
    return mean, float(v.std(ddof=1) / np.sqrt(v.size))


def _trace_term(alpha_t, s, rng, r):
    """tr(G⁻¹C) for r independent draws of the m tasks' inputs, (r,)."""
    xt = rng.standard_normal((r, s.m, s.n_t, s.p))                     # (r, m, n_t, p)
    xv = rng.standard_normal((r, s.m, s.n_v, s.p))                     # (r, m, n_v, p)
    vt = xv @ xt.transpose(0, 1, 3, 2)                                  # X_v X_tᵀ (r, m, n_v, n_t)
    A = xv - (alpha_t / s.n_t) * (vt @ xt)                              # X_v (I − α H_t)
    A = A.reshape(r, s.k, s.p)                                          # (r, k, p)
    G = A @ A.transpose(0, 2, 1)                                        # (r, k, k)
    C = np.zeros_like(G)
    for i in range(s.m):
        sl = slice(i * s.n_v, (i + 1) * s.n_v)
        S = np.eye(s.n_v) + (alpha_t / s.n_t) ** 2 * vt[:, i] @ vt[:, i].transpose(0, 2, 1)
        C[:, sl, sl] = s.nu ** 2 / s.p * G[:, sl, sl] + s.sigma ** 2 * S
    return np.trace(np.linalg.solve(G, C), axis1=1, axis2=2)           # (r,)


# ---- MAML trained and tested on sampled tasks --------------------------------------------


def train_maml(model, batch, alpha_t, omega0, cg_steps=None, cg_tol=1e-12):
    """ω*: MAML's meta-loss on ``batch`` (one inner step α_t, any sign) minimised from ω₀.

    The meta-loss is quadratic, M(ω₀ + d) = M(ω₀) + gᵀd + ½ dᵀ𝐇 d, so its minimiser nearest
    ω₀ solves 𝐇 d = −g, 𝐇 d = ∇M(ω₀ + d) − ∇M(ω₀) (two exact meta-gradients of
    mamlnp.meta_gradient). Conjugate gradient from d = 0 stays in the range of 𝐇 and reaches
    that solution in at most rank 𝐇 ≤ k steps: the point gradient descent from ω₀ converges
    to. α_t goes in as a (p,) vector (Meta-SGD's form), which may be zero or negative."""
    alpha = np.full(model.num_params, float(check_steps("alpha_t", alpha_t, scalar=True)))  # (p,)
    grad = lambda w: meta_gradient(model, w, batch, alpha, 1, backend="numpy")[1]  # noqa: E731
    g0 = grad(omega0)                                                   # ∇M(ω₀) (p,)
    steps = cg_steps or 4 * batch.num_tasks * batch.x_query.shape[1] + 4
    d, *_ = conjugate_gradient(lambda v: grad(omega0 + v) - g0, -g0, steps, cg_tol)
    return omega0 + d


def run_test_loss(model, family, s, alpha_t, alpha_r, rng, eval_tasks=100, eval_points=50):
    """One run: MAML trained on m fresh tasks (n_t support, n_v validation points) from
    ω₀ = 0, then adapted with one step α_r on n_r points of each of ``eval_tasks`` new tasks
    and scored on ``eval_points`` more points of each: the mean test loss, a float."""
    train = family.sample(rng, s.m, s.n_t, s.n_v)
    omega = train_maml(model, train, alpha_t, np.zeros(s.p))
    test = family.sample(rng, eval_tasks, s.n_r, eval_points)
    curve = adapt_curve_numpy(model, omega, test, np.full(s.p, float(alpha_r)), 1)  # (T, 2)
    return float(curve[:, 1].mean())


def measure(s, alpha_t, alpha_r, runs, seed, eval_tasks=100, eval_points=50):
    """Measured test losses (G, R): run j at every grid point draws from the seed
    [seed, j] (the same tasks across the grid: common random numbers). α_t, α_r: (G,)
    arrays or scalars, broadcast together. ``summary`` turns rows into mean ± 95 % CI."""
    s, seed, runs = check_setting(s), nonneg_int("seed", seed), positive_int("runs", runs)
    if s.delta0:
        raise InputError("s: measure() draws tasks around w₀ = ω₀ = 0; expected delta0 = 0, "
                         f"got {s.delta0}")
    at = np.atleast_1d(check_steps("alpha_t", alpha_t))
    ar = np.atleast_1d(check_steps("alpha_r", alpha_r))
    if at.ndim > 1 or ar.ndim > 1 or (at.size != ar.size and 1 not in (at.size, ar.size)):
        raise InputError(f"alpha_t, alpha_r: expected scalars or 1-d grids of one length, "
                         f"got shapes {at.shape} and {ar.shape}")
    at, ar = np.broadcast_arrays(at, ar)
    model, family = LinearRegression(s.p), MixedLinearTasks(s.p, s.nu, s.sigma)
    check_memory("runs", runs, 8 * at.size * runs, "a test loss per run and grid point")
    out = np.empty((at.size, runs))
    for g in range(at.size):
        for j in range(runs):
            rng = np.random.default_rng([seed, j])
            out[g, j] = run_test_loss(model, family, s, at[g], ar[g], rng, eval_tasks,
                                      eval_points)
    return out


def summary(losses):
    """(mean (G,), half-width of the 95 % CI (G,)) of measured losses (G, R): 1.96·sd/√R."""
    losses = np.atleast_2d(losses)
    half = 1.96 * losses.std(axis=1, ddof=1) / np.sqrt(losses.shape[1])
    return losses.mean(axis=1), half
