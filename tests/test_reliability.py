"""Issue 12: divergence of the saved state, writes through symlinks, full disks, absurd sizes,
O(P) memory of the NumPy reference, the API's silent and raw cases, no CLI traceback.

Runs are tiny (NumPy backend, a few tasks) to stay fast. Dimension legend: P parameters.
"""
import os
import tracemalloc

import numpy as np
import pytest

import mamlnp
from mamlnp import CheckpointError, DivergenceError, InputError
from mamlnp.meta import maml
from mamlnp.run import checkpoint as C
from mamlnp.run import train as TR
from mamlnp.run.cli import main

FAST = ["--backend", "numpy", "--no-progress"]
TINY = dict(iterations=8, meta_batch=2, eval_every=4, val_tasks=3, val_query=5,
            backend="numpy", progress=False)


def cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, err.strip()


# ---- 3 divergence: the saved state itself is checked ------------------------------------


def test_a_diverged_state_is_never_saved_and_the_message_is_true(tmp_path, capsys):
    out = tmp_path / "div"
    code, err = cli(["train", "sinusoid", "--beta", "10", "--checkpoint-every", "1",
                     "--iterations", "20", "--out", out, *FAST], capsys)
    print(err)
    assert code == 1 and "diverged at iteration 1" in err and "no checkpoint had been" in err
    assert not (out / "checkpoint.npz").exists()


def test_a_run_whose_last_step_diverges_exits_1_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "last"
    code, err = cli(["train", "sinusoid", "--beta", "10", "--iterations", "1", "--out", out,
                     *FAST], capsys)
    assert code == 1 and "diverged at iteration 1" in err
    assert not (out / "checkpoint.npz").exists()
    with pytest.raises(DivergenceError, match="iteration 1: on the validation tasks"):
        mamlnp.meta_train(beta=10.0, **{**TINY, "iterations": 1})          # no out either


def test_last_good_checkpoint_is_one_that_was_checked(tmp_path, monkeypatch):
    real, blown = TR.validation_mse, [False]
    monkeypatch.setattr(TR, "validation_mse",
                        lambda *a: 1e9 if blown[0] else real(*a))

    def blow_up_at_5(step):
        blown[0] = blown[0] or step.iteration == 5
    with pytest.raises(DivergenceError, match=r"iteration 6: on the validation tasks, the "
                       r"meta-loss 1e\+09 exceeds.*last good checkpoint \(iteration 4\)"):
        mamlnp.meta_train(out=tmp_path, checkpoint_every=2, callback=blow_up_at_5, **TINY)
    assert mamlnp.load_checkpoint(tmp_path)[2]["iteration"] == 4


def test_resuming_a_diverged_state_is_refused(tmp_path, monkeypatch):
    mamlnp.meta_train(out=tmp_path, **{**TINY, "iterations": 4})
    monkeypatch.setattr(TR, "validation_mse", lambda *a: float("nan"))
    with pytest.raises(CheckpointError, match="holds a diverged state"):
        mamlnp.meta_train(out=tmp_path, resume=True, iterations=6, progress=False)


# ---- 4 / 6 writes: atomic, never through a link, the path named ---------------------------


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    mamlnp.meta_train(out=out, **{**TINY, "iterations": 2})
    return out


def test_evaluate_replaces_planted_links_and_never_writes_through_them(run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "eval").mkdir()
    for name in ("results.csv", "results.json", "figure2.png", "figure3.png"):
        os.symlink(victim, run / "eval" / name)
    code, _ = cli(["evaluate", run, "--max-steps", "1", "--backend", "numpy"], capsys)
    assert code == 0 and victim.read_text() == "precious"
    for name in ("results.csv", "results.json", "figure2.png", "figure3.png"):
        assert not os.path.islink(run / "eval" / name) and (run / "eval" / name).stat().st_size


def test_a_planted_output_dir_link_and_lock_link_are_refused(run, tmp_path, capsys):
    os.symlink(tmp_path / "elsewhere", run / "eval")
    code, err = cli(["evaluate", run, "--max-steps", "1", "--no-plots", "--backend", "numpy"],
                    capsys)
    assert code == 2 and "is a symbolic link" in err and not (tmp_path / "elsewhere").exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    os.symlink(tmp_path / "target", fresh / ".lock")
    code, err = cli(["train", "sinusoid", "--iterations", "1", "--out", fresh, *FAST], capsys)
    assert code == 2 and ".lock" in err and not (tmp_path / "target").exists()
    os.unlink(fresh / ".lock")
    os.mkfifo(fresh / ".lock")                                  # no reader: must not block
    code, err = cli(["train", "sinusoid", "--iterations", "1", "--out", fresh, *FAST], capsys)
    assert code == 2 and ".lock" in err


