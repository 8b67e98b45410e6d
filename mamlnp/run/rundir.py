"""The run directory: atomic file writes, the files beside the checkpoint, the lock.

Dimension legend: R history rows.

A run directory ``OUT/`` holds ``checkpoint.npz`` (mamlnp/run/checkpoint.py),
``config.json`` (the config plus reproducibility metadata, for humans), ``history.csv``
(iteration, meta-loss, validation score) and ``.lock``, an advisory lock (flock) held by
the run writing the directory.

Writes are atomic: each file is written to a temporary file in the same directory,
flushed, fsync'ed and moved into place with ``os.replace``, so a crash (or SIGKILL) leaves
either the old file or the new one, never half of one; a symbolic link planted at the path
is replaced, never written through.
"""
import errno
import json
import os
import stat
import tempfile

import numpy as np

from ..errors import CheckpointError, InputError
from ..safeio import atomic_write, atomic_write_all, open_regular  # noqa: F401  (re-exported)

CHECKPOINT_NAME = "checkpoint.npz"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.csv"
LOCK_NAME = ".lock"
EVAL_NAME = "eval"                             # evaluate's default output folder in a run
HISTORY_COLUMNS = ("iteration", "meta_loss", "val_mse")


# ---- atomic file writes ---------------------------------------------------------------


def remove_output_dir(directory):
    """Remove ``directory`` (e.g. a replaced run's eval/) without following links: a link is
    unlinked, never its target emptied."""
    if os.path.islink(directory):
        os.unlink(directory)
    elif os.path.isdir(directory):
        import shutil
        shutil.rmtree(directory)


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


def write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def config_value(run_dir, *keys):
    """``config.json[keys[0]][keys[1]]…`` of the run in ``run_dir`` (for messages and reports:
    the iterations done, the wall time), or None when the file is missing, not a regular file
    (a FIFO planted there is never waited on), over 1 MiB, or not such JSON."""
    try:
        with open_regular(os.path.join(run_dir, CONFIG_NAME), "config.json", 2**20) as f:
            value = json.loads(f.read(2**20 + 1))
        for key in keys:
            value = value[key]
        return value
    except (InputError, OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None


def training_seconds(run_dir, fallback):
    """The run's own training wall time (config.json metadata; summed over resumes), else
    ``fallback``."""
    wall = config_value(run_dir, "metadata", "wall_time_s")
    return float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) \
        else fallback


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
    if overwrite:                               # the replaced run's results go with it
        remove_output_dir(os.path.join(out, EVAL_NAME))
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
