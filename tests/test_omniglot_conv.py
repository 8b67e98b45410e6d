"""Omniglot runs of the ConvNet (``model="conv"``, ``--model conv``): the protocol's defaults,
training, checkpoint and resume to the same bits, evaluation, reproduce, the refusals.

Dimension legend: T tasks, N ways, K shots, P parameters, B conv blocks.

The runs use test_omniglot_train.py's synthetic Omniglot (30 characters) and a ConvNet of two
blocks of 4 filters (P = 4·9 + 12 + 4·4·9 + 12 + 4·5 + 5 = 229), a few iterations each.
"""
import json
import os

import numpy as np
import pytest

from mamlnp import ConvNet, InputError, load_checkpoint, meta_train
from mamlnp.errors import CheckpointError
from mamlnp.run import classify_report as CR
from mamlnp.run import runconfig as RC
from mamlnp.run import checkpoint as C
from mamlnp.run.checkpoint import read_checkpoint
from mamlnp.run.cli import main

from test_omniglot_train import data_dir  # noqa: F401  (the synthetic Omniglot fixture)

TINY = dict(model="conv", channels=[4, 4], meta_batch=2, val_tasks=3, eval_every=2)


def test_the_conv_protocol_defaults():
    five = RC.make_config(task="omniglot", model="conv")
    twenty = RC.make_config(task="omniglot", model="conv", ways=20)
    assert five["model"] == {"kind": "conv", "in_shape": [1, 28, 28], "channels": [64] * 4,
                             "ways": 5, "kernel": 3, "stride": 2, "pad": 1, "pool": False,
                             "head": "mean", "activation": "relu", "loss": "softmax_xent",
                             "bn_eps": 1e-3}
    assert (five["meta_batch"], five["inner_steps"], five["alpha"]) == (32, 1, 0.4 * 5)
    assert (twenty["meta_batch"], twenty["inner_steps"], twenty["alpha"]) == (16, 5, 0.1 * 20)
    assert five["beta"] == 1e-3 and five["iterations"] == 60000 and five["init"] == "xavier"
    assert "hidden" not in five and not five["first_order"]
    fo = RC.make_config(task="omniglot", model="conv", method="fomaml")
    assert fo["first_order"] and fo["model"] == five["model"]
    assert RC.make_config(five) == five                          # a saved config rebuilds
    assert "kind" not in RC.make_config(task="omniglot")["model"]    # the MLP's is unchanged


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="sinusoid", model="conv"), "applies only to task 'omniglot'"),
    (dict(task="omniglot", model="conv", hidden=[8]), "hidden: does not apply to model 'conv'"),
    (dict(task="omniglot", channels=[8]), "channels: does not apply to model 'mlp'"),
    (dict(task="omniglot", model="conv", init="normal"), "init: expected one of ['xavier']"),
    (dict(task="omniglot", model="conv", method="reptile"), "method: expected one of"),
    (dict(task="omniglot", model="conv", channels=[]), "channels: expected a list"),
    (dict(task="omniglot", model="conv", channels=[4] * 40), "at most 32 conv blocks"),
    (dict(task="omniglot", model="cnn"), "model: expected a network kind"),
])
def test_options_that_do_not_apply_are_refused(kwargs, message):
    with pytest.raises(InputError) as err:
        RC.make_config(**kwargs)
    print(err.value)
    assert message in str(err.value)


