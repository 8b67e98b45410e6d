"""Checking: centred finite differences (fdcheck.py) and the gradcheck table built on them
(gradcheck.py, ``python -m mamlnp gradcheck``).

What may import what: check/ imports nn/, tasks/, meta/ (and fast/ through meta).
"""
