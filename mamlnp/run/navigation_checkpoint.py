"""Checkpoints of navigation runs (``mamlnp train navigation``): save, check, load.

Dimension legend: P parameters of the Gaussian policy, R history rows.

The file is the one of mamlnp/run/checkpoint.py (``checkpoint.npz`` in the run directory,
the same members, SHA-256 checksum, atomic write, sizes checked before decompressing),
with the policy in place of the MLP: config["policy"] = {"sizes": [...], "activation": ...}.

    param.theta (P,)       θ, the policy's parameters (mean MLP, then log σ)
    optim.theta.*          Adam's state (lr, beta1, beta2, eps, t, m, v) with --outer adam
    train.wall             seconds trained so far
    history (R, 3)         iteration, average return before adaptation, after it (NaN for
                           the methods that do not adapt)
    rng_state_json         the run's only generator, so a resumed run repeats the same bits

``load_checkpoint(path)`` reads any run: ``(policy, θ, config)`` for navigation runs, the
MLP's ``(model, θ, config)`` otherwise (mamlnp/run/checkpoint.py).
"""
import io
import os

import numpy as np

from ..errors import CheckpointError, InputError
from ..validation import boolean, choice, nonneg_int, positive_float, positive_int
from . import checkpoint as C
from . import statecheck as S
from ..npzread import NpzReader
from ..tasks.navigation import SAMPLERS

METHODS = ("maml", "pretrain", "oracle")
# An option's value for a run saved before the option existed: what such runs ran (one
# thread, whole-episode batches, one inner step; the backend counted as "numpy").
OLD_RUN_DEFAULTS = {"threads": 1, "sampler": "episodes", "inner_steps": 1, "later_alpha": 0.25,
                    "backend": "numpy"}
ESTIMATORS = ("dice", "lvc", "maml")
OUTERS = ("trpo", "adam")
MAX_HIDDEN = 4096                  # a policy layer wider than this is not a navigation policy


def _policy_class():
    from ..nn.policy import GaussianPolicy
    return GaussianPolicy


def policy_of(file, config):
    """GaussianPolicy(**config["policy"]), checked: (2 or 4 for the oracle) inputs, 2 outputs."""
    spec = config.get("policy")
    ok = (isinstance(spec, dict) and set(spec) == {"sizes", "activation"}
          and isinstance(spec["sizes"], list) and 2 <= len(spec["sizes"]) <= 8
          and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_HIDDEN
                  for s in spec["sizes"]))
    if not ok:
        raise S.fail(file, "config.policy", f"expected {{'sizes': [2, ..., 2], 'activation': "
                     f"...}} with 2 to 8 sizes in 1 … {MAX_HIDDEN}, got {spec!r:.200}")
    D = 4 if config.get("method") == "oracle" else 2
    if spec["sizes"][0] != D or spec["sizes"][-1] != 2:
        raise S.fail(file, "config.policy", f"expected sizes {D} … 2 for method "
                     f"{config.get('method')!r}, got {spec['sizes']}")
    try:
        return _policy_class()(sizes=tuple(spec["sizes"]), activation=spec["activation"])
    except InputError as exc:
        raise S.fail(file, "config.policy", str(exc)) from None


