"""Evaluation: adaptation curves, mean ± 95% CI, divergence accounting, the CLI.

Dimension legend: T tasks, K support points, Q query points, P parameters.
"""
import csv
import json
import os

import numpy as np
import pytest

import mamlnp
from mamlnp.run import evaluate as E
from mamlnp.run.cli import main
from mamlnp.errors import InputError


@pytest.fixture(scope="module")
def small():
    """A 1-10-10-1 model, a θ, and a 12-task pool."""
    model = mamlnp.MLP((1, 10, 10, 1), "relu", "mse")
    theta = model.init(seed=3, scheme="uniform")
    pool = mamlnp.EvaluationPool(mamlnp.SinusoidTasks(), num_tasks=12, shots=(5, 10), query=20)
    return model, theta, pool


# ---- statistics ------------------------------------------------------------------


def test_summarize_mean_and_ci():
    s = E.summarize([1.0, 2.0, 3.0, 4.0])
    std = np.sqrt(np.mean((np.arange(1, 5) - 2.5) ** 2))                # ddof = 0
    assert s["mean"] == 2.5 and s["n"] == 4 and s["diverged"] == 0
    assert s["std"] == pytest.approx(std, rel=1e-15)
    assert s["ci95"] == pytest.approx(1.96 * std / 2.0, rel=1e-15)


def test_summarize_counts_nonfinite_and_exploding_losses():
    losses = [1.0, np.nan, 3.0, np.inf, E.DIVERGED_MSE * 1.01, E.DIVERGED_MSE]
    s = E.summarize(losses)
    assert s["diverged"] == 3 and s["n"] == 3                           # the threshold itself is kept
    assert s["mean"] == pytest.approx((1.0 + 3.0 + E.DIVERGED_MSE) / 3, rel=1e-15)
    assert s["median"] == pytest.approx(E.DIVERGED_MSE * 1.005)          # NaN ranks as +inf
    empty = E.summarize([np.nan, np.inf])
    assert empty["n"] == 0 and empty["diverged"] == 2 and np.isnan(empty["mean"])


# ---- the adaptation curve ----------------------------------------------------------


def test_curve_step0_is_query_loss_and_step1_is_adapt(small):
    model, theta, pool = small
    batch = pool.batch(5)
    curve = E.adaptation_curve(model, theta, batch, 0.01, max_steps=3, backend="numpy")
    assert curve.shape == (12, 4)
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        assert curve[t, 0] == model.loss(theta, xq, yq)
        theta1 = mamlnp.adapt(model, theta, xs, ys, 0.01, 1, backend="numpy")
        assert curve[t, 1] == model.loss(theta1, xq, yq)


def test_vector_alpha_equal_to_scalar_gives_same_curve(small):
    model, theta, pool = small
    batch = pool.batch(10)
    a = E.adaptation_curve(model, theta, batch, 0.02, max_steps=2, backend="numpy")
    b = E.adaptation_curve(model, theta, batch, np.full(model.num_params, 0.02), 2, "numpy")
    np.testing.assert_array_equal(a, b)


def test_numba_curve_matches_numpy(small):
    model, theta, pool = small
    batch = pool.batch(10)
    a = E.adaptation_curve(model, theta, batch, 0.01, max_steps=5, backend="numpy")
    b = E.adaptation_curve(model, theta, batch, 0.01, max_steps=5, backend="numba")
    rel = np.max(np.abs(a - b) / np.abs(a))
    print(f"numba vs numpy adaptation curve: max relative difference {rel:.2e}")
    assert rel < 1e-12


def diverging_batch():
    """Two tasks for a linear model y = w x + b: task 0 is benign; task 1's support
    points sit at x ≈ 50, where the support loss has curvature λ ≈ 2(x² + 1) ≈ 5000,
    so SGD at α = 0.01 multiplies the error by |1 − αλ| ≈ 49 per step."""
    xs = np.array([[[-1.0], [0.5], [1.0]], [[49.0], [50.0], [51.0]]])      # (T=2, K=3, 1)
    ys = 2.0 * xs + 1.0
    xq = np.array([[[-0.5], [0.0], [0.7]], [[-1.0], [0.0], [1.0]]])        # (T, Q=3, 1)
    return mamlnp.TaskBatch.make(xs, ys, xq, 2.0 * xq + 1.0)


def test_diverging_task_is_counted_not_dropped():
    model = mamlnp.MLP((1, 1), "relu", "mse")                          # linear: ŷ = w x + b
    theta = np.zeros(model.num_params)
    curve = E.adaptation_curve(model, theta, diverging_batch(), 0.01, max_steps=10)
    print("per-task query MSE after 0, 1, 10 steps:\n", curve[:, [0, 1, 10]])
    assert curve[1, 10] > E.DIVERGED_MSE or not np.isfinite(curve[1, 10])
    assert curve[0, 10] < curve[0, 0]                                  # the benign task learns
    s0, s10 = E.summarize(curve[:, 0]), E.summarize(curve[:, 10])
    assert s0["diverged"] == 0 and s0["n"] == 2
    assert s10["diverged"] == 1 and s10["n"] == 1
    assert s10["mean"] == curve[0, 10]                                 # mean over the other task


