"""A newcomer's first hour (issue 13): the command line's manners.

The first compile announced and kept out of the progress bar's ETA; ``reproduce`` that can
be run again and says how to continue after Ctrl-C; ``evaluate`` that uses reproduce's
per-K test-time steps for a pretrained baseline; ``--version``, a bare ``mamlnp``, a
sub-command's own usage on its errors; no ``.lock`` left behind; the thread-spin setting
made by the commands only.

Dimension legend: K support points (shots).
"""
import csv
import io
import os
import subprocess
import sys
import time

import pytest

from mamlnp.fast import compile_notice
from mamlnp.fast import SPINCOUNT, spin_threads
from mamlnp.run import evaluate as E
from mamlnp.run import reproduce as R
from mamlnp.run import train as TR
from mamlnp.run.cli import build_parser, main

TINY = dict(iterations=6, meta_batch=3, hidden=[8, 8], eval_every=3, backend="numpy")


def cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# ---- the first compile ---------------------------------------------------------------


def test_first_call_notice_speaks_only_when_numba_compiles():
    numba = pytest.importorskip("numba")
    add_one = numba.njit(lambda x: x + 1)                       # not cached: compiles once
    cold, warm, numpy = io.StringIO(), io.StringIO(), io.StringIO()
    with compile_notice.first_call_notice(stream=cold):
        assert add_one(1) == 2
    with compile_notice.first_call_notice(stream=warm):
        assert add_one(2) == 3                                  # compiled already
        time.sleep(0.1)
    with compile_notice.first_call_notice(stream=numpy, backend="numpy"):
        assert numba.njit(lambda x: x + 2)(1) == 3
    again = io.StringIO()
    with compile_notice.first_call_notice(stream=again):
        assert numba.njit(lambda x: x + 3)(1) == 4                # a second compile, same process
    lines = cold.getvalue().splitlines()
    print(lines, again.getvalue())
    assert len(lines) == 2 and "kernels ready after" in lines[1]
    if lines[0] != "mamlnp: compiling more kernels, once":      # unless an earlier test compiled
        assert f"compiling kernels, once: about {compile_notice.COMPILE_TIME}" in lines[0]
    assert again.getvalue().startswith("mamlnp: compiling more kernels, once\n")
    assert warm.getvalue() == "" and numpy.getvalue() == ""


def test_progress_bar_starts_after_the_first_iteration(monkeypatch):
    made = []
    real = TR._progress_bar

    def spy(progress, cfg, state, initial=None):
        made.append((state.iteration, initial))
        return real(False, cfg, state, initial)

    monkeypatch.setattr(TR, "_progress_bar", spy)
    TR.meta_train(progress=True, **TINY)
    assert made == [(1, 0)]          # created once the (compiling) first iteration is done


# ---- reproduce, twice ------------------------------------------------------------------


def quick(out, *extra):
    return ["reproduce", "--quick", "--out", out, "--backend", "numpy", "--no-progress", *extra]


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("again") / "out"
    assert main(quick(str(out))) == 0
    return out


def test_second_reproduce_reuses_the_runs_and_prints_the_same_table(quick_runs, capsys):
    before = (quick_runs / "maml-k10" / "checkpoint.npz").read_bytes()
    table = (quick_runs / "results.csv").read_text()
    capsys.readouterr()
    code, out, err = cli(quick(str(quick_runs)), capsys)
    assert code == 0, err
    assert "reusing the finished run" in out and "--overwrite trains it again" in out
    assert "maml" in out and "0.01" in out                        # the table, with α
    assert (quick_runs / "maml-k10" / "checkpoint.npz").read_bytes() == before
    assert (quick_runs / "results.csv").read_text() == table       # same runs, same bits


def test_finished_runs_leave_no_lock_file(quick_runs):
    for run in ("maml-k10", "pretrain-k10"):
        assert ".lock" not in os.listdir(quick_runs / run)


def test_quick_has_its_own_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["reproduce", "--quick"])
    seen = {}

    def stop_here(out, *a, **k):
        seen["out"] = out
        raise RuntimeError("stop before training")

    monkeypatch.setattr(R, "train_both", stop_here)
    with pytest.raises(RuntimeError, match="stop before training"):
        R.run(args)
    assert seen["out"] == os.path.join("runs", "reproduce-quick")
    assert build_parser().parse_args(["reproduce"]).out is None   # -> runs/reproduce


def test_ctrl_c_names_the_checkpoint_and_the_command_that_continues(tmp_path, monkeypatch,
                                                                    capsys):
    result = TR.meta_train(out=str(tmp_path / "maml-k10"), **TINY)

    def interrupted(*a, **k):
        raise TR.TrainingInterrupted("interrupted", result)

    monkeypatch.setattr(TR, "meta_train", interrupted)
    code, _, err = cli(["reproduce", "--out", tmp_path, "--seed", "3", "--no-progress"], capsys)
    assert code == 130
    assert os.path.join(str(tmp_path / "maml-k10"), "checkpoint.npz") in err
    assert f"python -m mamlnp reproduce --out {tmp_path} --seed 3" in err


def test_other_options_on_existing_runs_say_overwrite(quick_runs, capsys):
    code, _, err = cli(quick(str(quick_runs), "--seed", "5"), capsys)
    assert code == 2 and "pass --overwrite" in err and "Traceback" not in err


