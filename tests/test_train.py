"""mamlnp.run.train: the programmatic meta_train, the CLI, determinism, divergence and bad input.

Runs are tiny (a few meta-batches of a few tasks, NumPy backend) to stay fast.
"""
import json
import os
import signal

import numpy as np
import pytest

import mamlnp
from mamlnp import CheckpointError, DivergenceError, InputError
from mamlnp.run import checkpoint as C
from mamlnp.run import train as TR
from mamlnp.meta import variants as V
from mamlnp.run.cli import main
from mamlnp.run.runguard import LOSS_LIMIT
from mamlnp.run.train import TrainingInterrupted

TINY = dict(iterations=12, meta_batch=3, eval_every=6, val_tasks=5, backend="numpy",
            progress=False)
CONTRACT_KEYS = {"task", "method", "model", "alpha", "inner_steps", "shots", "query",
                 "meta_batch", "beta", "iterations", "seed", "first_order", "backend",
                 "iteration"}


@pytest.mark.parametrize("method", V.METHODS)
def test_every_method_trains(method):
    r = mamlnp.meta_train(method=method, **TINY)
    assert CONTRACT_KEYS <= set(r.config) and r.config["iteration"] == 12
    assert r.config["method"] == method and r.model.sizes == (1, 40, 40, 1)
    assert r.theta.shape == (r.model.num_params,)
    assert list(r.history["iteration"]) == [6, 12]
    assert np.all(np.isfinite(r.history["meta_loss"])) and np.all(r.history["val_mse"] > 0)
    assert not np.array_equal(r.theta, r.model.init(np.random.default_rng(0)))
    assert r.config["first_order"] == (method in ("fomaml", "reptile"))
    if method == "metasgd":
        assert r.config["learned_alpha"].shape == r.theta.shape
        assert not np.all(r.config["learned_alpha"] == 0.01)


def test_same_seed_same_bits_other_seed_other_bits():
    a, b = mamlnp.meta_train(seed=3, **TINY), mamlnp.meta_train(seed=3, **TINY)
    c = mamlnp.meta_train(seed=4, **TINY)
    assert a.theta.tobytes() == b.theta.tobytes()
    assert all(np.array_equal(a.history[k], b.history[k]) for k in a.history)
    assert not np.array_equal(a.theta, c.theta)


def test_meta_training_lowers_the_validation_mse():
    cfg = {**TINY, "iterations": 400, "eval_every": 100, "meta_batch": 5, "val_tasks": 50}
    r = mamlnp.meta_train(beta=0.01, **cfg)
    c = r.config
    theta0 = r.model.init(np.random.default_rng(c["seed"]))              # the run's θ_0
    mse0 = TR.validation_mse(r.model, V.get_method("maml"), {"theta": theta0}, c,
                             TR.validation_batch(c))
    print(f"validation MSE: {mse0:.3f} at θ_0, then", np.round(r.history["val_mse"], 3))
    assert r.history["val_mse"][-1] < 0.7 * mse0


def test_run_directory(tmp_path):
    out = tmp_path / "run"
    r = mamlnp.meta_train(out=out, checkpoint_every=5, **TINY)
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "config.json", "history.csv"]  # no .lock
    model, theta, config = mamlnp.load_checkpoint(out)
    assert theta.tobytes() == r.theta.tobytes() and config["iteration"] == 12
    meta = json.load(open(out / "config.json"))["metadata"]
    for key in ("python", "numpy", "numba", "backend", "threads", "seed", "wall_time_s",
                "git_commit", "cpu_count"):
        assert key in meta
    rows = np.genfromtxt(out / "history.csv", delimiter=",", skip_header=1)
    np.testing.assert_array_equal(rows[:, 0], r.history["iteration"])
    np.testing.assert_array_equal(rows[:, 1:], np.c_[r.history["meta_loss"], r.history["val_mse"]])


