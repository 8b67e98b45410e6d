"""mamlnp: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, 2017) by hand, in NumPy.

Start with mamlnp.MLP (mlp.py), then maml.py (adapt, meta_gradient), then
docs/derivations/. Every derivative is hand-written and checked against finite
differences by mamlnp.gradcheck (``python -m mamlnp gradcheck``).
"""
from .errors import CheckpointError, DivergenceError, InputError, MamlnpError
from .maml import adapt, meta_gradient, meta_loss
from .mlp import MLP
from .tasks import EvaluationPool, SinusoidTasks, TaskBatch, TaskFamily
from .checkpoint import load_checkpoint, save_checkpoint
from .train import meta_train
from .evaluate import EvalResult, adaptation_curve  # the module: mamlnp.evaluate.evaluate(...)

__version__ = "0.1.0"

__all__ = [
    "MLP", "TaskBatch", "TaskFamily", "SinusoidTasks", "EvaluationPool",
    "adapt", "meta_gradient", "meta_loss",
    "MamlnpError", "InputError", "CheckpointError", "DivergenceError",
    "load_checkpoint", "save_checkpoint", "meta_train",
    "adaptation_curve", "EvalResult",
]

