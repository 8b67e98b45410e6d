"""Checkpoints: one self-checking ``.npz`` file per run, written atomically.

Dimension legend: P parameters, R history rows.

A run directory ``OUT/`` holds

* ``checkpoint.npz`` — everything needed to continue the run to the same bits:
  the meta-learned arrays (θ (P,), and Meta-SGD's α (P,)), the optimizer
  states (Adam m, v (P,), t), the RNG state (``rng.bit_generator.state``), the
  iteration count, the history (R, 3), the trainer's bookkeeping, the config
  (as JSON), a format version and a SHA-256 checksum over all of the above;
* ``config.json`` — the config plus reproducibility metadata, for humans;
* ``history.csv`` — iteration, meta-loss, validation MSE;
* ``.lock`` — an advisory lock (flock) held by the run writing the directory.

Writes are atomic: each file is written to a temporary file in the same
directory, flushed, fsync'ed and moved into place with ``os.replace``, so a
crash (or SIGKILL) leaves either the old file or the new one, never half of one.
Loading verifies the checksum and the format version and raises
:class:`mamlnp.errors.CheckpointError` on any mismatch.
"""
import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from ..errors import CheckpointError, InputError

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.csv"
LOCK_NAME = ".lock"
HISTORY_COLUMNS = ("iteration", "meta_loss", "val_mse")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# ---- atomic file writes ---------------------------------------------------------------


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync, then os.replace."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def remove_stale_temp_files(directory):
    """Delete temp files a killed writer left behind (``.checkpoint.npz.*.tmp`` etc.)."""
    for name in os.listdir(directory):
        if name.endswith(".tmp") and any(name.startswith(f".{base}.") for base in
                                         (CHECKPOINT_NAME, CONFIG_NAME, HISTORY_NAME)):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _fsync_dir(directory):
    try:                                    # make the rename itself durable (POSIX)
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_history_csv(path, history, columns=HISTORY_COLUMNS):
    """history (R, 3): iteration, meta_loss, val_mse (classification: val_accuracy; NaN
    where not evaluated), under the header ``columns``."""
    lines = [",".join(columns)]
    for it, loss, val in np.asarray(history).reshape(-1, 3):
        lines.append(f"{int(it)},{float(loss)!r},{'' if np.isnan(val) else repr(float(val))}")
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ---- the run directory --------------------------------------------------------------


