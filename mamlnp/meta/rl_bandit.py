"""A one-step Gaussian bandit whose expected return, gradient and Hessian are known in
closed form: the ground truth the meta-policy-gradient estimators are measured against.

Dimension legend: N states, D state entries, A action entries, M samples per task,
R Monte Carlo repetitions, P = (D + 1)·A + A parameters.

The policy is ``GaussianPolicy((D, A))``: no hidden layer, so its mean is linear in θ,
μ(s) = s W + b = s̃ Θ with s̃ = [s, 1] and Θ = [W; b] (D + 1, A), and σ = exp(ρ). A state s
is drawn uniformly from N fixed states, an action a ~ π_θ(·|s), the reward is r = −‖a − g‖².

    J(θ)    = −(1/N) Σ_n ‖s̃_n Θ − g‖² − Σ_j e^{2ρ_j}
    ∇_Θ J   = −(2/N) S̃ᵀ (S̃ Θ − g)           ∇_ρ J = −2 e^{2ρ}
    ∇²J     = blockdiag( −(2/N) S̃ᵀS̃ ⊗ I_A ,  diag(−4 e^{2ρ}) )   (the Θ–ρ block is zero)

The meta-gradient the estimators target (Rothfuss et al. 2019, eq. 3, with the exact inner
step): ∇_θ J(θ + α ∇J(θ)) = (I + α ∇²J(θ)) ∇J(θ′), θ′ = θ + α ∇J(θ).

``TwoStepChain`` adds a problem where the second state depends on the first action: there
the per-timestep outer products of lvc miss the cross-timestep terms and only dice is
unbiased. Two studies on each problem, printed by ``report`` (``python -m mamlnp.meta.rl_bandit``):
  * curvature: the mean of Ĥ v over R·M samples against ∇²J v. lvc (= dice here: one step
    per episode) is unbiased; maml's Ĥ = Σ c ∇² log π lacks E[Â s sᵀ] and is not;
  * meta-gradient: the mean over R repetitions of ``rl_meta_gradient`` (M pre- and M
    post-update samples each) against the exact meta-gradient. maml stays biased at any
    M; lvc / dice approach the target as M grows (their residual bias, O(α/M), comes from
    θ′ and Ĥ sharing the pre-update samples).
Advantages are r − J(θ) with the exact J (a baseline that does not depend on the action).
"""
import numpy as np

from ..nn.policy import GaussianPolicy, PolicyPoint
from ..validation import as_float64, as_rng, positive_float, positive_int
from .rl import ESTIMATORS, check_samples, inner_step, rl_meta_gradient, score_coefficients


