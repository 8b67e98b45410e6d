"""Bad input at every public entry point gets a clear mamlnp error; odd-but-valid input works.

Dimension legend: N points, D = 2 inputs, O = 1 output, P = 13 parameters of the
2-3-1 tanh MLP used throughout; T tasks, K support, Q query points.

The policy under test is the one in mamlnp/validation.py's docstring (and
docs/errors.md): float64 data; integer/float32/float16 converted; bool, complex,
object and string refused; NaN/inf refused; empty arrays refused; step sizes
> 0; counts >= 0 and never bool; every failure an InputError (a MamlnpError, a
ValueError) whose message starts with the argument's name.

Run with ``-s`` to see every message.
"""
import doctest
import fractions
import numbers
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mamlnp
from mamlnp.meta import maml as M
from mamlnp.errors import CheckpointError, InputError, MamlnpError
from mamlnp.meta.optim import SGD, Adam
from mamlnp.tasks import EvaluationPool, SinusoidTasks, TaskBatch, TaskFamily

MODEL = mamlnp.MLP((2, 3, 1), "tanh")
P = MODEL.num_params                                                # 13
THETA = MODEL.init(0, scheme="uniform")                             # (P,)
RNG = np.random.default_rng(0)
X, Y, V = RNG.standard_normal((4, 2)), RNG.standard_normal((4, 1)), RNG.standard_normal(P)


def batch_arrays(T=2, K=3, Q=4, D=2, O=1):
    r = np.random.default_rng(1)
    return (r.standard_normal((T, K, D)), r.standard_normal((T, K, O)),
            r.standard_normal((T, Q, D)), r.standard_normal((T, Q, O)))


BATCH = TaskBatch(*batch_arrays())
XS, YS = BATCH.x_support[0], BATCH.y_support[0]
NAN_X = X.copy()
NAN_X[2, 1] = np.nan


def with_nan(a, index):
    a = np.array(a, dtype=np.float64)
    a[index] = np.nan
    return a


def pool():
    return EvaluationPool(SinusoidTasks(), num_tasks=3, shots=(5,), query=4)


