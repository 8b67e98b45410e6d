"""The training config: defaults (the paper's sinusoid protocol), checks, and resumption.

A config is a plain JSON-able dict; ``make_config`` completes and validates one.
On ``--resume`` the run's saved config is authoritative: only the keys in
RESUME_MAY_CHANGE may differ, anything else explicitly requested must match.
"""
import numpy as np

from ..meta import maml as M
from ..errors import CheckpointError, InputError
from ..nn.mlp import MLP
from ..meta.optim import OPTIMIZERS
from ..tasks.sinusoid import SinusoidTasks
from ..validation import (boolean, check_memory, choice, nonneg_int, positive_float,
                          positive_int, step_count)
from ..meta.variants import METHODS

TASKS = {"sinusoid": SinusoidTasks}
DEFAULTS = {
    "task": "sinusoid",        # the task family (TASKS)
    "method": "maml",          # maml | fomaml | reptile | metasgd | pretrain (mamlnp.meta.variants)
    "hidden": [40, 40],        # hidden widths H: the network is 1-H_1-…-1
    "activation": "relu",      # relu | tanh | softplus
    "alpha": 0.01,             # α, inner SGD step (Meta-SGD: initial value of every α_i)
    "beta": 1e-3,              # β, outer (meta) step of the optimizer
    "inner_steps": 1,          # s, inner SGD steps per task
    "shots": 10,               # K support points per task
    "query": 10,               # Q query points per task
    "meta_batch": 25,          # T tasks per meta-iteration
    "iterations": 70000,       # meta-iterations in all
    "seed": 0,                 # seeds the run's only RNG (θ's initialisation, then tasks)
    "backend": None,           # numpy | numba; None: mamlnp.meta.maml.DEFAULT_BACKEND
    "optimizer": "adam",       # outer optimizer: adam | sgd (mamlnp.meta.optim)
    "init": "uniform",         # θ initialisation scheme (MLP.init); see docs/results.md
    "checkpoint_every": 1000,  # iterations between checkpoints (and one at the end)
    "eval_every": 500,         # iterations between history rows (mean meta-loss, val MSE)
    "val_tasks": 100,          # the fixed validation tasks: how many,
    "val_query": 100,          # their query points,
    "val_seed": 1234,          # and their seed (the 600-task evaluation pool uses 2017)
}
# config keys a resumed run may change without breaking bit-exact continuation
RESUME_MAY_CHANGE = ("iterations", "backend", "checkpoint_every", "eval_every")


# ---- the config ---------------------------------------------------------------------


