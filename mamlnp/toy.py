"""Two-parameter models and tasks: MAML you can draw (notebooks/01).

Dimension legend: N points, T tasks, K support points, Q query points,
P = 2 parameters θ = (a, b), n the number of distinct toy tasks.

Two models, both implementing the *model protocol* of mamlnp.maml
(``num_params``, ``sizes``, ``check_theta``, ``check_xy``, ``_loss_value``,
``_loss_and_grad``, ``_hvp``), so ``mamlnp.meta_gradient`` and
``mamlnp.meta_loss`` run on them unchanged:

    LinearToy   f_θ(x) = a·x + b             (the same function as MLP(sizes=(1, 1)))
    TanhToy     f_θ(x) = a·tanh(b·x)         (nonlinear in b)

With the mean squared error  L(θ) = (1/N) Σ_n r_n²,  r_n = f_θ(x_n) − y_n,  and
J_n = ∂f_θ(x_n)/∂θ (2,), F_n = ∂²f_θ(x_n)/∂θ² (2, 2), every derivative is

    ∇L  = (2/N) Σ_n r_n J_n                                          (2,)
    ∇²L = (2/N) Σ_n ( J_n J_nᵀ  +  r_n F_n )                         (2, 2)
          Gauss-Newton term   residual-curvature term

For LinearToy F_n = 0, so each task's loss is exactly quadratic and the MAML
optimum has a closed form (:func:`maml_optimum_quadratic`). For TanhToy the
Hessian changes with θ, and MAML's initialisation differs from the
joint-training (average-loss) minimiser (notebooks/01).

Finn, Abbeel & Levine (2017), arXiv:1703.03400, Algorithm 2.
"""
import numpy as np

from . import maml
from .errors import InputError
from .tasks import TaskBatch, TaskFamily
from .validation import as_float64, nonneg_int, positive_float, positive_int


