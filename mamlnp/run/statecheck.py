"""What a checkpoint holds, checked field by field against its model and config before use.

Dimension legend: P parameters (of the model the config describes), R history rows.

The checksum of mamlnp.run.checkpoint detects corruption, not tampering: it is an unkeyed
SHA-256 that anyone can recompute. So nothing read from a file is trusted because the
checksum matched: every field is checked here for type, dtype, length, finiteness and range,
against the model config["model"] describes (mamlnp.nn.spec: an MLP or a ConvNet) and the
config, and a bad field raises a CheckpointError naming it. The compiled kernels
(mamlnp.fast) index their arrays with the model's lengths and check nothing, so an array of another length must never reach them:
``read`` checks every (P,) array at load, ``check_resume`` what resuming adds (optimizer and
trainer state against the run's config).
"""
import json
import math

import numpy as np

from ..errors import CheckpointError, InputError
from ..nn.convnet import ConvNet
from ..nn.spec import kind_of, model_from_spec
from ..validation import boolean, choice, nonneg_int, positive_float, positive_int, step_count
from .runguard import MEDIAN_WINDOW

JSON_DEPTH = 32                     # config and RNG state are flat dicts; refuse deep nesting
_POSITIVE_INTS = ("shots", "query", "meta_batch", "iterations", "checkpoint_every",
                  "eval_every", "val_tasks", "val_query")


def fail(file, field, what):
    return CheckpointError(f"checkpoint: {file!r}: {field}: {what}")


def parse_json(file, field, arr, types):
    """The JSON text of a 0-d str array ``arr``, parsed; its value must be of ``types``."""
    if arr.shape != () or arr.dtype.kind != "U":
        raise fail(file, field, f"expected a JSON string, got shape {arr.shape} {arr.dtype}")
    text = str(arr)
    if _depth(text) > JSON_DEPTH:
        raise fail(file, field, f"expected JSON nested at most {JSON_DEPTH} deep")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise fail(file, field, f"expected valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, types):
        raise fail(file, field, f"expected {' or '.join(t.__name__ for t in types)}, got "
                                f"{type(value).__name__}")
    return value


def _depth(text):
    depth = deepest = 0
    for ch in text:                 # strings may hold brackets: an upper bound, fine here
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def scalar_int(file, field, arr, minimum=0):
    if arr.shape != () or arr.dtype.kind != "i" or int(arr) < minimum:
        raise fail(file, field, f"expected an integer >= {minimum}, got {arr!r}")
    return int(arr)


def model_of(file, config):
    """The MLP or ConvNet of config["model"] (mamlnp.nn.spec: a ConvNet's sizes are checked
    before θ or anything else is allocated), checked against the config's task, and a ConvNet
    against its run's rules (Omniglot images, its methods and initialisation)."""
    spec = config.get("model")
    if not isinstance(spec, dict):
        raise fail(file, "config.model", f"expected a dict of MLP or ConvNet arguments, got "
                                         f"{spec!r:.80}")
    try:
        model = model_from_spec(spec)
    except Exception as exc:                          # InputError, TypeError (a bad key) …
        raise fail(file, "config.model", f"expected a description of a mamlnp.MLP or ConvNet "
                                         f"({exc})") from None
    task = config.get("task")
    if task is not None:
        from .runconfig import IMAGE_SHAPE, task_dims
        with _as_checkpoint_error(file, "config.task"):
            want = task_dims(task, config.get("ways"))
        got = (model.sizes[0], model.sizes[-1], model.loss_name)
        if got != want:
            raise fail(file, "config.model", f"expected input dim {want[0]}, output dim "
                       f"{want[1]} and loss {want[2]!r} for task {task!r}, got {got}")
        if isinstance(model, ConvNet) and model.in_shape != IMAGE_SHAPE:
            raise fail(file, "config.model", f"expected a ConvNet on {IMAGE_SHAPE} images, got "
                                             f"in_shape {model.in_shape}")
    if "method" in config and "init" in config and "task" in config:
        from .runconfig import check_kind
        with _as_checkpoint_error(file, "config"):
            check_kind(config, kind_of(spec))
    return model


class _as_checkpoint_error:
    """InputError (from a validation helper) -> CheckpointError naming the field."""

    def __init__(self, file, field):
        self.file, self.field = file, field

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, (InputError, KeyError, TypeError)):
            raise fail(self.file, self.field, str(exc)) from None
        return False