def make_config(config=None, **kwargs):
    """A validated, complete config from DEFAULTS, a config dict and keyword overrides.

    The result has the keys of DEFAULTS except "hidden"/"activation", which become
    "model" = {"sizes", "activation", "loss"}, plus "first_order" (True for fomaml and
    reptile) and "iteration" (0). A run's saved config is accepted as input."""
    if config is not None and not isinstance(config, dict):
        raise InputError(f"config: expected a dict of config keys, got {type(config).__name__}")
    given = {**(config or {}), **{k: v for k, v in kwargs.items() if v is not None}}
    given.pop("iteration", None), given.pop("learned_alpha", None), given.pop("metadata", None)
    model = given.pop("model", None)
    if model is not None:
        model = _model_of("config.model", model, given.get("task", DEFAULTS["task"]))
        given.setdefault("hidden", list(model.sizes[1:-1]))
        given.setdefault("activation", model.activation)
    unknown = sorted(set(given) - set(DEFAULTS) - {"first_order"})
    if unknown:
        raise InputError(f"config: unknown key(s) {unknown}; expected keys among "
                         f"{sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **given}
    check_config(cfg)
    family = TASKS[cfg["task"]]()
    sizes = [family.input_dim, *cfg.pop("hidden"), family.output_dim]
    cfg["model"] = MLP(sizes, cfg.pop("activation"), "mse").config()
    cfg["first_order"] = cfg["method"] in ("fomaml", "reptile") or (
        cfg["method"] == "metasgd" and boolean("first_order", given.get("first_order", False)))
    cfg["iteration"] = 0
    check_run_memory(cfg)
    return cfg


def fresh_seed():
    """A seed from fresh OS entropy (``seed=None``), recorded in the run's config so the run
    can be repeated and resumed: numpy.random.SeedSequence().entropy, a 128-bit int."""
    return int(np.random.SeedSequence().entropy)


def _model_of(name, spec, task):
    """MLP(**spec) for a config's "model" dict, checked against the task family: input and
    output dims and the loss (the sinusoids: D = O = 1, "mse")."""
    if not isinstance(spec, dict):
        raise InputError(f"{name}: expected a dict of MLP arguments, got {spec!r}")
    try:
        model = MLP(**spec)
    except TypeError as exc:
        raise InputError(f"{name}: expected arguments of mamlnp.MLP, got {spec!r} ({exc})") \
            from None
    family = TASKS[choice("task", task, tuple(TASKS))]
    want = (family.input_dim, family.output_dim, getattr(family, "loss", "mse"))
    if (model.sizes[0], model.sizes[-1], model.loss_name) != want:
        raise InputError(f"{name}: expected input dim {want[0]}, output dim {want[1]} and loss "
                         f"{want[2]!r} for task {task!r}, got sizes {model.sizes} and loss "
                         f"{model.loss_name!r}")
    return model


def check_run_memory(cfg):
    """Refuse a run whose arrays cannot fit in memory, before anything is allocated: the
    meta-gradient's workspace (mamlnp.meta.maml.check_work) and the task batches."""
    model = MLP(**cfg["model"])
    T, K, Q = cfg["meta_batch"], cfg["shots"], cfg["query"]
    D, O = model.sizes[0], model.sizes[-1]
    check_memory("meta_batch", T, 8 * 2 * T * (K + Q) * (D + O), "a batch of tasks")
    check_memory("val_tasks", cfg["val_tasks"], 8 * 2 * cfg["val_tasks"] *
                 (K + cfg["val_query"]) * (D + O), "the validation tasks")
    stored = cfg["method"] in ("maml", "metasgd") and not cfg["first_order"]
    M.check_work(model, T, K + Q, K + Q, cfg["inner_steps"], cfg["backend"], stored)


def check_config(cfg):
    choice("task", cfg["task"], tuple(TASKS))
    choice("method", cfg["method"], METHODS)
    for name in ("alpha", "beta"):
        cfg[name] = positive_float(name, cfg[name])
    cfg["inner_steps"] = step_count("inner_steps", cfg["inner_steps"])
    cfg["seed"] = nonneg_int("seed", cfg["seed"])
    for name in ("shots", "query", "meta_batch", "iterations", "checkpoint_every",
                 "eval_every", "val_tasks", "val_query"):
        cfg[name] = positive_int(name, cfg[name])
    cfg["val_seed"] = nonneg_int("val_seed", cfg["val_seed"])
    cfg["backend"] = M.check_backend(cfg["backend"])
    choice("optimizer", cfg["optimizer"], tuple(OPTIMIZERS))
    choice("init", cfg["init"], ("normal", "uniform"))
    hidden = cfg["hidden"]
    if isinstance(hidden, (int, np.integer)):
        hidden = [hidden]
    if not isinstance(hidden, (list, tuple)):
        raise InputError(f"hidden: expected a list of layer widths, got {hidden!r}")
    cfg["hidden"] = [positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]


def resume_config(saved, requested):
    """The saved config, with the keys in RESUME_MAY_CHANGE taken from ``requested``;
    any other explicitly requested key must match the checkpoint."""
    cfg = dict(saved)
    for key, value in requested.items():
        if key in RESUME_MAY_CHANGE:
            cfg[key] = value
        elif key == "model" and value != saved["model"]:
            raise CheckpointError(
                f"resume: the checkpoint was written for model {describe_model(saved['model'])}"
                f", but model {describe_model(value)} was requested (--hidden/--activation); "
                f"resume with the same architecture or start a new run in another --out")
        elif saved.get(key) != value:
            raise CheckpointError(
                f"resume: the checkpoint has {key}={saved.get(key)!r} but {key}={value!r} was "
                f"requested; drop the option to keep the run's value, or start a new --out")
    check_config({**cfg, "hidden": cfg["model"]["sizes"][1:-1]})
    check_run_memory(cfg)                       # a saved config may ask for absurd sizes too
    return cfg


def requested_keys(requested, saved):
    """Normalise the explicitly requested keys to compare them with a saved config."""
    req = {k: v for k, v in requested.items()
           if k not in ("hidden", "activation", "model", "iteration", "learned_alpha",
                        "metadata", "first_order")}
    if any(k in requested for k in ("hidden", "activation", "model")):
        merged = make_config({**{k: v for k, v in saved.items() if k in DEFAULTS},
                              **requested, "iterations": 1})
        req["model"] = merged["model"]
    if "backend" in req:
        req["backend"] = M.check_backend(req["backend"])
    return req


def describe_model(model):
    """'1-40-40-1 relu' for {"sizes": [1, 40, 40, 1], "activation": "relu", …}."""
    return "-".join(str(n) for n in model["sizes"]) + " " + model["activation"]
