"""Omniglot runs: the protocol's defaults, training, resume, evaluation, reproduce, the CLI.

Dimension legend: T tasks, N ways, K shots, Q query per class, S steps, P parameters.

The runs use a synthetic Omniglot (tests/test_omniglot.py writes it) of 30 characters, made
into the run's task family by putting it in the cache of ``runconfig.family_for``, and a
small network (784-16-N with batch norm) so that each takes a second or so.
"""
import json
import os

import numpy as np
import pytest

from mamlnp import OmniglotTasks, meta_train
from mamlnp.run import classify as CL
from mamlnp.run import classify_report as CR
from mamlnp.run import runconfig as RC
from mamlnp.run.cli import main

from test_omniglot import write_tree

LAYOUT30 = {"images_background": {"Alpha": 8, "Beta": 7}, "images_evaluation": {"Gamma": 8, "Delta": 7}}
SMALL_RUN = dict(hidden=[16], meta_batch=3, val_tasks=4, eval_every=2, backend="numpy")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = write_tree(tmp_path_factory.mktemp("omni30"), layout=LAYOUT30)
    family = OmniglotTasks(root, ways=5, cache_dir=tmp_path_factory.mktemp("cache"),
                           num_train=22, num_val=5, require_full=False)   # 17 / 5 / 8
    key = (str(root), 5, os.environ.get("MAMLNP_DATA_DIR"))
    RC._FAMILIES[key] = family
    yield str(root)
    RC._FAMILIES.pop(key, None)


def test_the_protocol_defaults():
    five, twenty = CL.omniglot_defaults({}), CL.omniglot_defaults({"ways": 20})
    assert (five["meta_batch"], five["inner_steps"], five["shots"], five["query"]) == (32, 1, 1, 1)
    assert (twenty["meta_batch"], twenty["inner_steps"]) == (16, 5)
    assert five["alpha"] == pytest.approx(0.4 * 5) and twenty["alpha"] == pytest.approx(0.1 * 20)
    assert five["hidden"] == [256, 128, 64, 64] and five["batch_norm"] and five["beta"] == 1e-3
    assert five["iterations"] == 60000 and five["init"] == "normal"
    assert CL.omniglot_defaults({"shots": 5})["query"] == 5


def test_make_config_builds_the_batch_norm_classifier(data_dir):
    cfg = RC.make_config(task="omniglot", data_dir=data_dir)
    assert cfg["model"] == {"sizes": [784, 256, 128, 64, 64, 5], "activation": "relu",
                            "loss": "softmax_xent", "batch_norm": True, "bn_eps": 1e-3}
    assert not cfg["first_order"] and cfg["ways"] == 5
    sinusoid = RC.make_config()
    assert "ways" not in sinusoid and sinusoid["model"]["loss"] == "mse"   # unchanged


def test_the_alpha_conversion_matches_the_reference_loss(data_dir):
    """One SGD step on mean cross-entropy at α·N equals a step of α on Σ_i ℓ_i / K
    (cbfinn/maml utils.xent summed by tf.gradients)."""
    from mamlnp import MLP
    family, model = RC._FAMILIES[(data_dir, 5, os.environ.get("MAMLNP_DATA_DIR"))], None
    model = MLP((784, 8, 5), "relu", "softmax_xent")
    theta = model.init(0, scheme="normal")
    b = family.sample(0, 1, 2)
    xs, ys = b.x_support[0], b.y_support[0]
    _, g_mean = model.loss_and_grad(theta, xs, ys)
    g_reference = g_mean * len(xs) / 2                           # Σ_i ∇ℓ_i / K, K = 2
    np.testing.assert_allclose(theta - 0.4 * 5 * g_mean, theta - 0.4 * g_reference, rtol=1e-13)


def test_train_resume_and_history(data_dir, tmp_path):
    whole = meta_train(task="omniglot", data_dir=data_dir, iterations=4, progress=False,
                       out=str(tmp_path / "a"), **SMALL_RUN)
    assert list(whole.history) == ["iteration", "meta_loss", "val_accuracy"]
    assert np.all((0 <= whole.history["val_accuracy"]) & (whole.history["val_accuracy"] <= 1))
    with open(tmp_path / "a" / "history.csv") as f:
        assert f.readline().strip() == "iteration,meta_loss,val_accuracy"
    meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
               out=str(tmp_path / "b"), **SMALL_RUN)
    resumed = meta_train(task="omniglot", data_dir=data_dir, iterations=4, progress=False,
                         out=str(tmp_path / "b"), resume=True)
    assert resumed.theta.tobytes() == whole.theta.tobytes()     # the same bits
    assert resumed.config["ways"] == 5 and resumed.config["model"]["batch_norm"]


