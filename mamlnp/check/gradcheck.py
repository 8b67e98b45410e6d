"""Check every hand-written derivative against centred finite differences.

Dimension legend: N points, T tasks, K support points, Q query points,
P parameters, M check directions, s = inner_steps.

Any model offering the model protocol (``num_params``, ``check_theta``,
``check_xy``, ``_loss_value``, ``_loss_and_grad``, ``_hvp``) can be checked:

    import numpy as np
    from mamlnp import MLP, gradcheck
    model = MLP((2, 8, 1), "tanh"); theta = model.init(0, scheme="uniform")
    x = np.random.default_rng(0).standard_normal((5, 2)); y = np.sin(x[:, :1])   # (N, D), (N, O)
    rows = [gradcheck.check_gradient(model, theta, x, y), gradcheck.check_hvp(model, theta, x, y)]
    print(gradcheck.format_table(rows))      # label | max abs err | rel err | tol | PASS/FAIL

Centred finite difference of a function f along a direction u (P,):

    D_u f(θ) ≈ [f(θ + ε u) − f(θ − ε u)] / (2ε)

Its error is O(ε²) from truncation plus O(δ/ε) from rounding (δ ≈ 1e-16·|f|),
so ε = 1e-5 balances both near 1e-10 for first derivatives. Each checker
compares an exact quantity a with its estimate b by the relative error

    rel(a, b) = ‖a − b‖₂ / max(‖a‖₂, ‖b‖₂, 1e-300)

(when a check has several directions, the worst direction's value is reported),
and a row PASSes when rel ≤ tol. Rows marked "differ" invert this: they PASS
when rel > tol, e.g. FOMAML must NOT match the finite-difference meta-gradient.

ReLU has a kink at 0: a finite difference that moves a pre-activation across
0 sees a slope the gradient does not have. ``relu_margin`` reports the smallest
|z| over hidden pre-activations; the ``python -m mamlnp gradcheck`` cases are
drawn so that this margin is far larger than the step ε moves any z.
See docs/derivations/ for the derivations being checked. The finite-difference and
result-row primitives live in mamlnp/check/fdcheck.py and are re-exported here.
"""
import sys

import numpy as np

from ..meta import maml
from ..nn.activations import ACTIVATIONS
from ..errors import InputError
from ..fast.compile_notice import first_call_notice
from .fdcheck import (FULL_FD_LIMIT, TINY, CheckResult, compare, dense_hessian,  # noqa: F401
                      directions, fd_directional, fd_hessian_from_grad, fd_hessian_from_loss,
                      fd_hessian_richardson, format_table, rel_error, skipped)
from .convcheck import conv_checks
from .familycheck import family_checks
from .rlcheck import rl_checks
from ..nn.mlp import MLP
from ..tasks.base import TaskBatch
from ..validation import nonneg_int, positive_float


# ---- single-task derivatives: gradient, HVP, Hessian --------------------------------------


def _args(model, theta, x, y):
    return (model.check_theta(theta),) + tuple(model.check_xy(x, y))


def check_gradient(model, theta, x, y, eps=1e-5, tol=1e-6, num_directions=None, seed=0,
                   label="gradient"):
    """∇L(θ) (backprop) vs centred FD of L: full for P <= FULL_FD_LIMIT, else directional."""
    theta, x, y = _args(model, theta, x, y)
    _, g = model._loss_and_grad(theta, x, y)                             # (P,)
    U = directions(model.num_params, num_directions, seed)               # (M, P)
    fd = fd_directional(lambda t: model._loss_value(t, x, y), theta, U, eps)   # (M,)
    return compare(label, U @ g, fd, tol)


def check_hvp(model, theta, x, y, num_directions=3, eps=1e-5, tol=1e-6, seed=0, label="HVP"):
    """H v (R-pass) vs [∇L(θ + ε v) − ∇L(θ − ε v)] / 2ε for ``num_directions`` random unit v
    (None: every basis vector e_j while P <= FULL_FD_LIMIT, i.e. the whole Hessian)."""
    theta, x, y = _args(model, theta, x, y)
    V = directions(model.num_params, num_directions, seed)               # (M, P)
    Hv = np.array([model._hvp(theta, x, y, v) for v in V])               # (M, P)
    fd = fd_directional(lambda t: model._loss_and_grad(t, x, y)[1], theta, V, eps)
    return compare(label, Hv, fd, tol)


