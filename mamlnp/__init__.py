"""mamlnp: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, 2017) by hand, in NumPy.

The parts, one folder each (docs/architecture.md): nn/ the model, tasks/ the data,
fast/ the compiled path, meta/ MAML and its variants, check/ finite differences, run/
training, checkpoints, evaluation and the command line. Start with mamlnp.MLP
(nn/mlp.py; mamlnp.ConvNet in nn/convnet.py is the convolutional network), then
meta/maml.py (adapt, meta_gradient), then docs/derivations/. Every
derivative is hand-written and checked against finite differences by
mamlnp.check.gradcheck (``python -m mamlnp gradcheck``).
"""
from .errors import CheckpointError, DivergenceError, InputError, MamlnpError
from .meta.maml import adapt, meta_gradient, meta_loss
from .meta.imaml import imaml_gradient
from .nn.mlp import MLP
from .nn.convnet import ConvNet
from .nn.policy import GaussianPolicy
from .meta.rl import rl_meta_gradient
from .tasks import EvaluationPool, OmniglotTasks, SinusoidTasks, TaskBatch, TaskFamily
from .run.checkpoint import save_checkpoint
from .run.navigation_checkpoint import load_checkpoint   # navigation runs: (policy, θ, config)
from .run.train import meta_train
from .run.evaluate import EvalResult, adaptation_curve  # the module: mamlnp.run.evaluate
from ._version import __version__  # noqa: F401

# Modules that moved into the package's folders (docs/architecture.md): an old import path
# gets an ImportError that names the new one, not a bare "No module named".
MOVED = {"activations": "mamlnp.nn.activations", "checkpoint": "mamlnp.run.checkpoint",
         "cli": "mamlnp.run.cli", "evaluate": "mamlnp.run.evaluate",
         "fdcheck": "mamlnp.check.fdcheck", "gradcheck": "mamlnp.check.gradcheck",
         "layers": "mamlnp.nn.layers", "losses": "mamlnp.nn.losses", "maml": "mamlnp.meta.maml",
         "mlp": "mamlnp.nn.mlp", "optim": "mamlnp.meta.optim", "plots": "mamlnp.run.plots",
         "reproduce": "mamlnp.run.reproduce", "runconfig": "mamlnp.run.runconfig",
         "runguard": "mamlnp.run.runguard", "train": "mamlnp.run.train",
         "trainstep": "mamlnp.run.trainstep", "variants": "mamlnp.meta.variants"}


def _moved(name):
    new = MOVED[name]
    return (f"mamlnp.{name} has moved to {new}: import {new} (or 'from "
            f"{new.rpartition('.')[0]} import {name}'); the map of the package is "
            f"docs/architecture.md")


def __getattr__(name):                      # mamlnp.checkpoint: an AttributeError that says where
    raise AttributeError(_moved(name) if name in MOVED else
                         f"module 'mamlnp' has no attribute {name!r}")


class _MovedFinder:
    """``import mamlnp.maml``, ``from mamlnp import checkpoint``: last on sys.meta_path, so it
    only speaks when no module was found (its error carries no module name, so that
    ``from … import`` reports it instead of a bare "cannot import name")."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        head, _, name = fullname.partition(".")
        if head == "mamlnp" and name in MOVED:
            raise ModuleNotFoundError(_moved(name))
        return None


if not any(isinstance(f, _MovedFinder) for f in __import__("sys").meta_path):
    __import__("sys").meta_path.append(_MovedFinder())

__all__ = [
    "MLP", "ConvNet", "TaskBatch", "TaskFamily", "SinusoidTasks", "OmniglotTasks", "EvaluationPool",
    "adapt", "meta_gradient", "meta_loss", "imaml_gradient",
    "GaussianPolicy", "rl_meta_gradient",
    "MamlnpError", "InputError", "CheckpointError", "DivergenceError",
    "load_checkpoint", "save_checkpoint", "meta_train",
    "adaptation_curve", "EvalResult",
]

