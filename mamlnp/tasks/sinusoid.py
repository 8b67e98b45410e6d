"""The sinusoid regression tasks of Finn et al. (2017), sec. 5.1.

Dimension legend: T tasks, N points, D = 1 input, O = 1 output.
"""
import numpy as np

from ..errors import InputError
from ..validation import real_range
from .base import TaskFamily


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
        if isinstance(phase_sign, (bool, np.bool_)) or not isinstance(
                phase_sign, (int, np.integer)) or phase_sign not in (-1, 1):
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
