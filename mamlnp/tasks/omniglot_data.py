"""Omniglot on disk: find it, check its structure, read, resize and cache it (download on request).

Dimension legend: C characters, R = 20 drawings per character, S = 28 pixels a side,
D = S·S = 784 inputs.

The data (Lake, Salakhutdinov & Tenenbaum 2015, MIT licence) is the two official zips
``images_background.zip`` (30 alphabets, 964 characters) and ``images_evaluation.zip``
(20 alphabets, 659 characters), each ``images_*/<Alphabet>/characterNN/<id>_<drawer>.png``,
105×105 one-bit PNGs, white background (True) and black strokes (False). A data folder
holds the two zips or their extracted folders (a folder wins over its zip).

Preprocessing (:func:`preprocess`), as the reference code (cbfinn/maml
data/omniglot_resized/resize_images.py resizes to 28×28 with Pillow's LANCZOS filter;
data_generator.py divides by 255 and inverts, ``1 − x``): 105 → 28 pixels, ink = 1.
Pillow resizes a mode-'1' image with NEAREST whatever filter is asked, so the reference's
``resize(..., LANCZOS)`` on the raw PNGs really subsampled them (binary 28×28 images).
The default here, ``resize="lanczos"``, converts to 8-bit grey ('L') first so the LANCZOS
filter really runs (antialiased strokes, grey levels, ink mass kept); ``resize="nearest"``
gives what the reference's script produced. Both are tested in tests/test_omniglot.py.

The preprocessed images are cached once as a compressed ``.npz`` (uint8 ink, 0 … 255) in
the cache folder; the cache names the source's fingerprint (SHA-256 of its file list, sizes and
CRC-32s or modification times) and is checked (keys, dtype, shape, counts, fingerprint) before it is used; a cache
that fails any check is rebuilt.
"""
import hashlib
import io
import os
import tempfile
import warnings
import zipfile

import numpy as np

from ..errors import InputError
from ..validation import choice

SETS = ("images_background", "images_evaluation")
OFFICIAL_COUNTS = {"images_background": (30, 964), "images_evaluation": (20, 659)}  # alphabets, characters
DRAWINGS = 20                                   # R drawings per character
SIZE = 28                                       # S: 105 → 28 pixels, as the reference
RESIZES = ("lanczos", "nearest")
CACHE_VERSION = 1
URL = "https://github.com/brendenlake/omniglot/raw/master/python/{}.zip"
# SHA-256 of the official zips, from tensorflow/datasets url_checksums/omniglot.txt
# (9,464,212 and 6,462,886 bytes). Re-encoded local copies have other checksums: a local
# copy is accepted by its structure, never by its checksum.
SHA256 = {"images_background": "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
          "images_evaluation": "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee"}


def user_cache_dir():
    """The user cache folder of mamlnp (``pooch.os_cache("mamlnp")``: ~/.cache/mamlnp on Linux,
    ~/Library/Caches/mamlnp on macOS, %LOCALAPPDATA%\\mamlnp\\Cache on Windows)."""
    import pooch
    return str(pooch.os_cache("mamlnp"))


def resolve_data_dir(data_dir=None):
    """The data folder: ``data_dir``, else $MAMLNP_DATA_DIR, else <user cache>/omniglot."""
    if data_dir is None:
        data_dir = os.environ.get("MAMLNP_DATA_DIR") or os.path.join(user_cache_dir(), "omniglot")
    if not isinstance(data_dir, (str, os.PathLike)):
        raise InputError(f"data_dir: expected a folder path, got {data_dir!r}")
    return os.fspath(data_dir)


def resolve_cache_dir(cache_dir=None):
    """The folder of the preprocessed .npz: ``cache_dir``, else <user cache>/omniglot."""
    if cache_dir is None:
        return os.path.join(user_cache_dir(), "omniglot")
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise InputError(f"cache_dir: expected a folder path, got {cache_dir!r}")
    return os.fspath(cache_dir)


def how_to_get(data_dir):
    return (f"Get it with one command: python -m mamlnp download omniglot --data-dir {data_dir} "
            f"(or OmniglotTasks(data_dir=..., download=True)), or copy images_background.zip and "
            f"images_evaluation.zip from https://github.com/brendenlake/omniglot/tree/master/python "
            f"into that folder.")


# --- reading the source: a folder or a zip per set ----------------------------------------

