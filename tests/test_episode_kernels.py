"""The compiled Omniglot episodes (mamlnp/fast/episode_kernels.py) against their NumPy
twins in mamlnp/tasks/omniglot.py: the SAME BITS, not a tolerance.

Dimension legend: T tasks, N ways, K shots, Q query per class, C characters, S = 28 pixels a
side, D = 784 inputs.

The numba backend's training loop draws its episodes with ``mamlnp.fast.episodes.sample_compiled``
(mamlnp.run.trainstep.sample_batch); a run must not change by one bit, so each kernel is
checked against the NumPy code (compiled and run as Python), and the compiled sampler
against ``sample`` batch after batch with the generator's state after each.
"""
import numpy as np
import pytest

from mamlnp import OmniglotTasks
from mamlnp.fast import episodes as FE
from mamlnp.fast import episode_kernels as EK
from mamlnp.run import trainstep as TS
from mamlnp.tasks.omniglot import _smallest

from test_omniglot import SMALL, needs_real, real_data_dir, write_tree


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    tree = write_tree(tmp_path_factory.mktemp("omni"))
    return OmniglotTasks(tree, ways=3, cache_dir=tmp_path_factory.mktemp("cache"), **SMALL)


@pytest.mark.parametrize("kernel", ["compiled", "py_func"])
@pytest.mark.parametrize("C,n", [(1100, 5), (1100, 20), (100, 20), (7, 7), (30, 1), (2, 1)])
def test_smallest_columns_is_the_partial_sort(kernel, C, n):
    f = EK.smallest_columns if kernel == "compiled" else EK.smallest_columns.py_func
    u = np.random.default_rng(C + n).random((64, C))
    out = np.empty((64, n), np.int64)
    f(u, out)
    assert same(out, _smallest(u, n)) and same(out, np.argsort(u, axis=1)[:, :n])


def test_smallest_columns_puts_ties_lower_column_first():
    u = np.array([[0.5, 0.1, 0.1, 0.9, 0.1]])
    out = np.empty((1, 3), np.int64)
    EK.smallest_columns(u, out)
    assert out.tolist() == [[1, 2, 4]]


@pytest.mark.parametrize("kernel", ["compiled", "py_func"])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotated_row_is_rot90_divided_by_255(kernel, k):
    f = EK.rotated_row if kernel == "compiled" else EK.rotated_row.py_func
    img = np.random.default_rng(k).integers(0, 256, (28, 28)).astype(np.uint8)
    img[0, :4] = (0, 1, 254, 255)
    row = np.empty(28 * 28)
    f(img, k, EK.LUT, row)
    assert same(row, (np.rot90(img, k) / 255.0).ravel())


def test_the_table_holds_numpys_quotients():
    u8 = np.arange(256, dtype=np.uint8)
    want = np.empty(256)
    np.divide(u8, 255.0, out=want)                  # as OmniglotTasks._episodes divides
    assert same(EK.LUT, want) and same(EK.LUT, np.array([float(i) / 255.0 for i in range(256)]))


@pytest.mark.parametrize("kernel", ["compiled", "py_func"])
@pytest.mark.parametrize("T,K,Q", [(4, 1, 1), (3, 2, 3), (1, 5, 1)])
def test_sample_compiled_gives_the_bits_of_sample(family, kernel, T, K, Q, monkeypatch):
    if kernel == "py_func":
        for name in ("smallest_columns", "episode_rows", "rotated_row"):
            monkeypatch.setattr(EK, name, getattr(EK, name).py_func)
    ref, rng = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):
        want, got = family.sample(ref, T, K, Q), FE.sample_compiled(family, rng, T, K, Q)
        for name in ("x_support", "y_support", "x_query", "y_query"):
            assert same(getattr(got, name), getattr(want, name)), name
        assert got.x_support.flags.c_contiguous and got.x_query.flags.c_contiguous
        assert rng.bit_generator.state == ref.bit_generator.state


def test_sample_batch_uses_the_compiled_sampler_on_numba_only(family, monkeypatch):
    calls = []
    monkeypatch.setattr(FE, "sample_compiled",
                        lambda fam, *a: calls.append(a) or fam.sample(*a), raising=True)
    TS.sample_batch(family, np.random.default_rng(0), 2, 1, 1, "numpy")
    assert calls == []
    TS.sample_batch(family, np.random.default_rng(0), 2, 1, 1, "numba")
    assert len(calls) == 1


def test_no_rotations_compiled(tmp_path_factory):
    tree = write_tree(tmp_path_factory.mktemp("omni_norot"))
    f = OmniglotTasks(tree, ways=3, cache_dir=tmp_path_factory.mktemp("c"), rotations=False,
                      **SMALL)
    a = f.sample(np.random.default_rng(1), 6, 2, 1)
    b = FE.sample_compiled(f, np.random.default_rng(1), 6, 2, 1)
    assert same(a.x_support, b.x_support) and same(a.x_query, b.x_query)


@needs_real
def test_sample_compiled_on_the_real_data():
    """The protocol's 5-way 1-shot meta-batch of 32 on the 1100 training characters."""
    real = OmniglotTasks(real_data_dir(), ways=5)                 # the user cache folder
    ref, rng = np.random.default_rng(2017), np.random.default_rng(2017)
    for _ in range(20):
        want, got = real.sample(ref, 32, 1, 1), FE.sample_compiled(real, rng, 32, 1, 1)
        assert same(got.x_support, want.x_support) and same(got.x_query, want.x_query)
    assert rng.bit_generator.state == ref.bit_generator.state
