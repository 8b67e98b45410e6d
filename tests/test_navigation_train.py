"""Training, checkpoints, resume and the commands of 2D navigation (mamlnp/run/navigation*.py).

Dimension legend: T tasks, N trajectories, H horizon, P parameters.

Every run here is tiny (T = 2, N = 3, H = 10, one hidden layer of 4): the protocol's sizes
belong to ``mamlnp train navigation``, not to the tests.
"""
import json
import os

import numpy as np

from mamlnp.run import navigation_eval as NE
import pytest

import mamlnp

from mamlnp.errors import CheckpointError, DivergenceError, InputError
from mamlnp.run import navigation as N
from mamlnp.run import navigation_checkpoint as NC
from mamlnp.run.cli import main

TINY = dict(meta_batch=2, trajectories=3, hidden=[4], progress=False, threads=1)


@pytest.fixture(autouse=True)
def _short_horizon(monkeypatch):
    monkeypatch.setitem(N.DEFAULTS, "horizon", 10)


@pytest.mark.filterwarnings("ignore:line search rejected")     # a tiny policy: it happens
@pytest.mark.parametrize("extra", [dict(), dict(method="pretrain", outer="adam"),
                                   dict(method="oracle"), dict(estimator="dice", outer="adam"),
                                   dict(estimator="lvc"), dict(inner_steps=2),
                                   dict(inner_steps=3, outer="adam")])
def test_resume_repeats_the_same_bits(tmp_path, extra):
    full = N.train_navigation(out=tmp_path / "a", iterations=4, checkpoint_every=2, **TINY, **extra)
    N.train_navigation(out=tmp_path / "b", iterations=2, **TINY, **extra)
    resumed = N.train_navigation(out=tmp_path / "b", resume=True, iterations=4, threads=2,
                                 progress=False)                    # same bits on 2 threads
    assert np.array_equal(full.theta, resumed.theta)
    assert np.array_equal(full.history, resumed.history, equal_nan=True)
    assert full.history.shape == (4, 3) and np.all(np.isfinite(full.history[:, :2]))
    policy, theta, cfg = mamlnp.load_checkpoint(str(tmp_path / "b"))     # the public API
    assert isinstance(policy, mamlnp.GaussianPolicy)
    assert np.array_equal(theta, full.theta) and cfg["iteration"] == 4
    assert policy.num_params == theta.size and policy.obs_dim == (4 if "oracle" in
                                                                 extra.values() else 2)
    assert (tmp_path / "b" / "history.csv").read_text().startswith("iteration,return_before")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["task"] == "navigation"


def test_maml_adapts_the_post_update_rollouts(tmp_path):
    """After adaptation the tasks sample with their own θ′ (different returns than before)."""
    res = N.train_navigation(iterations=1, **TINY)
    assert res.history[0, 2] != res.history[0, 1]
    assert res.config["policy"] == {"sizes": [2, 4, 2], "activation": "relu"}


def test_bad_options_are_named():
    for bad, name in ((dict(alpha=0.0), "alpha"), (dict(max_kl=-1.0), "max_kl"),
                      (dict(method="reptile"), "method"), (dict(estimator="x"), "estimator"),
                      (dict(backtrack_ratio=1.5), "backtrack_ratio"), (dict(meta_batch=0), "meta_batch"),
                      (dict(inner_steps=0), "inner_steps"), (dict(later_alpha=-0.1), "later_alpha"),
                      (dict(inner_steps=2, method="pretrain"), "inner_steps")):
        with pytest.raises(InputError, match=name):
            N.train_navigation(iterations=1, **{**TINY, **bad})


def test_resume_refuses_other_settings(tmp_path):
    N.train_navigation(out=tmp_path, iterations=1, **TINY)
    with pytest.raises(InputError, match="alpha"):
        N.train_navigation(out=tmp_path, resume=True, alpha=0.1, iterations=2, progress=False)
    with pytest.raises(InputError, match="already holds a run"):
        N.train_navigation(out=tmp_path, iterations=1, **TINY)


def test_line_search_that_never_satisfies_the_kl_keeps_theta():
    cfg = N.make_config(meta_batch=2, trajectories=3, hidden=[4])
    init = N.GaussianPolicy(**cfg["policy"]).init(np.random.default_rng(cfg["seed"]))
    with pytest.warns(RuntimeWarning, match="theta kept"):
        res = N.train_navigation(iterations=1, max_kl=1e-300, **TINY)
    np.testing.assert_array_equal(res.theta, init)


