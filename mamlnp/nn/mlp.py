"""A multilayer perceptron whose every derivative is written by hand.

Dimension legend: N points, D = sizes[0] inputs, O = sizes[-1] outputs,
L = len(sizes) - 1 dense layers, P parameters in all.

Parameters live in ONE flat float64 vector θ of length P. Layer l (l = 1 … L)
owns the contiguous block  [ W_l (fan_in × fan_out, row-major) | b_l (fan_out) ],
blocks in layer order; ``unflatten`` returns views into θ, so writing through
them writes θ. For 1-40-40-1 this is [W1(1×40) | b1 | W2(40×40) | b2 | W3(40×1) | b3],
P = 1761, the layout of the reference implementations.

    h_0 = x                                         (N, D)
    z_l = h_{l-1} W_l + b_l                         (N, fan_out_l)
    h_l = σ(z_l)  for l < L,   ŷ = z_L (linear)     (N, O)
    L(θ) = loss(ŷ, y)

The unchecked methods ``_loss_value``, ``_loss_and_grad`` and ``_hvp`` (plus
``num_params``, ``sizes``, ``check_theta``, ``check_xy``) are the *model
protocol* that mamlnp.meta.maml relies on; any model offering them (e.g. the
two-parameter toys of mamlnp.toy) can be meta-trained by the same code.

Three passes, each in its own method:
  * forward                  ŷ and the caches
  * backward (backprop)      g = ∇L(θ)                          docs/derivations/backprop.md
  * R-pass (Pearlmutter)     H v = ∇²L(θ) v, exactly, in ~2× the cost of a gradient
                                                                docs/derivations/hvp.md
"""
import numpy as np

from . import layers as LY
from .activations import ACTIVATIONS
from ..errors import InputError
from .losses import LOSSES
from ..validation import (as_float64, as_rng, check_memory, choice, nonneg_float, positive_int,
                          probability_rows)


