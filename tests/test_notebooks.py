"""The committed notebooks: paired with their jupytext script, executed, error-free.

Executing them is nbmake's job (``--nbmake`` in pyproject.toml collects
notebooks/*.ipynb); these checks are about what is committed.
"""
import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_paired_script_is_in_sync(path):
    nb = jupytext.read(path)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    script = jupytext.read(path.with_suffix(".py"))
    cells = [(c.cell_type, c.source.strip()) for c in nb.cells]
    assert cells == [(c.cell_type, c.source.strip()) for c in script.cells], (
        f"{path.name} and its .py differ: run  jupytext --sync {path}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_without_errors(path):
    nb = jupytext.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{path.name}: not executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {[e.ename for e in errors]}"
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name}: no figure in the outputs"