# (id, call, expected start of the message, a fragment the message must contain)
CASES = [
    # MLP constructor
    ("sizes-int", lambda: mamlnp.MLP(5), "sizes", "sequence of positive integers"),
    ("sizes-one", lambda: mamlnp.MLP((3,)), "sizes", "at least 2"),
    ("sizes-zero", lambda: mamlnp.MLP((1, 0, 1)), "sizes[1]", "positive integer"),
    ("sizes-float", lambda: mamlnp.MLP((1, 2.5, 1)), "sizes[1]", "2.5"),
    ("sizes-bool", lambda: mamlnp.MLP((1, True, 1)), "sizes[1]", "True"),
    ("sizes-str", lambda: mamlnp.MLP((1, "40", 1)), "sizes[1]", "'40'"),
    ("activation", lambda: mamlnp.MLP((1, 1), "sigmoid"), "activation", "'relu'"),
    ("activation-list", lambda: mamlnp.MLP((1, 1), ["relu"]), "activation", "['relu']"),
    ("loss", lambda: mamlnp.MLP((1, 1), "relu", "l1"), "loss", "'mse'"),
    # init, unflatten, flatten
    ("init-seed-neg", lambda: MODEL.init(-1), "seed", "-1"),
    ("init-seed-str", lambda: MODEL.init("a"), "seed", "'a'"),
    ("init-seed-float", lambda: MODEL.init(1.5), "seed", "1.5"),
    ("init-scheme", lambda: MODEL.init(0, scheme="xavier"), "scheme", "'normal'"),
    ("init-scale", lambda: MODEL.init(0, scale=float("nan")), "scale", "nan"),
    ("unflatten-short", lambda: MODEL.unflatten(THETA[:-1]), "theta", "(13,)"),
    ("unflatten-2d", lambda: MODEL.unflatten(THETA[None]), "theta", "1-d"),
    ("flatten-int", lambda: MODEL.flatten(3), "layers", "2 (W, b) pairs"),
    ("flatten-short", lambda: MODEL.flatten(MODEL.unflatten(THETA)[:1]), "layers", "got list of 1 item(s)"),
    ("flatten-W-shape", lambda: MODEL.flatten([(np.ones((3, 2)), np.ones(3)), (np.ones((3, 1)), np.ones(1))]),
     "layers[0][0] (W_1)", "(2, 3)"),
    ("flatten-b-nan", lambda: MODEL.flatten([(np.ones((2, 3)), np.ones(3)), (np.ones((3, 1)), [np.nan])]),
     "layers[1][1] (b_2)", "NaN"),
    # forward / loss / loss_and_grad / hvp / grad_and_hvp
    ("x-1d", lambda: MODEL.forward(THETA, X[:, 0]), "x", "2-d"),
    ("x-D", lambda: MODEL.forward(THETA, np.ones((4, 3))), "x", "(N, 2)"),
    ("x-empty", lambda: MODEL.forward(THETA, np.ones((0, 2))), "x", "non-empty"),
    ("x-nan", lambda: MODEL.forward(THETA, NAN_X), "x", "index (2, 1)"),
    ("x-inf", lambda: MODEL.loss(THETA, -np.inf * X, Y), "x", "8 NaN or infinite"),
    ("x-complex", lambda: MODEL.forward(THETA, X + 0j), "x", "complex128"),
    ("x-bool", lambda: MODEL.forward(THETA, X > 0), "x", "bool"),
    ("x-str", lambda: MODEL.forward(THETA, X.astype(str)), "x", "dtype <U"),
    ("x-object", lambda: MODEL.forward(THETA, [[1.0, None]]), "x", "object"),
    ("x-ragged", lambda: MODEL.forward(THETA, [[1.0, 2.0], [1.0]]), "x", "rows of equal length"),
    ("theta-list-short", lambda: MODEL.forward([0.0] * 5, X), "theta", "(13,)"),
    ("theta-nan", lambda: MODEL.loss(with_nan(THETA, 4), X, Y), "theta", "index (4,)"),
    ("theta-none", lambda: MODEL.loss(None, X, Y), "theta", "object"),
    ("y-N", lambda: MODEL.loss(THETA, X, Y[:3]), "y", "(4, 1)"),
    ("y-O", lambda: MODEL.loss_and_grad(THETA, X, np.ones((4, 2))), "y", "(4, 1)"),
    ("y-inf", lambda: MODEL.loss_and_grad(THETA, X, Y * np.inf), "y", "infinite"),
    ("v-short", lambda: MODEL.hvp(THETA, X, Y, V[:3]), "v", "(13,)"),
    ("v-nan", lambda: MODEL.hvp(THETA, X, Y, with_nan(V, 0)), "v", "NaN"),
    ("v-bool", lambda: MODEL.grad_and_hvp(THETA, X, Y, V > 0), "v", "bool"),
    ("softmax-y-sum", lambda: mamlnp.MLP((2, 3), "tanh", "softmax_xent").loss(
        np.zeros(9), X, np.full((4, 3), 0.5)), "y", "each summing to 1"),
    ("softmax-y-neg", lambda: mamlnp.MLP((2, 2), "tanh", "softmax_xent").loss(
        np.zeros(6), X, [[2.0, -1.0]] * 4), "y", ">= 0"),
    # adapt
    ("alpha-zero", lambda: M.adapt(MODEL, THETA, XS, YS, 0.0, 1), "alpha", "positive"),
    ("alpha-neg", lambda: M.adapt(MODEL, THETA, XS, YS, -0.1, 1), "alpha", "-0.1"),
    ("alpha-nan", lambda: M.adapt(MODEL, THETA, XS, YS, float("nan"), 1), "alpha", "nan"),
    ("alpha-inf", lambda: M.adapt(MODEL, THETA, XS, YS, np.inf, 1), "alpha", "inf"),
    ("alpha-str", lambda: M.adapt(MODEL, THETA, XS, YS, "0.01", 1), "alpha", "'0.01' (str)"),
    ("alpha-none", lambda: M.adapt(MODEL, THETA, XS, YS, None, 1), "alpha", "None"),
    ("alpha-bool", lambda: M.adapt(MODEL, THETA, XS, YS, True, 1), "alpha", "True"),
    ("alpha-list1", lambda: M.adapt(MODEL, THETA, XS, YS, [0.1], 1), "alpha", "(13,)"),
    ("alpha-vec-nan", lambda: M.adapt(MODEL, THETA, XS, YS, with_nan(np.ones(P), 3), 1), "alpha", "NaN"),
    ("steps-neg", lambda: M.adapt(MODEL, THETA, XS, YS, 0.1, -1), "inner_steps", "-1"),
    ("steps-float", lambda: M.adapt(MODEL, THETA, XS, YS, 0.1, 1.0), "inner_steps", "1.0"),
    ("steps-bool", lambda: M.adapt(MODEL, THETA, XS, YS, 0.1, True), "inner_steps", "True (bool)"),
    ("steps-str", lambda: M.adapt(MODEL, THETA, XS, YS, 0.1, "1"), "inner_steps", "'1'"),
    ("steps-list", lambda: M.adapt(MODEL, THETA, XS, YS, 0.1, [1]), "inner_steps", "[1]"),
    ("backend", lambda: M.adapt(MODEL, THETA, XS, YS, 0.1, 1, backend="torch"), "backend", "'numba'"),
    ("support-N", lambda: M.adapt(MODEL, THETA, XS, YS[:2], 0.1, 1), "y_support", "(3, 1)"),
    ("support-K0", lambda: M.adapt(MODEL, THETA, XS[:0], YS[:0], 0.1, 1), "x_support", "non-empty"),
    # meta_gradient / meta_loss / meta_gradient_alpha
    ("batch-tuple", lambda: M.meta_gradient(MODEL, THETA, batch_arrays(), 0.1, 1), "batch", "tuple"),
    ("batch-D", lambda: M.meta_gradient(MODEL, THETA, TaskBatch(*batch_arrays(D=3)), 0.1, 1),
     "batch", "inputs of dim D=2"),
    ("first_order-str", lambda: M.meta_gradient(MODEL, THETA, BATCH, 0.1, 1, first_order="no"),
     "first_order", "'no'"),
    ("first_order-none", lambda: M.meta_gradient(MODEL, THETA, BATCH, 0.1, 1, None), "first_order", "None"),
    ("mg-alpha", lambda: M.meta_gradient(MODEL, THETA, BATCH, 0, 1), "alpha", "positive"),
    ("mg-steps", lambda: M.meta_gradient(MODEL, THETA, BATCH, 0.1, -2), "inner_steps", "-2"),
    ("mg-backend", lambda: M.meta_gradient(MODEL, THETA, BATCH, 0.1, 1, backend="jax"), "backend", "'jax'"),
    ("mg-numba-alpha", lambda: M.meta_gradient(MODEL, THETA, BATCH, -1.0, 1, backend="numba"),
     "alpha", "-1.0"),
    ("mg-theta", lambda: M.meta_gradient(MODEL, THETA.astype(complex), BATCH, 0.1, 1), "theta", "complex"),
    ("ml-alpha", lambda: M.meta_loss(MODEL, THETA, BATCH, -0.5, 1), "alpha", "-0.5"),
    ("ml-batch", lambda: M.meta_loss(MODEL, THETA, None, 0.1, 1), "batch", "NoneType"),
    ("mga-alpha-len", lambda: M.meta_gradient_alpha(MODEL, THETA, BATCH, np.ones(P + 1), 1), "alpha", "(13,)"),
    ("mga-alpha-inf", lambda: M.meta_gradient_alpha(MODEL, THETA, BATCH, np.full(P, np.inf), 1), "alpha", "inf"),
    ("mga-first_order", lambda: M.meta_gradient_alpha(MODEL, THETA, BATCH, 0.1, 1, 1), "first_order", "1 (int)"),
    ("mga-swapped", lambda: M.meta_gradient_alpha(MODEL, THETA, 0.1, BATCH, 1), "batch", "float"),
    # TaskBatch (constructed directly, and .make)
    ("tb-T0", lambda: TaskBatch(*batch_arrays(T=0)), "x_support", "non-empty"),
    ("tb-K0", lambda: TaskBatch(*batch_arrays(K=0)), "x_support", "non-empty"),
    ("tb-Q0", lambda: TaskBatch(*batch_arrays(Q=0)), "x_query", "non-empty"),
    ("tb-2d", lambda: TaskBatch(*(a[0] for a in batch_arrays())), "x_support", "(T, K, D)"),
    ("tb-T", lambda: TaskBatch(*batch_arrays()[:3], batch_arrays(T=3)[3]), "y_query", "(2, 4, 1)"),
    ("tb-Dq", lambda: TaskBatch(*batch_arrays()[:2], *batch_arrays(D=3)[2:]), "x_query", "(2, Q, 2)"),
    ("tb-O", lambda: TaskBatch(*batch_arrays()[:3], batch_arrays(O=2)[3]), "y_query", "(2, 4, 1)"),
    ("tb-nan", lambda: TaskBatch(*batch_arrays()[:3], with_nan(batch_arrays()[3], (1, 2, 0))),
     "y_query", "index (1, 2, 0)"),
    ("tb-complex", lambda: TaskBatch.make(batch_arrays()[0] + 1j, *batch_arrays()[1:]), "x_support", "complex"),
    ("tb-str", lambda: TaskBatch("abc", *batch_arrays()[1:]), "x_support", "<U3"),
    ("tb-softmax", lambda: M.meta_loss(mamlnp.MLP((2, 1), "relu", "softmax_xent"), np.zeros(3),
                                       TaskBatch(*batch_arrays()), 0.1, 1), "batch.y_support", "probability rows"),
    # task samplers
    ("sin-amp", lambda: SinusoidTasks(amp_range=(5.0, 0.1)), "amp_range", "low <= high"),
    ("sin-amp-str", lambda: SinusoidTasks(amp_range="ab"), "amp_range[0]", "'a'"),
    ("sin-x-nan", lambda: SinusoidTasks(x_range=(np.nan, 1)), "x_range[0]", "nan"),
    ("sin-phase3", lambda: SinusoidTasks(phase_range=(0, 1, 2)), "phase_range", "(0, 1, 2)"),
    ("sin-sign", lambda: SinusoidTasks(phase_sign=0), "phase_sign", "0"),
    ("sample-rng", lambda: SinusoidTasks().sample(-1, 2, 3, 4), "rng", "-1"),
    ("sample-rng-str", lambda: SinusoidTasks().sample("seed", 2, 3, 4), "rng", "'seed'"),
    ("sample-T0", lambda: SinusoidTasks().sample(0, 0, 3, 4), "num_tasks", "positive integer"),
    ("sample-T-bool", lambda: SinusoidTasks().sample(0, True, 3, 4), "num_tasks", "True"),
    ("sample-K0", lambda: SinusoidTasks().sample(0, 2, 0, 4), "shots", "got 0"),
    ("sample-K-float", lambda: SinusoidTasks().sample(0, 2, 2.0, 4), "shots", "2.0"),
    ("sample-Q", lambda: SinusoidTasks().sample(0, 2, 3, -1), "query", "-1"),
    ("pool-family", lambda: EvaluationPool("sinusoid"), "family", "TaskFamily"),
    ("pool-T0", lambda: EvaluationPool(SinusoidTasks(), num_tasks=0), "num_tasks", "got 0"),
    ("pool-shots-empty", lambda: EvaluationPool(SinusoidTasks(), 3, shots=()), "shots", "at least one"),
    ("pool-shots-0", lambda: EvaluationPool(SinusoidTasks(), 3, shots=(5, 0)), "shots[1]", "got 0"),
    ("pool-shots-str", lambda: EvaluationPool(SinusoidTasks(), 3, shots="5"), "shots[0]", "'5'"),
    ("pool-query", lambda: EvaluationPool(SinusoidTasks(), 3, query=0), "query", "got 0"),
    ("pool-seed", lambda: EvaluationPool(SinusoidTasks(), 3, seed=-7), "seed", "-7"),
    ("pool-batch-K", lambda: pool().batch(7), "shots", "[5]"),
    ("pool-batch-list", lambda: pool().batch([5]), "shots", "[5]"),
    # optimizers
    ("sgd-lr0", lambda: SGD(0), "lr", "positive"),
    ("sgd-lr-nan", lambda: SGD(float("nan")), "lr", "nan"),
    ("sgd-lr-str", lambda: SGD("0.1"), "lr", "'0.1'"),
    ("sgd-lr-none", lambda: SGD(None), "lr", "None"),
    ("sgd-theta", lambda: SGD(0.1).step(3.0, [1.0]), "theta", "1-d"),
    ("sgd-grad", lambda: SGD(0.1).step(THETA, V[:5]), "grad", "(13,)"),
    ("sgd-grad-nan", lambda: SGD(0.1).step(THETA, with_nan(V, 2)), "grad", "NaN"),
    ("adam-lr", lambda: Adam(lr=-1e-3), "lr", "-0.001"),
    ("adam-beta1", lambda: Adam(beta1=1.0), "beta1", "[0.0, 1.0)"),
    ("adam-beta2-str", lambda: Adam(beta2="x"), "beta2", "'x'"),
    ("adam-eps", lambda: Adam(eps=0), "eps", "positive"),
    ("adam-theta-nan", lambda: Adam().step(with_nan(THETA, 0), V), "theta", "NaN"),
]


