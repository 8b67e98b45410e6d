"""The fused training meta-iteration (mamlnp/fast/mlp/fused.py and train_kernels.py)
against the step-by-step one: the SAME BITS, not a tolerance.

Dimension legend: T tasks, K support points, Q query points, N = K + Q, P parameters,
s = inner_steps.

The fused path replaces, on the Numba backend, sample_batch + MAML.step + the guard +
Adam._step by one kernel call; a run must not change by one bit. Each twin is checked
here: the compiled Adam against Adam._step, the compiled task inputs against
SinusoidTasks.sample (with the generator's state after the draws), one fused step against
meta_gradient_unchecked + Adam._step (1 and 2 threads, and run as Python), whole runs
(also interrupted and resumed) with and without the fused path, and divergence.
"""
import numba
import numpy as np
import pytest

import mamlnp
from mamlnp.fast.mlp import kernelset as fast
from mamlnp.fast.mlp import fused as FU
from mamlnp.fast.common import adam as CA
from mamlnp.run import trainstep as TS
from mamlnp.errors import DivergenceError
from mamlnp.fast.mlp import maml_kernels as MK
from mamlnp.fast.mlp import mlp_kernels as MLK
from mamlnp.fast.mlp import train_kernels as TK
from mamlnp.fast.common.bundles import Inner, SinusoidDraws
from mamlnp.meta.optim import Adam
from mamlnp.run.runguard import DivergenceGuard
from mamlnp.run.runconfig import make_config
from mamlnp.meta.variants import get_method


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---- Adam: the kernel against Adam._step ----------------------------------------------------


def adam_hp(opt, t):
    return np.array([opt.lr, opt.beta1, 1.0 - opt.beta1, opt.beta2, 1.0 - opt.beta2, opt.eps,
                     1.0 - opt.beta1 ** t, 1.0 - opt.beta2 ** t])


@pytest.mark.parametrize("kernel", ["compiled", "py_func"])
@pytest.mark.parametrize("lr, beta1, beta2, eps", [(1e-3, 0.9, 0.999, 1e-8),
                                                   (0.37, 0.5, 0.7, 1e-3)])
def test_adam_update_gives_the_bits_of_adam_step(kernel, lr, beta1, beta2, eps):
    update = CA.adam_update if kernel == "compiled" else CA.adam_update.py_func
    rng = np.random.default_rng(5)
    P = 257
    ref, opt = Adam(lr, beta1, beta2, eps), Adam(lr, beta1, beta2, eps)
    theta_ref = theta = rng.standard_normal(P)
    m, v = np.zeros(P), np.zeros(P)
    for t in range(1, 8):                          # gradients of very different magnitudes
        g = rng.standard_normal(P) * 10.0 ** rng.integers(-150, 150, P)
        g[:3] = (0.0, -0.0, 1e-320)
        theta_ref = ref._step(theta_ref, g)
        out, m_out, v_out = np.empty(P), np.empty(P), np.empty(P)
        update(theta, g, m, v, adam_hp(opt, t), out, m_out, v_out)
        theta, m, v = out, m_out, v_out
        assert same(theta, theta_ref) and same(m, ref.m) and same(v, ref.v), f"step {t}"


def test_fast_adam_step_gives_the_bits_of_adam_step():
    """adam_step (common/adam.py): the compiled outer step of the numba backend's
    step-by-step path, as the trainer reaches it through the kernel set."""
    rng = np.random.default_rng(8)
    ref, opt = Adam(0.01), Adam(0.01)
    theta_ref = theta = rng.standard_normal(300)
    ks = fast.MLPKernels(mamlnp.MLP((1, 5, 1)))
    for t in range(5):
        g = rng.standard_normal(300)
        theta_ref, theta = ref._step(theta_ref, g), TS.outer_step(opt, theta, g, ks)
        assert same(theta, theta_ref) and same(opt.m, ref.m) and same(opt.v, ref.v)
        assert opt.t == ref.t == t + 1
    assert same(TS.outer_step(opt, theta, g, None), ref._step(theta_ref, g))


@pytest.mark.parametrize("kernel", ["compiled", "py_func"])
@pytest.mark.parametrize("W", [1, 2, 3, 7])
def test_parallel_adam_gives_the_bits_of_adam_step(kernel, W):
    """adam_update_parallel: m, v in place, θ' into a buffer, W contiguous shares (any W,
    hence any thread count: the split never changes an entry's operations)."""
    update = CA.adam_update_parallel if kernel == "compiled" else \
        CA.adam_update_parallel.py_func
    rng = np.random.default_rng(W)
    P = 1001
    ref, opt = Adam(0.37, 0.5, 0.7, 1e-3), Adam(0.37, 0.5, 0.7, 1e-3)
    theta_ref = theta = rng.standard_normal(P)
    m, v = np.zeros(P), np.zeros(P)
    for t in range(1, 8):
        g = rng.standard_normal(P) * 10.0 ** rng.integers(-150, 150, P)
        g[:3] = (0.0, -0.0, 1e-320)
        theta_ref = ref._step(theta_ref, g)
        out = np.empty(P)
        update(theta, g, m, v, adam_hp(opt, t), out, W)
        theta = out
        assert same(theta, theta_ref) and same(m, ref.m) and same(v, ref.v), f"step {t}"


