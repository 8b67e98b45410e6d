"""Meta-training: ``meta_train(...)`` and the command ``python -m mamlnp train sinusoid``.

Dimension legend: T tasks (meta-batch), K support points (shots), Q query
points, P parameters.

One meta-iteration (Finn et al. 2017, Algorithm 2):

    batch ~ p(T)                    T tasks, K support + Q query points each
    loss, g = method.step(θ, batch) meta-loss and meta-gradient(s), each (P,)
    θ ← Adam_β(θ, g)                outer step of size β (and α too, for Meta-SGD)

Defaults are the paper's sinusoid protocol (sec. 5.1): a 1-40-40-1 ReLU network,
K = 10, α = 0.01, one inner step, Adam with β = 1e-3, meta-batch 25, 70,000
iterations. Query sets have Q = 10 points (cbfinn/maml draws K for each).

Reliability (module mamlnp.run.checkpoint writes the files):
  * all randomness — θ's initialisation, then every task batch — comes from ONE
    ``numpy.random.Generator`` seeded by ``seed``; its state is checkpointed, so
    a resumed run reproduces an uninterrupted one bit for bit;
  * a checkpoint every ``checkpoint_every`` iterations and at the end;
  * divergence: a NaN/inf meta-loss or meta-gradient, or a meta-loss that explodes
    (rules in mamlnp.run.runguard) stops the run with a DivergenceError BEFORE the bad
    step is taken; the last good checkpoint is never overwritten;
  * Ctrl-C (SIGINT) finishes the current iteration, writes a checkpoint and
    raises TrainingInterrupted (the CLI exits with code 130); SIGTERM likewise (143).
"""
import os
import shlex
import signal
import time
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint as C
from . import statecheck as S
from ..meta import maml as M
from ..errors import CheckpointError, DivergenceError, InputError
from ..fast.compile_notice import first_call_notice
from ..nn.mlp import MLP
from ..nn.spec import model_from_spec
from ..meta.optim import OPTIMIZERS
from .runguard import DivergenceGuard, StopSignals, metadata
from .runconfig import (DEFAULTS, RESUME_NET_KEYS as NET_KEYS, family_for, fresh_seed,
                        make_config, requested_keys, resume_config)
from . import classify
from ..validation import boolean
from .trainstep import fused_step, outer_step, sample_batch
from ..meta.variants import get_method

class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``.signum``) stopped training after a checkpoint was written;
    ``.result`` holds the run so far."""

    def __init__(self, message, result, signum=signal.SIGINT):
        super().__init__(message)
        self.result, self.signum = result, signum


@dataclass
class TrainResult:
    """What meta_train returns (model: an MLP, or a ConvNet for model="conv"). history:
    {"iteration", "meta_loss", "val_mse"} arrays (R,)
    ("val_accuracy" instead of "val_mse" for classification)."""
    model: MLP
    theta: np.ndarray
    config: dict
    history: dict
    params: dict
    out: str = None
    interrupted: bool = False


@dataclass
class Step:
    """Passed to ``callback`` after every meta-iteration (val_mse is None when not evaluated;
    for classification it holds the validation accuracy)."""
    iteration: int
    meta_loss: float
    params: dict
    val_mse: float = None

    @property
    def theta(self):
        return self.params["theta"]


# ---- training state -----------------------------------------------------------------


@dataclass
class _State:
    """Everything that changes during a run; all of it goes into the checkpoint."""
    params: dict
    optimizers: dict
    rng: np.random.Generator
    iteration: int = 0
    history: list = field(default_factory=list)               # rows (iteration, loss, val)
    window: list = field(default_factory=lambda: [0.0, 0])     # meta-loss sum, count
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)
    wall: float = 0.0
    last_checkpoint: int = None
    validated: bool = False                     # a validation ran in this process (compiled)

    def train_state(self):
        return {"window_sum": np.float64(self.window[0]), "window_count": np.int64(self.window[1]),
                "wall": np.float64(self.wall), **self.guard.state_dict()}


def _new_state(method, cfg):
    model = model_from_spec(cfg["model"])
    rng = np.random.default_rng(cfg["seed"])
    theta = (model.init(rng) if cfg["init"] == "xavier" else    # ConvNet: its one scheme
             model.init(rng, scheme=cfg["init"]))               # θ (P,), from the run's rng
    params = method.init_params(model, theta, cfg)
    opts = {g: OPTIMIZERS[cfg["optimizer"]](cfg["beta"]) for g in params}
    return _State(params, opts, rng)


def _restore_state(method, cfg, saved):
    missing = [f"{what} {g!r}" for g in method.groups for what, d in
               (("parameters", saved["params"]), ("optimizer state", saved["optimizer_state"]))
               if g not in d] + [f"trainer state {k!r}" for k in ("window_sum", "window_count",
                                 "wall", "recent", "n_recent", "median")
                                 if k not in saved["train_state"]]
    if missing:
        raise CheckpointError(f"resume: {saved['path']!r} lacks {', '.join(missing)}; it was "
                              f"not written by 'mamlnp train' for method {cfg['method']!r}")
    S.check_resume(saved["path"], saved, cfg, method)   # θ, α, m, v: (P,) finite at read
    params = {g: np.array(saved["params"][g], dtype=np.float64) for g in method.groups}
    opts = {g: OPTIMIZERS[cfg["optimizer"]](cfg["beta"]) for g in params}
    for g, opt in opts.items():
        opt.load_state_dict(saved["optimizer_state"][g])
    if saved["rng_state"] is None:
        raise S.fail(saved["path"], "rng_state", "missing (expected a PCG64 state to resume)")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = saved["rng_state"]
    except (TypeError, ValueError, KeyError) as exc:
        raise S.fail(saved["path"], "rng_state", f"refused by PCG64 ({exc})") from None
    ts = saved["train_state"]
    state = _State(params, opts, rng, saved["iteration"], [tuple(r) for r in saved["history"]],
                   [float(ts["window_sum"]), int(ts["window_count"])], DivergenceGuard(),
                   float(ts["wall"]), saved["iteration"])
    state.guard.load_state_dict(ts)
    return state


def _check_state(model, method, cfg, state, val, out, reuse=True):
    """Raise DivergenceError if the state about to be saved or returned is diverged: θ_n
    itself is checked (the guard only saw the loss at θ_{n-1}), by its validation MSE
    (reused from the history row when one was just computed) under the guard's rules."""
    last = state.history[-1] if state.history else None
    if reuse and last is not None and last[0] == state.iteration:
        val_mse = last[2]
    else:
        with np.errstate(all="ignore"):
            val_mse = validation_mse(model, method, state.params, cfg, val)
    why = state.guard.state_problem(val_mse, state.params)
    if why is not None:
        raise DivergenceError(f"training diverged at iteration {state.iteration}: {why}. "
                              f"{_divergence_hint(cfg, state, out)}",
                              iteration=state.iteration, loss=float(val_mse))


