"""The exceptions mamlnp raises.

Every error names the argument at fault, what it got, and what was expected.
All of them derive from :class:`MamlnpError`, itself a ``ValueError``, so
``except ValueError`` keeps working for code that does not know about mamlnp.
"""


class MamlnpError(ValueError):
    """Base class of every error mamlnp raises on purpose."""


class InputError(MamlnpError):
    """A public function got an argument of the wrong shape, dtype, range or value."""


class CheckpointError(MamlnpError):
    """A checkpoint is missing, corrupt, truncated, of another format version, or
    was written for another architecture."""


class DivergenceError(MamlnpError):
    """A training run produced a NaN, infinite or exploding loss."""

    def __init__(self, message, iteration=None, loss=None):
        super().__init__(message)
        self.iteration = iteration
        self.loss = loss
