"""Argument checks shared by every public entry point.

Dtype policy (documented in docs/errors.md): data and parameters are float64.
Integer and float32/float16 arrays are *converted* to float64 (a copy); bool,
complex, object and string arrays are *refused*. NaN and inf are refused in
data, parameters and directions alike. Every failure raises
:class:`mamlnp.errors.InputError` naming the argument.
"""
import numbers

import numpy as np

from .errors import InputError


def as_float64(name, value, ndim=None, shape=None, allow_empty=False):
    """Return ``value`` as a finite float64 ndarray, or raise InputError.

    shape: a tuple whose entries are ints (must match) or None (any size).
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name}: could not convert to an array ({exc})") from None
    if arr.dtype.kind not in "iuf":
        raise InputError(
            f"{name}: expected a real numeric array (float64, float32 or integer), "
            f"got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise InputError(
            f"{name}: expected a {ndim}-d array of shape {_fmt(shape, ndim)}, "
            f"got shape {arr.shape}")
    if shape is not None:
        for got, want in zip(arr.shape, shape):
            if want is not None and got != want:
                raise InputError(
                    f"{name}: expected shape {_fmt(shape, ndim)}, got {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise InputError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{name}: contains {bad} NaN or infinite value(s)")
    return arr


def _fmt(shape, ndim):
    if shape is None:
        return "(" + ", ".join(["?"] * (ndim or 0)) + ")"
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def positive_float(name, value):
    """A finite float > 0 (a step size, a learning rate)."""
    v = _real(name, value)
    if not v > 0.0:
        raise InputError(f"{name}: expected a positive finite number, got {value!r}")
    return v


def nonneg_float(name, value):
    v = _real(name, value)
    if v < 0.0:
        raise InputError(f"{name}: expected a non-negative finite number, got {value!r}")
    return v


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise InputError(f"{name}: expected a finite number, got {value!r}")
    return v


def nonneg_int(name, value):
    """An int >= 0 (inner_steps)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected a non-negative integer, got {value!r}")
    if value < 0:
        raise InputError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


def positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def choice(name, value, options):
    if value not in options:
        raise InputError(f"{name}: expected one of {sorted(options)}, got {value!r}")
    return value