@pytest.mark.parametrize("call, name, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(call, name, fragment):
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    print(f"{name!s:>22} -> {msg}")
    assert isinstance(info.value, MamlnpError) and isinstance(info.value, ValueError)
    assert msg.startswith(name + ":"), msg
    assert fragment in msg, msg
    assert "expected" in msg and "got" in msg, msg


def test_optimizer_state_errors_are_checkpoint_errors_and_leave_the_state_intact():
    adam = Adam(lr=0.1)
    theta = adam.step(THETA, V)
    before = {k: np.copy(v) for k, v in adam.state_dict().items()}
    with pytest.raises(InputError, match=r"^grad: this Adam holds state for shape \(13,\)"):
        adam.step(np.zeros(4), np.ones(4))
    with pytest.raises(InputError, match="^grad: "):
        adam.step(theta, with_nan(V, 1))
    after = adam.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)      # nothing lost
    broken = dict(before)
    del broken["v"]
    for state, fragment in ((broken, "m, v"), ({"lr": 0.1}, "missing entry 'beta1'"), (None, "dict-like")):
        with pytest.raises(CheckpointError) as info:
            Adam().load_state_dict(state)
        print(info.value)
        assert fragment in str(info.value)
    with pytest.raises(CheckpointError, match="SGD optimizer state: lr: "):
        SGD(0.1).load_state_dict({"lr": -1.0})


