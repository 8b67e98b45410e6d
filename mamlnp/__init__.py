"""mamlnp: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, 2017) by hand, in NumPy.

The parts, one folder each (docs/architecture.md): nn/ the model, tasks/ the data,
fast/ the compiled path, meta/ MAML and its variants, check/ finite differences, run/
training, checkpoints, evaluation and the command line. Start with mamlnp.MLP
(nn/mlp.py), then meta/maml.py (adapt, meta_gradient), then docs/derivations/. Every
derivative is hand-written and checked against finite differences by
mamlnp.check.gradcheck (``python -m mamlnp gradcheck``).
"""
from .errors import CheckpointError, DivergenceError, InputError, MamlnpError
from .meta.maml import adapt, meta_gradient, meta_loss
from .meta.imaml import imaml_gradient
from .nn.mlp import MLP
from .nn.policy import GaussianPolicy
from .meta.rl import rl_meta_gradient
from .tasks import EvaluationPool, OmniglotTasks, SinusoidTasks, TaskBatch, TaskFamily
from .run.checkpoint import save_checkpoint
from .run.navigation_checkpoint import load_checkpoint   # navigation runs: (policy, θ, config)
from .run.train import meta_train
from .run.evaluate import EvalResult, adaptation_curve  # the module: mamlnp.run.evaluate
from ._version import __version__  # noqa: F401

__all__ = [
    "MLP", "TaskBatch", "TaskFamily", "SinusoidTasks", "OmniglotTasks", "EvaluationPool",
    "adapt", "meta_gradient", "meta_loss", "imaml_gradient",
    "GaussianPolicy", "rl_meta_gradient",
    "MamlnpError", "InputError", "CheckpointError", "DivergenceError",
    "load_checkpoint", "save_checkpoint", "meta_train",
    "adaptation_curve", "EvalResult",
]

