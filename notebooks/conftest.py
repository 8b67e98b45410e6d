"""pytest runs the notebooks here through nbmake (``--nbmake`` in pyproject.toml).

The notebooks' kernels inherit this process's environment: MAMLNP_FAST=1 makes
them use coarse grids and short training so the three run in a few minutes.
Run ``MAMLNP_FAST=0 python -m pytest notebooks`` to execute them in full.
The jupytext twins (``NN_name.py``) are not test modules (no ``test_`` prefix).
"""
import os

os.environ.setdefault("MAMLNP_FAST", "1")