def prepare_run_dir(out, resume=False, overwrite=False):
    """Create the run directory ``out`` and check it is writable (call before training).

    Refuses to start over a run already there unless ``resume`` or ``overwrite``."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise InputError(f"out: expected a non-empty directory path, got {out!r}")
    out = os.fspath(out)
    ckpt = os.path.join(out, CHECKPOINT_NAME)
    if resume and not os.path.exists(ckpt):            # check before creating anything
        raise CheckpointError(f"resume: {out!r} holds no {CHECKPOINT_NAME} to resume from; "
                              f"drop --resume to start a new run there")
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"out: cannot write the run directory {out!r} ({exc.strerror or exc}); "
                         f"expected a writable directory path") from None
    if not resume and not overwrite and os.path.exists(ckpt):
        raise InputError(f"out: {out!r} already holds a run ({CHECKPOINT_NAME}); pass --resume "
                         f"to continue it, --overwrite to replace it, or choose another --out")
    lock = lock_run_dir(out)
    remove_stale_temp_files(out)                # safe: no other writer holds the lock
    return out, lock


def lock_run_dir(out):
    """An exclusive advisory lock on ``out/.lock`` (POSIX flock), held while the returned
    file stays open and released by the OS when the process dies, even by SIGKILL.
    Two runs writing one directory would interleave their checkpoints."""
    try:
        import fcntl
    except ImportError:                         # not POSIX: no lock
        return None
    f = open(os.path.join(out, LOCK_NAME), "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise InputError(f"out: another process is training in {out!r} right now (it holds "
                         f"{LOCK_NAME}); wait for it to finish or choose another --out") from None
    return f


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
    """
    file = _npz_path(path)
    iteration = int(config.get("iteration", 0) if iteration is None else iteration)
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "config_json": np.array(json.dumps(config, sort_keys=True, default=_json_default)),
        "rng_state_json": np.array(json.dumps(rng_state)),
        "iteration": np.int64(iteration),
        "history": np.asarray(np.zeros((0, 3)) if history is None else history,
                              dtype=np.float64).reshape(-1, 3),
    }
    for name, value in params.items():
        arrays[f"param.{name}"] = np.asarray(value, dtype=np.float64)
    for group, state in (optimizer_state or {}).items():
        for key, value in state.items():
            arrays[f"optim.{group}.{key}"] = np.asarray(value)
    for name, value in (train_state or {}).items():
        arrays[f"train.{name}"] = np.asarray(value)
    arrays["checksum"] = np.array(checksum(arrays))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(file, lambda f: f.write(buf.getvalue()))
    return file


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
    "optimizer_state", "rng_state", "iteration", "history", "train_state", "path".

    Raises CheckpointError when the file is missing, truncated, corrupt, or of
    another format version.
    """
    file = _npz_path(path)
    if not os.path.isfile(file):
        what = "directory holds no " + CHECKPOINT_NAME if os.path.isdir(path) else "no such file"
        raise CheckpointError(f"checkpoint: {file!r}: {what} (expected a run directory "
                              f"written by 'mamlnp train' or an .npz checkpoint)")
    if not zipfile.is_zipfile(file):
        raise CheckpointError(f"checkpoint: {file!r} is truncated or corrupt: it is not a "
                              f"valid .npz (zip) archive")
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint: {file!r} is truncated or corrupt and cannot be "
                              f"read ({type(exc).__name__}: {exc})") from None
    _verify(file, arrays)
    return _unpack(file, arrays)


def _verify(file, arrays):
    if "format_version" not in arrays or "checksum" not in arrays:
        raise CheckpointError(f"checkpoint: {file!r} is not a mamlnp checkpoint "
                              f"(no format version or checksum inside)")
    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint: {file!r} has format version {version}; this "
                              f"mamlnp reads version {FORMAT_VERSION}")
    stored = str(arrays.pop("checksum"))
    actual = checksum(arrays)
    if stored != actual:
        raise CheckpointError(f"checkpoint: {file!r} is corrupt: its checksum does not match "
                              f"its contents (stored {stored[:12]}…, computed {actual[:12]}…)")


def _unpack(file, arrays):
    out = {"path": file, "config": json.loads(str(arrays["config_json"])),
           "rng_state": json.loads(str(arrays["rng_state_json"])),
           "iteration": int(arrays["iteration"]), "history": arrays["history"],
           "params": {}, "optimizer_state": {}, "train_state": {}}
    for name, value in arrays.items():
        head, _, rest = name.partition(".")
        if head == "param":
            out["params"][rest] = value
        elif head == "optim":
            group, _, key = rest.partition(".")
            out["optimizer_state"].setdefault(group, {})[key] = value
        elif head == "train":
            out["train_state"][rest] = value
    if "theta" not in out["params"]:
        raise CheckpointError(f"checkpoint: {file!r} holds no parameters θ")
    return out


def load_checkpoint(path):
    """(model, theta, config) of a trained run.

    path : a run directory (``path/checkpoint.npz``) or an ``.npz`` checkpoint.
    model : the ``mamlnp.MLP`` the run trained; theta (P,) float64;
    config : the run's config dict, with config["iteration"] the iterations done
    and, for Meta-SGD, config["learned_alpha"] the learned step sizes (P,).
    """
    from ..nn.mlp import MLP
    state = read_checkpoint(path)
    config = dict(state["config"])
    config["iteration"] = state["iteration"]
    try:
        model = MLP(**config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: {state['path']!r} describes an invalid model "
                              f"{config.get('model')!r} ({exc})") from None
    theta = np.array(state["params"]["theta"], dtype=np.float64)
    if theta.shape != (model.num_params,):
        raise CheckpointError(f"checkpoint: {state['path']!r}: θ has shape {theta.shape}, "
                              f"but model {model.sizes} has {model.num_params} parameters")
    if "alpha" in state["params"]:
        config["learned_alpha"] = np.array(state["params"]["alpha"], dtype=np.float64)
    return model, theta, config