def _save(out, state, cfg):
    cfg["iteration"] = state.iteration
    history = np.array(state.history, dtype=np.float64).reshape(-1, 3)
    C.save_checkpoint(out, cfg, state.params,
                      {g: o.state_dict() for g, o in state.optimizers.items()},
                      state.rng.bit_generator.state, state.iteration, history,
                      state.train_state())
    C.write_history_csv(os.path.join(out, C.HISTORY_NAME), history, classify.history_columns(cfg))
    C.write_json(os.path.join(out, C.CONFIG_NAME), {**cfg, "metadata": metadata(
        cfg["backend"], cfg["seed"], state.wall, state.iteration)})
    state.last_checkpoint = state.iteration


# ---- validation -------------------------------------------------------------------


def validation_batch(cfg):
    """The fixed validation tasks: ``val_tasks`` tasks seeded by ``val_seed`` (not the
    600-task evaluation pool, whose seed is 2017), K = shots, ``val_query`` query points."""
    family = family_for(cfg)
    if classify.is_classification(cfg):                 # fixed episodes of the val characters
        return classify.validation_batch(family, cfg)
    rng = np.random.default_rng(np.random.SeedSequence([cfg["val_seed"], 0xFA11]))
    return family.sample(rng, cfg["val_tasks"], cfg["shots"], cfg["val_query"])


def validation_mse(model, method, params, cfg, batch):
    """Mean query MSE over ``batch`` after adapting θ on each support set (NumPy)."""
    alpha = method.adapt_alpha(params, cfg)
    total = 0.0
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        theta_s = M.final_iterate(model, params["theta"], xs, ys, alpha, cfg["inner_steps"])
        total += model._loss_value(theta_s, xq, yq)
    return total / batch.num_tasks


# ---- the loop -----------------------------------------------------------------------