def test_docs_errors_md_examples_are_real():
    """Every Python example in docs/errors.md, messages included, runs as shown."""
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"
    result = doctest.testfile(str(path), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    print(f"docs/errors.md: {result.attempted} examples, {result.failed} failed")
    assert result.failed == 0 and result.attempted >= 40


def test_taskfamily_interface_is_not_a_silent_no_op():
    with pytest.raises(NotImplementedError):
        TaskFamily().sample(0, 2, 3, 4)


# ---- valid but unusual input works, and means what it says ----------------------------------


def test_integer_and_float32_input_is_converted_to_float64():
    xi = np.array([[1, -2], [0, 3]])
    assert np.array_equal(MODEL.forward(THETA, xi), MODEL.forward(THETA, xi.astype(np.float64)))
    x32, t32 = X.astype(np.float32), THETA.astype(np.float32)
    got = MODEL.loss_and_grad(t32, x32, Y.astype(np.float16))
    want = MODEL.loss_and_grad(t32.astype(np.float64), x32.astype(np.float64),
                               Y.astype(np.float16).astype(np.float64))
    assert got[0] == want[0] and np.array_equal(got[1], want[1]) and got[1].dtype == np.float64
    b = TaskBatch(*(a.astype(np.float32) for a in batch_arrays()))
    assert all(a.dtype == np.float64 and a.flags.c_contiguous
               for a in (b.x_support, b.y_support, b.x_query, b.y_query))
    lists = TaskBatch.make([[[1, 2]]], [[[0]]], [[[3, 4]]], [[[1]]])        # T = K = Q = 1
    assert lists.x_support.dtype == np.float64 and lists.num_tasks == 1


def test_one_task_one_shot_and_zero_steps_work():
    tiny = TaskBatch(*batch_arrays(T=1, K=1, Q=1))
    loss, grad = M.meta_gradient(MODEL, THETA, tiny, 0.1, 2)
    assert np.isfinite(loss) and grad.shape == (P,) and np.all(np.isfinite(grad))
    adapted = M.adapt(MODEL, THETA, XS, YS, 0.1, 0)
    assert np.array_equal(adapted, THETA) and adapted is not THETA
    assert M.meta_loss(MODEL, THETA, tiny, 0.1, 0) == MODEL.loss(THETA, *tiny.task(0)[2:])


def test_numpy_scalars_and_0d_arrays_are_accepted_as_scalars():
    ref = M.adapt(MODEL, THETA, XS, YS, 0.05, 2)
    for alpha, steps in ((np.float64(0.05), np.int64(2)), (np.array(0.05), np.array(2)),
                         (fractions.Fraction(1, 20), np.uint8(2))):
        assert np.array_equal(M.adapt(MODEL, THETA, XS, YS, alpha, steps), ref)
    assert mamlnp.MLP(np.array([2, 3, 1]), np.str_("tanh")).config() == MODEL.config()
    assert M.meta_gradient(MODEL, THETA, BATCH, 0.1, 1, np.True_)[0] == \
        M.meta_gradient(MODEL, THETA, BATCH, 0.1, 1, True)[0]


def test_non_contiguous_views_and_metasgd_alpha_of_any_sign_work():
    xt = np.asfortranarray(X)[:, :]                                      # not C-contiguous
    assert np.array_equal(MODEL.forward(THETA, xt), MODEL.forward(THETA, X))
    alpha = np.full(P, 0.05)
    alpha[:3] = [-0.01, 0.0, -0.2]                       # Meta-SGD's learned α may change sign
    loss, g_theta, g_alpha = M.meta_gradient_alpha(MODEL, THETA, BATCH, alpha, 2)
    assert np.isfinite(loss) and g_alpha.shape == (P,)


def test_unflatten_views_write_through_and_seeds_accept_generators():
    theta = THETA.copy()
    MODEL.unflatten(theta)[1][1][0] = 7.0                                # b_2
    assert theta[-1] == 7.0
    a = SinusoidTasks().sample(np.random.default_rng(3), 2, 3, 4)
    b = SinusoidTasks().sample(3, 2, 3, 4)
    assert np.array_equal(a.y_query, b.y_query)


# ---- hypothesis: random bad input never crashes, never passes silently ------------------------

DTYPES = ("float64", "float32", "float16", "int64", "int8", "uint8", "bool", "complex128",
          "object", "str")
FLOAT_LIKE = ("float64", "float32", "float16", "complex128", "object")


@st.composite
def maybe_bad_array(draw, good_shape):
    """(array, is_valid): a random array, of the right shape or not, any dtype, maybe NaN/inf."""
    shape = draw(st.one_of(st.just(good_shape),
                           st.lists(st.integers(0, 4), max_size=3).map(tuple)))
    base = np.random.default_rng(draw(st.integers(0, 2**16))).uniform(-3, 3, shape)
    dtype = draw(st.sampled_from(DTYPES))
    poison = draw(st.sampled_from((None, None, np.nan, np.inf, -np.inf)))
    if poison is not None and base.size and dtype in FLOAT_LIKE:
        base.flat[draw(st.integers(0, base.size - 1))] = poison
    arr = base > 0 if dtype == "bool" else base.astype(dtype)
    valid = (dtype not in ("bool", "complex128", "object", "str") and shape == good_shape
             and base.size > 0 and bool(np.all(np.isfinite(base))))
    return arr, valid


def _as64(a):
    return np.asarray(a, dtype=np.float64)


METHODS = {
    "forward": lambda m, t, x, y, v: m.forward(t, x),
    "loss": lambda m, t, x, y, v: m.loss(t, x, y),
    "loss_and_grad": lambda m, t, x, y, v: m.loss_and_grad(t, x, y),
    "hvp": lambda m, t, x, y, v: m.hvp(t, x, y, v),
    "grad_and_hvp": lambda m, t, x, y, v: m.grad_and_hvp(t, x, y, v),
}
USES = {"forward": "tx", "loss": "txy", "loss_and_grad": "txy", "hvp": "txyv", "grad_and_hvp": "txyv"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(sorted(METHODS)), theta=maybe_bad_array((P,)),
       x=maybe_bad_array((4, 2)), y=maybe_bad_array((4, 1)), v=maybe_bad_array((P,)))
def test_mlp_methods_refuse_bad_arrays_and_convert_good_ones(method, theta, x, y, v):
    t_, x_, y_, v_ = theta[0], x[0], y[0], v[0]
    x_ok = _real_finite(x_) and x_.ndim == 2 and x_.shape[1] == 2             # any N >= 1
    ok = {"t": _real_finite(t_) and t_.shape == (P,), "x": x_ok,
          "y": x_ok and _real_finite(y_) and y_.shape == (x_.shape[0], 1),
          "v": _real_finite(v_) and v_.shape == (P,)}
    valid = all(ok[k] for k in USES[method])
    call = METHODS[method]
    if not valid:
        with pytest.raises(MamlnpError):
            call(MODEL, theta[0], x[0], y[0], v[0])
        return
    got = call(MODEL, theta[0], x[0], y[0], v[0])
    t64, x64, y64, v64 = (_as64(a[0]) if ok[k] else a[0]                       # unused may be bad
                          for a, k in ((theta, "t"), (x, "x"), (y, "y"), (v, "v")))
    want = call(MODEL, t64, x64, y64, v64)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert all(np.array_equal(g, w) for g, w in zip(got, want))   # same bits as float64 input


def _real_finite(a):
    """Non-empty, real numeric (int/uint/float) and finite: the array policy minus shapes."""
    return a.dtype.kind in "iuf" and a.size > 0 and bool(np.all(np.isfinite(a.astype(np.float64))))


def _valid_step(value):
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and np.isfinite(float(value)) and float(value) > 0)


