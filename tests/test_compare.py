"""The comparison implementations of benchmarks/compare/ compute mamlnp's meta-gradient.

Dimension legend: T tasks, K support / Q query points, D inputs, O outputs, P parameters,
s = inner_steps.

The benchmarks time mamlnp against MAML written in JAX (benchmarks/compare/maml_jax.py) and
in PyTorch (benchmarks/compare/maml_torch.py: loop, torch.func, torch.compile). A speed ratio
means something only if both sides compute the same thing: here each comparison's meta-loss
and meta-gradient, from a flat θ in mamlnp's layout, are checked against mamlnp's NumPy
reference (``backend="numpy"``) on small cases of both workloads (a ReLU MLP with MSE; the
batch-norm MLP with softmax cross-entropy), s = 1 and 2, second and first order.
Measured: relative errors of 1e-16 to 2e-15 (float64 rounding only).

Skipped when jax or torch is absent (CI installs neither); to run:
``python -m pip install -e ".[compare,test]"`` then ``python -m pytest tests/test_compare.py``.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import mamlnp

COMPARE = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "compare"
sys.path.insert(0, str(COMPARE))
import common  # noqa: E402

RTOL = 1e-10
CASES = {"sinusoid": ((1, 8, 6, 1), False, "mse"),
         "batchnorm": ((20, 9, 7, 3), True, "softmax_xent")}


def case(name, seed=3):
    """(model, θ, (xs, ys, xq, yq)) of a small case of a workload: T = 3 tasks."""
    sizes, bn, loss = CASES[name]
    rng = np.random.default_rng(seed)
    model = mamlnp.MLP(sizes, "relu", loss, batch_norm=bn)
    theta = model.init(1) + 0.05 * rng.standard_normal(model.num_params)   # γ ≠ 1, β ≠ 0
    if bn:
        xs, ys, xq, yq = common.omniglot_batch(rng, 3, 3, 2, 2, ink=0.3)   # 3-way 2-shot
        xs, xq = xs[..., :sizes[0]], xq[..., :sizes[0]]
    else:
        xs, ys, xq, yq = common.sinusoid_batch(rng, 3, 4, 5)
    return model, theta, (xs, ys, xq, yq)


def check(name, meta_gradient, s, first_order):
    model, theta, data = case(name)
    sizes, bn, loss = CASES[name]
    assert common.num_params(sizes, bn) == model.num_params
    want_loss, want = mamlnp.meta_gradient(model, theta, mamlnp.TaskBatch(*data), 0.1, s,
                                           first_order, backend="numpy")
    got_loss, got = meta_gradient(theta, *data, sizes, bn, loss, 0.1, s, first_order)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    print(f"{name} s={s} {'FO' if first_order else 'SO'}: relative error {err:.1e}, "
          f"meta-loss {abs(got_loss - want_loss):.1e}")
    assert err < RTOL and abs(got_loss - want_loss) <= RTOL * abs(want_loss)


def test_layout_is_mamlnps():
    """common.layout walks θ as mamlnp's MLP.unflatten does: same blocks, same offsets."""
    for sizes, bn, loss in CASES.values():
        model = mamlnp.MLP(sizes, "relu", loss, batch_norm=bn)
        theta = np.arange(model.num_params, dtype=np.float64)
        ours = [theta[o:o + int(np.prod(shape))].reshape(shape)
                for _, o, shape in common.layout(sizes, bn)]
        theirs = [a for layer in model.unflatten(theta) for a in layer]
        assert len(ours) == len(theirs)
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("s,first_order", [(1, False), (2, False), (1, True), (2, True)])
def test_jax_meta_gradient_is_mamlnps(name, s, first_order):
    pytest.importorskip("jax")
    import maml_jax
    check(name, maml_jax.meta_gradient, s, first_order)


@pytest.mark.parametrize("impl", ["loop", "func"])
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("s,first_order", [(1, False), (2, False), (1, True), (2, True)])
def test_torch_meta_gradient_is_mamlnps(impl, name, s, first_order):
    pytest.importorskip("torch")
    import maml_torch

    def f(*a):
        return maml_torch.meta_gradient(*a, impl=impl)
    check(name, f, s, first_order)


@pytest.mark.slow
def test_torch_compile_meta_gradient_is_mamlnps():
    """torch.compile of the torch.func meta-gradient (compiles for tens of seconds)."""
    pytest.importorskip("torch")
    import maml_torch

    def f(*a):
        return maml_torch.meta_gradient(*a, impl="compile")
    check("batchnorm", f, 1, False)


@pytest.mark.parametrize("script,extra", [("maml_jax.py", []),
                                          ("maml_torch.py", ["--impl", "func"])])
def test_scripts_print_a_result_line(script, extra):
    pytest.importorskip("jax" if "jax" in script else "torch")
    out = subprocess.run([sys.executable, str(COMPARE / script), "--workload", "sinusoid",
                          "--order", "2", "--reps", "1", "--block", "1"] + extra,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1 and '"median_ms"' in lines[0]