# ---- evaluate agrees with reproduce ------------------------------------------------------


def test_evaluate_baseline_uses_reproduces_per_k_alpha(quick_runs, tmp_path, capsys):
    out = tmp_path / "ev"
    code, text, err = cli(["evaluate", quick_runs / "maml-k10", "--baseline",
                           quick_runs / "pretrain-k10", "--backend", "numpy", "--no-plots",
                           "--out", out], capsys)
    assert code == 0, err
    with open(out / "results.csv") as f:
        ours = {(r["method"], r["shots"], r["steps"]): r for r in csv.DictReader(f)}
    with open(quick_runs / "results.csv") as f:
        theirs = {(r["method"], r["shots"], r["steps"]): r for r in csv.DictReader(f)}
    assert ours == theirs                                          # the same table, bit for bit
    assert {k[1]: float(r["alpha"]) for k, r in ours.items() if k[0] == "pretrain"} == {
        "5": 0.01, "10": 0.02, "20": 0.02}
    assert " α " in text.splitlines()[0] and "0.02" in text


def test_baseline_alpha_per_k_and_shots_once(quick_runs, tmp_path, capsys):
    out = tmp_path / "ev"
    code, _, err = cli(["evaluate", quick_runs / "pretrain-k10", "--shots", "5", "5", "10",
                        "--max-steps", "1", "--alpha", "5=0.03", "10=0.04", "--backend",
                        "numpy", "--no-plots", "--out", out], capsys)
    assert code == 0, err
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["shots"], r["steps"], r["alpha"]) for r in rows] == [
        ("5", "0", "0.03"), ("5", "1", "0.03"), ("10", "0", "0.04"), ("10", "1", "0.04")]
    code, _, err = cli(["evaluate", quick_runs / "pretrain-k10", "--alpha", "0.01", "5=0.02"],
                       capsys)
    assert code == 2 and "alpha: expected one step size or K=step pairs" in err
    code, _, err = cli(["evaluate", quick_runs / "pretrain-k10", "--alpha", "five"], capsys)
    assert code == 2 and "mamlnp evaluate: error:" in err and "K=step" in err


# ---- the command line ------------------------------------------------------------------


def test_version_bare_command_and_help_text(capsys):
    from mamlnp import __version__
    code, out, _ = cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"mamlnp {__version__}"
    code, out, _ = cli([], capsys)
    assert code == 0 and out.startswith("usage: mamlnp") and "reproduce" in out
    assert "``" not in out
    for command in ("reproduce", "evaluate", "train"):
        code, out, _ = cli([command, "--help"], capsys)
        assert code == 0 and "``" not in out and "DEFAULT_BACKEND" not in out
    code, out, _ = cli(["evaluate", "--help"], capsys)
    flat = " ".join(out.split())
    assert "(default numba)" in flat and "default 5 10 20" in flat and "(default 10" in flat


def test_an_error_in_a_subcommand_prints_its_own_usage(capsys):
    code, _, err = cli(["train", "sinusoid", "--no-such-option"], capsys)
    assert code == 2
    assert err.startswith("usage: mamlnp train") and "unrecognized arguments" in err
    code, _, err = cli(["--no-such-option"], capsys)
    assert code == 2 and err.startswith("usage: mamlnp [-h]")


# ---- threads ---------------------------------------------------------------------------


def test_spin_threads_is_a_choice_the_user_can_override_or_turn_off():
    assert spin_threads(env := {}) == SPINCOUNT and env == {"GOMP_SPINCOUNT": SPINCOUNT}
    assert spin_threads(env := {"GOMP_SPINCOUNT": "5"}) == "5" and env == {"GOMP_SPINCOUNT": "5"}
    assert spin_threads(env := {"MAMLNP_SPIN": "0"}) is None and "GOMP_SPINCOUNT" not in env
    assert spin_threads(env := {"OMP_WAIT_POLICY": "passive"}) is None
    assert "GOMP_SPINCOUNT" not in env


def test_keep_freed_memory_is_a_choice_the_user_can_override_or_turn_off():
    """mamlnp.run.process: the commands' glibc thresholds, skipped when turned off or chosen."""
    import platform
    from mamlnp.run.process import keep_freed_memory
    assert keep_freed_memory({"MAMLNP_MALLOC": "0"}) is False
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        assert keep_freed_memory({key: "1"}) is False
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory({}) is glibc


def test_single_blas_thread_is_a_choice_the_user_can_override_or_turn_off():
    from mamlnp.run.process import single_blas_thread
    assert single_blas_thread({"MAMLNP_BLAS": "0"}) == 0
    for key in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        assert single_blas_thread({key: "2"}) == 0
    code = ("import numpy, scipy.linalg; from mamlnp.run.process import single_blas_thread, "
            "loaded_openblas; print(single_blas_thread({}), len(loaded_openblas()))")
    env = {k: v for k, v in os.environ.items() if k not in (
        "MAMLNP_BLAS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == out[1]                       # every OpenBLAS loaded was set


def test_import_mamlnp_leaves_the_environment_alone():
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    code = "import os, mamlnp; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "None"
