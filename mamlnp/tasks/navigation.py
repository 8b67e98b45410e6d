"""2D navigation (Finn et al. 2017, sec. 5.3): a point moves towards a hidden goal.

Dimension legend: T tasks (goals), N trajectories per task, H horizon (100 steps),
D observation dim (2: the position; 4 for the oracle: position and goal), A = 2 action
dim, M valid timesteps of one task (≤ N·H), F = 2D + 4 baseline features, P parameters.

The environment is cbfinn/maml_rl's ``point_env_randgoal`` behind rllab's ``normalize``:

    s_0 = (0, 0)                        the start, every episode
    u_t = clip(0.1 · a_t, −0.1, 0.1)    normalize maps a ∈ [−1, 1] onto the box [−0.1, 0.1]
                                        (lb + (a + 1)·(ub − lb)/2 = 0.1·a), then clips
    s_{t+1} = s_t + u_t
    r_t = −‖s_{t+1} − g‖                the distance AFTER the step
    done when |s_{t+1} − g| < 0.01 in both coordinates, or after H = 100 steps

The observation o_t is s_t (oracle: [s_t, g]); the action stored is the policy's raw,
unclipped a_t (its log-likelihood is what the gradient needs). Goals g ~ U[−0.5, 0.5]².

Advantages (rllab's ``process_samples`` with ``gae_lambda = 1``, ``center_adv = True``,
``LinearFeatureBaseline``), per task over its N trajectories:

    R_t = Σ_{k≥0} γ^k r_{t+k}            discounted return to go, γ = 0.99, within one path
    φ_t = [o, o², t/100, (t/100)², (t/100)³, 1]      o clipped to ±10        (F,)
    c = (ΦᵀΦ + λI)⁻¹ ΦᵀR                 ridge λ = 1e-5 (×10 while c holds NaN, 5 tries)
    Â_t = R_t − φ_tᵀc                    (GAE with λ = 1 telescopes to exactly this)
    A_t = (Â_t − mean Â) / (std Â + 1e-8)   over all M timesteps of the task's batch

The sampler steps all T·N episodes together: one call of the policy's mean on the (T·N, D)
batch per step when the tasks share θ, one (N, D) call per task when each has its own θ′.
A finished episode is frozen (no more steps; its later entries are masked out).

Two ways to fill a batch (``SAMPLERS``):

    "steps"     whole episodes until the task holds at least N·H steps: rllab's batch_size
                (maml_rl's samplers, training and test alike). An episode that reaches the
                goal early leaves room for more episodes: a good policy gets many short ones.
    "episodes"  exactly N episodes per task, however short.

``rollout_steps`` draws rounds of N episodes per task and keeps, for each task, the shortest
prefix of its episodes (in draw order) whose lengths sum to ≥ N·H, as rllab's sampler stops
after the episode that crosses the threshold. Tasks then hold different episode counts;
Rollouts pads them with empty episodes (length 0, mask False), which ``average_return`` skips.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validation import as_float64, check_memory, positive_int

HORIZON = 100              # H, maml_rl's max_path_length
GOAL_RANGE = (-0.5, 0.5)   # goals uniform in this square
ACTION_SCALE = 0.1         # normalize: a ∈ [−1, 1] → 0.1·a ∈ [−0.1, 0.1]
GOAL_TOLERANCE = 0.01      # done when within this of the goal in both coordinates
SAMPLERS = ("steps", "episodes")   # how a task's batch is filled (see the module docstring)
DISCOUNT = 0.99            # γ
RIDGE = 1e-5               # the baseline's λ
OBS_CLIP = 10.0            # the baseline clips observations to ±10
ADV_EPS = 1e-8             # rllab's center_advantages: (A − mean) / (std + 1e-8)


# ---- the environment ----------------------------------------------------------------


def sample_goals(rng, num_tasks):
    """T goals uniform in [−0.5, 0.5]² -> (T, 2)."""
    return rng.uniform(GOAL_RANGE[0], GOAL_RANGE[1], size=(positive_int("num_tasks", num_tasks), 2))


def check_goals(goals):
    """(T, 2) finite goals inside [−0.5, 0.5]², else InputError naming the first bad one."""
    goals = as_float64("goals", goals, 2, (None, 2))
    bad = np.any((goals < GOAL_RANGE[0]) | (goals > GOAL_RANGE[1]), axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"goals: expected goals inside [{GOAL_RANGE[0]}, {GOAL_RANGE[1]}]² "
                         f"(the tasks' range), got goals[{i}] = {goals[i].tolist()}")
    return goals


def env_step(state, action, goal):
    """One step of every episode: s (B, 2), a (B, 2), g (B, 2) -> s′ (B, 2), r (B,), done (B,)."""
    u = np.clip(ACTION_SCALE * action, -ACTION_SCALE, ACTION_SCALE)   # (B, 2) the move
    nxt = state + u                                                   # (B, 2) s_{t+1}
    d = nxt - goal                                                    # (B, 2)
    reward = -np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2)                    # (B,)  −‖s_{t+1} − g‖
    done = (np.abs(d[:, 0]) < GOAL_TOLERANCE) & (np.abs(d[:, 1]) < GOAL_TOLERANCE)
    return nxt, reward, done


def observe(state, goal, oracle=False):
    """The observation: s (B, 2), or [s, g] (B, 4) for the oracle."""
    return np.concatenate([state, goal], axis=1) if oracle else state.copy()


# ---- the sampler --------------------------------------------------------------------


@dataclass
class Rollouts:
    """T·N episodes, padded to H steps. obs (T, N, H, D) o_t, actions (T, N, H, A) a_t,
    rewards (T, N, H) r_t, mask (T, N, H) True where step t happened, lengths (T, N),
    goals (T, 2), final (T, N, 2) the position after the last step (for drawings).
    Padded entries are 0; an empty episode (length 0) only pads a task that holds fewer
    episodes than another (``rollout_steps``)."""
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    goals: np.ndarray
    final: np.ndarray

    @property
    def returns(self):
        """(T, N) undiscounted return Σ_t r_t of each episode (0 for an empty one)."""
        return self.rewards.sum(axis=2)

    @property
    def episodes(self):
        """(T,) how many real (non-empty) episodes each task holds."""
        return np.count_nonzero(self.lengths, axis=1)

    def average_return(self):
        """(T,) mean of Σ_t r_t over each task's real episodes (rllab's AverageReturn)."""
        return self.returns.sum(axis=1) / self.episodes

    def positions(self, task, traj):
        """(L + 1, 2) the positions s_0 … s_L of one episode (its path, for drawings)."""
        L = int(self.lengths[task, traj])
        return np.vstack([self.obs[task, traj, :L, :2], self.final[task, traj]])


def rollout(policy, thetas, goals, num_traj, rng, horizon=HORIZON, oracle=False):
    """Run N episodes per goal with Gaussian actions a = μ_θ(o) + exp(log σ) ⊙ ε.

    policy : a GaussianPolicy (its ``mean``, ``unflatten`` and, when there, ``_means``);
    thetas : θ (P,) shared by every task, or (T, P) one θ′ per task;
    goals (T, 2) in [−0.5, 0.5]²; rng : numpy Generator (ε (H, T, N, A) drawn first, all of
    it, so the draws do not depend on which episodes end early). Returns Rollouts.
    Raises InputError if the policy's actions are NaN or infinite (a diverged θ).
    """
    goals, thetas, (T, N, H, A, D) = _check_rollout(policy, thetas, goals, num_traj, horizon,
                                                    oracle)
    eps = rng.standard_normal((H, T, N, A))                         # ε, every step's noise
    shared = thetas.ndim == 1
    std = np.exp(np.array([policy.unflatten(th)[1] for th in (
        [thetas] if shared else thetas)]))[:, None, :]              # (1 or T, 1, A)
    g = np.repeat(goals, N, axis=0)                                 # (T·N, 2)
    state = np.zeros((T * N, 2))                                    # s_0 = (0, 0)
    alive = np.ones(T * N, dtype=bool)
    obs = np.zeros((T * N, H, D)); act = np.zeros((T * N, H, A))
    rew = np.zeros((T * N, H)); mask = np.zeros((T * N, H), dtype=bool)
    for t in range(H):
        o = observe(state, g, oracle)                               # (T·N, D)
        mu = _mean(policy, thetas, o, T, N, shared)                 # (T, N, A)
        a = (mu + std * eps[t]).reshape(T * N, A)                   # (T·N, A)
        if not np.all(np.isfinite(a[alive])):
            raise InputError(f"thetas: the policy's actions are NaN or infinite at step {t} "
                             f"(θ holds NaN/inf, or its output overflows)")
        nxt, r, done = env_step(state, a, g)
        obs[alive, t], act[alive, t] = o[alive], a[alive]
        rew[alive, t], mask[alive, t] = r[alive], True
        state[alive] = nxt[alive]                                   # finished episodes stay put
        alive &= ~done
        if not alive.any():
            break
    shape = (T, N)
    return Rollouts(obs.reshape(shape + (H, D)), act.reshape(shape + (H, A)),
                    rew.reshape(shape + (H,)), mask.reshape(shape + (H,)),
                    mask.sum(axis=1).reshape(shape), goals, state.reshape(shape + (2,)))


def rollout_steps(policy, thetas, goals, num_traj, rng, horizon=HORIZON, oracle=False):
    """Whole episodes per goal until each task holds ≥ N·H steps (rllab's batch_size).

    The arguments are ``rollout``'s; N·H is the budget. Rounds of N episodes are drawn (a
    round for the tasks still short of the budget only), each task keeps the prefix of its
    episodes that first reaches the budget, and the tasks are padded to a common episode
    count with empty episodes. Returns Rollouts (T, N_max, H, ·). Raises InputError as
    ``rollout`` does, or if the batches could not fit in memory: every episode has at least
    one step, so a task holds at most N·H + N − 1 episodes, which is checked up front.
    """
    goals, thetas, (T, N, H, _, D) = _check_rollout(policy, thetas, goals, num_traj, horizon,
                                                    oracle)
    check_batch_memory("num_traj", num_traj, T, N, H, D, "steps")    # 1-step episodes
    need = np.full(T, N * H)                                        # steps each task lacks
    kept = [[] for _ in range(T)]                                   # (Rollouts, row, count)
    active = np.arange(T)
    while active.size:
        ro = rollout(policy, thetas if thetas.ndim == 1 else thetas[active], goals[active],
                     N, rng, H, oracle)
        for j, k in enumerate(active):
            total = np.cumsum(ro.lengths[j])                        # (N,) steps so far
            take = min(int(np.searchsorted(total, need[k])) + 1, N)  # first prefix ≥ need
            kept[k].append((ro, j, take))
            need[k] -= total[take - 1]
        active = active[need[active] > 0]
    return _stack_kept(kept, goals)


def _stack_kept(kept, goals):
    """Rollouts (T, N_max, …) from each task's kept (Rollouts, row, count) pieces, padded."""
    T, n = len(kept), max(sum(c for *_, c in kk) for kk in kept)
    fields = ("obs", "actions", "rewards", "mask", "lengths", "final")
    out = {}
    for f in fields:
        ref = getattr(kept[0][0][0], f)
        arr = np.zeros((T, n) + ref.shape[2:], dtype=ref.dtype)
        for k in range(T):
            x = np.concatenate([getattr(r, f)[j, :c] for r, j, c in kept[k]])
            arr[k, :x.shape[0]] = x
        out[f] = arr
    return Rollouts(out["obs"], out["actions"], out["rewards"], out["mask"], out["lengths"],
                    goals, out["final"])


