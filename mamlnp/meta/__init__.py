"""The meta-learning part: MAML's NumPy reference (maml.py), its variants (FOMAML,
Reptile, Meta-SGD, the pretrained baseline), the outer optimizers, MAML on the
two-parameter toys, and the NumPy reference of the compiled task groups (grouped.py).

What may import what: meta/ imports nn/, tasks/ and (through maml.kernels_for only) fast/.
"""