def test_reevaluating_onto_a_full_disk_keeps_the_results_and_names_the_path(run, capsys,
                                                                            monkeypatch):
    args = ["evaluate", run, "--max-steps", "1", "--no-plots", "--backend", "numpy"]
    assert cli(args, capsys)[0] == 0
    before = {n: (run / "eval" / n).read_bytes() for n in ("results.csv", "results.json")}

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(C.os, "fsync", full)
    code, err = cli(args + ["--alpha", "0.02"], capsys)
    monkeypatch.undo()
    assert code == 1 and "No space left on device" in err and "results.csv" in err, err
    assert {n: (run / "eval" / n).read_bytes() for n in before} == before
    assert sorted(os.listdir(run / "eval")) == ["results.csv", "results.json"]   # no temp


def test_a_disk_full_before_the_first_save_does_not_claim_a_checkpoint(tmp_path, capsys,
                                                                        monkeypatch):
    def full(path, write):
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(C, "atomic_write", full)
    code, err = cli(["train", "sinusoid", "--iterations", "2", "--meta-batch", "2",
                     "--out", tmp_path / "r", *FAST], capsys)
    assert code == 1 and "no checkpoint of this run had been written" in err
    assert "intact" not in err


# ---- 5 / 6 absurd sizes: InputError before allocating, one line on the CLI ----------------

HUGE = str(2**63 - 1)


@pytest.mark.parametrize("argv, fragment", [
    (["train", "sinusoid", "--hidden", str(2**62)], "hidden[0]"),
    (["train", "sinusoid", "--hidden", "100000", "100000"], "sizes"),
    (["train", "sinusoid", "--inner-steps", HUGE], "inner_steps"),
    (["train", "sinusoid", "--inner-steps", "2000000000"], "inner_steps"),
    (["train", "sinusoid", "--query", HUGE], "query"),
    (["train", "sinusoid", "--meta-batch", "2000000000"], "meta_batch"),
    (["train", "sinusoid", "--resume", "--overwrite"], "resume, overwrite"),
])
def test_train_absurd_sizes_fail_at_once(argv, fragment, tmp_path, capsys):
    code, err = cli(argv + ["--out", tmp_path / "r", *FAST], capsys)
    print(err)
    assert code == 2 and err.startswith(f"mamlnp train: error: {fragment}") and "\n" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--max-steps", HUGE], "max_steps"), (["--max-steps", "2000000000"], "max_steps"),
    (["--shots", HUGE], "shots[0]")])
def test_evaluate_absurd_sizes_fail_at_once(run, extra, fragment, capsys):
    code, err = cli(["evaluate", run, "--backend", "numpy", *extra], capsys)
    assert code == 2 and err.startswith(f"mamlnp evaluate: error: {fragment}") and "\n" not in err


def test_an_unexpected_exception_is_one_line_with_exit_code_3(run, capsys, monkeypatch):
    from mamlnp.run import evaluate as E

    def bug(*a, **k):
        raise RuntimeError("a bug")
    monkeypatch.setattr(E, "load_and_evaluate", bug)
    code, err = cli(["evaluate", run], capsys)
    assert code == 3 and err == ("mamlnp evaluate: error: internal error (RuntimeError: a bug); "
                                 "this is a bug in mamlnp, please report it with the command")


# ---- 6 the NumPy reference keeps one iterate where only θ_s is needed ---------------------