def meta_train(config=None, *, out=None, resume=False, overwrite=False, progress=True,
               callback=None, **kwargs):
    """Meta-train on the sinusoid tasks; returns a TrainResult (.theta, .model, .config, .history).

    config : a dict of config keys (see DEFAULTS; a loaded run's config works too);
    kwargs : the same keys as keywords, e.g. ``meta_train(method="fomaml", iterations=500)``.
    out : a run directory for checkpoint.npz, config.json and history.csv (None: keep
      nothing on disk). resume : continue the run in ``out`` (to the same bits).
    callback : called as ``callback(step)`` with a Step after every iteration; a
      truthy return value stops training early (a checkpoint is written).
    Raises InputError / CheckpointError for bad input (before training starts),
    DivergenceError if the loss diverges, TrainingInterrupted on Ctrl-C.
    """
    resume, overwrite = boolean("resume", resume), boolean("overwrite", overwrite)
    if not resume and (kwargs.get("seed", 0) is None or (
            isinstance(config, dict) and config.get("seed", 0) is None and "seed" not in kwargs)):
        kwargs["seed"] = fresh_seed()                     # None: fresh entropy, recorded
    requested = {**(config or {}), **{k: v for k, v in kwargs.items() if v is not None}}
    if resume:        # the network keys are checked against the saved run's network instead
        cfg = make_config({k: v for k, v in requested.items() if k not in NET_KEYS})
    else:
        cfg = make_config(config, **kwargs)               # validates config first
    if resume and out is None:
        raise InputError("resume: expected a run directory in out=..., got out=None")
    lock = None
    if out is not None:
        out, lock = C.prepare_run_dir(out, resume, overwrite)
    try:
        method = get_method(cfg["method"])
        if resume:                                        # the saved config wins
            cfg, state = _load_run(out, requested)
            method = get_method(cfg["method"])
        else:
            state = _new_state(method, cfg)
        return _run(model_from_spec(cfg["model"]), method, cfg, state, out, progress, callback)
    finally:
        if lock is not None:
            C.release_run_dir(lock)


def _load_run(out, requested):
    """(config, state) of the run in ``out``, for --resume."""
    saved = C.read_checkpoint(out)
    S.require_keys(saved["path"], saved["config"], [k for k in DEFAULTS if k not in (
        "hidden", "activation", "inner_bn")] + ["model", "first_order"])   # inner_bn: adapt
    cfg = resume_config(saved["config"], requested_keys(requested, saved["config"]))
    if cfg["iterations"] < saved["iteration"]:
        raise InputError(f"iterations: the run in {out!r} has done {saved['iteration']} "
                         f"iterations, got iterations={cfg['iterations']}; ask for at least "
                         f"as many")
    return cfg, _restore_state(get_method(cfg["method"]), cfg, saved)


def _run(model, method, cfg, state, out, progress, callback):
    val, bar = validation_batch(cfg), None
    fused = fused_step(model, method, cfg, family_for(cfg), state.optimizers)
    start, stop = time.perf_counter(), False
    if state.last_checkpoint is not None:               # resumed: the saved state too
        try:
            _check_state(model, method, cfg, state, val, out, reuse=False)
        except DivergenceError as exc:
            raise CheckpointError(f"resume: {out!r} holds a diverged state ({exc}); start a "
                                  f"new run") from None
    try:
        with StopSignals() as signals:
            while state.iteration < cfg["iterations"] and not stop:
                if bar is None:       # the first iteration compiles (once): not in the ETA
                    with first_call_notice(backend=cfg["backend"]):
                        loss, val_mse = _iteration(model, method, cfg, state, val, out, fused)
                    bar = _progress_bar(progress, cfg, state, initial=state.iteration - 1)
                else:
                    loss, val_mse = _iteration(model, method, cfg, state, val, out, fused)
                if callback is not None:
                    stop = S.callback_stop(callback(Step(state.iteration, loss, state.params,
                                                         val_mse)))
                    S.check_trainer_params(model, cfg, method, state.params)
                stop = stop or signals.hit
                if out and (state.iteration % cfg["checkpoint_every"] == 0 or stop):
                    state.wall, start = state.wall + time.perf_counter() - start, time.perf_counter()
                    _check_state(model, method, cfg, state, val, out)
                    _save(out, state, cfg)
                _show(bar, state, loss, val_mse,
                      "val_acc" if classify.is_classification(cfg) else "val_mse")
            finished = state.iteration >= cfg["iterations"]
            final_row = finished and state.window[1] > 0
            if final_row:                                       # the last iterations' row
                _history_row(model, method, cfg, state, val)
            state.wall += time.perf_counter() - start
            if state.last_checkpoint != state.iteration or final_row:
                _check_state(model, method, cfg, state, val, out)   # the last step too
            if out and (final_row or state.last_checkpoint != state.iteration):
                _save(out, state, cfg)
    except OSError as exc:                      # for the CLI's message: what is on disk
        exc.last_checkpoint = state.last_checkpoint
        raise
    finally:
        if bar is not None:
            bar.close()
    result = _result(model, cfg, state, out, interrupted=signals.hit and not finished)
    if result.interrupted:
        raise TrainingInterrupted(_interrupt_message(state, out, cfg["task"]), result,
                                  signals.signum)
    return result


