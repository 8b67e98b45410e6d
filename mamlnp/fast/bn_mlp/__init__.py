"""The batch-norm MLP's kernel set (few-shot classification): kernelset.py and its kernels.

Dimension legend: see mamlnp/fast/common/__init__.py and mamlnp/fast/bn_mlp/kernelset.py.

    kernelset.py        BNMLPKernels: meta-gradient, adaptation, curves, accuracy (scalar α)
    bn_kernels.py       the batch-norm layer's four passes fused with σ     (nn/batchnorm.py)
    bn_mlp_kernels.py   the batch-norm MLP's passes, first layer given    (nn/mlp.py)
    classify_kernels.py one task at a time: meta-gradient, adaptation     (meta/maml.py)
    classify_groups.py  s = 1 over groups of tasks: passes and drivers    (meta/maml.py)
    group_products.py   a group's products with θ's weights, factored corrections
    first_layer.py      x W1, Gram matrices and ∇W1 on packed or CSR/CSC rows

It reuses the plain MLP's loss and activation kernels (mamlnp/fast/mlp/mlp_kernels.py,
thin_layers.py).
"""
from .. import common  # noqa: F401  (first: drops stale compiled code)
