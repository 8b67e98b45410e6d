"""The guard against stale Numba cache files (mamlnp/fast/kernels/__init__.py).

Dimension legend: none (file-system checks on a temporary directory).
"""
import os

from mamlnp.fast.kernels import STAMP, drop_stale_cache, sources_digest


def make(tmp_path):
    src, cache = tmp_path / "kernels", tmp_path / "kernels" / "__pycache__"
    cache.mkdir(parents=True)
    (src / "a.py").write_text("x = 1\n")
    (src / "b.py").write_text("y = 2\n")
    return src, cache


def touch(cache, *names):
    for n in names:
        (cache / n).write_bytes(b"compiled")


def test_first_run_clears_and_stamps(tmp_path):
    src, cache = make(tmp_path)
    touch(cache, "f.nbi", "f.nbc", "mod.cpython-311.pyc")
    assert drop_stale_cache(src, cache) == 2
    assert sorted(os.listdir(cache)) == sorted([STAMP, "mod.cpython-311.pyc"])   # .pyc kept
    assert (cache / STAMP).read_text().strip() == sources_digest(src)


def test_unchanged_sources_keep_the_cache(tmp_path):
    src, cache = make(tmp_path)
    drop_stale_cache(src, cache)
    touch(cache, "f.nbi", "f.nbc")
    assert drop_stale_cache(src, cache) == 0
    assert (cache / "f.nbc").exists()


def test_editing_any_kernel_file_drops_every_cached_kernel(tmp_path):
    src, cache = make(tmp_path)
    drop_stale_cache(src, cache)
    touch(cache, "a.f-1.py311.nbi", "b.g-1.py311.nbi", "b.g-1.py311.1.nbc")
    (src / "a.py").write_text("x = 3\n")                 # an edit of a.py only
    assert drop_stale_cache(src, cache) == 3             # b's kernels too: they may call a's
    assert not any(n.endswith((".nbi", ".nbc")) for n in os.listdir(cache))


def test_installed_package_has_a_current_stamp():
    import mamlnp.fast.kernels as K
    stamp = os.path.join(K._HERE, "__pycache__", STAMP)
    if os.path.exists(stamp):                            # absent on a read-only install
        with open(stamp) as f:
            assert f.read().strip() == sources_digest(K._HERE)