def peak_bytes(f):
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_numpy_adapt_meta_loss_and_curve_are_o_of_p_in_memory():
    model = mamlnp.MLP((1, 40, 40, 1))
    theta, s = model.init(0), 600                                    # s·P·8 = 8.5 MB
    batch = mamlnp.SinusoidTasks().sample(0, 2, 5, 5)
    xs, ys = batch.x_support[0], batch.y_support[0]
    limit = 60 * model.num_params * 8                                 # 0.85 MB
    with np.errstate(all="ignore"):
        for name, f in [
                ("adapt", lambda: maml.adapt(model, theta, xs, ys, 1e-3, s, backend="numpy")),
                ("meta_loss", lambda: maml.meta_loss(model, theta, batch, 1e-3, s)),
                ("first-order", lambda: maml.meta_gradient(model, theta, batch, 1e-3, s, True,
                                                           backend="numpy")),
                ("curve", lambda: mamlnp.adaptation_curve(model, theta, batch, 1e-3, s,
                                                          backend="numpy"))]:
            peak = peak_bytes(f)
            print(f"{name}: peak {peak / 1e6:.2f} MB for s = {s} (s·P·8 = {s * 1761 * 8 / 1e6:.1f} MB)")
            assert peak < limit, (name, peak)
        second_order = peak_bytes(lambda: maml.meta_gradient(model, theta, batch, 1e-3, s,
                                                             backend="numpy"))
    assert second_order > s * model.num_params * 8                     # it needs them


def test_numpy_paths_give_the_same_bits_as_the_iterates():
    model = mamlnp.MLP((1, 8, 8, 1))
    theta = model.init(1)
    batch = mamlnp.SinusoidTasks().sample(1, 3, 4, 5)
    xs, ys = batch.x_support[0], batch.y_support[0]
    thetas = maml.inner_loop(model, theta, xs, ys, 0.01, 5)
    assert maml.adapt(model, theta, xs, ys, 0.01, 5, backend="numpy").tobytes() == \
        thetas[-1].tobytes()
    curve = mamlnp.adaptation_curve(model, theta, batch, 0.01, 5, backend="numpy")
    assert curve[0].tolist() == [model.loss(t, *batch.task(0)[2:]) for t in thetas]


# ---- 7 the API cases: the project's errors, the silent ones refused ------------------------

_M = mamlnp.MLP((1, 8, 1))
_B = mamlnp.SinusoidTasks().sample(0, 3, 4, 4)
_T = _M.init(0)


@pytest.mark.parametrize("call, fragment", [
    (lambda: maml.adapt(None, _T, _B.x_support[0], _B.y_support[0], 0.01, 1), "model:"),
    (lambda: maml.meta_gradient("mlp", _T, _B, 0.01, 1), "model:"),
    (lambda: mamlnp.adaptation_curve(None, _T, _B, 0.01, 1), "model:"),
    (lambda: _B.task(3), "t: expected a task index in [0, 3)"),
    (lambda: _B.task(1.5), "t: expected a task index"),
    (lambda: _B.task(True), "t: expected a task index"),
    (lambda: mamlnp.SinusoidTasks(phase_sign=np.array([1, 1])), "phase_sign"),
    (lambda: mamlnp.SinusoidTasks(x_range=(-1e308, 1e308)), "x_range: expected a finite width"),
    (lambda: C.save_checkpoint("/nonexistent-dir", None, {"theta": _T}), "config"),
    (lambda: C.save_checkpoint("/nonexistent-dir", {1, 2}, {"theta": _T}), "config"),
    (lambda: C.save_checkpoint("/x", {"model": _M.config()}, {"theta": _T}, history="abc"),
     "history"),
    (lambda: C.save_checkpoint("/x", {"model": _M.config()}, {"theta": _T},
                               history=np.zeros((2, 3)), iteration=1), "history"),
    (lambda: C.save_checkpoint("/x", {"model": _M.config()}, {"theta": _T}, rng_state=object()),
     "rng_state"),
    (lambda: C.save_checkpoint("/x", {"model": _M.config()}, {"theta": _T},
                               rng_state={"bit_generator": "MT19937"}), "rng_state"),
    (lambda: C.save_checkpoint("/x", {"model": _M.config()}, {"theta": np.full(25, np.nan)}),
     "theta"),
    (lambda: C.save_checkpoint("/x", {"model": _M.config()}, {"theta": _T,
                                                              "alpha": np.ones(3)}),
     "param.alpha"),
    (lambda: C.save_checkpoint("/x", {}, {"theta": _T}), "config.model"),
    (lambda: mamlnp.meta_train(config={"model": {"sizes": [2, 8, 1]}}), "config.model"),
    (lambda: mamlnp.meta_train(config={"model": {"sizes": [1, 8, 1], "loss": "softmax_xent"}}),
     "config.model"),
    (lambda: mamlnp.meta_train(config={"model": "1-8-1"}), "config.model"),
    (lambda: mamlnp.MLP((1, 10**6, 10**6, 1)), "sizes"),
    (lambda: mamlnp.SinusoidTasks().sample(0, 2**31 - 1, 2**31 - 1, 1), "num_tasks"),
    (lambda: maml.adapt(_M, _T, _B.x_support[0], _B.y_support[0], 0.01, 10**9), "inner_steps"),
    (lambda: maml.adapt(_M, _T, _B.x_support[0], _B.y_support[0], 0.01, 2**40), "inner_steps"),
    (lambda: maml.meta_gradient(_M, _T, _B, 0.01, 10**9, backend="numpy"), "inner_steps"),
    (lambda: mamlnp.meta_train(resume="no", iterations=1), "resume"),
    (lambda: mamlnp.meta_train(overwrite=1, iterations=1), "overwrite"),
    (lambda: mamlnp.EvaluationPool(mamlnp.SinusoidTasks(), 3, shots=(1, 5)).batch(True),
     "shots"),
    (lambda: _M.init(0, scheme="normal", scale=1e308), "scale"),
    (lambda: mamlnp.EvaluationPool(mamlnp.SinusoidTasks(), 2**31 - 1, query=2**31 - 1),
     "num_tasks"),
    (lambda: mamlnp.MLP((1, 10**5, 1)).forward(np.zeros(3 * 10**5 + 1), np.zeros((10**6, 1))),
     "x: expected a size whose arrays fit in memory"),
])
def test_api_cases_get_the_projects_errors(call, fragment):
    with pytest.raises(InputError) as e:
        call()
    print(e.value)
    assert fragment in str(e.value)