def check_hessian(model, theta, x, y, eps=1e-5, tol=1e-6, loss_eps=1e-4, loss_tol=1e-5,
                  max_params=200, label="Hessian"):
    """Three rows for the dense H from P HVPs: vs FD of the gradient, vs second FD of
    the loss, and the symmetry ‖H − Hᵀ‖ / ‖H‖ (tol 1e-10; the R-pass is not symmetric
    by construction, so this is a real check)."""
    theta, x, y = _args(model, theta, x, y)
    if model.num_params > max_params:
        raise InputError(f"model: check_hessian needs O(P²) loss evaluations; expected "
                         f"num_params <= max_params={max_params}, got {model.num_params}")
    H = dense_hessian(model, theta, x, y)                                # (P, P)
    fd_g = fd_hessian_from_grad(model, theta, x, y, eps)                # (P, P)
    fd_l = fd_hessian_from_loss(model, theta, x, y, loss_eps)            # (P, P)
    return [compare(f"{label} vs FD(grad)", H[None], fd_g[None], tol),
            compare(f"{label} vs FD2(loss)", H[None], fd_l[None], loss_tol),
            compare(f"{label} symmetric", H[None], H.T[None], 1e-10)]


def check_hessian_richardson(model, theta, x, y, eps=2e-3, tol=1e-10, max_params=200,
                              label="Hessian vs Richardson FD(grad)"):
    """The dense H from P HVPs vs ``fd_hessian_richardson`` (O(ε⁶) truncation): the tight
    (1e-10) dense-Hessian row. A ReLU case needs every |z| far above the steps (≤ ε)."""
    theta, x, y = _args(model, theta, x, y)
    if model.num_params > max_params:
        raise InputError(f"model: check_hessian_richardson needs 6P gradients and P HVPs; "
                         f"expected num_params <= max_params={max_params}, got {model.num_params}")
    H = dense_hessian(model, theta, x, y)                                # (P, P)
    return compare(label, H[None], fd_hessian_richardson(model, theta, x, y, eps)[None], tol)


def check_symmetry(model, theta, x, y, num_pairs=3, tol=1e-10, seed=0, label="<u,Hv> = <Hu,v>"):
    """⟨u, H v⟩ = ⟨H u, v⟩ for random unit u, v: the vector of M inner products each way."""
    theta, x, y = _args(model, theta, x, y)
    U = directions(model.num_params, 2 * num_pairs, seed)
    uHv = [U[i] @ model._hvp(theta, x, y, U[i + num_pairs]) for i in range(num_pairs)]
    Huv = [model._hvp(theta, x, y, U[i]) @ U[i + num_pairs] for i in range(num_pairs)]
    return compare(label, np.array(uHv)[None], np.array(Huv)[None], tol)


def check_linearity(model, theta, x, y, tol=1e-10, seed=0, label="HVP linear in v"):
    """H(a u + b v) = a H u + b H v for random u, v (P,) and scalars a, b."""
    theta, x, y = _args(model, theta, x, y)
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, model.num_params))
    a, b = rng.standard_normal(2)
    lhs = model._hvp(theta, x, y, a * u + b * v)
    rhs = a * model._hvp(theta, x, y, u) + b * model._hvp(theta, x, y, v)
    return compare(label, lhs, rhs, tol)


# ---- the meta-gradient ------------------------------------------------------------------


def _meta_args(model, theta, batch, alpha, inner_steps):
    return (model.check_theta(theta), maml.check_batch(model, batch),
            maml.check_alpha(model, alpha), nonneg_int("inner_steps", inner_steps))


