"""mamlnp.check.gradcheck: the command passes on the real model, and every checker
FAILS when handed a deliberately wrong derivative (a tool that cannot fail
proves nothing).

Dimension legend: N points, P parameters, T tasks.
"""
import argparse

import numpy as np
import pytest

from mamlnp import MLP, InputError
from mamlnp.check import gradcheck as GC
from mamlnp.meta import maml
from mamlnp.run.cli import main


def _case(activation="softplus", loss="mse", sizes=(3, 4, 3, 2), seed=0):
    return GC.draw_case(seed, sizes, activation, loss)


# ---- deliberately broken models ----------------------------------------------------------


class FlippedSigma2(MLP):
    """σ'' with the wrong sign: gradients untouched, every HVP wrong."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        s, d1, d2 = self._act
        self._act = (s, d1, lambda z: -d2(z))


class HalfGradient(MLP):
    """The classic forgotten factor 2 of the MSE gradient."""

    def _loss_and_grad(self, theta, x, y):
        loss, g = super()._loss_and_grad(theta, x, y)
        return loss, 0.5 * g


class NoLossCurvature(MLP):
    """R-pass that forgets the loss's own curvature (R{∂L/∂ŷ} = 0)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        f, b, rb = self._loss
        self._loss = (f, b, lambda Ry, cache: np.zeros_like(rb(Ry, cache)))


class AsymmetricHVP(MLP):
    def _hvp(self, theta, x, y, v):
        A = np.triu(np.ones((self.num_params, self.num_params)))        # not symmetric
        return super()._hvp(theta, x, y, v) + 1e-3 * (A @ v)


class NonlinearHVP(MLP):
    def _hvp(self, theta, x, y, v):
        return super()._hvp(theta, x, y, v) + 1e-3 * v * np.abs(v)


def _broken(cls, activation="softplus", loss="mse", sizes=(3, 4, 3, 2)):
    model, theta, x, y = _case(activation, loss, sizes)
    return cls(model.sizes, model.activation, model.loss_name), theta, x, y


# ---- the command ---------------------------------------------------------------------------