def test_results_json_is_strict_even_with_diverged_tasks(tmp_path):
    model = mamlnp.MLP((1, 1), "relu", "mse")
    pool = mamlnp.EvaluationPool(mamlnp.SinusoidTasks(x_range=(1e10, 2e10)), num_tasks=3,
                                 shots=(5,), query=4)                # every task overflows
    res = E.evaluate(model, np.zeros(model.num_params), 0.01, pool=pool, shots=(5,),
                     max_steps=10, label="lin")
    assert res.row(5, 10)["diverged"] == 3 and np.isnan(res.row(5, 10)["mean"])
    _, json_path = E.write_results([res], tmp_path)
    doc = json.loads(open(json_path).read(), parse_constant=lambda c: pytest.fail(c))
    assert doc["rows"][-1]["mean"] is None and doc["curves"]["lin"]["5"][0][-1] is None


# ---- evaluate() and its files ------------------------------------------------------


def test_evaluate_rows_and_per_k_alpha(small):
    model, theta, pool = small
    res = E.evaluate(model, theta, {5: 0.01, 10: 0.02}, pool=pool, shots=(5, 10), max_steps=2,
                     label="m")
    assert len(res.rows) == 2 * 3 and res.alpha == {5: 0.01, 10: 0.02}
    assert res.row(10, 2)["alpha"] == 0.02 and res.row(10, 2)["n"] == 12
    assert res.row(5, 1)["mean"] == pytest.approx(res.curves[5][:, 1].mean(), rel=1e-14)
    with pytest.raises(InputError, match="alpha: no step size for K=10"):
        E.evaluate(model, theta, {5: 0.01}, pool=pool, shots=(5, 10), max_steps=1)
    with pytest.raises(InputError, match="shots"):
        E.evaluate(model, theta, 0.01, pool=pool, shots=(7,), max_steps=1)


def test_evaluate_accepts_one_int_k_and_refuses_bad_shots_and_pool(small):
    model, theta, pool = small
    res = E.evaluate(model, theta, 0.01, pool=pool, shots=5, max_steps=1)   # int -> (5,)
    assert sorted(res.curves) == [5] and res.curves[5].shape == (12, 2)
    for shots, match in (((0,), r"shots\[0\]: expected a positive integer"),
                         ((), "shots: expected at least one K"),
                         ("5", "shots")):
        with pytest.raises(InputError, match=match):
            E.evaluate(model, theta, 0.01, pool=pool, shots=shots, max_steps=1)
    with pytest.raises(InputError, match="pool: expected a mamlnp.EvaluationPool"):
        E.evaluate(model, theta, 0.01, pool="x", shots=(5,), max_steps=1)


def test_write_results_roundtrip(small, tmp_path):
    model, theta, pool = small
    res = E.evaluate(model, theta, 0.01, pool=pool, shots=(5,), max_steps=1, label="m")
    csv_path, json_path = E.write_results([res], tmp_path / "eval")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["shots"]), int(r["steps"])) for r in rows] == [(5, 0), (5, 1)]
    assert float(rows[1]["mean"]) == pytest.approx(res.row(5, 1)["mean"], rel=1e-12)
    doc = json.load(open(json_path))
    assert doc["diverged_mse"] == E.DIVERGED_MSE and len(doc["rows"]) == 2
    np.testing.assert_array_equal(np.array(doc["curves"]["m"]["5"]), res.curves[5])


# ---- the command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from mamlnp.run.train import meta_train
    out = tmp_path_factory.mktemp("run") / "maml"
    meta_train(method="maml", iterations=20, meta_batch=4, hidden=[10, 10], eval_every=10,
               out=str(out), progress=False)
    return str(out)


def test_cli_evaluate_writes_table_files_and_figures(trained_run, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["evaluate", trained_run, "--shots", "5", "10", "--max-steps", "2",
                 "--baseline", trained_run, "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "maml (baseline)" in text and "diverged" in text
    for name in ("results.csv", "results.json", "figure2.png", "figure3.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3                                       # methods × K × steps
    assert all(int(r["n"]) + int(r["diverged"]) == 600 for r in rows)


def test_cli_evaluate_default_out_is_run_eval(trained_run):
    assert main(["evaluate", trained_run, "--shots", "5", "--max-steps", "1", "--no-plots"]) == 0
    assert os.path.exists(os.path.join(trained_run, "eval", "results.csv"))


def test_cli_evaluate_bad_paths_name_the_argument(trained_run, tmp_path, capsys):
    # mamlnp.run.cli.main turns the InputError into one stderr line and exit code 2
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "mamlnp evaluate: error: DIR: no such run" in capsys.readouterr().err
    assert main(["evaluate", trained_run, "--baseline", str(tmp_path / "nope")]) == 2
    assert "mamlnp evaluate: error: --baseline: no such run" in capsys.readouterr().err
