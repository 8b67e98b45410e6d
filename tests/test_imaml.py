"""iMAML (mamlnp.meta.imaml): the implicit gradient, its CG solve, memory, input checks, training.

Dimension legend: T tasks, K support, Q query, P parameters, s = inner_steps.

Two independent references (docs/derivations/imaml.md, section 5): the exact linear
solve with a dense Hessian (numpy.linalg.solve) and centred finite differences of the
proximal meta-loss when the inner problem is solved to convergence. Relative errors are
printed (``pytest -s``).
"""
import tracemalloc

import numpy as np
import pytest

import mamlnp
from mamlnp import InputError, MLP, TaskBatch
from mamlnp.check import familycheck as FC
from mamlnp.check.fdcheck import dense_hessian, rel_error
from mamlnp.check.gradcheck import draw_meta_case
from mamlnp.meta import imaml, maml
from mamlnp.run import runconfig as RC


@pytest.mark.parametrize("activation", ["tanh", "softplus", "relu"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_cg_to_convergence_matches_the_dense_solve(activation, batch_norm):
    """rel <= 1e-8 whenever I + H_S/λ is positive definite for every task; where it is not
    (relu + BN here: H_S has an eigenvalue below −λ), CG must say so, and only then."""
    model, theta, batch = draw_meta_case(3, activation, batch_norm=batch_norm)
    row = FC.check_imaml_dense(model, theta, batch, FC.ALPHA, 20, FC.LAM)
    print(f"\n{activation} bn={batch_norm}: CG vs dense solve rel {row.rel_err:.1e} ({row.note})")
    _, _, info = imaml.imaml_gradient_info(model, theta, batch, FC.ALPHA, 20, FC.LAM, 200, 1e-14)
    for t in range(batch.num_tasks):
        xs, ys, _, _ = batch.task(t)
        phi = imaml.proximal_inner_loop(model, theta, xs, ys, FC.ALPHA, 20, FC.LAM)
        H = dense_hessian(model, phi, xs, ys)
        lowest = np.linalg.eigvalsh(np.eye(len(H)) + (H + H.T) / (2 * FC.LAM))[0]
        assert lowest > 0 or info["indefinite"][t] or info["residual"][t] < 1e-12
        if info["indefinite"][t]:
            assert lowest <= 0                       # CG can meet pᵀAp <= 0 only then
    if not info["indefinite"].any():
        assert row.rel_err <= 1e-8
    else:
        assert (activation, batch_norm) == ("relu", True)     # the one such case, seed 3


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_converged_implicit_gradient_matches_fd_and_an_early_one_does_not(activation):
    model, theta, batch = draw_meta_case(1, activation)
    res = [FC.proximal_residual(model, theta, *batch.task(t)[:2], FC.ALPHA, 200, FC.LAM)
           for t in range(batch.num_tasks)]
    assert max(res) < FC.CONVERGED                  # the inner problem is solved
    good = FC.check_imaml_fd(model, theta, batch, inner_steps=200)
    early = FC.check_imaml_fd(model, theta, batch, inner_steps=5, tol=1e-4, differ=True)
    print(f"\n{activation}: s=200 rel {good.rel_err:.1e}; s=5 rel {early.rel_err:.1e}")
    assert good.rel_err <= 1e-6 and not good.skipped
    assert early.rel_err > 1e-3                     # not the derivative of the 5-step loss


def test_cg_steps_truncate_the_solve_and_cg_tol_stops_it():
    model, theta, batch = draw_meta_case(0, "tanh")
    exact = FC.dense_imaml_gradient(model, theta, batch, FC.ALPHA, 20, FC.LAM)
    errs = [rel_error(imaml.imaml_gradient(model, theta, batch, FC.ALPHA, 20, FC.LAM, c, 1e-14)[1],
                      exact) for c in (1, 3, 100)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-10
    _, _, info = imaml.imaml_gradient_info(model, theta, batch, FC.ALPHA, 20, FC.LAM, 100, 1e-3)
    assert np.all(info["residual"] <= 1e-3) and np.all(info["cg_steps"] < 100)
    assert not info["indefinite"].any()


def test_conjugate_gradient_solves_spd_and_flags_indefinite():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    A, b = B @ B.T + np.eye(6), rng.standard_normal(6)
    x, steps, res, indef = imaml.conjugate_gradient(lambda v: A @ v, b, 6, 1e-14)
    assert rel_error(x, np.linalg.solve(A, b)) < 1e-12 and steps <= 6 and not indef
    _, _, _, indef = imaml.conjugate_gradient(lambda v: -A @ v, b, 6, 1e-14)
    assert indef


def test_proximal_inner_loop_is_the_written_recursion():
    model, theta, batch = draw_meta_case(0, "tanh")
    xs, ys, _, _ = batch.task(0)
    phi = theta.copy()
    for _ in range(3):
        phi = phi - 0.05 * (model.loss_and_grad(phi, xs, ys)[1] + 2.0 * (phi - theta))
    assert np.array_equal(imaml.proximal_inner_loop(model, theta, xs, ys, 0.05, 3, 2.0), phi)
    assert np.array_equal(imaml.proximal_inner_loop(model, theta, xs, ys, 0.05, 0, 2.0), theta)


def test_large_lambda_tends_to_first_order_maml_at_theta():
    """λ → ∞: φ_s → θ and (I + H/λ)⁻¹ → I, so the gradient → ∇L_Q(θ)."""
    model, theta, batch = draw_meta_case(0, "tanh")
    _, g = imaml.imaml_gradient(model, theta, batch, 1e-6, 5, 1e5, 50, 1e-14)   # αλ = 0.1
    _, g0 = maml.meta_gradient(model, theta, batch, 0.1, 0, backend="numpy")
    assert rel_error(g, g0) < 1e-3                   # ~‖H‖/λ


def _peak(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_inner_steps():
    """tracemalloc peak of one meta-gradient on the paper's 1-40-40-1 net (P = 1761), 2 tasks:
    iMAML's stays flat from s = 10 to 100, exact MAML's grows by the ~90 stored iterates."""
    model = MLP((1, 40, 40, 1))
    theta = model.init(0)
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(0), 2, 10, 10)
    peaks = {}
    for s in (10, 100):
        peaks["imaml", s] = _peak(lambda: imaml.imaml_gradient(model, theta, batch, 0.01, s, 1.0))
        peaks["maml", s] = _peak(lambda: maml.meta_gradient(model, theta, batch, 0.01, s,
                                                            backend="numpy"))
    print("\n" + ", ".join(f"{m} s={s}: {p / 1e3:.0f} kB" for (m, s), p in peaks.items()))
    assert peaks["imaml", 100] < 1.1 * peaks["imaml", 10]
    assert peaks["maml", 100] - peaks["maml", 10] > 80 * 8 * model.num_params


BAD = [("alpha", dict(alpha=0.0)), ("alpha", dict(alpha=np.ones(3))), ("lam", dict(lam=0.0)),
       ("lam", dict(lam=-1.0)), ("lam", dict(lam=np.nan)), ("cg_steps", dict(cg_steps=0)),
       ("cg_steps", dict(cg_steps=2.5)), ("cg_tol", dict(cg_tol=0.0)),
       ("inner_steps", dict(inner_steps=-1))]


@pytest.mark.parametrize("name,override", BAD)
def test_bad_arguments_name_themselves(name, override):
    model, theta, batch = draw_meta_case(0, "tanh")
    args = {**dict(alpha=0.1, inner_steps=2, lam=1.0), **override}
    with pytest.raises(InputError, match=f"^{name}:"):
        mamlnp.imaml_gradient(model, theta, batch, **args)


def test_bad_theta_and_batch():
    model, theta, batch = draw_meta_case(0, "tanh")
    with pytest.raises(InputError, match="theta"):
        mamlnp.imaml_gradient(model, theta[:-1], batch, 0.1, 2, 1.0)
    with pytest.raises(InputError, match="batch"):
        mamlnp.imaml_gradient(model, theta, "tasks", 0.1, 2, 1.0)
    wrong = TaskBatch.make(*(np.zeros((1, 3, 5)),) * 4)
    with pytest.raises(InputError, match="batch"):
        mamlnp.imaml_gradient(model, theta, wrong, 0.1, 2, 1.0)


def test_exported():
    assert "imaml_gradient" in mamlnp.__all__ and mamlnp.imaml_gradient is imaml.imaml_gradient


def test_config_keys_defaults_and_refusals():
    cfg = RC.make_config(method="imaml", lam=2.0, iterations=3)
    assert (cfg["lam"], cfg["cg_steps"]) == (2.0, 5) and not cfg["first_order"]
    assert "lam" not in RC.make_config(method="maml", iterations=3)
    with pytest.raises(InputError, match="lam.*imaml"):
        RC.make_config(method="maml", lam=2.0)
    with pytest.raises(InputError, match="^lam:"):
        RC.make_config(method="imaml", lam=0.0)
    with pytest.raises(InputError, match="^cg_steps:"):
        RC.make_config(method="imaml", cg_steps=0)


def test_train_and_resume_keep_lambda(tmp_path):
    out = str(tmp_path / "run")
    tiny = dict(method="imaml", iterations=4, meta_batch=3, eval_every=2, val_tasks=5,
                checkpoint_every=2, progress=False, lam=2.0, cg_steps=3)
    r = mamlnp.meta_train(out=out, **tiny)
    assert np.all(np.isfinite(r.history["meta_loss"])) and r.config["lam"] == 2.0
    r2 = mamlnp.meta_train(out=out, resume=True, **{**tiny, "iterations": 6})
    assert r2.config["iteration"] == 6 and r2.config["cg_steps"] == 3
    with pytest.raises(mamlnp.CheckpointError, match="lam"):
        mamlnp.meta_train(out=out, resume=True, **{**tiny, "iterations": 8, "lam": 3.0})


def test_the_trainer_step_is_imaml_gradient():
    from mamlnp.meta.variants import get_method
    cfg = RC.make_config(method="imaml", lam=1.5, cg_steps=4, inner_steps=3, iterations=1)
    model = MLP(**cfg["model"])
    theta = model.init(1)
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(1), 4, 10, 10)
    loss, grads = get_method("imaml").step(model, {"theta": theta}, batch, cfg, "numba")
    want = mamlnp.imaml_gradient(model, theta, batch, 0.01, 3, 1.5, cg_steps=4)
    assert loss == want[0] and np.array_equal(grads["theta"], want[1])


def test_dense_hessian_is_what_cg_inverts():
    """(I + H/λ) applied to the CG solution gives back ∇L_Q(φ_s) (one task)."""
    model, theta, batch = draw_meta_case(2, "softplus")
    xs, ys, xq, yq = batch.task(0)
    _, g, _ = imaml.task_imaml_gradient(model, theta, xs, ys, xq, yq, 0.05, 10, 4.0, 200, 1e-14)
    phi = imaml.proximal_inner_loop(model, theta, xs, ys, 0.05, 10, 4.0)
    H = dense_hessian(model, phi, xs, ys)
    assert rel_error(g + H @ g / 4.0, model._loss_and_grad(phi, xq, yq)[1]) < 1e-12