@pytest.mark.parametrize("method", ["fomaml", "reptile", "metasgd", "pretrain", "imaml", "anil",
                                    "mamlpp"])
def test_every_method_trains_on_omniglot(data_dir, method):
    res = meta_train(task="omniglot", data_dir=data_dir, method=method, iterations=2,
                     progress=False, **SMALL_RUN)
    assert np.all(np.isfinite(res.theta))


def test_evaluate_rows_and_files(data_dir, tmp_path):
    res = meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                     **SMALL_RUN)
    out = CR.evaluate_run(res.model, res.theta, res.config, max_steps=3, episodes=30)
    acc = out["accuracy"]
    assert acc.shape == (30, 4) and set(np.unique(acc * 5)) <= set(range(6))   # 5 query rows
    row = out["rows"][2]
    assert row["steps"] == 2 and row["mean"] == pytest.approx(acc[:, 2].mean())
    assert row["ci95"] == pytest.approx(1.96 * acc[:, 2].std() / np.sqrt(30))
    again = CR.evaluate_run(res.model, res.theta, res.config, max_steps=3, episodes=30)
    np.testing.assert_array_equal(again["accuracy"], acc)              # fixed episodes
    paths = CR.write_outputs(out, str(tmp_path))
    assert all(os.path.getsize(p) > 0 for p in paths) and paths[-1].endswith(".png")
    with open(paths[1]) as f:
        assert np.array(json.load(f)["accuracy"]).shape == (30, 4)


@pytest.mark.parametrize("method", ["anil", "metasgd", "mamlpp"])
def test_evaluation_adapts_as_training_did(data_dir, method):
    """ANIL's run is scored adapting the head only, Meta-SGD's with its learned α, MAML++'s
    with its learned table: the same accuracies as the curve at that step size."""
    res = meta_train(task="omniglot", data_dir=data_dir, method=method, iterations=2,
                     progress=False, **SMALL_RUN)
    from mamlnp.meta.variants import run_alpha
    from mamlnp.run import classify as CL
    out = CR.evaluate_run(res.model, res.theta, res.config, max_steps=2, episodes=6)
    family = RC.family_for(res.config)
    batch = family.episodes("test", 6, 1, 1, seed=CL.TEST_SEED)
    want = CL.accuracy_curve(res.model, res.theta, batch, run_alpha(res.config, res.model), 2)
    np.testing.assert_array_equal(out["accuracy"], want)
    assert out["rows"][0]["alpha"] == ("head only" if method == "anil" else "learned")


def test_the_command_line(data_dir, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "omniglot", "--data-dir", data_dir, "--iterations", "2", "--hidden",
                 "16", "--meta-batch", "2", "--eval-every", "1", "--backend", "numpy",
                 "--out", run, "--no-progress"]) == 0
    assert "validation accuracy" in capsys.readouterr().out
    assert main(["evaluate", run, "--max-steps", "2", "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and os.path.exists(os.path.join(run, "eval", "omniglot_results.csv"))
    for given, code in ((["0.5"], 0), (["1=0.5"], 0), (["5=0.5"], 2)):      # the run's K is 1
        assert main(["evaluate", run, "--max-steps", "1", "--no-plots", "--alpha", *given]) == code
        assert ("no step size for K=1" in capsys.readouterr().err) == (code == 2)
    assert main(["train", "omniglot", "--data-dir", data_dir, "--shots", "10", "--query", "11",
                 "--iterations", "1", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "shots + query" in capsys.readouterr().err
    assert main(["train", "omniglot", "--data-dir", str(tmp_path / "none"), "--iterations", "1",
                 "--out", str(tmp_path / "bad2"), "--no-progress"]) == 2
    assert "mamlnp download omniglot" in capsys.readouterr().err


def test_reproduce_writes_the_table_beside_the_paper(data_dir, tmp_path):
    path = CR.reproduce_omniglot(str(tmp_path), iterations=2, data_dir=data_dir, progress=False,
                                 quick=True, episodes=10, hidden=[8], meta_batch=2, val_tasks=2,
                                 backend="numpy")
    text = open(path).read()
    assert "89.7 ± 1.1" in text and "97.5 ± 0.6" in text and "NOT a reproduction" in text
    assert "1-shot | 3 |" in text and "5-shot | 10 |" in text
