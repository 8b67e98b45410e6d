"""A convolutional network whose every derivative is written by hand: the paper's Omniglot ConvNet.

Dimension legend: N images, C × H × Wd one image (in_shape), D = C·H·Wd inputs, O = ways outputs,
B conv blocks, F_l filters of block l (F_0 = C), k the kernel size, H_l × W_l the maps of block
l, E features into the head (F_B for the spatial mean, F_B·H_B·W_B for the flatten),
L = B + 1 layers (the blocks and the head), P parameters.

Finn, Abbeel & Levine (2017), sec. 5.2 and cbfinn/maml's ``forward_conv`` / ``conv_block``:

    h_0 = x as images (N, H, Wd, C)     (each row of x is one image in (C, H, Wd) order)
    block l = 1…B:  z_l = conv(h_{l−1}; W_l, b_l)  stride Δ, zero padding p     (N, H_l, W_l, F_l)
                    u_l = BN_{γ_l, β_l}(z_l)       over the N·H_l·W_l pixels, per channel
                    a_l = σ(u_l),   h_l = maxpool_2×2(a_l) if pool else a_l
    f = mean over the pixels of h_B (N, F_B)   [head="mean"]    or  flatten(h_B) (N, E)
    ŷ = f W_h + b_h                                                               (N, O)
    L(θ) = loss(ŷ, y), softmax cross-entropy, the mean over the N images

The defaults are the paper's Omniglot network: 4 blocks of 64 3×3 filters, stride 2, padding 1
on every side (PyTorch's ``padding=1``, as learn2learn's Omniglot CNN; cbfinn's TensorFlow
``SAME`` pads 28 → 14 asymmetrically instead), 28 → 14 → 7 → 4 → 2, the spatial mean, a dense
head. The MiniImageNet variant is ``stride=1, pool=True, head="flatten"`` with 32 filters.

θ is ONE flat float64 vector; block l owns [W_l (F_l, F_{l−1}, k, k) row-major | b_l | γ_l | β_l],
the head [W_h (E, O) row-major | b_h]. ``layout`` and ``bn_layout`` describe it in the MLP's
format (l = 0 … L−1, the head last), which ANIL and MAML++ read. b_l is redundant under batch
norm (its gradient is zero up to rounding, docs/derivations/batchnorm.md §4); cbfinn keeps it.

The layers are mamlnp/nn/conv.py's; each block's four passes are the functions below, and the
class chains them like MLP. Derivation: docs/derivations/conv.md.
"""
import math

import numpy as np

from . import conv as CV
from . import layers as LY
from .activations import ACTIVATIONS
from .losses import LOSSES
from .mlp import BN_EPS
from ..errors import InputError
from ..validation import (as_float64, as_rng, boolean, check_memory, choice, nonneg_int,
                          positive_float, positive_int, probability_rows)

HEADS = ("mean", "flatten")


# ---- one block: conv -> batch norm -> σ -> [max-pool] --------------------------------------


def block_forward(h, p, net):
    """h (N, H, Wd, F_in), p = (W, b, γ, β) -> (h_out (N, H', W', F), cache)."""
    z, ccache = CV.conv_forward(h, p[0], p[1], net.stride, net.pad)       # (N, H_l, W_l, F)
    u, bcache = CV.batchnorm2d_forward(z, p[2], p[3], net.bn_eps)        # (N, H_l, W_l, F)
    a, acache = LY.act_forward(u, net._act)                              # (N, H_l, W_l, F)
    h_out, pcache = CV.maxpool_forward(a) if net.pool else (a, None)     # (N, H', W', F)
    return h_out, (ccache, bcache, acache, pcache)


def block_backward(dh, cache):
    """dh = ∂L/∂h_out -> (∂L/∂h_in, (dW, db, dγ, dβ), (da, du, dz) kept for the R-pass)."""
    ccache, bcache, acache, pcache = cache
    da = dh if pcache is None else CV.maxpool_backward(dh, pcache)       # ∂L/∂a
    du = LY.act_backward(da, acache)                                     # ∂L/∂u
    dz, dgamma, dbeta = CV.batchnorm2d_backward(du, bcache)              # ∂L/∂z
    dh_in, dW, db = CV.conv_backward(dz, ccache)
    return dh_in, (dW, db, dgamma, dbeta), (da, du, dz)


