"""The convolutional network's rows of ``python -m mamlnp gradcheck``: every layer of
mamlnp/nn/conv.py pass by pass, the ConvNet's gradient and HVP, and the meta-gradient through it.

Dimension legend: N images, C × H × Wd one image, F filters, P parameters, T tasks,
K support images, Q query images, s = inner_steps.

**A layer's four passes.** For a layer y = f(x_1, …, x_m) (its input and parameters) with
cache c, a random upstream gradient G = ∂L/∂y, a random direction (Rx_1, …, Rx_m) and a
random RG = R{G}, each pass is compared with a centred finite difference of the forward or
backward pass along the direction (ε = 1e-5):

    backward     Σ_i ⟨∂L/∂x_i, Rx_i⟩               vs  D_r ⟨G, f(x + r Rx)⟩
    R-forward    R{y}                               vs  D_r f(x + r Rx)
    R-backward   R{∂L/∂x_i}                         vs  D_r backward(G + r RG, c(x + r Rx))

The cases are drawn on odd sizes (H = 7, Wd = 5), stride 1 and 2, padding 0 and 1.
ReLU and max-pool have kinks (a ReLU input at 0, a tie in a pooling window): ``conv_margin``
reports the smallest distance of the cases to one, and they are drawn far from them.
"""
import numpy as np

from ..meta import maml
from ..nn import conv as CV
from ..nn.convnet import ConvNet
from ..tasks.base import TaskBatch
from .fdcheck import CheckResult, compare

RELU_MARGIN = 1e-4   # with FD steps ε = 1e-6, which move any u by ~1e-5 at most
EPS = 1e-6
IN_SHAPE, CHANNELS, WAYS = (2, 7, 5), (3, 4), 3
VARIANTS = {"s2 p1 mean": {}, "s1 p0 mean": {"stride": 1, "pad": 0},
            "s1 p1 pool flatten": {"stride": 1, "pool": True, "head": "flatten"}}


# ---- one layer, pass by pass ---------------------------------------------------------------


def _layer_specs(rng):
    """name -> (inputs, forward(*inputs) -> (y, c), backward(G, c) -> grads,
    rforward(R, c) -> Ry, rbackward(RG, G, R, c) -> R-grads), R the direction per input."""
    x = rng.standard_normal((3, 7, 5, 2))                                # (N, H, Wd, C)
    W, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)     # (F, C, 3, 3), (F,)
    z = rng.standard_normal((3, 7, 5, 4)) * 2.0 + 1.0                    # (N, H, Wd, F)
    gb = (rng.uniform(0.5, 1.5, 4), rng.standard_normal(4))             # γ, β (F,)
    specs = {}
    for s, p in ((1, 0), (2, 1)):
        specs[f"conv s={s} p={p}"] = (
            (x, W, b), lambda x, W, b, s=s, p=p: CV.conv_forward(x, W, b, s, p), CV.conv_backward,
            lambda R, c: CV.conv_rforward(R[0], c, R[1], R[2]),
            lambda RG, G, R, c: CV.conv_rbackward(RG, G, R[0], c, R[1]))
    specs["batch norm over (N, H, W)"] = (
        (z,) + gb, lambda z, g, e: CV.batchnorm2d_forward(z, g, e, 1e-3), CV.batchnorm2d_backward,
        lambda R, c: CV.batchnorm2d_rforward(R[0], c, R[1], R[2]),
        lambda RG, G, R, c: CV.batchnorm2d_rbackward(RG, G, R[0], c, R[1]))
    specs["max-pool 2x2"] = (
        (z,), CV.maxpool_forward, lambda G, c: (CV.maxpool_backward(G, c),),
        lambda R, c: CV.maxpool_rforward(R[0], c), lambda RG, G, R, c: (CV.maxpool_rbackward(RG, c),))
    for name, (fwd, bwd) in CV.REDUCE.items():
        specs[f"spatial {name}" if name == "mean" else name] = (
            (z,), fwd, lambda G, c, bwd=bwd: (bwd(G, c),), lambda R, c, fwd=fwd: fwd(R[0])[0],
            lambda RG, G, R, c, bwd=bwd: (bwd(RG, c),))
    return specs


def _flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def check_layer(name, spec, seed=0, eps=1e-5, tol=1e-6):
    """Three rows (backward, R-forward, R-backward) for one layer ``spec`` of _layer_specs."""
    inputs, fwd, bwd, rfwd, rbwd = spec
    rng = np.random.default_rng(seed)
    y, cache = fwd(*inputs)
    G, RG = rng.standard_normal((2,) + y.shape)                          # ∂L/∂y, R{∂L/∂y}
    R = [rng.standard_normal(a.shape) for a in inputs]                   # the direction
    moved = lambda r: fwd(*[a + r * d for a, d in zip(inputs, R)])       # noqa: E731  (y, c)
    fd = lambda f: (f(eps) - f(-eps)) / (2 * eps)                        # noqa: E731
    dot = fd(lambda r: np.sum(G * moved(r)[0]))
    fd_y = fd(lambda r: moved(r)[0])
    fd_g = fd(lambda r: _flat(bwd(G + r * RG, moved(r)[1])))
    return [compare(f"{name}: backward vs FD", _flat(bwd(G, cache)) @ _flat(R), dot, tol),
            compare(f"{name}: R-forward vs FD", np.ravel(rfwd(R, cache)), np.ravel(fd_y), tol),
            compare(f"{name}: R-backward vs FD", _flat(rbwd(RG, G, R, cache)), fd_g, tol)]


