"""The first call's notice: kernels compile once per install, and that takes a while.

Numba compiles the kernels on their first call and caches the machine code beside the
sources (the __pycache__ folders under mamlnp/fast/; mamlnp/fast/common/__init__.py drops a stale
cache). A cold compile takes minutes on the project's 2-core machine, more when other jobs
load it (COMPILE_TIME); a warm cache loads in about a second. The commands wrap their first
call in ``first_call_notice``, which listens for Numba's own "numba:compile" event (sent only
when a function is really compiled, not when it is loaded from the cache): so the notice
appears exactly when compiling, whatever the load. The progress bar starts after the first
iteration, so the compile is not in its ETA.
"""
import contextlib
import sys
import time

# Cold compile (empty cache) of reproduce's kernels on a fresh clone, the project's 2 cores:
# 76 + 51 + 13 s (training, baseline, evaluation) at a load average of 3-6 from other jobs,
# 294 + 140 + 37 s at 9-13; the training kernels alone 64 s at 5.
COMPILE_TIME = "1-8 min on 2 shared cores"
_SAID = []                                              # the long notice: once per process


@contextlib.contextmanager
def first_call_notice(stream=None, backend="numba"):
    """Around a call that may compile kernels: when Numba starts compiling (a cold cache),
    say (on stderr) that the kernels compile, once per install, and how long that takes (the
    estimate once per process; later: "compiling more kernels"); when the call ends, how
    long it took. A warm cache: no message. Nothing for
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
                print("mamlnp: compiling more kernels, once" if _SAID else
                      f"mamlnp: compiling kernels, once: about {COMPILE_TIME} (later runs "
                      f"load them from the cache)", file=stream, flush=True)
                _SAID.append(True)

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compile", Notice()):
        yield
    if shown:
        print(f"mamlnp: kernels ready after {time.perf_counter() - t0:.0f} s", file=stream,
              flush=True)
