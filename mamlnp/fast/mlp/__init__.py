"""The plain MLP's kernel set (sinusoid regression): kernelset.py, and the kernels it runs.

Dimension legend: see mamlnp/fast/common/__init__.py.

    kernelset.py      MLPKernels: every method of mamlnp/fast/kernelset.py, scalar or (P,) α
    fused.py          FusedMAML: one (FO)MAML + Adam iteration on sinusoid tasks, one call
    mlp_kernels.py    forward, loss, backward, R-pass of one task      (nn/mlp.py, nn/layers.py)
    thin_layers.py    the D = 1 input and O = 1 output layers fused with their neighbours
    maml_kernels.py   inner loop, reverse pass, drivers over tasks     (meta/maml.py)
    train_kernels.py  the fused iteration's kernels                    (run/train.py _iteration)
"""
from .. import common  # noqa: F401  (first: drops stale compiled code)
