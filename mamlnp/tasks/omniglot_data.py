"""Omniglot on disk: find it, read it (mamlnp/tasks/omniglot_source.py: the structure, every
size checked first), resize and cache it (download on request).

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
CRC-32s or modification times) and is read as checkpoints are (mamlnp/npzread.py: a regular
file, not a link, each member's size and dtype checked before anything is decompressed), then
checked (keys, shape, counts, fingerprint) before it is used; a cache that fails any check is
rebuilt (warned). It is written atomically (mamlnp/safeio.py); a full disk costs only the cache.
The cache folder: ``cache_dir``, else $MAMLNP_CACHE_DIR, else <user cache>/omniglot.
"""
import contextlib
import io
import os
import sys
import time
import warnings

import numpy as np

from ..errors import CheckpointError, InputError
from ..npzread import NpzReader
from ..safeio import atomic_write
from ..validation import choice
from .omniglot_source import (DRAWINGS, MAX_PNG_BYTES, MAX_SIDE, OFFICIAL_COUNTS,  # noqa: F401
                              SETS, Source, check_structure, how_to_get)

SIZE = 28                                       # S: 105 → 28 pixels, as the reference
RESIZES = ("lanczos", "nearest")
CACHE_VERSION = 1
MAX_KEY_CHARS = 256                 # "Alphabet/characterNN" in the cache
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
    """The folder of the preprocessed .npz: ``cache_dir``, else $MAMLNP_CACHE_DIR, else
    <user cache>/omniglot."""
    if cache_dir is None:
        return os.environ.get("MAMLNP_CACHE_DIR") or os.path.join(user_cache_dir(), "omniglot")
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise InputError(f"cache_dir: expected a folder path, got {cache_dir!r}")
    return os.fspath(cache_dir)


# --- preprocessing ------------------------------------------------------------------------

def preprocess(image, resize="lanczos"):
    """One drawing -> its ink, uint8 (S, S), 255 = full ink (x = ink / 255 is fed to the net).

    lanczos: grey 'L' (0 black stroke … 255 white paper), LANCZOS to 28×28, ink = 255 − grey.
    nearest: the image as mode '1', resized to 28×28 (Pillow uses NEAREST on mode '1' for
             any filter: the reference's output), ink = 255 where the pixel is black.
    """
    from PIL import Image
    image = on_white(image)
    if resize == "lanczos":
        grey = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS))
        return (255 - grey).astype(np.uint8)                              # (S, S)
    binary = np.asarray(image.convert("1").resize((SIZE, SIZE), Image.Resampling.NEAREST))
    return np.where(binary, 0, 255).astype(np.uint8)                      # (S, S)


def on_white(image):
    """A drawing with transparency (RGBA, LA, a palette or grey image with a transparent
    colour) laid on white paper, as it is seen; other images unchanged. Converting it to
    grey directly would keep the colour under the transparent pixels (often black): an
    all-ink drawing."""
    from PIL import Image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image


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
    """The cached images if the file passes every check, else None (with the reason warned).
    Read as checkpoints are (mamlnp.npzread): a regular file, not a link, every member's size
    and dtype checked against the C characters expected before anything is decompressed."""
    if not os.path.lexists(path):
        return None
    C = len(keys)
    try:
        with NpzReader(path, follow_links=False, what="cache") as z:
            version = z.read("version", "i", 1)
            stored = z.read("fingerprint", "U", 1, max_chars=128)
            cached_keys = z.read("keys", "U", C, max_chars=MAX_KEY_CHARS)
            images = z.read("images", "u", C * DRAWINGS * SIZE * SIZE)
        ok = (images.shape == (C, DRAWINGS, SIZE, SIZE) and cached_keys.shape == (C,)
              and list(cached_keys) == list(keys)
              and (int(version), str(stored)) == (CACHE_VERSION, fingerprint))
        if ok:
            return images
        reason = "it was made from other data or is of another shape"
    except CheckpointError as exc:              # not a regular file, truncated, too large …
        reason = str(exc)
    warnings.warn(f"Omniglot cache {path} not used ({reason}); rebuilding it", stacklevel=3)
    return None


def write_cache(path, images, keys, fingerprint):
    """Write atomically (mamlnp.safeio.atomic_write: temp file, fsync, rename); never through
    a symlink; a folder that cannot be written, or a full disk, only costs the cache
    (warned), and a previous cache file is kept whole."""
    folder = os.path.dirname(path)
    if os.path.islink(path) or os.path.islink(folder):
        raise InputError(f"cache_dir: {path} (or its folder) is a symbolic link; mamlnp does "
                         f"not write through links. Pass another cache_dir.")
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, keys=np.array(keys, dtype=str),
                        version=np.int64(CACHE_VERSION), fingerprint=fingerprint)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(path, lambda f: f.write(buf.getvalue()))
    except OSError as exc:
        warnings.warn(f"Omniglot cache not written ({folder}: {exc}); the next load preprocesses "
                      f"again", stacklevel=3)


NOTICE_DRAWINGS = 2000              # preprocessing more than this says so (no silent stall)


@contextlib.contextmanager
def _notice(n, path):
    """One line on stderr before preprocessing ``n`` drawings (the full data: 32,460, once per
    data folder), one after with the time it took; nothing for a few (tests' data)."""
    if n < NOTICE_DRAWINGS:
        yield
        return
    print(f"mamlnp: preprocessing Omniglot's {n} drawings once (105 → {SIZE} px); the result "
          f"is cached in {path}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    print(f"mamlnp: Omniglot preprocessed in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
          flush=True)


def load_images(data_dir, cache_dir=None, resize="lanczos", require_full=True):
    """(keys (C,) "Alphabet/characterNN" sorted, uint8 ink (C, R, S, S)), from the cache when
    it is valid, else preprocessed from the source and cached."""
    resize = choice("resize", resize, RESIZES)
    source = Source(data_dir, require_full)
    try:
        keys = source.keys()
        fingerprint = source.fingerprint(f"v{CACHE_VERSION} {resize} {SIZE}\n")
        path = cache_path(resolve_cache_dir(cache_dir), fingerprint, resize)
        images = read_cache(path, keys, fingerprint)
        if images is None:
            with _notice(len(keys) * DRAWINGS, path):
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
                             f"({type(exc).__name__}: {exc}). Copy images_background.zip and "
                             f"images_evaluation.zip (both are needed) from "
                             f"https://github.com/brendenlake/omniglot/tree/master/python into "
                             f"{data_dir} by hand.") from None
    return data_dir
