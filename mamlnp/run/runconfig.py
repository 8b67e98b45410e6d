"""The training config: defaults (the paper's sinusoid protocol; Omniglot's in run/classify.py),
checks, and resumption.

A config is a plain JSON-able dict; ``make_config`` completes and validates one.
On ``--resume`` the run's saved config is authoritative: only the keys in
RESUME_MAY_CHANGE may differ, anything else explicitly requested must match.
"""
import os

import numpy as np

from ..meta import maml as M
from ..errors import CheckpointError, InputError
from ..nn.mlp import MLP
from ..nn.convnet import ConvNet
from ..nn.spec import MAX_BLOCKS, KINDS, describe, kind_of, model_from_spec, spec_of
from ..meta.optim import OPTIMIZERS
from ..tasks.omniglot import OmniglotTasks
from ..tasks.sinusoid import SinusoidTasks
from ..validation import (boolean, check_memory, choice, nonneg_int, positive_float,
                          positive_int, step_count)
from ..meta.variants import INNER_BN, INNER_BN_METHODS, METHODS

TASKS = {"sinusoid": SinusoidTasks, "omniglot": OmniglotTasks}
IMAGE_SHAPE = (1, 28, 28)                   # (C, H, W) of an Omniglot image: a ConvNet's in_shape
LOSS = {"sinusoid": "mse", "omniglot": "softmax_xent"}
DEFAULTS = {
    "task": "sinusoid",        # the task family (TASKS)
    "method": "maml",          # one of METHODS (mamlnp.meta.variants); imaml adds METHOD_KEYS
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
    "inner_bn": "adapt",       # batch norm's γ, β in the inner loop (adapt) or outer only
}                              # (fixed: cbfinn/maml's; maml, fomaml; absent in a run: adapt)
# keys of one method only (absent from other methods' configs): iMAML's λ and CG steps
METHOD_KEYS = {"imaml": {"lam": 1.0,         # λ, the proximal term's weight (> 0)
                         "cg_steps": 5},     # CG steps per task's implicit solve
               # MAML++ (Antoniou et al. 2019, sec. 4): an epoch is epoch_length iterations;
               # the multi-step loss is annealed over msl_epochs; first order for fo_epochs
               # (the paper's DA: "the first 50 epochs"), then second order
               "mamlpp": {"epoch_length": 500, "msl_epochs": 10, "fo_epochs": 50}}
# keys of one task only: Omniglot's classes per episode and data folder (run/classify.py)
TASK_KEYS = ("ways", "data_dir")
# the networks a run may train ("model": "mlp" | "conv"; config["model"]["kind"]), the keys of
# one kind only, and each kind's θ initialisations (ConvNet.init has one: "xavier")
NET_KEYS = {"mlp": ("hidden", "batch_norm"), "conv": ("channels",)}
INITS = {"mlp": ("normal", "uniform"), "conv": ("xavier",)}
# config keys a resumed run may change without breaking bit-exact continuation
# the keys of the network, compared on resume with the saved run's network as a whole
RESUME_NET_KEYS = ("hidden", "activation", "model", "channels", "batch_norm")
RESUME_MAY_CHANGE = ("iterations", "backend", "checkpoint_every", "eval_every",
                     "data_dir")                # Omniglot: where the same data now lives


# ---- the config ---------------------------------------------------------------------


