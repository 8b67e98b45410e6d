"""A Gaussian MLP policy whose log-likelihood derivatives are written by hand.

Dimension legend: M samples (timesteps), D = sizes[0] observation entries, A = sizes[-1]
action entries, P_μ parameters of the mean network, P = P_μ + A parameters in all.

    π_θ(a | s) = N(a; μ_φ(s), diag(σ²)),   μ_φ = MLP(sizes, activation) (linear output),
    σ = exp(ρ),  ρ (A,) a state-independent log-std,   θ = [φ (P_μ,) | ρ (A,)]

φ has the MLP's block layout (mamlnp/nn/mlp.py: [W1 | b1 | W2 | b2 | ...], W_l (in, out)
row-major), then ρ. Per sample m and action entry j, with δ = a − μ (M, A):

    log π  = −Σ_j [ δ_j² e^{−2ρ_j} / 2 + ρ_j ] − (A/2) log 2π                      (M,)
    ∂ log π / ∂μ_j  = δ_j e^{−2ρ_j}               =: d_μ                            (M, A)
    ∂ log π / ∂ρ_j  = δ_j² e^{−2ρ_j} − 1          =: d_ρ                            (M, A)
    ∂² / ∂μ_j²      = −e^{−2ρ_j},   ∂² / ∂μ_j ∂ρ_j = −2 d_μ,   ∂² / ∂ρ_j² = −2 (d_ρ + 1)

Everything the estimators of mamlnp/meta/rl.py need comes from one ``PolicyPoint`` (the
forward caches of the mean network at θ on M samples):

    weighted VJP   Σ_m c_m ∇ log π_m                 backprop of c ⊙ d_μ, plus Σ_m c_m d_ρ
    JVP            q_m = ∇ log π_m · v               R-forward Rμ = J_μ v_φ: q = Σ_j d_μ Rμ + d_ρ v_ρ
    weighted HVP   Σ_m c_m ∇² log π_m v  (+ Σ_m e_m ∇ log π_m, e = any function of q)
                   R-backward of the MLP from R{c ⊙ d_μ} (nn/layers.py's R-passes, reused
                   through MLP._rforward / MLP._rbackprop), plus the ρ block
    Fisher         F v = (1/M) Σ_m [J_μᵀ e^{−2ρ} ⊙ Rμ ; 2 v_ρ]   (the Hessian of the mean KL)

Derivation: docs/derivations/policy-gradient.md.
"""
import numpy as np

from ..errors import InputError
from ..validation import as_float64, as_rng, check_memory
from .mlp import MLP

LOG_2PI = float(np.log(2.0 * np.pi))


