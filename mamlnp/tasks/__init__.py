"""The data part: the task batch, task families (sinusoid, Omniglot episodes, mixed linear
regression, the two-parameter toys) and the fixed evaluation pool.

What may import what: tasks/ imports only mamlnp.errors and mamlnp.validation.
"""
from .base import TaskBatch, TaskFamily
from .linear import MixedLinearTasks
from .omniglot import OmniglotTasks
from .pool import EvaluationPool
from .sinusoid import SinusoidTasks

__all__ = ["TaskBatch", "TaskFamily", "EvaluationPool", "SinusoidTasks", "OmniglotTasks",
           "MixedLinearTasks"]
