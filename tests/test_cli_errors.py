"""The command line refuses bad input with one clear line on stderr, never a traceback.

Every case runs ``mamlnp.run.cli.main(argv)`` in-process (fast) and checks: a non-zero
exit code, no traceback, and a last stderr line ``mamlnp COMMAND: error: ...``
naming the culprit. Errors raised by mamlnp (MamlnpError) give exactly ONE stderr
line; argparse's own errors (an unknown --method) print the usage first, as
every argparse program does. Two cases also run ``python -m mamlnp`` in a
subprocess, to check the real exit code and stream. Run with ``-s`` to see the
messages.
"""
import os
import subprocess
import sys

import pytest

from mamlnp.run.cli import main

FAST = ["--backend", "numpy", "--no-progress"]          # no numba compilation in these tests


def cli(argv, capsys):
    """(exit code, stdout, stderr) of ``mamlnp ARGV``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:                           # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code, err, command, fragment, want_code=2, one_line=True):
    print(f"exit {code}: {err.strip().splitlines()[-1] if err.strip() else '(no stderr)'}")
    assert code == want_code, (code, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if one_line:
        assert len(lines) == 1, err
    assert lines[-1].startswith(f"mamlnp {command}: error: "), err
    assert fragment in lines[-1], err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 2-iteration run directory (checkpoint.npz, config.json, history.csv)."""
    out = tmp_path_factory.mktemp("runs") / "ok"
    argv = ["train", "sinusoid", "--iterations", "2", "--meta-batch", "2", "--out", str(out), *FAST]
    assert main(argv) == 0
    return out


@pytest.fixture
def not_a_dir(tmp_path):
    """A path nobody can create a directory at, even root: it lies under a regular file."""
    f = tmp_path / "a-file"
    f.write_text("not a directory\n")
    return f / "run"


# ---- mamlnp train ------------------------------------------------------------------------

TRAIN_CASES = [
    (["--alpha", "0"], "alpha: expected a positive finite number, got 0.0"),
    (["--alpha", "-0.5"], "alpha: expected a positive finite number, got -0.5"),
    (["--alpha", "nan"], "alpha: expected a positive finite number, got nan"),
    (["--beta", "0"], "beta: expected a positive finite number, got 0.0"),
    (["--beta=-1e-3"], "beta: expected a positive finite number, got -0.001"),
    (["--inner-steps", "-1"], "inner_steps: expected a non-negative integer, got -1"),
    (["--iterations", "0"], "iterations: "),
    (["--shots", "0"], "shots: "),
    (["--meta-batch", "0"], "meta_batch: "),
    (["--hidden", "40", "0"], "hidden[1]: "),
    (["--seed", "-1"], "seed: "),
]


@pytest.mark.parametrize("extra, fragment", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_refuses_bad_hyperparameters_before_training(extra, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["train", "sinusoid", "--iterations", "3", "--out", out, *FAST, *extra], capsys)
    assert_clean_error(code, err, "train", fragment)
    assert not (out / "checkpoint.npz").exists()


def test_train_unknown_method_is_an_argparse_error(tmp_path, capsys):
    code, _, err = cli(["train", "sinusoid", "--method", "maml2", "--out", tmp_path, *FAST], capsys)
    assert_clean_error(code, err, "train", "invalid choice: 'maml2'", one_line=False)


def test_train_unwritable_out_fails_before_training(not_a_dir, capsys):
    code, _, err = cli(["train", "sinusoid", "--iterations", "3", "--out", not_a_dir, *FAST], capsys)
    assert_clean_error(code, err, "train", f"out: cannot write the run directory '{not_a_dir}'")


def test_train_resume_refuses_other_architecture_and_keeps_the_checkpoint(tiny_run, capsys):
    ckpt = tiny_run / "checkpoint.npz"
    before = ckpt.read_bytes()
    code, _, err = cli(["train", "sinusoid", "--iterations", "4", "--out", tiny_run, "--resume",
                        "--hidden", "20", *FAST], capsys)
    assert_clean_error(code, err, "train", "resume: the checkpoint was written for model")
    assert ckpt.read_bytes() == before                                   # nothing lost
    code, _, err = cli(["train", "sinusoid", "--iterations", "4", "--out", tiny_run, *FAST], capsys)
    assert_clean_error(code, err, "train", "already holds a run")
    assert ckpt.read_bytes() == before


def test_train_resume_without_a_checkpoint(tmp_path, capsys):
    code, _, err = cli(["train", "sinusoid", "--out", tmp_path, "--resume", *FAST], capsys)
    assert_clean_error(code, err, "train", "holds no checkpoint.npz to resume from")


def test_train_divergence_exits_1_with_advice(tmp_path, capsys):
    code, _, err = cli(["train", "sinusoid", "--iterations", "20", "--meta-batch", "2",
                        "--alpha", "10", "--inner-steps", "5", "--out", tmp_path, *FAST], capsys)
    assert_clean_error(code, err, "train", "diverged at iteration", want_code=1)
    assert "--alpha" in err


# ---- mamlnp evaluate -----------------------------------------------------------------------


def corrupt_copy(src, dst, how):
    dst.mkdir()
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    data = bytearray((dst / "checkpoint.npz").read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    elif how == "truncate":
        data = data[:500]
    else:
        data = bytearray(b"garbage\n")
    (dst / "checkpoint.npz").write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how, fragment", [("flip", "truncated or corrupt"),
                                           ("truncate", "truncated or corrupt"),
                                           ("garbage", "truncated or corrupt")])
