"""``inner_bn`` ("--inner-bn fixed"): batch norm's γ, β kept out of MAML's inner loop and
learned by the outer optimizer only (cbfinn/maml's convention).

Dimension legend: T tasks, K support, Q query images (per class), P parameters, s inner steps.

The inner step is θ_{k+1} = θ_k − (α m) ⊙ ∇L_S(θ_k), m (P,) = 0 on every γ, β
(``model.bn_layout``), 1 elsewhere (mamlnp.meta.variants.inner_alpha); the meta-gradient is
MAML's with that vector step, ḡ_k = ḡ_{k+1} − H_S(θ_k)((α m) ⊙ ḡ_{k+1})
(docs/derivations/meta-gradient.md). Checked here: the structure (γ, β never move; the
meta-gradient written out from the model's own gradient and HVP), finite differences of the
masked meta-objective written independently, the option end to end (config, CLI, refusals,
resume to the same bits, evaluation with the masked α). The runs use test_omniglot_train.py's
synthetic Omniglot and test_omniglot_conv.py's two-block ConvNet of 4 filters.
"""
import json
import os

import numpy as np
import pytest

from mamlnp import ConvNet, InputError, MLP, load_checkpoint, meta_train
from mamlnp.errors import CheckpointError
from mamlnp.meta import maml as M
from mamlnp.nn.spec import spec_of
from mamlnp.meta.variants import bn_mask, get_method, inner_alpha, run_alpha
from mamlnp.run import classify as CL
from mamlnp.run import classify_report as CR
from mamlnp.run import checkpoint as C
from mamlnp.run import runconfig as RC
from mamlnp.run.checkpoint import read_checkpoint
from mamlnp.run.cli import main
from mamlnp.tasks.base import TaskBatch

from test_omniglot_train import data_dir  # noqa: F401  (the synthetic Omniglot fixture)

TINY = dict(model="conv", channels=[4, 4], meta_batch=2, val_tasks=3, eval_every=2)


def tiny_case(activation="softplus", T=2, K=2, Q=2, seed=0):
    """A two-block ConvNet on 7×7 images (3 ways), a jittered θ (γ away from 1, β from 0),
    and T episodes of K support and Q query images per class."""
    m = ConvNet(in_shape=(1, 7, 7), channels=(3, 2), ways=3, stride=2, activation=activation)
    rng = np.random.default_rng(seed)
    theta = m.init(seed) + 0.3 * rng.standard_normal(m.num_params)
    x = rng.standard_normal((T, 3 * (K + Q), 49))
    y = np.tile(np.eye(3), (T, K + Q, 1))
    return m, theta, TaskBatch.make(x[:, :3 * K], y[:, :3 * K], x[:, 3 * K:], y[:, 3 * K:])


