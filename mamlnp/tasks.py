"""Task families, the task batch, and the fixed evaluation pool.

Dimension legend: T tasks, K support points (shots), Q query points,
D input dim, O output dim.

A *task family* is a distribution over regression tasks. It knows how to draw
task parameters, inputs, and the target function; ``sample`` then draws a
:class:`TaskBatch` of T tasks with K support and Q query points each, support
and query drawn independently from the same task (Finn et al. 2017, sec. 2.2).
"""
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .validation import as_float64, positive_int


@dataclass(frozen=True)
class TaskBatch:
    """T tasks: support (x_support, y_support) and query (x_query, y_query).

    x_support (T, K, D), y_support (T, K, O), x_query (T, Q, D), y_query (T, Q, O),
    all float64, finite, C-contiguous. Construct through :meth:`make` to validate.
    """
    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray

    @classmethod
    def make(cls, x_support, y_support, x_query, y_query):
        """Validate shapes and values; returns a TaskBatch of float64 arrays."""
        xs = as_float64("x_support", x_support, 3)
        T, K, D = xs.shape
        ys = as_float64("y_support", y_support, 3, (T, K, None))
        O = ys.shape[2]
        xq = as_float64("x_query", x_query, 3, (T, None, D))
        yq = as_float64("y_query", y_query, 3, (T, xq.shape[1], O))
        return cls(xs, ys, xq, yq)

    @property
    def num_tasks(self):
        return self.x_support.shape[0]

    def task(self, t):
        """(x_support, y_support, x_query, y_query) of task t, each 2-d."""
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
        ``query`` query points each. ``rng`` is a numpy Generator or an int seed."""
        rng = np.random.default_rng(rng)
        num_tasks = positive_int("num_tasks", num_tasks)
        shots = positive_int("shots", shots)
        query = positive_int("query", query)
        params = self.sample_params(rng, num_tasks)
        x = self.sample_inputs(rng, num_tasks, shots + query)        # (T, K+Q, D)
        y = self.targets(params, x)                                  # (T, K+Q, O)
        return TaskBatch.make(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


class SinusoidTasks(TaskFamily):
    """y = A · sin(x − φ),  A ~ U[0.1, 5.0],  φ ~ U[0, π],  x ~ U[−5, 5].

    The distribution of Finn et al. (2017), sec. 5.1, and cbfinn/maml's
    ``generate_sinusoid_batch`` (which computes ``amp * sin(x - phase)``).
    ``phase_sign=+1`` gives the other convention, y = A · sin(x + φ).
    """

    def __init__(self, amp_range=(0.1, 5.0), phase_range=(0.0, np.pi),
                 x_range=(-5.0, 5.0), phase_sign=-1):
        for name, (lo, hi) in (("amp_range", amp_range), ("phase_range", phase_range),
                               ("x_range", x_range)):
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise InputError(f"{name}: expected finite (low, high) with low <= high, "
                                 f"got {(lo, hi)!r}")
        if phase_sign not in (-1, 1):
            raise InputError(f"phase_sign: expected -1 (sin(x - φ)) or +1 (sin(x + φ)), "
                             f"got {phase_sign!r}")
        self.amp_range, self.phase_range, self.x_range = amp_range, phase_range, x_range
        self.phase_sign = phase_sign

    def sample_params(self, rng, num_tasks):
        amp = rng.uniform(*self.amp_range, size=num_tasks)
        phase = rng.uniform(*self.phase_range, size=num_tasks)
        return np.stack([amp, phase], axis=1)                       # (T, 2)

    def sample_inputs(self, rng, num_tasks, num_points):
        return rng.uniform(*self.x_range, size=(num_tasks, num_points, 1))

    def targets(self, params, x):
        amp, phase = params[:, 0, None, None], params[:, 1, None, None]
        return amp * np.sin(x + self.phase_sign * phase)             # (T, N, 1)


class EvaluationPool:
    """A fixed, seeded set of held-out tasks, as in cbfinn/maml's 600 test tasks.

    For every task the pool fixes its parameters and, for each requested K, a
    support set of K points, plus one shared query set of ``query`` points.
    The pool's seed is separate from training seeds, so training never sees it.
    """

    def __init__(self, family, num_tasks=600, shots=(5, 10, 20), query=100, seed=2017):
        self.family, self.seed = family, seed
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
        self.params = family.sample_params(rng, positive_int("num_tasks", num_tasks))
        self.x_query = family.sample_inputs(rng, num_tasks, positive_int("query", query))
        self.y_query = family.targets(self.params, self.x_query)
        self.support = {}
        for k in shots:
            k = positive_int("shots", k)
            xs = family.sample_inputs(rng, num_tasks, k)
            self.support[k] = (xs, family.targets(self.params, xs))

    @property
    def num_tasks(self):
        return self.params.shape[0]

    def batch(self, shots):
        """The pool as a TaskBatch with ``shots`` support points per task."""
        if shots not in self.support:
            raise InputError(f"shots: this pool holds K in {sorted(self.support)}, got {shots!r}")
        xs, ys = self.support[shots]
        return TaskBatch.make(xs, ys, self.x_query, self.y_query)

