"""MAML for RL on 2D navigation: ``train_navigation(...)``, ``mamlnp train navigation``.

Dimension legend: T tasks (meta-batch), N trajectories per task, H horizon, M valid steps
of one task, D observation dim, P parameters of the Gaussian policy.

One meta-iteration (Finn et al. 2017, Algorithm 3; cbfinn/maml_rl's MAMLTRPO):

    g_1 … g_T ~ U[−0.5, 0.5]²                      T goals
    D_i  = N rollouts of π_θ in task i             pre-update samples, advantages A_i
    θ′_i = θ + α ∇_θ mean_m A_im log π_θ(a|s)      the inner policy-gradient step
    D′_i = N rollouts of π_θ′_i                     post-update samples, advantages A′_i
    ∇̂   = rl_meta_gradient(θ, D, D′, α, estimator) the meta-policy-gradient (mamlnp/meta/rl.py)
    θ  ← TRPO(θ, ∇̂, exact FVP Uᵀ F U, mean KL ≤ δ)  or θ ← Adam_β(θ, −∇̂)

``--inner-steps K`` (K > 1, a protocol extension; the paper trains through one step)
meta-trains through the test's own schedule: D_k sampled at θ_k = θ_{k−1} + α_k g_{k−1} for
k = 1 … K, α_1 = alpha and the later steps ``later_alpha`` (0.25, the test's), the objective
the mean of the K post-update surrogates, its gradient and the exact FVP of the mean KL over
the K adapted policies from mamlnp/meta/rl_steps.py; the history's return_after stays the
return after one step, and the log prints the return after each.

``--method pretrain`` trains one policy on all tasks without adaptation (the same TRPO on the
pre-update surrogate, θ′ = θ); ``--method oracle`` does the same with the goal in the
observation (D = 4). (maml_rl trained its pretrained policy with Adam, ``use_maml=False``,
and its oracle with TRPO on 1000 steps of random goals per iteration; here both use the
same loop and sizes as MAML, ``--outer adam`` giving the former.) Defaults are the protocol
of the figure's code (maml_trpo_point.py with the test script's meta-batch 20): T = 20,
N = 20, H = 100 (each task's batch: whole episodes until it holds N·H = 2000 steps, as
maml_rl's sampler fills batch_size), α = 0.5, δ = 0.01, 10 CG iterations, damping 1e-5,
backtracking 0.8 × 15, 100 iterations (maml_trpo_point.py's n_itr = 100; the one-step
return the meta-objective measures stops improving after about 30 iterations, see
docs/results.md).

α = 0.5, not the paper's text's 0.1: the code and the snapshot behind Fig. 4
(``trpomaml1_fbs20_mbs20_flr_0.5``) use 0.5, and the test adapts with 0.5 too.
estimator = ``maml`` by default, the paper's: it drops the pre-update sampling term (biased,
ProMP sec. 4). ProMP's ``lvc`` keeps that term per step; ``dice`` is unbiased, but its
curvature sums score products over whole 100-step episodes (high variance). On this task
the paper's estimator adapts better than ``lvc`` after 3 test steps on five training seeds
of five and after 2 on four, and ``dice`` (one seed) far worse (docs/results.md,
navigation): the default is what reproduces the paper, the others are one option away.

Reliability as ``mamlnp train sinusoid``: one Generator for all randomness (goals, then
every rollout's noise), checkpointed with θ, so a resumed run repeats the same bits; a
NaN/inf meta-gradient stops the run before the step (DivergenceError; the last checkpoint
is kept); Ctrl-C or SIGTERM writes a checkpoint and raises TrainingInterrupted. ``threads``
runs the tasks' derivatives on that many threads (mamlnp/meta/rl.py: the same bits at any
count, so a resumed run may change it; default: the cores the process may use). ``backend``
"numba" (default) runs the policy's row passes compiled (mamlnp/fast/policy/), "numpy" their
NumPy twins: the same maths to rounding, not the same bits, so a resumed run keeps its
backend (config.json records it; a run saved before the option counts as "numpy"). The
Fisher-vector product is the exact Hessian of the mean KL the line search measures (U the
true Jacobian of the inner step on its fixed samples), whichever estimator gives ∇̂.
"""
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DivergenceError, InputError
from ..fast.compile_notice import first_call_notice
from ..meta import rl as RL
from ..meta import rl_steps as RS
from ..meta import rl_trpo as RT
from ..meta.rl_trpo import timed
from ..meta.maml import check_backend
from ..meta.optim import Adam
from ..meta.trpo import trpo_step
from ..nn.policy import GaussianPolicy, PolicyPoint, mean_kl_points
from ..tasks import navigation as nav
from ..validation import choice, nonneg_int, positive_float, positive_int
from . import navigation_checkpoint as NC
from .rundir import prepare_run_dir, release_run_dir, write_history_csv, write_json, CONFIG_NAME
from .runguard import StopSignals, metadata
from .train import TrainingInterrupted

