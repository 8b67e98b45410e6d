"""The model part: activations, losses, dense layers and the MLP, each derivative by hand.

What may import what: nn/ imports only mamlnp.errors and mamlnp.validation.
"""
