"""Omniglot: reading, preprocessing, cache, the MAML split, episodes, errors.

Dimension legend: T tasks, N ways, K shots, Q query per class, C characters, R = 20 drawings,
S = 28 pixels a side, D = 784 inputs.

Most tests run on a tiny synthetic Omniglot written here with Pillow (the official layout,
105×105 mode-'1' PNGs, white paper, black strokes). The tests at the end use the real data
when ../shared/data/omniglot (beside the checkout) or $MAMLNP_DATA_DIR holds it, and skip
cleanly otherwise.
"""
import os
import pathlib
import random
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mamlnp import MLP, EvaluationPool, InputError, OmniglotTasks, adapt, meta_gradient
from mamlnp.tasks import omniglot_data as data

# background: 2 alphabets × 4 characters, evaluation: 2 × 3 -> 14 characters
LAYOUT = {"images_background": {"Alpha": 4, "Beta": 4}, "images_evaluation": {"Gamma": 3, "Delta": 3}}
SMALL = dict(num_train=10, num_val=3, require_full=False)      # train 7, val 3, test 4


def drawing(char, drawer):
    """A 105×105 mode-'1' image: a stroke whose place says the character, jittered by drawer."""
    im = Image.new("1", (105, 105), 1)                          # white paper (True)
    d = ImageDraw.Draw(im)
    x0, y0 = 8 + 6 * char + drawer % 3, 10 + 4 * (char % 5) + drawer % 2
    d.line([(x0, y0), (x0 + 20, y0 + 60)], fill=0, width=3)     # black ink (False)
    d.rectangle([(70, 8 + 5 * char), (74 + drawer % 4, 14 + 5 * char)], fill=0)
    d.rectangle([(4 * drawer, 96), (4 * drawer + 2, 99)], fill=0)    # this drawer's mark
    return im