class GaussianPolicy:
    """π_θ(a|s) = N(μ_φ(s), diag(exp(2ρ))): an MLP mean and a state-independent log-std ρ.

    sizes : (D, H_1, …, A), activation : "relu" | "tanh" | "softplus" (hidden layers).
    """

    def __init__(self, sizes=(2, 100, 100, 2), activation="relu"):
        self.net = MLP(sizes, activation, "mse")            # the mean network μ_φ
        self.sizes, self.activation = self.net.sizes, self.net.activation
        self.obs_dim, self.act_dim = self.sizes[0], self.sizes[-1]
        self.num_mean_params = self.net.num_params
        self.num_params = self.num_mean_params + self.act_dim

    def __repr__(self):
        return f"GaussianPolicy(sizes={self.sizes}, activation={self.activation!r})"

    def config(self):
        """JSON-able; ``GaussianPolicy(**policy.config())`` rebuilds the policy."""
        return {"sizes": list(self.sizes), "activation": self.activation}

    # ---- parameters ---------------------------------------------------------------

    def init(self, seed=0):
        """θ (P,): Glorot-uniform W_l ~ U(±√(6/(fan_in + fan_out))) (rllab's default),
        b = 0, ρ = 0."""
        rng = as_rng("seed", seed)
        theta = np.zeros(self.num_params)
        for (w0, w1), _, (fi, fo) in self.net.layout:
            bound = np.sqrt(6.0 / (fi + fo))
            theta[w0:w1] = rng.uniform(-bound, bound, w1 - w0)
        return theta

    def unflatten(self, theta):
        """(layers [(W (in, out), b (out,)), ...], log_std (A,)): views into θ."""
        theta = self.check_theta(theta)
        return self.net._unflatten(theta[:self.num_mean_params]), theta[self.num_mean_params:]

    def flatten(self, layers, log_std):
        """Inverse of ``unflatten``: a new θ (P,)."""
        ls = as_float64("log_std", log_std, 1, (self.act_dim,))
        return np.concatenate([self.net.flatten(layers), ls])

    # ---- argument checks ------------------------------------------------------------

    def check_theta(self, theta, name="theta"):
        return as_float64(name, theta, 1, (self.num_params,))

    def check_obs(self, obs, name="obs"):
        obs = as_float64(name, obs, 2, ("M", self.obs_dim))
        check_memory(name, obs.shape, 8 * 6 * obs.shape[0] * sum(self.sizes[1:]),
                     "the mean network's activations, caches and R-images, (M, H) each")
        return obs

    def check_actions(self, actions, m, name="actions"):
        return as_float64(name, actions, 2, (m, self.act_dim))

    # ---- the public, checked calls --------------------------------------------------

    def mean(self, theta, obs):
        """μ_φ(s): obs (M, D) -> (M, A)."""
        return self.point(theta, obs).mu

    def means(self, thetas, obs):
        """μ_φ_k(obs_k) of T parameter vectors at once, each on its own observations:
        thetas (T, P), obs (T, N, D) -> (T, N, A). Per layer one stacked product
        z_k = h_k W_k + b_k over k (np.matmul), the hidden activations elementwise; the same
        numbers as ``mean`` task by task (the sampler's post-update step, one θ′ per task)."""
        thetas = as_float64("thetas", thetas, 2, (None, self.num_params))
        obs = as_float64("obs", obs, 3, (thetas.shape[0], None, self.obs_dim))
        check_memory("obs", obs.shape, 8 * 2 * obs.shape[0] * obs.shape[1] * max(self.sizes),
                     "the stacked layers' activations, (T, N, H) each")
        return self._means(thetas, obs)

    def _means(self, thetas, h):
        """``means`` on checked arrays: thetas (T, P), h = obs (T, N, D) -> (T, N, A)."""
        T, last = thetas.shape[0], len(self.net.layout) - 1
        for l, ((w0, w1), (b0, b1), (fi, fo)) in enumerate(self.net.layout):
            z = np.matmul(h, thetas[:, w0:w1].reshape(T, fi, fo))             # (T, N, fo)
            z += thetas[:, None, b0:b1]
            h = z if l == last else self.net._act[0](z)                       # σ, hidden only
        return h

    def log_prob(self, theta, obs, actions):
        """log π_θ(a_m | s_m): obs (M, D), actions (M, A) -> (M,)."""
        return self.point(theta, obs, actions).log_prob

    def sample(self, theta, obs, rng):
        """a = μ + exp(ρ) ⊙ ε, ε ~ N(0, I) from the numpy Generator ``rng``: -> (M, A)."""
        p = self.point(theta, obs)
        eps = as_rng("rng", rng).standard_normal(p.mu.shape)               # (M, A)
        return p.mu + np.exp(p.log_std) * eps

    def point(self, theta, obs, actions=None):
        """A checked ``PolicyPoint``: the forward pass at θ on obs (and the scores if actions)."""
        theta, obs = self.check_theta(theta), self.check_obs(obs)
        if actions is not None:
            actions = self.check_actions(actions, obs.shape[0])
        return PolicyPoint(self, theta, obs, actions)

    def kl(self, theta_old, theta_new, obs):
        """(1/M) Σ_m KL(π_old(·|s_m) ‖ π_new(·|s_m)), a float."""
        return mean_kl_points(self.point(theta_old, obs), self.point(theta_new, obs))