def _valid_count(value):
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        value = value.item()
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= 0


ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
    st.fractions(max_denominator=10), st.complex_numbers(max_magnitude=2), st.text(max_size=3),
    st.lists(st.floats(-1, 1), max_size=3), st.tuples(st.integers(0, 2)),
    st.sampled_from([np.float32(0.1), np.array(0.05), np.int64(2), np.array(True), np.nan,
                     np.array([0.1, 0.2]), np.bool_(False), object(), {"alpha": 0.1}, b"1", 1j]),
)


@settings(max_examples=200, deadline=None)
@given(alpha=ANYTHING, inner_steps=ANYTHING, first_order=ANYTHING,
       backend=st.sampled_from([None, "numpy", "NumPy", "torch", 0, ["numpy"]]))
def test_meta_gradient_scalars_refused_unless_valid(alpha, inner_steps, first_order, backend):
    valid = (_valid_step(alpha) and _valid_count(inner_steps) and inner_steps <= 3
             and isinstance(first_order, (bool, np.bool_)) and backend in (None, "numpy"))
    if not valid:
        with pytest.raises(MamlnpError):
            M.meta_gradient(MODEL, THETA, BATCH, alpha, inner_steps, first_order, backend)
        return
    with np.errstate(all="ignore"):        # a huge valid α may overflow: NaN, not an exception
        loss, grad = M.meta_gradient(MODEL, THETA, BATCH, alpha, inner_steps, first_order, backend)
    assert isinstance(loss, float) and grad.shape == (P,) and grad.dtype == np.float64