def rel(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


# ---- the mask and the step ----------------------------------------------------------------


def test_the_mask_is_every_batch_norm_gamma_and_beta():
    for model in (ConvNet(in_shape=(1, 7, 7), channels=(3, 2), ways=3),
                  MLP((6, 5, 4, 3), "relu", "softmax_xent", batch_norm=True)):
        m = bn_mask(model)
        bn = [(g, e) for g, e in (b for b in model.bn_layout if b is not None)]
        zero = sorted(i for (g0, g1), (e0, e1) in bn for i in (*range(g0, g1), *range(e0, e1)))
        assert np.flatnonzero(m == 0).tolist() == zero and np.all(m[m != 0] == 1)
        assert np.array_equal(inner_alpha(model, 0.4, "fixed"), 0.4 * m)
        assert inner_alpha(model, 0.4, "adapt") == 0.4
    with pytest.raises(InputError, match="^inner_bn: 'fixed' needs a model with batch norm"):
        inner_alpha(MLP((1, 4, 1)), 0.4, "fixed")
    with pytest.raises(InputError, match="^inner_bn: expected one of"):
        inner_alpha(ConvNet(in_shape=(1, 7, 7), channels=(3,), ways=3), 0.4, "frozen")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_masked_meta_gradient_written_out(backend):
    """s = 1. θ'_t = θ − (α m) ⊙ ∇L_S(θ) keeps θ's γ, β exactly; FO: the mean of ∇L_Q(θ'_t)
    (so its γ, β rows are ∇L_Q at a θ' whose γ, β are θ's); SO: the mean of
    ḡ − H_S(θ)((α m) ⊙ ḡ), ḡ = ∇L_Q(θ'_t), from the model's own gradient and HVP."""
    model, theta, batch = tiny_case()
    a = inner_alpha(model, 0.5, "fixed")
    bn = bn_mask(model) == 0
    fo, so = np.zeros(model.num_params), np.zeros(model.num_params)
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        adapted = theta - a * model.loss_and_grad(theta, xs, ys)[1]
        assert np.array_equal(adapted[bn], theta[bn]) and not np.array_equal(adapted, theta)
        g = model.loss_and_grad(adapted, xq, yq)[1]
        fo += g / batch.num_tasks
        so += (g - model.hvp(theta, xs, ys, a * g)) / batch.num_tasks
    got_fo = M.meta_gradient(model, theta, batch, a, 1, True, backend)[1]
    got_so = M.meta_gradient(model, theta, batch, a, 1, False, backend)[1]
    print(f"\n{backend}: FO rel {rel(got_fo, fo):.1e} (γ, β rows {rel(got_fo[bn], fo[bn]):.1e}), "
          f"SO rel {rel(got_so, so):.1e}")
    assert rel(got_fo, fo) < 1e-12 and rel(got_fo[bn], fo[bn]) < 1e-12
    assert rel(got_so, so) < 1e-12
    adapt = M.meta_gradient(model, theta, batch, 0.5, 1, False, backend)[1]
    assert rel(got_so[bn], adapt[bn]) > 1e-3                     # the option changes something


def masked_meta_loss(model, theta, batch, alpha, s):
    """(1/T) Σ_t L_Q,t(θ_s), θ_{k+1} = θ_k − α ∇L_S(θ_k) on the entries not in a batch-norm
    γ, β only, those copied as they are: the objective written without the mask."""
    bn = [b for b in model.bn_layout if b is not None]
    total = 0.0
    for t in range(batch.num_tasks):
        xs, ys, xq, yq = batch.task(t)
        th = theta.copy()
        for _ in range(s):
            g = model.loss_and_grad(th, xs, ys)[1]
            new = th - alpha * g
            for (g0, g1), (e0, e1) in bn:                     # γ, β: not adapted
                new[g0:g1], new[e0:e1] = th[g0:g1], th[e0:e1]
            th = new
        total += model.loss(th, xq, yq)
    return total / batch.num_tasks


@pytest.mark.parametrize("s", [1, 2])
def test_the_masked_second_order_meta_gradient_against_finite_differences(s):
    model, theta, batch = tiny_case("softplus", seed=s)
    got = M.meta_gradient(model, theta, batch, inner_alpha(model, 0.4, "fixed"), s,
                          backend="numba")[1]
    eps, fd = 1e-5, np.empty(model.num_params)
    for i in range(model.num_params):                            # centred, every entry
        e = np.zeros(model.num_params)
        e[i] = eps
        fd[i] = (masked_meta_loss(model, theta + e, batch, 0.4, s)
                 - masked_meta_loss(model, theta - e, batch, 0.4, s)) / (2 * eps)
    err = np.linalg.norm(got - fd) / np.linalg.norm(fd)
    print(f"\ns = {s}, P = {model.num_params}: masked SO meta-gradient vs centred FD: "
          f"rel {err:.1e}")
    assert err < 1e-7


@pytest.mark.parametrize("method", ["maml", "fomaml"])
def test_the_methods_step_uses_the_masked_alpha_on_both_backends(method):
    model, theta, batch = tiny_case()
    cfg = {"alpha": 0.5, "inner_steps": 2, "inner_bn": "fixed"}
    fo = method == "fomaml"
    want = M.meta_gradient(model, theta, batch, inner_alpha(model, 0.5, "fixed"), 2, fo,
                           backend="numpy")
    for backend in ("numpy", "numba"):                       # numba: _step_numba's (P,) α
        loss, g = get_method(method).step(model, {"theta": theta}, batch, cfg, backend)
        assert abs(loss - want[0]) <= 1e-12 * abs(want[0]) and rel(g["theta"], want[1]) < 1e-12
    unmasked = get_method(method).step(model, {"theta": theta}, batch,
                                       {**cfg, "inner_bn": "adapt"}, "numba")[1]["theta"]
    assert rel(unmasked, want[1]) > 1e-6
    assert np.array_equal(get_method(method).adapt_alpha(
        {}, {**cfg, "model": spec_of(model)}), inner_alpha(model, 0.5, "fixed"))


# ---- the config ---------------------------------------------------------------------------


def test_the_config_key():
    conv = RC.make_config(task="omniglot", model="conv", method="fomaml", inner_bn="fixed")
    assert conv["inner_bn"] == "fixed" and RC.make_config(conv)["inner_bn"] == "fixed"
    assert RC.make_config()["inner_bn"] == "adapt"                      # every run records it
    assert RC.make_config(task="omniglot", inner_bn="fixed")["model"]["batch_norm"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="sinusoid", inner_bn="fixed"), "inner_bn: 'fixed' (--inner-bn fixed) needs a "
                                              "model with batch norm"),
    (dict(task="omniglot", batch_norm=False, inner_bn="fixed"), "needs a model with batch norm"),
    (dict(task="omniglot", method="reptile", inner_bn="fixed"), "inner_bn: 'fixed' (--inner-bn "
                                                                "fixed) applies only to methods "
                                                                "maml and fomaml"),
    (dict(task="omniglot", method="anil", inner_bn="fixed"), "only to methods maml and fomaml"),
    (dict(task="omniglot", model="conv", inner_bn="frozen"), "inner_bn: expected one of"),
    (dict(task="omniglot", model="conv", inner_bn=True), "inner_bn: expected one of"),
])
def test_where_it_does_not_apply_it_is_refused(kwargs, message):
    with pytest.raises(InputError) as err:
        RC.make_config(**kwargs)
    print(err.value)
    assert message in str(err.value)


