"""The documentation's promises, checked: what docs/, the READMEs and the module docstrings name
exists and parses.

Dimension legend: none (documentation checks).

tests/test_readme.py runs the README's example and its commands; this file extends the
cheap checks to every page a user reads:

  * every repository path a page, a notebook or a docstring names (``mamlnp/…``, ``benchmarks/…``,
    ``tests/…``, ``notebooks/…``, ``docs/…``, and the package-relative ``fast/…``, ``nn/…``, …)
    and every relative link exists;
  * every ``python -m mamlnp COMMAND`` (or ``mamlnp COMMAND``) names a sub-command whose
    ``--help`` works, and every ``--option`` written after it is one of that command's options;
  * every ``python benchmarks/NAME.py --option`` names an option the script defines;
  * the method lists (``maml|fomaml|…`` in the pages, ``--method`` choices in ``train
    --help``) are mamlnp.meta.variants.METHODS.
"""
import ast
import pathlib
import re

import pytest

from mamlnp.meta.variants import METHODS
from mamlnp.run.cli import build_parser, main

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "benchmarks").glob("*/README.md"), *(ROOT / "docs").rglob("*.md")])
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.py"))          # the jupytext twins
MODULES = sorted([*(ROOT / "mamlnp").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])
TOP = ("mamlnp/", "benchmarks/", "tests/", "notebooks/", "docs/", ".ci/")
PACKAGE = ("nn/", "tasks/", "fast/", "meta/", "check/", "run/", "kernels/")   # under mamlnp/
PATH = re.compile(r"(?<![\w/.~-])((?:\.ci|[a-z_]+)/[\w./*-]*[\w*])")
COMMAND = re.compile(r"(?:python -m |^)mamlnp ([a-z][a-z-]*)((?:[ \t]+(?:\\\n)?[^\s`|#]+)*)", re.M)
# A known stale reference, by module: an entry here is not a permission to add more.
KNOWN_STALE = {}


def docstrings():
    """[(module path, its docstring)] of every module of mamlnp/ and benchmarks/."""
    out = []
    for path in MODULES:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if doc:
            out.append((path, doc))
    return out


TEXTS = [(p, p.read_text()) for p in PAGES + NOTEBOOKS] + docstrings()
IDS = [str(p.relative_to(ROOT)) for p, _ in TEXTS]


def code_spans(text):
    """The text inside backticks and fenced blocks (where pages name files and commands)."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    rest = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"``?([^`\n]+)``?", rest)


EXTENSIONS = {"py", "md", "ipynb", "toml", "txt", "json", "csv", "png", "npz", "cfg", "yml"}


def resolves(token, where):
    """Whether a path token names something in the repository (from the root, from the
    naming file's folder, or from inside the package); ``fast/api.adam_step`` names a
    module and a name defined in it."""
    token = token.rstrip(".,;:)")
    head, _, last = token.rpartition("/")
    stem, dot, suffix = last.partition(".")
    attr = None
    if dot and suffix.split(".")[0] not in EXTENSIONS:          # module.attribute
        token, attr = f"{head}/{stem}.py", suffix.split(".")[0]
    bases = [ROOT, where.parent, ROOT / "mamlnp", ROOT / "mamlnp" / "fast"]
    for base in bases:
        if (base / token).exists():
            return attr is None or re.search(rf"\b{re.escape(attr)}\b",
                                             (base / token).read_text()) is not None
    return False


@pytest.mark.parametrize("path,text", TEXTS, ids=IDS)
def test_named_repository_paths_exist(path, text):
    missing = set()
    for span in code_spans(text):
        for token in PATH.findall(span):
            if token.startswith(TOP + PACKAGE) and not re.search(r"[*<>…]|NN_|/$", token):
                if not resolves(token, path):
                    missing.add(token)
    missing -= KNOWN_STALE.get(str(path.relative_to(ROOT)), set())
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(path):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    missing = [t for t in links if "://" not in t and not (path.parent / t).exists()]
    assert not missing, f"{path.relative_to(ROOT)}: broken links {missing}"


def options(parser):
    return set(parser._option_string_actions)


@pytest.fixture(scope="module")
def subcommands():
    return build_parser()._subcommands


@pytest.mark.parametrize("path,text", TEXTS, ids=IDS)
def test_named_cli_commands_parse(path, text, subcommands, capsys):
    for span in code_spans(text):
        for name, rest in COMMAND.findall(span):
            assert name in subcommands, f"{path.relative_to(ROOT)}: no command {name!r}"
            unknown = {o.split("=")[0] for o in re.findall(r"(?<!\S)--[\w-]+(?:=\S*)?", rest)
                       } - options(subcommands[name])
            assert not unknown, f"{path.relative_to(ROOT)}: `mamlnp {name}` has no {unknown}"


def test_every_documented_subcommand_has_a_working_help(subcommands, capsys):
    used = {name for _, text in TEXTS for span in code_spans(text)
            for name, _ in COMMAND.findall(span) if name in subcommands}
    assert {"reproduce", "train", "evaluate", "gradcheck", "download"} <= used
    for name in sorted(used):
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: mamlnp {name}")


@pytest.mark.parametrize("path,text", TEXTS, ids=IDS)
def test_benchmark_options_exist(path, text):
    for span in code_spans(text):
        for script, rest in re.findall(r"python (benchmarks/[\w/]+\.py)((?:[ \t]+(?:\\\n)?"
                                       r"[^\s`|#]+)*)", span):
            source = (ROOT / script).read_text()
            if re.search(r"^import common", source, flags=re.M):       # benchmarks/compare/
                source += (ROOT / script).with_name("common.py").read_text()
            for opt in re.findall(r"(?<!\S)(--[\w-]+)", rest):
                assert f'"{opt}"' in source, f"{path.relative_to(ROOT)}: {script} has no {opt}"


def test_method_lists_are_the_variants():
    from mamlnp.run.navigation_checkpoint import ESTIMATORS, METHODS as NAVIGATION
    want = "|".join(METHODS)
    for path, text in TEXTS:
        for found in re.findall(r"\bmaml\|[a-z|]+", text):        # methods or RL estimators
            assert set(found.split("|")) in (set(METHODS), set(NAVIGATION), set(ESTIMATORS)), (
                path.relative_to(ROOT), found, want)
    train = build_parser()._subcommands["train"]
    choices = tuple(train._option_string_actions["--method"].choices)
    assert choices == METHODS + tuple(m for m in NAVIGATION if m not in METHODS)


def test_the_checks_can_fail(tmp_path):
    """The patterns catch what they are for: a missing path, an unknown option."""
    page = tmp_path / "page.md"
    assert not resolves("mamlnp/no_such_module.py", page)
    assert resolves("fast/kernelset.py", page) or resolves("mamlnp/run/cli.py", page)
    assert PATH.findall("see `mamlnp/nn/mlp.py` and `fast/kernels/x.py`") == [
        "mamlnp/nn/mlp.py", "fast/kernels/x.py"]
    assert resolves("mamlnp/nn/mlp.MLP", page) and not resolves("mamlnp/nn/mlp.NoSuch", page)
    (name, rest), = COMMAND.findall("python -m mamlnp train omniglot --ways 5 --bogus")
    assert name == "train" and "--bogus" in rest
    assert "--bogus" not in options(build_parser()._subcommands["train"])
