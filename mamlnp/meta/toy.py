"""MAML on the two-parameter toys: the closed-form optimum, meta-training paths and loss
surfaces drawn in notebooks/01.

Dimension legend: T tasks, P = 2 parameters θ = (a, b), n the number of distinct toy tasks.
The models are in mamlnp/nn/toy.py, the tasks in mamlnp/tasks/toy.py.
"""
import numpy as np

from ..tasks.base import TaskBatch
from ..validation import as_float64, nonneg_int, positive_float
from . import maml


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