def check_config(file, config, iteration):
    """Every key of a navigation config for type and range (CheckpointError naming it)."""
    from ..meta.maml import BACKENDS
    checks = {"task": lambda v: choice("task", v, ("navigation",)),
              "method": lambda v: choice("method", v, METHODS),
              "estimator": lambda v: choice("estimator", v, ESTIMATORS),
              "outer": lambda v: choice("outer", v, OUTERS),
              "sampler": lambda v: choice("sampler", v, SAMPLERS),
              "backend": lambda v: choice("backend", v, BACKENDS),
              "alpha": lambda v: positive_float("alpha", v),
              "later_alpha": lambda v: positive_float("later_alpha", v),
              "beta": lambda v: positive_float("beta", v),
              "max_kl": lambda v: positive_float("max_kl", v),
              "damping": lambda v: positive_float("damping", v),
              "backtrack_ratio": lambda v: positive_float("backtrack_ratio", v),
              "seed": lambda v: nonneg_int("seed", v),
              "iteration": lambda v: nonneg_int("iteration", v),
              "first_order": lambda v: boolean("first_order", v),
              **{k: (lambda name: lambda v: positive_int(name, v))(k) for k in (
                  "meta_batch", "trajectories", "horizon", "iterations", "cg_iters",
                  "max_backtracks", "checkpoint_every", "threads", "inner_steps")}}
    missing = [k for k in checks if k not in config
               and k != "first_order" and k not in OLD_RUN_DEFAULTS]
    if missing:
        raise S.fail(file, f"config.{missing[0]}", "missing (expected a navigation run's config)")
    for key, check in checks.items():
        if key in config:
            with S._as_checkpoint_error(file, f"config.{key}"):
                config[key] = check(config[key])
    if not 0.0 < config["backtrack_ratio"] < 1.0 or not 0.0 < config.get("discount", 0.99) <= 1.0:
        raise S.fail(file, "config.backtrack_ratio", "expected a ratio in (0, 1) and a "
                     "discount in (0, 1]")
    if config["iteration"] != iteration:
        raise S.fail(file, "config.iteration", f"expected {iteration}, got {config['iteration']}")
    return config


def with_old_defaults(config):
    """A copy of a saved config with OLD_RUN_DEFAULTS for the options it predates."""
    return {**OLD_RUN_DEFAULTS, **config}


def check_resume(out, config, kwargs, options, resumable):
    """Options of ``kwargs`` given again on --resume (not None, not in ``resumable``) must be
    keys of ``options`` and equal the run's ``config``: else InputError naming the first."""
    from ..meta.maml import BACKENDS
    have = {**config, "hidden": config["policy"]["sizes"][1:-1],
            "activation": config["policy"]["activation"]}
    for key, value in kwargs.items():
        if value is None or key in resumable:
            continue
        if key not in options:
            raise InputError(f"{key}: not an option of train navigation")
        if key == "backend":
            value = choice("backend", value, BACKENDS)
        if np.atleast_1d(value).tolist() != np.atleast_1d(have.get(key)).tolist():
            why = ("; the backends agree to rounding, not bit for bit, so the resumed run would "
                   "not equal one trained in one sitting" if key == "backend" else "")
            raise InputError(f"{key}: the run in {out!r} was trained with {key}="
                             f"{have.get(key)!r}, got {value!r}; only {', '.join(resumable)} "
                             f"may change on --resume{why}")


# ---- save ---------------------------------------------------------------------------


def save(out, config, theta, rng_state, iteration, history, optimizer_state=None, wall=0.0):
    """Write ``out/checkpoint.npz`` atomically (checked as load will check it first)."""
    file = os.path.join(out, C.CHECKPOINT_NAME)
    arrays = {"format_version": np.int64(C.FORMAT_VERSION),
              "config_json": np.array(_json(config)), "rng_state_json": np.array(_json(rng_state)),
              "iteration": np.int64(iteration),
              "history": np.asarray(history, dtype=np.float64).reshape(-1, 3),
              "param.theta": np.asarray(theta, dtype=np.float64), "train.wall": np.float64(wall)}
    for key, value in (optimizer_state or {}).items():
        arrays[f"optim.theta.{key}"] = np.asarray(value)
    with S.as_input_error():
        _read_arrays(file, dict(arrays))                     # what load would say, now
    arrays["checksum"] = np.array(C.checksum(arrays))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    C.atomic_write(file, lambda f: f.write(buf.getvalue()))
    return file


def _json(obj):
    import json
    try:
        return json.dumps(obj, sort_keys=True, default=C._json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"config: expected JSON-able values ({exc})") from None


# ---- load ---------------------------------------------------------------------------


def is_navigation(path):
    """Whether ``path`` (a run directory or .npz) holds a navigation checkpoint; False when it
    holds none or cannot be read (the MLP reader then says why)."""
    file = C._npz_path(path) if isinstance(path, (str, os.PathLike)) else None
    if file is None or not os.path.isfile(file):
        return False
    try:
        with NpzReader(file) as z:
            config = S.parse_json(file, "config_json", z.read("config_json", "U", 1), (dict,))
    except CheckpointError:
        return False
    return config.get("task") == "navigation"