class TwoParameterModel:
    """Base class: a scalar model f_θ(x), θ = (a, b), trained with the MSE.

    Subclasses define ``_features(theta, x) -> (f (N,), J (N, 2), F (N, 2, 2))``.
    """

    sizes = (1, 1)          # one input, one output (the protocol's D and O)
    num_params = 2
    param_names = ("a", "b")

    def __repr__(self):
        return f"{type(self).__name__}()"

    # ---- argument checks (model protocol) ----------------------------------------

    def check_theta(self, theta, name="theta"):
        return as_float64(name, theta, 1, (2,))

    def check_xy(self, x, y=None, xname="x", yname="y"):
        x = as_float64(xname, x, 2, (None, 1))
        if y is None:
            return x
        return x, as_float64(yname, y, 2, (x.shape[0], 1))

    # ---- public, checked ---------------------------------------------------------

    def forward(self, theta, x):
        """ŷ = f_θ(x):  x (N, 1) -> ŷ (N, 1)."""
        return self._features(self.check_theta(theta), self.check_xy(x))[0][:, None]

    def loss(self, theta, x, y):
        """L(θ) = (1/N) Σ_n (f_θ(x_n) − y_n)², a float."""
        return self._loss_value(self.check_theta(theta), *self.check_xy(x, y))

    def loss_and_grad(self, theta, x, y):
        """(L, ∇L (2,))."""
        return self._loss_and_grad(self.check_theta(theta), *self.check_xy(x, y))

    def hessian(self, theta, x, y):
        """∇²L (2, 2), exact."""
        return self._hessian(self.check_theta(theta), *self.check_xy(x, y))

    def hvp(self, theta, x, y, v):
        """∇²L · v (2,)."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        return self._hvp(theta, x, y, self.check_theta(v, name="v"))

    # ---- unchecked (model protocol) ----------------------------------------------

    def _loss_value(self, theta, x, y):
        f, _, _ = self._features(theta, x)
        r = f - y[:, 0]                                      # (N,)
        return float(np.mean(r * r))

    def _loss_and_grad(self, theta, x, y):
        f, J, _ = self._features(theta, x)
        r = f - y[:, 0]                                      # (N,)
        return float(np.mean(r * r)), (2.0 / r.size) * (J.T @ r)     # (2,)

    def _hessian(self, theta, x, y):
        f, J, F = self._features(theta, x)
        r = f - y[:, 0]                                      # (N,)
        gauss_newton = J.T @ J                               # (2, 2)
        residual = np.einsum("n,nij->ij", r, F)              # (2, 2)
        return (2.0 / r.size) * (gauss_newton + residual)

    def _hvp(self, theta, x, y, v):
        return self._hessian(theta, x, y) @ v                # (2,)


class LinearToy(TwoParameterModel):
    """f_θ(x) = a·x + b.  J_n = (x_n, 1), F_n = 0: every task loss is quadratic in θ.

    Same function and parameter order as ``mamlnp.MLP(sizes=(1, 1))`` (θ = [W | b]).
    """

    def _features(self, theta, x):
        a, b = theta
        x = x[:, 0]                                          # (N,)
        J = np.stack([x, np.ones_like(x)], axis=1)           # (N, 2)
        return a * x + b, J, np.zeros((x.size, 2, 2))


class TanhToy(TwoParameterModel):
    """f_θ(x) = a·tanh(b·x).  With t = tanh(b x) and s = 1 − t² (= sech²):

        ∂f/∂a = t          ∂f/∂b = a x s
        ∂²f/∂a² = 0        ∂²f/∂a∂b = x s        ∂²f/∂b² = −2 a x² t s
    """

    def _features(self, theta, x):
        a, b = theta
        x = x[:, 0]                                          # (N,)
        t = np.tanh(b * x)                                   # (N,)
        s = 1.0 - t * t                                      # (N,) sech²(b x)
        J = np.stack([t, a * x * s], axis=1)                 # (N, 2)
        F = np.zeros((x.size, 2, 2))
        F[:, 0, 1] = F[:, 1, 0] = x * s
        F[:, 1, 1] = -2.0 * a * x * x * t * s
        return a * t, J, F


# ---- tasks -----------------------------------------------------------------------


def square_corners(centre, half_width):
    """The optima of four tasks A, B, C, D at the corners of a square, (4, 2).

    A = centre + (−h, −h), B = (+h, −h), C = (+h, +h), D = (−h, +h).
    """
    c = as_float64("centre", centre, 1, (2,))
    h = positive_float("half_width", half_width)
    return c + h * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


class ToyTasks(TaskFamily):
    """n realisable regression tasks: task i's data are y = f_{θ_i}(x) for the given model.

    θ_i = ``optima[i]`` is therefore task i's exact minimiser (zero loss). Task i
    draws its inputs from ``x_ranges[i]``; different ranges give the tasks
    different curvatures. Sampling (``sample``) picks tasks uniformly with
    replacement; :meth:`batch` gives every task once on a fixed input grid, which
    makes the meta-objective a deterministic function of θ that can be drawn.
    """

    def __init__(self, model, optima, x_ranges=(-1.0, 1.0), names=None):
        self.model = model
        self.optima = as_float64("optima", optima, 2, (None, 2))
        n = self.optima.shape[0]
        ranges = as_float64("x_ranges", x_ranges)
        ranges = np.broadcast_to(ranges, (n, 2)) if ranges.shape == (2,) else ranges
        if ranges.shape != (n, 2) or np.any(ranges[:, 0] >= ranges[:, 1]):
            raise InputError(f"x_ranges: expected (low, high) with low < high, once or per task "
                             f"({n} tasks), got {np.asarray(x_ranges).tolist()!r}")
        self.x_ranges = np.array(ranges)
        self.names = list(names) if names is not None else [chr(65 + i) for i in range(n)]

    @property
    def num_tasks(self):
        return self.optima.shape[0]

    def sample_params(self, rng, num_tasks):
        """Task indices as a float column (T, 1)."""
        return rng.integers(self.num_tasks, size=(num_tasks, 1)).astype(np.float64)

    def sample_inputs(self, rng, num_tasks, num_points):
        """Unit coordinates u ~ U[0, 1] (T, N, 1); ``sample`` maps them into each task's range."""
        return rng.uniform(size=(num_tasks, num_points, 1))

    def targets(self, params, x):
        """y (T, N, 1) = f_{θ_i}(x) with i = params[:, 0]."""
        idx = params[:, 0].astype(int)
        return np.stack([self.model.forward(self.optima[i], xi) for i, xi in zip(idx, x)])

    def _inputs(self, params, u):
        lo, hi = self.x_ranges[params[:, 0].astype(int)].T   # (T,) each
        return lo[:, None, None] + (hi - lo)[:, None, None] * u          # (T, N, 1)

    def sample(self, rng, num_tasks, shots, query):
        """A TaskBatch of ``num_tasks`` tasks drawn with replacement, x uniform in each range."""
        rng = np.random.default_rng(rng)
        T, K, Q = (positive_int(n, v) for n, v in
                   (("num_tasks", num_tasks), ("shots", shots), ("query", query)))
        params = self.sample_params(rng, T)
        x = self._inputs(params, self.sample_inputs(rng, T, K + Q))       # (T, K+Q, 1)
        y = self.targets(params, x)
        return TaskBatch.make(x[:, :K], y[:, :K], x[:, K:], y[:, K:])

    def batch(self, shots=10, query=10):
        """Every task once, inputs on an even grid over its range: support ``shots``
        points, query ``query`` points (a different grid, offset by half a spacing)."""
        K, Q = positive_int("shots", shots), positive_int("query", query)
        params = np.arange(self.num_tasks, dtype=np.float64)[:, None]    # (n, 1)
        us = np.broadcast_to(np.linspace(0.0, 1.0, K)[None, :, None], (self.num_tasks, K, 1))
        uq = np.broadcast_to(((np.arange(Q) + 0.5) / Q)[None, :, None], (self.num_tasks, Q, 1))
        xs, xq = self._inputs(params, us), self._inputs(params, uq)
        return TaskBatch.make(xs, self.targets(params, xs), xq, self.targets(params, xq))