def check_config(file, config, iteration):
    """Every known key present in ``config`` for type and range (absent keys are the
    reader's business: load_checkpoint needs "alpha", resume needs them all)."""
    from .runconfig import TASKS
    from ..meta.maml import BACKENDS
    from ..meta.optim import OPTIMIZERS
    from ..meta.variants import INNER_BN, METHODS
    checks = {"task": lambda v: choice("task", v, tuple(TASKS)),
              "method": lambda v: choice("method", v, METHODS),
              "alpha": lambda v: positive_float("alpha", v),
              "beta": lambda v: positive_float("beta", v),
              "inner_steps": lambda v: step_count("inner_steps", v),
              "seed": lambda v: nonneg_int("seed", v),
              "val_seed": lambda v: nonneg_int("val_seed", v),
              "backend": lambda v: choice("backend", v, BACKENDS),
              "optimizer": lambda v: choice("optimizer", v, tuple(OPTIMIZERS)),
              "init": lambda v: choice("init", v, ("normal", "uniform", "xavier")),
              "first_order": lambda v: boolean("first_order", v),
              "inner_bn": lambda v: choice("inner_bn", v, INNER_BN),
              "lam": lambda v: positive_float("lam", v),                  # imaml
              "cg_steps": lambda v: positive_int("cg_steps", v),          # imaml
              "epoch_length": lambda v: positive_int("epoch_length", v),  # mamlpp
              "msl_epochs": lambda v: nonneg_int("msl_epochs", v),        # mamlpp
              "fo_epochs": lambda v: nonneg_int("fo_epochs", v),          # mamlpp
              "iteration": lambda v: nonneg_int("iteration", v),
              **{k: (lambda name: lambda v: positive_int(name, v))(k) for k in _POSITIVE_INTS}}
    for key, check in checks.items():
        if key in config:
            with _as_checkpoint_error(file, f"config.{key}"):
                config[key] = check(config[key])
    with _as_checkpoint_error(file, "config"):
        _check_task_keys(config)
    if config.get("iteration", iteration) != iteration:
        raise fail(file, "config.iteration", f"expected {iteration} (the checkpoint's "
                                             f"iteration), got {config['iteration']}")
    return config


def _check_task_keys(config):
    """The keys that depend on others: Omniglot's ways and data_dir, and its drawings per
    class; MAML++'s inner steps (at least 1). Same rules as a new run's config."""
    from .runconfig import check_classification, check_drawings
    if config.get("task") == "omniglot":
        for key in ("ways", "data_dir", "shots", "query", "val_query", "inner_steps"):
            if key not in config:
                raise InputError(f"{key}: missing (expected the key of an Omniglot run)")
        check_classification(config)
        check_drawings(config)
    elif "ways" in config or "data_dir" in config:
        raise InputError(f"{'ways' if 'ways' in config else 'data_dir'}: expected only in an "
                         f"Omniglot run's config, got task {config.get('task')!r}")
    from .runconfig import METHOD_KEYS
    foreign = sorted(k for m, keys in METHOD_KEYS.items() if m != config.get("method")
                     for k in keys if k in config and k not in METHOD_KEYS.get(
                         config.get("method"), {}))
    if foreign:
        raise InputError(f"{foreign[0]}: expected only in a config of method "
                         f"{[m for m, keys in METHOD_KEYS.items() if foreign[0] in keys]}, got "
                         f"method {config.get('method')!r}")
    if config.get("method") == "mamlpp" and config.get("inner_steps", 1) < 1:
        raise InputError(f"inner_steps: expected at least 1 for method 'mamlpp', got "
                         f"{config['inner_steps']}")


