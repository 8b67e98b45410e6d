"""Checkpoints: one self-checking ``.npz`` file per run, written atomically.

Dimension legend: P parameters, R history rows.

A run directory ``OUT/`` holds

* ``checkpoint.npz`` — everything needed to continue the run to the same bits:
  the meta-learned arrays (θ (P,), Meta-SGD's α (P,), MAML++'s lslr (s·L,)), the optimizer
  states (Adam m, v (P,), t), the RNG state (``rng.bit_generator.state``), the
  iteration count, the history (R, 3), the trainer's bookkeeping, the config
  (as JSON), a format version and a SHA-256 checksum over all of the above;
* ``config.json``, ``history.csv``, ``.lock`` — mamlnp/run/rundir.py, which also writes
  every file atomically (never through a symbolic link).

Loading reads nothing unchecked (the threat model is in docs/errors.md): sizes are
checked before anything is decompressed (mamlnp.npzread), then the format version
and the checksum, then every field against the model and config it describes
(mamlnp.run.statecheck). The checksum detects corruption, not tampering: it is not a
signature. Every failure is a :class:`mamlnp.errors.CheckpointError` naming the field.
"""
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from ..errors import CheckpointError, InputError
from ..validation import as_float64, nonneg_int
from . import statecheck as S
from ..npzread import NpzReader

from .rundir import (CHECKPOINT_NAME, CONFIG_NAME, HISTORY_COLUMNS, HISTORY_NAME,  # noqa: F401
                     LOCK_NAME, atomic_write, lock_run_dir, make_output_dir,
                     prepare_run_dir, release_run_dir, remove_stale_temp_files, write_history_csv,
                     write_json, _json_default)

FORMAT_VERSION = 1


# ---- the checksum -------------------------------------------------------------------


