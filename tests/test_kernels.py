"""The plain MLP's kernels (mamlnp/fast/mlp/, its set mlp/kernelset.py) against their NumPy twins.

Dimension legend: T tasks, K support points, Q query points, N points, D inputs,
O outputs, P parameters, s = inner_steps, Hsum = Σ_{l≥1} sizes[l].

Every comparison prints its relative error ‖numba − numpy‖ / ‖numpy‖ (run with -s) and
asserts it is ≤ 1e-12: the kernels compute the same equations in a different order of
floating-point operations, so they agree to a few ulps, not bit for bit.

Compile time dominates this file, so every kernel is compiled for ONE type signature:
data always float64 C-contiguous, geometry from fast.geometry, α always a (P,) vector.
"""
import numpy as np
import numba
import pytest

import mamlnp
from mamlnp.fast.mlp import kernelset as fast
from mamlnp.meta import maml as M
from mamlnp.fast.mlp import maml_kernels as MK
from mamlnp.fast.mlp import mlp_kernels as K
from mamlnp.fast.common.bundles import Inner
from mamlnp.fast.common.linalg import gemm_acc
from mamlnp.tasks import TaskBatch

TOL = 1e-12
# (sizes, activation, loss): every activation with both losses, architectures of 1 to 3
# hidden layers, D and O of 1 and more (softmax_xent needs O ≥ 2); D = O = 1 with two hidden
# layers takes every fused thin-layer pass (mamlnp/fast/mlp/thin_layers.py) with σ'' ≠ 0.
CASES = [((1, 7, 1), "relu", "mse"), ((3, 6, 5, 2), "relu", "softmax_xent"),
         ((2, 5, 4, 3), "tanh", "mse"), ((1, 8, 3), "tanh", "softmax_xent"),
         ((2, 4, 6, 3, 2), "softplus", "mse"), ((3, 5, 4), "softplus", "softmax_xent"),
         ((1, 6, 5, 1), "tanh", "mse"), ((1, 5, 4, 1), "softplus", "mse")]
IDS = [f"{a}-{l}-{'x'.join(map(str, s))}" for s, a, l in CASES]


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check(name, got, want):
    err = rel(got, want)
    print(f"{name}: relative error {err:.2e}")
    assert err <= TOL, f"{name}: relative error {err:.3e} > {TOL}"


def make_case(sizes, activation, loss, T=3, K=4, Q=5, seed=0):
    """(model, θ (P,), TaskBatch, α vector (P,)) with targets the loss accepts."""
    model = mamlnp.MLP(sizes, activation, loss)
    rng = np.random.default_rng(seed)
    theta = model.init(seed, scheme="uniform")
    D, O = sizes[0], sizes[-1]

    def targets(n):
        if loss == "mse":
            return rng.standard_normal((T, n, O))
        return np.eye(O)[rng.integers(0, O, (T, n))]                  # one-hot (T, n, O)
    batch = TaskBatch.make(rng.standard_normal((T, K, D)), targets(K),
                           rng.standard_normal((T, Q, D)), targets(Q))
    alpha_vec = rng.uniform(0.02, 0.2, model.num_params)               # Meta-SGD-like (P,)
    return model, theta, batch, alpha_vec


def one_pass(model, theta, x, y, v):
    """Kernel forward + loss + backward + R-pass on one point set: (ŷ, loss, ∇L, H v)."""
    geom = fast.geometry(model)
    sizes = geom.sizes
    N, Hsum, P, L = x.shape[0], int(sizes[1:].sum()), model.num_params, len(sizes) - 1
    C, Rb = np.zeros((5, N * Hsum)), np.zeros((4, N * Hsum))    # Z, A, S, DZ, DH; RZ … RDH
    g, hv = np.zeros(P), np.zeros(P)
    x, y = x.ravel().copy(), y.ravel().copy()
    K.forward(theta, x, N, geom, C)
    off = N * int(geom.coff[L - 1])
    loss = K.loss_and_dyhat(C[0], C[1], C[3], off, y, N, int(sizes[L]), geom.loss_id)
    K.backward(theta, x, N, geom, C, g)
    K.rpass(theta, v, x, N, geom, C, Rb, hv)
    y_hat = C[0, off:off + N * int(sizes[L])].reshape(N, -1).copy()
    return y_hat, loss, g, hv


