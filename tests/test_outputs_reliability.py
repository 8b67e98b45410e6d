"""Every output of every command: atomic, never through a link, the previous version kept whole on
a full disk; checkpoint fields required or refused; callbacks that tamper with the trainer's state.

Dimension legend: P parameters (1-8-1 tanh: P = 25; 784-16-5 batch norm for Omniglot).

Writers covered: ``evaluate`` of a sinusoid run (results.csv/json, figure2/3.png), of an Omniglot
run (omniglot_results.csv/json, omniglot_accuracy.png), ``reproduce omniglot``'s results.md,
``--overwrite``'s removal of the old eval/; the checkpoint's own files are covered by
tests/test_reliability.py, the Omniglot cache by tests/test_data_reader.py. A full disk is an
OSError(ENOSPC) injected into fsync (mamlnp.safeio), at each write in turn.
"""
import errno
import json
import os
import stat

import numpy as np
import pytest

import mamlnp
from mamlnp import CheckpointError, InputError, MLP
from mamlnp import safeio
from mamlnp.run import classify_report as CR
from mamlnp.run.cli import main

from test_crafted_checkpoints import arrays_of, craft, edit_config
from test_omniglot_train import SMALL_RUN, data_dir  # noqa: F401  (the synthetic data fixture)

RUN = dict(hidden=[8], activation="tanh", iterations=4, meta_batch=2, eval_every=2,
           checkpoint_every=2, val_tasks=3, val_query=5, backend="numpy", progress=False)
EVAL = ["--backend", "numpy", "--max-steps", "2"]


def files_of(folder):
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, p))}


def fail_at(monkeypatch, k):
    """fsync of a file (not of a directory) raises ENOSPC at its k-th call (0-based)."""
    calls = [0]
    real = os.fsync

    def fsync(fd):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return real(fd)
        calls[0] += 1
        if calls[0] - 1 == k:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(safeio.os, "fsync", fsync)


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sine")
    mamlnp.meta_train(out=d, **RUN)
    return d


@pytest.fixture(scope="module")
def omni_run(data_dir, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("omni") / "run"
    mamlnp.meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                      out=str(d), **SMALL_RUN)
    return d


# --- full disk: every file whole, old or new, results never half old ------------------------------

