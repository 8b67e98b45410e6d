"""The ConvNet's kernel set (few-shot classification with convolutions): kernelset.py and its
kernels.

Dimension legend: see mamlnp/fast/conv/conv_kernels.py and mamlnp/fast/conv/kernelset.py.

    kernelset.py      ConvKernels: meta-gradient, adaptation, curves, accuracy (scalar or (P,) α)
    conv_kernels.py   im2col/col2im, the network's forward, backward, R-passes (nn/conv.py,
                      nn/convnet.py)
    conv_maml.py      one task's inner loop and meta-gradient, the drivers over T tasks
                      (meta/maml.py)

It reuses the batch-norm MLP's batch-norm kernels (mamlnp/fast/bn_mlp/bn_kernels.py, on the
pixel rows), its accuracy and row-mean kernels, and the plain MLP's loss kernels.
"""
from .. import common  # noqa: F401  (first: drops stale compiled code)