@settings(max_examples=100, deadline=None)
@given(lr=ANYTHING, beta1=ANYTHING, which=st.sampled_from(["sgd", "adam"]))
def test_optimizer_hyperparameters_refused_unless_valid(lr, beta1, which):
    ok_lr = _valid_step(lr)
    if which == "sgd":
        make, valid = (lambda: SGD(lr)), ok_lr
    else:
        b = beta1.item() if isinstance(beta1, np.ndarray) and beta1.ndim == 0 else beta1
        ok_b = (isinstance(b, numbers.Real) and not isinstance(b, (bool, np.bool_))
                and 0.0 <= float(b) < 1.0)
        make, valid = (lambda: Adam(lr, beta1)), ok_lr and ok_b
    if not valid:
        with pytest.raises(MamlnpError):
            make()
        return
    with np.errstate(over="ignore"):        # a huge valid lr (1e307) may overflow to inf
        out = make().step(THETA, V)
    assert out.shape == THETA.shape and out.dtype == np.float64
    if float(lr) <= 1e6:
        assert np.all(np.isfinite(out))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(xs=maybe_bad_array((2, 3, 2)), ys=maybe_bad_array((2, 3, 1)),
       xq=maybe_bad_array((2, 4, 2)), yq=maybe_bad_array((2, 4, 1)))