# ---- the matrix product: gemm_acc (BLAS dgemm or thin loops) ------------------------------------


@pytest.mark.parametrize("M,R,W", [(10, 40, 40), (4, 3, 5), (10, 40, 1), (1, 10, 40),
                                   (10, 1, 40), (40, 10, 1), (1, 1, 1)])
def test_gemm_acc_matches_numpy(M, R, W):
    """C (+)= op(A) op(B) at offsets in flat buffers, every transpose flag and acc ∈ {0, 1}
    (acc = 0 over a C of NaN: C is not read), compiled (dgemm or loop) and as Python;
    nothing outside C's block is written."""
    rng = np.random.default_rng(M * 100 + R * 10 + W)
    for ta in (False, True):
        for tb in (False, True):
            for acc in (0, 1):
                A, B = rng.standard_normal(M * R + 7), rng.standard_normal(R * W + 5)
                C = rng.standard_normal(M * W + 6)
                if acc == 0:
                    C[3:3 + M * W] = np.nan                     # β = 0: C must not be read
                opA = A[7:].reshape(R, M).T if ta else A[7:].reshape(M, R)
                opB = B[5:].reshape(W, R).T if tb else B[5:].reshape(R, W)
                want = (C[3:3 + M * W].reshape(M, W) if acc else 0.0) + opA @ opB
                for f in (gemm_acc, gemm_acc.py_func):
                    got = C.copy()
                    f(A, 7, ta, B, 5, tb, got, 3, M, R, W, acc)
                    check(f"gemm_acc {M}x{R}x{W} ta={ta} tb={tb} acc={acc}",
                          got[3:3 + M * W], want.ravel())
                    assert np.array_equal(got[:3], C[:3]) and np.array_equal(got[-3:], C[-3:])


# ---- the MLP kernels: forward, loss, backward, R-pass ---------------------------------------


@pytest.mark.parametrize("sizes,activation,loss", CASES, ids=IDS)
def test_mlp_kernels_match_mlp_methods(sizes, activation, loss):
    model, theta, batch, _ = make_case(sizes, activation, loss)
    x, y = batch.x_query[0], batch.y_query[0]
    v = np.random.default_rng(1).standard_normal(model.num_params)
    y_hat, L, g, hv = one_pass(model, theta, x, y, v)
    check("forward ŷ", y_hat, model.forward(theta, x))
    check("loss", L, model.loss(theta, x, y))
    check("backward ∇L", g, model.loss_and_grad(theta, x, y)[1])
    check("R-pass H v", hv, model.hvp(theta, x, y, v))


# ---- the meta-gradient: all activations, losses, s = 1…5, both orders, both α kinds -----------


@pytest.mark.parametrize("sizes,activation,loss", CASES, ids=IDS)
def test_meta_gradient_matches_numpy(sizes, activation, loss):
    model, theta, batch, alpha_vec = make_case(sizes, activation, loss)
    for alpha in (0.1, alpha_vec):
        for s in range(1, 6):
            for first_order in (False, True):
                want = M.meta_gradient(model, theta, batch, alpha, s, first_order, "numpy")
                got = fast.MLPKernels(model).meta_gradient(theta, batch, alpha, s, first_order)
                name = f"s={s} fo={first_order} α={'vec' if np.ndim(alpha) else 'scalar'}"
                check(f"{name} meta-loss", got[0], want[0])
                check(f"{name} meta-gradient", got[1], want[1])


def test_zero_inner_steps_is_the_query_gradient():
    model, theta, batch, _ = make_case(*CASES[2])
    want = M.meta_gradient(model, theta, batch, 0.1, 0, False, "numpy")
    got = fast.MLPKernels(model).meta_gradient(theta, batch, 0.1, 0, False)
    check("s=0 meta-gradient", got[1], want[1])


