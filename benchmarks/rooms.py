"""Which modules ("rooms") the walk of a model through ``mamlnp.meta_gradient`` enters.

Dimension legend: T = 4 tasks, K = Q = 3 points, s = 1 (a small case: only the walk counts).

    python benchmarks/rooms.py bn     # the batch-norm MLP (classification) on backend="numba"
    python benchmarks/rooms.py mlp    # the plain MLP (sinusoid regression)

Prints the sorted module names and their count: the modules of the Python functions the call
runs (``sys.setprofile``, after a first call has imported and compiled everything; module
bodies not counted), plus the modules of every compiled kernel, overload, intrinsic or bundle
reachable from the kernels it runs (their globals, followed transitively): the files a
reader opens to follow one meta-gradient from the public function to the last kernel.
Nothing is timed or asserted.
"""
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mamlnp import MLP  # noqa: E402
from mamlnp.meta import maml  # noqa: E402
from mamlnp.tasks.base import TaskBatch  # noqa: E402


def case(kind, rng):
    if kind == "bn":
        model, D, O = MLP([16, 8, 8, 3], "relu", "softmax_xent", batch_norm=True), 16, 3
        y = lambda n: np.eye(O)[rng.integers(0, O, (4, n))]          # noqa: E731
    else:
        model, D, O = MLP([1, 8, 8, 1]), 1, 1
        y = lambda n: rng.normal(size=(4, n, O))                      # noqa: E731
    batch = TaskBatch(rng.normal(size=(4, 3, D)), y(3), rng.normal(size=(4, 3, D)), y(3))
    return model, model.init(0), batch


def names(code):
    """Every global name a code object (and the code nested in it) refers to."""
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= names(c)
    return out


def rooms(kind):
    model, theta, batch = case(kind, np.random.default_rng(0))
    maml.meta_gradient(model, theta, batch, 0.4, 1, backend="numba")   # imports, compiles
    called = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name != "<module>":
            called.add(frame.f_code)
    sys.setprofile(profile)
    maml.meta_gradient(model, theta, batch, 0.4, 1, backend="numba")
    sys.setprofile(None)
    files = {getattr(m, "__file__", None): m for m in list(sys.modules.values())}
    found, seen, todo = set(), set(), []
    for code in called:
        mod = files.get(code.co_filename)
        if mod is not None and mod.__name__.startswith("mamlnp"):
            found.add(mod.__name__)
            todo.append((code, vars(mod)))
    while todo:                                           # the kernels' callees
        code, scope = todo.pop()
        for n in names(code):
            v = scope.get(n)
            f = getattr(v, "py_func", None) or getattr(v, "_defn", None) or v
            m = getattr(f, "__module__", None) or ""
            if not m.startswith("mamlnp") or id(v) in seen:
                continue
            seen.add(id(v))
            found.add(m)
            if isinstance(f, types.FunctionType) and hasattr(v, "py_func"):
                todo.append((f.__code__, f.__globals__))
    return sorted(found)


if __name__ == "__main__":
    walk = rooms(sys.argv[1] if len(sys.argv) > 1 else "bn")
    print("\n".join(walk))
    print(f"{len(walk)} rooms")