def sample(policy, thetas, goals, num_traj, rng, horizon=HORIZON, oracle=False,
           sampler="steps"):
    """``rollout_steps`` (sampler "steps") or ``rollout`` ("episodes"): one entry point."""
    if sampler not in SAMPLERS:
        raise InputError(f"sampler: expected one of {list(SAMPLERS)}, got {sampler!r}")
    fn = rollout_steps if sampler == "steps" else rollout
    return fn(policy, thetas, goals, num_traj, rng, horizon, oracle)


def _check_rollout(policy, thetas, goals, num_traj, horizon, oracle):
    """(goals (T, 2), thetas (P,) or (T, P), (T, N, H, A, D)) checked, else InputError."""
    goals = check_goals(goals)
    T, N, H = goals.shape[0], positive_int("num_traj", num_traj), positive_int("horizon", horizon)
    thetas = as_float64("thetas", thetas)
    if thetas.shape not in ((policy.num_params,), (T, policy.num_params)):
        raise InputError(f"thetas: expected ({policy.num_params},) or ({T}, {policy.num_params}), "
                         f"got {thetas.shape}")
    D, what = (4, "oracle: position and goal") if oracle else (2, "position")
    if policy.obs_dim != D:
        raise InputError(f"policy: expected observations of dim {D} ({what}), the policy "
                         f"takes {policy.obs_dim}")
    check_batch_memory("num_traj", num_traj, T, N, H, D)
    return goals, thetas, (T, N, H, policy.act_dim, D)


