"""Argument checks shared by every public entry point.

Dimension legend: P parameters, T tasks, K support points, Q query points,
D inputs, O outputs (the shapes the callers ask these helpers to enforce).

The policy, the same everywhere (documented for users in docs/errors.md):

* **Arrays** (data x, y; parameters θ; HVP directions v; gradients; step-size
  vectors) are float64, C-contiguous and finite.
  - float64 input is used as is (no copy when already C-contiguous);
  - integer, unsigned and float32/float16 input is *converted* to float64 (a copy);
  - bool, complex, object, string, datetime arrays are *refused* (a bool array is
    almost always a mask passed by mistake; a complex one would silently lose its
    imaginary part);
  - NaN and ±inf are refused, and the message gives how many and where the first is;
  - empty arrays (a 0 in the shape: T=0 tasks, K=0 shots, N=0 points) are refused.
* **Scalars**: step sizes (α, β, learning rates) are finite reals > 0; counts
  (inner_steps) are ints ≥ 0; sizes (T, K, Q, layer widths) are ints ≥ 1. Python
  and NumPy scalars and 0-d arrays are accepted; bool is refused where a number is
  expected (``inner_steps=True`` is a bug, not 1), and so are strings and floats
  where an int is expected (``inner_steps=1.0``).
* **Flags** (``first_order``) are ``True``/``False`` only: ``first_order="no"``
  would otherwise be silently true.
* **Names** (activation, loss, backend, scheme, …) must be one of the listed options.
* **Seeds**: an int ≥ 0, a ``numpy.random.Generator`` or ``SeedSequence``, or None
  (fresh OS entropy, NumPy's convention: not reproducible).

Every failure raises :class:`mamlnp.errors.InputError` (a ``ValueError``) whose
message starts with the argument's name, then says what was expected and what
was got.
"""
import numbers
import os

import numpy as np

from .errors import InputError

_ACCEPTED_KINDS = "iuf"          # signed int, unsigned int, float: converted to float64
MAX_COUNT = 2**31 - 1            # sizes and step counts: int32, safe in every kernel's index


def as_float64(name, value, ndim=None, shape=None, allow_empty=False):
    """Return ``value`` as a finite, C-contiguous float64 ndarray, or raise InputError.

    ndim: the required number of dimensions (None: any).
    shape: a tuple whose entries are ints (must match), or a name such as "N"
        or None (any size; the name only appears in messages: "(N, 1)").
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name}: expected an array (rows of equal length), got a "
                         f"{type(value).__name__} NumPy cannot convert ({exc})") from None
    if arr.dtype.kind not in _ACCEPTED_KINDS:
        raise InputError(
            f"{name}: expected a real numeric array (float64, float32 or integer), "
            f"got dtype {arr.dtype} ({type(value).__name__})")
    if ndim is not None and arr.ndim != ndim:
        raise InputError(
            f"{name}: expected a {ndim}-d array of shape {_fmt(shape, ndim)}, "
            f"got shape {arr.shape}")
    if shape is not None:
        for got, want in zip(arr.shape, shape):
            if isinstance(want, numbers.Integral) and got != want:
                raise InputError(
                    f"{name}: expected shape {_fmt(shape, ndim)}, got {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise InputError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    with np.errstate(over="ignore"):           # float128 / huge ints overflow to inf:
        arr = np.asarray(arr, dtype=np.float64, order="C")  # caught just below
    finite = np.isfinite(arr)
    if not finite.all():
        bad = arr.size - int(np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            f"{name}: expected finite values, got {bad} NaN or infinite value(s) "
            f"(first at index {first}: {arr[first]})")
    return arr


def _fmt(shape, ndim):
    """(N, 1), (1761,), (?, ?, ?): the expected shape as users read it."""
    parts = ["?"] * (ndim or 0) if shape is None else ["?" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _scalar(value, kinds):
    """A 0-d ndarray of one of ``kinds`` -> its Python scalar; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in kinds:
        return value.item()
    return value


def _real(name, value, expected):
    value = _scalar(value, _ACCEPTED_KINDS)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}: expected {expected}, got {value!r} "
                         f"({type(value).__name__})")
    v = float(value)
    if not np.isfinite(v):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    return v


def positive_float(name, value):
    """A finite float > 0 (a step size, a learning rate)."""
    expected = "a positive finite number"
    v = _real(name, value, expected)
    if not v > 0.0:
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    return v


def nonneg_float(name, value):
    """A finite float >= 0."""
    expected = "a non-negative finite number"
    v = _real(name, value, expected)
    if v < 0.0:
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    return v


def float_in(name, value, low, high):
    """A finite float in the half-open interval [low, high) (Adam's beta1, beta2)."""
    expected = f"a number in [{low}, {high})"
    v = _real(name, value, expected)
    if not low <= v < high:
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    return v


