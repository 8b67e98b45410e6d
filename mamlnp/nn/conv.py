"""The convolutional network's layers: 2-D convolution, spatial batch norm, 2×2 max-pool, the
spatial mean and the flatten, each with its forward, backward, R-forward and R-backward.

Dimension legend: N images, H × Wd their rows × columns, C input channels, F output channels
(filters), kh × kw the kernel, Δ the stride, p the zero padding on each side,
Ho = ⌊(H + 2p − kh)/Δ⌋ + 1 and Wo = ⌊(Wd + 2p − kw)/Δ⌋ + 1 the output size,
J = C·kh·kw entries of one patch, N·Ho·Wo the output pixels (the rows of the dense layer).

Feature maps are NHWC arrays (N, H, Wd, C): one pixel's channels are one row, so that
a map reshaped to (N·H·Wd, C) is a plain matrix of rows. Weights are W (F, C, kh, kw)
(PyTorch's layout) and the convolution is a cross-correlation, as in every deep-learning library:

  z[n, i, j, f] = b_f + Σ_{c,a,b'} W[f, c, a, b'] · x_pad[n, Δ·i + a, Δ·j + b', c]

**The convolution is a dense layer on patches.** ``im2col`` copies each output pixel's patch
into a row, cols (N·Ho·Wo, J), column (c, a, b') in W's order; then z = cols · W_m + b with
W_m = W.reshape(F, J)ᵀ (J, F), which is layers.py's dense layer. im2col is linear and does
not depend on θ, so every pass of the convolution is the dense layer's pass with h = cols,
and the way back to the image is im2col's adjoint, ``col2im`` (a scatter-add of the patches):

  forward       cols = im2col(x),            z = cols W_m + b               (N·Ho·Wo, F)
  backward      dcols, dW_m, db = dense_backward(dz),     dx = col2im(dcols)
  R-forward     Rz = im2col(Rx) W_m + cols V_Wm + V_b                       (N·Ho·Wo, F)
  R-backward    Rdcols, RdW_m, Rdb = dense_rbackward(Rdz, dz, im2col(Rx), V_Wm),
                Rdx = col2im(Rdcols)

**Batch norm over (N, H, Wd) per channel** is nn/batchnorm.py's layer on the (N·H·Wd, C)
rows: the reshape is free in NHWC, and those functions are called, not copied.

**Max-pool, the spatial mean and the flatten are linear maps once the pool's argmax is
fixed**, and the argmax does not move under an infinitesimal change of θ (away from ties),
so each has R-forward = the same map on the R-input and R-backward = its backward (adjoint)
on the R-gradient; their second derivative is zero.

Derivation and the equation-to-code table: docs/derivations/conv.md.
"""
import numpy as np

from . import batchnorm as BN
from . import layers as LY


def out_size(n, k, stride, pad):
    """⌊(n + 2p − k)/Δ⌋ + 1: the output length of a convolution along one axis."""
    return (n + 2 * pad - k) // stride + 1


def _taps(kh, kw, stride, Ho, Wo):
    """For each kernel offset (a, b'): (a, b', the rows/columns of x_pad it reads, strided)."""
    for a in range(kh):
        for b in range(kw):
            yield a, b, slice(a, a + stride * (Ho - 1) + 1, stride), \
                slice(b, b + stride * (Wo - 1) + 1, stride)


def im2col(x, kh, kw, stride, pad):
    """x (N, H, Wd, C) -> cols (N·Ho·Wo, C·kh·kw): row (n, i, j) holds the patch
    x_pad[n, Δ·i + a, Δ·j + b', c] at column (c, a, b'), W's order."""
    N, H, Wd, C = x.shape
    Ho, Wo = out_size(H, kh, stride, pad), out_size(Wd, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))          # (N, H+2p, Wd+2p, C)
    cols = np.empty((N, Ho, Wo, C, kh, kw))
    for a, b, rows, columns in _taps(kh, kw, stride, Ho, Wo):
        cols[..., a, b] = xp[:, rows, columns, :]                      # (N, Ho, Wo, C)
    return cols.reshape(N * Ho * Wo, C * kh * kw)