def block_rforward(Rh, cache, V):
    """Rh = R{h_in} (None for the image) -> (R{h_out}, (Rh, Rz, Ru) kept for the R-backward)."""
    ccache, bcache, acache, pcache = cache
    Rz = CV.conv_rforward(Rh, ccache, V[0], V[1])                        # (N, H_l, W_l, F)
    Ru = CV.batchnorm2d_rforward(Rz, bcache, V[2], V[3])
    Ra = LY.act_rforward(Ru, acache)
    return (Ra if pcache is None else CV.maxpool_rforward(Ra, pcache)), (Rh, Rz, Ru)


def block_rbackward(Rdh, cache, saved, Rs, V):
    """Rdh = R{∂L/∂h_out} -> (R{∂L/∂h_in}, (RdW, Rdb, Rdγ, Rdβ): the block's rows of H v)."""
    ccache, bcache, acache, pcache = cache
    (da, du, dz), (Rh, Rz, Ru) = saved, Rs
    Rda = Rdh if pcache is None else CV.maxpool_rbackward(Rdh, pcache)
    Rdu = LY.act_rbackward(Rda, da, Ru, acache)
    Rdz, Rdgamma, Rdbeta = CV.batchnorm2d_rbackward(Rdu, du, Rz, bcache, V[2])
    Rdh_in, RdW, Rdb = CV.conv_rbackward(Rdz, dz, Rh, ccache, V[0])
    return Rdh_in, (RdW, Rdb, Rdgamma, Rdbeta)