@pytest.mark.parametrize("sizes,activation,loss", CASES[::2], ids=IDS[::2])
def test_meta_gradient_alpha_matches_numpy(sizes, activation, loss):
    model, theta, batch, alpha_vec = make_case(sizes, activation, loss)
    for alpha in (0.1, alpha_vec):
        for s in (1, 3):
            for first_order in (False, True):
                want = M.meta_gradient_alpha(model, theta, batch, alpha, s, first_order)
                got = fast.MLPKernels(model).meta_gradient_alpha(theta, batch, alpha, s, first_order)
                name = f"Meta-SGD s={s} fo={first_order} α={'vec' if np.ndim(alpha) else 'scalar'}"
                assert np.shape(got[2]) == np.shape(want[2])
                for part, g, w in zip(("loss", "∇θ", "∇α"), got, want):
                    check(f"{name} {part}", g, w)


def test_unchecked_entry_matches_checked():
    model, theta, batch, alpha_vec = make_case(*CASES[0])
    flat = [a.reshape(a.shape[0], -1) for a in (batch.x_support, batch.y_support,
                                                batch.x_query, batch.y_query)]
    for s, fo in ((1, False), (2, True)):
        want = fast.MLPKernels(model).meta_gradient(theta, batch, alpha_vec, s, fo)
        got = fast.MLPKernels(model).meta_gradient_unchecked(theta, *flat, alpha_vec, s, fo)
        assert got[0] == want[0] and np.array_equal(got[1], want[1])


def test_maml_backend_numba_calls_the_kernels():
    model, theta, batch, _ = make_case(*CASES[1])
    want = M.meta_gradient(model, theta, batch, 0.1, 2, False, backend="numpy")
    got = M.meta_gradient(model, theta, batch, 0.1, 2, False, backend="numba")
    check("maml.meta_gradient(backend='numba')", got[1], want[1])
    direct = fast.MLPKernels(model).meta_gradient(theta, batch, 0.1, 2, False)
    assert np.array_equal(got[1], direct[1])


# ---- adaptation: one task, a batch, and the loss curve ------------------------------------------


@pytest.mark.parametrize("sizes,activation,loss", CASES[1::2], ids=IDS[1::2])
def test_adapt_matches_numpy(sizes, activation, loss):
    model, theta, batch, alpha_vec = make_case(sizes, activation, loss)
    xs, ys = batch.x_support[1], batch.y_support[1]
    for alpha in (0.1, alpha_vec):
        for s in (0, 1, 4):
            check(f"adapt s={s}", M.adapt(model, theta, xs, ys, alpha, s, backend="numba"),
                  M.adapt(model, theta, xs, ys, alpha, s, backend="numpy"))
        check("adapt_batch", fast.MLPKernels(model).adapt_batch(theta, batch, alpha, 3),
              M.adapt_batch_numpy(model, theta, batch, alpha, 3))
        check("adapt_curve", fast.MLPKernels(model).adapt_curve(theta, batch, alpha, 4),
              M.adapt_curve_numpy(model, theta, batch, alpha, 4))


def test_adapt_curve_shape_and_first_column():
    model, theta, batch, _ = make_case(*CASES[0], T=2, Q=7)
    curve = fast.MLPKernels(model).adapt_curve(theta, batch, 0.05, 3)                # (T, s+1)
    assert curve.shape == (2, 4)
    for t in range(2):                                                    # k = 0: L_Q(θ)
        assert abs(curve[t, 0] - model.loss(theta, batch.x_query[t], batch.y_query[t])) \
            <= TOL * curve[t, 0]


# ---- same bits: repeated calls, and 1 versus 2 threads ---------------------------------------


