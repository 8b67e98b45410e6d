"""benchmarks/compare/navigation_jax.py (the JAX comparison timed by bench_rl_derivatives.py)
computes what mamlnp computes: the meta-gradient and the meta Fisher-vector product, on the
benchmark's policy (2, 100, 100, 2) ReLU, to ~1e-10 relative. Skipped without JAX.

Dimension legend: T tasks, M timesteps per task, P parameters.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

from mamlnp import GaussianPolicy                                   # noqa: E402
from mamlnp.meta import rl                                          # noqa: E402

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "compare" / "navigation_jax.py"


def _module():
    spec = importlib.util.spec_from_file_location("navigation_jax", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("estimator", ["lvc", "maml"])
def test_jax_comparison_computes_what_mamlnp_computes(estimator):
    import jax.numpy as jnp
    nj = _module()
    rng = np.random.default_rng(5)
    T, M = 2, 60
    policy = GaussianPolicy(nj.SIZES, "relu")
    theta = nj.glorot(rng) + 0.05 * rng.standard_normal(policy.num_params)
    pre, post = nj.workload(rng, T, M), nj.workload(rng, T, M)
    v = rng.standard_normal(policy.num_params)
    meta_grad, fvp = nj.make(0.5, estimator)
    params = nj.jax_tree(jnp, nj.tree(theta))
    value, grad = meta_grad(params, tuple(map(jnp.asarray, pre)), tuple(map(jnp.asarray, post)))
    Fv = nj.flat(fvp(params, nj.jax_tree(jnp, nj.tree(v)), tuple(map(jnp.asarray, pre)),
                     jnp.asarray(post[0])))
    ours_pre = [tuple(x[t] for x in pre) for t in range(T)]
    ours_post = [tuple(x[t] for x in post) for t in range(T)]
    for factored in (None, False):
        obj, g = rl.rl_meta_gradient(policy, theta, ours_pre, ours_post, 0.5, estimator,
                                     factored=factored)
        ours_Fv = rl.meta_fvp(policy, theta, ours_pre, list(post[0]), 0.5, v,
                              estimator=estimator, factored=factored) - rl.DAMPING * v
        errs = (abs(obj - float(value)) / abs(obj),
                np.abs(g - nj.flat(grad)).max() / np.abs(g).max(),
                np.abs(ours_Fv - Fv).max() / np.abs(Fv).max())
        print(f"{estimator} factored={factored}: objective {errs[0]:.1e}, meta-gradient "
              f"{errs[1]:.1e}, FVP {errs[2]:.1e}")
        assert max(errs) < 1e-10