@pytest.mark.parametrize("k", [0, 1, 2])
def test_sinusoid_evaluate_on_a_full_disk_keeps_every_previous_file(sine_run, tmp_path, k,
                                                                    monkeypatch, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(sine_run), "--out", str(out), *EVAL, "--shots", "5"]) == 0
    old = files_of(out)
    assert set(old) == {"results.csv", "results.json", "figure2.png", "figure3.png"}
    fail_at(monkeypatch, k)            # 0, 1: results.csv, results.json; 2: figure2
    capsys.readouterr()
    assert main(["evaluate", str(sine_run), "--out", str(out), *EVAL, "--shots", "5",
                 "--alpha", "0.02"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "previous version" in err
    now = files_of(out)
    assert set(now) == set(old)                                       # no temp file left
    results_new = now["results.json"] != old["results.json"]
    assert results_new == (k == 2) and (now["results.csv"] != old["results.csv"]) == results_new
    assert now["figure2.png"] == old["figure2.png"] and now["figure3.png"] == old["figure3.png"]


def test_omniglot_evaluate_on_a_full_disk_keeps_every_previous_file(omni_run, tmp_path,
                                                                    monkeypatch, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(omni_run), "--out", str(out), *EVAL]) == 0
    old = files_of(out)
    assert set(old) == {"omniglot_results.csv", "omniglot_results.json", "omniglot_accuracy.png"}
    for k in range(3):
        monkeypatch.undo()
        fail_at(monkeypatch, k)
        assert main(["evaluate", str(omni_run), "--out", str(out), *EVAL, "--alpha", "0.5"]) == 1
        assert files_of(out) == old                  # all three, or none
    assert "No space left on device" in capsys.readouterr().err


def test_reproduce_omniglot_report_on_a_full_disk_and_through_a_link(omni_run, tmp_path,
                                                                     monkeypatch):
    model, theta, config = mamlnp.load_checkpoint(omni_run)
    r = CR.evaluate_run(model, theta, config, max_steps=3, episodes=4, backend="numpy")
    r.update(eval_seconds=1.0, iterations=2)
    path = CR.write_report(str(tmp_path), [r], {1: 1.0}, quick=False)
    old = open(path, "rb").read()
    fail_at(monkeypatch, 0)
    with pytest.raises(OSError, match="No space left"):
        CR.write_report(str(tmp_path), [r], {1: 2.0}, quick=True)
    assert open(path, "rb").read() == old
    monkeypatch.undo()
    victim = tmp_path / "victim.md"
    victim.write_text("keep")
    os.unlink(path)
    os.symlink(victim, path)
    CR.write_report(str(tmp_path), [r], {1: 2.0}, quick=True)
    assert victim.read_text() == "keep" and not os.path.islink(path)
    assert "NOT a reproduction" in open(path).read()


# --- planted links ------------------------------------------------------------------------------

def test_omniglot_evaluate_replaces_planted_links_and_refuses_a_linked_eval(omni_run, tmp_path,
                                                                           capsys):
    out = omni_run / "eval"
    out.mkdir(exist_ok=True)
    victims = {}
    for name in ("omniglot_results.csv", "omniglot_results.json", "omniglot_accuracy.png"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_text("keep")
        if os.path.lexists(out / name):
            os.unlink(out / name)
        os.symlink(victims[name], out / name)
    assert main(["evaluate", str(omni_run), *EVAL]) == 0
    for name, victim in victims.items():
        assert victim.read_text() == "keep" and not os.path.islink(out / name)
    json.loads((out / "omniglot_results.json").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    os.symlink(elsewhere, linked)
    capsys.readouterr()
    assert main(["evaluate", str(omni_run), *EVAL, "--out", str(linked)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err and os.listdir(elsewhere) == []


def test_overwrite_removes_the_replaced_runs_eval_without_following_a_link(tmp_path, capsys):
    run = tmp_path / "run"
    mamlnp.meta_train(out=run, **RUN)
    assert main(["evaluate", str(run), *EVAL, "--shots", "5", "--no-plots"]) == 0
    assert (run / "eval" / "results.csv").exists()
    mamlnp.meta_train(out=run, overwrite=True, **RUN)
    assert not (run / "eval").exists()                    # not the old run's results
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "results.csv").write_text("keep")
    os.symlink(kept, run / "eval")
    mamlnp.meta_train(out=run, overwrite=True, **RUN)
    assert not os.path.lexists(run / "eval") and (kept / "results.csv").read_text() == "keep"


# --- callbacks ------------------------------------------------------------------------------------

TAMPER = {
    "shorter θ": (lambda s: s.params.__setitem__("theta", s.params["theta"][:-3]),
                  r"shape \(22,\)"),
    "longer θ": (lambda s: s.params.__setitem__("theta", np.zeros(1000)), r"shape \(1000,\)"),
    "float32 θ": (lambda s: s.params.__setitem__("theta", s.params["theta"].astype(np.float32)),
                  "float32"),
    "a list": (lambda s: s.params.__setitem__("theta", list(s.params["theta"])), "as list"),
    "NaN in place": (lambda s: s.params["theta"].__setitem__(0, np.nan), "NaN"),
    "strided": (lambda s: s.params.__setitem__("theta", np.repeat(s.params["theta"], 2)[::2]),
                "not C-contiguous"),
    "θ removed": (lambda s: [s.params.pop("theta")] and None, r"expected the keys \['theta'\]"),
    "an array returned": (lambda s: np.ones(3), "callback: expected a return value"),
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", list(TAMPER))
def test_a_callback_tampering_with_the_state_is_an_input_error(case, backend, tmp_path):
    """Never a kernel reading past θ's end (the issue's heap corruption), never a silent run
    with a θ of another length: an InputError naming θ; the last checkpoint is kept."""
    tamper, fragment = TAMPER[case]
    calls = []

    def callback(step):
        calls.append(step.iteration)
        return tamper(step) if step.iteration == 3 else None
    with pytest.raises(InputError, match=fragment):
        mamlnp.meta_train(out=tmp_path, callback=callback, **dict(RUN, backend=backend))
    assert calls == [1, 2, 3]
    model, theta, config = mamlnp.load_checkpoint(tmp_path)
    assert config["iteration"] == 2 and theta.shape == (25,)


def test_a_callback_may_change_theta_in_place():
    def halve(step):
        step.params["theta"][:] *= 0.5
    r = mamlnp.meta_train(callback=halve, **RUN)
    assert r.theta.shape == (25,) and np.isfinite(r.theta).all()


# --- checkpoint fields: required by the method, or refused ----------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for method in ("maml", "metasgd", "mamlpp"):
        d = tmp_path_factory.mktemp(method)
        mamlnp.meta_train(out=d, method=method, **RUN)
        out[method] = (d / "checkpoint.npz").read_bytes()
    return out


@pytest.mark.parametrize("method,change,fragment", [
    ("maml", lambda a: {**a, "param.alpha": np.full(25, 0.01)}, "param.alpha: method 'maml' "
                                                                "learns no 'alpha'"),
    ("maml", lambda a: {**a, "param.lslr": np.full(2, 0.01)}, "param.lslr: method 'maml'"),
    ("maml", lambda a: {**a, "optim.alpha.lr": np.float64(1e-3)}, "optim.alpha: method 'maml'"),
    ("metasgd", lambda a: {k: v for k, v in a.items() if k != "param.alpha"},
     "param.alpha: missing"),
    ("mamlpp", lambda a: edit_config(a, inner_steps=0), "inner_steps: expected at least 1"),
    ("maml", lambda a: edit_config(a, ways=5), "ways: expected only in an Omniglot run"),
    ("maml", lambda a: edit_config(a, lam=1.0), r"lam: expected only in a config of method "
                                                r"\['imaml'\]"),
    ("maml", lambda a: edit_config(a, model={"sizes": [1, 1], "activation": "relu",
                                             "loss": "mse", "batch_norm": True}),
     "batch_norm: expected at least one hidden layer"),
    ("maml", lambda a: edit_config(a, model={"sizes": [1, 8, 1], "activation": "tanh",
                                             "loss": "mse", "batch_norm": True,
                                             "bn_eps": 5e-324}), "bn_eps: expected at least"),
])
def test_a_field_the_method_does_not_have_or_lacks_is_refused(saved, tmp_path, method, change,
                                                              fragment):
    path = tmp_path / "crafted.npz"
    craft(path, change(arrays_of(saved[method])))
    with pytest.raises(CheckpointError, match=fragment):
        mamlnp.load_checkpoint(path)


@pytest.mark.parametrize("change,fragment", [
    (dict(shots=None), "shots: missing"),
    (dict(data_dir=["a", "b"]), "data_dir: expected a folder"),
    (dict(ways=1), "config.model: expected input dim 784, output dim 1"),
    (dict(query=20), r"shots, query: expected shots \+ query <= 20"),
])
def test_an_omniglot_checkpoints_keys_are_required_and_checked(omni_run, tmp_path, change,
                                                               fragment, capsys):
    path = tmp_path / "crafted.npz"
    arrays = arrays_of((omni_run / "checkpoint.npz").read_bytes())
    craft(path, edit_config(arrays, **change))
    with pytest.raises(CheckpointError, match=fragment):
        mamlnp.load_checkpoint(path)
    assert main(["evaluate", str(path), *EVAL]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_api_refuses_batch_norm_without_hidden_layers_and_subnormal_eps():
    with pytest.raises(InputError, match="batch_norm: expected at least one hidden layer"):
        MLP((784, 5), "relu", "softmax_xent", batch_norm=True)
    with pytest.raises(InputError, match="bn_eps: expected at least 1e-12"):
        MLP((784, 8, 5), "relu", "softmax_xent", batch_norm=True, bn_eps=5e-324)


def test_a_fifo_planted_as_config_json_is_never_waited_on(tmp_path):
    """reproduce reads a run's config.json for its messages and report: a FIFO there (or a
    link to /dev/zero) is skipped, not read."""
    from mamlnp.run import rundir
    os.mkfifo(tmp_path / "config.json")
    assert rundir.config_value(tmp_path, "iteration") is None
    assert rundir.training_seconds(tmp_path, 7.0) == 7.0
    os.unlink(tmp_path / "config.json")
    os.symlink("/dev/zero", tmp_path / "config.json")
    assert rundir.config_value(tmp_path, "iteration") is None
    os.unlink(tmp_path / "config.json")
    (tmp_path / "config.json").write_text('{"iteration": 5, "metadata": {"wall_time_s": 2.5}}')
    assert rundir.config_value(tmp_path, "iteration") == 5
    assert rundir.training_seconds(tmp_path, 7.0) == 2.5
