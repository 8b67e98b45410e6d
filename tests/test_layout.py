"""The package's layout: one folder per part, imports only downward, no cycle.

Dimension legend: none (a check of the source tree).

Layers from the bottom (docs/architecture.md):
    errors, validation, _version, safeio, npzread  →  nn, tasks  →  fast  →  meta  →  check, run
Every import, at module level or inside a function, is read from the source with ``ast``.
Inside fast/, one folder per model kind (mlp/, bn_mlp/, conv/) and common/; the rest of the package
reaches it only through its face: ``mamlnp.fast.kernels_for`` (asked by meta/maml.py) and
``spin_threads`` (run/cli.py), plus three helpers that are no kernel set.
"""
import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "mamlnp"
RANK = {"errors": 0, "validation": 0, "_version": 0, "safeio": 0, "npzread": 0,
        "nn": 1, "tasks": 1, "fast": 2,
        "meta": 3, "check": 4, "run": 4, "__init__": 5, "__main__": 5}


def module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path):
    """The mamlnp modules that ``path`` imports (absolute names)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "mamlnp":
                continue
            for alias in node.names:                        # `from pkg import submodule`
                sub = f"{mod}.{alias.name}"
                found.add(sub if _exists(sub) else mod)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mamlnp"}
    return {m for m in found if m != me}


def _exists(name):
    p = PKG.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def graph():
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def part(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_sits_in_a_known_part():
    unknown = sorted(m for m in graph() if part(m) not in RANK)
    assert not unknown, f"modules outside the documented parts: {unknown}"


def test_imports_run_only_downward():
    upward = []
    for mod, deps in graph().items():
        for dep in deps:
            a, b = part(mod), part(dep)
            if a == b or dep == "mamlnp":
                continue
            sideways_ok = RANK[a] == RANK[b] and RANK[a] in (0, 4)   # the floor; check ↔ run
            if RANK[b] >= RANK[a] and not sideways_ok:
                upward.append(f"{mod} -> {dep}")
    assert not upward, "imports that run upward or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    g = graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if d not in g or d == "mamlnp":
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    print(f"{len(g)} modules, {sum(len(v) for v in g.values())} imports, {len(cycles)} cycles")
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("sub", ["nn", "tasks"])
def test_model_and_data_parts_import_only_the_floor(sub):
    bad = sorted(f"{m} -> {d}" for m, deps in graph().items() if part(m) == sub
                 for d in deps if part(d) not in (sub, "errors", "validation", "_version", "safeio",
                                                           "npzread"))
    assert not bad, bad


# what the rest of the package may import from fast/: the face and three non-kernel helpers
FAST_FACE = {"mamlnp.fast", "mamlnp.fast.compile_notice", "mamlnp.fast.episodes",
             "mamlnp.fast.common.blas_threads"}


def test_the_rest_reaches_the_compiled_path_only_through_its_face():
    bad = sorted(f"{m} -> {d}" for m, deps in graph().items() if part(m) != "fast"
                 for d in deps if part(d) == "fast" and d not in FAST_FACE)
    assert not bad, bad


def test_only_meta_maml_dispatches_to_the_kernel_sets():
    """``kernels_for`` is asked by mamlnp/meta/maml.py alone (run/cli.py imports the package
    for spin_threads); everything else asks meta.maml.kernels_for."""
    users = sorted(m for m, deps in graph().items() if part(m) != "fast" and "mamlnp.fast" in deps)
    assert users == ["mamlnp.meta.maml", "mamlnp.run.cli"], users


# the conv set reuses the batch-norm kernels (on pixel rows), the accuracy and row-mean
# kernels, and the plain MLP's loss kernels: called, not copied
CONV_REUSES = ("mamlnp.fast.mlp.mlp_kernels", "mamlnp.fast.mlp.thin_layers",
               "mamlnp.fast.bn_mlp.bn_kernels", "mamlnp.fast.bn_mlp.classify_kernels",
               "mamlnp.fast.bn_mlp.first_layer")


def test_kernel_sets_share_only_common_and_the_plain_mlp_kernels():
    """A kind's folder imports common/ and the face (kernelset.py); the batch-norm MLP also
    reuses the plain MLP's loss and activation kernels. No set imports another set's module."""
    bad = []
    for m, deps in graph().items():
        kind = m.split(".")[2] if m.count(".") >= 3 else None
        if kind not in ("mlp", "bn_mlp", "conv"):
            continue
        for d in deps:
            if not d.startswith("mamlnp.fast.") or d.count(".") < 3:
                continue
            other = d.split(".")[2]
            ok = other in (kind, "common") or (kind == "bn_mlp" and d in (
                "mamlnp.fast.mlp.mlp_kernels", "mamlnp.fast.mlp.thin_layers")) or (
                kind == "conv" and d in CONV_REUSES)
            if not ok:
                bad.append(f"{m} -> {d}")
    assert not bad, bad