def write_tree(root, zipped=(), drawings=20, layout=LAYOUT):
    """The official layout under root; the sets named in ``zipped`` as zips instead."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    char = 0
    for s, alphabets in layout.items():
        z = zipfile.ZipFile(root / f"{s}.zip", "w") if s in zipped else None
        for alphabet, n in alphabets.items():
            for c in range(1, n + 1):
                char += 1
                for r in range(1, drawings + 1):
                    rel = f"{s}/{alphabet}/character{c:02d}/{char:04d}_{r:02d}.png"
                    if z:
                        with z.open(rel, "w") as f:
                            drawing(char, r).save(f, format="PNG")
                    else:
                        (root / rel).parent.mkdir(parents=True, exist_ok=True)
                        drawing(char, r).save(root / rel)
        if z:
            z.close()
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("omni"), zipped=("images_evaluation",))


@pytest.fixture(scope="module")
def family(tree, tmp_path_factory):
    return OmniglotTasks(tree, ways=3, cache_dir=tmp_path_factory.mktemp("cache"), **SMALL)


# --- preprocessing ------------------------------------------------------------------------

def test_pillow_resizes_mode_1_with_nearest_whatever_filter_is_asked():
    """Why the default converts to 'L' first: on a mode-'1' image LANCZOS is ignored."""
    im = drawing(3, 1)
    asked = np.asarray(im.resize((28, 28), Image.Resampling.LANCZOS))
    nearest = np.asarray(im.resize((28, 28), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(asked, nearest)


def test_lanczos_is_the_grey_antialiased_resize_with_ink_one():
    im = drawing(5, 2)
    ink = data.preprocess(im, "lanczos")
    grey = np.asarray(im.convert("L").resize((28, 28), Image.Resampling.LANCZOS))
    assert ink.dtype == np.uint8 and ink.shape == (28, 28)
    np.testing.assert_array_equal(ink, 255 - grey)
    assert len(np.unique(ink)) > 10                            # grey levels: a real filter ran
    full = 1.0 - np.asarray(im, dtype=float)                    # 105×105, ink = 1 on black
    assert abs(ink.mean() / 255 - full.mean()) < 0.2 * full.mean()   # ink mass kept (±20%)
    assert ink[0, 0] == 0                                       # paper is 0


def test_nearest_is_what_the_reference_script_produced():
    im = drawing(7, 4)
    ink = data.preprocess(im, "nearest")
    reference = np.asarray(im.resize((28, 28), Image.Resampling.LANCZOS))   # resize_images.py
    np.testing.assert_array_equal(ink, np.where(reference, 0, 255))
    assert set(np.unique(ink)) <= {0, 255}
    assert not np.array_equal(ink, data.preprocess(im, "lanczos"))


def first_png(tree, name):
    """The first drawing of character "Alphabet/characterNN" in the tree (folder or zip)."""
    s = next(s for s, alph in LAYOUT.items() if name.split("/")[0] in alph)
    if (tree / s).is_dir():
        return Image.open(sorted((tree / s / name).iterdir())[0])
    with zipfile.ZipFile(tree / f"{s}.zip") as z:
        member = sorted(n for n in z.namelist() if n.startswith(f"{s}/{name}/"))[0]
        img = Image.open(z.open(member))
        img.load()
        return img


def test_characters_are_the_preprocessed_pngs_divided_by_255(family, tree):
    for split in ("train", "val", "test"):
        x = family.characters(split)
        names = family.character_names(split)
        assert x.dtype == np.float64 and x.shape == (len(names), 20, 784)
        assert 0.0 <= x.min() and x.max() <= 1.0
        for c in (0, len(names) - 1):
            want = data.preprocess(first_png(tree, names[c]), "lanczos").ravel() / 255.0
            np.testing.assert_array_equal(x[c, 0], want)


def test_zip_and_folder_give_the_same_images(tmp_path, family):
    folders = write_tree(tmp_path / "f")
    other = OmniglotTasks(folders, ways=3, cache_dir=tmp_path / "c", **SMALL)
    assert other.keys == family.keys
    np.testing.assert_array_equal(other.characters("test"), family.characters("test"))


# --- the split ----------------------------------------------------------------------------

def test_split_is_the_references_shuffle_of_the_sorted_characters(family):
    keys = sorted(f"{a}/character{c:02d}" for alph in LAYOUT.values() for a, n in alph.items()
                  for c in range(1, n + 1))
    assert family.keys == keys
    random.seed(1)                                  # data_generator.py: random.seed(1); shuffle
    random.shuffle(keys)
    assert family.character_names("train") == keys[:7]            # num_train − num_val
    assert family.character_names("val") == keys[7:10]
    assert family.character_names("test") == keys[10:]
    assert {len(family.split[s]) for s in ("train", "val", "test")} == {7, 3, 4}


# --- episodes -----------------------------------------------------------------------------

def _classes(family, batch, split, K):
    """For every (task, class): which character and rotation its support rows are."""
    chars = family.characters(split).reshape(-1, 20, 28, 28)
    found = []
    for t in range(batch.num_tasks):
        for n in range(family.ways):
            img = batch.x_support[t, n * K].reshape(28, 28)
            hits = [(c, k) for c in range(len(chars)) for k in range(4)
                    if any(np.array_equal(np.rot90(d, k), img) for d in chars[c])]
            assert len(hits) >= 1
            found.append(hits[0])
    return found


def test_episode_shapes_one_hot_and_classes_from_one_rotated_character(family):
    K, Q, N = 2, 3, 3
    b = family.sample(np.random.default_rng(0), 4, K, Q)
    assert b.x_support.shape == (4, N * K, 784) and b.y_support.shape == (4, N * K, N)
    assert b.x_query.shape == (4, N * Q, 784) and b.y_query.shape == (4, N * Q, N)
    for y in (b.y_support, b.y_query):
        assert set(np.unique(y)) == {0.0, 1.0} and np.all(y.sum(axis=2) == 1)
    np.testing.assert_array_equal(b.y_support[0].argmax(1), np.repeat(np.arange(N), K))
    chars = family.characters("train").reshape(-1, 20, 28, 28)
    for t in range(4):
        for n in range(N):
            rows = np.concatenate([b.x_support[t, n * K:(n + 1) * K], b.x_query[t, n * Q:(n + 1) * Q]])
            rows = rows.reshape(-1, 28, 28)
            matches = {(c, k, r) for c in range(len(chars)) for k in range(4) for r in range(20)
                       for i in range(K + Q) if np.array_equal(np.rot90(chars[c, r], k), rows[i])}
            assert len({(c, k) for c, k, _ in matches}) == 1      # one character, one turn
            assert len({r for *_, r in matches}) == K + Q          # distinct drawings


def test_episode_classes_describe_the_episode_exactly(family):
    K, Q = 2, 1
    for seed, index in ((0, 0), (5, 3)):
        b = family.episodes("test", 1, K, Q, seed=seed, start=index)
        info = family.episode_classes("test", K, Q, seed=seed, index=index)
        names = family.character_names("test")
        chars = family.characters("test").reshape(len(names), 20, 28, 28)
        assert [c["label"] for c in info] == list(range(family.ways))
        for c in info:
            img = chars[names.index(c["character"])]
            turn = c["rotation"] // 90
            want_s = [np.rot90(img[r], turn).ravel() for r in c["support_drawings"]]
            want_q = [np.rot90(img[r], turn).ravel() for r in c["query_drawings"]]
            n = c["label"]
            np.testing.assert_array_equal(b.x_support[0, n * K:(n + 1) * K], want_s)
            np.testing.assert_array_equal(b.x_query[0, n * Q:(n + 1) * Q], want_q)


def test_labels_and_rotations_are_random_per_episode(family):
    b = family.sample(7, 24, 1, 1)
    found = _classes(family, b, "train", 1)
    by_char = {}
    for i, (c, k) in enumerate(found):
        by_char.setdefault(c, set()).add(i % family.ways)
    assert any(len(labels) > 1 for labels in by_char.values())  # a character, several labels
    assert {k for _, k in found} == {0, 1, 2, 3}
    for t in range(b.num_tasks):                                 # distinct characters per task
        assert len({c for c, _ in found[t * 3:(t + 1) * 3]}) == 3


def test_no_rotations_when_asked(tree, tmp_path):
    f = OmniglotTasks(tree, ways=3, cache_dir=tmp_path, rotations=False, **SMALL)
    assert {k for _, k in _classes(f, f.sample(3, 10, 1, 1), "train", 1)} == {0}


def test_episodes_are_seeded_and_the_same_in_any_chunk(family):
    a = family.sample(11, 5, 2)
    b = family.sample(np.random.default_rng(11), 5, 2)
    np.testing.assert_array_equal(a.x_query, b.x_query)
    whole = family.episodes("test", 6, 1, 2, seed=2017)
    parts = [family.episodes("test", 3, 1, 2, seed=2017, start=s) for s in (0, 3)]
    np.testing.assert_array_equal(whole.x_support, np.concatenate([p.x_support for p in parts]))
    np.testing.assert_array_equal(whole.x_query, np.concatenate([p.x_query for p in parts]))
    other = family.episodes("test", 6, 1, 2, seed=2018)
    assert not np.array_equal(whole.x_support, other.x_support)
    assert family.sample(0, 2, 4).x_query.shape == (2, 12, 784)           # Q = K by default


def test_the_meta_gradient_and_adapt_work_unchanged(family):
    model = MLP((784, 16, 3), activation="relu", loss="softmax_xent")
    theta = model.init(seed=0)
    b = family.sample(0, 4, 1)
    loss, g = meta_gradient(model, theta, b, alpha=0.4, inner_steps=1, backend="numpy")
    assert np.isfinite(loss) and g.shape == theta.shape and np.all(np.isfinite(g))
    phi = adapt(model, theta, b.x_support[0], b.y_support[0], 0.4, 2, backend="numpy")
    assert phi.shape == theta.shape


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(shots=10, query=11), r"shots \+ query"),
    (dict(shots=0), "shots"), (dict(shots=1, query=-1), "query"), (dict(num_tasks=0), "num_tasks"),
])
def test_bad_counts(family, kwargs, fragment):
    args = dict(num_tasks=2, shots=1) | kwargs
    with pytest.raises(InputError, match=fragment):
        family.sample(0, args.pop("num_tasks"), **args)
    with pytest.raises(InputError, match=fragment):
        family.episodes("test", **(dict(num_tasks=2, shots=1) | kwargs))


def test_more_ways_than_characters_and_bad_options(tree, tmp_path):
    with pytest.raises(InputError, match="ways: expected at most 3"):
        OmniglotTasks(tree, ways=4, cache_dir=tmp_path, **SMALL)
    with pytest.raises(InputError, match="ways"):
        OmniglotTasks(tree, ways=0, cache_dir=tmp_path, **SMALL)
    with pytest.raises(InputError, match="resize"):
        OmniglotTasks(tree, resize="bicubic", cache_dir=tmp_path, **SMALL)
    with pytest.raises(InputError, match="num_train"):
        OmniglotTasks(tree, ways=2, cache_dir=tmp_path, num_train=20, num_val=3, require_full=False)
    family = OmniglotTasks(tree, ways=2, cache_dir=tmp_path, **SMALL)
    with pytest.raises(InputError, match="split"):
        family.characters("validation")
    with pytest.raises(InputError, match="draws whole episodes"):
        EvaluationPool(family)                  # the regression pool: parameters, then inputs


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(InputError, match="python -m mamlnp download omniglot"):
        OmniglotTasks(tmp_path / "nowhere", cache_dir=tmp_path)
    (tmp_path / "half").mkdir()
    write_tree(tmp_path / "half", layout={"images_background": LAYOUT["images_background"]},
               zipped=("images_background",))
    with pytest.raises(InputError, match="images_evaluation.zip"):
        OmniglotTasks(tmp_path / "half", cache_dir=tmp_path, **SMALL)


def test_incomplete_or_corrupt_copies_are_refused(tmp_path, tree):
    with pytest.raises(InputError, match="30 and 964"):       # the official counts by default
        OmniglotTasks(tree, cache_dir=tmp_path)
    short = write_tree(tmp_path / "short")
    next((short / "images_background" / "Alpha" / "character02").iterdir()).unlink()
    with pytest.raises(InputError, match="exactly 20 drawings"):
        OmniglotTasks(short, ways=2, cache_dir=tmp_path, **SMALL)
    bad = write_tree(tmp_path / "bad")
    next((bad / "images_evaluation" / "Delta" / "character03").iterdir()).write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read the image"):
        OmniglotTasks(bad, ways=2, cache_dir=tmp_path, **SMALL)
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "images_background.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="not a readable zip"):
        OmniglotTasks(tmp_path / "z", cache_dir=tmp_path, **SMALL)


# --- the cache ----------------------------------------------------------------------------

def test_second_load_reads_the_cache(tree, tmp_path, monkeypatch):
    first = OmniglotTasks(tree, ways=3, cache_dir=tmp_path, **SMALL)
    [path] = tmp_path.glob("omniglot-28px-lanczos-*.npz")
    with np.load(path) as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape == (14, 20, 28, 28)
    monkeypatch.setattr(data, "build", lambda *a: pytest.fail("rebuilt a valid cache"))
    again = OmniglotTasks(tree, ways=3, cache_dir=tmp_path, **SMALL)
    np.testing.assert_array_equal(first.characters("train"), again.characters("train"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other shape", "other source"])
def test_a_bad_cache_is_rebuilt_never_trusted(tree, tmp_path, damage):
    good = OmniglotTasks(tree, ways=3, cache_dir=tmp_path, **SMALL)
    [path] = tmp_path.glob("*.npz")
    with np.load(path) as z:
        saved = dict(z)
    if damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "other shape":
        np.savez_compressed(path, **(saved | {"images": saved["images"][:, :19]}))
    else:
        np.savez_compressed(path, **(saved | {"fingerprint": "0" * 64,
                                              "images": np.zeros_like(saved["images"])}))
    with pytest.warns(UserWarning, match="rebuilding"):
        again = OmniglotTasks(tree, ways=3, cache_dir=tmp_path, **SMALL)
    np.testing.assert_array_equal(good.characters("test"), again.characters("test"))
    assert OmniglotTasks(tree, ways=3, cache_dir=tmp_path, **SMALL).keys == good.keys  # fixed


def test_the_cache_follows_the_source_and_the_resize(tmp_path):
    root = write_tree(tmp_path / "d")
    OmniglotTasks(root, ways=3, cache_dir=tmp_path / "c", **SMALL)
    OmniglotTasks(root, ways=3, cache_dir=tmp_path / "c", resize="nearest", **SMALL)
    png = next((root / "images_background" / "Beta" / "character01").iterdir())
    drawing(40, 1).save(png)                                   # another drawing, another size
    changed = OmniglotTasks(root, ways=3, cache_dir=tmp_path / "c", **SMALL)
    assert len(list((tmp_path / "c").glob("*.npz"))) == 3
    x = changed.characters("train")
    assert set(np.unique(OmniglotTasks(root, ways=3, cache_dir=tmp_path / "c", resize="nearest",
                                       **SMALL).characters("train"))) == {0.0, 1.0}
    assert len(np.unique(x)) > 2
    st = png.stat()                                            # same bytes, a later mtime:
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # not trusted either
    OmniglotTasks(root, ways=3, cache_dir=tmp_path / "c", **SMALL)
    assert len(list((tmp_path / "c").glob("*.npz"))) == 5           # 3 + nearest + this


def test_no_cache_is_written_through_a_symlink(tree, tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(InputError, match="symbolic link"):
        OmniglotTasks(tree, ways=3, cache_dir=tmp_path / "link", **SMALL)
    assert not list((tmp_path / "real").iterdir())


# --- where the data is, and the download --------------------------------------------------

def test_data_dir_from_the_environment(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLNP_DATA_DIR", str(tree))
    assert OmniglotTasks(ways=3, cache_dir=tmp_path, **SMALL).data_dir == str(tree)
    monkeypatch.delenv("MAMLNP_DATA_DIR")
    assert data.resolve_data_dir() == os.path.join(data.user_cache_dir(), "omniglot")


def test_download_asks_pooch_for_the_official_zips_with_their_sha256(tmp_path, monkeypatch):
    import pooch
    source = write_tree(tmp_path / "src", zipped=tuple(LAYOUT))
    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.append((url, known_hash, progressbar))
        os.makedirs(path, exist_ok=True)
        (pathlib.Path(path) / fname).write_bytes((source / fname).read_bytes())
        return str(pathlib.Path(path) / fname)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    f = OmniglotTasks(tmp_path / "dl", ways=3, download=True, cache_dir=tmp_path / "c", **SMALL)
    assert len(f.keys) == 14
    assert [c[0] for c in calls] == [
        "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
        "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip"]
    assert calls[0][1] == "sha256:" + data.SHA256["images_background"] and calls[0][2]
    OmniglotTasks(tmp_path / "dl", ways=3, download=True, cache_dir=tmp_path / "c", **SMALL)
    assert len(calls) == 2                                      # what is there is kept


def test_a_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import pooch

    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(InputError, match="could not fetch .*no network"):
        data.download(tmp_path)


# --- the real data ------------------------------------------------------------------------

def real_data_dir():
    here = pathlib.Path(__file__).resolve().parents[1]
    for d in (os.environ.get("MAMLNP_DATA_DIR"), here.parent / "shared" / "data" / "omniglot"):
        if d and (pathlib.Path(d) / "images_background.zip").exists() | \
                (pathlib.Path(d) / "images_background").is_dir():
            return pathlib.Path(d)
    return None


needs_real = pytest.mark.skipif(real_data_dir() is None,
                                reason="real Omniglot not found ($MAMLNP_DATA_DIR, ../shared/data/omniglot)")


@pytest.fixture(scope="module")
def real():
    """The real data, cached where the notebooks cache it ($MAMLNP_CACHE_DIR: conftest sets a
    temporary folder for the session), so a session preprocesses it once."""
    return OmniglotTasks(real_data_dir(), ways=5)


@needs_real
def test_real_counts_and_split(real):
    assert len(real.keys) == 1623 and len({k.split("/")[0] for k in real.keys}) == 50
    sizes = {s: len(v) for s, v in real.split.items()}
    assert sizes == {"train": 1100, "val": 100, "test": 423}
    every = np.concatenate(list(real.split.values()))
    assert sorted(every) == list(range(1623))
    x = real.characters("test")
    assert x.shape == (423, 20, 784) and x.dtype == np.float64
    ink = x.mean(axis=2)                        # the README: 105-px ink fraction 0.0023 … 0.221
    assert 0.0 < ink.min() and ink.max() < 0.3 and 0.05 < np.median(ink) < 0.12


@needs_real
def test_real_cache_is_read_back_and_episodes_drawn(real, monkeypatch):
    monkeypatch.setattr(data, "build", lambda *a: pytest.fail("rebuilt a valid cache"))
    again = OmniglotTasks(real.data_dir, ways=5, cache_dir=real.cache_dir)
    np.testing.assert_array_equal(again.characters("val"), real.characters("val"))
    b = again.episodes("test", 4, 1, seed=2017)
    assert b.x_support.shape == (4, 5, 784) and b.y_query.shape == (4, 5, 5)


@pytest.mark.parametrize("C,n", [(1100, 5), (100, 20), (7, 7), (30, 1)])
def test_the_partial_sort_picks_what_argsort_picks(C, n):
    """Episodes pick their classes by _smallest, argsort's first n columns by a partial sort:
    the same indices in the same order for distinct draws (the same episodes, bit for bit)."""
    from mamlnp.tasks.omniglot import _smallest
    u = np.random.default_rng(C).random((64, C))
    assert np.array_equal(_smallest(u, n), np.argsort(u, axis=1)[:, :n])
