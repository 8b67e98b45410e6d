"""The guard against stale Numba cache files (mamlnp/fast/common/__init__.py).

Dimension legend: none (file-system checks on a temporary directory).
"""
import os

from mamlnp.fast.common import FAST, STAMP, drop_stale_cache, sources_digest


def make(tmp_path):
    """A source tree like mamlnp/fast/: a.py at the top, b.py in a kind's folder, each with
    its own __pycache__."""
    src = tmp_path / "fast"
    for folder in (src, src / "kind"):
        (folder / "__pycache__").mkdir(parents=True)
    (src / "a.py").write_text("x = 1\n")
    (src / "kind" / "b.py").write_text("y = 2\n")
    return src, src / "__pycache__", src / "kind" / "__pycache__"


def touch(cache, *names):
    for n in names:
        (cache / n).write_bytes(b"compiled")


def test_first_run_clears_and_stamps(tmp_path):
    src, cache, sub = make(tmp_path)
    touch(cache, "f.nbi", "f.nbc", "mod.cpython-311.pyc")
    touch(sub, "g.nbi")
    assert drop_stale_cache(src) == 3
    assert sorted(os.listdir(cache)) == sorted([STAMP, "mod.cpython-311.pyc"])   # .pyc kept
    assert os.listdir(sub) == []
    assert (cache / STAMP).read_text().strip() == sources_digest(src)


def test_unchanged_sources_keep_the_cache(tmp_path):
    src, cache, sub = make(tmp_path)
    drop_stale_cache(src)
    touch(cache, "f.nbi", "f.nbc")
    touch(sub, "g.nbi")
    assert drop_stale_cache(src) == 0
    assert (cache / "f.nbc").exists() and (sub / "g.nbi").exists()


def test_editing_any_kernel_file_drops_every_cached_kernel(tmp_path):
    src, cache, sub = make(tmp_path)
    drop_stale_cache(src)
    touch(cache, "a.f-1.py311.nbi")
    touch(sub, "b.g-1.py311.nbi", "b.g-1.py311.1.nbc")
    (src / "a.py").write_text("x = 3\n")                 # an edit of a.py only
    assert drop_stale_cache(src) == 3                    # the kind's kernels too: they call a's
    for folder in (cache, sub):
        assert not any(n.endswith((".nbi", ".nbc")) for n in os.listdir(folder))


def test_a_file_in_a_subfolder_counts(tmp_path):
    """The digest covers every folder's sources (a kind's kernels call common/'s)."""
    src, _, _ = make(tmp_path)
    before = sources_digest(src)
    (src / "kind" / "b.py").write_text("y = 3\n")
    assert sources_digest(src) != before


def test_installed_package_has_a_current_stamp():
    stamp = os.path.join(FAST, "__pycache__", STAMP)
    if os.path.exists(stamp):                            # absent on a read-only install
        with open(stamp) as f:
            assert f.read().strip() == sources_digest(FAST)