def _int(name, value, minimum, expected, maximum=None):
    value = _scalar(value, "iu")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected {expected}, got {value!r} "
                         f"({type(value).__name__})")
    if value < minimum:
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name}: expected {expected} <= {maximum}, got {value!r}")
    return int(value)


def nonneg_int(name, value, maximum=None):
    """An int >= 0 (a seed; with ``maximum=MAX_COUNT``, inner_steps and other step counts)."""
    return _int(name, value, 0, "a non-negative integer", maximum)


def step_count(name, value):
    """A count of steps (inner_steps, max_steps): an int in [0, MAX_COUNT]."""
    return nonneg_int(name, value, MAX_COUNT)


def positive_int(name, value):
    """An int in [1, MAX_COUNT] (a layer width, a number of tasks, shots or query points)."""
    return _int(name, value, 1, "a positive integer", MAX_COUNT)


def memory_limit():
    """Bytes of physical memory (and of the address-space limit, if lower): no single
    request of mamlnp may need more."""
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        limit = 2**40
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft)
    except (ImportError, OSError, ValueError):
        pass
    return limit


def check_memory(name, value, nbytes, what):
    """Refuse (InputError naming ``name``) a request whose arrays need ``nbytes`` > the
    machine's memory, before anything is allocated. ``what`` says which arrays."""
    limit = memory_limit()
    if nbytes > limit:
        raise InputError(f"{name}: expected a size whose arrays fit in memory (at most "
                         f"{limit / 2**30:.3g} GiB here), got {value!r}, which needs "
                         f"{nbytes / 2**30:.3g} GiB ({what})")
    return value


MODEL_PROTOCOL = ("num_params", "sizes", "check_theta", "check_xy", "_loss_value",
                  "_loss_and_grad", "_hvp")


def check_model(model):
    """A model of the protocol (mamlnp.MLP, the toys of mamlnp.nn.toy), else InputError."""
    missing = [a for a in MODEL_PROTOCOL if not hasattr(model, a)]
    if missing:
        raise InputError(f"model: expected a mamlnp.MLP (or a model with {', '.join(missing)}), "
                         f"got {model!r} ({type(model).__name__})")
    return model


def boolean(name, value):
    """True or False (Python or NumPy bool); anything else is refused."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")


def choice(name, value, options):
    """``value`` if it equals one of ``options`` (returned as that option), else InputError."""
    for option in options:
        if isinstance(option, str) != isinstance(value, str):
            continue                                # "relu" never equals ["relu"] or 1
        if isinstance(value, (bool, np.bool_)) != isinstance(option, (bool, np.bool_)):
            continue                                # True never stands for 1
        try:
            if bool(value == option):
                return option
        except (TypeError, ValueError):             # arrays and other odd objects
            pass
    raise InputError(f"{name}: expected one of {sorted(options)}, got {value!r}")


def as_rng(name, value):
    """A reproducible seed: int >= 0, numpy Generator, SeedSequence, or None (fresh entropy).

    Returns a ``numpy.random.Generator``.
    """
    if isinstance(value, np.random.Generator):
        return value
    if value is None or isinstance(value, np.random.SeedSequence):
        return np.random.default_rng(value)
    return np.random.default_rng(
        _int(name, value, 0, "an integer >= 0, a numpy.random.Generator or None"))


def real_range(name, value):
    """A (low, high) pair of finite reals with low <= high."""
    expected = "a (low, high) pair of finite numbers with low <= high"
    try:
        low, high = value
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected {expected}, got {value!r}") from None
    low = _real(f"{name}[0]", low, "a finite number")
    high = _real(f"{name}[1]", high, "a finite number")
    if not low <= high:
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    if not np.isfinite(high - low):                     # numpy's uniform would overflow
        raise InputError(f"{name}: expected a finite width high - low, got {value!r}")
    return low, high


def probability_rows(name, y, atol=1e-6):
    """Targets of softmax cross-entropy: entries >= 0 and every row (last axis) sums to 1.

    The gradient (p − y)/N of mamlnp.nn.losses assumes Σ_o y_o = 1; other rows would
    give a silently wrong gradient, so they are refused.  y (..., O), float64.
    """
    if np.any(y < 0.0):
        first = tuple(int(i) for i in np.argwhere(y < 0.0)[0])
        raise InputError(f"{name}: expected probability rows for softmax_xent (entries >= 0, "
                         f"each row summing to 1), got {y[first]} at index {first}")
    sums = y.sum(axis=-1)                                       # (...,)
    bad = np.abs(sums - 1.0) > atol
    if np.any(bad):
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name}: expected probability rows for softmax_xent (e.g. one-hot), "
                         f"each summing to 1, got a row summing to {float(sums[first])} "
                         f"at index {first}")
    return y