class ConvNet:
    """B blocks [conv k×k -> batch norm -> σ (-> 2×2 max-pool)], the spatial mean (or flatten),
    a dense head (module docstring).

    Parameters
    ----------
    in_shape : (C, H, Wd) of one image; inputs are rows (N, C·H·Wd) in that order.
    channels : filters F_l of each block, at least one block. Default (64, 64, 64, 64).
    ways : outputs O (classes). kernel, stride, pad : k, Δ, p of every convolution.
    pool : a 2×2 max-pool (stride 2, a trailing odd row or column dropped) after each σ.
    head : "mean" (the spatial mean, Omniglot) | "flatten" ((F, H, W) order, MiniImageNet).
    activation : "relu" | "tanh" | "softplus".  loss : "softmax_xent" | "mse".
    bn_eps : ε > 0 of the batch norms, default 1e-3 (``BN_EPS``, as the MLP's).
    """

    batch_norm = True

    def __init__(self, in_shape=(1, 28, 28), channels=(64, 64, 64, 64), ways=5, kernel=3,
                 stride=2, pad=1, pool=False, head="mean", activation="relu",
                 loss="softmax_xent", bn_eps=BN_EPS):
        self.in_shape = _int_tuple("in_shape", in_shape, 3)
        self.channels = _int_tuple("channels", channels)
        self.ways = positive_int("ways", ways)
        self.kernel, self.stride = positive_int("kernel", kernel), positive_int("stride", stride)
        self.pad, self.pool = nonneg_int("pad", pad), boolean("pool", pool)
        self.head = choice("head", head, HEADS)
        self.activation = choice("activation", activation, ACTIVATIONS)
        self.loss_name = choice("loss", loss, LOSSES)
        self.bn_eps = positive_float("bn_eps", bn_eps)
        self._act, self._loss = ACTIVATIONS[self.activation], LOSSES[self.loss_name]
        self.maps = self._maps()
        F, (Hb, Wb) = self.channels[-1], self.maps[-1][1]
        self.features = F if self.head == "mean" else F * Hb * Wb
        self.sizes = (math.prod(self.in_shape),) + self.channels + (self.ways,)
        self.layout, self.bn_layout, self.num_params = self._make_layout()
        check_memory("in_shape and channels", (self.in_shape, self.channels), 8 * self.num_params,
                     f"θ of {self.num_params} floats")

    def _maps(self):
        """[((H_l, W_l) after the conv, (H_l', W_l') after the pool), …] per block; an
        InputError when a map would be empty."""
        (_, H, Wd), k, maps = self.in_shape, self.kernel, []
        for l in range(len(self.channels)):
            Hc, Wc = CV.out_size(H, k, self.stride, self.pad), CV.out_size(Wd, k, self.stride, self.pad)
            H, Wd = (Hc // 2, Wc // 2) if self.pool else (Hc, Wc)
            if min(H, Wd) < 1:
                raise InputError(
                    f"in_shape: expected images large enough for {len(self.channels)} block(s) of "
                    f"{k}x{k} convolutions (stride {self.stride}, pad {self.pad}"
                    f"{', 2x2 pool' if self.pool else ''}), got {self.in_shape}: block {l + 1}'s "
                    f"map would be {H}x{Wd}")
            maps.append(((Hc, Wc), (H, Wd)))
        return maps

    def _make_layout(self):
        """(layout, bn_layout, P) in MLP's format: layout[l] = ((w0, w1), (b0, b1), W's shape),
        bn_layout[l] = ((γ0, γ1), (β0, β1)) for a block, None for the head."""
        layout, bn_layout, o, k = [], [], 0, self.kernel
        shapes = [(f, c, k, k) for c, f in zip((self.in_shape[0],) + self.channels, self.channels)]
        for shape in shapes + [(self.features, self.ways)]:
            nw, nb = math.prod(shape), shape[0] if len(shape) == 4 else shape[1]
            layout.append(((o, o + nw), (o + nw, o + nw + nb), shape))
            o += nw + nb
            bn_layout.append(((o, o + nb), (o + nb, o + 2 * nb)) if len(shape) == 4 else None)
            o += 2 * nb if len(shape) == 4 else 0
        return layout, bn_layout, o

    def __repr__(self):
        return "ConvNet(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def config(self):
        """A JSON-able description; ``ConvNet(**model.config())`` rebuilds the model."""
        return {"in_shape": list(self.in_shape), "channels": list(self.channels), "ways": self.ways,
                "kernel": self.kernel, "stride": self.stride, "pad": self.pad, "pool": self.pool,
                "head": self.head, "activation": self.activation, "loss": self.loss_name,
                "bn_eps": self.bn_eps}

    # ---- parameters ---------------------------------------------------------------------

    def init(self, seed=0):
        """A fresh θ (P,) from ``numpy.random.default_rng(seed)``, cbfinn/maml's initialisation
        (``construct_conv_weights``): conv W ~ U(±√(6/((F_in + F)k²))) (Xavier/Glorot for
        conv2d), b = 0, γ = 1, β = 0; head W ~ N(0, 1) for the spatial mean (cbfinn's Omniglot
        w5), Xavier U(±√(6/(E + O))) for the flatten (its MiniImageNet w5); b_h = 0."""
        rng = as_rng("seed", seed)
        theta = np.zeros(self.num_params)
        for ((w0, w1), _, shape), bn in zip(self.layout, self.bn_layout):
            if bn is not None:
                F, C, kh, kw = shape
                bound = np.sqrt(6.0 / ((C + F) * kh * kw))
                theta[w0:w1] = rng.uniform(-bound, bound, w1 - w0)
                theta[bn[0][0]:bn[0][1]] = 1.0                           # γ = 1 (β stays 0)
            elif self.head == "mean":
                theta[w0:w1] = rng.standard_normal(w1 - w0)
            else:
                bound = np.sqrt(6.0 / sum(shape))
                theta[w0:w1] = rng.uniform(-bound, bound, w1 - w0)
        return theta

    def unflatten(self, theta):
        """(blocks, head): blocks [(W_l (F_l, F_{l−1}, k, k), b_l, γ_l, β_l), …], head
        (W_h (E, O), b_h), views into θ (of a converted copy if θ is not C-contiguous float64)."""
        params = self._unflatten(self.check_theta(theta))
        return params[:-1], params[-1]

    def _unflatten(self, theta):
        """The L blocks' parameter tuples, the head's last, as one list of views into θ."""
        out = []
        for ((w0, w1), (b0, b1), shape), bn in zip(self.layout, self.bn_layout):
            block = (theta[w0:w1].reshape(shape), theta[b0:b1])
            out.append(block if bn is None else block + (theta[bn[0][0]:bn[0][1]],
                                                        theta[bn[1][0]:bn[1][1]]))
        return out

    def flatten(self, params):
        """Inverse of ``unflatten``: (blocks, head) -> a new flat float64 vector (P,)."""
        B = len(self.channels)
        try:
            blocks, head = params
            items = [tuple(b) for b in blocks] + [tuple(head)]
        except (TypeError, ValueError):
            items = None
        if items is None or len(items) != B + 1 or any(len(t) != 4 for t in items[:B]) \
                or len(items[B]) != 2:
            raise InputError(f"params: expected (blocks, head): a list of {B} (W, b, gamma, beta) "
                             f"tuples and one (W, b) pair, got {type(params).__name__}")
        parts = []
        for l, (item, ((_, _, shape), bn)) in enumerate(zip(items, zip(self.layout, self.bn_layout))):
            nb = shape[0] if bn is not None else shape[1]
            for name, value, want in zip(("W", "b", "gamma", "beta"), item,
                                         (shape, (nb,), (nb,), (nb,))):
                where = f"blocks[{l}]" if l < B else "head"
                parts.append(as_float64(f"params {where} {name}", value, len(want), want).ravel())
        return np.concatenate(parts)

    # ---- argument checks ------------------------------------------------------------------

    def check_theta(self, theta, name="theta"):
        return as_float64(name, theta, 1, (self.num_params,))

    def check_xy(self, x, y=None, xname="x", yname="y"):
        """x (N, C·H·Wd), y (N, O) (probability rows for softmax_xent); sizes checked first."""
        x = as_float64(xname, x, 2, ("N", self.sizes[0]))
        k2, per_image = self.kernel ** 2, 0
        for F_in, F, ((Hc, Wc), _) in zip((self.in_shape[0],) + self.channels, self.channels, self.maps):
            per_image += Hc * Wc * (2 * F_in * k2 + 10 * F)                 # patches, maps, caches
        check_memory(xname, x.shape, 8 * x.shape[0] * per_image,
                     "the blocks' patches, maps and caches")
        if y is None:
            return x
        y = as_float64(yname, y, 2, (x.shape[0], self.ways))
        if self.loss_name == "softmax_xent":
            probability_rows(yname, y)
        return x, y

    # ---- forward ---------------------------------------------------------------------------

    def forward(self, theta, x):
        """ŷ = f_θ(x): x (N, C·H·Wd) -> ŷ (N, O). The N images are one batch for batch norm."""
        return self._forward(self.check_theta(theta), self.check_xy(x))[0]

    def _forward(self, theta, x, stop=None):
        """(ŷ, caches): caches[l] a block's cache (l < B), caches[B] = (the reduction's cache,
        the head's dense cache). ``stop`` = L − 1 (ANIL's body) returns (f (N, E), caches with
        no head cache); stop = l < B returns (h_l (N, H_l', W_l', F_l), the first l caches)."""
        params, B = self._unflatten(theta), len(self.channels)
        stop = B + 1 if stop is None else stop
        N, (C, H, Wd) = x.shape[0], self.in_shape
        h, caches = x.reshape(N, C, H, Wd).transpose(0, 2, 3, 1), []      # (N, H, Wd, C)
        for p in params[:min(stop, B)]:
            h, cache = block_forward(h, p, self)
            caches.append(cache)
        if stop < B:
            return h, caches
        f, rcache = CV.REDUCE[self.head][0](h)                            # (N, E)
        f, hcache = LY.dense_forward(f, *params[B]) if stop > B else (f, None)   # (N, O)
        caches.append((rcache, hcache))
        return f, caches

    def loss(self, theta, x, y):
        """L(θ; x, y), a float."""
        theta = self.check_theta(theta)
        return self._loss_value(theta, *self.check_xy(x, y))

    def _loss_value(self, theta, x, y):
        return self._loss[0](self._forward(theta, x)[0], y)[0]

    # ---- backward: the gradient -------------------------------------------------------------

    def loss_and_grad(self, theta, x, y):
        """(L(θ), ∇L(θ) (P,)) by backpropagation."""
        theta = self.check_theta(theta)
        return self._loss_and_grad(theta, *self.check_xy(x, y))

    def _loss_and_grad(self, theta, x, y):
        loss, _, grad = self._backward(theta, x, y)
        return loss, grad

    def _backward(self, theta, x, y):
        """Forward and backward; saved = (caches, loss cache, ∂L/∂ŷ, the blocks' (da, du, dz))."""
        y_hat, caches = self._forward(theta, x)
        loss, lcache = self._loss[0](y_hat, y)
        grad = np.empty_like(theta)
        dy = self._loss[1](lcache)                                       # ∂L/∂ŷ (N, O)
        return loss, (caches, lcache, dy, self._backprop(caches, dy, grad)), grad

    def _backprop(self, caches, d, grad):
        """Backpropagate d = ∂L/∂(the output of ``caches``: ŷ, or f for ANIL's body, or h_l)
        to the image, writing each block's (and the head's) gradient into grad (P,);
        returns the blocks' (da, du, dz) for the R-pass."""
        B, out = len(self.channels), self._unflatten(grad)
        if len(caches) > B:
            rcache, hcache = caches[B]
            if hcache is not None:                                       # through the head
                d, out[B][0][...], out[B][1][...] = LY.dense_backward(d, hcache)   # d: ∂L/∂f
            d = CV.REDUCE[self.head][1](d, rcache)                      # ∂L/∂h_B
        saved = [None] * B
        for l in range(min(len(caches), B) - 1, -1, -1):
            d, grads, saved[l] = block_backward(d, caches[l])
            for dst, src in zip(out[l], grads):
                dst[...] = src
        return saved

    # ---- R-pass: the exact Hessian-vector product -------------------------------------------

    def hvp(self, theta, x, y, v):
        """H v = ∇²_θ L(θ; x, y) · v, exact, by Pearlmutter's R-operator.  v (P,) -> (P,)."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        return self._hvp(theta, x, y, self.check_theta(v, name="v"))

    def _hvp(self, theta, x, y, v):
        _, saved, _ = self._backward(theta, x, y)
        return self._rpass(saved, v)

    def _rpass(self, saved, v):
        """R-forward along v through the blocks, the reduction and the head, then R-backward
        from R{∂L/∂ŷ} = ∂²L/∂ŷ² Rŷ; the R-gradient is H v (P,)."""
        caches, lcache, dy, dsaved = saved
        V, B = self._unflatten(v), len(self.channels)
        Rh, Rs = None, []                                                # R{x} = 0
        for l in range(B):
            Rh, r = block_rforward(Rh, caches[l], V[l])
            Rs.append(r)
        (reduce_f, reduce_b), (rcache, hcache) = CV.REDUCE[self.head], caches[B]
        Rf = reduce_f(Rh)[0]                                             # (N, E)
        Ry = LY.dense_rforward(Rf, hcache, *V[B])                        # Rŷ (N, O)
        Hv = np.empty(self.num_params)
        out = self._unflatten(Hv)
        Rdf, out[B][0][...], out[B][1][...] = LY.dense_rbackward(
            self._loss[2](Ry, lcache), dy, Rf, hcache, V[B][0])
        Rdh = reduce_b(Rdf, rcache)                                      # (N, H_B', W_B', F_B)
        for l in range(B - 1, -1, -1):
            Rdh, blocks = block_rbackward(Rdh, caches[l], dsaved[l], Rs[l], V[l])
            for dst, src in zip(out[l], blocks):
                dst[...] = src
        return Hv

    def grad_and_hvp(self, theta, x, y, v):
        """(L, ∇L, H v) sharing one forward/backward pass."""
        theta = self.check_theta(theta)
        x, y = self.check_xy(x, y)
        loss, saved, grad = self._backward(theta, x, y)
        return loss, grad, self._rpass(saved, self.check_theta(v, name="v"))


def _int_tuple(name, value, length=None):
    """A tuple of positive ints (``length`` of them, else at least one), else InputError."""
    try:
        items = tuple(value)
    except TypeError:
        raise InputError(f"{name}: expected a sequence of positive integers, got {value!r}") from None
    if (length is not None and len(items) != length) or not items:
        want = f"{length}" if length is not None else "at least one"
        raise InputError(f"{name}: expected {want} positive integers, got {value!r}")
    return tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(items))
