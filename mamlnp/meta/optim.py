"""Optimizers for the outer (meta) loop, written by hand.

Dimension legend: P parameters. Every optimizer updates a flat float64 vector
θ (P,) given a gradient g (P,), returns the new θ, and can save and restore its
whole state (for bit-exact resumption of an interrupted run).

In MAML's notation the meta step size is β (Finn et al. 2017, Algorithm 2,
line 10: θ ← θ − β ∇_θ Σ L(f_θ')). Here it is each optimizer's ``lr``.
"""
import contextlib

import numpy as np

from ..errors import CheckpointError, InputError
from ..validation import as_float64, float_in, nonneg_int, positive_float


class SGD:
    """θ ← θ − lr · g."""

    def __init__(self, lr):
        self.lr = positive_float("lr", lr)

    def step(self, theta, grad):
        theta, grad = _check_step(theta, grad)
        return self._step(theta, grad)

    def _step(self, theta, grad):
        """The update without argument checks (for a training loop's own θ and g)."""
        return theta - self.lr * grad

    def state_dict(self):
        return {"lr": np.float64(self.lr)}

    def load_state_dict(self, state):
        with _state_errors("SGD"):
            self.lr = positive_float("lr", state["lr"])


class Adam:
    """Adam (Kingma & Ba, 2015), with bias correction, as TensorFlow and PyTorch define it.

        m ← β1 m + (1 − β1) g              v ← β2 v + (1 − β2) g²        (P,)
        m̂ = m / (1 − β1^t)                 v̂ = v / (1 − β2^t)
        θ ← θ − lr · m̂ / (√v̂ + ε)

    m and v are this optimizer's own buffers (``_m``, ``_v``): it never hands them out
    (``m``, ``v`` and ``state_dict`` give copies, ``load_state_dict`` copies in), so its
    compiled twin (mamlnp/fast/common/adam.py ``adam_step``) may update them in place.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = positive_float("lr", lr)
        self.beta1 = float_in("beta1", beta1, 0.0, 1.0)
        self.beta2 = float_in("beta2", beta2, 0.0, 1.0)
        self.eps = positive_float("eps", eps)
        self._m = self._v = None
        self.t = 0

    @property
    def m(self):
        """A copy of the first-moment estimate m (P,), or None before the first step;
        assigning copies in."""
        return None if self._m is None else self._m.copy()

    @m.setter
    def m(self, value):
        self._m = None if value is None else np.array(value, dtype=np.float64)

    @property
    def v(self):
        """A copy of the second-moment estimate v (P,), or None before the first step;
        assigning copies in."""
        return None if self._v is None else self._v.copy()

    @v.setter
    def v(self, value):
        self._v = None if value is None else np.array(value, dtype=np.float64)

    def step(self, theta, grad):
        theta, grad = _check_step(theta, grad)
        if self._m is not None and self._m.shape != grad.shape:
            raise InputError(f"grad: this Adam holds state for shape {self._m.shape}, "
                             f"got {grad.shape} (use one optimizer per parameter vector)")
        return self._step(theta, grad)

    def _step(self, theta, grad):
        """The update without argument checks (for a training loop's own θ and g)."""
        if self._m is None:
            self._m, self._v = np.zeros_like(grad), np.zeros_like(grad)
        self.t += 1
        self._m = self.beta1 * self._m + (1.0 - self.beta1) * grad          # m (P,)
        self._v = self.beta2 * self._v + (1.0 - self.beta2) * grad * grad   # v (P,)
        m_hat = self._m / (1.0 - self.beta1 ** self.t)
        v_hat = self._v / (1.0 - self.beta2 ** self.t)
        return theta - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state_dict(self):
        state = {"lr": np.float64(self.lr), "beta1": np.float64(self.beta1),
                 "beta2": np.float64(self.beta2), "eps": np.float64(self.eps),
                 "t": np.int64(self.t)}
        if self._m is not None:
            state["m"], state["v"] = self._m.copy(), self._v.copy()
        return state

    def load_state_dict(self, state):
        with _state_errors("Adam"):
            self.lr = positive_float("lr", state["lr"])
            self.beta1 = float_in("beta1", state["beta1"], 0.0, 1.0)
            self.beta2 = float_in("beta2", state["beta2"], 0.0, 1.0)
            self.eps, self.t = positive_float("eps", state["eps"]), nonneg_int("t", state["t"])
            m = np.array(as_float64("m", state["m"], 1)) if "m" in state else None   # copies:
            v = np.array(as_float64("v", state["v"], 1)) if "v" in state else None   # ours
            if (m is None) != (v is None) or (m is not None and m.shape != v.shape):
                raise InputError("m, v: expected both or neither, of the same shape")
            if v is not None and np.any(v < 0):
                raise InputError("v: expected a running mean of g² (>= 0), got negative entries")
            self._m, self._v = m, v


def _check_step(theta, grad):
    """θ (P,) and g (P,) as finite float64 vectors of the same length."""
    theta = as_float64("theta", theta, 1, ("P",))
    return theta, as_float64("grad", grad, 1, (theta.shape[0],))


@contextlib.contextmanager
def _state_errors(name):
    """A state dict with missing or bad entries raises CheckpointError, not KeyError."""
    try:
        yield
    except KeyError as exc:
        raise CheckpointError(f"{name} optimizer state: missing entry {exc}") from None
    except InputError as exc:
        raise CheckpointError(f"{name} optimizer state: {exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"{name} optimizer state: expected a dict-like state, "
                              f"got {exc}") from None


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
