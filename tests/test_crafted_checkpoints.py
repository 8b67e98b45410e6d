"""Crafted checkpoints: every field read from a file is checked before use (issue 12).

The checksum is an unkeyed SHA-256, so an attacker (or a buggy tool) can rewrite any field
and recompute it. Each case here does exactly that (``craft``), then loads the file with
``load_checkpoint``, resumes it with ``meta_train(resume=True)`` and evaluates it on the
command line: each must give a CheckpointError naming the field, never a crash, a raw
exception or a silently wrong run. Then: sizes checked before decompression (a member
declaring 2 GiB, a header claiming 7 TiB), and a fuzz of byte flips and truncations.

Dimension legend: P parameters (1-8-1 tanh: P = 25).
"""
import io
import json
import os
import struct
import time
import zipfile

import numpy as np
import pytest

import mamlnp
from mamlnp import CheckpointError
from mamlnp.run import checkpoint as C
from mamlnp.run.cli import main

RUN = dict(hidden=[8], activation="tanh", iterations=4, meta_batch=2, eval_every=2,
           checkpoint_every=2, val_tasks=3, val_query=5, backend="numpy", progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished tiny runs: MAML and Meta-SGD; returns {method: checkpoint bytes}."""
    out = {}
    for method in ("maml", "metasgd"):
        d = tmp_path_factory.mktemp(method)
        mamlnp.meta_train(out=d, method=method, **RUN)
        out[method] = (d / "checkpoint.npz").read_bytes()
    return out


def arrays_of(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def craft(path, arrays):
    """Write ``arrays`` as a checkpoint with a freshly computed, valid checksum."""
    arrays = {k: v for k, v in arrays.items() if k != "checksum"}
    np.savez(path, checksum=np.array(C.checksum(arrays)), **arrays)


def edit_config(arrays, **changes):
    cfg = json.loads(str(arrays["config_json"]))
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return {**arrays, "config_json": np.array(json.dumps(cfg))}


P = 25
RNG = '{"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}, "has_uint32": 0, "uinteger": 0}'
CASES = {   # name -> (method, change of the arrays, field the message must name)
    "theta 26": ("maml", lambda a: {**a, "param.theta": np.zeros(P + 1)}, "param.theta"),
    "theta 3000": ("maml", lambda a: {**a, "param.theta": np.zeros(3000)}, "param.theta"),
    "theta 2-d": ("maml", lambda a: {**a, "param.theta": np.zeros((P, 1))}, "param.theta"),
    "theta int": ("maml", lambda a: {**a, "param.theta": np.zeros(P, np.int64)}, "param.theta"),
    "theta nan": ("maml", lambda a: {**a, "param.theta": np.full(P, np.nan)}, "param.theta"),
    "theta str": ("maml", lambda a: {**a, "param.theta": np.array("x" * P)}, "param.theta"),
    "theta bool": ("maml", lambda a: {**a, "param.theta": np.ones(P, bool)}, "param.theta"),
    "adam m 26": ("maml", lambda a: {**a, "optim.theta.m": np.zeros(P + 1)}, "optim.theta.m"),
    "adam v 24": ("maml", lambda a: {**a, "optim.theta.v": np.zeros(P - 1)}, "optim.theta.v"),
    "adam v < 0": ("maml", lambda a: {**a, "optim.theta.v": -np.ones(P)}, "optim.theta.v"),
    "adam t": ("maml", lambda a: {**a, "optim.theta.t": np.int64(-5)}, "optim.theta"),
    "adam lr": ("maml", lambda a: {**a, "optim.theta.lr": np.float64(np.inf)}, "optim.theta.lr"),
    "adam no m": ("maml", lambda a: {k: v for k, v in a.items() if k != "optim.theta.m"},
                  "optim.theta"),
    "alpha 24": ("metasgd", lambda a: {**a, "param.alpha": np.zeros(P - 1)}, "param.alpha"),
    "alpha inf": ("metasgd", lambda a: {**a, "param.alpha": np.full(P, np.inf)}, "param.alpha"),
    "rng other": ("maml", lambda a: {**a, "rng_state_json": np.array(
        '{"bit_generator": "MT19937", "state": {}}')}, "rng_state"),
    "rng negative": ("maml", lambda a: {**a, "rng_state_json": np.array(
        RNG.replace('"state": 1', '"state": -1'))}, "rng_state"),
    "rng list": ("maml", lambda a: {**a, "rng_state_json": np.array("[1, 2]")}, "rng_state"),
    "rng null": ("maml", lambda a: {**a, "rng_state_json": np.array("null")}, "rng_state"),
    "recent short": ("maml", lambda a: {**a, "train.recent": np.zeros(3)}, "train.recent"),
    "n_recent": ("maml", lambda a: {**a, "train.n_recent": np.int64(10**9)}, "train"),
    "window nan": ("maml", lambda a: {**a, "train.window_sum": np.float64(np.nan)},
                   "train.window_sum"),
    "no trainer": ("maml", lambda a: {k: v for k, v in a.items() if k != "train.median"},
                   "train"),
    "history rows": ("maml", lambda a: {**a, "history": np.zeros((50, 3))}, "history"),
    "history 2-d": ("maml", lambda a: {**a, "history": np.zeros((4, 2))}, "history"),
    "iteration -1": ("maml", lambda a: {**a, "iteration": np.int64(-1)}, "iteration"),
    "iteration float": ("maml", lambda a: {**a, "iteration": np.float64(4)}, "iteration"),
    "version str": ("maml", lambda a: {**a, "format_version": np.array("1")}, "format_version"),
    "config bad json": ("maml", lambda a: {**a, "config_json": np.array("{")}, "config_json"),
    "config deep": ("maml", lambda a: {**a, "config_json": np.array("[" * 100000 + "]" * 100000)},
                    "config_json"),
    "config list": ("maml", lambda a: {**a, "config_json": np.array("[1]")}, "config_json"),
    "config no alpha": ("maml", lambda a: edit_config(a, alpha=None), "alpha"),
    "config alpha str": ("maml", lambda a: edit_config(a, alpha="0.01x"), "config.alpha"),
    "config alpha nan": ("maml", lambda a: edit_config(a, alpha=float("nan")), "config.alpha"),
    "config method $": ("maml", lambda a: edit_config(a, method="$\\frac{"), "config.method"),
    "config no sizes": ("maml", lambda a: edit_config(a, model={"activation": "tanh"}),
                        "param.theta"),               # MLP's default sizes: θ does not fit
    "config model list": ("maml", lambda a: edit_config(a, model=[1, 8, 1]), "config.model"),
    "config loss": ("maml", lambda a: edit_config(a, model={"sizes": [1, 8, 1], "activation":
                    "tanh", "loss": "softmax_xent"}), "config.model"),
    "config dims": ("maml", lambda a: edit_config(a, model={"sizes": [2, 8, 1],
                    "activation": "tanh", "loss": "mse"}), "config.model"),
    "config huge": ("maml", lambda a: edit_config(a, model={"sizes": [1, 2**40, 1],
                    "activation": "tanh", "loss": "mse"}), "config.model"),
    "config steps": ("maml", lambda a: edit_config(a, inner_steps=2**62), "config.inner_steps"),
    "config iteration": ("maml", lambda a: edit_config(a, iteration=3), "config.iteration"),
    "config task": ("maml", lambda a: edit_config(a, task="omniglot?"), "config.task"),
    "extra member": ("maml", lambda a: {**a, "evil": np.zeros(3)}, "evil"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_field_is_refused_naming_it(case, runs, tmp_path, capsys):
    method, change, field = CASES[case]
    run = tmp_path / "run"
    run.mkdir()
    craft(run / "checkpoint.npz", change(arrays_of(runs[method])))
    before = (run / "checkpoint.npz").read_bytes()
    try:
        mamlnp.load_checkpoint(run)
        loaded = True
    except CheckpointError as exc:
        loaded = False
        assert field in str(exc), exc
    with pytest.raises(CheckpointError) as e:            # resume reads the rest as well
        mamlnp.meta_train(out=run, resume=True, iterations=6, progress=False)
    assert field in str(e.value), e.value
    print(f"{case}: {e.value}")
    assert (run / "checkpoint.npz").read_bytes() == before and not (run / "eval").exists()
    code = main(["evaluate", str(run), "--no-plots", "--max-steps", "1", "--backend", "numpy"])
    err = capsys.readouterr().err
    assert (code == 0) == loaded and "Traceback" not in err
    if not loaded:
        assert code == 2 and len(err.strip().splitlines()) == 1 and field in err, err


def test_the_real_runs_load_resume_and_match(runs, tmp_path):
    for method, data in runs.items():
        (tmp_path / method).mkdir()
        (tmp_path / method / "checkpoint.npz").write_bytes(data)
        r = mamlnp.meta_train(out=tmp_path / method, resume=True, iterations=6, progress=False)
        full = mamlnp.meta_train(method=method, **{**RUN, "iterations": 6})
        assert r.theta.tobytes() == full.theta.tobytes()


def _declare_size(data, member, size):
    """``data`` (a zip) with ``member``'s uncompressed size in the central directory set to
    ``size``: what a deflated bomb declares, without writing gigabytes in a test."""
    buf = bytearray(data)
    name = member.encode()
    at = buf.find(b"PK\x01\x02" + b"\x00" * 0)
    while at >= 0:
        n = struct.unpack_from("<H", buf, at + 28)[0]
        if bytes(buf[at + 46:at + 46 + n]) == name:
            struct.pack_into("<I", buf, at + 24, size)
            return bytes(buf)
        at = buf.find(b"PK\x01\x02", at + 4)
    raise AssertionError(member)


def test_a_member_declaring_2_gib_is_refused_before_decompressing(runs, tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(_declare_size(runs["maml"], "param.theta.npy", 2**31 - 1))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="param.theta.*bytes, expected at most.*before"):
        mamlnp.load_checkpoint(path)
    assert time.perf_counter() - t0 < 1.0
    print(CheckpointError, "in", time.perf_counter() - t0, "s")


def test_a_real_deflated_bomb_is_refused_at_once(runs, tmp_path):
    """A genuinely deflated 64 MiB member (it would be 2 GiB in an attack: same code path)."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(io.BytesIO(runs["maml"])) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != "history.npy":
                dst.writestr(info.filename, src.read(info))
        with dst.open("history.npy", "w") as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (2**23, 1)})
            f.write(header.getvalue())
            chunk = bytes(2**20)
            for _ in range(64):
                f.write(chunk)
    assert path.stat().st_size < 2**20
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="history"):
        mamlnp.load_checkpoint(path)
    assert time.perf_counter() - t0 < 1.0


