"""The navigation policy's compiled point: ``CompiledPoint``, a ``FactoredPoint``
(mamlnp/nn/policy_factors.py) whose row passes run the kernels of policy_kernels.py instead
of their NumPy twins (mamlnp/nn/policy_ops.py). Not a model kind of ``kernels_for``: the RL
code (mamlnp/meta/rl.py) picks the point class, ``backend="numba"`` (the default) this one.

Dimension legend: see mamlnp/nn/policy_factors.py.

    policy_kernels.py   relu_rows, product_relu, product_mask, mask_rows (the twins)
"""
from ...nn.policy_factors import FactoredPoint
from . import policy_kernels


class CompiledPoint(FactoredPoint):
    """A ``FactoredPoint`` whose ReLU, masks and thin products are the compiled kernels
    (the same maths; the thin products' sums in k order, about 1e-16 from BLAS's)."""

    ops = policy_kernels