def col2im(dcols, x_shape, kh, kw, stride, pad):
    """The adjoint of im2col: dcols (N·Ho·Wo, C·kh·kw) -> dx (N, H, Wd, C), each patch entry
    added back onto the pixel it was copied from (padding pixels dropped)."""
    N, H, Wd, C = x_shape
    Ho, Wo = out_size(H, kh, stride, pad), out_size(Wd, kw, stride, pad)
    d = dcols.reshape(N, Ho, Wo, C, kh, kw)
    dxp = np.zeros((N, H + 2 * pad, Wd + 2 * pad, C))
    for a, b, rows, columns in _taps(kh, kw, stride, Ho, Wo):
        dxp[:, rows, columns, :] += d[..., a, b]                       # (N, Ho, Wo, C)
    return dxp[:, pad:pad + H, pad:pad + Wd, :]


def _matrix(W):
    """W (F, C, kh, kw) -> W_m (C·kh·kw, F), a view: the dense layer's weight."""
    return W.reshape(W.shape[0], -1).T


def _rows(a):
    """(N, H, Wd, C) -> (N·H·Wd, C), a view: one pixel per row."""
    return a.reshape(-1, a.shape[-1])


# ---- 2-D convolution ---------------------------------------------------------------------


def conv_forward(x, W, b, stride, pad):
    """z = conv(x; W) + b.  x (N, H, Wd, C), W (F, C, kh, kw), b (F,) -> z (N, Ho, Wo, F)."""
    N, H, Wd, _ = x.shape
    F, _, kh, kw = W.shape
    cols = im2col(x, kh, kw, stride, pad)                              # (N·Ho·Wo, J)
    z, dcache = LY.dense_forward(cols, _matrix(W), b)                  # (N·Ho·Wo, F)
    shape = (N, out_size(H, kh, stride, pad), out_size(Wd, kw, stride, pad), F)
    return z.reshape(shape), (dcache, x.shape, (kh, kw, stride, pad))


def conv_backward(dz, cache):
    """dz (N, Ho, Wo, F) -> dx (N, H, Wd, C), dW (F, C, kh, kw), db (F,)."""
    dcache, x_shape, geom = cache
    dcols, dWm, db = LY.dense_backward(_rows(dz), dcache)              # (N·Ho·Wo, J), (J, F), (F,)
    dW = dWm.T.reshape(dz.shape[-1], x_shape[-1], geom[0], geom[1])    # (F, C, kh, kw)
    return col2im(dcols, x_shape, *geom), dW, db


def conv_rforward(Rx, cache, VW, Vb):
    """Rz = conv(Rx; W) + conv(x; V_W) + V_b.  Rx (N, H, Wd, C) or None (the input image does
    not depend on θ), V_W (F, C, kh, kw), V_b (F,) -> Rz (N, Ho, Wo, F)."""
    dcache, x_shape, geom = cache
    Rcols = None if Rx is None else im2col(Rx, *geom)                  # (N·Ho·Wo, J)
    Rz = LY.dense_rforward(Rcols, dcache, _matrix(VW), Vb)             # (N·Ho·Wo, F)
    N, H, Wd, _ = x_shape
    kh, kw, stride, pad = geom
    return Rz.reshape(N, out_size(H, kh, stride, pad), out_size(Wd, kw, stride, pad), -1)


def conv_rbackward(Rdz, dz, Rx, cache, VW):
    """R-pass of conv_backward.  Rdz, dz (N, Ho, Wo, F), Rx (N, H, Wd, C) or None, V_W
    (F, C, kh, kw) -> Rdx (N, H, Wd, C), RdW (F, C, kh, kw), Rdb (F,): the W- and b-blocks of H v."""
    dcache, x_shape, geom = cache
    Rcols = None if Rx is None else im2col(Rx, *geom)                  # (N·Ho·Wo, J)
    Rdcols, RdWm, Rdb = LY.dense_rbackward(_rows(Rdz), _rows(dz), Rcols, dcache, _matrix(VW))
    RdW = RdWm.T.reshape(VW.shape)                                     # (F, C, kh, kw)
    return col2im(Rdcols, x_shape, *geom), RdW, Rdb


# ---- batch norm over (N, H, Wd), per channel: nn/batchnorm.py on the pixel rows --------------


def batchnorm2d_forward(z, gamma, beta, eps):
    """z (N, H, Wd, C), γ, β (C,) -> y (N, H, Wd, C), statistics over the N·H·Wd pixels."""
    y, cache = BN.batchnorm_forward(_rows(z), gamma, beta, eps)        # (N·H·Wd, C)
    return y.reshape(z.shape), cache


def batchnorm2d_backward(dy, cache):
    """dy (N, H, Wd, C) -> dz (N, H, Wd, C), dγ (C,), dβ (C,)."""
    dz, dgamma, dbeta = BN.batchnorm_backward(_rows(dy), cache)
    return dz.reshape(dy.shape), dgamma, dbeta


