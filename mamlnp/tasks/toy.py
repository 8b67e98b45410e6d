"""Two-parameter toy tasks: n realisable regression tasks around a centre (notebooks/01).

Dimension legend: T tasks, N points, K support points, Q query points, D = O = 1,
n the number of distinct toy tasks. The models are in mamlnp/nn/toy.py.
"""
import numpy as np

from ..errors import InputError
from ..validation import as_float64, positive_float, positive_int
from .base import TaskBatch, TaskFamily


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