def test_the_memory_check_counts_the_conv_workspace():
    """On numba the run's memory check asks the conv kernel set's workspace_bytes."""
    with pytest.raises(InputError) as err:
        RC.make_config(task="omniglot", model="conv", backend="numba", inner_steps=10 ** 5)
    print(err.value)
    assert "inner_steps" in str(err.value) and "compiled kernels' workspace" in str(err.value)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_train_checkpoint_and_resume_to_the_same_bits(data_dir, tmp_path, backend):  # noqa: F811
    whole = meta_train(task="omniglot", data_dir=data_dir, iterations=4, progress=False,
                       out=str(tmp_path / "a"), backend=backend, **TINY)
    assert isinstance(whole.model, ConvNet) and whole.model.channels == (4, 4)
    assert whole.theta.shape == (whole.model.num_params,) == (229,)
    meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
               out=str(tmp_path / "b"), backend=backend, **TINY)
    resumed = meta_train(task="omniglot", data_dir=data_dir, iterations=4, progress=False,
                         out=str(tmp_path / "b"), resume=True, model="conv")
    assert np.array_equal(whole.theta, resumed.theta)               # the same bits
    for name in whole.history:
        assert np.array_equal(whole.history[name], resumed.history[name])
    model, theta, config = load_checkpoint(str(tmp_path / "b"))
    assert isinstance(model, ConvNet) and config["model"]["kind"] == "conv"
    assert np.array_equal(theta, whole.theta) and config["iteration"] == 4
    with pytest.raises(CheckpointError, match="written for model 'conv'"):
        meta_train(task="omniglot", data_dir=data_dir, iterations=6, progress=False,
                   out=str(tmp_path / "b"), resume=True, model="mlp")
    with pytest.raises(CheckpointError, match="conv 4-4 relu"):
        meta_train(task="omniglot", data_dir=data_dir, iterations=6, progress=False,
                   out=str(tmp_path / "b"), resume=True, channels=[4, 8])


def test_numpy_and_numba_train_alike(data_dir, tmp_path):  # noqa: F811
    """The two backends' runs agree to rounding (the kernels match the reference to ~1e-12)."""
    runs = [meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                       backend=b, **TINY) for b in ("numpy", "numba")]
    err = np.max(np.abs(runs[0].theta - runs[1].theta)) / np.max(np.abs(runs[0].theta))
    print(f"numpy vs numba θ after 2 iterations: max relative difference {err:.2e}")
    assert err < 1e-9


def _crafted(tmp_path, data_dir, change):  # noqa: F811
    """A conv run's checkpoint with its config changed by ``change`` and the checksum
    recomputed (it detects corruption, not tampering): what a crafted file can be."""
    run = str(tmp_path / "run")
    meta_train(task="omniglot", data_dir=data_dir, iterations=1, progress=False, out=run,
               backend="numpy", **TINY)
    state = read_checkpoint(run)
    config = json.loads(json.dumps(state["config"]))
    change(config)
    bad = str(tmp_path / "bad.npz")
    arrays = {"format_version": np.int64(C.FORMAT_VERSION),
              "config_json": np.array(json.dumps(config)),
              "rng_state_json": np.array(json.dumps(state["rng_state"])),
              "iteration": np.int64(state["iteration"]),
              "history": state["history"], "param.theta": state["params"]["theta"]}
    arrays["checksum"] = np.array(C.checksum(arrays))                  # recomputed: no defence
    np.savez(bad, **arrays)
    return bad


@pytest.mark.parametrize("change, message", [
    (lambda c: c["model"].update(channels=[10 ** 6] * 4), "does not fit|memory"),
    (lambda c: c["model"].update(channels=[4] * 100), "at most 32 conv blocks"),
    (lambda c: c["model"].update(in_shape=[4, 14, 14]), "in_shape"),
    (lambda c: c["model"].update(bn_eps=1e-300), "bn_eps: expected at least 1e-12"),
    (lambda c: c["model"].update(kind="resnet"), "model.kind"),
    (lambda c: c["model"].update(sizes=[784, 5]), "ConvNet"),
    (lambda c: c["model"].update(ways=7), "output dim 5"),
    (lambda c: c.update(method="reptile"), "method"),
    (lambda c: c.update(init="normal"), "init"),
])
def test_a_crafted_conv_checkpoint_is_refused(data_dir, tmp_path, change, message):  # noqa: F811
    bad = _crafted(tmp_path, data_dir, change)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    print(err.value)
    assert any(m in str(err.value) for m in message.split("|"))