def mean_kl_points(old, new):
    """(1/M) Σ_m Σ_j [ρ_n − ρ_o + (e^{2ρ_o} + (μ_o − μ_n)²) / (2 e^{2ρ_n}) − 1/2] of two points
    on the same observations (closed form for diagonal Gaussians)."""
    d2 = (old.mu - new.mu) ** 2                                            # (M, A)
    ratio = np.exp(2.0 * (old.log_std - new.log_std))                     # σ_o² / σ_n² (A,)
    per = (new.log_std - old.log_std) + (ratio + d2 * new.inv_var) / 2 - 0.5   # (M, A)
    return float(per.sum(axis=1).mean())


def mean_kl_grad(old, new):
    """∇ of ``mean_kl_points(old, new)`` with respect to the new θ (P,): backprop of
    ∂KL/∂μ_n = (μ_n − μ_o) e^{−2ρ_n} / M, and
    ∂KL/∂ρ_n = Σ_m [1 − (e^{2ρ_o} + (μ_o − μ_n)²) e^{−2ρ_n}] / M."""
    policy, M = new.policy, new.mu.shape[0]
    Pm = policy.num_mean_params
    grad = np.empty(policy.num_params)
    new._backprop((new.mu - old.mu) * (new.inv_var / M), grad[:Pm])
    d2 = (old.mu - new.mu) ** 2                                            # (M, A)
    ratio = np.exp(2.0 * (old.log_std - new.log_std))                     # σ_o² / σ_n² (A,)
    grad[Pm:] = (1.0 - ratio - d2 * new.inv_var).sum(axis=0) / M
    return grad