DEFAULTS = {"task": "navigation", "method": "maml", "estimator": "maml", "outer": "trpo",
            "alpha": 0.5, "beta": 0.01, "meta_batch": 20, "trajectories": 20, "sampler": "steps",
            "horizon": nav.HORIZON, "discount": nav.DISCOUNT, "max_kl": 0.01, "cg_iters": 10,
            "damping": 1e-5, "backtrack_ratio": 0.8, "max_backtracks": 15, "iterations": 100,
            "hidden": [100, 100], "activation": "relu", "seed": 0, "checkpoint_every": 10,
            "inner_steps": 1, "later_alpha": 0.25,
            "threads": None,                   # None: the cores this process may use
            "backend": None}                   # None: mamlnp.meta.maml.DEFAULT_BACKEND, saved
RESUMABLE = ("iterations", "checkpoint_every", "threads")     # what --resume may change


def make_config(**kwargs):
    """The run's config: DEFAULTS updated with kwargs, every value checked (InputError)."""
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise InputError(f"{unknown[0]}: not an option of train navigation (expected one of "
                         f"{sorted(DEFAULTS)})")
    cfg = {**DEFAULTS, **{k: v for k, v in kwargs.items() if v is not None}}
    cfg["method"] = choice("method", cfg["method"], NC.METHODS)
    cfg["estimator"] = choice("estimator", cfg["estimator"], NC.ESTIMATORS)
    cfg["outer"] = choice("outer", cfg["outer"], NC.OUTERS)
    cfg["sampler"] = choice("sampler", cfg["sampler"], nav.SAMPLERS)
    for k in ("alpha", "beta", "max_kl", "damping", "backtrack_ratio", "discount",
              "later_alpha"):
        cfg[k] = positive_float(k, cfg[k])
    if cfg["backtrack_ratio"] >= 1 or cfg["discount"] > 1:
        raise InputError(f"backtrack_ratio, discount: expected a ratio in (0, 1) and a discount "
                         f"in (0, 1], got {cfg['backtrack_ratio']} and {cfg['discount']}")
    for k in ("meta_batch", "trajectories", "horizon", "iterations", "cg_iters",
              "max_backtracks", "checkpoint_every", "inner_steps"):
        cfg[k] = positive_int(k, cfg[k])
    cfg["seed"] = nonneg_int("seed", cfg["seed"])
    cfg["backend"] = check_backend(cfg["backend"])          # "numba" or "numpy", recorded
    if cfg["inner_steps"] > 1 and cfg["method"] != "maml":
        raise InputError(f"inner_steps: expected 1 for method {cfg['method']!r} (it does not "
                         f"adapt), got {cfg['inner_steps']}")
    name = "inner_steps" if cfg["inner_steps"] > 1 else "trajectories"
    nav.check_batch_memory(name, cfg[name],                         # the K + 1 batches kept
                           cfg["meta_batch"] * (cfg["inner_steps"] + 1) // 2,
                           cfg["trajectories"], cfg["horizon"],
                           4 if cfg["method"] == "oracle" else 2, cfg["sampler"])
    if cfg["threads"] is None:
        cfg["threads"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    cfg["threads"] = positive_int("threads", cfg["threads"])
    hidden = [positive_int("hidden", h) for h in np.atleast_1d(cfg.pop("hidden")).tolist()]
    D = 4 if cfg["method"] == "oracle" else 2
    cfg["policy"] = GaussianPolicy((D, *hidden, 2), cfg.pop("activation")).config()
    return cfg


@dataclass
class NavResult:
    """What train_navigation returns. history (R, 3): iteration, average return before
    adaptation, after one inner step (NaN for pretrain/oracle)."""
    policy: GaussianPolicy
    theta: np.ndarray
    config: dict
    history: np.ndarray
    out: str = None
    interrupted: bool = False


@dataclass
class _State:
    theta: np.ndarray
    rng: np.random.Generator
    adam: Adam = None
    iteration: int = 0
    history: list = field(default_factory=list)
    wall: float = 0.0
    last_checkpoint: int = None


# ---- one meta-iteration ----------------------------------------------------------------


def sample_batch(policy, cfg, theta, rng, seconds=None):
    """(goals (T, 2), pre Rollouts, pre Samples, InnerSteps (θ′ (T, P) and the pre-update
    points), post Rollouts, post Samples); the last three are None for the methods that do
    not adapt. ``seconds`` (a dict): the wall seconds of "sampling" (the rollouts),
    "baseline" (returns, baseline fits, advantages) and "inner_step" are added to it."""
    oracle = cfg["method"] == "oracle"
    goals = nav.sample_goals(rng, cfg["meta_batch"])
    roll = lambda th: timed(seconds, "sampling", nav.sample, policy, th, goals,     # noqa: E731
                            cfg["trajectories"], rng, cfg["horizon"], oracle,
                            cfg.get("sampler", "episodes"))
    samples = lambda ro: timed(seconds, "baseline", nav.to_samples, ro,             # noqa: E731
                               cfg["discount"])
    pre_ro = roll(theta)
    pre = samples(pre_ro)
    if cfg["method"] != "maml":
        return goals, pre_ro, pre, None, None, None
    inner = timed(seconds, "inner_step", RT.inner_steps, policy, theta, pre, cfg["alpha"],
                  cfg["threads"], backend=cfg["backend"])
    post_ro = roll(inner.thetas)
    return goals, pre_ro, pre, inner, post_ro, samples(post_ro)


def _plain_fns(policy, theta, tasks, damping, threads=1, backend=None):
    """Policy gradient, Fisher-vector product, line-search surrogate and KL without adaptation
    (θ′ = θ): the methods pretrain and oracle. Means over the T tasks of per-task means; the
    points are rl.py's on ``backend`` (a two-hidden-layer ReLU policy's Fisher product through
    the Jacobian factors, computed at its first call), the tasks on ``threads`` threads; at θ
    itself the surrogate and KL reuse the points."""
    cls = RL._point_class(policy, backend=backend)

    def point_grad(task):
        p = cls(policy, theta, task[0], task[1])
        return p, p.vjp(task[2] / task[2].shape[0])                   # Σ_m c_m ∇ log π_m (P,)
    pts, grads = zip(*RL._per_task(point_grad, tasks, threads))
    T = len(pts)
    grad = sum(grads) / T

    def fvp(v):
        return sum(RL._per_task(lambda p: p.fisher_vp(v), pts, threads)) / T + damping * v
    memo = {theta.tobytes(): pts}

    def new_points(th):
        key = th.tobytes()
        if key not in memo:
            memo.clear()
            memo[key] = RL._per_task(lambda t: cls(policy, th, t[0], t[1]), tasks, threads)
        return memo[key]

    def surrogate(th):
        return float(np.mean([np.mean(t[2] * np.exp(n.log_prob - p.log_prob))
                              for n, p, t in zip(new_points(th), pts, tasks)]))

    def kl(th):
        return float(np.mean([mean_kl_points(p, n) for n, p in zip(new_points(th), pts)]))
    objective = float(np.mean([np.mean(t[2] * p.log_prob) for p, t in zip(pts, tasks)]))
    return objective, grad, fvp, surrogate, kl


def iteration(policy, cfg, state):
    """One meta-iteration on ``state`` (θ, rng, Adam) in place; returns (return before, return
    after adaptation or NaN, info dict). Raises DivergenceError before a bad step.
    info["seconds"]: where the wall time went, by stage (sampling, baseline, inner_step,
    meta_gradient; with TRPO also fvp_setup, cg: the conjugate-gradient products, and
    line_search: the surrogate and KL of the candidates)."""
    seconds = dict.fromkeys(SECONDS if cfg["outer"] == "trpo" else SECONDS[:4], 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            if cfg.get("inner_steps", 1) > 1:
                pre_ro, chain, post_ros = sample_chain(policy, cfg, state.theta, state.rng,
                                                       seconds)
                post_ro = post_ros[0]
            else:
                _, pre_ro, pre, inner, post_ro, post = sample_batch(policy, cfg, state.theta,
                                                                    state.rng, seconds)
        except InputError as exc:                       # NaN policy / rewards: a diverged θ
            raise DivergenceError(f"training diverged at iteration {state.iteration + 1}: "
                                  f"{exc}", iteration=state.iteration + 1) from None
        if cfg.get("inner_steps", 1) > 1:
            obj, grad, fns = _chain_derivatives(policy, cfg, chain, seconds)
        else:
            obj, grad, fns = _derivatives(policy, cfg, state.theta, pre, inner, post, seconds)
    if not (math.isfinite(obj) and np.all(np.isfinite(grad))):
        raise DivergenceError(f"training diverged at iteration {state.iteration + 1}: the "
                              f"meta-gradient holds NaN or inf; θ is not updated",
                              iteration=state.iteration + 1)
    info = {"objective": obj}
    if cfg["outer"] == "adam":
        state.theta = state.adam._step(state.theta, -grad)                  # ascent
    else:
        fvp, surrogate, kl = (_timer(seconds, key, fn) for key, fn in
                              zip(("cg", "line_search", "line_search"), fns))
        state.theta, step_info = trpo_step(
            state.theta, grad, fvp, surrogate, kl, max_kl=cfg["max_kl"],
            backtrack_ratio=cfg["backtrack_ratio"], max_backtracks=cfg["max_backtracks"],
            cg_iters=cfg["cg_iters"])
        info.update(step_info)
    info["seconds"] = seconds
    if cfg.get("inner_steps", 1) > 1:
        info["after_steps"] = [float(r.average_return().mean()) for r in post_ros]
    after = float(post_ro.average_return().mean()) if post_ro is not None else float("nan")
    return float(pre_ro.average_return().mean()), after, info


SECONDS = ("sampling", "baseline", "inner_step", "meta_gradient", "fvp_setup", "cg",
           "line_search")          # the stages of info["seconds"], in the order they run


def _derivatives(policy, cfg, theta, pre, inner, post, seconds):
    """(objective, meta-gradient, (fvp, surrogate_fn, kl_fn) or None for Adam); the seconds
    of "meta_gradient" and "fvp_setup" added to ``seconds``."""
    if cfg["method"] != "maml":
        obj, grad, *fns = timed(seconds, "meta_gradient", _plain_fns, policy, theta, pre,
                                cfg["damping"], cfg["threads"], cfg["backend"])
        return obj, grad, fns
    if cfg["outer"] == "adam":
        return (*timed(seconds, "meta_gradient", RL.rl_meta_gradient, policy, theta, pre,
                        post, cfg["alpha"], cfg["estimator"], cfg["threads"],
                        backend=cfg["backend"]), None)
    obj, grad, *fns = RT.meta_trpo_fns(policy, theta, pre, post, cfg["alpha"], cfg["estimator"],
                                       cfg["damping"], threads=cfg["threads"], inner=inner,
                                       seconds=seconds, backend=cfg["backend"])
    return obj, grad, fns


def sample_chain(policy, cfg, theta, rng, seconds=None):
    """(pre Rollouts, rl_steps.Chain of cfg["inner_steps"] = K steps, [post Rollouts after
    step 1 … K]): D_0 sampled at θ, then each D_k at θ_k = θ_{k−1} + α_k g_{k−1}, α_1 = alpha
    and the later steps later_alpha (the test's schedule); ``seconds`` as sample_batch's."""
    goals = nav.sample_goals(rng, cfg["meta_batch"])

    def batch(th):
        ro = timed(seconds, "sampling", nav.sample, policy, th, goals, cfg["trajectories"],
                   rng, cfg["horizon"], False, cfg["sampler"])
        return ro, timed(seconds, "baseline", nav.to_samples, ro, cfg["discount"])
    alphas = (cfg["alpha"],) + (cfg["later_alpha"],) * (cfg["inner_steps"] - 1)
    pre_ro, pre = batch(theta)
    chain = timed(seconds, "inner_step", RS.start_chain, policy, theta, pre, alphas,
                  cfg["threads"], backend=cfg["backend"])
    post_ros = []
    for _ in alphas:
        ro, samples = batch(chain.next_thetas())
        post_ros.append(ro)
        timed(seconds, "inner_step", RS.extend, policy, chain, samples, cfg["threads"],
              backend=cfg["backend"])
    return pre_ro, chain, post_ros


def _chain_derivatives(policy, cfg, chain, seconds):
    """``_derivatives`` through the chain's K inner steps (mamlnp/meta/rl_steps.py)."""
    timed(seconds, "fvp_setup", RS.factorize, chain)
    obj, grad, *fns = timed(seconds, "meta_gradient", RS.multistep_trpo_fns, policy, chain,
                            cfg["estimator"], cfg["damping"], "maml", cfg["threads"])
    return obj, grad, (fns if cfg["outer"] == "trpo" else None)


def _timer(seconds, key, fn):
    """fn, its calls' wall time added to seconds[key]."""
    return lambda *args: timed(seconds, key, fn, *args)


# ---- the loop ---------------------------------------------------------------------------


def train_navigation(*, out=None, resume=False, overwrite=False, progress=True, callback=None,
                     **kwargs):
    """Meta-train a navigation policy; returns a NavResult (.policy, .theta, .config, .history).

    kwargs : keys of DEFAULTS (method, estimator, outer, alpha, iterations, ...).
    out : the run directory (checkpoint.npz, config.json, history.csv); None keeps nothing.
    resume : continue the run in ``out`` to the same bits (only iterations,
    checkpoint_every and threads may change). callback(iteration, before, after, info) after
    every iteration; a truthy return stops training (a checkpoint is written).
    """
    if resume and out is None:
        raise InputError("resume: expected a run directory in out=..., got out=None")
    cfg = make_config(**kwargs) if not resume else None
    lock = None
    if out is not None:
        out, lock = prepare_run_dir(out, resume, overwrite)
    try:
        if resume:
            cfg, state = _load(out, kwargs)
        else:
            policy = GaussianPolicy(**cfg["policy"])
            rng = np.random.default_rng(cfg["seed"])
            theta = policy.init(rng)                                      # θ (P,) Xavier, ρ = 0
            state = _State(theta, rng, Adam(cfg["beta"]) if cfg["outer"] == "adam" else None)
        return _run(GaussianPolicy(**cfg["policy"]), cfg, state, out, progress, callback)
    finally:
        release_run_dir(lock)


def _load(out, kwargs):
    """(config, state) of the run in ``out``; options given again must equal the saved ones."""
    saved = NC.read(out)
    cfg = NC.with_old_defaults(saved["config"])     # the options a run saved before them
    NC.check_resume(out, cfg, kwargs, DEFAULTS, RESUMABLE)
    for key in RESUMABLE:
        if kwargs.get(key) is not None:
            cfg[key] = positive_int(key, kwargs[key])
    if cfg["iterations"] < saved["iteration"]:
        raise InputError(f"iterations: the run in {out!r} has done {saved['iteration']} "
                         f"iterations, got iterations={cfg['iterations']}; ask for at least "
                         f"as many")
    rng = np.random.default_rng()
    rng.bit_generator.state = saved["rng_state"]
    adam = None
    if cfg["outer"] == "adam":
        adam = Adam(cfg["beta"])
        adam.load_state_dict(saved["optimizer_state"])
    state = _State(saved["theta"], rng, adam, saved["iteration"],
                   [tuple(r) for r in saved["history"]], saved["wall"], saved["iteration"])
    return cfg, state


def _save(out, cfg, state):
    cfg = dict(cfg, iteration=state.iteration)
    history = np.array(state.history, dtype=np.float64).reshape(-1, 3)
    NC.save(out, cfg, state.theta, state.rng.bit_generator.state, state.iteration, history,
            state.adam.state_dict() if state.adam is not None else None, state.wall)
    write_history_csv(os.path.join(out, "history.csv"), history,
                      ("iteration", "return_before", "return_after"))
    write_json(os.path.join(out, CONFIG_NAME), {**cfg, "metadata": metadata(
        cfg["backend"], cfg["seed"], state.wall, state.iteration)})
    state.last_checkpoint = state.iteration


def _run(policy, cfg, state, out, progress, callback):
    start, stop = time.perf_counter(), False
    with StopSignals() as signals:
        while state.iteration < cfg["iterations"] and not stop:
            t0 = time.perf_counter()
            with first_call_notice(backend=cfg["backend"]):      # kernels compile once
                before, after, info = iteration(policy, cfg, state)
            state.iteration += 1
            state.history.append((state.iteration, before, after))
            if progress:
                _log(state, before, after, info, time.perf_counter() - t0)
            if callback is not None:
                stop = bool(callback(state.iteration, before, after, info))
            stop = stop or signals.hit
            if out and (state.iteration % cfg["checkpoint_every"] == 0 or stop
                        or state.iteration == cfg["iterations"]):
                state.wall, start = state.wall + time.perf_counter() - start, time.perf_counter()
                _save(out, cfg, state)
    state.wall += time.perf_counter() - start
    result = NavResult(policy, state.theta.copy(), dict(cfg, iteration=state.iteration),
                       np.array(state.history, dtype=np.float64).reshape(-1, 3), out,
                       signals.hit and state.iteration < cfg["iterations"])
    if result.interrupted:
        where = (f"checkpoint written to {out!r}; resume with: python -m mamlnp train "
                 f"navigation --out {out} --resume") if out else "no --out: nothing saved"
        raise TrainingInterrupted(f"interrupted at iteration {state.iteration}; {where}",
                                  result, signals.signum)
    return result


def _log(state, before, after, info, seconds):
    extra = ""
    if "kl" in info:
        extra = f", kl {info['kl']:.4f}, backtracks {info.get('backtracks', '?')}"
        if not info.get("accepted", True):
            extra += " (no step satisfied the KL and improved the surrogate: θ kept)"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in info.get("seconds", {}).items())
    if "after_steps" in info:
        after_txt = " / ".join(f"{r:.2f}" for r in info["after_steps"])
        extra = f" (after 1…{len(info['after_steps'])} steps {after_txt})" + extra
    print(f"iteration {state.iteration}: return before {before:.2f}, after {after:.2f}"
          f"{extra}, {seconds:.1f} s ({parts})", file=sys.stderr, flush=True)
