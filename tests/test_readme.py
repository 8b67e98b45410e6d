"""The README's promises: its Python example runs, its test command is CI's, its
commands exist.

Dimension legend: none (documentation checks).
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_example_runs():
    code = blocks("python")[0]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)            # noqa: S102 (our own README)
    assert scope["grad"].shape == (scope["model"].num_params,)
    assert scope["hv"].shape == scope["grad"].shape


def test_quick_start_test_command_is_what_ci_runs():
    quick = blocks("bash")[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in quick and ci.rstrip().endswith("python -m pytest")
    assert "-r requirements.txt" in quick and "-r requirements.txt" in ci


def test_every_mamlnp_subcommand_in_the_readme_exists():
    used = set(re.findall(r"python -m mamlnp ([\w-]+)", README))
    assert {"reproduce", "gradcheck", "train", "evaluate"} <= used
    for cmd in sorted(used):
        out = subprocess.run([sys.executable, "-m", "mamlnp", cmd, "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (cmd, out.stderr)


def test_linked_files_exist():
    for target in re.findall(r"\]\(((?:docs|notebooks)/[^)#]+)", README):
        assert (ROOT / target).exists(), target