def _iteration(model, method, cfg, state, val, out, fused=None):
    """One meta-iteration: sample T tasks, meta-gradient(s), check, outer step(s); or all of
    it in one call, ``fused`` (mamlnp.run.trainstep: the same bits). Returns (meta_loss,
    validation MSE or None)."""
    hint = lambda: _divergence_hint(cfg, state, out)                      # noqa: E731
    if fused is not None:
        loss = fused(state.rng, state.params, state.optimizers["theta"], state.guard,
                     state.iteration + 1, hint)
    else:
        batch = sample_batch(family_for(cfg), state.rng, cfg["meta_batch"], cfg["shots"],
                             cfg["query"], cfg["backend"])              # T tasks, K + Q points
        with np.errstate(over="ignore", invalid="ignore"):      # a blow-up is the guard's
            loss, grads = method.step_at(state.iteration, model, state.params, batch, cfg,
                                         cfg["backend"])
        loss = float(loss)
        state.guard.check(state.iteration + 1, loss, grads, hint)
        fast = M.kernels_for(model, cfg["backend"], "adam_step")   # Adam's compiled twin
        for g, opt in state.optimizers.items():            # unchecked: finite, (P,), ours
            state.params[g] = outer_step(opt, state.params[g], grads[g], fast)     # Adam
    state.iteration += 1
    state.guard.record(loss)
    state.window = [state.window[0] + loss, state.window[1] + 1]
    if state.iteration % cfg["eval_every"] == 0:
        return loss, _history_row(model, method, cfg, state, val)
    return loss, None


def _divergence_hint(cfg, state, out):
    hint = (f"The step sizes are probably too large: start again with a smaller alpha "
            f"(--alpha, now {cfg['alpha']}) or beta (--beta, now {cfg['beta']})")
    if not out:
        return hint + "."
    if state.last_checkpoint is None:
        return hint + f"; no checkpoint had been written to {out!r} yet."
    return hint + f"; the last good checkpoint (iteration {state.last_checkpoint}) in {out!r} is kept."


def _show(bar, state, loss, val_mse, name="val_mse"):
    """Progress: meta-loss averaged since the last history row, last validation MSE (or
    accuracy in %: ``name`` val_acc; "-" before the first validation), ETA."""
    bar.update(1)
    if val_mse is not None or state.iteration % 50 == 0:
        last = state.history[-1] if state.history else (0, loss, float("nan"))
        mean = state.window[0] / state.window[1] if state.window[1] else last[1]
        bar.set_postfix({"meta_loss": f"{mean:.4f}", name: format_score(last[2], name)},
                        refresh=False)


def format_score(value, name="val_mse"):
    """A validation score as shown: MSE to 4 decimals, accuracy in % ("val_acc",
    "val_accuracy"), "-" when none was computed yet (NaN)."""
    if value is None or np.isnan(value):
        return "-"
    return f"{100 * value:.1f}%" if name.startswith("val_acc") else f"{value:.4f}"


def _history_row(model, method, cfg, state, val):
    score = classify.validation_accuracy if classify.is_classification(cfg) else validation_mse
    if state.validated:
        val_mse = score(model, method, state.params, cfg, val)        # or the val accuracy
    else:                     # the first validation may compile its kernels: say so
        with first_call_notice(backend=cfg["backend"]):
            val_mse = score(model, method, state.params, cfg, val)
        state.validated = True
    state.history.append((state.iteration, state.window[0] / max(state.window[1], 1), val_mse))
    state.window = [0.0, 0]
    return val_mse


def _result(model, cfg, state, out, interrupted):
    cfg = dict(cfg, iteration=state.iteration)
    if "alpha" in state.params:
        cfg["learned_alpha"] = state.params["alpha"].copy()
    if "lslr" in state.params:                                   # MAML++: (s, L)
        cfg["learned_lslr"] = state.params["lslr"].reshape(cfg["inner_steps"], -1).copy()
    h = np.array(state.history, dtype=np.float64).reshape(-1, 3)
    history = {name: h[:, i] for i, name in enumerate(classify.history_columns(cfg))}
    history["iteration"] = history["iteration"].astype(np.int64)
    return TrainResult(model, state.params["theta"].copy(), cfg, history,
                       {g: p.copy() for g, p in state.params.items()}, out, interrupted)


def _interrupt_message(state, out, task="sinusoid"):
    if not out:
        return f"interrupted at iteration {state.iteration} (no --out: nothing saved)"
    return (f"interrupted at iteration {state.iteration}; checkpoint written to {out!r}. "
            f"Resume with: python -m mamlnp train {task} --out {shlex.quote(out)} --resume")


def _progress_bar(progress, cfg, state, initial=None):
    from tqdm import tqdm
    initial = state.iteration if initial is None else initial
    return tqdm(total=cfg["iterations"], initial=initial, disable=not progress,
                desc=f"{cfg['method']}", unit="it", mininterval=0.5, dynamic_ncols=True)


# ---- the command line ---------------------------------------------------------------