def test_result_config_rebuilds_the_run():
    r = mamlnp.meta_train(**TINY)
    again = mamlnp.meta_train(r.config, progress=False)
    assert again.theta.tobytes() == r.theta.tobytes()


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0.0), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(beta=0.0), "beta"),
    (dict(inner_steps=-1), "inner_steps"), (dict(method="protonet"), "method"),
    (dict(hidden=[40, 0]), "hidden"), (dict(backend="cuda"), "backend"),
    (dict(activation="sigmoid"), "activation"), (dict(alpha="0.1"), "alpha"),
    (dict(lr=0.1), "unknown key"), (dict(shots=0), "shots"),
])
def test_bad_input_fails_before_training(tmp_path, kwargs, match):
    calls = []
    with pytest.raises(InputError, match=match):
        mamlnp.meta_train(out=tmp_path / "run", callback=calls.append, **{**TINY, **kwargs})
    assert calls == [] and not (tmp_path / "run").exists()


def test_unwritable_out_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    calls = []
    with pytest.raises(InputError, match="out: cannot write the run directory"):
        mamlnp.meta_train(out=tmp_path / "file" / "run", callback=calls.append, **TINY)
    assert calls == []


def test_existing_run_is_not_overwritten(tmp_path):
    mamlnp.meta_train(out=tmp_path, **TINY)
    before = open(tmp_path / "checkpoint.npz", "rb").read()
    with pytest.raises(InputError, match="already holds a run"):
        mamlnp.meta_train(out=tmp_path, seed=1, **TINY)
    assert open(tmp_path / "checkpoint.npz", "rb").read() == before
    r = mamlnp.meta_train(out=tmp_path, seed=1, overwrite=True, **TINY)
    assert mamlnp.load_checkpoint(tmp_path)[1].tobytes() == r.theta.tobytes()


def test_resume_refusals(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.npz to resume"):
        mamlnp.meta_train(out=tmp_path, resume=True, **TINY)
    mamlnp.meta_train(out=tmp_path, **TINY)
    before = open(tmp_path / "checkpoint.npz", "rb").read()
    with pytest.raises(CheckpointError, match="written for model"):
        mamlnp.meta_train(out=tmp_path, resume=True, hidden=[20, 20], **TINY)
    with pytest.raises(CheckpointError, match="written for model"):
        mamlnp.meta_train(out=tmp_path, resume=True, activation="tanh", **TINY)
    with pytest.raises(CheckpointError, match="alpha=0.01 but alpha=0.5"):
        mamlnp.meta_train(out=tmp_path, resume=True, alpha=0.5, **TINY)
    assert open(tmp_path / "checkpoint.npz", "rb").read() == before


@pytest.mark.parametrize("method", V.METHODS)
def test_resume_in_process_gives_the_same_bits(tmp_path, method):
    full = mamlnp.meta_train(method=method, **{**TINY, "iterations": 20}, checkpoint_every=4)
    mamlnp.meta_train(out=tmp_path, method=method, **{**TINY, "iterations": 20},
                      checkpoint_every=4, callback=lambda step: step.iteration == 9)  # stop
    assert mamlnp.load_checkpoint(tmp_path)[2]["iteration"] == 9
    resumed = mamlnp.meta_train(out=tmp_path, resume=True, progress=False)
    assert resumed.config["iteration"] == 20
    assert resumed.theta.tobytes() == full.theta.tobytes()
    assert all(np.array_equal(full.history[k], resumed.history[k]) for k in full.history)
    for g in full.params:                                         # Meta-SGD's α too
        assert resumed.params[g].tobytes() == full.params[g].tobytes()


@pytest.fixture
def python_sigint():
    """SIGINT handled by Python's default (KeyboardInterrupt) during the test, as in a
    terminal; a test run started in the background of a shell without job control inherits
    SIGINT ignored. The handler found is put back afterwards."""
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, found)


