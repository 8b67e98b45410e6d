"""``mamlnp reproduce --quick``: the whole pipeline end to end, in seconds.

Dimension legend: K support points (shots).
"""
import csv
import os

import pytest

from mamlnp.run import reproduce as R
from mamlnp.run.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "out"
    assert main(["reproduce", "--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_quick_writes_every_file(quick_run):
    for name in ("results.csv", "results.json", "results.md", "figure2.png", "figure3.png",
                 "maml-k10/checkpoint.npz", "maml-k10/config.json", "maml-k10/history.csv",
                 "pretrain-k10/checkpoint.npz", "pretrain-k10/config.json"):
        assert (quick_run / name).stat().st_size > 0, name


def test_quick_table_parses(quick_run):
    rows = read_rows(quick_run / "results.csv")
    assert len(rows) == 2 * 3 * 11                                     # methods × K × steps 0..10
    assert {r["method"] for r in rows} == {"maml", "pretrain"}
    for r in rows:
        assert int(r["n"]) + int(r["diverged"]) == 600
        assert float(r["mean"]) > 0 and float(r["ci95"]) > 0
    base_alpha = {int(r["shots"]): float(r["alpha"]) for r in rows if r["method"] == "pretrain"}
    assert base_alpha == R.BASELINE_ALPHA
    md = (quick_run / "results.md").read_text()
    assert "NOT a reproduction" in md and "| maml | 5 | 1 |" in md and "0.67" in md


def test_rerun_reuses_then_resume_and_overwrite(quick_run, capsys):
    before = (quick_run / "maml-k10" / "checkpoint.npz").read_bytes()
    old = read_rows(quick_run / "results.csv")
    capsys.readouterr()
    # a second run reuses the finished runs (tests/test_newcomer.py checks the messages)
    assert main(["reproduce", "--quick", "--out", str(quick_run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "reusing the finished run" in out
    assert out.startswith("[reproduce] --quick: 200 iterations per run, a smoke test")  # marked
    assert "(--quick: a smoke test, NOT a result)" in out
    assert (quick_run / "maml-k10" / "checkpoint.npz").read_bytes() == before
    assert read_rows(quick_run / "results.csv") == old                 # same runs, same bits
    assert main(["reproduce", "--quick", "--out", str(quick_run), "--resume",
                 "--no-progress"]) == 0                                # the default, spelled out
    assert read_rows(quick_run / "results.csv") == old
    assert main(["reproduce", "--quick", "--out", str(quick_run), "--overwrite",
                 "--no-progress"]) == 0                                # trained again: same bits
    assert "training maml" in capsys.readouterr().out
    assert read_rows(quick_run / "results.csv") == old


def test_conflicting_options_are_refused(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--iterations", "5", "--out", str(tmp_path)]) == 2
    assert "error: --iterations and --quick" in capsys.readouterr().err
    assert main(["reproduce", "--resume", "--overwrite", "--out", str(tmp_path)]) == 2
    assert "error: --resume and --overwrite" in capsys.readouterr().err
    assert main(["reproduce", "--iterations", "0", "--out", str(tmp_path / "r")]) == 2
    assert "iterations: expected a positive integer, got 0" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_quick_figures_carry_the_smoke_test_mark():
    """The same figure with and without plots.SMOKE_NOTE: the note changes the picture."""
    import matplotlib.pyplot as plt
    from mamlnp.run import plots

    def fig():
        f, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        return f
    assert plots.figure_bytes(fig()) != plots.figure_bytes(fig(), note=plots.SMOKE_NOTE)
    f = fig()
    plots.figure_bytes(f, note=plots.SMOKE_NOTE)
    assert f._suptitle.get_text().startswith("SMOKE TEST (--quick)")