# ---- runs: train, resume, evaluate ----------------------------------------------------------


def test_three_plus_three_iterations_are_six_bit_for_bit(data_dir, tmp_path, capsys):  # noqa: F811
    """--inner-bn fixed --first-order on a tiny ConvNet from the command line: 6 iterations in
    one sitting, and 3 then --resume to 6 (without repeating --inner-bn: the run keeps it)."""
    common = ["--data-dir", data_dir, "--channels", "4", "4", "--meta-batch", "2",
              "--eval-every", "3", "--checkpoint-every", "3", "--no-progress"]
    train = ["train", "omniglot", "--model", "conv", "--first-order"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert main([*train, "--inner-bn", "fixed", "--iterations", "6", "--out", one, *common]) == 0
    assert main([*train, "--inner-bn", "fixed", "--iterations", "3", "--out", two, *common]) == 0
    assert main([*train, "--iterations", "6", "--out", two, "--resume", *common]) == 0
    a, b = read_checkpoint(one), read_checkpoint(two)
    assert np.array_equal(a["params"]["theta"], b["params"]["theta"])            # the same bits
    assert np.array_equal(a["history"], b["history"]) and b["iteration"] == 6
    for g in ("m", "v"):
        assert np.array_equal(a["optimizer_state"]["theta"][g], b["optimizer_state"]["theta"][g])
    for run in (one, two):
        with open(os.path.join(run, "config.json")) as f:
            assert json.load(f)["inner_bn"] == "fixed"
    assert main(["evaluate", one, "--max-steps", "1", "--no-plots"]) == 0      # masked α
    with open(os.path.join(one, "eval", "omniglot_results.csv"), encoding="utf-8") as f:
        assert "2.0 (γ, β fixed)" in f.read()
    capsys.readouterr()
    assert main([*train, "--inner-bn", "adapt", "--iterations", "8", "--out", two, "--resume",
                 *common]) == 2
    err = capsys.readouterr().err
    print(err)
    assert "inner_bn='fixed'" in err and "inner_bn='adapt' was requested" in err


def test_a_run_without_the_key_resumes_as_adapt(data_dir, tmp_path):  # noqa: F811
    """A run written before the key (crafted: the key removed, the checksum recomputed) means
    "adapt": it resumes, and to the bits of an "adapt" run."""
    run = str(tmp_path / "old")
    meta_train(task="omniglot", data_dir=data_dir, iterations=1, progress=False, out=run,
               backend="numpy", **TINY)
    file = os.path.join(run, "checkpoint.npz")
    with np.load(file) as z:
        arrays = {k: z[k] for k in z.files if k != "checksum"}
    config = json.loads(str(arrays["config_json"]))
    del config["inner_bn"]                                        # as written before the key
    arrays["config_json"] = np.array(json.dumps(config))
    arrays["checksum"] = np.array(C.checksum(arrays))
    np.savez(file, **arrays)
    assert "inner_bn" not in read_checkpoint(run)["config"]
    old = meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False, out=run,
                     resume=True, model="conv")
    new = meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                     backend="numpy", **TINY)
    assert old.config["inner_bn"] == "adapt" and np.array_equal(old.theta, new.theta)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(inner_bn="frozen"), "inner_bn: expected one of ['adapt', 'fixed']"),
    (lambda c: c.update(inner_bn=1), "inner_bn: expected one of ['adapt', 'fixed'], got 1"),
    (lambda c: c.update(method="maml", inner_bn="fixed", model={
        "sizes": [784, 5], "activation": "relu", "loss": "softmax_xent"}, init="normal"),
     "inner_bn: 'fixed' (--inner-bn fixed) needs a model with batch norm"),
])
def test_a_crafted_inner_bn_is_refused_naming_the_key(data_dir, tmp_path,  # noqa: F811
                                                      change, message):
    from test_omniglot_conv import _crafted
    bad = _crafted(tmp_path, data_dir, change)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    print(err.value)
    assert message in str(err.value)


