"""Checks of the Gaussian policy and the meta-policy-gradient estimators against centred
finite differences (rows of ``python -m mamlnp gradcheck``).

Dimension legend: T tasks, M samples of a task, P parameters.

Each estimator is the exact gradient of a surrogate on fixed samples, written here
independently of mamlnp/meta/rl.py's R-pass: the inner gradient at θ with the stop-gradient
point θ₀ kept fixed, then the post-update surrogate at θ′ = θ + α g(θ; θ₀),

    maml  g = Σ_m c_m ∇ log π_θ(a_m|s_m)                             (c = Â / M)
    lvc   g = Σ_m c_m r_m ∇ log π_θ,   r_m = π_θ(a_m|s_m) / π_θ₀(a_m|s_m)
    dice  g = ∇ Σ_t c_t (□_≤t − □_<t),  □_≤t = Π_{t′≤t in t's episode} r_t′  (□_<0 = 1)
    S(θ) = (1/T) Σ_i mean_m′ Â′ log π_θ′_i(a′|s′)

and the meta-gradient at θ₀ must equal dS/dθ there. The meta Fisher-vector product is
checked against FD of ∇_θ KL(π_θ′₀ ‖ π_θ′(θ)) = Uᵀ ∇KL and against the second difference of
the KL itself (vᵀ F v ≈ [KL(θ + εv) + KL(θ − εv)] / ε², as KL(θ₀) = 0).
"""
import numpy as np

from ..meta import rl
from ..nn.policy import GaussianPolicy, PolicyPoint, mean_kl_grad, mean_kl_points
from .fdcheck import compare, directions, fd_directional

RELU_MARGIN = 1e-3


# ---- the surrogates, written independently ----------------------------------------------


def _dice_weights(c, d, starts):
    """w_m = Σ_{t ≥ m} c_t □_≤t − Σ_{t > m} c_t □_<t within m's episode; d = log r (M,)."""
    w = np.empty_like(c)
    for s0, s1 in zip(starts[:-1], starts[1:]):
        le = np.cumsum(d[s0:s1])                                          # log □_≤t
        a, b = c[s0:s1] * np.exp(le), c[s0:s1] * np.exp(le - d[s0:s1])   # c □_≤t, c □_<t
        w[s0:s1] = np.cumsum(a[::-1])[::-1] - (np.cumsum(b[::-1])[::-1] - b)
    return w


def surrogate_inner_gradient(policy, theta, theta0, task, estimator):
    """g(θ; θ₀) of the estimator's inner surrogate for one checked task (obs, act, adv, starts)."""
    obs, act, adv, starts = task
    c = adv / adv.shape[0]
    pt = PolicyPoint(policy, theta, obs, act)
    d = pt.log_prob - PolicyPoint(policy, theta0, obs, act).log_prob       # log r (M,)
    if estimator == "maml":
        w = c
    elif estimator == "lvc" or starts is None:
        w = c * np.exp(d)
    else:
        w = _dice_weights(c, d, starts)
    return pt.vjp(w)


def meta_surrogate(policy, theta, theta0, pre, post, alpha, estimator):
    """S(θ) of the module docstring; pre, post: lists of tasks' samples."""
    pre, post = rl._pair(policy, pre, post)
    total = 0.0
    for task, (obs1, act1, adv1, _) in zip(pre, post):
        theta1 = theta + alpha * surrogate_inner_gradient(policy, theta, theta0, task, estimator)
        total += adv1 @ PolicyPoint(policy, theta1, obs1, act1).log_prob / adv1.shape[0]
    return total / len(pre)


def post_kl(policy, theta, theta0, pre, post_obs, alpha, estimator="maml"):
    """(1/T) Σ_i KL(π_θ′₀_i ‖ π_θ′(θ)_i) on the post observations, θ′(θ) = θ + α g(θ; θ₀)
    with the estimator's inner surrogate (its Hessian at θ₀ is the estimator's Uᵀ F U)."""
    pre, post_obs = rl._pair(policy, pre, post_obs, "post_obs")
    kls = []
    for task, obs1 in zip(pre, post_obs):
        old = rl._inner(policy, theta0, task, alpha)[1]
        new = theta + alpha * surrogate_inner_gradient(policy, theta, theta0, task, estimator)
        kls.append(mean_kl_points(PolicyPoint(policy, old, obs1), PolicyPoint(policy, new, obs1)))
    return float(np.mean(kls))


