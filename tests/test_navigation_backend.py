"""The navigation commands' backend (``train navigation --backend``, ``evaluate``,
``reproduce navigation``): mamlnp/run/navigation*.py.

Dimension legend: T tasks, N trajectories, H horizon, P parameters.

``backend="numba"`` (the default) runs the policy's row passes compiled
(mamlnp.fast.policy.CompiledPoint), ``"numpy"`` the NumPy FactoredPoint: the same maths to
~1e-16 per pass, not the same bits. The runs here are tiny (T = 2, N = 3, H = 10, two hidden
ReLU layers of 4, the smallest policy the factored points apply to).

The TRPO runs use 5 conjugate-gradient iterations: on a 44-parameter policy and 30 steps per
task the damped meta-Fisher's condition number is about 4e5, and the 10th iterate of CG
(the default) has run into its near-null directions, where the backends' 1e-16 differences
grow to ~1e-5 of the step (iterates 1-5 agree to ~1e-15). That is the solver's rounding,
not the backend's: the derivatives agree to ~1e-16 (tests/test_policy_kernels.py).
"""
import json

import numpy as np
import pytest

from mamlnp.errors import CheckpointError, InputError
from mamlnp.meta import rl as RL
from mamlnp.nn.policy_factors import FactoredPoint
from mamlnp.run import checkpoint as C
from mamlnp.run import navigation as N
from mamlnp.run import navigation_checkpoint as NC
from mamlnp.run import navigation_eval as NE
from mamlnp.run.cli import main

TINY = dict(meta_batch=2, trajectories=3, hidden=[4, 4], progress=False, threads=1)
PATHS = [dict(cg_iters=5), dict(outer="adam"), dict(method="pretrain", cg_iters=5),
         dict(method="oracle", outer="adam"), dict(inner_steps=2, cg_iters=5),
         dict(estimator="dice", outer="adam")]


@pytest.fixture(autouse=True)
def _short_horizon(monkeypatch):
    monkeypatch.setitem(N.DEFAULTS, "horizon", 10)


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(a)))


@pytest.mark.filterwarnings("ignore:line search rejected")
@pytest.mark.parametrize("extra", PATHS)
def test_the_two_backends_agree_to_rounding(extra):
    """Three iterations on each backend: the same histories and θ to ~1e-9 (in fact ~1e-15),
    though not bit for bit; each run records its backend."""
    a = N.train_navigation(iterations=3, backend="numpy", **TINY, **extra)
    b = N.train_navigation(iterations=3, backend="numba", **TINY, **extra)
    hist, theta = _rel(a.history[:, 1:], b.history[:, 1:]), _rel(a.theta, b.theta)
    print(f"{extra}: numpy vs numba, history rel diff {hist:.1e}, theta {theta:.1e}, "
          f"bit-identical: {np.array_equal(a.theta, b.theta)}")
    assert a.config["backend"] == "numpy" and b.config["backend"] == "numba"
    assert hist < 1e-9 and theta < 1e-9


@pytest.mark.filterwarnings("ignore:line search rejected")
def test_the_backend_reaches_every_point(monkeypatch):
    """Every point class the trainer and the evaluation ask rl.py for is the backend's: the
    inner steps, the meta-gradient, the FVP, the line search, pretrain's plain functions,
    the K-step chain and the test-time PG steps."""
    from mamlnp.fast import compiled_point
    asked, original = [], RL._point_class

    def spy(policy, factored=None, backend=None):
        cls = original(policy, factored, backend)
        asked.append((backend, cls))
        return cls
    monkeypatch.setattr(RL, "_point_class", spy)
    want = {"numpy": FactoredPoint, "numba": compiled_point(), None: compiled_point()}
    for backend, cls in want.items():
        for extra in (dict(), dict(outer="adam"), dict(method="pretrain"), dict(inner_steps=2)):
            asked.clear()
            N.train_navigation(iterations=1, backend=backend, **TINY, **extra)
            assert asked and {c for _, c in asked} == {cls}, (backend, extra, asked)
        policy = N.GaussianPolicy((2, 4, 4, 2))
        asked.clear()
        NE.evaluate_policies({"maml": (policy, policy.init(0))}, goals=NE.held_out_goals(2),
                             trajectories=2, steps=2, backend=backend)
        assert len(asked) == 4 and {c for _, c in asked} == {cls}


def test_config_json_records_the_resolved_backend(tmp_path):
    for backend, name in ((None, "numba"), ("numpy", "numpy"), ("numba", "numba")):
        out = tmp_path / str(backend)
        res = N.train_navigation(out=out, iterations=1, backend=backend, **TINY)
        saved = json.loads((out / "config.json").read_text())
        assert res.config["backend"] == saved["backend"] == name
        assert saved["metadata"]["backend"] == name
        assert NC.read(out)["config"]["backend"] == name


def test_resume_keeps_the_backend(tmp_path):
    """--resume with the other backend is refused naming backend (the resumed run would no
    longer equal one sitting); the same backend, or none given, continues to the same bits."""
    N.train_navigation(out=tmp_path, iterations=1, backend="numpy", **TINY)
    with pytest.raises(InputError, match=r"backend: .* trained with backend='numpy', got "
                                         r"'numba'.*not bit for bit"):
        N.train_navigation(out=tmp_path, resume=True, iterations=2, backend="numba",
                           progress=False)
    with pytest.raises(InputError, match="backend"):
        N.train_navigation(out=tmp_path, resume=True, iterations=2, backend="jax",
                           progress=False)
    N.train_navigation(out=tmp_path, resume=True, iterations=2, backend="numpy", progress=False)
    resumed = N.train_navigation(out=tmp_path, resume=True, iterations=3, progress=False)
    full = N.train_navigation(iterations=3, backend="numpy", **TINY)
    assert resumed.config["backend"] == "numpy" and np.array_equal(resumed.theta, full.theta)