def test_validation_and_evaluate_adapt_with_the_masked_alpha(data_dir, tmp_path):  # noqa: F811
    res = meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                     backend="numba", method="fomaml", inner_bn="fixed", **TINY)
    model, theta, config = load_checkpoint(res.out) if res.out else (res.model, res.theta,
                                                                     res.config)
    masked = inner_alpha(model, config["alpha"], "fixed")
    assert np.array_equal(run_alpha(config, model), masked)
    assert np.array_equal(run_alpha(config, model, 0.3), inner_alpha(model, 0.3, "fixed"))
    with pytest.raises(InputError, match="pass its model"):
        run_alpha(config)
    family = RC.family_for(res.config)
    episodes = family.episodes("test", 6, 1, 1, seed=CL.TEST_SEED)
    out = CR.evaluate_run(model, theta, config, max_steps=2, episodes=6, backend="numba")
    want = CL.accuracy_curve(model, theta, episodes, masked, 2, backend="numpy")
    assert np.array_equal(out["accuracy"], want)
    assert out["rows"][0]["alpha"] == f"{config['alpha']} (γ, β fixed)"
    given = CR.evaluate_run(model, theta, config, alpha=masked * 0.5, max_steps=1, episodes=6,
                            backend="numba")                     # a caller's (P,) step as given
    assert given["rows"][0]["alpha"] == "per-parameter"
    val = CL.validation_batch(family, res.config)
    assert res.history["val_accuracy"][-1] == CL.accuracy_curve(
        model, theta, val, masked, 1, backend="numpy")[:, 1].mean()