def test_a_policy_that_outputs_nan_stops_before_the_step(tmp_path):
    cfg = N.make_config(meta_batch=2, trajectories=3, hidden=[4])
    policy = N.GaussianPolicy(**cfg["policy"])
    state = N._State(np.full(policy.num_params, 1e200), np.random.default_rng(0))
    with pytest.raises(DivergenceError, match="diverged at iteration 1"):
        N.iteration(policy, cfg, state)
    assert np.all(state.theta == 1e200)


def test_crafted_checkpoints_are_refused(tmp_path):
    N.train_navigation(out=tmp_path, iterations=1, **TINY)
    state = NC.read(tmp_path)
    cfg = dict(state["config"], iteration=1)
    with pytest.raises(InputError, match="param.theta"):                  # θ of another size
        NC.save(tmp_path, cfg, state["theta"][:-1], state["rng_state"], 1, state["history"])
    with pytest.raises(InputError, match="config.policy"):
        NC.save(tmp_path, dict(cfg, policy={"sizes": [2, 10**9, 2], "activation": "relu"}),
                state["theta"], state["rng_state"], 1, state["history"])
    for key, bad in (("inner_steps", 0), ("later_alpha", -0.25), ("inner_steps", "2")):
        with pytest.raises(InputError, match=f"config.{key}"):
            NC.save(tmp_path, dict(cfg, **{key: bad}), state["theta"], state["rng_state"], 1,
                    state["history"])
    file = tmp_path / "checkpoint.npz"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        NC.load_checkpoint(tmp_path)


