"""The committed notebooks: paired with their jupytext script, executed, error-free.

Executing them is nbmake's job (``--nbmake`` in pyproject.toml collects
notebooks/*.ipynb); these checks are about what is committed.
"""
import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert {"01_", "02_", "03_", "04_", "05_", "06_"} <= {p.name[:3] for p in NOTEBOOKS}


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


DEBRIS = {"a progress bar": r"\r|\d+it/s|it/s\]", "a local path": r"/root/|/home/|/work/|/tmp/|/Users/",
          "a commit hash": r"\b[0-9a-f]{10,40}\b|trained at commit"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_carry_no_debris(path):
    """No progress-bar frames, paths of the machine that executed it, or commit hashes in the
    committed outputs: they are read by users on other machines and at other commits."""
    import re
    nb = jupytext.read(path)
    texts = [o.get("text", "") if o.output_type == "stream" else
             "".join(v for k, v in o.get("data", {}).items() if k.startswith("text/"))
             for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    for what, pattern in DEBRIS.items():
        found = [m.group(0) for t in texts for m in re.finditer(pattern, t)]
        assert not found, f"{path.name}: {what} in the outputs: {found[:3]}"