def test_same_bits_repeated_and_any_thread_count():
    model, theta, batch, alpha_vec = make_case(*CASES[4], T=7)
    ref = fast.MLPKernels(model).meta_gradient(theta, batch, alpha_vec, 3, False)
    again = fast.MLPKernels(model).meta_gradient(theta, batch, alpha_vec, 3, False)
    assert again[0] == ref[0] and np.array_equal(again[1], ref[1])
    n = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            got = fast.MLPKernels(model).meta_gradient(theta, batch, alpha_vec, 3, False)
            assert got[0] == ref[0] and np.array_equal(got[1], ref[1]), f"{threads} threads"
    finally:
        numba.set_num_threads(n)


def test_scalar_alpha_has_the_bits_of_a_filled_vector():
    """A scalar α reaches the kernels as a (1,) array (one load per loop, not a (P,) stream):
    the same products α·g_i, so the same bits as the (P,) vector filled with α, for the
    meta-gradient (SO and FO), Meta-SGD's scalar-α gradient and adaptation."""
    for case in (CASES[0], CASES[6]):
        model, theta, batch, _ = make_case(*case, T=4)
        P, alpha = model.num_params, 0.05
        for s, fo in ((1, False), (3, False), (2, True)):
            a = fast.MLPKernels(model).meta_gradient(theta, batch, alpha, s, fo)
            b = fast.MLPKernels(model).meta_gradient(theta, batch, np.full(P, alpha), s, fo)
            assert a[0] == b[0] and a[1].tobytes() == b[1].tobytes(), (case, s, fo)
        a = fast.MLPKernels(model).meta_gradient_alpha(theta, batch, alpha, 2)
        b = fast.MLPKernels(model).meta_gradient_alpha(theta, batch, np.full(P, alpha), 2)
        assert a[1].tobytes() == b[1].tobytes()
        assert abs(a[2] - b[2].sum()) <= 1e-12 * abs(a[2])  # ∇α: one sum vs Σ of the entries
        a = fast.MLPKernels(model).adapt_batch(theta, batch, alpha, 3)
        b = fast.MLPKernels(model).adapt_batch(theta, batch, np.full(P, alpha), 3)
        assert a.tobytes() == b.tobytes()


# ---- models without kernels fall back to the NumPy reference ----------------------------------


class WrappedMLP:
    """The model protocol, delegated to an MLP, but not an MLP: fast.* must fall back."""

    def __init__(self, model):
        self.m = model
        self.num_params, self.sizes = model.num_params, model.sizes

    def __getattr__(self, name):
        return getattr(self.m, name)


def test_non_mlp_model_falls_back_to_numpy():
    """meta.maml.kernels_for is the one dispatch: a model without kernels runs the reference
    on backend="numba", with the reference's bits."""
    model, theta, batch, _ = make_case(*CASES[2])
    wrapped = WrappedMLP(model)
    assert M.kernels_for(wrapped, "numba") is None
    assert isinstance(M.kernels_for(model, "numba"), fast.MLPKernels)
    assert M.kernels_for(model, "numpy") is None
    want = M.meta_gradient(model, theta, batch, 0.1, 2, False, "numpy")
    got = M.meta_gradient(wrapped, theta, batch, 0.1, 2, False, "numba")
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert np.array_equal(M.adapt_curve(wrapped, theta, batch, 0.1, 2, "numba"),
                          M.adapt_curve_numpy(model, theta, batch, 0.1, 2))
    assert np.array_equal(M.adapt(wrapped, theta, batch.x_support[0], batch.y_support[0],
                                  0.1, 2, backend="numba"),
                          M.adapt(model, theta, batch.x_support[0], batch.y_support[0], 0.1, 2,
                                  backend="numpy"))


# ---- the kernels' Python source, run as Python (so coverage sees it) ---------------------------