# ---- the closed-form MAML optimum for quadratic task losses ---------------------------


def task_hessians(model, batch):
    """Dense support and query Hessians per task, each (T, 2, 2), from the model's HVP at θ = 0.

    For LinearToy (or MLP(sizes=(1, 1))) the loss is quadratic, so these are the
    Hessians everywhere.
    """
    P, eye = model.num_params, np.eye(model.num_params)
    theta = np.zeros(P)
    hs, hq = [], []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        hs.append(np.stack([model._hvp(theta, xs, ys, e) for e in eye], axis=1))
        hq.append(np.stack([model._hvp(theta, xq, yq, e) for e in eye], axis=1))
    return np.array(hs), np.array(hq)


def maml_optimum_quadratic(optima, support_hessians, query_hessians, alpha, inner_steps):
    """argmin_θ of the MAML objective for quadratic task losses, in closed form.

    Task i:  L_S,i(θ) = ½ (θ − θ_i)ᵀ A_i (θ − θ_i) + const,  L_Q,i likewise with B_i.
    One inner step: θ − α A_i (θ − θ_i), so θ_k − θ_i = (I − α A_i)(θ_{k−1} − θ_i) and

        θ_s − θ_i = M_i (θ − θ_i),        M_i = (I − α A_i)^s                    (P, P)
        Σ_i L_Q,i(θ_s) = ½ Σ_i (θ − θ_i)ᵀ M_iᵀ B_i M_i (θ − θ_i) + const

    a quadratic in θ, whose gradient vanishes at

        θ* = (Σ_i M_iᵀ B_i M_i)^{-1} Σ_i M_iᵀ B_i M_i θ_i.

    With equal curvatures (A_i = A, B_i = B for all i) the weights are equal and
    θ* is the mean of the θ_i (the centre of the square); inner_steps = 0 gives
    the joint-training minimiser (Σ B_i)^{-1} Σ B_i θ_i.

    optima (n, P), support_hessians (n, P, P) = A_i, query_hessians (n, P, P) = B_i -> θ* (P,).
    """
    optima = as_float64("optima", optima, 2)
    n, P = optima.shape
    A = as_float64("support_hessians", support_hessians, 3, (n, P, P))
    B = as_float64("query_hessians", query_hessians, 3, (n, P, P))
    alpha = positive_float("alpha", alpha)
    s = nonneg_int("inner_steps", inner_steps)
    lhs, rhs = np.zeros((P, P)), np.zeros(P)
    for i in range(n):
        M = np.linalg.matrix_power(np.eye(P) - alpha * A[i], s)         # (P, P)
        W = M.T @ B[i] @ M                                               # (P, P)
        lhs += W
        rhs += W @ optima[i]
    return np.linalg.solve(lhs, rhs)


# ---- meta-training paths and loss surfaces (for the figures) ---------------------------


def meta_train_path(model, theta0, batch, alpha, inner_steps, beta, iterations,
                    first_order=False):
    """Full-batch gradient descent on the meta-objective: θ ← θ − β ∇M(θ).

    Returns (path (iterations+1, P), meta-losses (iterations+1,)); the last loss
    is at the final θ. inner_steps = 0 is joint training on the query sets.
    """
    theta = model.check_theta(theta0, name="theta0").copy()
    beta = positive_float("beta", beta)
    path, losses = [theta], []
    for _ in range(nonneg_int("iterations", iterations)):
        loss, grad = maml.meta_gradient(model, theta, batch, alpha, inner_steps,
                                        first_order=first_order, backend="numpy")
        theta = theta - beta * grad                                      # (P,)
        path.append(theta)
        losses.append(loss)
    losses.append(maml.meta_loss(model, theta, batch, alpha, inner_steps))
    return np.array(path), np.array(losses)


def adapted_points(model, theta, batch, alpha, inner_steps):
    """θ'_t = adapt(θ) on each task's support set, (T, P): the tips of the adaptation arrows."""
    return np.array([maml.adapt(model, theta, batch.x_support[t], batch.y_support[t], alpha,
                                inner_steps, backend="numpy") for t in range(batch.num_tasks)])


def loss_surface(model, batch, alpha, inner_steps, a_grid, b_grid, task=None):
    """The meta-objective M(a, b) on a grid, (len(b_grid), len(a_grid)) for ``contour``.

    task=None averages over the batch; task=t gives that task's query loss
    after adaptation. inner_steps = 0 gives the plain (un-adapted) losses.
    """
    if task is not None:
        t = slice(task, task + 1)
        batch = TaskBatch.make(batch.x_support[t], batch.y_support[t],
                               batch.x_query[t], batch.y_query[t])
    Z = np.empty((len(b_grid), len(a_grid)))
    for j, b in enumerate(b_grid):
        for i, a in enumerate(a_grid):
            Z[j, i] = maml.meta_loss(model, np.array([a, b]), batch, alpha, inner_steps)
    return Z
