"""Meta-TRPO through K inner policy-gradient steps: the chain of adapted policies, the
objective averaged over the K post-update batches, its meta-gradient, the exact Fisher-vector
product of the mean KL over the K adapted policies, and the line-search functions.

Dimension legend: T tasks, K inner steps, M_k samples of a task's batch k, P parameters.

A task's chain, its batches D_0 … D_K each sampled from the policy before it (D_k from π_θ_k),
with c_k = Â_k / M_k and g_k = Σ_m c_k,m ∇ log π_θ_k on D_k:

    θ_0 = θ,   θ_k = θ_{k−1} + α_k g_{k−1}                 (α_1 the first step, then α_2 …)
    J   = (1/K) Σ_k Σ_m c_k,m log π_θ_k(a|s) on D_k         (the post-update surrogates)
    U_k = ∂θ_k/∂θ_{k−1} = I + α_k Ĥ_{k−1},  Ĥ_k the estimator's curvature on D_k (rl.py)
    ∇̂  = (1/K) U_1ᵀ (g_1 + U_2ᵀ (g_2 + … + U_Kᵀ g_K))     (Horner's rule, K − 1 + K HVPs)
    FVP v ↦ (1/K) Σ_k J_kᵀ F_k J_k v,  J_k = U_k ⋯ U_1     (F_k the Fisher of π_θ_k on D_k)

g_k serves twice: it is the gradient of J's k-th surrogate at θ_k and the step to θ_{k+1},
since the test adapts on the very batch the k-th post-update return is measured on. K = 1 is
mamlnp/meta/rl_trpo.py's iteration (tests/test_rl_steps.py checks the two agree). The
training then matches the test's own schedule (0.5, then 0.25: cbfinn/maml_rl's
test_maml_point.py) instead of only its first step: a protocol extension, ``train navigation
--train-steps 2``; the paper trains through one step.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..nn.policy import mean_kl_points
from ..nn.policy_factors import FactoredPoint
from ..validation import choice, positive_float, positive_int
from . import rl as RL


@dataclass
class Chain:
    """The K-step chains of T tasks at one θ: alphas (K,), batches [k][i] (checked samples of
    D_k), points [k][i] (the policy at θ_k on D_k, vjp(c_k) taken), grads [k] (T, P) = g_k."""
    theta: np.ndarray
    alphas: tuple
    batches: list
    points: list
    grads: list

    @property
    def steps(self):
        return len(self.batches) - 1

    def next_thetas(self):
        """θ_{k+1} (T, P) of every task: the parameters the next batch is sampled from."""
        k = self.steps
        if k >= len(self.alphas):
            raise InputError(f"batches: the chain already holds its {len(self.alphas)} steps")
        base = np.broadcast_to(self.theta, self.grads[0].shape) if k == 0 else self.thetas(k)
        return base + self.alphas[k] * self.grads[k]

    def thetas(self, k):
        """θ_k (T, P)."""
        return np.stack([p.theta for p in self.points[k]])


def start_chain(policy, theta, batch0, alphas, threads=1, factored=None, backend=None):
    """A Chain holding D_0 (samples at θ, one per task) and its points; ``extend`` adds the
    batches sampled at ``next_thetas()`` until it holds K = len(alphas) steps."""
    theta = policy.check_theta(theta)
    alphas = tuple(positive_float(f"alphas[{k}]", a) for k, a in enumerate(alphas))
    if not alphas:
        raise InputError("alphas: expected at least one inner step size, got none")
    chain = Chain(theta.copy(), alphas, [], [], [])
    _append(policy, chain, np.broadcast_to(theta, (len(batch0), theta.size)), batch0, threads,
            factored, backend)
    return chain


def extend(policy, chain, batch, threads=1, factored=None, backend=None):
    """Add D_{k+1}, sampled from π at ``chain.next_thetas()``, and its points: -> chain."""
    _append(policy, chain, chain.next_thetas(), batch, threads, factored, backend)
    return chain


def _append(policy, chain, thetas, batch, threads, factored, backend):
    name = f"batches[{chain.steps + 1}]"
    batch = RL._task_list(policy, batch, name)
    if len(batch) != thetas.shape[0]:
        raise InputError(f"{name}: expected one entry per task ({thetas.shape[0]}), got "
                         f"{len(batch)}")
    cls = RL._point_class(policy, factored, backend)

    def point(i):
        obs, act, adv, _ = batch[i]
        p = cls(policy, thetas[i].copy(), obs, act)
        return p, p.vjp(adv / adv.shape[0])                             # g_k (P,)
    parts = RL._per_task(point, range(len(batch)), threads)
    chain.batches.append(batch)
    chain.points.append([p for p, _ in parts])
    chain.grads.append(np.stack([g for _, g in parts]))


def factorize(chain):
    """The fixed products of every FactoredPoint of the chain, computed once for the whole
    solve (the HVP's K and C at θ_0 … θ_{K−1}, the Fisher product's δ1 at θ_1 … θ_K; a no-op
    for what is already computed): -> chain."""
    for k, pts in enumerate(chain.points):
        for p in pts:
            if isinstance(p, FactoredPoint):
                p.factorize(cross=k < chain.steps)
    return chain


def _curvatures(chain, estimator, i):
    """[(point, score coefficients) of Ĥ_k] for k = 0 … K−1 of task i."""
    return [(chain.points[k][i], RL.score_coefficients(
        estimator, chain.batches[k][i][2] / chain.batches[k][i][2].shape[0],
        chain.batches[k][i][3])) for k in range(chain.steps)]


def _apply_u(alpha, curv, v):
    """U v = v + α Ĥ v (= Uᵀ v: Ĥ is symmetric)."""
    pt, coeffs = curv
    return v + alpha * pt.hvp(v, coeffs)


def multistep_trpo_fns(policy, chain, estimator="lvc", damping=RL.DAMPING,
                       fvp_estimator="maml", threads=1):
    """(objective, gradient, fvp, surrogate_fn, kl_fn) of one meta-TRPO iteration through the
    chain's K steps (module docstring); the tasks on ``threads`` threads, summed in task
    order (the same bits at any thread count)."""
    if not isinstance(chain, Chain) or chain.steps != len(chain.alphas):
        raise InputError(f"chain: expected a Chain holding all its batches "
                         f"(start_chain, then extend), got "
                         f"{getattr(chain, 'steps', '?')} of {len(getattr(chain, 'alphas', ()))}")
    estimator = choice("estimator", estimator, RL.ESTIMATORS)
    fvp_estimator = choice("fvp_estimator", fvp_estimator, RL.ESTIMATORS)
    damping = positive_float("damping", damping)
    threads = positive_int("threads", threads)
    K, T, alphas = chain.steps, len(chain.batches[0]), chain.alphas
    factorize(chain)

    def task_gradient(i):
        curv = _curvatures(chain, estimator, i)
        z = chain.grads[K][i]
        for k in range(K - 1, 0, -1):                       # z ← g_k + U_{k+1}ᵀ z
            z = chain.grads[k][i] + _apply_u(alphas[k], curv[k], z)
        return _apply_u(alphas[0], curv[0], z)              # U_1ᵀ z
    grad = np.zeros(policy.num_params)
    for g in RL._per_task(task_gradient, range(T), threads):
        grad = grad + g
    obj = sum(float(b[2] @ p.log_prob) / b[2].shape[0]
              for k in range(1, K + 1) for p, b in zip(chain.points[k], chain.batches[k]))
    return (obj / (K * T), grad / (K * T), _fvp(chain, fvp_estimator, damping, threads),
            *_line_search(policy, chain, threads))


def _fvp(chain, estimator, damping, threads):
    """v ↦ (1/(K T)) Σ_i Σ_k J_kᵀ F_k J_k v + damping · v."""
    K, T, alphas = chain.steps, len(chain.batches[0]), chain.alphas
    curvs = [_curvatures(chain, estimator, i) for i in range(T)]

    def one(i, v):
        u, w = v, []
        for k in range(K):                                  # u_k = U_k u_{k−1}, w_k = F_k u_k
            u = _apply_u(alphas[k], curvs[i][k], u)
            w.append(chain.points[k + 1][i].fisher_vp(u))
        z = w[K - 1]
        for k in range(K - 2, -1, -1):                      # z ← w_k + U_{k+1}ᵀ z
            z = w[k] + _apply_u(alphas[k + 1], curvs[i][k + 1], z)
        return _apply_u(alphas[0], curvs[i][0], z)

    def fvp(v):
        out = damping * v
        for x in RL._per_task(lambda i: one(i, v), range(T), threads):
            out = out + x / (K * T)
        return out
    return fvp


def _line_search(policy, chain, threads):
    """(surrogate_fn, kl_fn) of a candidate θ_new: its chain on the fixed batches D_0 … D_K,
    the mean over the K steps and the tasks of Â_k exp(log π_new − log π_old) and of the KL
    from the old adapted policies; at θ itself the chain's own points."""
    K, T, cls = chain.steps, len(chain.batches[0]), type(chain.points[0][0])
    old = [[chain.points[k][i] for k in range(1, K + 1)] for i in range(T)]
    memo = {chain.theta.tobytes(): old}

    def task_chain(theta_new, i):
        obs, act, adv, _ = chain.batches[0][i]
        p = cls(policy, theta_new, obs, act)
        th, pts = theta_new + chain.alphas[0] * p.vjp(adv / adv.shape[0]), []   # θ_1 (P,)
        for k in range(1, K + 1):
            obs, act, adv, _ = chain.batches[k][i]
            pts.append(cls(policy, th, obs, act))
            if k < K:                                       # θ_{k+1} = θ_k + α g_k
                th = th + chain.alphas[k] * pts[-1].vjp(adv / adv.shape[0])
        return pts

    def adapted(theta_new):
        key = theta_new.tobytes()
        if key not in memo:
            memo.clear()
            memo[key] = RL._per_task(lambda i: task_chain(theta_new, i), range(T), threads)
        return memo[key]

    def surrogate(theta_new):
        pts = adapted(policy.check_theta(theta_new, "theta_new"))
        return float(np.mean([np.mean(chain.batches[k + 1][i][2]
                                      * np.exp(pts[i][k].log_prob - old[i][k].log_prob))
                              for i in range(T) for k in range(K)]))

    def kl(theta_new):
        pts = adapted(policy.check_theta(theta_new, "theta_new"))
        return float(np.mean([mean_kl_points(old[i][k], pts[i][k])
                              for i in range(T) for k in range(K)]))
    return surrogate, kl