def check_meta_gradient(model, theta, batch, alpha, inner_steps, first_order=False, eps=1e-5,
                        tol=1e-6, differ_tol=1e-4, num_directions=None, seed=0, backend="numpy",
                        label=None):
    """maml.meta_gradient vs centred FD of maml.meta_loss (the exact objective).

    Second order must agree (rel <= tol). First order with inner_steps >= 1 is a
    "differ" row: it drops the Hessian terms, so it must differ by rel > differ_tol
    (FD noise is ~1e-10, so a larger gap is the missing term, not noise).
    A backend that raises ImportError (e.g. Numba missing) gives a SKIP row.
    """
    theta, batch, alpha, inner_steps = _meta_args(model, theta, batch, alpha, inner_steps)
    order = "FO" if first_order else "SO"
    label = label or f"meta-grad s={inner_steps} {order}" + ("" if backend == "numpy" else f" [{backend}]")
    try:
        _, g = maml.meta_gradient(model, theta, batch, alpha, inner_steps, first_order, backend)
        fallback = backend == "numba" and maml.kernels_for(model, backend, "meta_gradient", alpha) is None
    except ImportError as exc:
        return skipped(label, tol, f"backend {backend!r} unavailable: {exc}")
    note = "no kernels for this model: the NumPy reference ran" if fallback else ""
    U = directions(model.num_params, num_directions, seed)
    fd = fd_directional(lambda t: maml.meta_loss(model, t, batch, alpha, inner_steps), theta, U, eps)
    if first_order and inner_steps > 0:
        return compare(label + " vs FD (must differ)", U @ g, fd, differ_tol, "differ", note)
    return compare(label + " vs FD", U @ g, fd, tol, note=note)


def dense_meta_gradient(model, theta, batch, alpha, inner_steps, hessian="fd", eps=1e-5):
    """FO gradient plus the Hessian term, with dense P×P Hessians: an independent route.

    Per task:  g_FO = ∇L_Q(θ_s);   g = (I − H_0 diag α) ⋯ (I − H_{s−1} diag α) g_FO,
    with H_k = H_S(θ_k) from ``fd_hessian_from_grad`` (hessian="fd": no R-pass at all)
    or ``dense_hessian`` (hessian="hvp"). Returns (1/T) Σ_t g  (P,).
    """
    theta, batch, alpha, inner_steps = _meta_args(model, theta, batch, alpha, inner_steps)
    make_h = {"fd": lambda t, x, y: fd_hessian_from_grad(model, t, x, y, eps),
              "hvp": lambda t, x, y: dense_hessian(model, t, x, y)}[hessian]
    total = np.zeros(model.num_params)
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        thetas = maml.inner_loop(model, theta, xs, ys, alpha, inner_steps)
        g = model._loss_and_grad(thetas[-1], xq, yq)[1]                  # g_FO (P,)
        for k in range(inner_steps - 1, -1, -1):
            g = g - make_h(thetas[k], xs, ys) @ (alpha * g)              # (I − H_k diag α)ᵀ g
        total += g
    return total / batch.num_tasks


def check_hessian_term(model, theta, batch, alpha, inner_steps, eps=1e-5, tol=1e-6, label=None):
    """FO + the Hessian term (dense FD Hessians) vs FD of the meta-loss; the note gives
    the size of the term, ‖SO − FO‖ / ‖SO‖."""
    theta, batch, alpha, inner_steps = _meta_args(model, theta, batch, alpha, inner_steps)
    label = label or f"meta-grad s={inner_steps} FO + Hessian term vs FD"
    g_dense = dense_meta_gradient(model, theta, batch, alpha, inner_steps, "fd", eps)
    fd = fd_directional(lambda t: maml.meta_loss(model, t, batch, alpha, inner_steps), theta,
                        np.eye(model.num_params), eps)
    g_fo = maml.meta_gradient(model, theta, batch, alpha, inner_steps, first_order=True)[1]
    return compare(label, g_dense, fd, tol, note=f"term size {rel_error(g_dense, g_fo):.1e}")


def check_metasgd_alpha(model, theta, batch, alpha, inner_steps, eps=1e-5, tol=1e-6,
                        num_directions=None, seed=0, label=None):
    """Meta-SGD: dM/dα from maml.meta_gradient_alpha vs centred FD of maml.meta_loss in α.

    α scalar: one FD, and ε must be far below α so that α − ε stays a valid (positive)
    step size; α (P,): full (or directional) FD over its entries (any finite values).
    """
    theta, batch, alpha, inner_steps = _meta_args(model, theta, batch, alpha, inner_steps)
    eps = positive_float("eps", eps)
    if np.ndim(alpha) == 0 and alpha <= 10 * eps:
        raise InputError(f"eps: expected eps < alpha / 10 = {alpha / 10!r}, got {eps!r}")
    label = label or f"Meta-SGD dM/dalpha ({'scalar' if np.ndim(alpha) == 0 else 'per-param'}) s={inner_steps}"
    _, _, g_alpha = maml.meta_gradient_alpha(model, theta, batch, alpha, inner_steps)
    loss_of_alpha = lambda a: maml.meta_loss(model, theta, batch, a, inner_steps)  # noqa: E731
    if np.ndim(alpha) == 0:
        return compare(label, g_alpha, fd_directional(loss_of_alpha, alpha, np.ones((1,)), eps), tol)
    U = directions(model.num_params, num_directions, seed)
    return compare(label, U @ g_alpha, fd_directional(loss_of_alpha, alpha, U, eps), tol)


