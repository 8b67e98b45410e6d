"""Hold the kernels' BLAS on one thread for the length of a call (Python only, no Numba).

Dimension legend: none (thread counts).

The compiled kernels call SciPy's BLAS ``dgemm`` (common/linalg.py) from inside their own
parallel region, one call per thread. OpenBLAS, given a product above its threshold
(M·R·W > 65536·4 multiply-adds), starts its own thread pool inside that region, and the
two pools then fight over the cores (common/linalg.py ``gemm_st``: 183 ms of CPU for a 5-way
5-shot meta-gradient instead of 50). ``one_blas_thread()`` sets SciPy's OpenBLAS to one
thread for the duration of a ``with`` block and restores the count after it, so a kernel
may hand OpenBLAS a product of any size. NumPy's own OpenBLAS (a separate library) is
left alone.

Where SciPy's BLAS is not an OpenBLAS this module can find (no /proc/self/maps, another
BLAS), ``one_blas_thread()`` yields False and the kernels cut big products into row
blocks under the threshold instead (the same numbers, a little slower).

Reference: none (a context manager, no arithmetic); tests: tests/test_classify_groups.py.
"""
import contextlib
import ctypes
import os
import threading
from functools import lru_cache

_SETTERS = ("scipy_openblas_set_num_threads", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads", "openblas_get_num_threads")
_lock = threading.Lock()


def loaded_openblas(maps="/proc/self/maps"):
    """The paths of the OpenBLAS libraries this process has loaded (Linux; else [])."""
    try:
        with open(maps) as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/") and ".so" in os.path.basename(p))


@lru_cache(maxsize=1)
def _scipy_openblas():
    """(get, set) of the OpenBLAS that SciPy's cython_blas uses, or None. NumPy's bundled
    OpenBLAS exports only the ``…64_`` names (ILP64), so the names here pick SciPy's."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)
    for path in loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, put in zip(_GETTERS, _SETTERS):
            if hasattr(lib, get) and hasattr(lib, put):
                getter, setter = getattr(lib, get), getattr(lib, put)
                getter.restype, getter.argtypes = ctypes.c_int, []
                setter.restype, setter.argtypes = None, [ctypes.c_int]
                return getter, setter
    return None


_held = [0, 1]                        # [blocks open now, the thread count before the first]


@contextlib.contextmanager
def one_blas_thread():
    """``with one_blas_thread() as pinned:`` SciPy's OpenBLAS on one thread inside the
    block (pinned True), or nothing changed (pinned False: no OpenBLAS found). Blocks may
    nest or overlap across Python threads: the first to open saves the count, the last to
    close restores it."""
    fns = _scipy_openblas()
    if fns is None:
        yield False
        return
    getter, setter = fns
    with _lock:
        if _held[0] == 0:
            _held[1] = getter()
            setter(1)
        _held[0] += 1
    try:
        yield True
    finally:
        with _lock:
            _held[0] -= 1
            if _held[0] == 0:
                setter(_held[1])
