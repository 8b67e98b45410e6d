"""mamlnp.run.checkpoint: round trip, atomic writes, and refusal of corrupt, truncated,
foreign or other-version files with a CheckpointError.

Dimension legend: P parameters, R history rows.
"""
import json
import os
import zipfile

import numpy as np
import pytest

import mamlnp
from mamlnp import CheckpointError, MLP
from mamlnp.run import checkpoint as C
from mamlnp.meta.optim import Adam


def make_run(tmp_path, alpha=False):
    """Save a checkpoint of a 1-8-1 model with an Adam state and an RNG state."""
    model = MLP((1, 8, 1), "tanh")
    theta = model.init(0)
    params = {"theta": theta}
    if alpha:
        params["alpha"] = np.linspace(-0.01, 0.02, model.num_params)
    opt = Adam(1e-3)
    opt.step(theta, np.ones_like(theta))
    rng = np.random.default_rng(5)
    rng.uniform(size=3)
    config = {"task": "sinusoid", "method": "metasgd" if alpha else "maml",
              "model": model.config(), "alpha": 0.01, "iteration": 7}
    history = np.array([[5.0, 1.5, 1.25], [7.0, 1.0, np.nan]])
    path = C.save_checkpoint(tmp_path, config, params, {"theta": opt.state_dict()},
                             rng.bit_generator.state, 7, history, {"wall": np.float64(1.5)})
    return path, model, params, opt, rng, history


def test_round_trip(tmp_path):
    path, model, params, opt, rng, history = make_run(tmp_path)
    assert path == os.path.join(tmp_path, "checkpoint.npz")
    state = C.read_checkpoint(tmp_path)
    np.testing.assert_array_equal(state["params"]["theta"], params["theta"])
    np.testing.assert_array_equal(state["history"], history)
    assert state["iteration"] == 7 and state["config"]["method"] == "maml"
    assert float(state["train_state"]["wall"]) == 1.5
    opt2 = Adam(1.0)
    opt2.load_state_dict(state["optimizer_state"]["theta"])
    assert opt2.t == opt.t and np.array_equal(opt2.m, opt.m) and np.array_equal(opt2.v, opt.v)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = state["rng_state"]
    assert np.array_equal(rng2.uniform(size=4), rng.uniform(size=4))


def test_load_checkpoint_from_dir_or_file(tmp_path):
    path, model, params, *_ = make_run(tmp_path, alpha=True)
    for where in (tmp_path, str(path)):
        m, theta, config = mamlnp.load_checkpoint(where)
        assert isinstance(m, MLP) and m.sizes == model.sizes and m.activation == "tanh"
        assert theta.dtype == np.float64 and np.array_equal(theta, params["theta"])
        assert config["iteration"] == 7 and config["method"] == "metasgd"
        np.testing.assert_array_equal(config["learned_alpha"], params["alpha"])


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint.npz"):
        mamlnp.load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        mamlnp.load_checkpoint(tmp_path / "nope.npz")


def test_truncated_checkpoint(tmp_path):
    path, *_ = make_run(tmp_path)
    data = open(path, "rb").read()
    for cut in (len(data) // 2, 100, 0):
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            C.read_checkpoint(path)


def rewrite(path, change):
    """Rewrite the npz with change(arrays) applied, keeping the stored checksum."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path, **arrays)


def test_tampered_array_fails_the_checksum(tmp_path):
    path, *_ = make_run(tmp_path)

    def nudge(a):
        a["param.theta"] = a["param.theta"].copy()
        a["param.theta"][3] = np.nextafter(a["param.theta"][3], np.inf)   # one ulp
    rewrite(path, nudge)
    with pytest.raises(CheckpointError, match="checksum does not match"):
        C.read_checkpoint(path)


def test_flipped_byte_is_refused(tmp_path):
    path, *_ = make_run(tmp_path)
    data = bytearray(open(path, "rb").read())
    i = data.find(b"param.theta.npy") + 200                   # inside θ's bytes
    data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError):                       # zip CRC or our checksum
        C.read_checkpoint(path)


def test_other_format_version_is_refused(tmp_path):
    path, *_ = make_run(tmp_path)
    rewrite(path, lambda a: a.update(format_version=np.int64(99)))
    with pytest.raises(CheckpointError, match="format version 99"):
        C.read_checkpoint(path)


def test_foreign_npz_is_refused(tmp_path):
    np.savez(tmp_path / "checkpoint.npz", theta=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a mamlnp checkpoint"):
        mamlnp.load_checkpoint(tmp_path)


def test_theta_of_the_wrong_size_is_refused(tmp_path):
    model = MLP((1, 8, 1))
    with pytest.raises(mamlnp.InputError, match="param.theta: .* has 25 parameters"):
        C.save_checkpoint(tmp_path, {"model": model.config()}, {"theta": np.zeros(5)})
    assert not os.listdir(tmp_path)                               # nothing written
    arrays = {"format_version": np.int64(1), "iteration": np.int64(0),
              "config_json": np.array(json.dumps({"model": model.config()})),
              "rng_state_json": np.array("null"), "history": np.zeros((0, 3)),
              "param.theta": np.zeros(5)}                          # crafted, valid checksum
    np.savez(tmp_path / "checkpoint.npz", checksum=np.array(C.checksum(arrays)), **arrays)
    with pytest.raises(CheckpointError, match="param.theta: .* has 25 parameters"):
        mamlnp.load_checkpoint(tmp_path)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path, _, params, *_ = make_run(tmp_path)
    before = open(path, "rb").read()

    def boom(f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        C.atomic_write(path, boom)
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]
    np.testing.assert_array_equal(C.read_checkpoint(path)["params"]["theta"], params["theta"])


def test_history_csv_and_json(tmp_path):
    C.write_history_csv(tmp_path / "h.csv", np.array([[1, 2.5, np.nan], [2, 2.0, 1.5]]))
    assert open(tmp_path / "h.csv").read() == "iteration,meta_loss,val_mse\n1,2.5,\n2,2.0,1.5\n"
    C.write_json(tmp_path / "c.json", {"a": np.arange(2), "b": np.float64(0.5)})
    assert json.load(open(tmp_path / "c.json")) == {"a": [0, 1], "b": 0.5}


def test_npz_is_a_plain_zip_without_pickles(tmp_path):
    path, *_ = make_run(tmp_path)
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as z:              # loads without pickle
        assert "checksum" in z.files and int(z["format_version"]) == C.FORMAT_VERSION