def make_config(config=None, **kwargs):
    """A validated, complete config from DEFAULTS, a config dict and keyword overrides.

    The result has the keys of DEFAULTS except "hidden"/"activation", which become
    "model" = {"sizes", "activation", "loss"}, plus "first_order" (True for fomaml and
    reptile) and "iteration" (0). A run's saved config is accepted as input.
    ``model="conv"`` (Omniglot only) trains the ConvNet instead: "channels" replaces
    "hidden", and "model" = {"kind": "conv", "in_shape", "channels", "ways", …}."""
    if config is not None and not isinstance(config, dict):
        raise InputError(f"config: expected a dict of config keys, got {type(config).__name__}")
    given = {**(config or {}), **{k: v for k, v in kwargs.items() if v is not None}}
    for key in ("iteration", "learned_alpha", "learned_lslr", "metadata"):
        given.pop(key, None)
    kind = _network_keys(given, "model" if kwargs.get("model") is not None else "config.model")
    extra = {**task_defaults(given.get("task", DEFAULTS["task"]), given, kind),
             **METHOD_KEYS.get(given.get("method", DEFAULTS["method"]), {})}
    unknown = sorted(set(given) - set(DEFAULTS) - set(extra) - {"first_order"})
    other_task = [k for k in unknown if k in TASK_KEYS]
    if other_task:
        raise InputError(f"{other_task[0]}: applies only to task 'omniglot', not "
                         f"{given.get('task', DEFAULTS['task'])!r}; drop it")
    foreign = [k for k in unknown if any(k in keys for keys in METHOD_KEYS.values())]
    if foreign:
        raise InputError(f"config: {foreign} apply only to method(s) "
                         f"{[m for m, keys in METHOD_KEYS.items() if foreign[0] in keys]}, "
                         f"not {given.get('method', DEFAULTS['method'])!r}")
    if unknown:
        raise InputError(f"config: unknown key(s) {unknown}; expected keys among "
                         f"{sorted(set(DEFAULTS) | set(extra))}")
    cfg = {**DEFAULTS, **extra, **given}
    if kind == "conv":
        cfg.pop("hidden")
    check_config(cfg)
    cfg["model"] = _network(cfg, kind)
    cfg["first_order"] = cfg["method"] in ("fomaml", "reptile") or (
        cfg["method"] == "metasgd" and boolean("first_order", given.get("first_order", False)))
    cfg["iteration"] = 0
    check_run_memory(cfg)
    return cfg


def _network_keys(given, name):
    """The network kind of ``given`` ("model": a kind, or a saved run's dict, popped); a dict
    sets the defaults of its keys (hidden or channels, activation, batch norm); a key of the
    other kind is refused."""
    kind, model = _requested_kind(given, name)
    if model is not None:
        model = _model_of("config.model", model, given.get("task", DEFAULTS["task"]),
                          given.get("ways"))
        if isinstance(model, ConvNet):
            given.setdefault("channels", list(model.channels))
        else:
            given.setdefault("hidden", list(model.sizes[1:-1]))
            if model.batch_norm:
                given.setdefault("batch_norm", True)
        given.setdefault("activation", model.activation)
    _refuse_other_net_keys(kind, given)
    return kind


def _network(cfg, kind):
    """The description config["model"] of a checked config's network, its keys popped:
    an MLP D-hidden-O, or the ConvNet on Omniglot's images with ``channels``."""
    D, O, _ = task_dims(cfg["task"], cfg.get("ways"))        # never reads the data
    if kind == "conv":
        return spec_of(ConvNet(IMAGE_SHAPE, cfg.pop("channels"), O,
                               activation=cfg.pop("activation"), loss=LOSS[cfg["task"]]))
    sizes = [D, *cfg.pop("hidden"), O]
    bn = {"batch_norm": True} if cfg.pop("batch_norm", False) else {}
    return MLP(sizes, cfg.pop("activation"), LOSS[cfg["task"]], **bn).config()


def task_defaults(task, given, kind="mlp"):
    """The task's own keys and protocol defaults ({} for sinusoid; run/classify.py for Omniglot,
    for the network ``kind``: "mlp" or "conv")."""
    if task == "omniglot":
        from .classify import omniglot_defaults
        return omniglot_defaults(given, kind)
    return {"channels": None} if kind == "conv" else {}       # refused by check_config


def _requested_kind(given, name):
    """(kind, the model dict or None) from ``given``'s "model" (popped): "mlp" or "conv" names
    a kind; a dict (a saved run's) describes the network and carries its kind."""
    model = given.pop("model", None)
    if model is None:
        return "mlp", None
    if isinstance(model, str) and model in KINDS:
        return model, None
    if not isinstance(model, dict):
        raise InputError(f"{name}: expected a network kind, one of {list(KINDS)}, or a dict "
                         f"describing the network (a run's config['model']), got {model!r:.80}")
    return kind_of(model), model


