"""The first call's notice: kernels compile once per install, and that takes a while.

Numba compiles the kernels on their first call and caches the machine code beside the
sources (mamlnp/fast/kernels/__pycache__; mamlnp/fast/kernels/__init__.py drops a stale
cache). A cold compile of the training kernels took 40-90 s on the project's 2-core machine
(shared, load-dependent); a warm cache loads in about a second. The commands wrap their first
call in ``first_call_notice``, which listens for Numba's own "numba:compile" event (sent only
when a function is really compiled, not when it is loaded from the cache): so the notice
appears exactly when compiling, whatever the load. The progress bar starts after the first
iteration, so the compile is not in its ETA.
"""
import contextlib
import sys
import time

# Cold compile (empty cache), 2 cores: see first_call_notice.
COMPILE_SECONDS = "40-90"


@contextlib.contextmanager
def first_call_notice(stream=None, backend="numba"):
    """Around a call that may compile kernels: when Numba starts compiling (a cold cache),
    say once (on stderr) that the kernels compile, once per install, and how long that
    takes; when the call ends, how long it took. A warm cache: no message. Nothing for
    ``backend="numpy"`` (the NumPy reference compiles nothing)."""
    try:
        from numba.core import event
    except ImportError:                                 # no numba: nothing compiles
        event = None
    if event is None or backend not in (None, "numba"):
        yield
        return
    stream = sys.stderr if stream is None else stream
    t0, shown = time.perf_counter(), []

    class Notice(event.Listener):
        def on_start(self, ev):
            if not shown:
                shown.append(True)
                print(f"mamlnp: compiling kernels, once: about {COMPILE_SECONDS} s on 2 cores "
                      f"(later runs load them from the cache)", file=stream, flush=True)

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", Notice()):
        yield
    if shown:
        print(f"mamlnp: kernels ready after {time.perf_counter() - t0:.0f} s", file=stream,
              flush=True)