def batchnorm2d_rforward(Rz, cache, Vgamma, Vbeta):
    """Rz (N, H, Wd, C) -> Ry (N, H, Wd, C)."""
    return BN.batchnorm_rforward(_rows(Rz), cache, Vgamma, Vbeta).reshape(Rz.shape)


def batchnorm2d_rbackward(Rdy, dy, Rz, cache, Vgamma):
    """Rdy, dy, Rz (N, H, Wd, C) -> Rdz (N, H, Wd, C), Rdγ (C,), Rdβ (C,)."""
    Rdz, Rdgamma, Rdbeta = BN.batchnorm_rbackward(_rows(Rdy), _rows(dy), _rows(Rz), cache, Vgamma)
    return Rdz.reshape(Rdy.shape), Rdgamma, Rdbeta


# ---- 2×2 max-pool, stride 2 (a trailing odd row or column is dropped) -------------------------


def _windows(a):
    """a (N, H, Wd, C) -> (N, H//2, Wd//2, C, 4): each 2×2 window's entries, row-major."""
    N, H, Wd, C = a.shape
    Ho, Wo = H // 2, Wd // 2
    w = a[:, :2 * Ho, :2 * Wo, :].reshape(N, Ho, 2, Wo, 2, C)         # (n, i, a, j, b', c)
    return w.transpose(0, 1, 3, 5, 2, 4).reshape(N, Ho, Wo, C, 4)


def maxpool_forward(a):
    """m[n, i, j, c] = max of a[n, 2i:2i+2, 2j:2j+2, c].  a (N, H, Wd, C) -> (N, H//2, Wd//2, C).
    cache = (the argmax k ∈ 0…3 of each window (the first one on a tie), a's shape)."""
    win = _windows(a)                                                  # (N, Ho, Wo, C, 4)
    arg = win.argmax(axis=-1)                                          # (N, Ho, Wo, C)
    return np.take_along_axis(win, arg[..., None], -1)[..., 0], (arg, a.shape)


def maxpool_backward(dm, cache):
    """dm (N, Ho, Wo, C) -> da (N, H, Wd, C): each window's gradient routed to its argmax."""
    arg, shape = cache
    N, Ho, Wo, C = dm.shape
    win = np.zeros((N, Ho, Wo, C, 4))
    np.put_along_axis(win, arg[..., None], dm[..., None], -1)          # (n, i, j, c, k)
    win = win.reshape(N, Ho, Wo, C, 2, 2).transpose(0, 1, 4, 2, 5, 3)  # (n, i, a, j, b', c)
    da = np.zeros(shape)
    da[:, :2 * Ho, :2 * Wo, :] = win.reshape(N, 2 * Ho, 2 * Wo, C)
    return da


def maxpool_rforward(Ra, cache):
    """Rm = Ra at each window's argmax (the same selection as the forward)."""
    arg, _ = cache
    return np.take_along_axis(_windows(Ra), arg[..., None], -1)[..., 0]


def maxpool_rbackward(Rdm, cache):
    """Rda = the routing of Rdm (the argmax is locally constant: no second-order term)."""
    return maxpool_backward(Rdm, cache)


# ---- the spatial mean and the flatten: feature maps -> feature rows ---------------------------


def spatial_mean_forward(h):
    """f = mean over the H·Wd pixels.  h (N, H, Wd, C) -> f (N, C)."""
    return h.mean(axis=(1, 2)), h.shape


def spatial_mean_backward(df, shape):
    """df (N, C) -> dh (N, H, Wd, C) = df / (H·Wd) at every pixel."""
    return np.broadcast_to(df[:, None, None, :] / (shape[1] * shape[2]), shape)


def flatten_forward(h):
    """f = h in (C, H, Wd) order, the order of the input rows.  h (N, H, Wd, C) -> (N, C·H·Wd)."""
    return h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1), h.shape


def flatten_backward(df, shape):
    """df (N, C·H·Wd) -> dh (N, H, Wd, C)."""
    N, H, Wd, C = shape
    return df.reshape(N, C, H, Wd).transpose(0, 2, 3, 1)


# R-forward = forward, R-backward = backward: the maps are linear and do not depend on θ.
REDUCE = {"mean": (spatial_mean_forward, spatial_mean_backward),
          "flatten": (flatten_forward, flatten_backward)}