def test_a_header_claiming_7_tib_is_a_checkpoint_error(runs, tmp_path):
    arrays = arrays_of(runs["maml"])
    path = tmp_path / "huge.npz"
    craft(path, arrays)
    data = path.read_bytes()
    j = data.rfind(b"\x93NUMPY", 0, data.find(b"'shape': (25,)"))
    old_len = 10 + struct.unpack_from("<H", data, j + 8)[0]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (2**40,)})       # 8 TiB of θ
    assert len(header.getvalue()) == old_len
    path.write_bytes(data[:j] + header.getvalue() + data[j + old_len:])
    with pytest.raises(CheckpointError) as e:
        mamlnp.load_checkpoint(path)
    assert "MemoryError" not in str(e.value)


def test_unsupported_compression_method_is_a_checkpoint_error(runs, tmp_path):
    data = bytearray(runs["maml"])
    at = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, at + 10, 99)             # method 99 (AES) in the directory
    path = tmp_path / "method.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="compression"):
        mamlnp.load_checkpoint(path)


def test_fuzz_byte_flips_and_truncations(runs, tmp_path):
    """A few hundred corruptions of a real checkpoint: each gives a CheckpointError or
    the identical θ, and nothing else (no other exception, no other θ)."""
    data = runs["maml"]
    good = tmp_path / "good.npz"
    good.write_bytes(data)
    theta = mamlnp.load_checkpoint(good)[1]
    rng = np.random.default_rng(12)
    cases = [("flip", int(i), int(b)) for i, b in zip(rng.integers(0, len(data), 300),
                                                      rng.integers(1, 256, 300))]
    cases += [("cut", int(n), 0) for n in rng.integers(0, len(data), 100)]
    outcomes = {"refused": 0, "same": 0}
    path = tmp_path / "fuzz.npz"
    for kind, i, b in cases:
        if kind == "flip":
            path.write_bytes(data[:i] + bytes([data[i] ^ b]) + data[i + 1:])
        else:
            path.write_bytes(data[:i])
        try:
            got = mamlnp.load_checkpoint(path)[1]
        except CheckpointError:
            outcomes["refused"] += 1
            continue
        assert got.tobytes() == theta.tobytes(), (kind, i, b)
        outcomes["same"] += 1
    print(outcomes)
    assert outcomes["refused"] > 300


def test_a_directory_declaring_too_many_members_is_refused_before_parsing(tmp_path):
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(300):
            z.writestr(f"m{i}.npy", b"")
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="declares 300 members"):
        mamlnp.load_checkpoint(path)
    assert time.perf_counter() - t0 < 1.0
