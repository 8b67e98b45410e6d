"""The meta-learning part: MAML's NumPy reference (maml.py), its variants (FOMAML,
Reptile, Meta-SGD, the pretrained baseline), the outer optimizers, and MAML on the
two-parameter toys.

What may import what: meta/ imports nn/, tasks/ and (through maml.kernels_for only) fast/.
"""
