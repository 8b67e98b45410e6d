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
crash (or SIGKILL) leaves either the old file or the new one, never half of one;
a symbolic link planted at the path is replaced, never written through.

Loading reads nothing unchecked (the threat model is in docs/errors.md): sizes are
checked before anything is decompressed (mamlnp.run.npzread), then the format version
and the checksum, then every field against the model and config it describes
(mamlnp.run.statecheck). The checksum detects corruption, not tampering: it is not a
signature. Every failure is a :class:`mamlnp.errors.CheckpointError` naming the field.
"""
import errno
import hashlib
import io
import json
import os
import stat
import tempfile
import zipfile

import numpy as np

from ..errors import CheckpointError, InputError
from ..validation import as_float64, nonneg_int
from . import statecheck as S
from .npzread import NpzReader

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
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)                # O_EXCL: never a link
        os.fchmod(fd, 0o666 & ~_UMASK)          # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                   # replaces a link at path, never follows it
    except BaseException as exc:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:    # e.g. ENOSPC in write()
            raise type(exc)(exc.errno, f"{exc.strerror or exc}; {path!r} was not written "
                            f"(its previous version, if any, is kept)", path) from None
        raise
    _fsync_dir(directory)


def make_output_dir(directory):
    """Create ``directory`` (and parents) for outputs; refuse one that is a symbolic link
    (planted links are never written through)."""
    directory = os.fspath(directory)
    if os.path.islink(directory):
        raise InputError(f"out: {directory!r} is a symbolic link; expected a directory "
                         f"(mamlnp never writes through a link: remove it or pass its target)")
    os.makedirs(directory, exist_ok=True)
    return directory


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
    if resume and overwrite:
        raise InputError("resume, overwrite: expected at most one of them (--resume continues "
                         "the run in --out, --overwrite replaces it)")
    if resume and not os.path.exists(ckpt):            # check before creating anything
        raise CheckpointError(f"resume: {out!r} holds no {CHECKPOINT_NAME} to resume from; "
                              f"drop --resume to start a new run there")
    try:
        make_output_dir(out)
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
    Two runs writing one directory would interleave their checkpoints. A finished run
    removes the file (``release_run_dir``); a lock taken on a file that was removed
    meanwhile is not a lock, so the path is checked to still be the locked file."""
    try:
        import fcntl
    except ImportError:                         # not POSIX: no lock
        return None
    path = os.path.join(out, LOCK_NAME)
    for _ in range(100):
        f = _open_lock_file(path)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise InputError(f"out: another process is training in {out!r} right now (it "
                             f"holds {LOCK_NAME}); wait for it to finish or choose another "
                             f"--out") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(f.fileno()).st_ino
        except OSError:
            same = False
        if same:
            f.lock_path = path
            return f
        f.close()                               # removed by a run that just finished: again
    raise InputError(f"out: could not take the lock {path!r}: it keeps being replaced")


def _open_lock_file(path):
    try:                                        # O_NOFOLLOW: a planted link is refused
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW |
                     os.O_NONBLOCK, 0o666)             # a FIFO planted there: no blocking
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
    except OSError as exc:
        raise InputError(f"out: cannot open the lock file {path!r} ({exc.strerror}); expected "
                         f"a regular file or none (mamlnp never writes through a symbolic "
                         f"link)") from None
    return os.fdopen(fd, "a")


def release_run_dir(lock):
    """Remove the run directory's .lock while still holding it, then release it: a finished
    or stopped run leaves no lock file behind."""
    if lock is None:
        return
    try:
        os.unlink(lock.lock_path)
    except OSError:
        pass
    lock.close()


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
    "model" (``MLP(**config["model"])``).

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
    return out


def load_checkpoint(path):
    """(model, theta, config) of a trained run.

    path : a run directory (``path/checkpoint.npz``) or an ``.npz`` checkpoint.
    model : the ``mamlnp.MLP`` the run trained; theta (P,) float64;
    config : the run's config dict, with config["iteration"] the iterations done
    and, for Meta-SGD, config["learned_alpha"] the learned step sizes (P,); for MAML++,
    config["learned_lslr"] its learned per-step, per-layer steps (s, L).
    """
    state = read_checkpoint(path)
    config, model = dict(state["config"]), state["model"]
    config["iteration"] = state["iteration"]
    for key in ("alpha", "method"):                           # what evaluation reads
        if key not in config:
            raise S.fail(state["path"], f"config.{key}", "missing (expected the run's config)")
    theta = state["params"]["theta"]
    if "alpha" in state["params"]:
        config["learned_alpha"] = np.array(state["params"]["alpha"], dtype=np.float64)
    if "lslr" in state["params"]:                               # MAML++: (s, L)
        config["learned_lslr"] = state["params"]["lslr"].reshape(config["inner_steps"], -1)
    return model, theta, config
