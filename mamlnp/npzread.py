"""Reading an ``.npz`` file (a checkpoint, the Omniglot cache) with every size checked before
anything is decompressed.

Dimension legend: P parameters (what the run's model needs), n the items of one array.

``numpy.load`` trusts the file: it inflates a member as far as the member says and
allocates whatever shape a ``.npy`` header claims, so a crafted 2 MB file holding a
deflated 2 GiB member costs gigabytes and seconds before a checksum can refuse it, and a
header claiming 7 TiB gives a MemoryError. Here, in this order:

0. the file: a regular file, opened without blocking (a FIFO or a device is refused, and for
   the cache a symbolic link too: mamlnp.safeio.open_regular);
1. the zip directory: only ``NAME.npy`` members, no duplicates, stored or deflated, not
   encrypted, at most ``MAX_MEMBERS`` of them; each member's declared size is compared with
   the most its field may hold (``NpzReader.read(key, max_items)``) BEFORE it is opened
   (zipfile never inflates past the declared size, and checks the CRC-32 at the end);
2. the ``.npy`` header (version 1 or 2, at most ``MAX_HEADER`` bytes): the dtype must be
   one of the kinds the field allows (never an object; float64, int64, uint8 or str), the shape at most ``max_items``
   items, and header + data exactly the member's declared size;
3. only then the data: exactly that many bytes, read into an array of that shape.

Any failure, whatever raised it inside zipfile, zlib or numpy's header parser, becomes a
CheckpointError naming the field.
"""
import zipfile

import numpy as np

from .errors import CheckpointError, InputError
from .safeio import open_regular

MAX_MEMBERS = 256
MAX_HEADER = 4096                   # a .npy header of a few fields is ~128 bytes
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


class NpzReader:
    """The members of an .npz file, read one at a time with their sizes checked first."""

    def __init__(self, file, follow_links=True, what="checkpoint"):
        self.file, self.what = file, what
        try:
            self.fobj = open_regular(file, what, follow_links=follow_links)
        except InputError as exc:
            raise CheckpointError(str(exc)) from None
        try:
            self._check_end_record()
            self.zip = zipfile.ZipFile(self.fobj)
            infos = self.zip.infolist()
        except CheckpointError:
            self.fobj.close()
            raise
        except Exception as exc:                        # BadZipFile, OSError, struct.error …
            self.fobj.close()
            raise self._error(f"is truncated or corrupt: it is not a valid .npz (zip) archive "
                              f"({type(exc).__name__}: {exc})") from None
        try:
            self.members = self._directory(infos)
        except CheckpointError:
            self.close()
            raise

    def _check_end_record(self):
        """The member count and directory size of the zip's end record, before zipfile
        parses the directory (a small file may declare hundreds of thousands of members)."""
        try:
            end = zipfile._EndRecData(self.fobj)
            count, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
        except Exception:                   # no end record, or zipfile's internals moved:
            return                          # ZipFile itself will refuse or parse it
        if count > MAX_MEMBERS or size > MAX_MEMBERS * 1024:
            raise self._error(f"declares {count} members in a {size}-byte directory, expected "
                              f"at most {MAX_MEMBERS} members")

    def _error(self, what, field=None):
        where = f"{self.file!r}" + (f", field {field!r}," if field else "")
        return CheckpointError(f"{self.what}: {where} {what}")

    def _directory(self, infos):
        if len(infos) > MAX_MEMBERS:
            raise self._error(f"holds {len(infos)} members, expected at most {MAX_MEMBERS}")
        members = {}
        for info in infos:
            name = info.filename
            key = name[:-4]
            if not name.endswith(".npy") or not key or key in members:
                raise self._error(f"holds an unexpected member {name!r} (expected distinct "
                                  f"NAME.npy arrays)")
            if info.compress_type not in METHODS or info.flag_bits & 0x1:
                raise self._error("is stored with an unsupported compression method "
                                  f"({info.compress_type}) or encrypted", key)
            members[key] = info
        return members

    def __contains__(self, key):
        return key in self.members

    def keys(self):
        return list(self.members)

    def read(self, key, kinds, max_items, max_chars=2**20):
        """The array ``key``: dtype kind in ``kinds`` ("f" float64, "i" int64, "u" uint8, "U"
        str of at most ``max_chars`` characters an item), at most ``max_items`` items;
        CheckpointError naming ``key`` otherwise, before the data are decompressed."""
        info = self.members.get(key)
        if info is None:
            raise self._error("is missing", key)
        itemsize = 4 * max_chars if "U" in kinds else 1 if kinds == "u" else 8
        limit = MAX_HEADER + max_items * itemsize
        if info.file_size > limit:
            raise self._error(f"holds {info.file_size} bytes, expected at most {limit} for "
                              f"{max_items} item(s) (sizes are checked before decompressing)",
                              key)
        try:
            with self.zip.open(info) as f:
                return self._read_npy(f, key, info.file_size, kinds, max_items, itemsize)
        except CheckpointError:
            raise
        except Exception as exc:               # zlib.error, BadZipFile (CRC), ValueError …
            raise self._error(f"is truncated or corrupt and cannot be read "
                              f"({type(exc).__name__}: {exc})", key) from None

    def _read_npy(self, f, key, size, kinds, max_items, itemsize):
        fmt = np.lib.format
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise self._error(f"has .npy format version {version}, expected (1, 0) or (2, 0)",
                              key)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f, max_header_size=MAX_HEADER)
        header = f.tell() if f.seekable() else None
        count = int(np.prod(shape, dtype=object)) if shape else 1
        if dtype.hasobject or dtype.kind not in kinds or dtype.itemsize != {
                "f": 8, "i": 8, "u": 1}.get(dtype.kind, dtype.itemsize):
            names = {"f": "float64", "i": "int64", "u": "uint8", "U": "str"}
            raise self._error(f"has dtype {dtype}, expected "
                              f"{' or '.join(names[k] for k in kinds)}", key)
        if count > max_items or dtype.itemsize > itemsize:
            raise self._error(f"has shape {shape} of dtype {dtype}, expected at most "
                              f"{max_items} item(s)", key)
        nbytes = count * dtype.itemsize
        if header is not None and header + nbytes != size:
            raise self._error(f"is truncated or corrupt: its header says {nbytes} bytes of "
                              f"data, the member holds {size - header}", key)
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise self._error(f"is truncated: {len(data)} of {nbytes} bytes", key)
        arr = np.frombuffer(data, dtype=dtype, count=count)
        return arr.reshape(shape, order="F" if fortran else "C").copy()

    def close(self):
        self.zip.close()
        self.fobj.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