# ---- the command: python -m mamlnp gradcheck -----------------------------------------------

RELU_MARGIN = 1e-3     # CLI cases keep every ReLU pre-activation this far from the kink
RICHARDSON_MARGIN = 0.05   # … and the Richardson Hessian's, whose steps reach 2e-3
LOSS_OUT = {"mse": 2, "softmax_xent": 3}


def relu_margin(model, theta, x):
    """min |z| over the hidden pre-activations of an MLP at θ on x (N, D); inf if none."""
    _, caches = model._forward(model.check_theta(theta), model.check_xy(x))
    zs = [acache[0] for _, acache in caches if acache is not None]
    return min((float(np.min(np.abs(z))) for z in zs), default=np.inf)


def _targets(rng, loss, n, out):
    if loss == "mse":
        return rng.standard_normal((n, out))                             # (N, O)
    return np.eye(out)[rng.integers(0, out, n)]                          # one-hot rows (N, O)


def draw_case(seed, sizes, activation, loss="mse", n=7, batch_norm=False, margin=RELU_MARGIN):
    """(model, θ, x, y): uniform init (batch norm: γ = 1, β = 0, then γ, β jittered by
    U(−0.5, 0.5) so the checks do not sit at the init's special point), x ~ N(0, I);
    redrawn until the ReLU margin holds."""
    model = MLP(sizes, activation, loss, batch_norm=batch_norm)
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt])
        theta = _jitter_bn(model, model.init(int(rng.integers(2**31)), scheme="uniform"), rng)
        x, y = rng.standard_normal((n, sizes[0])), _targets(rng, loss, n, sizes[-1])
        if activation != "relu" or relu_margin(model, theta, x) > margin:
            return model, theta, x, y
    raise RuntimeError("no ReLU case with a safe margin in 100 draws")  # pragma: no cover


def _jitter_bn(model, theta, rng):
    """θ with every γ, β entry moved by U(−0.5, 0.5) (no-op without batch norm)."""
    for bn in model.bn_layout:
        if bn is not None:
            theta[bn[0][0]:bn[1][1]] += rng.uniform(-0.5, 0.5, bn[1][1] - bn[0][0])
    return theta