def test_the_batch_norm_mlp_runs_it_on_the_numpy_path(data_dir):  # noqa: F811
    """The batch-norm MLP's kernels take a scalar α only: its masked step is the reference's,
    on either backend, and a run trains."""
    model = MLP((784, 8, 5), "relu", "softmax_xent", batch_norm=True)
    theta = model.init(0, scheme="normal") + 0.01
    rng = np.random.default_rng(0)
    y = np.tile(np.eye(5), (2, 1, 1))
    batch = TaskBatch.make(rng.random((2, 5, 784)), y, rng.random((2, 5, 784)), y)
    a = inner_alpha(model, 0.4, "fixed")
    want = M.meta_gradient(model, theta, batch, a, 1, backend="numpy")
    got = get_method("maml").step(model, {"theta": theta}, batch,
                                  {"alpha": 0.4, "inner_steps": 1, "inner_bn": "fixed"}, "numba")
    assert got[0] == want[0] and np.array_equal(got[1]["theta"], want[1])
    res = meta_train(task="omniglot", data_dir=data_dir, iterations=2, progress=False,
                     method="fomaml", inner_bn="fixed", hidden=[8], meta_batch=2, val_tasks=2,
                     eval_every=1)
    assert res.config["inner_bn"] == "fixed" and np.isfinite(res.history["val_accuracy"]).all()


# ---- the command line ---------------------------------------------------------------------


def test_the_command_line_refusals(data_dir, tmp_path, capsys):  # noqa: F811
    out = ["--out", str(tmp_path / "bad"), "--iterations", "1", "--no-progress"]
    for argv, message in (
            (["train", "sinusoid", "--inner-bn", "fixed"], "needs a model with batch norm"),
            (["train", "omniglot", "--data-dir", data_dir, "--model", "conv", "--method",
              "reptile", "--inner-bn", "fixed"], "method: expected one of"),
            (["train", "omniglot", "--data-dir", data_dir, "--method", "imaml", "--inner-bn",
              "fixed"], "applies only to methods maml and fomaml"),
            (["train", "navigation", "--inner-bn", "fixed"], "--inner-bn: not an option"),
    ):
        assert main([*argv, *out]) == 2
        err = capsys.readouterr().err
        print(err.strip())
        assert message in err
    assert main(["reproduce", "--inner-bn", "fixed"]) == 2
    assert "--inner-bn: does not apply to reproduce sinusoid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "omniglot", "--inner-bn", "frozen"])
    assert "invalid choice: 'frozen'" in capsys.readouterr().err


def test_help_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--inner-bn {adapt,fixed}" in text and "cbfinn/maml's convention" in text
    from argparse import Namespace
    args = Namespace(model="conv", inner_bn="fixed", quick=True, iterations=None, out="o",
                     data_dir=None, backend=None, seed=0)
    assert CR._again(args, "o") == ("python -m mamlnp reproduce omniglot --model conv "
                                     "--inner-bn fixed --quick --out o")


def test_reproduce_omniglot_passes_it_through(data_dir, tmp_path):  # noqa: F811
    path = CR.reproduce_omniglot(str(tmp_path), iterations=1, data_dir=data_dir, progress=False,
                                 quick=True, episodes=4, model="conv", channels=[4, 4],
                                 meta_batch=2, val_tasks=2, backend="numba", inner_bn="fixed")
    text = open(path, encoding="utf-8").read()
    assert "--inner-bn fixed: batch norm's γ, β learned in the outer loop only" in text
    run = os.path.join(str(tmp_path), "omniglot-5way-1shot-conv-maml")
    assert load_checkpoint(run)[2]["inner_bn"] == "fixed"
    with open(os.path.join(run, "eval", "omniglot_results.csv"), encoding="utf-8") as f:
        assert "(γ, β fixed)" in f.read()