class MLP:
    """Fully connected network: hidden layers use ``activation``, the last layer is linear.

    Parameters
    ----------
    sizes : sequence of int, every entry >= 1, at least two entries: (D, H_1, …, O).
    activation : "relu" | "tanh" | "softplus".
    loss : "mse" (mean over all N·O entries) | "softmax_xent" (targets are
        probability rows, e.g. one-hot, shape (N, O)).
    """

    def __init__(self, sizes=(1, 40, 40, 1), activation="relu", loss="mse"):
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise InputError(f"sizes: expected a sequence of positive integers, got {sizes!r}") from None
        if len(sizes) < 2:
            raise InputError(f"sizes: expected at least 2 entries (input, output), got {sizes!r}")
        self.sizes = tuple(positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes))
        self.activation = choice("activation", activation, ACTIVATIONS)
        self.loss_name = choice("loss", loss, LOSSES)
        self._act = ACTIVATIONS[self.activation]
        self._loss = LOSSES[self.loss_name]
        self.layout = self._make_layout(self.sizes)
        self.num_params = self.layout[-1][1][1]
        check_memory("sizes", self.sizes, 8 * self.num_params, f"θ of {self.num_params} floats")

    @staticmethod
    def _make_layout(sizes):
        """[((w_start, w_stop), (b_start, b_stop), (fan_in, fan_out)), …] per layer."""
        out, o = [], 0
        for fi, fo in zip(sizes[:-1], sizes[1:]):
            out.append(((o, o + fi * fo), (o + fi * fo, o + fi * fo + fo), (fi, fo)))
            o += fi * fo + fo
        return out

    def __repr__(self):
        return f"MLP(sizes={self.sizes}, activation={self.activation!r}, loss={self.loss_name!r})"

    def config(self):
        """A JSON-able description; ``MLP(**model.config())`` rebuilds the model."""
        return {"sizes": list(self.sizes), "activation": self.activation, "loss": self.loss_name}

    # ---- parameters ---------------------------------------------------------------

    def init(self, seed=0, scheme="uniform", scale=0.01):
        """A fresh θ (P,), float64, from ``numpy.random.default_rng(seed)``.

        scheme "uniform" (default): W, b ~ U(−1/√fan_in, 1/√fan_in), PyTorch's
        nn.Linear default, which learn2learn, higher and torchmeta inherit;
        "normal": W ~ N(0, scale²) truncated at 2·scale, b = 0, cbfinn/maml's
        initialisation for the sinusoid network. The paper does not fix one; on the
        sinusoid protocol "uniform" reached a lower validation MSE (docs/results.md).
        """
        scheme = choice("scheme", scheme, ("normal", "uniform"))
        scale = nonneg_float("scale", scale)
        if not np.isfinite(2.0 * scale):                # |θ_i| <= 2·scale must be finite
            raise InputError(f"scale: expected a scale with 2·scale finite (the truncation "
                             f"bound of θ), got {scale!r}")
        rng = as_rng("seed", seed)
        theta = np.zeros(self.num_params)
        for (w0, w1), (b0, b1), (fi, _) in self.layout:
            if scheme == "normal":
                w = rng.standard_normal(w1 - w0)
                while np.any(np.abs(w) > 2.0):          # truncate at 2σ by redrawing
                    bad = np.abs(w) > 2.0
                    w[bad] = rng.standard_normal(int(bad.sum()))
                theta[w0:w1] = scale * w
            else:
                bound = 1.0 / np.sqrt(fi)
                theta[w0:w1] = rng.uniform(-bound, bound, w1 - w0)
                theta[b0:b1] = rng.uniform(-bound, bound, b1 - b0)
        return theta

    def unflatten(self, theta):
        """[(W_1, b_1), …, (W_L, b_L)], views into θ: W_l (fan_in, fan_out), b_l (fan_out,).

        The views write through to θ when θ is a C-contiguous float64 array (any
        other θ is first converted, see mamlnp/validation.py, and the views are of the copy).
        """
        return self._unflatten(self.check_theta(theta))

    def _unflatten(self, theta):
        return [(theta[w0:w1].reshape(fi, fo), theta[b0:b1])
                for (w0, w1), (b0, b1), (fi, fo) in self.layout]

    def flatten(self, layers):
        """Inverse of ``unflatten``: a new flat float64 vector (P,)."""
        L = len(self.layout)
        try:
            pairs = [tuple(pair) for pair in layers]
        except TypeError:
            pairs = None
        if pairs is None or len(pairs) != L or any(len(pair) != 2 for pair in pairs):
            got = (f"{type(layers).__name__} of {len(pairs)} item(s)" if pairs is not None
                   else repr(layers))
            raise InputError(f"layers: expected a list of {L} (W, b) pairs, got {got}")
        parts = []
        for l, ((W, b), (_, _, (fi, fo))) in enumerate(zip(pairs, self.layout), start=1):
            parts.append(as_float64(f"layers[{l - 1}][0] (W_{l})", W, 2, (fi, fo)).ravel())
            parts.append(as_float64(f"layers[{l - 1}][1] (b_{l})", b, 1, (fo,)))
        return np.concatenate(parts)

    # ---- argument checks ------------------------------------------------------------

    def check_theta(self, theta, name="theta"):
        return as_float64(name, theta, 1, (self.num_params,))

    def check_xy(self, x, y=None, xname="x", yname="y"):
        x = as_float64(xname, x, 2, ("N", self.sizes[0]))
        check_memory(xname, x.shape, 8 * 4 * x.shape[0] * sum(self.sizes[1:]),
                     "the layers' activations and caches, (N, H) each")
        if y is None:
            return x
        y = as_float64(yname, y, 2, (x.shape[0], self.sizes[-1]))
        if self.loss_name == "softmax_xent":
            probability_rows(yname, y)
        return x, y

    # ---- forward ----------------------------------------------------------------------

    def forward(self, theta, x):
        """ŷ = f_θ(x):  x (N, D) -> ŷ (N, O)."""
        theta = self.check_theta(theta)
        return self._forward(theta, self.check_xy(x))[0]

    def _forward(self, theta, x):
        caches = []
        h = x                                                   # (N, D)
        params = self._unflatten(theta)
        for l, (W, b) in enumerate(params):
            z, dcache = LY.dense_forward(h, W, b)               # (N, fan_out)
            if l < len(params) - 1:
                h, acache = LY.act_forward(z, self._act)        # (N, fan_out)
            else:
                h, acache = z, None                             # linear output layer
            caches.append((dcache, acache))
        return h, caches

    def loss(self, theta, x, y):
        """L(θ; x, y), a float."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        return self._loss_value(theta, x, y)

    def _loss_value(self, theta, x, y):
        y_hat, _ = self._forward(theta, x)
        return self._loss[0](y_hat, y)[0]

    # ---- backward: the gradient ---------------------------------------------------

    def loss_and_grad(self, theta, x, y):
        """(L(θ), ∇L(θ)) with ∇L (P,) by backpropagation."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        return self._loss_and_grad(theta, x, y)

    def _loss_and_grad(self, theta, x, y):
        loss, _, grad = self._backward(theta, x, y)
        return loss, grad

    def _backward(self, theta, x, y):
        """Forward and backward pass; also returns what the R-pass reuses."""
        y_hat, caches = self._forward(theta, x)
        loss, lcache = self._loss[0](y_hat, y)
        grad = np.empty_like(theta)
        dz = self._loss[1](lcache)                              # ∂L/∂ŷ (N, O)
        dzs, dhs = [None] * len(caches), [None] * len(caches)
        for l in range(len(caches) - 1, -1, -1):
            dcache, acache = caches[l]
            if acache is not None:                              # hidden layer
                dhs[l] = dh                                     # ∂L/∂h_l, kept for the R-pass
                dz = LY.act_backward(dh, acache)                # (N, fan_out)
            dzs[l] = dz
            dh, dW, db = LY.dense_backward(dz, dcache)
            (w0, w1), (b0, b1), _ = self.layout[l]
            grad[w0:w1] = dW.ravel()
            grad[b0:b1] = db
        return loss, (caches, lcache, dzs, dhs), grad

    # ---- R-pass: the exact Hessian-vector product ------------------------------------

    def hvp(self, theta, x, y, v):
        """H v = ∇²_θ L(θ; x, y) · v, exact, by Pearlmutter's R-operator.  v (P,) -> (P,)."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        v = self.check_theta(v, name="v")
        return self._hvp(theta, x, y, v)

    def _hvp(self, theta, x, y, v):
        _, saved, _ = self._backward(theta, x, y)
        return self._rpass(saved, v)

    def _rpass(self, saved, v):
        """R-forward along v, then R-backward; the R-gradient is H v.

        saved = (caches, lcache, dzs, dhs) from ``_backward`` at the same θ.
        """
        caches, lcache, dzs, dhs = saved
        V = self._unflatten(v)
        # R-forward: Rz_l = Rh_{l-1} W_l + h_{l-1} V_W + V_b ; Rh_l = σ'(z_l) ⊙ Rz_l
        Rh, Rhs, Rzs = None, [], []                             # Rh_0 = R{x} = 0
        for l, (dcache, acache) in enumerate(caches):
            Rhs.append(Rh)
            Rz = LY.dense_rforward(Rh, dcache, *V[l])           # (N, fan_out)
            Rzs.append(Rz)
            Rh = LY.act_rforward(Rz, acache) if acache is not None else Rz
        # R-backward, from R{∂L/∂ŷ} = (∂²L/∂ŷ²) Rŷ down to the first layer.
        Hv = np.empty(self.num_params)
        Rdz = self._loss[2](Rh, lcache)                         # (N, O)
        for l in range(len(caches) - 1, -1, -1):
            dcache, acache = caches[l]
            if acache is not None:                              # hidden: through σ
                Rdz = LY.act_rbackward(Rdh, dhs[l], Rzs[l], acache)  # (N, fan_out)
            Rdh, RdW, Rdb = LY.dense_rbackward(Rdz, dzs[l], Rhs[l], dcache, V[l][0])
            (w0, w1), (b0, b1), _ = self.layout[l]
            Hv[w0:w1] = RdW.ravel()
            Hv[b0:b1] = Rdb
        return Hv

    def grad_and_hvp(self, theta, x, y, v):
        """(L, ∇L, H v) sharing one forward/backward pass: the meta-gradient's building block."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        v = self.check_theta(v, name="v")
        loss, saved, grad = self._backward(theta, x, y)
        return loss, grad, self._rpass(saved, v)