def test_kernels_as_python_match_compiled(monkeypatch):
    """Every kernel's ``py_func`` in place of its dispatcher: the whole batch driver then
    runs as plain Python/NumPy (prange = range) and must agree with the compiled code."""
    for mod in (K, MK):
        for name, obj in list(vars(mod).items()):
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                monkeypatch.setattr(mod, name, obj.py_func)
    assert not isinstance(MK.batch_meta_grad, numba.core.registry.CPUDispatcher)
    for sizes, activation, loss in (CASES[0], CASES[3], CASES[4]):
        model, theta, batch, alpha_vec = make_case(sizes, activation, loss, T=2, K=3, Q=3)
        want = M.meta_gradient_alpha(model, theta, batch, alpha_vec, 2, False)
        geom = fast.geometry(model)
        flat = [a.reshape(2, -1) for a in (batch.x_support, batch.y_support, batch.x_query,
                                           batch.y_query)]
        T, P, Hsum = 2, model.num_params, int(geom.sizes[1:].sum())
        ws = MK.alloc_workspace(T, P, 2, 3, 3, Hsum, P)
        got = MK.batch_meta_grad(theta, *flat, Inner(alpha_vec, 2, False, 2), geom, ws, 2)
        for part, g, w in zip(("loss", "∇θ", "∇α"), got, want):
            check(f"py_func {activation}/{loss} {part}", g, w)
        want = M.meta_gradient_alpha(model, theta, batch, 0.1, 1, True)          # scalar α, FO
        ws1 = MK.alloc_workspace(T, P, 1, 3, 3, Hsum, 1)
        got = MK.batch_meta_grad(theta, *flat, Inner(np.full(1, 0.1), 1, True, 1), geom, ws1,
                                 2)
        for part, g, w in zip(("loss", "∇θ", "∇α"), got, (want[0], want[1], [want[2]])):
            check(f"py_func {activation}/{loss} scalar α FO {part}", g, w)
        out, curve = np.empty((T, P)), np.zeros((T, 3))
        MK.batch_adapt(theta, *flat, Inner(alpha_vec, 2, False, 0), True, geom, ws, out, curve)
        check("py_func adapt_curve", curve, M.adapt_curve_numpy(model, theta, batch,
                                                                    alpha_vec, 2))


def test_chunked_calls_match_one_call(monkeypatch):
    """fast splits big batches (evaluation's 600 tasks) into CHUNK-task kernel calls."""
    model, theta, batch, _ = make_case(*CASES[2], T=5)
    whole = fast.MLPKernels(model).adapt_curve(theta, batch, 0.1, 3)
    grad = fast.MLPKernels(model).meta_gradient_alpha(theta, batch, 0.1, 2, False)
    monkeypatch.setattr(fast, "CHUNK", 2)                                # chunks 2 + 2 + 1
    assert np.array_equal(fast.MLPKernels(model).adapt_curve(theta, batch, 0.1, 3), whole)
    chunked = fast.MLPKernels(model).meta_gradient_alpha(theta, batch, 0.1, 2, False)
    assert chunked[0] == grad[0] and np.array_equal(chunked[1], grad[1])  # same fixed order
    assert chunked[2] == grad[2]
    check("chunked adapt_batch", fast.MLPKernels(model).adapt_batch(theta, batch, 0.1, 3),
          M.adapt_batch_numpy(model, theta, batch, 0.1, 3))


# ---- signatures: named bundles, not twenty positional arrays ------------------------------------


def test_no_compiled_kernel_takes_more_than_12_arguments():
    """Every @njit function under mamlnp/fast/ (every kernel set and fast/common/, read with
    ast) takes at most 12 positional arguments: geometry, workspace and per-call settings
    arrive as named bundles (fast/common/bundles.py and each set's own)."""
    import ast
    import pathlib
    src = pathlib.Path(MK.__file__).parents[1]                          # mamlnp/fast
    counts = {}
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                    "njit" in ast.unparse(d) for d in node.decorator_list):
                counts[f"{path.relative_to(src)}:{node.name}"] = len(node.args.args)
    assert len(counts) > 80                                 # every set's kernels were found
    longest = max(counts, key=counts.get)
    print(f"{len(counts)} compiled kernels; longest signature {longest}: {counts[longest]}")
    assert counts[longest] <= 12, {k: n for k, n in counts.items() if n > 12}