def checksum(arrays):
    """SHA-256 over every array's name, dtype, shape and bytes, in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---- save ---------------------------------------------------------------------------


def save_checkpoint(path, config, params, optimizer_state=None, rng_state=None,
                    iteration=None, history=None, train_state=None):
    """Write a checkpoint atomically; returns the path of the ``.npz`` written.

    path : a run directory (``path/checkpoint.npz`` is written) or an ``.npz`` file.
    config : the run's JSON-able config dict (config["model"] = model.config()).
    params : {"theta": θ (P,), …} the meta-learned arrays (Meta-SGD adds "alpha" (P,)).
    optimizer_state : {group: optimizer.state_dict()} per entry of ``params``.
    rng_state : ``rng.bit_generator.state`` (a JSON-able dict).
    iteration : meta-iterations done.  history : (R, 3) rows of HISTORY_COLUMNS.
    train_state : {name: array} extra trainer bookkeeping (restored verbatim).
    Everything is checked first (InputError naming the argument; nothing is written): the
    config must describe a model (config["model"]), θ and the other params be finite (P,)
    vectors of it, so that what is saved is what ``read_checkpoint`` accepts.
    """
    file = _npz_path(path)
    arrays = _arrays_to_save(file, config, params, optimizer_state, rng_state, iteration,
                             history, train_state)
    arrays["checksum"] = np.array(checksum(arrays))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(file, lambda f: f.write(buf.getvalue()))
    return file


def _arrays_to_save(file, config, params, optimizer_state, rng_state, iteration, history,
                    train_state):
    """The named arrays of a checkpoint, each argument checked (InputError) as read_checkpoint
    will check it."""
    if not isinstance(config, dict):
        raise InputError(f"config: expected a JSON-able dict, got {type(config).__name__}")
    try:
        config_json = json.dumps(config, sort_keys=True, default=_json_default, allow_nan=False)
        rng_json = json.dumps(rng_state, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"config, rng_state: expected JSON-able values ({exc})") from None
    iteration = nonneg_int("iteration", config.get("iteration", 0) if iteration is None
                           else iteration)
    arrays = {"format_version": np.int64(FORMAT_VERSION), "config_json": np.array(config_json),
              "rng_state_json": np.array(rng_json), "iteration": np.int64(iteration),
              "history": _history_array(history)}
    if not isinstance(params, dict) or "theta" not in params:
        raise InputError(f"params: expected a dict with 'theta', got {params!r:.80}")
    for name, value in params.items():
        arrays[f"param.{name}"] = as_float64(f"params[{name!r}]", value, 1)
    for kind, groups in (("optim", optimizer_state), ("train", {"": train_state})):
        if not isinstance(groups, (dict, type(None))):
            raise InputError(f"optimizer_state: expected a dict of dicts, got {groups!r:.80}")
        for group, state in (groups or {}).items():
            if not isinstance(state, (dict, type(None))):
                raise InputError(f"{kind}: expected a dict of arrays, got {state!r:.80}")
            for key, value in (state or {}).items():
                a = np.asarray(value)
                if a.dtype.kind not in "if" or a.dtype.itemsize != 8:
                    raise InputError(f"{kind} {group}.{key}: expected float64 or int64, got "
                                     f"{a.dtype}")
                arrays[f"{kind}.{group}.{key}" if group else f"{kind}.{key}"] = a
    with S.as_input_error():
        read_arrays(file, arrays)                         # what load would say, now
    return arrays


def _history_array(history):
    try:
        h = np.asarray(np.zeros((0, 3)) if history is None else history, dtype=np.float64)
        return h.reshape(-1, 3) if h.size or h.ndim != 2 else h.reshape(0, 3)
    except (TypeError, ValueError) as exc:
        raise InputError(f"history: expected (R, 3) rows of numbers ({exc})") from None


def _npz_path(path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InputError(f"path: expected a run directory or an .npz checkpoint path, got {path!r}")
    path = os.fspath(path)
    if path.endswith(".npz"):
        return path
    return os.path.join(path, CHECKPOINT_NAME)


# ---- load ---------------------------------------------------------------------------


def read_checkpoint(path):
    """Everything in a checkpoint, verified: a dict with "config", "params",
    "optimizer_state", "rng_state", "iteration", "history", "train_state", "path",
    "model" (the MLP or ConvNet config["model"] describes, mamlnp.nn.spec).

    Raises CheckpointError, naming the field, when the file is missing, truncated, corrupt,
    of another format version, or holds a field that does not fit its model and config.
    """
    file = _npz_path(path)
    if not os.path.isfile(file):
        what = "directory holds no " + CHECKPOINT_NAME if os.path.isdir(path) else "no such file"
        raise CheckpointError(f"checkpoint: {file!r}: {what} (expected a run directory "
                              f"written by 'mamlnp train' or an .npz checkpoint)")
    if not zipfile.is_zipfile(file):
        raise CheckpointError(f"checkpoint: {file!r} is truncated or corrupt: it is not a "
                              f"valid .npz (zip) archive")
    with NpzReader(file) as z:
        arrays = _read_members(file, z)
    stored = str(arrays.pop("checksum"))
    actual = checksum(arrays)
    if stored != actual:
        raise CheckpointError(f"checkpoint: {file!r} is corrupt: its checksum does not match "
                              f"its contents (stored {stored[:12]}…, computed {actual[:12]}…)")
    return read_arrays(file, arrays)


FIXED = {"format_version": "i", "checksum": "U", "iteration": "i", "config_json": "U",
         "rng_state_json": "U", "history": "f"}


def _read_members(file, z):
    """The members, small ones first: the config says how large the others may be."""
    if "format_version" not in z or "checksum" not in z:
        raise CheckpointError(f"checkpoint: {file!r} is not a mamlnp checkpoint "
                              f"(no format version or checksum inside)")
    arrays = {"format_version": z.read("format_version", "i", 1)}
    version = S.scalar_int(file, "format_version", arrays["format_version"])
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint: {file!r} has format version {version}; this "
                              f"mamlnp reads version {FORMAT_VERSION}")
    for key in ("checksum", "iteration", "config_json", "rng_state_json"):
        arrays[key] = z.read(key, FIXED[key], 1)
    iteration = S.scalar_int(file, "iteration", arrays["iteration"])
    config = S.parse_json(file, "config_json", arrays["config_json"], (dict,))
    P = S.model_of(file, config).num_params
    arrays["history"] = z.read("history", "f", 3 * min(iteration, 2**28))
    for key in z.keys():
        if key in FIXED:
            continue
        if key.partition(".")[0] not in ("param", "optim", "train") or "." not in key:
            raise S.fail(file, key, "unexpected member (expected param.*, optim.*, train.*)")
        arrays[key] = z.read(key, "fi", max(P, 1024) + 64)    # (P,) vectors, or MEDIAN_WINDOW
    return arrays


def read_arrays(file, arrays):
    """The checkpoint's state from its named arrays, every field checked (statecheck)."""
    iteration = S.scalar_int(file, "iteration", arrays["iteration"])
    config = S.check_config(file, S.parse_json(file, "config_json", arrays["config_json"],
                                               (dict,)), iteration)
    model = S.model_of(file, config)
    P = model.num_params
    out = {"path": file, "config": config, "model": model, "iteration": iteration,
           "rng_state": S.check_rng_state(file, S.parse_json(
               file, "rng_state_json", arrays["rng_state_json"], (dict, type(None)))),
           "history": S.history(file, arrays["history"], iteration),
           "params": {}, "optimizer_state": {}, "train_state": {}}
    for name, value in arrays.items():
        head, _, rest = name.partition(".")
        if head == "param":
            out["params"][rest] = S.vector(file, name, value, S.group_size(rest, config, model),
                                           "θ" if rest == "theta" else rest)
        elif head == "optim":
            group, _, key = rest.partition(".")
            out["optimizer_state"].setdefault(group, {})[key] = S.optimizer_entry(
                file, name, key, value, S.group_size(group, config, model))
        elif head == "train":
            if value.size > max(P, 1024) or np.isnan(value).any():
                raise S.fail(file, name, f"expected at most {max(P, 1024)} numbers, no NaN")
            out["train_state"][rest] = value
    if "theta" not in out["params"]:
        raise CheckpointError(f"checkpoint: {file!r} holds no parameters θ")
    S.check_groups(file, config, out["params"], out["optimizer_state"])
    return out