class GaussianBandit:
    """The bandit of the module docstring: states (N, D), goal (A,)."""

    def __init__(self, states=((0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (-0.5, 0.25)), goal=(0.3, -0.2)):
        self.states = as_float64("states", states, 2)                       # (N, D)
        self.goal = as_float64("goal", goal, 1)                             # (A,)
        N, D = self.states.shape
        self.policy = GaussianPolicy((D, self.goal.size))
        self.S1 = np.hstack([self.states, np.ones((N, 1))])                 # s̃ (N, D + 1)

    def _blocks(self, theta):
        layers, rho = self.policy.unflatten(theta)
        W, b = layers[0]
        return np.vstack([W, b[None, :]]), rho                              # Θ (D + 1, A), ρ (A,)

    def expected_return(self, theta):
        Th, rho = self._blocks(theta)
        return float(-((self.S1 @ Th - self.goal) ** 2).sum(axis=1).mean() - np.exp(2 * rho).sum())

    def gradient(self, theta):
        Th, rho = self._blocks(theta)
        dTh = -2.0 / len(self.S1) * self.S1.T @ (self.S1 @ Th - self.goal)  # (D + 1, A)
        return np.concatenate([dTh.ravel(), -2.0 * np.exp(2 * rho)])        # W rows, b, ρ

    def hessian(self, theta):
        _, rho = self._blocks(theta)
        A = self.goal.size
        G = -2.0 / len(self.S1) * self.S1.T @ self.S1                       # (D + 1, D + 1)
        H = np.zeros((self.policy.num_params,) * 2)
        k = len(G) * A
        H[:k, :k] = np.kron(G, np.eye(A))                                   # row-major Θ ⊗ I_A
        H[k:, k:] = np.diag(-4.0 * np.exp(2 * rho))
        return H

    def exact_meta_gradient(self, theta, alpha):
        """(I + α ∇²J(θ)) ∇J(θ + α ∇J(θ))."""
        theta1 = theta + alpha * self.gradient(theta)
        g1 = self.gradient(theta1)
        return g1 + alpha * self.hessian(theta) @ g1

    def samples(self, theta, m, rng):
        """One task's (obs (M, D), actions (M, A), advantages r − J(θ) (M,))."""
        obs = self.states[rng.integers(0, len(self.states), m)]
        act = self.policy.sample(theta, obs, rng)
        r = -((act - self.goal) ** 2).sum(axis=1)
        return obs, act, r - self.expected_return(theta)

    def default_theta(self):
        """A fixed θ away from the optimum: W = 0.3·(identity-like), b = 0, σ = 0.6."""
        D, A = self.states.shape[1], self.goal.size
        return self.policy.flatten([(0.3 * np.eye(D, A), np.zeros(A))], np.full(A, np.log(0.6)))


class TwoStepChain:
    """A two-step linear-Gaussian chain: the second state depends on the first action, so
    the cross-timestep curvature terms matter (lvc is biased there, dice is not).

    s₀ uniform over ``starts`` (scalars), a_t ~ N(w s_t + b, e^{2ρ}), s_{t+1} = s_t + a_t,
    r_t = −(s_{t+1} − g)², t = 0, 1; θ = [w, b, ρ] (``GaussianPolicy((1, 1))``). With
    m₁ = (1 + w) s₀ + b and σ² = e^{2ρ}, the expected return per timestep is

        η(θ) = −(1/2) mean_{s₀} [ (m₁ − g)² + σ² + ((1 + w) m₁ + b − g)² + (1 + w)² σ² + σ² ],

    a polynomial in (w, b, e^{2ρ}): ∇η by the complex step (exact to rounding), ∇²η by
    centred differences of it. Advantages: rewards-to-go minus their exact expectations
    (constant baselines)."""

    def __init__(self, starts=(-0.5, 0.0, 0.5), goal=0.4):
        self.starts = as_float64("starts", starts, 1)
        self.goal = float(goal)
        self.policy = GaussianPolicy((1, 1))

    def _terms(self, theta):
        """(E r₀, E r₁) averaged over s₀; complex θ allowed."""
        w, b, var = theta[0], theta[1], np.exp(2 * theta[2])
        m1 = (1 + w) * self.starts + b
        r0 = -((m1 - self.goal) ** 2 + var)
        r1 = -(((1 + w) * m1 + b - self.goal) ** 2 + (1 + w) ** 2 * var + var)
        return r0.mean(), r1.mean()

    def expected_return(self, theta):
        return float(np.real(sum(self._terms(theta)))) / 2

    def gradient(self, theta, h=1e-30):
        E = np.eye(len(theta))
        return np.array([np.imag(sum(self._terms(theta + 1j * h * e))) / h for e in E]) / 2

    def hessian(self, theta, eps=1e-5):
        H = np.array([(self.gradient(theta + eps * e) - self.gradient(theta - eps * e)) / (2 * eps)
                      for e in np.eye(len(theta))])
        return (H + H.T) / 2

    def exact_meta_gradient(self, theta, alpha):
        return GaussianBandit.exact_meta_gradient(self, theta, alpha)

    def samples(self, theta, m, rng):
        """m // 2 episodes of two steps: (obs (M, 1), actions (M, 1), advantages (M,), episodes (M,))."""
        e = max(m // 2, 1)
        s0 = self.starts[rng.integers(0, len(self.starts), e)][:, None]         # (E, 1)
        a0 = self.policy.sample(theta, s0, rng)
        s1 = s0 + a0
        a1 = self.policy.sample(theta, s1, rng)
        r0, r1 = -((s1 - self.goal) ** 2)[:, 0], -((s1 + a1 - self.goal) ** 2)[:, 0]
        er0, er1 = (float(np.real(t)) for t in self._terms(theta))
        adv = np.stack([r0 + r1 - (er0 + er1), r1 - er1], axis=1)               # (E, 2)
        obs, act = np.stack([s0, s1], axis=1), np.stack([a0, a1], axis=1)       # (E, 2, 1)
        return obs.reshape(-1, 1), act.reshape(-1, 1), adv.ravel(), np.repeat(np.arange(e), 2)

    def default_theta(self):
        return np.array([-0.3, 0.1, np.log(0.5)])


def _mean_se(x):
    """(mean over axis 0, its standard error) of x (R, P)."""
    return x.mean(axis=0), x.std(axis=0, ddof=1) / np.sqrt(len(x))


def curvature_study(bandit, theta, v, samples=200_000, batches=50, seed=0):
    """{estimator: (mean Ĥ v (P,), standard error (P,))} and ∇²J v, over ``samples`` draws."""
    rng = as_rng("seed", seed)
    per = positive_int("samples", samples) // positive_int("batches", batches)
    out = {e: [] for e in ESTIMATORS}
    for _ in range(batches):
        obs, act, adv, starts = check_samples(bandit.policy, bandit.samples(theta, per, rng), "s")
        pt = PolicyPoint(bandit.policy, theta, obs, act)
        c = adv / len(adv)
        pt.vjp(c)
        for e in ESTIMATORS:
            out[e].append(pt.hvp(v, score_coefficients(e, c, starts)))
    return {e: _mean_se(np.array(h)) for e, h in out.items()}, bandit.hessian(theta) @ v


def meta_gradient_study(bandit, theta, alpha, m=100, reps=2000, seed=0):
    """{estimator: (mean meta-gradient (P,), standard error (P,))} over ``reps`` repetitions
    of M pre- and M post-update samples, and the exact meta-gradient."""
    rng = as_rng("seed", seed)
    alpha = positive_float("alpha", alpha)
    m, reps = positive_int("m", m), positive_int("reps", reps)
    out = {e: [] for e in ESTIMATORS}
    for _ in range(reps):
        pre = bandit.samples(theta, m, rng)
        theta1 = inner_step(bandit.policy, theta, pre, alpha)
        post = bandit.samples(theta1, m, rng)
        for e in ESTIMATORS:
            out[e].append(rl_meta_gradient(bandit.policy, theta, [pre], [post], alpha, e)[1])
    return {e: _mean_se(np.array(g)) for e, g in out.items()}, bandit.exact_meta_gradient(theta, alpha)


def bias_rows(study, exact):
    """[(estimator, relative bias ‖mean − exact‖/‖exact‖, its Monte Carlo noise ‖se‖/‖exact‖)]."""
    n = np.linalg.norm(exact)
    return [(e, float(np.linalg.norm(m - exact) / n), float(np.linalg.norm(se) / n))
            for e, (m, se) in study.items()]


def report(alpha=0.1, m_values=(20, 200, 2000), reps=500, samples=200_000, seed=0, problem=None):
    """Run both studies on one problem (default: the bandit) and return the table (a string)."""
    problem = problem or GaussianBandit()
    theta = problem.default_theta()
    lines = [f"{type(problem).__name__}, P = {problem.policy.num_params}, alpha = {alpha:g}",
             f"{'study':<28}{'estimator':<10}{'rel. bias':>12}{'MC noise':>12}"]
    v = problem.gradient(theta + alpha * problem.gradient(theta))
    study, exact = curvature_study(problem, theta, v, samples, seed=seed)
    lines += [f"{'curvature H v':<28}{e:<10}{b:>12.4f}{s:>12.4f}" for e, b, s in bias_rows(study, exact)]
    for m in m_values:
        study, exact = meta_gradient_study(problem, theta, alpha, m, reps, seed)
        lines += [f"{f'meta-gradient, M = {m}':<28}{e:<10}{b:>12.4f}{s:>12.4f}"
                  for e, b, s in bias_rows(study, exact)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(problem=GaussianBandit()))
    print()
    print(report(problem=TwoStepChain()))