def test_ctrl_c_checkpoints_and_raises_training_interrupted(tmp_path, python_sigint):
    full = mamlnp.meta_train(**TINY)

    def ctrl_c(step):
        if step.iteration == 5:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="interrupted at iteration 5;.*--resume") as e:
        mamlnp.meta_train(out=tmp_path, callback=ctrl_c, **TINY)
    assert isinstance(e.value, KeyboardInterrupt) and e.value.result.interrupted
    assert e.value.result.config["iteration"] == 5
    assert mamlnp.load_checkpoint(tmp_path)[2]["iteration"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # restored
    resumed = mamlnp.meta_train(out=tmp_path, resume=True, progress=False)
    assert resumed.theta.tobytes() == full.theta.tobytes()


def test_second_ctrl_c_interrupts_at_once(tmp_path, python_sigint):
    def ctrl_c_twice(step):
        if step.iteration == 7:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as e:
        mamlnp.meta_train(out=tmp_path, checkpoint_every=2, callback=ctrl_c_twice, **TINY)
    assert not isinstance(e.value, TrainingInterrupted)
    assert mamlnp.load_checkpoint(tmp_path)[2]["iteration"] == 6   # the last good one


def test_alpha_known_to_diverge():
    with pytest.raises(DivergenceError, match=r"iteration 1: .*alpha \(--alpha, now 10.0\)") as e:
        mamlnp.meta_train(alpha=10.0, inner_steps=5, **TINY)
    assert e.value.iteration == 1 and not e.value.loss <= LOSS_LIMIT     # NaN, inf or huge
    print(e.value)


def fail_after(monkeypatch, n, value):
    """Make MAML's step return ``value`` as its meta-loss from call n+1 on."""
    calls, step = [0], V.MAML.step

    def patched(self, *args):
        calls[0] += 1
        loss, grads = step(self, *args)
        return (value if calls[0] > n else loss), grads
    monkeypatch.setattr(V.MAML, "step", patched)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    fail_after(monkeypatch, 10, float("nan"))
    with pytest.raises(DivergenceError, match=r"iteration 11: the meta-loss is nan.*"
                                              r"last good checkpoint \(iteration 8\)"):
        mamlnp.meta_train(out=tmp_path, checkpoint_every=4, **{**TINY, "iterations": 30})
    model, theta, config = mamlnp.load_checkpoint(tmp_path)
    assert config["iteration"] == 8 and np.all(np.isfinite(theta))
    monkeypatch.undo()
    ref = mamlnp.meta_train(**{**TINY, "iterations": 8})
    assert theta.tobytes() == ref.theta.tobytes()


def test_nan_gradient_is_divergence(monkeypatch):
    step = V.MAML.step
    monkeypatch.setattr(V.MAML, "step", lambda self, *a: (1.0, {"theta": step(self, *a)[1]["theta"] * np.nan}))
    with pytest.raises(DivergenceError, match="meta-gradient w.r.t. theta holds NaN"):
        mamlnp.meta_train(**TINY)


def test_explosion_relative_to_the_running_median(monkeypatch):
    fail_after(monkeypatch, 150, 5e3)                 # ~4 before, then > 1e3 x the median
    with pytest.raises(DivergenceError, match=r"iteration 151: .* median"):
        mamlnp.meta_train(**{**TINY, "iterations": 200, "meta_batch": 1, "eval_every": 1000})


def test_callback_sees_every_iteration():
    seen = []
    mamlnp.meta_train(callback=lambda s: seen.append((s.iteration, s.meta_loss, s.val_mse,
                                                      s.theta.shape)), **TINY)
    assert [s[0] for s in seen] == list(range(1, 13))
    assert [s[2] is not None for s in seen] == [i % 6 == 0 for i in range(1, 13)]


def test_cli_train(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "sinusoid", "--iterations", "4", "--meta-batch", "2", "--eval-every", "2",
            "--backend", "numpy", "--no-progress", "--out", str(out), "--method", "fomaml",
            "--hidden", "20", "--activation", "tanh", "--seed", "7"]
    assert main(args) == 0
    assert "4 iterations" in capsys.readouterr().out
    model, _, config = mamlnp.load_checkpoint(out)
    assert model.sizes == (1, 20, 1) and config["seed"] == 7 and config["method"] == "fomaml"
    assert main(args) == 2                                         # out holds a run
    assert "already holds a run" in capsys.readouterr().err
    assert main(args[:3] + ["8"] + args[4:] + ["--resume"]) == 0
    assert mamlnp.load_checkpoint(out)[2]["iteration"] == 8


@pytest.mark.parametrize("extra, code, match", [
    (["--alpha", "0"], 2, "alpha"), (["--beta", "-1"], 2, "beta"),
    (["--inner-steps", "-1"], 2, "inner_steps"),
    (["--alpha", "10", "--inner-steps", "5"], 1, "diverged at iteration 1"),
])
def test_cli_errors(tmp_path, capsys, extra, code, match):
    args = ["train", "sinusoid", "--iterations", "3", "--meta-batch", "2", "--no-progress",
            "--backend", "numpy", "--out", str(tmp_path / "r")] + extra
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith("mamlnp train: error: ") and match in err and "Traceback" not in err


def test_resume_removes_temp_files_of_a_killed_writer(tmp_path):
    mamlnp.meta_train(out=tmp_path, **TINY)
    stale = tmp_path / ".checkpoint.npz.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    mamlnp.meta_train(out=tmp_path, resume=True, iterations=14, progress=False)
    assert not stale.exists() and mamlnp.load_checkpoint(tmp_path)[2]["iteration"] == 14


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(DivergenceError, match="no checkpoint had been written"):
        mamlnp.meta_train(out=tmp_path, alpha=10.0, inner_steps=5, **TINY)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_unchecked_sampler_draws_the_same_bits_as_the_checked_one():
    family = mamlnp.SinusoidTasks()
    fast, ref = TR.sample_batch(family, np.random.default_rng(9), 4, 3, 5), \
        family.sample(np.random.default_rng(9), 4, 3, 5)
    for name in ("x_support", "y_support", "x_query", "y_query"):
        a, b = getattr(fast, name), getattr(ref, name)
        assert a.shape == b.shape and a.flags.c_contiguous and a.tobytes() == b.tobytes()


def test_two_runs_cannot_write_one_directory(tmp_path):
    errors = []

    def second_run(step):
        if step.iteration == 2:
            with pytest.raises(InputError, match="another process is training") as e:
                mamlnp.meta_train(out=tmp_path, resume=True, progress=False)
            errors.append(str(e.value))
    mamlnp.meta_train(out=tmp_path, checkpoint_every=1, callback=second_run, **TINY)
    assert len(errors) == 1
    mamlnp.meta_train(out=tmp_path, resume=True, iterations=13, progress=False)   # lock freed


def test_resume_to_fewer_iterations_is_refused_and_a_finished_run_is_left_alone(tmp_path):
    mamlnp.meta_train(out=tmp_path, **TINY)
    before = open(tmp_path / "checkpoint.npz", "rb").read()
    with pytest.raises(InputError, match="has done 12 iterations, got iterations=5"):
        mamlnp.meta_train(out=tmp_path, resume=True, iterations=5, progress=False)
    r = mamlnp.meta_train(out=tmp_path, resume=True, progress=False)        # nothing to do
    assert r.config["iteration"] == 12 and list(r.history["iteration"]) == [6, 12]
    assert open(tmp_path / "checkpoint.npz", "rb").read() == before


def test_resume_of_a_checkpoint_without_trainer_state_is_refused(tmp_path):
    model = mamlnp.MLP((1, 40, 40, 1))
    cfg = TR.make_config(iterations=12, backend="numpy")
    C.save_checkpoint(tmp_path, cfg, {"theta": model.init(0)})
    with pytest.raises(CheckpointError, match="lacks optimizer state 'theta'"):
        mamlnp.meta_train(out=tmp_path, resume=True, progress=False)


def test_cli_disk_full_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    args = ["train", "sinusoid", "--iterations", "6", "--meta-batch", "2", "--no-progress",
            "--backend", "numpy", "--checkpoint-every", "2", "--out", str(out)]
    write, calls = C.atomic_write, [0]

    def fill_disk_after_the_first_checkpoint(path, w):
        calls[0] += 1
        if calls[0] > 3:                     # checkpoint.npz, history.csv, config.json once
            raise OSError(28, "No space left on device")
        write(path, w)
    from mamlnp.run import rundir
    for module in (C, rundir):                   # the checkpoint; config.json, history.csv
        monkeypatch.setattr(module, "atomic_write", fill_disk_after_the_first_checkpoint)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "intact" in err and "Traceback" not in err
    monkeypatch.undo()
    assert mamlnp.load_checkpoint(out)[2]["iteration"] == 2