def check_groups(file, config, params, optimizer_state):
    """The meta-learned arrays (param.*) and optimizer states (optim.*) are exactly those of
    the run's method: Meta-SGD's α, MAML++'s lslr are required by theirs and refused in
    others (they would be used, or silently replaced by the scalar α)."""
    from ..meta.variants import get_method
    if "method" not in config:
        return
    groups = set(get_method(config["method"]).groups)
    for kind, have in (("param", params), ("optim", optimizer_state)):
        extra = sorted(set(have) - groups)
        if extra:
            raise fail(file, f"{kind}.{extra[0]}", f"method {config['method']!r} learns no "
                       f"{extra[0]!r} (its arrays: {sorted(groups)}); refused")
    missing = sorted(groups - set(params))
    if missing:
        raise fail(file, f"param.{missing[0]}", f"missing (method {config['method']!r} learns "
                   f"{sorted(groups)})")


def require_keys(file, config, keys):
    """Every key of ``keys`` in ``config`` (a resumed run reads them all)."""
    missing = [k for k in keys if k not in config]
    if missing:
        raise fail(file, f"config.{missing[0]}", f"missing (expected the keys {sorted(keys)} "
                                                 f"of a run's config)")


def check_rng_state(file, state):
    """None, or a PCG64 state dict (numpy.random.default_rng's generator)."""
    if state is None:
        return None
    ok = (isinstance(state, dict) and state.get("bit_generator") == "PCG64"
          and set(state) == {"bit_generator", "state", "has_uint32", "uinteger"}
          and isinstance(state["state"], dict) and set(state["state"]) == {"state", "inc"}
          and all(_int_in(state["state"][k], 2**128) for k in ("state", "inc"))
          and _int_in(state["has_uint32"], 2) and _int_in(state["uinteger"], 2**32))
    if not ok:
        raise fail(file, "rng_state", "expected the state of a PCG64 generator "
                                      "(numpy.random.default_rng), got another value")
    return state


def _int_in(v, bound):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < bound


def group_size(group, config, model):
    """The length of a meta-learned array: P, or for MAML++'s "lslr" s·L (steps × layers)."""
    if group == "lslr":
        return int(config.get("inner_steps", 1)) * len(model.layout)
    return model.num_params


def vector(file, field, arr, P, what="θ"):
    """A finite float64 (P,) array (θ, Meta-SGD's α, Adam's m and v)."""
    if arr.dtype.kind != "f" or arr.shape != (P,):
        size = f"the model has {P} parameters" if what != "lslr" else f"{P} = steps × layers"
        raise fail(file, field, f"{what} has shape {arr.shape} (dtype {arr.dtype}), but {size} "
                                f"(expected ({P},) float64)")
    if not np.isfinite(arr).all():
        raise fail(file, field, f"expected finite values, got "
                                f"{int(np.count_nonzero(~np.isfinite(arr)))} NaN or inf")
    return np.array(arr, dtype=np.float64)


def history(file, arr, iteration):
    """(R, 3) float64 rows (iteration, meta-loss, val MSE or NaN), R <= iteration,
    iterations strictly increasing in 1 … iteration, meta-losses finite."""
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] > iteration:
        raise fail(file, "history", f"expected (R, 3) float64 rows with R <= {iteration}, got "
                                    f"shape {arr.shape} {arr.dtype}")
    its = arr[:, 0]
    if arr.shape[0] and not (np.all(its == np.round(its)) and np.all(np.diff(its) > 0)
                             and its[0] >= 1 and its[-1] <= iteration):
        raise fail(file, "history", f"expected increasing iterations in 1 … {iteration}")
    if not (np.isfinite(arr[:, 1]).all() and (np.isfinite(arr[:, 2]) | np.isnan(arr[:, 2])).all()):
        raise fail(file, "history", "expected finite meta-losses and finite (or NaN) MSEs")
    return np.array(arr, dtype=np.float64)


def optimizer_entry(file, field, key, arr, P):
    if key in ("m", "v"):
        arr = vector(file, field, arr, P, f"Adam's {key}")
        if key == "v" and np.any(arr < 0):
            raise fail(file, field, "expected Adam's v >= 0 (a running mean of g²)")
        return arr
    if arr.shape != () or arr.dtype.kind not in "if" or not np.isfinite(arr):
        raise fail(file, field, f"expected a finite number, got {arr!r}")
    return arr


