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
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = positive_float("lr", lr)
        self.beta1 = float_in("beta1", beta1, 0.0, 1.0)
        self.beta2 = float_in("beta2", beta2, 0.0, 1.0)
        self.eps = positive_float("eps", eps)
        self.m = self.v = None
        self.t = 0

    def step(self, theta, grad):
        theta, grad = _check_step(theta, grad)
        if self.m is not None and self.m.shape != grad.shape:
            raise InputError(f"grad: this Adam holds state for shape {self.m.shape}, "
                             f"got {grad.shape} (use one optimizer per parameter vector)")
        return self._step(theta, grad)

    def _step(self, theta, grad):
        """The update without argument checks (for a training loop's own θ and g)."""
        if self.m is None:
            self.m, self.v = np.zeros_like(grad), np.zeros_like(grad)
        self.t += 1
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * grad            # (P,)
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * grad * grad     # (P,)
        m_hat = self.m / (1.0 - self.beta1 ** self.t)
        v_hat = self.v / (1.0 - self.beta2 ** self.t)
        return theta - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state_dict(self):
        state = {"lr": np.float64(self.lr), "beta1": np.float64(self.beta1),
                 "beta2": np.float64(self.beta2), "eps": np.float64(self.eps),
                 "t": np.int64(self.t)}
        if self.m is not None:
            state["m"], state["v"] = self.m.copy(), self.v.copy()
        return state

    def load_state_dict(self, state):
        with _state_errors("Adam"):
            self.lr = positive_float("lr", state["lr"])
            self.beta1 = float_in("beta1", state["beta1"], 0.0, 1.0)
            self.beta2 = float_in("beta2", state["beta2"], 0.0, 1.0)
            self.eps, self.t = positive_float("eps", state["eps"]), nonneg_int("t", state["t"])
            self.m = as_float64("m", state["m"], 1) if "m" in state else None
            self.v = as_float64("v", state["v"], 1) if "v" in state else None
            if (self.m is None) != (self.v is None) or (
                    self.m is not None and self.m.shape != self.v.shape):
                raise InputError("m, v: expected both or neither, of the same shape")
            if self.v is not None and np.any(self.v < 0):
                raise InputError("v: expected a running mean of g² (>= 0), got negative entries")


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