def post_kl_grad(policy, theta, theta0, pre, post_obs, alpha):
    """∇_θ post_kl = (1/T) Σ_i U_i(θ)ᵀ ∇_θ′ KL_i, U_i(θ)ᵀ w = w + α Σ c ∇² log π_θ w."""
    pre, post_obs = rl._pair(policy, pre, post_obs, "post_obs")
    total = np.zeros(policy.num_params)
    for task, obs1 in zip(pre, post_obs):
        old = PolicyPoint(policy, rl._inner(policy, theta0, task, alpha)[1], obs1)
        pt, theta1 = rl._inner(policy, theta, task, alpha)
        w = mean_kl_grad(old, PolicyPoint(policy, theta1, obs1))
        total += w + alpha * pt.hvp(w)
    return total / len(pre)


# ---- a random case --------------------------------------------------------------------------


def _margin(policy, theta, obs):
    _, caches = policy.net._forward(theta[:policy.num_mean_params], obs)
    return min([np.abs(a[0]).min() for _, a in caches if a is not None] or [np.inf])


def draw_rl_case(seed=0, activation="tanh", sizes=(2, 6, 5, 2), tasks=2, m=12, episode=4,
                 alpha=0.3):
    """(policy, θ, pre, post, alpha): checked task lists with episodes of ``episode`` steps;
    for ReLU redrawn until every hidden |z| > RELU_MARGIN at θ (pre) and at θ′ (post)."""
    policy = GaussianPolicy(sizes, activation)
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        theta = policy.init(rng) + 0.1 * rng.standard_normal(policy.num_params)
        def task(k):
            labels = np.arange(k) // episode
            return (rng.uniform(-1, 1, (k, sizes[0])), rng.standard_normal((k, sizes[-1])),
                    rng.standard_normal(k), labels)
        pre = [task(m - i) for i in range(tasks)]
        post = [task(m - 2 + i) for i in range(tasks)]
        thetas1 = [rl.inner_step(policy, theta, t, alpha) for t in pre]
        margin = min([_margin(policy, theta, t[0]) for t in pre] +
                     [_margin(policy, t1, t[0]) for t1, t in zip(thetas1, post)])
        if activation != "relu" or margin > RELU_MARGIN:
            return policy, theta, pre, post, alpha
    raise RuntimeError("no ReLU case with a safe margin")


# ---- the rows --------------------------------------------------------------------------------


def policy_rows(policy, theta, task, tag, eps=1e-5, seed=0):
    """log-likelihood gradient, JVP, HVP (plain and with lvc's outer products), KL, Fisher."""
    obs, act, adv, _ = rl.check_samples(policy, task, "task")
    c = adv / adv.shape[0]
    pt = PolicyPoint(policy, theta, obs, act)
    V = directions(policy.num_params, 3, seed)                                # (3, P)
    logp = lambda t: PolicyPoint(policy, t, obs, act).log_prob                # (M,)
    rows = [compare(f"{tag} ∇ Σc log π", V @ pt.vjp(c), fd_directional(lambda t: c @ logp(t),
                                                                         theta, V, eps), 1e-6)]
    rows.append(compare(f"{tag} JVP of log π", np.array([pt.jvp(v) for v in V]),
                        fd_directional(logp, theta, V, eps), 1e-6))
    rows.append(compare(f"{tag} HVP Σc ∇² log π", np.array([pt.hvp(v) for v in V]),
                        fd_directional(lambda t: PolicyPoint(policy, t, obs, act).vjp(c), theta,
                                       V, eps), 1e-6))
    lvc = rl.score_coefficients("lvc", c, None)
    rows.append(compare(f"{tag} HVP lvc (+ Σc s sᵀ)", np.array([pt.hvp(v, lvc) for v in V]),
                        fd_directional(lambda t: surrogate_inner_gradient(
                            policy, t, theta, (obs, act, adv, None), "lvc"), theta, V, eps), 1e-6))
    old = PolicyPoint(policy, theta, obs)
    other = theta + 0.1 * V[0]
    kl = lambda t: mean_kl_points(old, PolicyPoint(policy, t, obs))
    rows.append(compare(f"{tag} ∇ KL", V @ mean_kl_grad(old, PolicyPoint(policy, other, obs)),
                        fd_directional(kl, other, V, eps), 1e-6))
    rows.append(compare(f"{tag} Fisher = ∇²KL", np.array([old.fisher_vp(v) for v in V]),
                        fd_directional(lambda t: mean_kl_grad(old, PolicyPoint(policy, t, obs)),
                                       theta, V, eps), 1e-6))
    return rows


