"""The conv comparison implementations of benchmarks/bench_conv.py (benchmarks/compare/
omniglot_conv_jax.py and omniglot_conv_torch.py) give mamlnp's meta-gradient: the same network,
θ layout and batch, exact second order and first order, to 1e-10 relative. Skipped where JAX
or PyTorch is not installed (they are comparison instruments, never mamlnp's dependencies)."""
import importlib
import os
import sys

import numpy as np
import pytest

import mamlnp
from mamlnp.meta import maml as M
from mamlnp.tasks.base import TaskBatch

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                    "compare")
sys.path.insert(0, HERE)
common = importlib.import_module("omniglot_conv_common")

SMALL = dict(in_shape=(1, 9, 7), channels=(3, 4), kernel=3, stride=2, pad=1, eps=1e-3)
PAPER = common.GEOMETRY


def case(geom, T, N, K, Q, seed=0):
    model = mamlnp.ConvNet(in_shape=geom["in_shape"], channels=geom["channels"], ways=N,
                           kernel=geom["kernel"], stride=geom["stride"], pad=geom["pad"],
                           bn_eps=geom["eps"])
    theta = model.init(seed) + 0.1 * np.random.default_rng(seed).standard_normal(model.num_params)
    data = common.batch(T, N, K, Q, D=model.sizes[0], ink=0.3, seed=seed)
    return model, theta, data


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("geom, T, N, K, Q, steps",
                         [(SMALL, 3, 3, 2, 1, 2), (PAPER, 2, 5, 1, 1, 1)])
def test_comparison_gives_mamlnp_meta_gradient(framework, geom, T, N, K, Q, steps):
    pytest.importorskip(framework)
    impl = importlib.import_module(f"omniglot_conv_{framework}")
    model, theta, data = case(geom, T, N, K, Q)
    for first_order in (False, True):
        want = M.meta_gradient(model, theta, TaskBatch(*data), 0.4, steps, first_order,
                               backend="numpy")
        got = impl.meta_gradient(theta, *data, 0.4, steps, first_order, geom=geom)
        err = np.abs(got[1] - want[1]).max() / np.abs(want[1]).max()
        print(f"{framework} first_order={first_order}: rel err {err:.2e}")
        assert abs(got[0] - want[0]) <= 1e-10 * abs(want[0])
        assert err <= 1e-10