def layer_checks(seed=0):
    return [row for name, spec in _layer_specs(np.random.default_rng(seed)).items()
            for row in check_layer(f"conv layers, {name}", spec, seed)]


# ---- the network --------------------------------------------------------------------------


def conv_margin(model, theta, x):
    """The distance of (θ, x) to a kink: min over the blocks of |u| (the σ inputs, for ReLU)
    and of the gap between the two largest u of each pooling window whose largest u > 0
    (every window for a smooth σ, whose pooled values all carry a gradient); inf if none."""
    _, caches = model._forward(theta, x)
    margins = []
    for _, _, (u, _), pcache in caches[:len(model.channels)]:
        if model.activation == "relu":
            margins.append(np.abs(u).min())
        if pcache is not None:
            top2 = np.sort(CV._windows(u), axis=-1)[..., 2:]               # (N, H', W', F, 2)
            live = top2[..., 1] > 0 if model.activation == "relu" else np.ones(top2.shape[:-1], bool)
            if live.any():
                margins.append((top2[..., 1] - top2[..., 0])[live].min())
    return min(margins, default=np.inf)


def draw_conv_case(seed, options=None, activation="relu", loss="softmax_xent",
                   tasks=2, shots=3, query=3, alpha=0.1, steps=3):
    """(model, θ, batch): a ConvNet on IN_SHAPE, CHANNELS (``options``: its other arguments,
    e.g. VARIANTS[name]) with γ, β jittered by U(−0.5, 0.5),
    images ~ N(0, I), one-hot targets (mse: N(0, I)), every iterate θ_0 … θ_steps of every task
    at ConvNet margin > RELU_MARGIN on its support, its query and both sets together."""
    model = ConvNet(IN_SHAPE, CHANNELS, WAYS, activation=activation, loss=loss, **(options or {}))
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt, 31])
        theta = model.init(int(rng.integers(2**31)))
        for bn in model.bn_layout[:-1]:
            theta[bn[0][0]:bn[1][1]] += rng.uniform(-0.5, 0.5, bn[1][1] - bn[0][0])
        x = rng.standard_normal((tasks, shots + query, model.sizes[0]))  # (T, K+Q, D)
        y = (np.eye(WAYS)[rng.integers(0, WAYS, x.shape[:2])] if loss == "softmax_xent"
             else rng.standard_normal(x.shape[:2] + (WAYS,)))
        batch = TaskBatch.make(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
        if _meta_margin(model, theta, batch, alpha, steps) > RELU_MARGIN:
            return model, theta, batch
    raise RuntimeError("no conv case with a safe margin in 100 draws")  # pragma: no cover


def _meta_margin(model, theta, batch, alpha, steps):
    margins = []
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        for th in maml.inner_loop(model, theta, xs, ys, alpha, steps):
            margins += [conv_margin(model, th, xs), conv_margin(model, th, xq),
                        conv_margin(model, th, np.concatenate([xs, xq]))]
    return min(margins)


def _guarded(label, fn):
    try:
        return fn()
    except Exception as exc:                                             # noqa: BLE001
        return [CheckResult(label, float("nan"), float("nan"), 0.0,
                            note=f"{type(exc).__name__}: {exc}")]


def conv_checks(checks, seed=0, quick=False, backend="numpy"):
    """Every conv row: the layers, then per variant (quick: the paper's s2 p1 mean and the
    pool variant) the model's gradient, HVP, symmetry and linearity on one batch (the first
    task's K + Q images), and the meta-gradient at s = 1 … 3 (quick: 1, 3), second order
    (agree) and first order (differ). ``checks`` is mamlnp.check.gradcheck, whose checkers
    these rows call (passed in: that module imports this one)."""
    C = checks
    rows = _guarded("conv layers", lambda: layer_checks(seed))
    variants = ("s2 p1 mean", "s1 p1 pool flatten") if quick else tuple(VARIANTS)
    for variant in variants:
        tag = f"ConvNet {'x'.join(map(str, IN_SHAPE))} channels {CHANNELS} {variant}"
        model, theta, batch = draw_conv_case(seed, VARIANTS[variant])
        xs, ys, xq, yq = batch.task(0)
        x, y = np.concatenate([xs, xq]), np.concatenate([ys, yq])       # (K+Q, D), (K+Q, O)
        rows += _guarded(tag, lambda: [
            C.check_gradient(model, theta, x, y, EPS, label=f"{tag} gradient"),
            C.check_hvp(model, theta, x, y, eps=EPS, seed=seed, label=f"{tag} HVP"),
            C.check_symmetry(model, theta, x, y, seed=seed, label=f"{tag} <u,Hv> = <Hu,v>"),
            C.check_linearity(model, theta, x, y, seed=seed, label=f"{tag} HVP linear in v")])
        for s in ((1, 3) if quick else (1, 2, 3)):
            for fo in (False, True):
                label = f"{tag} meta-grad s={s} {'FO' if fo else 'SO'}"
                rows += _guarded(label, lambda: [C.check_meta_gradient(
                    model, theta, batch, 0.1, s, fo, eps=EPS, backend=backend, label=label)])
    return rows