def draw_meta_case(seed, activation, loss="mse", sizes=(2, 5, 4, 1), tasks=2, shots=5, query=6,
                   alpha=0.1, batch_norm=False):
    """(model, θ, batch): every iterate θ_k of every task keeps the ReLU margin.

    mse: y = sin(Σ_d x_d + φ_t); softmax_xent (O = 3 classes): one-hot of argmax(x A_t)."""
    sizes = sizes if loss == "mse" else sizes[:-1] + (3,)
    model = MLP(sizes, activation, loss, batch_norm=batch_norm)
    for attempt in range(100):
        rng = np.random.default_rng([seed, attempt, 1])
        theta = _jitter_bn(model, model.init(int(rng.integers(2**31)), scheme="uniform"), rng)
        x = rng.standard_normal((tasks, shots + query, sizes[0]))        # (T, K+Q, D)
        if loss == "mse":
            y = np.sin(x.sum(axis=2, keepdims=True) + rng.uniform(0, np.pi, (tasks, 1, 1)))
        else:
            A = rng.standard_normal((tasks, sizes[0], sizes[-1]))       # (T, D, O)
            y = np.eye(sizes[-1])[np.argmax(x @ A, axis=2)]             # (T, K+Q, O) one-hot
        batch = TaskBatch.make(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
        if activation != "relu" or _meta_margin(model, theta, batch, alpha) > RELU_MARGIN:
            return model, theta, batch
    raise RuntimeError("no ReLU meta case with a safe margin in 100 draws")  # pragma: no cover


def _meta_margin(model, theta, batch, alpha, inner_steps=5):
    margins = []
    for t in range(batch.num_tasks):
        xs, ys, xq, _ = batch.task(t)
        thetas = maml.inner_loop(model, theta, xs, ys, alpha, inner_steps)
        margins += [relu_margin(model, th, xs) for th in thetas]
        margins += [relu_margin(model, th, xq) for th in thetas]
    return min(margins)


def _guard(label, fn):
    """Run one check; an unexpected exception becomes a FAIL row, not a crash."""
    try:
        out = fn()
    except Exception as exc:                                             # noqa: BLE001
        return [CheckResult(label, float("nan"), float("nan"), 0.0,
                            note=f"{type(exc).__name__}: {exc}")]
    return out if isinstance(out, list) else [out]


def _bn_tag(activation, loss, batch_norm):
    return f"{activation}{'+BN' if batch_norm else ''}/{loss}"


def model_checks(activation, loss, seed, quick, batch_norm=False):
    """Gradient, HVP, symmetry, linearity (net 3-5-4-O) and the dense Hessian (net 2-3-O)."""
    tag = _bn_tag(activation, loss, batch_norm)
    model, theta, x, y = draw_case(seed, (3, 5, 4, LOSS_OUT[loss]), activation, loss,
                                   batch_norm=batch_norm)
    rows = _guard(f"{tag} gradient", lambda: check_gradient(model, theta, x, y, label=f"{tag} gradient"))
    rows += _guard(f"{tag} HVP", lambda: check_hvp(model, theta, x, y, seed=seed, label=f"{tag} HVP"))
    rows += _guard(f"{tag} <u,Hv>", lambda: check_symmetry(
        model, theta, x, y, seed=seed, label=f"{tag} <u,Hv> = <Hu,v>"))
    rows += _guard(f"{tag} linear", lambda: check_linearity(
        model, theta, x, y, seed=seed, label=f"{tag} HVP linear in v"))
    if not (quick and loss != "mse"):
        tiny, t_theta, t_x, t_y = draw_case(seed, (2, 3, LOSS_OUT[loss]), activation, loss, n=5,
                                            batch_norm=batch_norm, margin=RICHARDSON_MARGIN)
        rows += _guard(f"{tag} Hessian", lambda: check_hessian(
            tiny, t_theta, t_x, t_y, label=f"{tag} Hessian"))
        rows += _guard(f"{tag} Hessian R", lambda: check_hessian_richardson(
            tiny, t_theta, t_x, t_y, label=f"{tag} Hessian vs Richardson FD(grad)"))
    return rows


def meta_checks(activation, seed, quick, backend, alpha=0.1, batch_norm=False):
    """Meta-gradient SO and FO for s = 1…5 (quick: 1, 3), FO + Hessian term, a softmax-xent
    meta-gradient, Meta-SGD α (scalar and per-parameter). Batch norm: FD step ε = 1e-6, as
    its small support batches make the meta-loss strongly curved (the O(ε²) truncation
    reached 1e-5 at ε = 1e-5 in one case; the rounding part stays ~1e-10 at 1e-6)."""
    model, theta, batch = draw_meta_case(seed, activation, alpha=alpha, batch_norm=batch_norm)
    eps = 1e-6 if batch_norm else 1e-5
    rows, tag = [], _bn_tag(activation, "mse", batch_norm)
    suffix = "" if backend == "numpy" else f" [{backend}]"
    for s in ((1, 3) if quick else (1, 2, 3, 4, 5)):
        for fo in (False, True):
            label = f"{tag} meta-grad s={s} {'FO' if fo else 'SO'}"
            rows += _guard(label, lambda: check_meta_gradient(
                model, theta, batch, alpha, s, fo, eps, backend=backend, label=label + suffix))
        rows += _guard(f"{tag} s={s} FO+H", lambda: check_hessian_term(
            model, theta, batch, alpha, s, eps, label=f"{tag} meta-grad s={s} FO + Hessian term vs FD"))
    xent_model, xent_theta, xent_batch = draw_meta_case(seed, activation, "softmax_xent", alpha=alpha,
                                                        batch_norm=batch_norm)
    label = f"{_bn_tag(activation, 'softmax_xent', batch_norm)} meta-grad s=2 SO" + suffix
    rows += _guard(label, lambda: check_meta_gradient(
        xent_model, xent_theta, xent_batch, alpha, 2, eps=eps, backend=backend, label=label))
    alpha_vec = np.random.default_rng(seed).uniform(0.5 * alpha, 1.5 * alpha, model.num_params)
    for a in (alpha, alpha_vec):
        kind = "scalar" if np.ndim(a) == 0 else "per-param"
        label = f"{tag} Meta-SGD dM/dalpha ({kind}) s=2"
        rows += _guard(label, lambda: check_metasgd_alpha(model, theta, batch, a, 2, eps, label=label))
    return rows


PAPER_SIZES = (784, 256, 128, 64, 64, 5)   # "MAML, no conv" (Finn et al. 2017, sec. 5.2), 5-way


def paper_net_checks(seed):
    """The paper's batch-norm classifier (P = 247,621 for 5-way): gradient and HVP along 10
    and 3 random unit directions on a batch of N = 10 points. Its 5,120 hidden pre-activations
    are drawn with margin 1e-4 (1e-3 is rarely met by so many): a unit direction in P
    dimensions moves each by ~1e-6 at ε = 1e-5."""
    model, theta, x, y = draw_case(seed, PAPER_SIZES, "relu", "softmax_xent", n=10,
                                   batch_norm=True, margin=1e-4)
    tag = "paper net 784-256-128-64-64-5 relu+BN/softmax_xent"
    rows = _guard(f"{tag} gradient", lambda: check_gradient(
        model, theta, x, y, num_directions=10, seed=seed, label=f"{tag} gradient (10 dirs)"))
    rows += _guard(f"{tag} HVP", lambda: check_hvp(
        model, theta, x, y, seed=seed, label=f"{tag} HVP (3 dirs)"))
    return rows


def all_checks(seed=0, quick=False, backend="numpy"):
    """Every row of the ``gradcheck`` table: every activation, without and with batch norm
    (MAML, the variants, and the family's rows of mamlnp/check/familycheck.py), the Gaussian
    policy and the RL meta-gradient estimators (mamlnp/check/rlcheck.py), the paper's
    batch-norm classifier, and the ConvNet's rows (mamlnp/check/convcheck.py)."""
    rows = []
    for batch_norm in (False, True):
        for activation in ACTIVATIONS:
            for loss in ("mse", "softmax_xent"):
                rows += model_checks(activation, loss, seed, quick, batch_norm)
            rows += meta_checks(activation, seed, quick, backend, batch_norm=batch_norm)
            rows += _guard(f"{_bn_tag(activation, 'mse', batch_norm)} family", lambda: family_checks(
                lambda: draw_meta_case(seed, activation, alpha=0.1, batch_norm=batch_norm),
                _bn_tag(activation, "mse", batch_norm), activation, quick,
                1e-6 if batch_norm else 1e-5))     # iMAML, MAML++, ANIL (familycheck.py)
    rows += _guard("policy", lambda: rl_checks(seed, quick))   # Gaussian policy, RL estimators
    return rows + paper_net_checks(seed) + conv_checks(sys.modules[__name__], seed, quick, backend)


# Wall time of the command on the project's 2-core machine, shared (load-dependent).
FULL_SECONDS, QUICK_SECONDS = "30-45", "13-20"


def add_arguments(parser):
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cases (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer cases: inner_steps 1 and 3, no softmax-xent Hessian")
    parser.add_argument("--backend", choices=maml.BACKENDS, default="numpy",
                        help="backend of the meta-gradient rows (default numpy)")


def run(args):
    """Print the table; exit code 0 if every row passes (or is skipped), 1 otherwise."""
    seed = nonneg_int("seed", args.seed)
    print(f"gradcheck: {'the quick set of' if args.quick else 'all'} finite-difference checks, "
          f"about {QUICK_SECONDS if args.quick else FULL_SECONDS} s on 2 cores ...",
          file=sys.stderr, flush=True)
    with first_call_notice(backend=args.backend):    # numba rows compile once
        rows = all_checks(seed, args.quick, args.backend)
    print(format_table(rows))
    failed = sum(not r.passed for r in rows)
    n_skip = sum(r.skipped for r in rows)
    print(f"\n{len(rows)} checks: {len(rows) - failed - n_skip} passed, {n_skip} skipped, "
          f"{failed} failed")
    return 1 if failed else 0