def load_checkpoint(path):
    """(model, theta, config) of a trained run.

    path : a run directory (``path/checkpoint.npz``) or an ``.npz`` checkpoint.
    model : the ``mamlnp.MLP`` the run trained, or its ``mamlnp.ConvNet`` (a ``model="conv"``
    run, config["model"]["kind"] == "conv"); theta (P,) float64;
    config : the run's config dict, with config["iteration"] the iterations done
    and, for Meta-SGD, config["learned_alpha"] the learned step sizes (P,); for MAML++,
    config["learned_lslr"] its learned per-step, per-layer steps (s, L).
    """
    state = read_checkpoint(path)
    config, model = dict(state["config"]), state["model"]
    config["iteration"] = state["iteration"]
    needs = ("alpha", "method") + (("inner_steps",) if "lslr" in state["params"] else ())
    for key in needs:                                         # what evaluation reads
        if key not in config:
            raise S.fail(state["path"], f"config.{key}", "missing (expected the run's config)")
    theta = state["params"]["theta"]
    if "alpha" in state["params"]:
        config["learned_alpha"] = np.array(state["params"]["alpha"], dtype=np.float64)
    if "lslr" in state["params"]:                               # MAML++: (s, L)
        config["learned_lslr"] = state["params"]["lslr"].reshape(config["inner_steps"], -1)
    return model, theta, config