def read(path):
    """The verified state of a navigation checkpoint: dict with config, policy, theta,
    rng_state, iteration, history, optimizer_state, wall, path."""
    file = C._npz_path(path)
    if not os.path.isfile(file):
        raise CheckpointError(f"checkpoint: {file!r}: no such file (expected a run directory "
                              f"written by 'mamlnp train navigation')")
    with NpzReader(file) as z:
        arrays = {k: z.read(k, *_limits(k)) for k in z.keys()}
    if "checksum" not in arrays:
        raise CheckpointError(f"checkpoint: {file!r} is not a mamlnp checkpoint (no checksum)")
    stored = str(arrays.pop("checksum"))
    if stored != C.checksum(arrays):
        raise CheckpointError(f"checkpoint: {file!r} is corrupt: its checksum does not match "
                              f"its contents")
    return _read_arrays(file, arrays)


def _limits(key):
    if key in ("config_json", "rng_state_json", "checksum"):
        return "U", 1
    if key == "history":
        return "f", 3 * 100_000
    return "fi", 2 ** 24                     # θ and Adam's m, v: (P,), sizes checked after


def _read_arrays(file, arrays):
    need = ("format_version", "iteration", "config_json", "rng_state_json", "history",
            "param.theta")
    for key in need:
        if key not in arrays:
            raise S.fail(file, key, "missing (expected a navigation checkpoint)")
    if S.scalar_int(file, "format_version", arrays["format_version"]) != C.FORMAT_VERSION:
        raise S.fail(file, "format_version", f"expected {C.FORMAT_VERSION}")
    iteration = S.scalar_int(file, "iteration", arrays["iteration"])
    config = check_config(file, S.parse_json(file, "config_json", arrays["config_json"], (dict,)),
                          iteration)
    policy = policy_of(file, config)
    P = policy.num_params
    out = {"path": file, "config": config, "policy": policy, "iteration": iteration,
           "rng_state": S.check_rng_state(file, S.parse_json(
               file, "rng_state_json", arrays["rng_state_json"], (dict, type(None)))),
           "history": _history(file, arrays["history"], iteration),
           "theta": S.vector(file, "param.theta", arrays["param.theta"], P),
           "optimizer_state": {}, "wall": 0.0}
    for name, value in arrays.items():
        head, _, key = name.rpartition(".")
        if head == "optim.theta":
            out["optimizer_state"][key] = S.optimizer_entry(file, name, key, value, P)
        elif name == "train.wall":
            if value.shape != () or not np.isfinite(value) or value < 0:
                raise S.fail(file, name, f"expected seconds >= 0, got {value!r}")
            out["wall"] = float(value)
        elif name not in need:
            raise S.fail(file, name, "unexpected member")
    return out


def _history(file, arr, iteration):
    """(R, 3) rows: increasing iterations in 1 … iteration, finite returns (NaN after)."""
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] > iteration:
        raise S.fail(file, "history", f"expected (R, 3) float64 rows with R <= {iteration}, "
                                      f"got shape {arr.shape}")
    its = arr[:, 0]
    if arr.shape[0] and not (np.all(its == np.round(its)) and np.all(np.diff(its) > 0)
                             and its[0] >= 1 and its[-1] <= iteration
                             and np.isfinite(arr[:, 1]).all() and not np.isinf(arr[:, 2]).any()):
        raise S.fail(file, "history", f"expected increasing iterations in 1 … {iteration} "
                                      f"and finite returns")
    return np.array(arr, dtype=np.float64)


def load_checkpoint(path):
    """(policy, θ, config) of a navigation run; (model, θ, config) of any other run.

    path : a run directory or its ``checkpoint.npz``. config["iteration"] is the number
    of meta-iterations done. Raises CheckpointError naming the field at fault.
    """
    if not is_navigation(path):
        return C.load_checkpoint(path)
    state = read(path)
    return state["policy"], state["theta"], dict(state["config"], iteration=state["iteration"])
