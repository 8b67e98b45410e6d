"""The task batch and the task-family interface.

Dimension legend: T tasks, K support points (shots), Q query points,
D input dim, O output dim.

A *task family* is a distribution over tasks. It knows how to draw task
parameters, inputs, and the target function; ``sample`` then draws a
:class:`TaskBatch` of T tasks with K support and Q query points each, support
and query drawn independently from the same task (Finn et al. 2017, sec. 2.2).
"""
import operator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validation import as_float64, as_rng, check_memory, positive_int


@dataclass(frozen=True)
class TaskBatch:
    """T tasks: support (x_support, y_support) and query (x_query, y_query).

    x_support (T, K, D), y_support (T, K, O), x_query (T, Q, D), y_query (T, Q, O),
    all float64, finite, C-contiguous, non-empty (T, K, Q >= 1). The constructor
    validates and converts (integer/float32 arrays become float64; see
    mamlnp/validation.py); :meth:`make` is the same thing under its older name.
    """
    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray

    def __post_init__(self):
        """Validate shapes and values; store float64 C-contiguous arrays."""
        xs = as_float64("x_support", self.x_support, 3, ("T", "K", "D"))
        T, K, D = xs.shape
        ys = as_float64("y_support", self.y_support, 3, (T, K, "O"))
        O = ys.shape[2]
        xq = as_float64("x_query", self.x_query, 3, (T, "Q", D))
        yq = as_float64("y_query", self.y_query, 3, (T, xq.shape[1], O))
        for name, arr in (("x_support", xs), ("y_support", ys), ("x_query", xq), ("y_query", yq)):
            object.__setattr__(self, name, arr)                 # frozen dataclass

    @classmethod
    def make(cls, x_support, y_support, x_query, y_query):
        """Alias of the constructor (which validates): a TaskBatch of float64 arrays."""
        return cls(x_support, y_support, x_query, y_query)

    @property
    def num_tasks(self):
        return self.x_support.shape[0]

    def task(self, t):
        """(x_support, y_support, x_query, y_query) of task t (an int in [0, T)), each 2-d."""
        T = self.x_support.shape[0]
        try:
            ok = not isinstance(t, (bool, np.bool_)) and 0 <= operator.index(t) < T
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"t: expected a task index in [0, {T}), got {t!r}")
        return self.x_support[t], self.y_support[t], self.x_query[t], self.y_query[t]


class TaskFamily:
    """Interface of a task distribution. Subclasses define the three methods below."""

    input_dim = 1
    output_dim = 1

    def sample_params(self, rng, num_tasks):
        """Task parameters, an array (T, n_params)."""
        raise NotImplementedError

    def sample_inputs(self, rng, num_tasks, num_points):
        """Inputs x (T, N, D)."""
        raise NotImplementedError

    def targets(self, params, x):
        """y (T, N, O) for params (T, n_params) and x (T, N, D)."""
        raise NotImplementedError

    def sample(self, rng, num_tasks, shots, query):
        """A TaskBatch of ``num_tasks`` fresh tasks with ``shots`` support and
        ``query`` query points each. ``rng`` is a numpy Generator or an int seed >= 0."""
        rng = as_rng("rng", rng)
        num_tasks = positive_int("num_tasks", num_tasks)
        shots = positive_int("shots", shots)
        query = positive_int("query", query)
        check_memory("num_tasks", num_tasks, 8 * 3 * num_tasks * (shots + query) *
                     (self.input_dim + self.output_dim), "x and y of every point")
        params = self.sample_params(rng, num_tasks)
        x = self.sample_inputs(rng, num_tasks, shots + query)        # (T, K+Q, D)
        y = self.targets(params, x)                                  # (T, K+Q, O)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
