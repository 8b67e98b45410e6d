"""The data part: the task batch, task families (sinusoid, Omniglot episodes, the two-parameter toys) and the
fixed evaluation pool.

What may import what: tasks/ imports only mamlnp.errors and mamlnp.validation.
"""
from .base import TaskBatch, TaskFamily
from .omniglot import OmniglotTasks
from .pool import EvaluationPool
from .sinusoid import SinusoidTasks

__all__ = ["TaskBatch", "TaskFamily", "EvaluationPool", "SinusoidTasks", "OmniglotTasks"]
