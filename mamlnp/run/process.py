"""Process-wide settings of mamlnp's commands: glibc's malloc thresholds, one BLAS thread.

Dimension legend: P parameters, T tasks, N ways, K shots, D = 784 inputs.

Like GOMP_SPINCOUNT (mamlnp.fast.spin_threads), only mamlnp's commands make these
choices (mamlnp/run/cli.py, before any command runs); ``import mamlnp`` changes nothing, and
a setting of the user's own always wins. Neither changes any arithmetic: the same bits.

**Memory.** 
A training iteration allocates and frees arrays of 0.2–2 MB: a meta-batch's inputs
(T·N·K·D floats, 1 MB each at 5-way 1-shot), the meta-gradient (P = 247,621 floats, 2 MB),
the inputs' CSR/CSC (~0.5 MB each). glibc hands out blocks above its mmap threshold (128 KiB
at start, raised to the largest block freed so far) as fresh pages from the kernel, and gives
the free top of its heap back to the kernel once it exceeds the trim threshold (twice the
mmap threshold): either way the next array of that size arrives as fresh pages, and every
first touch of a 4 KiB page is a page fault. On this project's machine (a VM) that is ~0.5 ms
per MB: two fresh 1 MB arrays filled cost 0.99 ms against 0.05 ms for the same arrays reused
(``python`` loop, median of 400). ``keep_freed_memory`` fixes both thresholds (mallopt): blocks
up to MMAP_THRESHOLD come from the heap, and up to TRIM_THRESHOLD of free heap stays mapped
for the next arrays. The cost: a process keeps up to TRIM_THRESHOLD it freed instead of
returning it (its peak resident set, which the freed memory once was part of, is unchanged).
``MAMLNP_MALLOC=0`` turns it off; a ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``
or ``GLIBC_TUNABLES`` of your own wins (glibc applied it at start). Not glibc (macOS, musl,
Windows): nothing is done.

**BLAS threads.** The kernels run their tasks on Numba's threads, whose idle workers spin
(GOMP_SPINCOUNT) between parallel calls; a NumPy product big enough for OpenBLAS's own
threads (the dense first layer of a meta-batch, ``fast.bn_mlp.kernelset._inputs``, when more than a
quarter of its inputs are ink) then has an OpenBLAS thread fighting a spinning Numba worker
for the second core, and OpenBLAS's idle threads spin in turn while the next parallel region
waits for a core. Measured in 1000 5-way 1-shot iterations (benchmarks/profile_train.py):
``_inputs`` 4.4 ms per iteration on average (median 1.8, max 86 ms) with OpenBLAS's default
threads, 2.2 ms (median 2.0, max 10 ms) with one. ``single_blas_thread`` sets one thread in
every OpenBLAS the process has loaded (NumPy's, SciPy's; its products split rows and columns
among threads, never the sum, so the bits do not change). ``MAMLNP_BLAS=0`` turns it off; an
``OPENBLAS_NUM_THREADS``, ``GOTO_NUM_THREADS`` or ``OMP_NUM_THREADS`` of your own wins.
"""
import ctypes
import os
import platform

from ..fast.common.blas_threads import loaded_openblas

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2 ** 20                    # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 512 * 2 ** 20
USER_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(environ=os.environ):
    """Set glibc's mmap and trim thresholds (see the module docstring) unless turned off or
    chosen by the user; returns whether they were set."""
    if environ.get("MAMLNP_MALLOC", "").strip() == "0" or any(k in environ for k in USER_KEYS):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


BLAS_KEYS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")


def single_blas_thread(environ=os.environ):
    """One thread for every loaded OpenBLAS (see the module docstring) unless turned off or
    chosen by the user; returns the number of libraries set. Import NumPy (and SciPy, for
    the kernels' BLAS) first: a library loaded later keeps its default."""
    if environ.get("MAMLNP_BLAS", "").strip() == "0" or any(k in environ for k in BLAS_KEYS):
        return 0
    import scipy.linalg.cython_blas  # noqa: F401  (the kernels' BLAS: loaded now, set now)
    done = 0
    for path in loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter.argtypes, setter.restype = (ctypes.c_int,), None
                setter(1)
                done += 1
                break
    return done


LOADED_COMMANDS = ("train", "reproduce", "evaluate", "gradcheck")


def load_notice(command, stream=None, load=None, cores=None, environ=os.environ):
    """One line on stderr when the machine is busier than its cores (1-minute load average
    above the core count) before a command that computes: its timings will be slower than
    the documented ones, and NUMBA_NUM_THREADS=1 keeps the kernels from fighting the other
    jobs for the cores. Returns the line, or None (not busy, no load average (Windows), the
    user already chose NUMBA_NUM_THREADS, or ``stream`` is not a terminal: a script's or a
    test's stderr gets its one-line errors only)."""
    import sys
    stream = sys.stderr if stream is None else stream
    if command not in LOADED_COMMANDS or "NUMBA_NUM_THREADS" in environ:
        return None
    if not (getattr(stream, "isatty", None) and stream.isatty()):
        return None
    try:
        load = os.getloadavg()[0] if load is None else load
    except (OSError, AttributeError):           # no load average (Windows)
        return None
    cores = (os.cpu_count() or 1) if cores is None else cores
    if load <= cores:
        return None
    line = (f"mamlnp {command}: note: the machine is busy (load average {load:.1f} on {cores} "
            f"core{'s' if cores > 1 else ''}): expect slower runs than the documented times; "
            f"NUMBA_NUM_THREADS=1 python -m mamlnp {command} ... often runs faster then")
    print(line, file=stream, flush=True)
    return line
