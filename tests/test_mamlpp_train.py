"""``--method mamlpp`` in the trainer, and the test-time step sizes of every method.

Dimension legend: T tasks, K support, Q query, P parameters, L layers, s = inner_steps.

MAML++'s learned steps are a meta-learned array "lslr" (s·L,) beside θ; the epoch
e = iteration // epoch_length sets the MSL weights and the derivative order
(mamlnp.meta.mamlpp.schedule). Evaluation adapts every run the way it adapted in training
(mamlnp.run.evaluate.run_alpha): Meta-SGD's vector, MAML++'s (s, P) table, ANIL's head mask.
"""
import numpy as np
import pytest

import mamlnp
from mamlnp import InputError, MLP
from mamlnp.meta import maml as M, mamlpp as PP
from mamlnp.meta.anil import anil_alpha
from mamlnp.meta.variants import get_method
from mamlnp.run import runconfig as RC
from mamlnp.run.evaluate import adaptation_curve, run_alpha

TINY = dict(method="mamlpp", iterations=6, meta_batch=3, eval_every=2, val_tasks=4,
            checkpoint_every=2, progress=False, inner_steps=2, epoch_length=2,
            msl_epochs=2, fo_epochs=1, backend="numpy")


def test_config_keys_defaults_and_refusals():
    cfg = RC.make_config(method="mamlpp", iterations=3)
    assert (cfg["epoch_length"], cfg["msl_epochs"], cfg["fo_epochs"]) == (500, 10, 50)
    assert "epoch_length" not in RC.make_config(method="maml", iterations=3)
    with pytest.raises(InputError, match="fo_epochs.*mamlpp"):
        RC.make_config(method="maml", fo_epochs=2)
    with pytest.raises(InputError, match="^epoch_length:"):
        RC.make_config(method="mamlpp", epoch_length=0)
    with pytest.raises(InputError, match="^msl_epochs:"):
        RC.make_config(method="mamlpp", msl_epochs=-1)


@pytest.mark.parametrize("iteration", [0, 3, 5])
def test_the_trainer_step_is_mamlpp_gradient_at_its_epoch(iteration):
    cfg = RC.make_config(**{k: v for k, v in TINY.items() if k != "progress"})
    model, method = MLP(**cfg["model"]), get_method("mamlpp")
    params = method.init_params(model, model.init(1), cfg)
    params["lslr"] = np.linspace(0.005, 0.02, params["lslr"].size)           # (s·L,)
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(1), 3, 5, 5)
    loss, grads = method.step_at(iteration, model, params, batch, cfg, "numpy")
    epoch = iteration // cfg["epoch_length"]                              # 0, 1, 2
    w, fo = PP.schedule(epoch, 2, cfg["msl_epochs"], cfg["fo_epochs"])
    assert fo == (epoch < 1) and (np.allclose(w, [0.0, 1.0]) if epoch >= 2 else w[0] > 0)
    want = PP.mamlpp_gradient(model, params["theta"], batch, params["lslr"].reshape(2, -1),
                              w, fo)
    assert np.isclose(loss, want[0], rtol=1e-14, atol=0)
    assert np.allclose(grads["theta"], want[1], rtol=1e-13, atol=1e-16)
    assert np.allclose(grads["lslr"], want[2].ravel(), rtol=1e-13, atol=1e-16)


def test_train_checkpoint_resume_and_evaluate(tmp_path):
    out = str(tmp_path / "run")
    whole = mamlnp.meta_train(**TINY)                                     # no --out
    mamlnp.meta_train(out=out, **{**TINY, "iterations": 3})
    resumed = mamlnp.meta_train(out=out, resume=True, **TINY)
    assert np.array_equal(whole.theta, resumed.theta)                   # the same bits
    assert np.array_equal(whole.params["lslr"], resumed.params["lslr"])
    assert not np.allclose(resumed.params["lslr"], 0.01)                # learned
    model, theta, cfg = mamlnp.load_checkpoint(out)
    assert cfg["learned_lslr"].shape == (2, len(model.layout))
    table = run_alpha(cfg, model)                                        # (s, P)
    assert table.shape == (2, model.num_params)
    assert np.array_equal(table, PP.expand(model, resumed.params["lslr"]))
    with pytest.raises(InputError, match="model"):
        run_alpha(cfg)


def test_a_table_adapts_step_by_step_and_reuses_its_last_row():
    model = MLP([1, 8, 1])
    theta, (xs, ys) = model.init(0), (np.linspace(-1, 1, 5)[:, None],) * 2
    table = np.stack([np.full(model.num_params, 0.01), np.full(model.num_params, 0.03)])
    thetas = M.inner_loop(model, theta, xs, ys, table, 3)
    th = theta
    for a in (0.01, 0.03, 0.03):
        th = th - a * model._loss_and_grad(th, xs, ys)[1]
    assert np.array_equal(thetas[-1], th)
    assert np.array_equal(M.adapt(model, theta, xs, ys, table, 3, backend="numba"), th)
    with pytest.raises(InputError, match="alpha"):
        M.meta_gradient(model, theta, mamlnp.SinusoidTasks().sample(0, 2, 5, 5), table, 1)
    with pytest.raises(InputError, match="alpha.*table"):
        M.adapt(model, theta, xs, ys, np.zeros((2, 3)), 1)


def test_anil_runs_are_evaluated_with_the_head_only(tmp_path):
    out = str(tmp_path / "anil")
    mamlnp.meta_train(out=out, method="anil", iterations=2, meta_batch=3, eval_every=1,
                      val_tasks=4, progress=False)
    model, theta, cfg = mamlnp.load_checkpoint(out)
    alpha = run_alpha(cfg, model)
    assert np.array_equal(alpha, anil_alpha(model, cfg["alpha"]))
    batch = mamlnp.SinusoidTasks().sample(np.random.default_rng(3), 4, 5, 5)
    head = adaptation_curve(model, theta, batch, alpha, 2)
    full = adaptation_curve(model, theta, batch, cfg["alpha"], 2)
    assert np.array_equal(head[:, 0], full[:, 0]) and not np.allclose(head[:, 1:], full[:, 1:])


def test_an_lslr_of_the_wrong_length_is_refused(tmp_path):
    r = mamlnp.meta_train(**{**TINY, "iterations": 2})
    with pytest.raises(InputError, match="lslr.*6 = steps × layers.*nothing written"):
        mamlnp.save_checkpoint(str(tmp_path / "bad.npz"), dict(r.config),
                               {"theta": r.theta, "lslr": np.zeros(5)})
    assert not (tmp_path / "bad.npz").exists()