@pytest.mark.parametrize("threads", sorted({1, numba.config.NUMBA_NUM_THREADS}))
def test_adam_step_for_large_P_gives_the_bits_and_updates_its_own_m_v_in_place(threads):
    """P >= PARALLEL_ADAM: the parallel path, as the trainer calls it (θ replaced by the
    returned one): the optimizer's private m, v are written in place (the same two buffers
    after step 1), θ' is fresh memory, and the bits stay Adam._step's."""
    rng = np.random.default_rng(11)
    P = CA.PARALLEL_ADAM + 5
    ref, opt = Adam(0.01), Adam(0.01)
    params = {"theta": rng.standard_normal(P)}
    theta_ref = params["theta"].copy()
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        ms = set()
        for t in range(6):
            g = rng.standard_normal(P) * 10.0 ** rng.integers(-20, 20, P)
            theta_ref = ref._step(theta_ref, g)
            old = params["theta"]
            params["theta"] = CA.adam_step(opt, params["theta"], g)
            assert params["theta"] is not old
            assert same(params["theta"], theta_ref) and same(opt.m, ref.m) and same(opt.v, ref.v)
            assert opt.t == ref.t == t + 1
            ms.add((id(opt._m), id(opt._v)))
    finally:
        numba.set_num_threads(before)
    assert len(ms) == 1


def test_adam_step_never_writes_an_array_someone_holds():
    """Arrays the caller kept (old θs, opt.m / opt.v taken out, a state dict, the arrays a
    state was loaded from, a view of θ) keep their values: the optimizer hands out copies
    and takes copies in, and θ' is always fresh memory."""
    rng = np.random.default_rng(12)
    P = CA.PARALLEL_ADAM + 1
    ref, opt = Adam(0.01), Adam(0.01)
    theta_ref = theta = rng.standard_normal(P)
    kept = []
    for t in range(8):
        g = rng.standard_normal(P)
        if t == 3:
            kept += [opt.m, opt.v]                    # held by a caller from now on
        if t == 5:
            state = opt.state_dict()
            opt.load_state_dict(state)
            kept += [state["m"], state["v"]]
        kept.append(theta)
        snapshot = [a.copy() for a in kept]
        theta_ref, theta = ref._step(theta_ref, g), CA.adam_step(opt, theta, g)
        assert same(theta, theta_ref) and same(opt.m, ref.m) and same(opt.v, ref.v)
        assert all(same(a, b) for a, b in zip(kept, snapshot)), f"step {t}"
    big = np.concatenate([theta, theta])              # θ as a view of a bigger array
    view, whole = big[:P], big.copy()
    theta_ref, theta = ref._step(theta_ref, g), CA.adam_step(opt, view, g)
    theta_ref, theta = ref._step(theta_ref, g), CA.adam_step(opt, theta, g)
    assert same(big, whole) and same(theta, theta_ref)


# ---- task data: the kernel (math.sin) against SinusoidTasks.sample (numpy.sin) -------------


def fused_sample(family, rng, T, K, Q, task_kernel=TK.sinusoid_task):
    """(xs, ys, xq, yq) as train_step makes them from rng.random(T·(2 + N))."""
    u = rng.random(T * (2 + K + Q))
    xs, ys, xq, yq = (np.empty((T, n)) for n in (K, K, Q, Q))
    (alo, ahi), (plo, phi), (xlo, xhi) = (tuple(map(float, r)) for r in (
        family.amp_range, family.phase_range, family.x_range))
    rg = np.array([alo, ahi - alo, plo, phi - plo, xlo, xhi - xlo, float(family.phase_sign)])
    draws = SinusoidDraws(u, rg, xs, ys, xq, yq)
    for t in range(T):
        task_kernel(t, draws)
    return xs, ys, xq, yq


@pytest.mark.parametrize("kernel", ["compiled", "py_func"])
@pytest.mark.parametrize("family", [mamlnp.SinusoidTasks(),
                                    mamlnp.SinusoidTasks((1.0, 2.0), (-1.0, 3.0), (0.0, 7.5),
                                                         phase_sign=1)])
