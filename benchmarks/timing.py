"""Helpers shared by the benchmark scripts (not a benchmark itself): a timing block, and
whether a comparison's Python has a module.

Dimension legend: n timed calls.
"""
import statistics
import subprocess
import time


def grad_and_iteration_block(grad, iteration, n):
    """(median ms per ``grad()``, median ms per ``iteration()``, CPU ms per ``grad()`` over all
    threads: the process's CPU time over the n calls / n), each timed over n calls."""
    out = []
    for f in (grad, iteration):
        ts, c0 = [], time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out.append(1e3 * statistics.median(ts))
        if f is grad:
            cpu = 1e3 * (time.process_time() - c0) / n
    return out + [cpu]


def has_module(python, module):
    """Whether ``python`` can import ``module``."""
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