class Source:
    """One data folder: per set, its characters' drawings (names, sizes) and a reader."""

    def __init__(self, data_dir, require_full=True):
        self.data_dir, self.sets, self._zips = data_dir, {}, {}
        if not os.path.isdir(data_dir):
            raise InputError(f"data_dir: no Omniglot folder at {data_dir!r}. " + how_to_get(data_dir))
        for name in SETS:
            self.sets[name] = self._list(name)
        check_structure(self.sets, data_dir, require_full)

    def _list(self, name):
        folder, zpath = os.path.join(self.data_dir, name), os.path.join(self.data_dir, name + ".zip")
        if os.path.isdir(folder):
            return _list_folder(folder)
        if os.path.isfile(zpath):
            try:
                self._zips[name] = zf = zipfile.ZipFile(zpath)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"data_dir: {zpath} is not a readable zip ({exc}). "
                                 + how_to_get(self.data_dir)) from None
            return _list_zip(zf, name)
        raise InputError(f"data_dir: {self.data_dir!r} has neither {name}.zip nor an {name}/ "
                         f"folder. " + how_to_get(self.data_dir))

    def keys(self):
        """Every character as "Alphabet/characterNN", sorted (the alphabets' names are unique
        across the two sets: the merged layout the reference reads)."""
        return sorted(k for s in SETS for k in self.sets[s])

    def fingerprint(self, resize):
        """SHA-256 of (format version, resize, every drawing's path and stamp: size and CRC-32
    in a zip, size and modification time in a folder)."""
        h = hashlib.sha256(f"v{CACHE_VERSION} {resize} {SIZE}\n".encode())
        for s in SETS:
            for key in sorted(self.sets[s]):
                for fname, stamp in self.sets[s][key]:
                    h.update(f"{s}/{key}/{fname} {stamp}\n".encode())
        return h.hexdigest()

    def open_image(self, key):
        """The drawings of one character, as PIL images, in file-name order (drawer 01 … 20)."""
        from PIL import Image
        s = next(s for s in SETS if key in self.sets[s])
        for fname, _ in self.sets[s][key]:
            path = f"{s}/{key}/{fname}"
            try:
                if s in self._zips:
                    raw = io.BytesIO(self._zips[s].read(path))
                else:
                    with open(os.path.join(self.data_dir, path), "rb") as f:
                        raw = io.BytesIO(f.read())
                im = Image.open(raw)
                im.load()
            except Exception as exc:            # Pillow raises many kinds on a bad file
                raise InputError(f"data_dir: cannot read the image {path} in {self.data_dir} "
                                 f"({type(exc).__name__}: {exc}); the copy is corrupt. "
                                 + how_to_get(self.data_dir)) from None
            yield im

    def close(self):
        for zf in self._zips.values():
            zf.close()


def _list_folder(folder):
    """{"Alphabet/characterNN": [(png name, "size:mtime"), …]} of an extracted set."""
    chars = {}
    for alphabet in sorted(os.listdir(folder)):
        apath = os.path.join(folder, alphabet)
        if not os.path.isdir(apath):
            continue
        for char in sorted(os.listdir(apath)):
            cpath = os.path.join(apath, char)
            if os.path.isdir(cpath):
                chars[f"{alphabet}/{char}"] = sorted(
                    (f, _stamp(os.stat(os.path.join(cpath, f))))
                    for f in os.listdir(cpath) if f.lower().endswith(".png"))
    return chars


def _stamp(st):
    """A file's size and modification time: what the cache fingerprint records of a PNG."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _list_zip(zf, name):
    """The same listing read from a zip's members ``<name>/<Alphabet>/<characterNN>/<file>.png``."""
    chars = {}
    for info in zf.infolist():
        parts = info.filename.split("/")
        if len(parts) == 4 and parts[0] == name and parts[3].lower().endswith(".png"):
            chars.setdefault(f"{parts[1]}/{parts[2]}", []).append(
                (parts[3], f"{info.file_size}:{info.CRC:08x}"))             # size and CRC-32
    return {k: sorted(v) for k, v in sorted(chars.items())}


def check_structure(sets, data_dir, require_full=True):
    """Every character has exactly 20 drawings; with ``require_full`` the counts of the
    official release (30 + 20 alphabets, 964 + 659 characters)."""
    problems = []
    for s in SETS:
        chars = sets[s]
        bad = [k for k, files in chars.items() if len(files) != DRAWINGS]
        if bad:
            problems.append(f"{s}: {len(bad)} character(s) without exactly {DRAWINGS} drawings "
                            f"(first: {bad[0]}, {len(chars[bad[0]])} PNGs)")
        n_alpha, n_char = len({k.split('/')[0] for k in chars}), len(chars)
        want = OFFICIAL_COUNTS[s]
        if n_char == 0:
            problems.append(f"{s}: no character folders found")
        elif require_full and (n_alpha, n_char) != want:
            problems.append(f"{s}: {n_alpha} alphabets and {n_char} characters, expected "
                            f"{want[0]} and {want[1]}")
    keys = [k for s in SETS for k in sets[s]]
    if len(set(keys)) != len(keys):
        problems.append("an Alphabet/characterNN folder appears in both sets")
    if problems:
        raise InputError(f"data_dir: the Omniglot copy in {data_dir} is incomplete or not in the "
                         f"official layout: " + "; ".join(problems) + ". " + how_to_get(data_dir))