def check_batch_memory(name, value, T, N, H, D, sampler="episodes", A=2):
    """InputError naming ``name`` if a batch of T tasks cannot fit in memory, before anything
    is allocated: N episodes of H steps per task ("episodes"), or, for "steps", the worst
    case of N·H + N − 1 episodes (every episode one step long). Bytes: obs, actions, rewards,
    noise and mask, 8·E·H·(D + 2A + 1) + E·H for E = T × episodes per task."""
    E = T * (N * H + N - 1 if sampler == "steps" else N)
    check_memory(name, value, E * H * (8 * (D + 2 * A + 1) + 1),
                 f"{E} episodes of {H} steps")


def _mean(policy, thetas, o, T, N, shared):
    """μ (T, N, A): one (T·N, D) call for a shared θ, else one stacked call over the tasks'
    θ′ (``GaussianPolicy.means``: each task's (N, D) rows through its own layers; θ′ was
    checked by ``rollout``), or one (N, D) call per task for a policy without it."""
    if shared:
        return policy.mean(thetas, o).reshape(T, N, -1)
    o = o.reshape(T, N, -1)
    if not hasattr(policy, "_means"):
        return np.stack([policy.mean(thetas[k], o[k]) for k in range(T)])
    mu = policy._means(thetas, o)                                     # (T, N, A)
    if not np.all(np.isfinite(mu)):
        raise InputError("thetas: the policy's mean is NaN or infinite on these observations "
                         "(expected finite outputs; diverged parameters?)")
    return mu


