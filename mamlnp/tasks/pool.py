"""The fixed, seeded evaluation pool of held-out tasks.

Dimension legend: T tasks, K support points (shots), Q query points, D inputs, O outputs.
"""
import numbers

import numpy as np

from ..errors import InputError
from ..validation import check_memory, choice, nonneg_int, positive_int
from .base import TaskBatch


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
        dims = getattr(family, "input_dim", 1) + getattr(family, "output_dim", 1)
        check_memory("num_tasks", num_tasks, 8 * num_tasks * (query + sum(shots)) * dims,
                     "the pool's points")
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