def _refuse_other_net_keys(kind, given):
    """A key of the other network (--hidden, --batch-norm for conv; --channels for the MLP)
    is an error that says so."""
    other = [k for k in sorted(given) for o in KINDS if o != kind and k in NET_KEYS[o]]
    if other:
        what = {"hidden": "the MLP's hidden widths", "batch_norm": "the MLP's batch norm (the "
                "ConvNet always has batch norm)", "channels": "the ConvNet's filters per block"}
        raise InputError(f"{other[0]}: does not apply to model {kind!r} ({what[other[0]]}); "
                         f"drop it" + (" or choose model 'conv'" if other[0] == "channels"
                                       else ""))


def config_kind(cfg):
    """The network kind of a config being checked: "conv" when it has "channels" (a new
    config) or a conv model description (a saved one), else "mlp"."""
    if "channels" in cfg:
        return "conv"
    spec = cfg.get("model")
    return kind_of(spec) if isinstance(spec, dict) else "mlp"


_FAMILIES = {}


def family_for(cfg):
    """The run's task family (one per task, data folder and ways, made once per process)."""
    if cfg["task"] != "omniglot":
        return TASKS[cfg["task"]]()
    key = (cfg["data_dir"], cfg["ways"], os.environ.get("MAMLNP_DATA_DIR"))
    if key not in _FAMILIES:
        _FAMILIES[key] = OmniglotTasks(cfg["data_dir"], ways=cfg["ways"])
    return _FAMILIES[key]


def fresh_seed():
    """A seed from fresh OS entropy (``seed=None``), recorded in the run's config so the run
    can be repeated and resumed: numpy.random.SeedSequence().entropy, a 128-bit int."""
    return int(np.random.SeedSequence().entropy)


def task_dims(task, ways=None):
    """(input dim, output dim, loss) a task's network must have (Omniglot: N = ``ways``)."""
    family = TASKS[choice("task", task, tuple(TASKS))]
    out = ways if task == "omniglot" else family.output_dim
    return family.input_dim, out, LOSS[task]


def _model_of(name, spec, task, ways=None):
    """The MLP or ConvNet of a config's "model" dict (mamlnp.nn.spec), checked against the task
    family: input and output dims and the loss (the sinusoids: D = O = 1, "mse"; Omniglot: 784,
    N = ways, "softmax_xent"); a ConvNet only for Omniglot, on its (1, 28, 28) images."""
    if not isinstance(spec, dict):
        raise InputError(f"{name}: expected a dict of MLP or ConvNet arguments, got {spec!r:.80}")
    model = model_from_spec(spec, name)                   # sizes checked before allocating
    want = task_dims(task, model.sizes[-1] if ways is None else ways)
    if (model.sizes[0], model.sizes[-1], model.loss_name) != want:
        raise InputError(f"{name}: expected input dim {want[0]}, output dim {want[1]} and loss "
                         f"{want[2]!r} for task {task!r}, got sizes {model.sizes} and loss "
                         f"{model.loss_name!r}")
    if isinstance(model, ConvNet) and (task != "omniglot" or model.in_shape != IMAGE_SHAPE):
        raise InputError(f"{name}: expected a ConvNet on Omniglot's {IMAGE_SHAPE} images, got "
                         f"in_shape {model.in_shape} for task {task!r}")
    return model


def check_run_memory(cfg):
    """Refuse a run whose arrays cannot fit in memory, before anything is allocated: the
    meta-gradient's workspace (mamlnp.meta.maml.check_work) and the task batches, counting
    every dimension: a classification task holds N·(K+Q) rows (N ways), and drawing its
    episodes two (T, C) arrays over the C training characters."""
    model = model_from_spec(cfg["model"])
    T, K, Q, V = cfg["meta_batch"], cfg["shots"], cfg["query"], cfg["val_query"]
    D, O = model.sizes[0], model.sizes[-1]
    N = cfg["ways"] if cfg["task"] == "omniglot" else 1         # rows per point of a task
    draws = 16 * 1100 if cfg["task"] == "omniglot" else 0        # u and its order, per task
    batch = T * (16 * N * (K + Q) * (D + O) + draws)
    check_memory("meta_batch", T, batch, f"a batch of {T} tasks of {N * (K + Q)} rows of "
                 f"{D} inputs and {O} targets, and a copy")
    val = cfg["val_tasks"] * (16 * N * (K + V) * (D + O) + draws)
    check_memory("val_tasks", cfg["val_tasks"], batch + val,
                 "the validation tasks beside a training batch")
    stored = cfg["method"] in ("maml", "metasgd", "anil", "mamlpp") and not cfg["first_order"]
    M.check_work(model, T, N * K, N * Q, cfg["inner_steps"], cfg["backend"], stored)


