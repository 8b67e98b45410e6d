"""Shared test helpers: centred finite differences and random MLP cases.

Dimension legend: N points, D in, O out, P parameters.

The finite differences here are deliberately independent of mamlnp.check.gradcheck,
so the tests of the model do not rely on the tool they also test.
"""
import os

import numpy as np
import pytest
from hypothesis import settings

from mamlnp import MLP

# Property tests draw the same examples on every run ("ci", the default), so the suite
# is reproducible; HYPOTHESIS_PROFILE=explore draws fresh random examples each run.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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
