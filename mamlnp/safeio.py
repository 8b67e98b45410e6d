"""Files read and written safely: atomically, never through a link, never blocking on a FIFO.

Dimension legend: none (bytes and paths).

The floor of the package (like errors.py and validation.py): the run directory
(mamlnp/run/rundir.py), the checkpoints, every command's outputs and the Omniglot cache
(mamlnp/tasks/omniglot_data.py) use these, so that

* a file is written to a temporary file in its own directory (``mkstemp``: O_EXCL, never a
  link), flushed, fsync'ed and moved into place with ``os.replace``, which replaces a
  symbolic link planted at the path instead of following it; a crash or a full disk leaves
  the previous version whole (``atomic_write``; ``atomic_write_all`` for files that belong
  together: all are written before any is replaced);
* a file is read only if it is a regular file of a plausible size, opened without blocking
  (``open_regular``): a FIFO, a device such as /dev/zero, or (when asked) a link, is refused
  before a byte is read.
"""
import os
import stat
import tempfile

from .errors import InputError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


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
    fsync_dir(directory)


def atomic_write_all(files):
    """Write several files as one: ``files`` {path: bytes}. Every temp file is written and
    fsync'ed first; only when all are on disk are they moved into place. A failure while
    writing (a full disk, ENOSPC) replaces none of them: the previous version of every
    file is kept whole, never a new results.csv beside an old results.json."""
    tmps = {}
    try:
        for path, data in files.items():
            path = os.fspath(path)
            directory = os.path.dirname(os.path.abspath(path))
            fd, tmps[path] = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                              suffix=".tmp", dir=directory)   # never a link
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except BaseException as exc:
        for tmp in tmps.values():
            if os.path.lexists(tmp):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            names = ", ".join(repr(p) for p in files)
            raise type(exc)(exc.errno, f"{exc.strerror or exc}; {names} not written (their "
                            f"previous versions, if any, are kept)", exc.filename) from None
        raise
    for path, tmp in tmps.items():
        os.replace(tmp, path)                   # replaces a link at path, never follows it
    for directory in {os.path.dirname(os.path.abspath(p)) for p in tmps}:
        fsync_dir(directory)
    return list(tmps)


def open_regular(path, name, limit=None, follow_links=True):
    """Open ``path`` for reading if it is a regular file (of at most ``limit`` bytes), without
    blocking: a FIFO, a device (a link to /dev/zero) or, with ``follow_links=False``, a
    symbolic link is refused with an InputError naming ``name`` before anything is read.
    Returns a binary file object."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        link = not follow_links and os.path.islink(path)
        raise InputError(f"{name}: cannot open {os.fspath(path)!r} "
                         f"({'a symbolic link' if link else exc.strerror}); expected a regular "
                         f"file{'' if follow_links else ', not a link'}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (limit is not None and st.st_size > limit):
        os.close(fd)
        what = (f"{st.st_size} bytes, more than the {limit} expected" if stat.S_ISREG(st.st_mode)
                else "not a regular file (a FIFO, a device or a socket)")
        raise InputError(f"{name}: {os.fspath(path)!r} is {what}; expected a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def fsync_dir(directory):
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
