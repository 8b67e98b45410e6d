"""The package's layout: one folder per part, imports only downward, no cycle.

Dimension legend: none (a check of the source tree).

Layers from the bottom (docs/architecture.md):
    errors, validation, _version, safeio, npzread  →  nn, tasks  →  fast  →  meta  →  check, run
Every import, at module level or inside a function, is read from the source with ``ast``.
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