def test_taskbatch_validates_and_meta_gradient_follows(xs, ys, xq, yq):
    arrays = (xs[0], ys[0], xq[0], yq[0])
    a, b, c, d = arrays
    valid = (all(_real_finite(z) and z.ndim == 3 for z in arrays)
             and a.shape[2] == 2 and b.shape == a.shape[:2] + (1,)             # (T, K, D=2), (T, K, 1)
             and c.shape[0] == a.shape[0] and c.shape[2] == 2 and d.shape == c.shape[:2] + (1,))
    if not valid:
        with pytest.raises(MamlnpError):
            M.meta_gradient(MODEL, THETA, TaskBatch(*arrays), 0.1, 1)
        return
    batch = TaskBatch(*arrays)
    assert all(np.array_equal(getattr(batch, f), _as64(a)) for f, a in
               zip(("x_support", "y_support", "x_query", "y_query"), arrays))
    loss, grad = M.meta_gradient(MODEL, THETA, batch, 0.1, 1)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


@settings(max_examples=100, deadline=None)
@given(sizes=st.one_of(ANYTHING, st.lists(ANYTHING, max_size=4), st.lists(st.integers(-1, 4), max_size=4)),
       activation=st.one_of(st.sampled_from(["relu", "tanh", "softplus", "ReLU", "gelu"]), ANYTHING),
       loss=st.one_of(st.sampled_from(["mse", "softmax_xent", "MSE"]), ANYTHING))
