"""Shared test helpers: centred finite differences and random MLP cases; the suite's
environment.

Dimension legend: N points, D in, O out, P parameters.

The finite differences here are deliberately independent of mamlnp.check.gradcheck,
so the tests of the model do not rely on the tool they also test.

The environment (``suite_environment``, set before any test module or notebook runs): the
same in ``python -m pytest`` and in CI (.ci/run only installs and runs that command), and
nothing written outside the repository and temporary folders:

* MAMLNP_DATA_DIR: the real Omniglot, ../shared/data/omniglot beside the checkout, when it is
  there and the variable is unset (the real-data tests and notebook 04 use it; else they skip
  or take their synthetic path);
* MAMLNP_CACHE_DIR (the preprocessed Omniglot, 6.6 MB), MPLCONFIGDIR (matplotlib's font
  cache), IPYTHONDIR and JUPYTER_RUNTIME_DIR (the notebooks' kernels): one temporary folder
  for the session, removed at its end, unless the variable is already set.
"""
import atexit
import os
import pathlib
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

from mamlnp import MLP

# Property tests draw the same examples on every run ("ci", the default), so the suite
# is reproducible; HYPOTHESIS_PROFILE=explore draws fresh random examples each run.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "omniglot"


def suite_environment(environ=os.environ):
    """Set the suite's environment variables (the module docstring); returns what was set."""
    set_ = {}
    if not environ.get("MAMLNP_DATA_DIR") and SHARED_DATA.is_dir():
        set_["MAMLNP_DATA_DIR"] = str(SHARED_DATA)
    keys = ("MAMLNP_CACHE_DIR", "MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR")
    if any(not environ.get(k) for k in keys):
        tmp = tempfile.mkdtemp(prefix="mamlnp-tests-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        for k in keys:
            if not environ.get(k):
                set_[k] = os.path.join(tmp, k.lower())
    environ.update(set_)
    return set_


suite_environment()

def rel_error(a, b):
    """‖a − b‖ / max(‖a‖, ‖b‖, 1e-300)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def num_grad(f, x, eps=1e-5):
    """cs231n-style centred FD of a scalar f at the array x (any shape): ∂f/∂x, shape of x."""
    x = np.array(x, dtype=float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = f(x)
        x[i] = old - eps
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def num_dir(f, x, v, eps=1e-5):
    """[f(x + ε v) − f(x − ε v)] / 2ε for f of any output shape."""
    return (np.asarray(f(x + eps * v)) - np.asarray(f(x - eps * v))) / (2 * eps)


def mlp_case(seed, sizes, activation, loss="mse", n=6, margin=1e-3):
    """(model, θ, x, y) with uniform init; for ReLU redrawn until every hidden |z| > margin."""
    model = MLP(sizes, activation, loss)
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        theta = model.init(seed + 1000 * attempt, scheme="uniform")
        x = rng.standard_normal((n, sizes[0]))                           # (N, D)
        if loss == "mse":
            y = rng.standard_normal((n, sizes[-1]))                      # (N, O)
        else:
            y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]          # one-hot (N, O)
        _, caches = model._forward(theta, x)
        zmin = min(np.abs(a[0]).min() for _, a in caches if a is not None)
        if activation != "relu" or zmin > margin:
            return model, theta, x, y
    raise RuntimeError("no safe ReLU case")


@pytest.fixture
def fd():
    """The helpers above as a fixture: fd.rel_error, fd.num_grad, fd.num_dir, fd.mlp_case."""
    class FD:
        pass
    for f in (rel_error, num_grad, num_dir, mlp_case):
        setattr(FD, f.__name__, staticmethod(f))
    return FD
