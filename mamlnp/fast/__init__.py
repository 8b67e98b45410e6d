"""The compiled path: Numba kernels (fast/kernels/) and their entry points (fast/api.py).

What may import what: fast/ imports nn/ (the MLP's geometry), errors and validation, never
meta/ or run/: mamlnp.meta.maml.kernels_for is the one place that dispatches to it.
"""
