"""glibc malloc settings for mamlnp's commands: big arrays from the heap, freed memory kept.

Dimension legend: P parameters, T tasks, N ways, K shots, D = 784 inputs.

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

Like GOMP_SPINCOUNT (mamlnp.fast.kernels.spin_threads), only mamlnp's commands set this
(mamlnp/run/cli.py); ``import mamlnp`` changes nothing. ``MAMLNP_MALLOC=0`` turns it off; a
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` of your own wins
(glibc applied it at start). Not glibc (macOS, musl, Windows): nothing is done. Memory
placement changes no arithmetic: the same bits with and without.
"""
import ctypes
import os
import platform

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
