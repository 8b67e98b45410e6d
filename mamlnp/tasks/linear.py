"""Mixed linear regression: the task distribution of Bernacchia (2021).

Dimension legend: T tasks, N points, p inputs (D = p), O = 1 output.

Each task is a linear regression whose weights are drawn around a shared mean w₀:

    w ~ N(w₀, (ν²/p) I_p)          task weights, one draw per task          (p,)
    x ~ N(0, I_p)                  inputs, independent across points        (p,)
    y = xᵀw + ε,  ε ~ N(0, σ²)     label noise, independent across points   scalar

so ‖w − w₀‖² ≈ ν² (task spread; the ν²/p scaling is this project's convention, see
docs/derivations/negative-learning-rates.md) and the noise variance is σ². A task's support and
query points are independent draws from the same task (the same w). Bernacchia's
n_t / n_v / n_r points per task are the ``shots`` / ``query`` of :meth:`sample`.
The model is mamlnp/nn/linear.py; the closed form is mamlnp/meta/closed_form.py.
"""
import numpy as np

from ..validation import as_float64, as_rng, check_memory, nonneg_float, positive_int
from .base import TaskBatch, TaskFamily


class MixedLinearTasks(TaskFamily):
    """w ~ N(w₀, ν²/p I), x ~ N(0, I_p), y = xᵀw + N(0, σ²): Bernacchia (2021).

    p inputs (an int >= 1); ``nu`` ν >= 0 the spread of task weights; ``sigma`` σ >= 0
    the label noise; ``w0`` the mean weights (p,), zeros by default (the paper's Fig. 2).
    """

    output_dim = 1

    def __init__(self, p, nu, sigma, w0=None):
        self.p = self.input_dim = positive_int("p", p)
        self.nu = nonneg_float("nu", nu)
        self.sigma = nonneg_float("sigma", sigma)
        self.w0 = (np.zeros(self.p) if w0 is None else
                   as_float64("w0", w0, 1, (self.p,)).copy())

    def __repr__(self):
        return f"MixedLinearTasks(p={self.p}, nu={self.nu}, sigma={self.sigma})"

    def sample_params(self, rng, num_tasks):
        """Task weights w (T, p) = w₀ + (ν/√p) · N(0, I)."""
        z = rng.standard_normal((num_tasks, self.p))                 # (T, p)
        return self.w0 + (self.nu / np.sqrt(self.p)) * z

    def sample_inputs(self, rng, num_tasks, num_points):
        """x (T, N, p) ~ N(0, I_p)."""
        return rng.standard_normal((num_tasks, num_points, self.p))

    def targets(self, params, x):
        """The noiseless y (T, N, 1) = x w; :meth:`sample` adds the noise."""
        return np.einsum("tnp,tp->tn", x, params)[:, :, None]       # (T, N, 1)

    def sample(self, rng, num_tasks, shots, query):
        """A TaskBatch of ``num_tasks`` fresh tasks, ``shots`` support and ``query`` query
        points each, y = xᵀw + σ ε. ``rng`` is a numpy Generator or an int seed >= 0."""
        return self.sample_with_params(rng, num_tasks, shots, query)[0]

    def sample_with_params(self, rng, num_tasks, shots, query):
        """(TaskBatch, w (T, p)): :meth:`sample` and the weights of its tasks."""
        rng = as_rng("rng", rng)
        T, K, Q = (positive_int(n, v) for n, v in
                   (("num_tasks", num_tasks), ("shots", shots), ("query", query)))
        check_memory("num_tasks", T, 8 * 3 * T * (K + Q) * (self.p + 1),
                     "x and y of every point")
        w = self.sample_params(rng, T)                               # (T, p)
        x = self.sample_inputs(rng, T, K + Q)                        # (T, K+Q, p)
        y = self.targets(w, x) + self.sigma * rng.standard_normal((T, K + Q, 1))
        return TaskBatch(x[:, :K], y[:, :K], x[:, K:], y[:, K:]), w