def estimator_rows(policy, theta, pre, post, alpha, tag, eps=1e-5, tol=1e-7):
    """Each estimator against the full FD of its own surrogate; maml must differ from dice's."""
    U = np.eye(policy.num_params)
    rows = []
    for est in rl.ESTIMATORS:
        _, g = rl.rl_meta_gradient(policy, theta, pre, post, alpha, est)
        fd = fd_directional(lambda t: meta_surrogate(policy, t, theta, pre, post, alpha, est),
                            theta, U, eps)
        rows.append(compare(f"{tag} meta-gradient {est}", g, fd, tol))
        if est == "dice":
            g_maml = rl.rl_meta_gradient(policy, theta, pre, post, alpha, "maml")[1]
            rows.append(compare(f"{tag} maml vs FD of dice's", g_maml, fd, 1e-3, expect="differ"))
    return rows


def fvp_rows(policy, theta, pre, post, alpha, tag, eps=1e-5, seed=0):
    """meta_fvp vs FD of ∇KL (through the inner step), and vᵀFv vs the KL's second difference."""
    obs1 = [t[0] for t in post]
    V = directions(policy.num_params, 3, seed)
    fvp = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, damping=rl.DAMPING)
    Fv = np.array([fvp(v) - rl.DAMPING * v for v in V])                      # undamped
    fd = fd_directional(lambda t: post_kl_grad(policy, t, theta, pre, obs1, alpha), theta, V, eps)
    e2 = 1e-4
    quad = np.array([(post_kl(policy, theta + e2 * v, theta, pre, obs1, alpha)
                      + post_kl(policy, theta - e2 * v, theta, pre, obs1, alpha)) / e2 ** 2
                     for v in V])
    rows = [compare(f"{tag} meta FVP Uᵀ F U", Fv, fd, 1e-6),
            compare(f"{tag} vᵀ(meta FVP)v vs KL", np.einsum("mp,mp->m", V, Fv), quad, 1e-5)]
    for est in ("lvc", "dice"):                      # U with the estimator's curvature
        fvp = rl.meta_fvp_operator(policy, theta, pre, obs1, alpha, rl.DAMPING, est)
        vFv = np.array([v @ fvp(v) - rl.DAMPING * v @ v for v in V])
        quad = np.array([(post_kl(policy, theta + e2 * v, theta, pre, obs1, alpha, est)
                          + post_kl(policy, theta - e2 * v, theta, pre, obs1, alpha, est)) / e2 ** 2
                         for v in V])
        rows.append(compare(f"{tag} vᵀ(meta FVP {est})v vs KL", vFv, quad, 1e-5))
    return rows


def rl_checks(seed=0, quick=False):
    """All rows, for a tanh and a ReLU policy."""
    rows = []
    for activation in (("tanh",) if quick else ("tanh", "relu")):
        policy, theta, pre, post, alpha = draw_rl_case(seed, activation)
        tag = f"policy {activation}"
        rows += policy_rows(policy, theta, pre[0], tag, seed=seed)
        rows += estimator_rows(policy, theta, pre, post, alpha, tag)
        rows += fvp_rows(policy, theta, pre, post, alpha, tag, seed=seed)
    return rows