def test_seed_none_is_fresh_entropy_recorded_so_the_run_resumes(tmp_path):
    a = mamlnp.meta_train(seed=None, **{**TINY, "iterations": 2})
    b = mamlnp.meta_train(seed=None, out=tmp_path, **{**TINY, "iterations": 2})
    assert isinstance(a.config["seed"], int) and a.config["seed"] != b.config["seed"]
    again = mamlnp.meta_train(seed=b.config["seed"], **{**TINY, "iterations": 2})
    assert again.theta.tobytes() == b.theta.tobytes()
    r = mamlnp.meta_train(out=tmp_path, resume=True, iterations=3, progress=False)
    assert r.config["seed"] == b.config["seed"]


def test_learned_alpha_of_the_wrong_length_and_nan_theta_are_refused_at_load(tmp_path):
    import json
    model = mamlnp.MLP((1, 8, 1))
    base = {"format_version": np.int64(1), "iteration": np.int64(0), "history": np.zeros((0, 3)),
            "config_json": np.array(json.dumps({"model": model.config(), "alpha": 0.01,
                                                "method": "metasgd"})),
            "rng_state_json": np.array("null"), "param.theta": model.init(0)}
    for change, field in (({"param.alpha": np.ones(7)}, "param.alpha"),
                          ({"param.theta": np.full(25, np.nan)}, "param.theta")):
        arrays = {**base, **change}
        np.savez(tmp_path / "checkpoint.npz", checksum=np.array(C.checksum(arrays)), **arrays)
        with pytest.raises(CheckpointError, match=field):
            mamlnp.load_checkpoint(tmp_path)


def test_the_fused_kernel_is_never_called_with_another_length():
    from mamlnp.meta.optim import Adam
    from mamlnp.meta.variants import get_method
    from mamlnp.run import trainstep as TS
    from mamlnp.run.runconfig import make_config
    from mamlnp.run.runguard import DivergenceGuard
    cfg = make_config(backend="numba", meta_batch=3)
    model, opt = mamlnp.MLP(**cfg["model"]), Adam(1e-3)
    fused = TS.fused_step(model, get_method("maml"), cfg, mamlnp.SinusoidTasks(), {"theta": opt})
    if fused is None:
        pytest.skip("no fused path on this machine (the kernel's sine differs from NumPy's)")
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=r"expected \(1761,\)"):
        fused(rng, {"theta": np.zeros(1762)}, opt, DivergenceGuard(), 1, None)
    opt.m, opt.v, opt.t = np.zeros(1762), np.zeros(1762), 1
    with pytest.raises(InputError, match=r"expected \(1761,\)"):
        fused(rng, {"theta": model.init(0)}, opt, DivergenceGuard(), 2, None)
