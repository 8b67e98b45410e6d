"""Task families, the task batch, and the fixed evaluation pool.

Dimension legend: T tasks, K support points (shots), Q query points,
D input dim, O output dim.

A *task family* is a distribution over regression tasks. It knows how to draw
task parameters, inputs, and the target function; ``sample`` then draws a
:class:`TaskBatch` of T tasks with K support and Q query points each, support
and query drawn independently from the same task (Finn et al. 2017, sec. 2.2).
"""
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .validation import as_float64, as_rng, choice, nonneg_int, positive_int, real_range


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
        ``query`` query points each. ``rng`` is a numpy Generator or an int seed >= 0."""
        rng = as_rng("rng", rng)
        num_tasks = positive_int("num_tasks", num_tasks)
        shots = positive_int("shots", shots)
        query = positive_int("query", query)
        params = self.sample_params(rng, num_tasks)
        x = self.sample_inputs(rng, num_tasks, shots + query)        # (T, K+Q, D)
        y = self.targets(params, x)                                  # (T, K+Q, O)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


class SinusoidTasks(TaskFamily):
    """y = A · sin(x − φ),  A ~ U[0.1, 5.0],  φ ~ U[0, π],  x ~ U[−5, 5].

    The distribution of Finn et al. (2017), sec. 5.1, and cbfinn/maml's
    ``generate_sinusoid_batch`` (which computes ``amp * sin(x - phase)``).
    ``phase_sign=+1`` gives the other convention, y = A · sin(x + φ).
    """

    def __init__(self, amp_range=(0.1, 5.0), phase_range=(0.0, np.pi),
                 x_range=(-5.0, 5.0), phase_sign=-1):
        amp_range = real_range("amp_range", amp_range)
        phase_range = real_range("phase_range", phase_range)
        x_range = real_range("x_range", x_range)
        if isinstance(phase_sign, (bool, np.bool_)) or phase_sign not in (-1, 1):
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
        for method in ("sample_params", "sample_inputs", "targets"):
            if not callable(getattr(family, method, None)):
                raise InputError(f"family: expected a mamlnp.TaskFamily (e.g. SinusoidTasks()), "
                                 f"got {family!r}")
        shots = _shot_list(shots)
        num_tasks, query = positive_int("num_tasks", num_tasks), positive_int("query", query)
        self.family, self.seed = family, nonneg_int("seed", seed)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
        self.params = family.sample_params(rng, num_tasks)
        self.x_query = family.sample_inputs(rng, num_tasks, query)
        self.y_query = family.targets(self.params, self.x_query)
        self.support = {}
        for k in shots:
            xs = family.sample_inputs(rng, num_tasks, k)
            self.support[k] = (xs, family.targets(self.params, xs))

    @property
    def num_tasks(self):
        return self.params.shape[0]

    def batch(self, shots):
        """The pool as a TaskBatch with ``shots`` support points per task."""
        k = choice("shots", shots, tuple(self.support))
        xs, ys = self.support[k]
        return TaskBatch(xs, ys, self.x_query, self.y_query)


def _shot_list(shots):
    """shots: one positive int or a sequence of them -> a tuple of ints."""
    if isinstance(shots, (numbers.Integral, np.ndarray)) and np.ndim(shots) == 0:
        shots = (shots,)
    try:
        shots = tuple(shots)
    except TypeError:
        raise InputError(f"shots: expected a positive integer or a sequence of them, "
                         f"got {shots!r}") from None
    if not shots:
        raise InputError("shots: expected at least one K, got an empty sequence")
    return tuple(positive_int(f"shots[{i}]", k) for i, k in enumerate(shots))