def test_command_passes_on_the_real_model(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    for act in ("relu", "tanh", "softplus"):
        for label in ("softmax_xent HVP", "Hessian vs FD2(loss)", "meta-grad s=5 SO vs FD",
                      "meta-grad s=5 FO vs FD (must differ)", "Meta-SGD dM/dalpha (per-param)"):
            assert f"{act}/" in out and label in out
        for label in ("gradient", "softmax_xent HVP", "Hessian vs Richardson FD(grad)",
                      "meta-grad s=5 SO vs FD", "meta-grad s=5 FO vs FD (must differ)"):
            assert f"{act}+BN/" in out and label in out                  # batch-norm rows
    assert "paper net 784-256-128-64-64-5 relu+BN/softmax_xent HVP" in out
    print(out.splitlines()[-1])


def test_command_exits_nonzero_when_a_derivative_is_wrong(monkeypatch, capsys):
    monkeypatch.setattr(GC, "MLP", FlippedSigma2)
    rc = GC.run(argparse.Namespace(seed=0, quick=True, backend="numpy"))
    out = capsys.readouterr().out
    assert rc == 1
    assert "softplus/mse HVP" in out and "FAIL" in out
    assert "relu/mse gradient" in out                   # the table is complete, not aborted


def test_missing_backend_is_skipped_not_failed(monkeypatch):
    real = maml.meta_gradient

    def no_numba(*args, **kwargs):
        if args[-1] == "numba" or kwargs.get("backend") == "numba":
            raise ImportError("No module named 'numba'")
        return real(*args, **kwargs)

    monkeypatch.setattr(maml, "meta_gradient", no_numba)
    model, theta, batch = GC.draw_meta_case(0, "tanh")
    row = GC.check_meta_gradient(model, theta, batch, 0.1, 2, backend="numba")
    assert row.status == "SKIP" and row.passed
    assert GC.check_meta_gradient(model, theta, batch, 0.1, 2).status == "PASS"


def test_unexpected_error_becomes_a_fail_row():
    [row] = GC._guard("boom", lambda: 1 / 0)
    assert row.status == "FAIL" and "ZeroDivisionError" in row.note


# ---- every checker can fail ------------------------------------------------------------


def test_flipped_sigma2_passes_gradient_but_fails_hvp_hessian_and_meta():
    model, theta, x, y = _broken(FlippedSigma2)
    assert GC.check_gradient(model, theta, x, y).status == "PASS"       # σ'' is not in ∇L
    assert GC.check_hvp(model, theta, x, y).status == "FAIL"
    vs_grad, vs_loss, symmetric = GC.check_hessian(*_broken(FlippedSigma2, sizes=(2, 3, 2))[:4])
    assert (vs_grad.status, vs_loss.status) == ("FAIL", "FAIL")
    assert symmetric.status == "PASS"                   # the wrong H is still symmetric
    meta_model, meta_theta, batch = GC.draw_meta_case(0, "softplus")
    broken = FlippedSigma2(meta_model.sizes, "softplus")
    row = GC.check_meta_gradient(broken, meta_theta, batch, 0.1, 2)
    print(row)
    assert row.status == "FAIL"


@pytest.mark.parametrize("num_directions", [None, 4], ids=["full", "directional"])
def test_wrong_gradient_fails(num_directions):
    row = GC.check_gradient(*_broken(HalfGradient), num_directions=num_directions)
    print(row)
    assert row.status == "FAIL" and row.rel_err > 0.1


@pytest.mark.parametrize("loss", ["mse", "softmax_xent"])
def test_missing_loss_curvature_fails(loss):
    row = GC.check_hvp(*_broken(NoLossCurvature, "relu", loss))
    print(row)
    assert row.status == "FAIL"


def test_asymmetric_hvp_fails_symmetry_checks():
    assert GC.check_symmetry(*_broken(AsymmetricHVP)).status == "FAIL"
    *_, symmetric = GC.check_hessian(*_broken(AsymmetricHVP, sizes=(2, 3, 2)))
    assert symmetric.status == "FAIL"


def test_nonlinear_hvp_fails_linearity():
    model, theta, x, y = _broken(NonlinearHVP)
    assert GC.check_linearity(model, theta, x, y).status == "FAIL"


def test_first_order_row_fails_if_fo_silently_equals_so(monkeypatch):
    model, theta, batch = GC.draw_meta_case(1, "tanh")
    assert GC.check_meta_gradient(model, theta, batch, 0.1, 2, first_order=True).status == "PASS"
    real = maml.meta_gradient
    monkeypatch.setattr(maml, "meta_gradient",
                        lambda m, t, b, a, s, fo=False, backend=None: real(m, t, b, a, s, False))
    row = GC.check_meta_gradient(model, theta, batch, 0.1, 2, first_order=True)
    assert row.expect == "differ" and row.status == "FAIL"


def test_wrong_metasgd_alpha_gradient_fails(monkeypatch):
    model, theta, batch = GC.draw_meta_case(2, "softplus")
    alpha = np.full(model.num_params, 0.1)
    assert GC.check_metasgd_alpha(model, theta, batch, alpha, 2).status == "PASS"
    real = maml.meta_gradient_alpha

    def off_by_one_step(m, t, b, a, s, first_order=False):              # forgets the last step
        return real(m, t, b, a, s - 1, first_order)

    monkeypatch.setattr(maml, "meta_gradient_alpha", off_by_one_step)
    assert GC.check_metasgd_alpha(model, theta, batch, alpha, 2).status == "FAIL"
    assert GC.check_metasgd_alpha(model, theta, batch, 0.1, 2).status == "FAIL"


def test_hessian_term_row_agrees_and_reports_its_size():
    model, theta, batch = GC.draw_meta_case(3, "tanh")
    row = GC.check_hessian_term(model, theta, batch, 0.1, 3)
    assert row.status == "PASS" and row.note.startswith("term size")
    assert float(row.note.split()[-1]) > 1e-3           # the term is not negligible here


# ---- the relative error and the rows ----------------------------------------------------


def test_rel_error_definition():
    assert GC.rel_error([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert GC.rel_error([1.0], [2.0]) == 0.5
    assert GC.rel_error([3.0, 4.0], [0.0, 0.0]) == 1.0
    assert GC.rel_error([1.0, 2.0], [2.0, 1.0]) == GC.rel_error([2.0, 1.0], [1.0, 2.0])


def test_nan_never_passes_and_differ_rows_invert():
    assert not GC.CheckResult("x", np.nan, np.nan, 1e-6).passed
    assert not GC.CheckResult("x", np.nan, np.nan, 1e-6, expect="differ").passed
    assert GC.CheckResult("x", 1.0, 0.5, 1e-4, expect="differ").passed
    assert not GC.CheckResult("x", 0.0, 1e-9, 1e-4, expect="differ").passed
    table = GC.format_table([GC.CheckResult("a label", 1e-9, 2e-10, 1e-6)])
    assert "a label" in table and "PASS" in table and "<=1e-06" in table


def test_bad_arguments_raise_input_errors():
    model, theta, x, y = _case()
    with pytest.raises(InputError, match="max_params"):
        GC.check_hessian(model, theta, x, y, max_params=5)
    with pytest.raises(InputError, match="theta"):
        GC.check_gradient(model, theta[:-1], x, y)
    with pytest.raises(InputError, match="eps"):
        GC.check_gradient(model, theta, x, y, eps=0.0)
    with pytest.raises(InputError, match="tol"):
        GC.check_hvp(model, theta, x, y, tol=-1.0)
    with pytest.raises(InputError, match="shape"):
        GC.compare("x", np.ones(3), np.ones(4), 1e-6)
    meta_model, meta_theta, batch = GC.draw_meta_case(0, "tanh")
    with pytest.raises(InputError, match="eps"):
        GC.check_metasgd_alpha(meta_model, meta_theta, batch, 0.1, 1, eps=0.05)


def test_relu_margin_sees_a_kink():
    model = MLP((1, 2, 1), "relu")
    theta = model.flatten([(np.array([[1.0, 1.0]]), np.array([0.0, 0.5])),
                           (np.ones((2, 1)), np.zeros(1))])
    assert GC.relu_margin(model, theta, np.array([[0.0]])) == 0.0
    assert GC.relu_margin(model, theta, np.array([[1.0]])) == 1.0


def test_same_seed_same_rows_and_another_seed_also_passes():
    a = GC.all_checks(seed=1, quick=True)
    b = GC.all_checks(seed=1, quick=True)
    key = lambda rows: [(r.label, repr(r.rel_err), repr(r.max_abs_err), r.status)  # noqa: E731
                        for r in rows]                                   # nan == nan (SKIP)
    assert key(a) == key(b)
    assert all(r.passed for r in a) and sum(r.skipped for r in a) <= 2