def check_config(cfg):
    choice("task", cfg["task"], tuple(TASKS))
    if cfg["task"] == "omniglot":
        check_classification(cfg)
    choice("method", cfg["method"], METHODS)
    if cfg["method"] == "imaml":
        cfg["lam"] = positive_float("lam", cfg.get("lam"))
        cfg["cg_steps"] = positive_int("cg_steps", cfg.get("cg_steps"))
    if cfg["method"] == "mamlpp":
        cfg["epoch_length"] = positive_int("epoch_length", cfg.get("epoch_length"))
        for name in ("msl_epochs", "fo_epochs"):
            cfg[name] = nonneg_int(name, cfg.get(name))
    for name in ("alpha", "beta"):
        cfg[name] = positive_float(name, cfg[name])
    cfg["inner_steps"] = step_count("inner_steps", cfg["inner_steps"])
    cfg["seed"] = nonneg_int("seed", cfg["seed"])
    for name in ("shots", "query", "meta_batch", "iterations", "checkpoint_every",
                 "eval_every", "val_tasks", "val_query"):
        cfg[name] = positive_int(name, cfg[name])
    cfg["val_seed"] = nonneg_int("val_seed", cfg["val_seed"])
    if cfg["task"] == "omniglot":
        check_drawings(cfg)
    if cfg["method"] == "mamlpp" and cfg["inner_steps"] < 1:
        raise InputError(f"inner_steps: expected at least 1 for method 'mamlpp' (its "
                         f"multi-step loss weighs the query loss after each inner step), got "
                         f"{cfg['inner_steps']}")
    cfg["backend"] = M.check_backend(cfg["backend"])
    choice("optimizer", cfg["optimizer"], tuple(OPTIMIZERS))
    kind = config_kind(cfg)
    check_kind(cfg, kind)
    if kind == "conv":
        if "channels" in cfg:
            cfg["channels"] = _widths("channels", cfg["channels"], "filters per conv block")
    else:
        cfg["hidden"] = _widths("hidden", cfg["hidden"], "layer widths")


def _widths(name, value, what):
    """A list of positive ints (one int is a list of one); for conv at least one."""
    if isinstance(value, (int, np.integer)):
        value = [value]
    if not isinstance(value, (list, tuple)) or (name == "channels" and not value):
        raise InputError(f"{name}: expected a list of {what}, got {value!r:.80}")
    if name == "channels" and len(value) > MAX_BLOCKS:
        raise InputError(f"channels: expected at most {MAX_BLOCKS} conv blocks, got {len(value)}")
    return [positive_int(f"{name}[{i}]", h) for i, h in enumerate(value)]


def check_kind(cfg, kind):
    """What a network kind allows: its initialisations; the ConvNet only for Omniglot and for
    the methods it is wired for (classify.CONV_METHODS)."""
    from .classify import CONV_METHODS
    if kind == "conv" and cfg["task"] != "omniglot":
        raise InputError(f"model: 'conv' applies only to task 'omniglot' (images), not "
                         f"{cfg['task']!r}")
    if kind == "conv" and cfg["method"] not in CONV_METHODS:
        raise InputError(f"method: expected one of {list(CONV_METHODS)} for model 'conv' (the "
                         f"ConvNet's runs), got {cfg['method']!r}")
    if cfg["init"] not in INITS[kind]:
        raise InputError(f"init: expected one of {list(INITS[kind])} for model {kind!r}, got "
                         f"{cfg['init']!r}" + (" (ConvNet.init has one scheme, cbfinn's)"
                                               if kind == "conv" else ""))
    check_inner_bn(cfg, kind)


