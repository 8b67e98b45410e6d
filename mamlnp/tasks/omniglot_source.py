"""Omniglot's source files: a data folder holding, per set, a zip or its extracted folder, read
with every size checked first.

Dimension legend: C characters, R = 20 drawings per character.

The official layout (Lake, Salakhutdinov & Tenenbaum 2015): ``images_background`` (30
alphabets, 964 characters) and ``images_evaluation`` (20 alphabets, 659 characters), each
``<set>/<Alphabet>/characterNN/<id>_<drawer>.png``, 105×105 one-bit PNGs. A data folder
holds the two zips or their extracted folders (a folder wins over its zip).

What is read, and what is refused before it is read (an InputError naming data_dir):

* a zip: its end record declares at most MAX_ZIP_MEMBERS members; every PNG member is stored
  or deflated, not encrypted, and declares at most MAX_PNG_BYTES (zipfile never inflates past
  the declared size, and checks the CRC-32 at the end): 1 GiB of deflated zeros is refused
  before a byte is inflated;
* a folder: every ``*.png`` is a regular file (a link, e.g. to /dev/zero, a FIFO or a device
  is refused without being opened) of at most MAX_PNG_BYTES; a folder that cannot be read
  says so;
* a character lists each drawing's name once (ignoring case: a zip member listed twice would
  count one drawing twice);
* a drawing is at most MAX_SIDE pixels a side (read from its header before its pixels are
  decoded).
"""
import hashlib
import io
import os
import shlex
import stat
import warnings
import zipfile

from ..errors import InputError
from ..safeio import open_regular