def test_mlp_constructor_refuses_unless_valid(sizes, activation, loss):
    try:
        entries = list(sizes)
    except TypeError:
        entries = None
    valid = (entries is not None and len(entries) >= 2
             and all(_valid_count(s) and s >= 1 for s in entries)
             and isinstance(activation, str) and activation in ("relu", "tanh", "softplus")
             and isinstance(loss, str) and loss in ("mse", "softmax_xent"))
    if not valid:
        with pytest.raises(MamlnpError):
            mamlnp.MLP(sizes, activation, loss)
        return
    model = mamlnp.MLP(sizes, activation, loss)
    assert model.num_params == sum((a + 1) * b for a, b in zip(entries[:-1], entries[1:]))


@settings(max_examples=80, deadline=None)
@given(rng=ANYTHING, num_tasks=ANYTHING, shots=ANYTHING, query=ANYTHING)
def test_sinusoid_sample_refuses_unless_valid(rng, num_tasks, shots, query):
    ok_rng = rng is None or _valid_count(rng)
    valid = ok_rng and all(_valid_count(n) and n >= 1 for n in (num_tasks, shots, query))
    if not valid:
        with pytest.raises(MamlnpError):
            SinusoidTasks().sample(rng, num_tasks, shots, query)
        return
    b = SinusoidTasks().sample(rng, num_tasks, shots, query)
    assert b.x_support.shape == (int(num_tasks), int(shots), 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(theta=maybe_bad_array((P,)), grad=maybe_bad_array((P,)), which=st.sampled_from(["sgd", "adam"]))
def test_optimizer_step_refuses_bad_arrays_and_keeps_its_state(theta, grad, which):
    opt = SGD(0.1) if which == "sgd" else Adam(0.1)
    opt.step(THETA, V)                                          # some state to keep
    before = {k: np.copy(v) for k, v in opt.state_dict().items()}
    valid = theta[1] and grad[1]
    if which == "sgd":                  # SGD keeps no per-parameter state: any P works
        t, g = theta[0], grad[0]
        valid = (_real_finite(t) and _real_finite(g) and t.ndim == 1 and g.shape == t.shape)
    if not valid:
        with pytest.raises(MamlnpError):
            opt.step(theta[0], grad[0])
        after = opt.state_dict()
        assert all(np.array_equal(before[k], after[k]) for k in before)   # nothing lost
        return
    twin = SGD(0.1) if which == "sgd" else Adam(0.1)
    twin.step(THETA, V)
    assert np.array_equal(opt.step(theta[0], grad[0]), twin.step(_as64(theta[0]), _as64(grad[0])))