def check_inner_bn(cfg, kind):
    """inner_bn (absent: "adapt"): "fixed" (batch norm's γ, β out of the inner loop) needs a
    network with batch norm and a method whose step it masks (mamlnp.meta.variants)."""
    if choice("inner_bn", cfg.get("inner_bn", "adapt"), INNER_BN) == "adapt":
        return
    if cfg["method"] not in INNER_BN_METHODS:
        raise InputError(f"inner_bn: 'fixed' (--inner-bn fixed) applies only to methods "
                         f"{' and '.join(INNER_BN_METHODS)}, got method {cfg['method']!r}")
    spec = cfg.get("model")
    bn = kind == "conv" or (cfg["batch_norm"] if "batch_norm" in cfg else
                            isinstance(spec, dict) and spec.get("batch_norm", False))
    if not bn:
        raise InputError("inner_bn: 'fixed' (--inner-bn fixed) needs a model with batch norm "
                         "(--model conv, or the Omniglot MLP's batch norm), got an MLP without "
                         "batch norm")


def check_classification(cfg):
    """Omniglot's own keys: N ways (at least 2: with one class every answer is right and the
    loss is 0 at once), a data folder path or None."""
    cfg["ways"] = positive_int("ways", cfg["ways"])
    if cfg["ways"] < 2:
        raise InputError(f"ways: expected at least 2 classes per episode (with one, every "
                         f"prediction is right and the loss is 0), got {cfg['ways']}")
    if cfg["data_dir"] is not None and not isinstance(cfg["data_dir"], str):
        raise InputError(f"data_dir: expected a folder path or None, got {cfg['data_dir']!r}")


def check_drawings(cfg):
    """K + Q drawings of one character per class: at most the 20 it has (training episodes:
    shots + query; validation episodes: shots + val_query)."""
    from ..tasks.omniglot_data import DRAWINGS
    for name, q in (("query", cfg["query"]), ("val_query", cfg["val_query"])):
        if cfg["shots"] + q > DRAWINGS:
            raise InputError(f"shots, {name}: expected shots + {name} <= {DRAWINGS} (the "
                             f"drawings of a character), got {cfg['shots']} + {q} = "
                             f"{cfg['shots'] + q}")


def resume_config(saved, requested):
    """The saved config, with the keys in RESUME_MAY_CHANGE taken from ``requested``;
    any other explicitly requested key must match the checkpoint."""
    cfg = {"inner_bn": DEFAULTS["inner_bn"], **saved}    # a run from before the key: "adapt"
    for key, value in requested.items():
        if key in RESUME_MAY_CHANGE:
            cfg[key] = value
        elif key == "model" and value != saved["model"]:
            raise CheckpointError(
                f"resume: the checkpoint was written for model {describe_model(saved['model'])}"
                f", but model {describe_model(value)} was requested (--model/--hidden/"
                f"--channels/--activation); "
                f"resume with the same architecture or start a new run in another --out")
        elif cfg.get(key) != value:
            raise CheckpointError(
                f"resume: the checkpoint has {key}={cfg.get(key)!r} but {key}={value!r} was "
                f"requested; drop the option to keep the run's value, or start a new --out")
    spec = cfg["model"]                     # a ConvNet's description has no hidden widths
    check_config({**cfg, "hidden": spec["sizes"][1:-1]} if kind_of(spec) == "mlp" else cfg)
    check_run_memory(cfg)                       # a saved config may ask for absurd sizes too
    return cfg


def requested_keys(requested, saved):
    """Normalise the explicitly requested keys to compare them with a saved config."""
    net = RESUME_NET_KEYS
    req = {k: v for k, v in requested.items()
           if k not in net + ("iteration", "learned_alpha", "learned_lslr", "metadata",
                              "first_order")}
    if any(k in requested for k in net):
        kind = kind_of(saved["model"])
        if isinstance(requested.get("model"), str) and requested["model"] != kind:
            raise CheckpointError(f"resume: the checkpoint was written for model {kind!r}, but "
                                  f"model {requested['model']!r} was requested; resume with "
                                  f"the same model or start a new run in another --out")
        asked = {k: v for k, v in requested.items() if not (k == "model" and isinstance(v, str))}
        keep = set(DEFAULTS) | set(task_defaults(saved.get("task"), saved, kind))
        merged = make_config({**{k: v for k, v in saved.items() if k in keep},
                              "model": saved["model"], **asked, "iterations": 1})
        req["model"] = merged["model"]
    if "backend" in req:
        req["backend"] = M.check_backend(req["backend"])
    return req


def describe_model(model):
    """'1-40-40-1 relu' for {"sizes": [1, 40, 40, 1], "activation": "relu", …}; 'conv
    64-64-64-64 relu' for a ConvNet's description."""
    return describe(model)