@pytest.mark.parametrize("T, K, Q", [(25, 10, 10), (3, 1, 7), (1, 5, 1)])
def test_sinusoid_task_draws_the_bits_of_family_sample(kernel, family, T, K, Q):
    task_kernel = TK.sinusoid_task if kernel == "compiled" else TK.sinusoid_task.py_func
    rng_ref, rng = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(3):
        want = family.sample(rng_ref, T, K, Q)
        got = fused_sample(family, rng, T, K, Q, task_kernel)
        for name, a in zip(("x_support", "y_support", "x_query", "y_query"), got):
            assert same(a, getattr(want, name)[:, :, 0]), name
        assert rng.bit_generator.state == rng_ref.bit_generator.state


# ---- one fused step against meta_gradient_unchecked + Adam._step --------------------------------


def one_step_pair(activation, s, first_order, threads):
    """(fused: θ', m', v', loss; reference: the same), after two steps from one state."""
    cfg = make_config(backend="numba", inner_steps=s, method="fomaml" if first_order else "maml",
                      activation=activation, meta_batch=5, shots=4, query=3)
    model = mamlnp.MLP(**cfg["model"])
    family = mamlnp.SinusoidTasks()
    opt_ref, opt = Adam(0.05, 0.8, 0.95, 1e-6), Adam(0.05, 0.8, 0.95, 1e-6)
    theta0 = model.init(3)
    params = {"theta": theta0.copy()}
    fused = TS.fused_step(model, get_method(cfg["method"]), cfg, family, {"theta": opt})
    assert isinstance(fused, FU.FusedMAML)
    rng_ref, rng = np.random.default_rng(4), np.random.default_rng(4)
    theta_ref, geom, P = theta0, fast.geometry(model), model.num_params
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(threads)
        for it in range(2):
            loss = fused(rng, params, opt, DivergenceGuard(), it + 1, None)
            batch = TS.sample_batch(family, rng_ref, 5, 4, 3)
            flat = [a.reshape(5, -1) for a in (batch.x_support, batch.y_support,
                                               batch.x_query, batch.y_query)]
            loss_ref, g, _ = fast.meta_grad(geom, theta_ref, *flat, np.full(P, 0.01), s,
                                            first_order, 0)
            theta_ref = opt_ref._step(theta_ref, g)
            assert loss == loss_ref and same(fused.g, g), f"iteration {it + 1}"
            assert same(params["theta"], theta_ref) and same(opt.m, opt_ref.m)
            assert same(opt.v, opt_ref.v) and opt.t == opt_ref.t
            assert rng.bit_generator.state == rng_ref.bit_generator.state
    finally:
        numba.set_num_threads(n)


@pytest.mark.parametrize("activation, s, first_order", [("relu", 1, False), ("relu", 3, False),
                                                        ("tanh", 2, False), ("relu", 2, True),
                                                        ("softplus", 0, False)])
def test_fused_step_gives_the_bits_of_the_step_by_step_iteration(activation, s, first_order):
    for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
        one_step_pair(activation, s, first_order, threads)


def test_fused_kernels_as_python_give_the_same_bits(monkeypatch):
    """Every kernel's ``py_func`` (prange = range), so coverage sees the kernels' source;
    the reference (fast.meta_grad) then runs as Python too."""
    for mod in (MLK, MK, TK, CA, fast, FU):
        for name, obj in list(vars(mod).items()):
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                monkeypatch.setattr(mod, name, obj.py_func)
    one_step_pair("relu", 1, False, 1)
    one_step_pair("tanh", 2, True, 1)


def test_any_number_of_workers_gives_the_same_bits():
    """batch_meta_grad's W workers (next_task: the prefix worker's running sum, then the
    rest in order): W = 1 … T and more workers than threads, all mean_rows' bits."""
    model = mamlnp.MLP((1, 9, 6, 1), "tanh", "mse")
    theta, T, P = model.init(2), 7, model.num_params
    batch = mamlnp.SinusoidTasks().sample(5, T, 4, 3)
    flat = [a.reshape(T, -1) for a in (batch.x_support, batch.y_support, batch.x_query,
                                       batch.y_query)]
    geom, alpha = fast.geometry(model), np.random.default_rng(1).uniform(0.01, 0.1, P)
    ws = MK.alloc_workspace(T, P, 2, 4, 3, int(geom.sizes[1:].sum()), P)
    results = []
    for W in range(1, T + 1):
        loss, g, ga = MK.batch_meta_grad(theta, *flat, Inner(alpha, 2, False, 2), geom, ws, W)
        want = MK.mean_rows(ws.losses, ws.G, ws.GA)            # the rows, summed in order
        assert loss == want[0] and same(g, want[1]) and same(ga, want[2]), f"W = {W}"
        results.append((loss, g, ga))
    assert all(r[0] == results[0][0] and same(r[1], results[0][1]) for r in results)


# ---- whole runs: fused versus step by step -----------------------------------------------