def test_cli_train_evaluate_and_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "navigation", "--iterations", "1", "--meta-batch", "2", "--trajectories",
            "3", "--hidden", "4", "--out", out, "--no-progress"]
    assert main(args) == 0
    assert "run saved in" in capsys.readouterr().out
    assert main(args[:-3] + ["--out", out, "--resume", "--iterations", "2", "--no-progress"]) == 0
    assert main(["train", "navigation", "--alpha", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["train", "sinusoid", "--method", "oracle", "--out", str(tmp_path / "y")]) == 2
    assert main(["train", "sinusoid", "--max-kl", "0.1", "--out", str(tmp_path / "y")]) == 2
    assert "--max-kl: not an option of 'train sinusoid'" in capsys.readouterr().err
    assert main(["train", "navigation", "--shots", "5", "--out", str(tmp_path / "y")]) == 2
    assert "--shots: not an option of 'train navigation'" in capsys.readouterr().err
    ev = str(tmp_path / "eval")
    assert main(["evaluate", out, "--max-steps", "1", "--no-plots", "--out", ev]) == 0
    text = capsys.readouterr().out
    assert "| MAML |" in text and "| random init |" in text
    rows = json.loads(open(os.path.join(ev, "results.json")).read())["rows"]
    assert len(rows["maml"]["per_goal"]) == 40 and len(rows["maml"]["per_goal"][0]) == 2


def test_reproduce_quick_writes_the_table_and_figures(tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", "navigation", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    for row in ("| MAML |", "| pretrained |", "| random init |", "| oracle |", "-40.41",
                "| MAML with ProMP's lvc estimator |"):
        assert row in text
    assert NC.read(str(out / "maml-lvc"))["config"]["estimator"] == "lvc"
    assert NC.read(str(out / "maml"))["config"]["estimator"] == "maml"
    for name in ("results.md", "results.json", "returns.png", "trajectories.png"):
        assert (out / name).stat().st_size > 0
    again = main(["reproduce", "navigation", "--quick", "--out", str(out), "--no-progress"])
    assert again == 0                                                # reuses the runs
    doc = json.loads((out / "results.json").read_text())
    assert doc["rows"]["oracle"]["summary"][0]["n"] == 40
    assert [e["sampler"] for e in doc["extra"]] == ["steps", "episodes"]
    assert doc["extra"][0]["goals"] == NE.paper_goals().tolist()
    md = (out / "results.md").read_text()
    assert "The paper's own 40 test goals" in md and "exactly 4 episodes" in md


def test_reproduce_refuses_a_run_trained_with_another_estimator(tmp_path, capsys):
    """An lvc run left in the MAML row's folder is not scored as the paper's estimator:
    reproduce names the option and keeps the run."""
    out = tmp_path / "repro"
    N.train_navigation(out=out / "maml", iterations=1, estimator="lvc",
                       **{**TINY, "hidden": [16, 16], "trajectories": 4})
    before = (out / "maml" / "checkpoint.npz").read_bytes()
    assert main(["reproduce", "navigation", "--quick", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trained with estimator='lvc'" in err and "needs estimator='maml'" in err
    assert (out / "maml" / "checkpoint.npz").read_bytes() == before


def test_paper_goals_are_the_test_scripts_legacy_seed_1_draws():
    """np.random.seed(1); np.random.uniform(-0.5, 0.5, (40, 2)): the first draw of the legacy
    Mersenne Twister at seed 1 is 0.417022004702574 (a fixed, published stream)."""
    g = NE.paper_goals()
    assert g.shape == (40, 2) and abs(g[0, 0] - (0.417022004702574 - 0.5)) < 1e-15
    assert np.all(np.abs(g) <= 0.5)


def test_ctrl_c_writes_a_checkpoint_and_resume_continues(tmp_path):
    import signal
    from mamlnp.run.train import TrainingInterrupted

    def press_ctrl_c(iteration, *_):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        N.train_navigation(out=tmp_path, iterations=5, callback=press_ctrl_c, **TINY)
    assert info.value.result.interrupted and NC.read(tmp_path)["iteration"] == 2
    resumed = N.train_navigation(out=tmp_path, resume=True, progress=False)
    full = N.train_navigation(iterations=5, **TINY)
    assert resumed.config["iteration"] == 5 and np.array_equal(resumed.theta, full.theta)


def test_evaluation_steps_are_0_5_then_0_25_and_the_ci_is_over_goals():
    from mamlnp.meta import rl as RL
    from mamlnp.run import navigation_eval as NE
    from mamlnp.tasks import navigation as nav
    policy = N.GaussianPolicy((2, 4, 2))
    theta, goals = policy.init(3), NE.held_out_goals(3)
    ret, ros = NE.adaptation_returns(policy, theta, goals, 5, 2, np.random.default_rng(9), keep=True)
    rng, th = np.random.default_rng(9), np.tile(theta, (3, 1))
    for s, lr in enumerate((0.5, 0.25, None)):                     # the same draws, by hand
        ro = nav.rollout_steps(policy, th, goals, 5, rng)          # 500 steps of whole episodes
        assert np.all(ro.lengths.sum(axis=1) >= 500)
        np.testing.assert_array_equal(ro.average_return(), ret[:, s])
        if lr is not None:
            th = np.stack([RL.inner_step(policy, t, smp, lr) for t, smp in zip(th, nav.to_samples(ro))])
    assert len(ros) == 3 and ret.shape == (3, 3)
    row = NE.summarize(ret)[1]
    assert row["n"] == 3 and row["ci95"] == pytest.approx(1.96 * ret[:, 1].std(ddof=1) / np.sqrt(3))


@pytest.mark.parametrize("runs, label, rows", [
    ((dict(method="maml"), dict(method="pretrain")), "| pretrained |",
     ["maml", "pretrain", "random"]),
    ((dict(estimator="lvc"), dict(estimator="maml")), "| MAML with ProMP's lvc estimator |",
     ["maml-lvc", "maml", "random"]),                # a MAML row names a non-paper estimator
])
def test_cli_evaluate_with_a_baseline_run(tmp_path, capsys, runs, label, rows):
    paths = [str(tmp_path / f"run{i}") for i in range(2)]
    for path, extra in zip(paths, runs):
        N.train_navigation(out=path, iterations=1, **TINY, **extra)
    ev = tmp_path / "eval"
    assert main(["evaluate", paths[0], "--baseline", paths[1],
                 "--max-steps", "0", "--no-plots", "--out", str(ev)]) == 0
    assert label in capsys.readouterr().out
    assert list(json.loads((ev / "results.json").read_text())["rows"]) == rows


@pytest.mark.filterwarnings("ignore:line search rejected")
def test_info_seconds_split_the_iteration_by_stage():
    """info["seconds"]: every stage of the iteration, in the order it runs (the benchmark's
    split, benchmarks/bench_navigation.py); Adam has no FVP, CG or line search."""
    for extra, keys in ((dict(), N.SECONDS), (dict(outer="adam"), N.SECONDS[:4]),
                        (dict(method="pretrain"), N.SECONDS)):
        infos = []
        N.train_navigation(iterations=1, callback=lambda *a: infos.append(a[3]), **TINY, **extra)
        seconds = infos[0]["seconds"]
        assert tuple(seconds) == keys and all(s >= 0.0 for s in seconds.values())
        assert seconds["sampling"] > 0.0 and seconds["meta_gradient"] > 0.0
        if "cg" in keys:
            assert seconds["cg"] > 0.0 and seconds["line_search"] > 0.0


def test_plain_fns_of_pretrain_match_the_general_points():
    """pretrain/oracle's FVP through the Jacobian factors equals the general R-pass Fisher
    (averaged over tasks, damped) to rounding, on 1 and 2 threads the same bits; the
    surrogate and KL at θ reuse the points (exp(0) = 1, KL 0)."""
    from mamlnp.check import rlcheck
    from mamlnp.nn.policy import PolicyPoint
    policy, theta, pre, _, _ = rlcheck.draw_rl_case(5, "relu", tasks=3)
    v = np.random.default_rng(0).standard_normal(policy.num_params)
    obj, grad, fvp, sur, kl = N._plain_fns(policy, theta, pre, 1e-5, threads=1)
    two = N._plain_fns(policy, theta, pre, 1e-5, threads=2)
    pts = [PolicyPoint(policy, theta, o, a) for o, a, *_ in pre]
    ref = sum(p.fisher_vp(v) for p in pts) / len(pts) + 1e-5 * v
    e = float(np.abs(fvp(v) - ref).max() / np.abs(ref).max())
    print(f"pretrain FVP, factored vs R-pass: rel err {e:.1e}")
    assert e < 1e-12 and np.array_equal(fvp(v), two[2](v)) and np.array_equal(grad, two[1])
    assert sur(theta) == float(np.mean([np.mean(t[2]) for t in pre])) and kl(theta) == 0.0
    theta_new = theta + 1e-2 * grad
    assert sur(theta_new) == two[3](theta_new) and kl(theta_new) == two[4](theta_new) > 0.0


def test_a_batch_too_large_for_memory_is_refused_before_training(tmp_path, monkeypatch):
    """The worst case of the steps sampler (1-step episodes) is checked up front, naming
    --trajectories; nothing is written. (Horizon 10 here: 20·(20·10 + 19) episodes of 10
    steps need 3.2 MB; exactly 20·20 episodes 0.29 MB.)"""
    import mamlnp.validation as V
    monkeypatch.setattr(V, "memory_limit", lambda: 2**20)             # 1 MiB
    with pytest.raises(InputError, match=r"trajectories: expected a size whose arrays fit"):
        N.train_navigation(out=tmp_path / "run", trajectories=20)
    assert not (tmp_path / "run").exists()
    N.make_config(trajectories=20, sampler="episodes")


@pytest.mark.filterwarnings("ignore:line search rejected")
def test_two_inner_steps_train_through_the_tests_schedule():
    """--inner-steps 2: three batches per task (at θ, θ_1, θ_2 = θ_1 + later_alpha g_1), the
    returns after each step reported, the chain's step sizes α then later_alpha; one inner
    step is the paper's iteration to the same bits whatever later_alpha is."""
    infos = []
    res = N.train_navigation(iterations=2, inner_steps=2, later_alpha=0.1,
                             callback=lambda *a: infos.append(a[3]), **TINY)
    assert res.config["inner_steps"] == 2 and res.config["later_alpha"] == 0.1
    assert all(len(i["after_steps"]) == 2 and i["after_steps"][0] == h
               for i, h in zip(infos, res.history[:, 2]))
    assert all("kl" in i for i in infos)
    one = N.train_navigation(iterations=2, **TINY)
    other = N.train_navigation(iterations=2, later_alpha=0.1, **TINY)
    assert np.array_equal(one.theta, other.theta) and not np.array_equal(one.theta, res.theta)
