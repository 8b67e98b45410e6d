"""Reliable runs: divergence detection, Ctrl-C/SIGTERM handling, reproducibility metadata.

Used by mamlnp.run.train; kept apart so the training loop reads as the algorithm.

Divergence rule (checked BEFORE the outer step is taken, so a diverged state is
never written): iteration n diverges when its meta-loss is NaN or infinite, above
``LOSS_LIMIT`` = 1e6, or above ``MEDIAN_FACTOR`` = 1e3 times the median of the
previous ``MEDIAN_WINDOW`` = 100 meta-losses (the median is refreshed every 100
iterations, so it costs nothing per iteration; before the first 100 only the
absolute rules apply), or when a meta-gradient holds NaN or inf. For the sinusoid
the meta-loss starts near E[A²]/2 ≈ 4 and normal training noise stays well within
a factor 10 of the median, so 1e3 only fires on a real explosion.
"""
import functools
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from ..errors import DivergenceError

LOSS_LIMIT, MEDIAN_FACTOR, MEDIAN_WINDOW = 1e6, 1e3, 100


class DivergenceGuard:
    """Keeps the last MEDIAN_WINDOW meta-losses and raises DivergenceError on a bad step."""

    def __init__(self):
        self.recent = np.zeros(MEDIAN_WINDOW)           # ring buffer of meta-losses
        self.count = 0
        self.median = np.inf

    def loss_problem(self, loss):
        """Why the meta-loss ``loss`` is refused (a phrase for the message), or None: not
        finite, above LOSS_LIMIT, or above MEDIAN_FACTOR × the recent median."""
        if not math.isfinite(loss):
            return f"the meta-loss is {loss!r}"
        if loss > LOSS_LIMIT:
            return f"the meta-loss {loss:.4g} exceeds {LOSS_LIMIT:.0e}"
        if loss > MEDIAN_FACTOR * self.median:
            return (f"the meta-loss {loss:.4g} is over {MEDIAN_FACTOR:.0e} x the median "
                    f"{self.median:.4g} of the last {MEDIAN_WINDOW} iterations")
        return None

    def state_problem(self, val_loss, params):
        """Why a state about to be saved is refused, or None: a parameter array holds NaN or
        inf, or its validation loss ``val_loss`` fails ``loss_problem``'s rules."""
        for name, p in params.items():
            if not np.all(np.isfinite(p)):
                return f"the parameters {name} hold NaN or infinite values"
        why = self.loss_problem(float(val_loss))
        return None if why is None else f"on the validation tasks, {why}"

    def accepts(self, loss):
        """Whether ``check`` lets the meta-loss pass; the gradients are checked apart (the
        fused kernel's finiteness flag)."""
        return self.loss_problem(loss) is None

    def check(self, iteration, loss, grads, hint):
        """Raise DivergenceError naming ``iteration`` if ``loss``/``grads`` are unusable.
        ``hint()`` (called only then) ends the message: what to change, what is kept."""
        why = self.loss_problem(loss)
        if why is None:
            bad = [name for name, g in grads.items() if not np.all(np.isfinite(g))]
            if not bad:
                return
            why = f"the meta-gradient w.r.t. {bad[0]} holds NaN or infinite values"
        raise DivergenceError(f"training diverged at iteration {iteration}: {why}. {hint()}",
                              iteration=iteration, loss=float(loss))

    def record(self, loss):
        self.recent[self.count % MEDIAN_WINDOW] = loss
        self.count += 1
        if self.count % MEDIAN_WINDOW == 0:
            self.median = float(np.median(self.recent))

    def state_dict(self):
        return {"recent": self.recent.copy(), "n_recent": np.int64(self.count),
                "median": np.float64(self.median)}

    def load_state_dict(self, state):
        self.recent = np.array(state["recent"], dtype=np.float64)
        self.count, self.median = int(state["n_recent"]), float(state["median"])


class StopSignals:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only records itself in
    ``.signum`` (the loop then checkpoints and stops at the end of the iteration);
    a second one acts as usual at once (KeyboardInterrupt / termination)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._previous = None, {}

    @property
    def hit(self):
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum
        self._restore()

    def _restore(self):
        for sig, previous in self._previous.items():
            if previous is None:                        # set outside Python: the defaults
                previous = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, previous)
        self._previous = {}

    def __exit__(self, *exc):
        self._restore()


def metadata(backend, seed, wall_time, iteration):
    """Reproducibility metadata recorded in a run's config.json."""
    from importlib import metadata as im
    from .._version import __version__
    meta = {"python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform(), "backend": backend, "cpu_count": os.cpu_count(),
            "seed": seed, "wall_time_s": round(wall_time, 3), "iteration": iteration,
            "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": git_commit(), "mamlnp": __version__}
    try:
        meta["numba"] = im.version("numba")
    except im.PackageNotFoundError:
        meta["numba"] = None
    numba = sys.modules.get("numba")                    # only if a numba run imported it
    meta["threads"] = {"numba": numba.get_num_threads() if numba else None,
                       **{k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                        "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    return meta


@functools.lru_cache(maxsize=None)
def git_commit():
    """HEAD of the git checkout mamlnp is imported from, or None: asked once per process, at
    the run's first config write, so a run records the commit it started from (the code it
    runs), not a commit made while it trained."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=os.path.dirname(os.path.abspath(__file__)))
        return res.stdout.strip() if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