# ---- returns, baseline, advantages ----------------------------------------------------


def discounted_returns(rewards, discount=DISCOUNT):
    """R_t = r_t + γ R_{t+1} along the last axis (H); padded rewards are 0. (…, H) -> (…, H)."""
    R = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + discount * running
        R[..., t] = running
    return R


def baseline_features(obs, horizon=HORIZON):
    """φ (N, H, F) = [o, o², t/100, (t/100)², (t/100)³, 1] of every step, o clipped to ±10."""
    o = np.clip(obs, -OBS_CLIP, OBS_CLIP)                           # (N, H, D)
    al = np.broadcast_to((np.arange(obs.shape[1]) / 100.0)[None, :, None], obs.shape[:2] + (1,))
    return np.concatenate([o, o ** 2, al, al ** 2, al ** 3, np.ones_like(al)], axis=2)


def fit_baseline(features, returns, ridge=RIDGE):
    """c (F,) solving (ΦᵀΦ + λI) c = ΦᵀR (Φ (M, F), R (M,)), λ ×10 while c holds NaN (5 tries)."""
    gram, rhs = features.T @ features, features.T @ returns          # (F, F), (F,)
    for _ in range(5):
        c = np.linalg.lstsq(gram + ridge * np.eye(gram.shape[0]), rhs, rcond=None)[0]
        if not np.any(np.isnan(c)):
            break
        ridge *= 10
    return c


def task_advantages(obs, rewards, mask, discount=DISCOUNT):
    """Standardised advantages of one task's valid steps, (M,) in trajectory-major order.

    obs (N, H, D), rewards (N, H), mask (N, H). Baseline fitted on this batch only.
    """
    R = discounted_returns(rewards, discount)[mask]                 # (M,)
    phi = baseline_features(obs)[mask]                              # (M, F)
    adv = R - phi @ fit_baseline(phi, R)                            # (M,)  Â = R − b
    return (adv - adv.mean()) / (adv.std() + ADV_EPS)               # (M,)  center_adv


def to_samples(ro, discount=DISCOUNT):
    """The per-task Samples [(obs (M, D), actions (M, A), advantages (M,), episodes (M,)), …]
    of Rollouts; ``episodes`` labels each step with its trajectory n (what ``dice`` needs).

    Raises InputError if a reward or observation is NaN or infinite.
    """
    for name, a in (("rewards", ro.rewards), ("observations", ro.obs)):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: expected finite values from the environment, got "
                             f"{int(np.count_nonzero(~np.isfinite(a)))} NaN or infinite")
    out = []
    for k in range(ro.goals.shape[0]):
        m = ro.mask[k]                                              # (N, H)
        episodes = np.broadcast_to(np.arange(m.shape[0])[:, None], m.shape)[m]   # (M,)
        out.append((ro.obs[k][m], ro.actions[k][m],
                    task_advantages(ro.obs[k], ro.rewards[k], m, discount), episodes))
    return out