def _rewrite(out, config):
    """Write ``out``'s checkpoint again with ``config``, bypassing save's own checks (a
    crafted file, or one written before an option existed), with a valid checksum."""
    state = NC.read(out)
    arrays = {"format_version": np.int64(C.FORMAT_VERSION),
              "config_json": np.array(json.dumps(config, sort_keys=True)),
              "rng_state_json": np.array(json.dumps(state["rng_state"])),
              "iteration": np.int64(state["iteration"]), "history": state["history"],
              "param.theta": state["theta"], "train.wall": np.float64(state["wall"])}
    arrays["checksum"] = np.array(C.checksum(arrays))
    np.savez(str(out / "checkpoint.npz"), **arrays)
    return state


def test_a_checkpoint_without_the_key_resumes_as_numpy(tmp_path):
    """A run saved before the option (no "backend" in its config) ran the NumPy points: it
    loads and resumes as "numpy", to the bits of a NumPy run in one sitting."""
    N.train_navigation(out=tmp_path, iterations=1, backend="numpy", **TINY)
    old = {k: v for k, v in NC.read(tmp_path)["config"].items() if k != "backend"}
    _rewrite(tmp_path, old)
    assert "backend" not in NC.read(tmp_path)["config"]                 # it reads
    with pytest.raises(InputError, match="backend='numpy', got 'numba'"):
        N.train_navigation(out=tmp_path, resume=True, iterations=2, backend="numba",
                           progress=False)
    resumed = N.train_navigation(out=tmp_path, resume=True, iterations=2, progress=False)
    full = N.train_navigation(iterations=2, backend="numpy", **TINY)
    assert resumed.config["backend"] == "numpy" and np.array_equal(resumed.theta, full.theta)
    assert json.loads((tmp_path / "config.json").read_text())["backend"] == "numpy"


def test_a_crafted_backend_is_refused(tmp_path, capsys):
    with pytest.raises(InputError, match="backend"):
        N.make_config(backend="jax")
    N.train_navigation(out=tmp_path, iterations=1, **TINY)
    state = NC.read(tmp_path)
    for bad in ("jax", None, 1):
        with pytest.raises(InputError, match="config.backend"):                   # save
            NC.save(tmp_path, dict(state["config"], backend=bad), state["theta"],
                    state["rng_state"], 1, state["history"])
    _rewrite(tmp_path, dict(state["config"], backend="jax"))
    with pytest.raises(CheckpointError, match="config.backend"):                  # load
        NC.read(tmp_path)
    assert main(["evaluate", str(tmp_path), "--max-steps", "0", "--no-plots"]) == 2
    assert "config.backend" in capsys.readouterr().err
    assert main(["train", "navigation", "--out", str(tmp_path), "--resume",
                 "--no-progress"]) == 2
    assert "config.backend" in capsys.readouterr().err


ARGS = ["train", "navigation", "--iterations", "1", "--meta-batch", "2", "--trajectories", "3",
        "--hidden", "4", "4", "--threads", "1", "--no-progress"]


def test_cli_train_and_evaluate_take_a_backend(tmp_path, capsys):
    out, ev = str(tmp_path / "run"), tmp_path / "eval"
    assert main(ARGS + ["--out", out, "--backend", "numpy"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["backend"] == "numpy"
    capsys.readouterr()
    assert main(["train", "navigation", "--out", out, "--resume", "--iterations", "2",
                 "--backend", "numba", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "backend: the run in" in err and "Traceback" not in err
    assert main(["train", "navigation", "--out", out, "--resume", "--iterations", "2",
                 "--backend", "numpy", "--no-progress"]) == 0
    with pytest.raises(SystemExit) as bad:                                # argparse's choices
        main(ARGS + ["--out", str(tmp_path / "x"), "--backend", "jax"])
    assert bad.value.code == 2 and "--backend: invalid choice: 'jax'" in capsys.readouterr().err
    assert main(["evaluate", out, "--max-steps", "1", "--no-plots", "--out", str(ev),
                 "--backend", "numpy"]) == 0
    assert json.loads((ev / "results.json").read_text())["meta"]["backend"] == "numpy"
    assert main(["evaluate", out, "--max-steps", "1", "--no-plots", "--out", str(ev)]) == 0
    assert json.loads((ev / "results.json").read_text())["meta"]["backend"] == "numba"


def test_reproduce_trains_on_the_backend_and_keeps_it(tmp_path, capsys):
    out = tmp_path / "repro"
    quick = ["reproduce", "navigation", "--quick", "--out", str(out), "--no-progress"]
    assert main(quick + ["--backend", "numpy"]) == 0
    for row in ("maml", "pretrain", "oracle", "maml-lvc"):
        assert NC.read(str(out / row))["config"]["backend"] == "numpy"
    assert json.loads((out / "results.json").read_text())["meta"]["backend"] == "numpy"
    capsys.readouterr()
    assert main(quick + ["--backend", "numba"]) == 2                 # reuse on another backend
    err = capsys.readouterr().err
    assert "--backend: the run in" in err and "trained with backend 'numpy'" in err
