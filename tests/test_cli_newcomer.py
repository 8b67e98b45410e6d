"""The newcomer's Omniglot path on the command line (issue 29): the right defaults in --help, the
printed resume command works, options that do not apply say so, units, the load notice, no
stall without a notice, quiet pipes, the test suite's environment.

Dimension legend: T tasks, N ways, K shots, Q query per class.
"""
import contextlib
import io
import os
import pathlib
import subprocess
import sys

import pytest

import mamlnp
from mamlnp import InputError
from mamlnp.run import process
from mamlnp.run import runconfig as RC
from mamlnp.run import train as TR
from mamlnp.run.cli import main

from test_omniglot_train import SMALL_RUN, data_dir  # noqa: F401  (the synthetic data fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
RUN = dict(hidden=[8], activation="tanh", iterations=4, meta_batch=2, eval_every=2,
           checkpoint_every=2, val_tasks=3, val_query=5, backend="numpy", progress=False)


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# --- help ------------------------------------------------------------------------------------

def test_train_help_shows_both_tasks_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())              # argparse wraps lines
    for fragment in ("K support points per task (omniglot: per class) (default: sinusoid 10, "
                     "omniglot 1)", "(default: sinusoid 0.01, omniglot 2.0)",
                     "(default: sinusoid 25, omniglot 32; 20-way 16)",
                     "(default: sinusoid 70000, omniglot 60000)",
                     "(default: sinusoid 40 40, omniglot 256 128 64 64",
                     "(default: sinusoid uniform, omniglot normal)",
                     "(default: sinusoid 1, omniglot 1; 20-way 5)",
                     "meta step size β of Adam (default 0.001)"):
        assert fragment in text, fragment


def test_top_level_and_reproduce_help_name_omniglot(capsys):
    assert main([]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Omniglot 5-way classification" in text and "sinusoid regression" in text
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "omniglot 60000" in text and "omniglot trains 1-shot and 5-shot" in text


# --- the printed resume command, the data folder it recorded -----------------------------------------

def test_resume_uses_the_data_dir_recorded_in_the_run(data_dir, tmp_path, monkeypatch,  # noqa: F811
                                                      capsys):
    """The run was trained with --data-dir; the default folder holds nothing; the resume
    command printed after Ctrl-C (no --data-dir) continues it."""
    family = next(f for k, f in RC._FAMILIES.items() if k[0] == data_dir)
    monkeypatch.setenv("MAMLNP_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setitem(RC._FAMILIES, (data_dir, 5, str(tmp_path / "nowhere")), family)
    out = tmp_path / "run"
    argv = ["train", "omniglot", "--data-dir", data_dir, "--out", str(out), "--no-progress",
            "--hidden", "16", "--meta-batch", "3", "--backend", "numpy"]
    assert main(argv + ["--iterations", "2"]) == 0
    code, stdout, err = run_cli(["train", "omniglot", "--out", str(out), "--resume",
                                 "--iterations", "4", "--no-progress"], capsys)
    assert code == 0, err
    assert "4 iterations" in stdout and "validation accuracy" in stdout and "%" in stdout


# --- options that do not apply ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def omni_run(data_dir, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("omni") / "run"
    mamlnp.meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                      out=str(d), **SMALL_RUN)
    return d


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sine")
    mamlnp.meta_train(out=d, **RUN)
    return d


@pytest.mark.parametrize("argv,fragment", [
    (["--shots", "5"], "--shots: does not apply to an Omniglot run"),
    (["--baseline", "{sine}"], "--baseline: does not apply to an Omniglot run"),
    (["--baseline-alpha", "0.1"], "--baseline-alpha: does not apply to an Omniglot run"),
])
def test_sinusoid_only_options_on_an_omniglot_run_are_errors(omni_run, sine_run, argv, fragment,
                                                             capsys):
    argv = [a.format(sine=sine_run) for a in argv]
    code, _, err = run_cli(["evaluate", str(omni_run), *argv], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,fragment", [
    (["evaluate", "{sine}", "--data-dir", "x"], "--data-dir: does not apply to a sinusoid run"),
    (["reproduce", "omniglot", "--shots", "5", "--out", "{tmp}"],
     "--shots: does not apply to reproduce omniglot"),
    (["reproduce", "omniglot", "--init", "uniform", "--out", "{tmp}"],
     "--init: does not apply to reproduce omniglot"),
    (["reproduce", "--data-dir", "x", "--out", "{tmp}"],
     "--data-dir: does not apply to reproduce sinusoid"),
    (["train", "sinusoid", "--ways", "5", "--out", "{tmp}"],
     "ways: applies only to task 'omniglot'"),
    (["train", "omniglot", "--ways", "1", "--out", "{tmp}"], "ways: expected at least 2"),
])
def test_options_that_do_not_apply_say_so(sine_run, tmp_path, argv, fragment, capsys):
    argv = [a.format(sine=sine_run, tmp=tmp_path / "out") for a in argv]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_of_runs_points_to_the_runs_inside(sine_run, tmp_path, capsys):
    os.symlink(sine_run, tmp_path / "maml-k10")
    code, _, err = run_cli(["evaluate", str(tmp_path)], capsys)
    assert code == 2 and "holds no checkpoint.npz of its own but the runs" in err
    assert f"python -m mamlnp evaluate {tmp_path / 'maml-k10'}" in err