def test_evaluate_writes_its_outputs(data_dir, tmp_path):  # noqa: F811
    res = meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                     backend="numba", **TINY)
    out = CR.evaluate_run(res.model, res.theta, res.config, max_steps=3, episodes=12,
                          backend="numba")
    ref = CR.evaluate_run(res.model, res.theta, res.config, max_steps=3, episodes=12,
                          backend="numpy")
    assert out["accuracy"].shape == (12, 4) and out["model"] == "conv"
    assert np.array_equal(out["accuracy"], ref["accuracy"])      # the kernels' curve
    paths = CR.write_outputs(out, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == [
        "omniglot_accuracy.png", "omniglot_results.csv", "omniglot_results.json"]


def test_the_command_line(data_dir, tmp_path, capsys):  # noqa: F811
    run = str(tmp_path / "run")
    common = ["--data-dir", data_dir, "--channels", "4", "4", "--meta-batch", "2",
              "--eval-every", "1", "--no-progress"]
    assert main(["train", "omniglot", "--model", "conv", "--first-order", "--iterations", "2",
                 "--out", run, *common]) == 0
    assert "fomaml: 2 iterations" in capsys.readouterr().out
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    assert config["model"]["kind"] == "conv" and config["method"] == "fomaml"
    assert main(["train", "omniglot", "--model", "conv", "--iterations", "3", "--out", run,
                 "--resume", *common]) == 0
    assert main(["evaluate", run, "--max-steps", "2", "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and os.path.exists(os.path.join(run, "eval",
                                                                    "omniglot_results.csv"))
    for bad, message in ((["--hidden", "8"], "hidden: does not apply to model 'conv'"),
                         (["--init", "uniform"], "init: expected one of ['xavier']"),
                         (["--method", "reptile"], "method: expected one of"),
                         (["--method", "anil", "--first-order"], "--first-order: does not")):
        assert main(["train", "omniglot", "--model", "conv", "--iterations", "1", "--out",
                     str(tmp_path / "bad"), *common, *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "sinusoid", "--model", "conv", "--iterations", "1", "--out",
                 str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "applies only to task 'omniglot'" in capsys.readouterr().err


def test_train_help_shows_the_conv_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())              # wrapped at any width
    assert "--model {mlp,conv}" in text and "--channels" in text and "--first-order" in text
    assert "64 64 64 64" in text


def test_reproduce_quick_on_conv(data_dir, tmp_path):  # noqa: F811
    path = CR.reproduce_omniglot(str(tmp_path), iterations=2, data_dir=data_dir, progress=False,
                                 quick=True, episodes=10, model="conv", channels=[4, 4],
                                 meta_batch=2, val_tasks=2, backend="numba")
    text = open(path).read()
    print(text)
    assert "98.7 ± 0.4" in text and "99.9 ± 0.1" in text and "NOT a reproduction" in text
    assert "conv" in text and "1-shot | 3 |" in text and "5-shot | 10 |" in text
    assert os.path.exists(os.path.join(str(tmp_path), "omniglot-5way-1shot-conv-maml",
                                       "eval", "omniglot_accuracy.png"))


def test_reproduce_conv_on_the_command_line(capsys):
    """The options reproduce omniglot --model conv refuses, and the line that continues it."""
    assert main(["reproduce", "omniglot", "--model", "conv", "--init", "uniform"]) == 2
    assert "--init: does not apply to reproduce omniglot" in capsys.readouterr().err
    assert main(["reproduce", "--model", "conv"]) == 2                      # sinusoid
    assert "--model: does not apply to reproduce sinusoid" in capsys.readouterr().err
    from argparse import Namespace
    args = Namespace(model="conv", quick=True, iterations=None, out="o", data_dir=None,
                     backend=None, seed=0)
    assert CR._again(args, "o") == ("python -m mamlnp reproduce omniglot --model conv --quick "
                                     "--out o")
