"""Optimizers for the outer (meta) loop, written by hand.

Dimension legend: P parameters. Every optimizer updates a flat float64 vector
θ (P,) given a gradient g (P,), returns the new θ, and can save and restore its
whole state (for bit-exact resumption of an interrupted run).

In MAML's notation the meta step size is β (Finn et al. 2017, Algorithm 2,
line 10: θ ← θ − β ∇_θ Σ L(f_θ')). Here it is each optimizer's ``lr``.
"""
import numpy as np

from .errors import InputError
from .validation import as_float64, positive_float


class SGD:
    """θ ← θ − lr · g."""

    def __init__(self, lr):
        self.lr = positive_float("lr", lr)

    def step(self, theta, grad):
        grad = as_float64("grad", grad, 1, (np.shape(theta)[0],))
        return theta - self.lr * grad

    def state_dict(self):
        return {"lr": np.float64(self.lr)}

    def load_state_dict(self, state):
        self.lr = float(state["lr"])


class Adam:
    """Adam (Kingma & Ba, 2015), with bias correction, as TensorFlow and PyTorch define it.

        m ← β1 m + (1 − β1) g              v ← β2 v + (1 − β2) g²        (P,)
        m̂ = m / (1 − β1^t)                 v̂ = v / (1 − β2^t)
        θ ← θ − lr · m̂ / (√v̂ + ε)
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr = positive_float("lr", lr)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not (0.0 <= b < 1.0):
                raise InputError(f"{name}: expected a number in [0, 1), got {b!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = positive_float("eps", eps)
        self.m = self.v = None
        self.t = 0

    def step(self, theta, grad):
        grad = as_float64("grad", grad, 1, (np.shape(theta)[0],))
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
        self.lr, self.beta1 = float(state["lr"]), float(state["beta1"])
        self.beta2, self.eps, self.t = float(state["beta2"]), float(state["eps"]), int(state["t"])
        self.m = np.array(state["m"], dtype=np.float64) if "m" in state else None
        self.v = np.array(state["v"], dtype=np.float64) if "v" in state else None


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