# --- up-front limits, counting every dimension -------------------------------------------------------

@pytest.mark.parametrize("argv,fragment", [
    (["train", "omniglot", "--ways", "100", "--query", "19", "--meta-batch", "1000"],
     "meta_batch: expected a size whose arrays fit in memory"),
    (["train", "omniglot", "--shots", "19"], "shots, query: expected shots + query <= 20"),
])
def test_train_sizes_are_counted_with_the_ways(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mamlnp.validation.memory_limit", lambda: 16 * 2**30)
    code, _, err = run_cli(argv + ["--out", str(tmp_path / "o")], capsys)
    assert code == 2 and fragment in err


def test_shots_19_query_1_is_not_refused_as_19_plus_19():
    cfg = RC.make_config(task="omniglot", shots=19, query=1)
    assert (cfg["query"], cfg["val_query"]) == (1, 1)


def test_evaluate_max_steps_of_a_billion_is_refused_at_once(omni_run, capsys):
    code, _, err = run_cli(["evaluate", str(omni_run), "--max-steps", "1000000000"], capsys)
    assert code == 2 and "max_steps: expected a size whose arrays fit in memory" in err


# --- what the console shows ---------------------------------------------------------------------------

def test_scores_are_dashes_before_the_first_validation_and_accuracy_is_in_percent():
    assert TR.format_score(float("nan"), "val_acc") == "-"
    assert TR.format_score(0.9312, "val_acc") == "93.1%"
    assert TR.format_score(0.9312, "val_accuracy") == "93.1%"
    assert TR.format_score(0.25, "val_mse") == "0.2500"

    class Bar:
        def update(self, n):
            pass

        def set_postfix(self, d, refresh):
            self.shown = d
    bar, state = Bar(), TR._State({}, {}, None, iteration=50)
    TR._show(bar, state, 1.5, None, "val_acc")
    assert bar.shown == {"meta_loss": "1.5000", "val_acc": "-"}


def test_the_first_validation_is_wrapped_in_the_compile_notice(monkeypatch):
    """No silent stall: the first validation may compile kernels, and says so when it does."""
    entered = []

    @contextlib.contextmanager
    def notice(backend=None):
        entered.append(backend)
        yield
    monkeypatch.setattr(TR, "first_call_notice", notice)
    mamlnp.meta_train(**RUN)
    assert entered.count("numpy") == 2                 # the first iteration, the first validation


def test_the_load_notice(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    line = process.load_notice("reproduce", tty, load=7.9, cores=2, environ={})
    assert line == tty.getvalue().strip()
    assert "load average 7.9 on 2 cores" in line and "NUMBA_NUM_THREADS=1 python -m mamlnp " \
                                                      "reproduce" in line
    assert process.load_notice("reproduce", Tty(), load=1.5, cores=2, environ={}) is None
    assert process.load_notice("reproduce", Tty(), 7.9, 2, {"NUMBA_NUM_THREADS": "1"}) is None
    assert process.load_notice("reproduce", io.StringIO(), 7.9, 2, {}) is None   # not a tty
    assert process.load_notice("download", Tty(), 7.9, 2, {}) is None


def test_a_closed_pipe_ends_the_command_quietly(sine_run):
    """``mamlnp evaluate RUN | head -1``: the reader leaves first; no "Broken pipe"."""
    p = subprocess.Popen([sys.executable, "-m", "mamlnp", "evaluate", str(sine_run), "--backend",
                          "numpy", "--max-steps", "1", "--shots", "5", "--no-plots", "--out",
                          str(sine_run / "piped")], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=600) == 141 and err == ""


def test_old_import_paths_say_where_the_module_went():
    for code, new in (("from mamlnp import checkpoint", "mamlnp.run.checkpoint"),
                      ("import mamlnp.maml", "mamlnp.meta.maml")):
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 1 and f"has moved to {new}" in r.stderr


def test_the_download_error_names_both_zips(tmp_path, monkeypatch):
    import pooch
    from mamlnp.tasks import omniglot_data as data

    def offline(*a, **k):
        raise ConnectionError("no network")
    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(InputError, match="Copy images_background.zip and images_evaluation.zip "
                                         r"\(both are needed\)"):
        data.download(tmp_path)


# --- the test suite's own environment ------------------------------------------------------------------

def _tests_conftest(config):
    """tests/conftest.py as pytest loaded it, from pytest's plugin manager (``import conftest``
    finds notebooks/conftest.py instead when the whole suite runs)."""
    want = (REPO / "tests" / "conftest.py").resolve()
    for mod in config.pluginmanager.get_plugins():
        if pathlib.Path(getattr(mod, "__file__", None) or "/").resolve() == want:
            return mod
    raise AssertionError("tests/conftest.py is not loaded")


def test_the_suite_finds_the_data_as_ci_does_and_caches_in_a_temporary_folder(request):
    conftest = _tests_conftest(request.config)
    assert "MAMLNP_DATA_DIR" not in (REPO / ".ci" / "run").read_text().replace(
        "conftest.py", "")                             # CI runs the plain command
    if conftest.SHARED_DATA.is_dir():
        assert os.environ["MAMLNP_DATA_DIR"]
    home = str(pathlib.Path.home())
    for key in ("MAMLNP_CACHE_DIR", "MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR"):
        assert not os.environ[key].startswith(home) or os.environ[key].startswith(str(REPO))
    env = {}
    conftest.suite_environment(env)
    assert sorted(env) == sorted(["MAMLNP_CACHE_DIR", "MPLCONFIGDIR", "IPYTHONDIR",
                                  "JUPYTER_RUNTIME_DIR"] + (["MAMLNP_DATA_DIR"] if
                                                            conftest.SHARED_DATA.is_dir() else []))
    assert "mamlnp-tests-" in env["MAMLNP_CACHE_DIR"]


def test_an_interrupted_reproduce_omniglot_prints_the_command_that_continues(tmp_path, capsys,
                                                                            monkeypatch):
    import signal

    def interrupted(**kw):
        raise TR.TrainingInterrupted("interrupted at iteration 7; checkpoint written", None,
                                     signal.SIGINT)
    monkeypatch.setattr(TR, "meta_train", interrupted)
    out = tmp_path / "my runs"
    code, _, err = run_cli(["reproduce", "omniglot", "--quick", "--out", str(out),
                            "--data-dir", "/data/omniglot"], capsys)
    assert code == 130
    assert err.strip().endswith("run the same command again: python -m mamlnp reproduce "
                                f"omniglot --quick --out '{out}' --data-dir /data/omniglot")


def test_accuracy_curve_refuses_absurd_step_counts_before_allocating():
    import numpy as np
    from mamlnp.run import classify as CL
    model = mamlnp.MLP((4, 8, 2), "relu", "softmax_xent", batch_norm=True)
    y = np.eye(2)[[0, 1, 0, 1]][None].repeat(3, 0)                   # (T, N·K, N) one-hot
    batch = mamlnp.TaskBatch(np.ones((3, 4, 4)), y, np.ones((3, 4, 4)), y)
    with pytest.raises(InputError, match="max_steps: expected a size whose arrays fit"):
        CL.accuracy_curve(model, model.init(0), batch, 0.5, 10**9, backend="numpy")