def test_evaluate_corrupt_checkpoint(tiny_run, tmp_path, how, fragment, capsys):
    bad = corrupt_copy(tiny_run, tmp_path / how, how)
    code, _, err = cli(["evaluate", bad, "--no-plots"], capsys)
    assert_clean_error(code, err, "evaluate", fragment)
    assert not (bad / "eval").exists()


def test_evaluate_missing_or_empty_dir(tmp_path, capsys):
    code, _, err = cli(["evaluate", tmp_path / "nope"], capsys)
    assert_clean_error(code, err, "evaluate", "DIR: no such run directory or checkpoint file")
    code, _, err = cli(["evaluate", tmp_path], capsys)
    assert_clean_error(code, err, "evaluate", "holds no checkpoint.npz")


EVAL_CASES = [
    (["--alpha", "0"], "alpha: expected a positive finite number"),
    (["--alpha", "-1"], "alpha: "),
    (["--max-steps", "-1"], "max_steps: expected a non-negative integer"),
    (["--shots", "7"], "shots: expected one of [5, 10, 20], got 7"),
    (["--baseline", "/nonexistent/run"], "--baseline: no such run directory"),
]


@pytest.mark.parametrize("extra, fragment", EVAL_CASES, ids=[" ".join(c[0]) for c in EVAL_CASES])
def test_evaluate_bad_options(tiny_run, extra, fragment, capsys):
    code, _, err = cli(["evaluate", tiny_run, "--no-plots", *extra], capsys)
    assert_clean_error(code, err, "evaluate", fragment)


def test_evaluate_unwritable_out(tiny_run, not_a_dir, capsys):
    code, _, err = cli(["evaluate", tiny_run, "--no-plots", "--shots", "5", "--max-steps", "1",
                        "--out", not_a_dir], capsys)
    assert_clean_error(code, err, "evaluate", "Not a directory", want_code=1)


# ---- mamlnp reproduce and gradcheck ------------------------------------------------------------

REPRO_CASES = [
    (["--iterations", "0"], "iterations: expected a positive integer, got 0"),
    (["--iterations", "5", "--quick"], "--iterations and --quick"),
    (["--shots", "0"], "shots: "),
    (["--seed", "-3"], "seed: "),
]


@pytest.mark.parametrize("extra, fragment", REPRO_CASES, ids=[" ".join(c[0]) for c in REPRO_CASES])
def test_reproduce_bad_options(tmp_path, extra, fragment, capsys):
    code, _, err = cli(["reproduce", "--out", tmp_path, *FAST, *extra], capsys)
    assert_clean_error(code, err, "reproduce", fragment, one_line=False)
    assert err.strip().splitlines()[-1].startswith("mamlnp reproduce: error: ")


def test_reproduce_unwritable_out(not_a_dir, capsys):
    code, _, err = cli(["reproduce", "--iterations", "2", "--out", not_a_dir, *FAST], capsys)
    assert_clean_error(code, err, "reproduce", "cannot write the run directory", one_line=False)


def test_gradcheck_unknown_backend(capsys):
    code, _, err = cli(["gradcheck", "--backend", "torch"], capsys)
    assert_clean_error(code, err, "gradcheck", "invalid choice: 'torch'", one_line=False)


# ---- the real process: exit code and stderr -----------------------------------------------------


@pytest.mark.parametrize("argv, code, fragment", [
    (["evaluate", "/nonexistent/run"], 2, "DIR: no such run directory"),
    (["train", "sinusoid", "--alpha", "-1", *FAST], 2, "alpha: expected a positive finite number"),
])
def test_subprocess_exit_code_and_single_stderr_line(argv, code, fragment, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mamlnp", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    print(proc.stderr.strip())
    assert proc.returncode == code
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr
    assert not os.listdir(tmp_path)                     # no run directory left behind
