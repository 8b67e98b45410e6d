"""The first call's notice: kernels compile once per install, and that takes a while.

Numba compiles the kernels on their first call and caches the machine code beside the
sources (mamlnp/fast/kernels/__pycache__; mamlnp/fast/kernels/__init__.py drops a stale
cache). A cold compile of the training kernels took 40-90 s on the project's 2-core machine
(shared, load-dependent); a warm cache loads in about a second. The commands wrap their first
call in ``first_call_notice`` so a user sees why nothing moves, and the progress bar starts
after the first iteration, so the compile is not in its ETA.
"""
import contextlib
import sys
import threading
import time

# Cold compile (empty cache), 2 cores: see first_call_notice.
COMPILE_SECONDS = "40-90"


@contextlib.contextmanager
def first_call_notice(after=2.0, stream=None, backend="numba"):
    """Around a call that may compile kernels: if it is still running after ``after`` s,
    say (on stderr) that the kernels are compiling and how long that
    takes, and when it ends, how long it took. A warm cache loads in ~1 s: no message.
    Silent for ``backend="numpy"`` (the NumPy reference compiles nothing)."""
    if backend not in (None, "numba"):
        yield
        return
    stream = sys.stderr if stream is None else stream
    t0, shown = time.perf_counter(), []

    def say():
        shown.append(True)
        print(f"mamlnp: compiling kernels, once: about {COMPILE_SECONDS} s on 2 cores "
              f"(later runs load them from the cache)", file=stream, flush=True)

    timer = threading.Timer(after, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if shown:
            print(f"mamlnp: kernels ready after {time.perf_counter() - t0:.0f} s",
                  file=stream, flush=True)