# --- preprocessing ------------------------------------------------------------------------

def preprocess(image, resize="lanczos"):
    """One drawing -> its ink, uint8 (S, S), 255 = full ink (x = ink / 255 is fed to the net).

    lanczos: grey 'L' (0 black stroke … 255 white paper), LANCZOS to 28×28, ink = 255 − grey.
    nearest: the image as mode '1', resized to 28×28 (Pillow uses NEAREST on mode '1' for
             any filter: the reference's output), ink = 255 where the pixel is black.
    """
    from PIL import Image
    if resize == "lanczos":
        grey = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS))
        return (255 - grey).astype(np.uint8)                              # (S, S)
    binary = np.asarray(image.convert("1").resize((SIZE, SIZE), Image.Resampling.NEAREST))
    return np.where(binary, 0, 255).astype(np.uint8)                      # (S, S)


def build(source, keys, resize):
    """uint8 (C, R, S, S): every character's 20 drawings, preprocessed."""
    images = np.empty((len(keys), DRAWINGS, SIZE, SIZE), dtype=np.uint8)
    for c, key in enumerate(keys):
        for r, im in enumerate(source.open_image(key)):
            images[c, r] = preprocess(im, resize)
    return images


# --- the cache ----------------------------------------------------------------------------

def cache_path(cache_dir, fingerprint, resize):
    return os.path.join(cache_dir, f"omniglot-{SIZE}px-{resize}-{fingerprint[:16]}.npz")


def read_cache(path, keys, fingerprint):
    """The cached images if the file passes every check, else None (with the reason warned)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, cached_keys = z["images"], z["keys"]
            meta = (int(z["version"]), str(z["fingerprint"]))
        ok = (images.dtype == np.uint8 and images.shape == (len(keys), DRAWINGS, SIZE, SIZE)
              and cached_keys.shape == (len(keys),) and list(cached_keys) == list(keys)
              and meta == (CACHE_VERSION, fingerprint))
        if ok:
            return images
        reason = "it was made from other data or is of another shape"
    except Exception as exc:                    # truncated, not a zip, missing keys, …
        reason = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"Omniglot cache {path} not used ({reason}); rebuilding it", stacklevel=3)
    return None


def write_cache(path, images, keys, fingerprint):
    """Write atomically (temp file + rename); never through a symlink; a folder that cannot
    be written only costs the cache (warned)."""
    folder = os.path.dirname(path)
    if os.path.islink(path) or os.path.islink(folder):
        raise InputError(f"cache_dir: {path} (or its folder) is a symbolic link; mamlnp does "
                         f"not write through links. Pass another cache_dir.")
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".omniglot-", suffix=".npz.tmp", dir=folder)
    except OSError as exc:
        warnings.warn(f"Omniglot cache not written ({folder}: {exc}); the next load preprocesses "
                      f"again", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, images=images, keys=np.array(keys, dtype=str),
                                version=CACHE_VERSION, fingerprint=fingerprint)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_images(data_dir, cache_dir=None, resize="lanczos", require_full=True):
    """(keys (C,) "Alphabet/characterNN" sorted, uint8 ink (C, R, S, S)), from the cache when
    it is valid, else preprocessed from the source and cached."""
    resize = choice("resize", resize, RESIZES)
    source = Source(data_dir, require_full)
    try:
        keys = source.keys()
        fingerprint = source.fingerprint(resize)
        path = cache_path(resolve_cache_dir(cache_dir), fingerprint, resize)
        images = read_cache(path, keys, fingerprint)
        if images is None:
            images = build(source, keys, resize)
            write_cache(path, images, keys, fingerprint)
    finally:
        source.close()
    return keys, images


# --- download (only on request) -----------------------------------------------------------

def download(data_dir=None, progressbar=True):
    """Fetch the two official zips into the data folder with pooch (SHA-256 checked, progress
    bar); sets already there and complete are kept. Returns the data folder."""
    import pooch
    data_dir = resolve_data_dir(data_dir)
    for name in SETS:
        if os.path.isdir(os.path.join(data_dir, name)) or os.path.isfile(os.path.join(data_dir, name + ".zip")):
            continue
        try:
            pooch.retrieve(URL.format(name), known_hash=f"sha256:{SHA256[name]}", fname=name + ".zip",
                           path=data_dir, progressbar=progressbar)
        except Exception as exc:                # network, HTTP, checksum mismatch
            raise InputError(f"download: could not fetch {URL.format(name)} into {data_dir} "
                             f"({type(exc).__name__}: {exc}). Copy the zip there by hand.") from None
    return data_dir