def run_pair(monkeypatch, **cfg):
    """(fused run, step-by-step run) of meta_train with the same config."""
    fused = mamlnp.meta_train(progress=False, **cfg)
    with monkeypatch.context() as mp:
        mp.setattr("mamlnp.run.train.fused_step", lambda *a: None)
        plain = mamlnp.meta_train(progress=False, **cfg)
    return fused, plain


def assert_same_run(a, b):
    assert same(a.theta, b.theta)
    assert all(same(a.history[k], b.history[k]) for k in a.history)


@pytest.mark.parametrize("method, s", [("maml", 1), ("maml", 3), ("fomaml", 2)])
def test_meta_train_fused_and_step_by_step_give_the_same_bits(monkeypatch, method, s):
    calls = []
    monkeypatch.setattr(FU.FusedMAML, "__call__",
                        lambda self, *a, _c=FU.FusedMAML.__call__: calls.append(1) or _c(self, *a))
    cfg = dict(method=method, inner_steps=s, iterations=60, meta_batch=7, eval_every=20,
               val_tasks=5, backend="numba")
    fused, plain = run_pair(monkeypatch, **cfg)
    assert len(calls) == 60                                  # the fused path did run
    assert_same_run(fused, plain)


@pytest.mark.parametrize("method, backend, optimizer", [("maml", "numpy", "adam"),
                                                        ("metasgd", "numba", "adam"),
                                                        ("maml", "numba", "sgd")])
def test_no_fused_path_where_there_is_no_kernel_for_it(method, backend, optimizer):
    cfg = make_config(method=method, backend=backend, optimizer=optimizer)
    model = mamlnp.MLP(**cfg["model"])
    from mamlnp.meta.optim import OPTIMIZERS
    opts = {g: OPTIMIZERS[optimizer](1e-3) for g in get_method(method).groups}
    assert TS.fused_step(model, get_method(method), cfg, mamlnp.SinusoidTasks(), opts) is None


def test_resumed_fused_run_gives_the_bits_of_an_uninterrupted_one(tmp_path):
    cfg = dict(iterations=40, meta_batch=5, eval_every=10, val_tasks=5, checkpoint_every=100,
               backend="numba", progress=False)
    whole = mamlnp.meta_train(out=tmp_path / "a", **cfg)
    cut = mamlnp.meta_train(out=tmp_path / "b", callback=lambda st: st.iteration == 15, **cfg)
    assert cut.config["iteration"] == 15
    rest = mamlnp.meta_train(out=tmp_path / "b", resume=True, progress=False)
    assert_same_run(rest, whole)


def test_fused_divergence_is_reported_like_the_step_by_step_one(monkeypatch):
    cfg = dict(alpha=10.0, inner_steps=5, iterations=50, meta_batch=3, val_tasks=5,
               backend="numba")
    errors = []
    for fused in (True, False):
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr("mamlnp.run.train.fused_step", lambda *a: None)
            with pytest.raises(DivergenceError) as e:
                mamlnp.meta_train(progress=False, **cfg)
        errors.append((str(e.value), e.value.iteration))
    assert errors[0] == errors[1]


def test_no_fused_path_when_the_kernel_sine_differs_from_numpy(monkeypatch):
    cfg = make_config(backend="numba", meta_batch=3)
    model, opts = mamlnp.MLP(**cfg["model"]), {"theta": Adam(1e-3)}
    fused = TS.fused_step(model, get_method("maml"), cfg, mamlnp.SinusoidTasks(), opts)
    assert isinstance(fused, FU.FusedMAML) and fused.sine_agrees_with_numpy()
    monkeypatch.setattr(np, "sin", lambda x: np.cos(x))              # a different sine
    assert not fused.sine_agrees_with_numpy(batches=1)
    assert TS.fused_step(model, get_method("maml"), cfg, mamlnp.SinusoidTasks(), opts) is None


def test_a_refused_step_leaves_theta_and_adam_untouched():
    cfg = make_config(backend="numba", meta_batch=3)
    model = mamlnp.MLP(**cfg["model"])
    opt = Adam(1e-3)
    fused = TS.fused_step(model, get_method("maml"), cfg, mamlnp.SinusoidTasks(), {"theta": opt})
    params, rng = {"theta": model.init(0)}, np.random.default_rng(0)
    fused(rng, params, opt, DivergenceGuard(), 1, None)
    before = (params["theta"], opt.m.copy(), opt.v.copy(), opt.t)
    guard = DivergenceGuard()
    guard.median = 1e-9                                      # any loss is 1e3 × the median
    with pytest.raises(DivergenceError, match="over 1e"):
        fused(rng, params, opt, guard, 2, lambda: "hint")
    assert params["theta"] is before[0] and opt.t == before[3]
    assert same(opt.m, before[1]) and same(opt.v, before[2])