class PolicyPoint:
    """The policy at one θ on M samples: mean-network caches, log π, scores d_μ, d_ρ.

    Built by ``GaussianPolicy.point`` (checked) or directly with checked arrays. ``vjp``
    stores the backprop deltas of its weights c; ``hvp`` then differentiates Σ c_m log π_m.
    """

    def __init__(self, policy, theta, obs, actions=None):
        self.policy, self.theta, self.obs = policy, theta, obs
        Pm = policy.num_mean_params
        self.log_std = theta[Pm:]                                          # ρ (A,)
        self.inv_var = np.exp(-2.0 * self.log_std)                         # e^{−2ρ} (A,)
        self.mu = self._mean_forward(theta[:Pm], obs)                      # (M, A)
        if not np.isfinite(self.mu).all():
            raise InputError("theta: the policy's mean is NaN or infinite on these "
                             "observations (expected finite outputs; diverged parameters?)")
        self.actions, self._bp = actions, None
        if actions is not None:
            self._scores(actions)

    def _scores(self, actions):
        """Set d_μ, d_ρ (M, A) and log π (M,) of the actions (M, A); checks log π finite."""
        delta = actions - self.mu                                          # δ (M, A)
        self.d_mu = delta * self.inv_var                                   # ∂ log π/∂μ (M, A)
        dd = delta * self.d_mu                                             # δ² e^{−2ρ} (M, A)
        self.d_rho = dd - 1.0                                              # ∂ log π/∂ρ (M, A)
        self._set_log_prob(dd.sum(axis=1))

    def _set_log_prob(self, sq):
        """log π = −½ sq − Σρ − (A/2) log 2π (M,) from sq = Σ_j δ_j² e^{−2ρ_j} (M,), checked."""
        self.log_prob = -0.5 * sq - self.log_std.sum() - 0.5 * self.policy.act_dim * LOG_2PI
        if not np.isfinite(self.log_prob).all():
            raise InputError("theta: the policy's log-likelihood of these actions is not "
                             "finite (expected finite means and log-std; diverged parameters?)")

    def _mean_forward(self, phi, obs):
        """μ_φ(obs) (M, A), keeping the mean network's caches."""
        mu, self.caches = self.policy.net._forward(phi, obs)
        return mu

    def _need_actions(self):
        if self.actions is None:
            raise InputError("actions: this call needs the actions (the point was built "
                             "from observations only)")

    def vjp(self, c):
        """Σ_m c_m ∇_θ log π_m (P,) for weights c (M,); keeps the deltas for ``hvp``."""
        self._need_actions()
        P, Pm = self.policy.num_params, self.policy.num_mean_params
        grad = np.empty(P)
        deltas = self._backprop(c[:, None] * self.d_mu, grad[:Pm])
        grad[Pm:] = c @ self.d_rho                                         # (A,) = (M,)(M, A)
        self._bp = (c, deltas)
        return grad

    def _backprop(self, d, out):
        """J_μᵀ d into out (P_μ,) for output weights d (M, A); returns the deltas."""
        return self.policy.net._backprop(self.caches, d, out)

    def _rforward(self, v):
        """R-images along v: (V blocks of φ, Rμ (M, A), (Rhs, Rzs, Rus))."""
        net = self.policy.net
        V = net._unflatten(v[:self.policy.num_mean_params])
        Rmu, Rhs, Rzs, Rus = net._rforward(self.caches, V)                 # Rμ = J_μ v_φ (M, A)
        return V, Rmu, (Rhs, Rzs, Rus)

    def jvp(self, v):
        """q_m = ∇_θ log π_m · v for every sample: (M,)."""
        self._need_actions()
        _, Rmu, _ = self._rforward(v)
        return self._q(Rmu, v)

    def _q(self, Rmu, v):
        vr = v[self.policy.num_mean_params:]                               # v_ρ (A,)
        return (self.d_mu * Rmu).sum(axis=1) + self.d_rho @ vr             # (M,)

    def hvp(self, v, score_coeffs=None):
        """Σ_m c_m ∇² log π_m v  (+ Σ_m e_m ∇ log π_m with e = score_coeffs(q), q = ``jvp(v)``),
        c the weights of the last ``vjp``: v (P,) -> (P,). The extra term is what the
        low-variance and DiCE curvatures add (mamlnp/meta/rl.py)."""
        if self._bp is None:
            raise InputError("hvp: call vjp(c) first (the HVP is of Σ c_m log π_m)")
        _, deltas = self._bp
        Pm = self.policy.num_mean_params
        V, Rmu, rimages = self._rforward(v)
        out = np.empty(self.policy.num_params)
        Rd_mu, out[Pm:] = self._output_r(Rmu, v, score_coeffs)
        self.policy.net._rbackprop(self.caches, deltas, rimages, V, Rd_mu, out[:Pm])
        return out

    def _output_r(self, Rmu, v, score_coeffs=None):
        """The output end of the HVP along v, given Rμ = J_μ v_φ (M, A):
        (R{c ⊙ d_μ} (+ e ⊙ d_μ) (M, A) to backpropagate, the ρ block (A,))."""
        c = self._bp[0]
        vr = v[self.policy.num_mean_params:]                               # v_ρ (A,)
        # R{c ⊙ d_μ} = c ⊙ (−e^{−2ρ} Rμ − 2 d_μ v_ρ)                               (M, A)
        Rd_mu = c[:, None] * (-self.inv_var * Rmu - 2.0 * self.d_mu * vr)
        # R{Σ c d_ρ} = Σ_m c_m (−2 d_μ Rμ − 2 (d_ρ + 1) v_ρ)                           (A,)
        out_rho = c @ (-2.0 * self.d_mu * Rmu - 2.0 * (self.d_rho + 1.0) * vr)
        if score_coeffs is not None:
            e = score_coeffs(self._q(Rmu, v))                              # (M,)
            Rd_mu = Rd_mu + e[:, None] * self.d_mu
            out_rho = out_rho + e @ self.d_rho
        return Rd_mu, out_rho

    def fisher_vp(self, v):
        """F v = (1/M) Σ_m [J_μᵀ (e^{−2ρ} ⊙ Rμ) ; 2 v_ρ]: the Fisher information of π at θ
        (= the Hessian of the mean KL from this policy, at itself), v (P,) -> (P,)."""
        Pm = self.policy.num_mean_params
        _, Rmu, _ = self._rforward(v)
        out = np.empty(self.policy.num_params)
        self._backprop(Rmu * (self.inv_var / self.mu.shape[0]), out[:Pm])
        out[Pm:] = 2.0 * v[Pm:]
        return out
