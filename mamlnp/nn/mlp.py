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

With ``batch_norm=True`` each HIDDEN layer's block is [W_l | b_l | γ_l | β_l]
(γ_l, β_l of length fan_out), the output layer's stays [W_L | b_L], and

    u_l = BN_{γ_l, β_l}(z_l)  over the N points of the batch,   h_l = σ(u_l)   (l < L)

(mamlnp/nn/batchnorm.py, docs/derivations/batchnorm.md). b_l of a hidden layer is then
redundant (BN subtracts the batch mean): its gradient is zero up to rounding.

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

from . import batchnorm as BN
from . import layers as LY
from .activations import ACTIVATIONS
from ..errors import InputError
from .losses import LOSSES
from ..validation import (as_float64, as_rng, boolean, check_memory, choice, nonneg_float,
                          positive_float, positive_int, probability_rows)

BN_EPS = 1e-3   # tf.contrib.layers.batch_norm's default epsilon, which cbfinn/maml uses
BN_EPS_MIN = 1e-12  # smaller (a subnormal ε): 1/√(σ² + ε) of a constant unit overflows


class MLP:
    """Fully connected network: hidden layers use ``activation``, the last layer is linear.

    Parameters
    ----------
    sizes : sequence of int, every entry >= 1, at least two entries: (D, H_1, …, O).
    activation : "relu" | "tanh" | "softplus".
    loss : "mse" (mean over all N·O entries) | "softmax_xent" (targets are
        probability rows, e.g. one-hot, shape (N, O)).
    batch_norm : bool. True: every hidden layer is dense -> batch norm -> activation,
        with statistics from the batch being normalised (docs/derivations/batchnorm.md).
    bn_eps : ε > 0 of the batch norm, default 1e-3 (``BN_EPS``): the default of
        tf.contrib.layers.batch_norm, which cbfinn/maml's classification networks use.
    """

    def __init__(self, sizes=(1, 40, 40, 1), activation="relu", loss="mse", batch_norm=False,
                 bn_eps=BN_EPS):
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise InputError(f"sizes: expected a sequence of positive integers, got {sizes!r}") from None
        if len(sizes) < 2:
            raise InputError(f"sizes: expected at least 2 entries (input, output), got {sizes!r}")
        self.sizes = tuple(positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes))
        self.activation = choice("activation", activation, ACTIVATIONS)
        self.loss_name = choice("loss", loss, LOSSES)
        self.batch_norm = boolean("batch_norm", batch_norm)
        self.bn_eps = positive_float("bn_eps", bn_eps)
        if self.bn_eps < BN_EPS_MIN:
            raise InputError(f"bn_eps: expected at least {BN_EPS_MIN:g} (1/sqrt(var + eps) of a "
                             f"unit constant over the batch must stay finite), got {bn_eps!r}")
        if self.batch_norm and len(self.sizes) < 3:
            raise InputError(f"batch_norm: expected at least one hidden layer to normalise, got "
                             f"sizes {self.sizes}")
        self._act = ACTIVATIONS[self.activation]
        self._loss = LOSSES[self.loss_name]
        self.layout, self.bn_layout, self.num_params = self._make_layout(self.sizes, self.batch_norm)
        check_memory("sizes", self.sizes, 8 * self.num_params, f"θ of {self.num_params} floats")

    @staticmethod
    def _make_layout(sizes, batch_norm=False):
        """(layout, bn_layout, P). layout[l] = ((w_start, w_stop), (b_start, b_stop), (fan_in,
        fan_out)); bn_layout[l] = ((γ_start, γ_stop), (β_start, β_stop)) for a batch-norm
        hidden layer, None for the output layer or without batch norm."""
        layout, bn_layout, o = [], [], 0
        for l, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
            layout.append(((o, o + fi * fo), (o + fi * fo, o + fi * fo + fo), (fi, fo)))
            o += fi * fo + fo
            if batch_norm and l < len(sizes) - 2:
                bn_layout.append(((o, o + fo), (o + fo, o + 2 * fo)))
                o += 2 * fo
            else:
                bn_layout.append(None)
        return layout, bn_layout, o

    def __repr__(self):
        bn = "" if not self.batch_norm else f", batch_norm=True, bn_eps={self.bn_eps!r}"
        return f"MLP(sizes={self.sizes}, activation={self.activation!r}, loss={self.loss_name!r}{bn})"

    def config(self):
        """A JSON-able description; ``MLP(**model.config())`` rebuilds the model. The
        batch-norm keys appear only with batch norm, so a plain MLP's config is unchanged."""
        out = {"sizes": list(self.sizes), "activation": self.activation, "loss": self.loss_name}
        if self.batch_norm:
            out.update(batch_norm=True, bn_eps=self.bn_eps)
        return out

    # ---- parameters ---------------------------------------------------------------

    def init(self, seed=0, scheme="uniform", scale=0.01):
        """A fresh θ (P,), float64, from ``numpy.random.default_rng(seed)``.

        scheme "uniform" (default): W, b ~ U(−1/√fan_in, 1/√fan_in), PyTorch's
        nn.Linear default, which learn2learn, higher and torchmeta inherit;
        "normal": W ~ N(0, scale²) truncated at 2·scale, b = 0, cbfinn/maml's
        initialisation for the sinusoid network. The paper does not fix one; on the
        sinusoid protocol "uniform" reached a lower validation MSE (docs/results.md).
        Batch norm: γ = 1, β = 0 (the identity affine map), either scheme.
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
        for bn in self.bn_layout:
            if bn is not None:
                theta[bn[0][0]:bn[0][1]] = 1.0              # γ = 1 (β stays 0)
        return theta

    def unflatten(self, theta):
        """[(W_1, b_1), …, (W_L, b_L)], views into θ: W_l (fan_in, fan_out), b_l (fan_out,);
        with batch norm (W_l, b_l, γ_l, β_l) for each hidden layer, (W_L, b_L) for the output.

        The views write through to θ when θ is a C-contiguous float64 array (any
        other θ is first converted, see mamlnp/validation.py, and the views are of the copy).
        """
        return self._unflatten(self.check_theta(theta))

    def _unflatten(self, theta):
        out = []
        for ((w0, w1), (b0, b1), (fi, fo)), bn in zip(self.layout, self.bn_layout):
            block = (theta[w0:w1].reshape(fi, fo), theta[b0:b1])
            if bn is not None:
                block += (theta[bn[0][0]:bn[0][1]], theta[bn[1][0]:bn[1][1]])
            out.append(block)
        return out

    def flatten(self, layers):
        """Inverse of ``unflatten``: a new flat float64 vector (P,)."""
        L = len(self.layout)
        arity = [2 if bn is None else 4 for bn in self.bn_layout]
        try:
            blocks = [tuple(block) for block in layers]
        except TypeError:
            blocks = None
        if blocks is None or len(blocks) != L or any(len(b) != k for b, k in zip(blocks, arity)):
            got = (f"{type(layers).__name__} of {len(blocks)} item(s)" if blocks is not None
                   else repr(layers))
            what = (f"{L} (W, b) pairs" if not self.batch_norm else
                    f"{L - 1} (W, b, gamma, beta) tuples and one (W, b) pair")
            raise InputError(f"layers: expected a list of {what}, got {got}")
        names = ("W", "b", "gamma", "beta")
        parts = []
        for l, (block, (_, _, (fi, fo))) in enumerate(zip(blocks, self.layout), start=1):
            for k, (name, value) in enumerate(zip(names, block)):
                shape = (fi, fo) if k == 0 else (fo,)
                parts.append(as_float64(f"layers[{l - 1}][{k}] ({name}_{l})", value,
                                        len(shape), shape).ravel())
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
        """ŷ = f_θ(x):  x (N, D) -> ŷ (N, O).  With batch norm the N rows of x are one batch:
        each row's output depends on the others through the batch statistics."""
        theta = self.check_theta(theta)
        return self._forward(theta, self.check_xy(x))[0]

    def _forward(self, theta, x, stop=None):
        """(ŷ, caches); caches[l] = (lin_cache, act_cache): lin_cache is the dense cache, or
        (dense cache, batch-norm cache) for a batch-norm layer; act_cache is None for the
        linear output layer and its first entry is the activation's input.
        ``stop`` = l runs only the first l layers and returns (h_l, their caches)."""
        caches = []
        h = x                                                   # (N, D)
        params = self._unflatten(theta)
        for l, p in enumerate(params[:stop]):
            z, lcache = LY.dense_forward(h, p[0], p[1])         # (N, fan_out)
            if len(p) == 4:                                     # batch-norm hidden layer
                z, bcache = BN.batchnorm_forward(z, p[2], p[3], self.bn_eps)  # (N, fan_out)
                lcache = (lcache, bcache)
            if l < len(params) - 1:
                h, acache = LY.act_forward(z, self._act)        # (N, fan_out)
            else:
                h, acache = z, None                             # linear output layer
            caches.append((lcache, acache))
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
        """Forward and backward pass; also returns what the R-pass reuses:
        saved = (caches, lcache, dzs, dhs, dus), dus[l] = ∂L/∂(batch-norm output) or None."""
        y_hat, caches = self._forward(theta, x)
        loss, lcache = self._loss[0](y_hat, y)
        grad = np.empty_like(theta)
        dz = self._loss[1](lcache)                              # ∂L/∂ŷ (N, O)
        dzs, dhs, dus = self._backprop(caches, dz, grad)
        return loss, (caches, lcache, dzs, dhs, dus), grad

    def _backprop(self, caches, d, grad):
        """Backpropagate d = ∂L/∂(output of the last layer in ``caches``) down to x, writing
        each layer's ∂L/∂θ_l into grad (P,); returns (dzs, dhs, dus) for the R-pass.
        The last cached layer is the output layer (d = ∂L/∂ŷ) or, for a body (mamlnp.meta.anil),
        a hidden layer (d = ∂L/∂h_l)."""
        n = len(caches)
        dzs, dhs, dus = [None] * n, [None] * n, [None] * n
        dh = dz = d
        for l in range(n - 1, -1, -1):
            dcache, acache = caches[l]
            if acache is not None:                              # hidden layer
                dhs[l] = dh                                     # ∂L/∂h_l, kept for the R-pass
                dz = LY.act_backward(dh, acache)                # (N, fan_out)
            if self.bn_layout[l] is not None:                   # through the batch norm
                dcache, bcache = dcache
                dus[l] = dz
                dz, dgamma, dbeta = BN.batchnorm_backward(dz, bcache)
                (g0, g1), (e0, e1) = self.bn_layout[l]
                grad[g0:g1], grad[e0:e1] = dgamma, dbeta
            dzs[l] = dz
            dh, dW, db = LY.dense_backward(dz, dcache)
            (w0, w1), (b0, b1), _ = self.layout[l]
            grad[w0:w1] = dW.ravel()
            grad[b0:b1] = db
        return dzs, dhs, dus

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

    def _rforward(self, caches, V):
        """Rz_l = Rh_{l-1} W_l + h_{l-1} V_W + V_b ; [Ru_l = R{BN(z_l)}] ; Rh_l = σ'(u_l) ⊙ Ru_l.
        Returns (Rŷ, Rhs, Rzs, Rus): Rhs[l] = R{h_{l-1}} (None for x), Rzs the dense
        outputs' R-images, Rus the activation inputs' (the same arrays without batch norm)."""
        Rh, Rhs, Rzs, Rus = None, [], [], []                    # Rh_0 = R{x} = 0
        for l, (lcache, acache) in enumerate(caches):
            Rhs.append(Rh)
            dcache, bcache = lcache if self.bn_layout[l] is not None else (lcache, None)
            Rz = LY.dense_rforward(Rh, dcache, V[l][0], V[l][1])   # (N, fan_out)
            Rzs.append(Rz)
            if bcache is not None:
                Rz = BN.batchnorm_rforward(Rz, bcache, V[l][2], V[l][3])   # (N, fan_out)
            Rus.append(Rz)
            Rh = LY.act_rforward(Rz, acache) if acache is not None else Rz
        return Rh, Rhs, Rzs, Rus

    def _rpass(self, saved, v):
        """R-forward along v, then R-backward; the R-gradient is H v.

        saved = (caches, lcache, dzs, dhs, dus) from ``_backward`` at the same θ.
        """
        caches, lcache, dzs, dhs, dus = saved
        V = self._unflatten(v)
        Rh, Rhs, Rzs, Rus = self._rforward(caches, V)
        Hv = np.empty(self.num_params)
        Rdz = self._loss[2](Rh, lcache)                         # R{∂L/∂ŷ} = (∂²L/∂ŷ²) Rŷ  (N, O)
        self._rbackprop(caches, (dzs, dhs, dus), (Rhs, Rzs, Rus), V, Rdz, Hv)
        return Hv

    def _rbackprop(self, caches, deltas, rimages, V, Rdz, Hv):
        """R-backward from Rdz = R{∂L/∂ŷ} (N, O) down to the first layer, writing each layer's
        R{∂L/∂θ_l} into Hv (P,). deltas = (dzs, dhs, dus) from ``_backprop``, rimages =
        (Rhs, Rzs, Rus) from ``_rforward`` along V (= ``_unflatten(v)``). Any output-level
        R{∂L/∂ŷ} works here (mamlnp/nn/policy.py starts it from the Gaussian's own)."""
        dzs, dhs, dus = deltas
        Rhs, Rzs, Rus = rimages
        for l in range(len(caches) - 1, -1, -1):
            dcache, acache = caches[l]
            if acache is not None:                              # hidden: through σ
                Rdz = LY.act_rbackward(Rdh, dhs[l], Rus[l], acache)  # (N, fan_out)
            if self.bn_layout[l] is not None:                   # hidden: through the batch norm
                dcache, bcache = dcache
                Rdz, Rdg, Rdbeta = BN.batchnorm_rbackward(Rdz, dus[l], Rzs[l], bcache, V[l][2])
                (g0, g1), (e0, e1) = self.bn_layout[l]
                Hv[g0:g1], Hv[e0:e1] = Rdg, Rdbeta
            Rdh, RdW, Rdb = LY.dense_rbackward(Rdz, dzs[l], Rhs[l], dcache, V[l][0])
            (w0, w1), (b0, b1), _ = self.layout[l]
            Hv[w0:w1] = RdW.ravel()
            Hv[b0:b1] = Rdb

    def grad_and_hvp(self, theta, x, y, v):
        """(L, ∇L, H v) sharing one forward/backward pass: the meta-gradient's building block."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        v = self.check_theta(v, name="v")
        loss, saved, grad = self._backward(theta, x, y)
        return loss, grad, self._rpass(saved, v)