SETS = ("images_background", "images_evaluation")
OFFICIAL_COUNTS = {"images_background": (30, 964), "images_evaluation": (20, 659)}  # alphabets, characters
DRAWINGS = 20                                   # R drawings per character
# Sizes checked before anything is read or decompressed: the official PNGs hold at most 577
# bytes and are 105×105; a re-encoded copy (8-bit grey, RGBA) stays far below these.
MAX_PNG_BYTES = 256 * 2**10         # a member's declared size, a file's size
MAX_SIDE = 1024                     # pixels a side of a drawing (Pillow reads the header first)
MAX_ZIP_MEMBERS = 100_000           # the official zips hold 20,275 and 13,860 entries
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def how_to_get(data_dir):
    return (f"Get it with one command: python -m mamlnp download omniglot --data-dir "
            f"{shlex.quote(os.fspath(data_dir))} "
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
            f = open_regular(zpath, "data_dir")
            try:
                _check_zip_directory(f, zpath)
                self._zips[name] = zf = zipfile.ZipFile(f)
            except (zipfile.BadZipFile, OSError, InputError) as exc:
                f.close()
                raise InputError(f"data_dir: {zpath} is not a readable zip ({exc}). "
                                 + how_to_get(self.data_dir)) from None
            return _list_zip(zf, name, zpath)
        raise InputError(f"data_dir: {self.data_dir!r} has neither {name}.zip nor an {name}/ "
                         f"folder. " + how_to_get(self.data_dir))

    def keys(self):
        """Every character as "Alphabet/characterNN", sorted (the alphabets' names are unique
        across the two sets: the merged layout the reference reads)."""
        return sorted(k for s in SETS for k in self.sets[s])

    def fingerprint(self, header):
        """SHA-256 of ``header`` (the cache's format version, resize, size) and every drawing's
        path and stamp: size and CRC-32 in a zip, size and modification time in a folder."""
        h = hashlib.sha256(header.encode())
        for s in SETS:
            for key in sorted(self.sets[s]):
                for fname, stamp in self.sets[s][key]:
                    h.update(f"{s}/{key}/{fname} {stamp}\n".encode())
        return h.hexdigest()

    def open_image(self, key):
        """The drawings of one character, as PIL images, in file-name order (drawer 01 … 20):
        each read only if its size is plausible (MAX_PNG_BYTES, MAX_SIDE; a regular file in
        a folder). Two drawings may hold the same pixels (the official Braille characters do)."""
        from PIL import Image
        s = next(s for s in SETS if key in self.sets[s])
        for fname, _ in self.sets[s][key]:
            path = f"{s}/{key}/{fname}"
            raw = self._read(s, path)
            try:
                with warnings.catch_warnings():         # the size is ours to check, first
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    im = Image.open(io.BytesIO(raw))    # reads the header only
                if max(im.size) > MAX_SIDE:
                    raise ValueError(f"{im.size[0]}×{im.size[1]} pixels, expected at most "
                                     f"{MAX_SIDE} a side (the official drawings are 105×105)")
                im.load()
            except Exception as exc:            # Pillow raises many kinds on a bad file
                raise InputError(f"data_dir: cannot read the image {path} in {self.data_dir} "
                                 f"({type(exc).__name__}: {exc}); the copy is corrupt. "
                                 + how_to_get(self.data_dir)) from None
            yield im

    def _read(self, s, path):
        """The bytes of one PNG, its size checked before it is read or decompressed."""
        if s in self._zips:
            try:
                return self._zips[s].read(path)   # its declared size was checked when listed
            except Exception as exc:            # CRC, zlib, truncated
                raise InputError(f"data_dir: cannot read {path} from {s}.zip in "
                                 f"{self.data_dir} ({type(exc).__name__}: {exc}); the copy is "
                                 f"corrupt. " + how_to_get(self.data_dir)) from None
        full = os.path.join(self.data_dir, path)
        with open_regular(full, "data_dir", MAX_PNG_BYTES, follow_links=False) as f:
            raw = f.read(MAX_PNG_BYTES + 1)
        if len(raw) > MAX_PNG_BYTES:
            raise InputError(f"data_dir: {full!r} grew past {MAX_PNG_BYTES} bytes while read")
        return raw

    def close(self):
        for zf in self._zips.values():
            zf.close()


def _list_folder(folder):
    """{"Alphabet/characterNN": [(png name, "size:mtime"), …]} of an extracted set. Only
    regular PNG files of a plausible size: a link, a FIFO or a device named *.png is refused
    (never opened), and so is a folder that cannot be read."""
    chars = {}
    for alphabet in _listdir(folder):
        apath = os.path.join(folder, alphabet)
        if not os.path.isdir(apath):
            continue
        for char in _listdir(apath):
            cpath = os.path.join(apath, char)
            if os.path.isdir(cpath):
                chars[f"{alphabet}/{char}"] = _list_pngs(cpath)
    return chars


def _listdir(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError(f"data_dir: cannot read the folder {folder!r} ({exc.strerror}); "
                         f"expected a readable Omniglot folder") from None


def _list_pngs(cpath):
    """[(name, stamp)] of one character folder's PNGs, each a regular file <= MAX_PNG_BYTES."""
    files = []
    for name in _listdir(cpath):
        if not name.lower().endswith(".png"):
            continue
        path = os.path.join(cpath, name)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PNG_BYTES:
            what = (f"{st.st_size} bytes (expected at most {MAX_PNG_BYTES})"
                    if stat.S_ISREG(st.st_mode) else "not a regular file (a link, a FIFO or a "
                                                     "device)")
            raise InputError(f"data_dir: {path!r} is {what}; expected the drawings as regular "
                             f"PNG files")
        files.append((name, _stamp(st)))
    _no_duplicate_names(files, cpath)
    return files


def _no_duplicate_names(files, where):
    """A character's drawings have distinct names (ignoring case): a member listed twice in a
    zip, or a.png beside a.PNG, would count one drawing twice."""
    names = [f.lower() for f, _ in files]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"data_dir: {where} lists the drawing {dup!r} twice; expected "
                         f"{DRAWINGS} distinct drawings per character")


def _stamp(st):
    """A file's size and modification time: what the cache fingerprint records of a PNG."""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _check_zip_directory(f, zpath):
    """The member count and directory size the zip's end record declares, before zipfile
    parses the directory (a small file may declare millions of members)."""
    try:
        end = zipfile._EndRecData(f)
        count, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    except Exception:                       # no end record, or zipfile's internals moved:
        return                              # ZipFile itself will refuse or parse it
    if count > MAX_ZIP_MEMBERS or size > MAX_ZIP_MEMBERS * 512:
        raise InputError(f"declares {count} members in a {size}-byte directory, expected at "
                         f"most {MAX_ZIP_MEMBERS} members")


def _list_zip(zf, name, zpath=None):
    """The same listing read from a zip's members ``<name>/<Alphabet>/<characterNN>/<file>.png``;
    each PNG member stored or deflated, not encrypted, declaring at most MAX_PNG_BYTES
    (checked here, before anything is decompressed; zipfile never inflates past the declared
    size and checks the CRC-32 at the end)."""
    chars = {}
    for info in zf.infolist():
        parts = info.filename.split("/")
        if len(parts) == 4 and parts[0] == name and parts[3].lower().endswith(".png"):
            if (info.compress_type not in ZIP_METHODS or info.flag_bits & 0x1
                    or info.file_size > MAX_PNG_BYTES):
                raise InputError(f"data_dir: the member {info.filename} of {zpath} declares "
                                 f"{info.file_size} bytes, compression {info.compress_type}"
                                 f"{', encrypted' if info.flag_bits & 0x1 else ''}; expected a "
                                 f"PNG of at most {MAX_PNG_BYTES} bytes, stored or deflated. "
                                 f"The zip is not the official one: " + how_to_get(
                                     os.path.dirname(zpath or name)))
            chars.setdefault(f"{parts[1]}/{parts[2]}", []).append(
                (parts[3], f"{info.file_size}:{info.CRC:08x}"))             # size and CRC-32
    for key, files in chars.items():
        _no_duplicate_names(files, f"{zpath or name + '.zip'}: {key}")
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
