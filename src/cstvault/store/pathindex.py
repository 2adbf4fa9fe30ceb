"""The path index: a file's blob and frame locations without a SQLite query.

`paths.idx` holds, sorted by a 64-bit hash of the path, one fixed-size entry per stored file
(the columns of `BlobRow` plus the file's size and mtime), written whole by the writers at
the end of `index`, `freeze` and `gc`. It is a cache of the catalog, never the truth: the
`generation` file holds a random stamp that every writer changes (durably) inside its first
write transaction after the index was built, and the index is used only while its own stamp
equals that file's. A reader whose index is not current asks the catalog, as before it.
Layout: docs/format.md.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from .._numpy import np

from .. import _native, faults
from ..checksum import crc32c
from .catalog import _B_COLUMNS, FILE, PATH, BlobRow, Catalog, row_check
from .segments import fsync_dir, map_file, unmap_pages

INDEX = "paths.idx"
COUNTER = "generation"
MAGIC = b"CSTP"
VERSION = 2
_HEAD = struct.Struct("<4sIQQQQQIIII")  # magic, version, stamp, count, hashes offset,
# entries offset, unused, entry size, languages length, CRC32C of everything after the header, pad
HEAD_SIZE = 64
ENTRY_SIZE = 76  # bytes of one entry; _native.find_path reads it at entry_dtype()'s offsets


@cache
def entry_dtype() -> np.dtype:
    """The entry layout (numpy is only needed to build an index, not to read one)."""
    dt = np.dtype([
        ("check", "<u8"), ("blob", "<u4"), ("size", "<u4"), ("mtime_ns", "<i8"),
        ("tree", "<u4", 4), ("src", "<u4", 4), ("tree_dict", "<u2"), ("src_dict", "<u2"),
        ("language", "<u2"), ("pad", "<u2"), ("blob_size", "<u4"), ("lines", "<u4"),
        ("nodes", "<u4"),
    ])  # fmt: skip
    assert dt.itemsize == ENTRY_SIZE
    return dt


RETRY_EVERY = 1024  # lookups between looks for an index where there was none


def _random_stamp() -> int:
    """64 random bits from the OS (what `secrets` does, without its hashlib import)."""
    return int.from_bytes(os.urandom(8), "little")


def _write_counter(directory: Path, stamp: int) -> None:
    """Store `stamp` in the generation file, durably (before the caller's commit)."""
    path = directory / COUNTER
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, struct.pack("<Q", stamp), 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read_counter(directory: Path) -> int | None:
    try:
        with open(directory / COUNTER, "rb") as f:
            data = f.read(8)
    except OSError:
        return None
    return struct.unpack("<Q", data)[0] if len(data) == 8 else None


class Invalidator:
    """Makes the index not current before a writer's transaction changes the catalog: called
    with the write lock held, it changes the stamp unless this writer already did since the
    index was last built (then one 8-byte read)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._mine: int | None = None
        self._trusted: object = None  # the writer lock under which the index is known stale

    def __call__(self, holder: object = None) -> None:
        """`holder`: the writer lock held; while that same lock stays held, nobody else can
        rebuild the index, so once it is known not current the read is skipped (a per-file
        writer commits thousands of small transactions)."""
        if holder is not None and self._trusted is holder:
            return
        current = read_counter(self.directory)
        if current is None and not (self.directory / INDEX).exists():
            self._trusted = holder
            return  # no index to invalidate (a new store; it gets one when the run ends)
        if current is None or current != self._mine:
            self._mine = _random_stamp()
            _write_counter(self.directory, self._mine)
        self._trusted = holder

    def forget(self) -> None:
        """The index was rebuilt: the next write must invalidate it again."""
        self._trusted = None


def build(catalog: Catalog, directory: Path) -> int:
    """Write the index of the catalog's files and make it current; returns its entries.

    Holds the catalog's write lock throughout, so no transaction is half done while the rows
    are read and the stamp is set."""
    db = catalog.db
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(
            f'SELECT {PATH}, f.size, f.mtime_ns, {_B_COLUMNS}, f."check" FROM {FILE} '
            "JOIN blobs b ON b.id = f.blob"
        ).fetchall()
        paths = [r[0] for r in rows]
        # a damaged row is left out (readers then ask the catalog, which reports it)
        usable = [k for k, (p, size, mtime, blob, *rest) in enumerate(rows)
                  if _utf8(p) is not None and row_check(p, blob, size, mtime) == rest[-1]]
        rows = [r[:-1] for r in rows]  # fmt: skip
        rows = [rows[k] for k in usable]
        paths = [paths[k] for k in usable]
        hashes = np.frombuffer(_native.path_hashes(paths), dtype=np.uint64).reshape(-1, 2)
        order = np.argsort(hashes[:, 0], kind="stable")
        languages = sorted({r[4] for r in rows})
        lang_id = {name: k for k, name in enumerate(languages)}
        entries = np.zeros(len(rows), dtype=entry_dtype())
        if rows:
            cols = list(zip(*[rows[k] for k in order.tolist()], strict=True))
            (_, size, mtime, blob, language, bsize, lines, nodes, *frames) = cols
            entries["check"] = hashes[order, 1]
            entries["language"] = [lang_id[x] for x in language]
            entries["mtime_ns"] = mtime
            try:
                for name, values in (("blob", blob), ("size", size), ("blob_size", bsize),
                                     ("lines", lines), ("nodes", nodes),
                                     ("tree_dict", frames[8]), ("src_dict", frames[9]),
                                     ("tree", np.array(frames[0:4]).T),
                                     ("src", np.array(frames[4:8]).T)):  # fmt: skip
                    _put(entries, name, values)
            except _TooWide:
                return 0  # no index: readers keep asking the catalog
        langs = json.dumps(languages).encode()
        langs += b" " * (-len(langs) % 8)
        hoff = HEAD_SIZE + len(langs)
        eoff = hoff + 8 * len(rows)
        body = b"".join((langs, hashes[order, 0].tobytes(), entries.tobytes()))
        stamp = _random_stamp()
        head = _HEAD.pack(MAGIC, VERSION, stamp, len(rows), hoff, eoff, 0, ENTRY_SIZE,
                          len(langs), crc32c(body), 0)  # fmt: skip
        head += b"\0" * (HEAD_SIZE - len(head))
        tmp = directory / (INDEX + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(head)
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            faults.point("pathindex.tmp_written")
            os.replace(tmp, directory / INDEX)
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. disk full: nothing left behind
            raise
        fsync_dir(directory)
        faults.point("pathindex.renamed")
        _write_counter(directory, stamp)
    finally:
        db.execute("COMMIT")
    return len(rows)


class _TooWide(ValueError):
    """A value does not fit its entry field: the store gets no index (readers use SQLite)."""


def _put(entries: np.ndarray, name: str, values) -> None:
    a = np.asarray(values, dtype=np.int64)
    info = np.iinfo(entries.dtype[name].base)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise _TooWide(name)
    entries[name] = a


def _utf8(path: str) -> bytes | None:
    try:
        return path.encode()
    except UnicodeEncodeError:
        return None  # such a path is never looked up here (find_path answers "not current")


def entries_page(index: mmap.mmap) -> int:
    """Offset of the first page of a mapped index that holds only entries."""
    entries = _HEAD.unpack_from(index, 0)[5]
    return -(-entries // mmap.PAGESIZE) * mmap.PAGESIZE


class PathIndex:
    """A reader's view of the index: `find(path)` -> (BlobRow, (size, mtime_ns)), None when
    the path is not stored, or NOT_CURRENT when the catalog must be asked.

    The sorted hashes (8 bytes a file), which every lookup's binary search walks, are mapped
    and stay resident once touched; the one entry a lookup needs (76 bytes, at random) is
    read with `pread` from the same open file, so no entry page is ever mapped in."""

    NOT_CURRENT = False

    def __init__(self, directory: Path):
        self.directory = directory
        self._index: mmap.mmap | None = None
        self._fd = -1  # the index file, open while it is mapped
        self._counter: mmap.mmap | None = None
        self._languages: list[str] = []
        self._tried: int | None = None  # counter value at the last (re)load attempt
        self._misses = 0
        self._load()

    def _load(self) -> None:
        self.close()
        self._counter = map_file(self.directory / COUNTER)
        if self._counter is None:
            return
        try:
            fd = os.open(self.directory / INDEX, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            index = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            os.close(fd)
            return
        ok = len(index) >= HEAD_SIZE
        if ok:
            magic, version, _, _, _, _, _, esize, llen, crc, _ = _HEAD.unpack_from(index, 0)
            ok = magic == MAGIC and version == VERSION and esize == ENTRY_SIZE
            ok = ok and crc32c(memoryview(index)[HEAD_SIZE:]) == crc
        if ok:
            try:
                self._languages = json.loads(bytes(index[HEAD_SIZE : HEAD_SIZE + llen]))
            except ValueError:
                ok = False
        if not ok:  # damaged: the catalog answers
            index.close()
            os.close(fd)
            return
        with contextlib.suppress(OSError, ValueError):  # lookups land anywhere: no read-ahead
            index.madvise(mmap.MADV_RANDOM)
        # the check above mapped every page in; entries are read with pread from now on
        unmap_pages(index, entries_page(index))
        self._index, self._fd = index, fd

    def find(self, path: str):
        found = self._lookup(path)
        if found is False:
            self._misses += 1
            if (self._counter is not None or self._misses % RETRY_EVERY == 0) and self._reload():
                found = self._lookup(path)
        return self.NOT_CURRENT if found is False else found

    def _lookup(self, path: str):
        if self._index is None:
            return False
        return _native.find_path(self._index, self._counter, path, BlobRow, self._languages,
                                 self._fd)  # fmt: skip

    def _reload(self) -> bool:
        """Map a newer index, once per change of the generation file; True if one is mapped."""
        if self._counter is not None:
            now: int | None = struct.unpack_from("<Q", self._counter)[0]
        else:
            now = read_counter(self.directory)
            if now is None:
                return False
        if now == self._tried:
            return False
        self._tried = now
        self._load()
        return self._index is not None

    def summary(self) -> dict:
        """Entries, bytes and whether lookups use the index now (else the catalog)."""
        current = False
        if self._index is not None:
            stamp = bytes(self._index[8:16])
            current = self._counter is not None and bytes(self._counter[:8]) == stamp
        entries = _HEAD.unpack_from(self._index, 0)[3] if self._index is not None else 0
        size = len(self._index) if self._index is not None else 0
        return {"entries": entries, "bytes": size, "current": current}

    def close(self) -> None:
        for m in (self._index, self._counter):
            if m is not None:
                m.close()
        if self._fd >= 0:
            os.close(self._fd)
        self._index = self._counter = None
        self._fd = -1