def check_resume(file, saved, cfg, method):
    """What resuming reads beyond load_checkpoint: the optimizer state of every group (the
    config's optimizer, with lr = β and t = iteration), and the trainer's bookkeeping."""
    it = saved["iteration"]
    for g in method.groups:
        state = saved["optimizer_state"].get(g, {})
        keys = {"lr"} if cfg["optimizer"] == "sgd" else (
            {"lr", "beta1", "beta2", "eps", "t"} | ({"m", "v"} if it > 0 else set()))
        if set(state) != keys:
            raise fail(file, f"optim.{g}", f"expected the entries {sorted(keys)} of a "
                       f"{cfg['optimizer']} state after {it} iterations, got {sorted(state)}")
        if float(state["lr"]) != cfg["beta"]:
            raise fail(file, f"optim.{g}.lr", f"expected beta = {cfg['beta']}, got "
                                              f"{float(state['lr'])}")
        if "t" in state and (state["t"].dtype.kind != "i" or int(state["t"]) != it):
            raise fail(file, f"optim.{g}.t", f"expected {it} (the iteration), got {state['t']!r}")
    ts = saved["train_state"]
    want = {"window_sum": "f", "window_count": "i", "wall": "f", "recent": "f",
            "n_recent": "i", "median": "f"}
    for key, kind in want.items():
        a = ts[key]
        if a.dtype.kind != kind or a.shape != ((MEDIAN_WINDOW,) if key == "recent" else ()):
            raise fail(file, f"train.{key}", f"expected {'(%d,) ' % MEDIAN_WINDOW if key == 'recent' else 'a '}"
                       f"{'float64' if kind == 'f' else 'int64'}, got shape {a.shape} {a.dtype}")
    if not (np.isfinite(ts["recent"]).all() and math.isfinite(float(ts["window_sum"]))
            and math.isfinite(float(ts["wall"])) and float(ts["wall"]) >= 0
            and 0 <= int(ts["window_count"]) <= it and int(ts["n_recent"]) == it
            and float(ts["median"]) >= 0):            # NaN fails too; inf before 100 iterations
        raise fail(file, "train", f"expected finite trainer state with n_recent = {it} and "
                                  f"0 <= window_count <= {it}, got {dict(ts)}")


def callback_stop(value):
    """A callback's return value as the stop flag: truthy stops training (None: go on)."""
    try:
        return bool(value)
    except Exception as exc:                    # an array, an object whose bool() raises
        raise InputError(f"callback: expected a return value True/False or None (truthy "
                         f"stops training), got a {type(value).__name__} ({exc})") from None


def check_trainer_params(model, cfg, method, params):
    """What a callback can touch (``step.params``) is checked before it reaches the next
    compiled call: the method's arrays, each a C-contiguous, finite float64 vector of its
    length (θ: P). A callback may read them, or change their values in place; a replaced or
    removed array of another length or dtype is an InputError naming it, never a kernel
    reading past its end."""
    if not isinstance(params, dict) or set(params) != set(method.groups):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise InputError(f"callback: step.params: expected the keys {sorted(method.groups)} "
                         f"left in place, got {got}")
    for g in method.groups:
        a, n = params[g], group_size(g, cfg, model)
        ok = (isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == (n,)
              and a.flags.c_contiguous and bool(np.isfinite(a).all()))
        if not ok:
            got = type(a).__name__ if not isinstance(a, np.ndarray) else (
                f"shape {a.shape} {a.dtype}" + ("" if a.flags.c_contiguous else
                                                ", not C-contiguous") +
                ("" if a.dtype.kind not in "fc" or np.isfinite(a).all() else ", with NaN/inf"))
            name = "theta" if g == "theta" else g
            raise InputError(f"{name}: the callback left step.params[{g!r}] as {got}; expected "
                             f"a finite, C-contiguous float64 array of shape ({n},) (a "
                             f"callback may change the values in place, not the array)")


class as_input_error:
    """CheckpointError -> InputError, for save_checkpoint's check of its own arguments (the
    message keeps the field; the file is not written)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, CheckpointError):
            raise InputError(f"{str(exc).split(': ', 2)[-1]} (save_checkpoint: nothing written)") from None
        return False
