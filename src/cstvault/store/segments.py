"""Append-only segment files holding zstd-19 frames, read back with `pread`.

A segment is a plain concatenation of compressed frames, at most SEGMENT_LIMIT bytes unless a
single frame is larger (it then gets a segment of its own). The catalog knows where every
frame starts, how long it is and its CRC32C; nothing in a segment is ever rewritten.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import OrderedDict
from pathlib import Path

from ..checksum import crc32c
from ..codec.errors import CorruptRecord

SEGMENT_LIMIT = 256 * 1024


def segment_name(seg_id: int) -> str:
    return f"{seg_id:08d}.seg"


def segment_path(directory: Path, seg_id: int) -> Path:
    return directory / segment_name(seg_id)


class SegmentWriter:
    """Appends frames to the newest segment; `sync` makes everything written durable;
    `rollback` takes back what was appended since the last `mark` (a commit)."""

    def __init__(self, directory: Path, next_id: int):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.seg_id = next_id
        self._file = None
        self._size = 0
        self._dirty: list = []
        self._base: dict[int, int | None] = {}  # segment -> size at the mark (None: new)

    def _roll(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._dirty.append(self._file)
        path = segment_path(self.directory, self.seg_id)
        existed = path.exists()
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across appends
        self._size = self._file.tell()
        self._base.setdefault(self.seg_id, self._size if existed else None)

    def mark(self) -> None:
        """What was appended so far is committed (the catalog references it)."""
        self._base = {self.seg_id: self._size} if self._file is not None else {}

    def rollback(self) -> None:
        """Drop every frame appended since the last `mark`: segments made since are deleted,
        the others cut back to their size then (after a failed batch: disk full, a
        crash-free error), so a failed step leaves nothing behind."""
        for f in [*self._dirty, self._file]:
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._dirty, self._file = [], None
        for seg_id, size in self._base.items():
            path = segment_path(self.directory, seg_id)
            with contextlib.suppress(OSError):
                if size is None:
                    path.unlink()
                else:
                    with open(path, "r+b") as f:
                        f.truncate(size)
                        os.fsync(f.fileno())
        self._base = {}
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)

    def append(self, frame: bytes) -> tuple[int, int, int, int]:
        """Write one frame; returns (segment id, offset, length, crc32c)."""
        if self._file is None:
            self._roll()
        elif self._size and self._size + len(frame) > SEGMENT_LIMIT:
            self.seg_id += 1
            self._roll()
        assert self._file is not None
        offset = self._size
        self._file.write(frame)
        self._size += len(frame)
        return self.seg_id, offset, len(frame), crc32c(frame)

    def sync(self) -> None:
        """fsync every segment written since the last sync, then the directory."""
        for f in [*self._dirty, self._file]:
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
        for f in self._dirty:
            f.close()
        self._dirty = []
        fsync_dir(self.directory)

    def close(self) -> None:
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None


_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
# segments kept open: a descriptor each, well under the usual 1024-descriptor soft limit
MAX_OPEN = 256


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a directory's entries (new, renamed files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def map_file(path: str | os.PathLike[str]) -> mmap.mmap | None:
    """A whole file mapped read-only, or None when it cannot be (missing, empty, ...)."""
    try:
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def unmap_pages(m: mmap.mmap, start: int = 0) -> None:
    """Drop a mapped file's pages from `start` (a page boundary) on from this process's page
    tables (they stay in the OS page cache)."""
    if _DONTNEED is None or start >= len(m):
        return
    with contextlib.suppress(OSError, ValueError):
        m.madvise(_DONTNEED, start, len(m) - start)


def _damage(frame: bytes, length: int, crc: int) -> str | None:
    """What is wrong with a frame read back (None: nothing); its CRC32C is computed once."""
    if len(frame) != length:
        return "truncated"
    return None if crc32c(frame) == crc else "CRC32C mismatch"


class SegmentReader:
    """Reads frames with one `pread` each from segments kept open (an LRU of `max_open`
    descriptors); every frame's CRC32C is checked.

    Frames are read at random, a few hundred bytes each: a `pread` into a new bytes object
    (one syscall, OS page cache, nothing left resident) measured about three times cheaper
    than a read through a mapped segment, which costs a page fault and, to keep RSS flat,
    a later `MADV_DONTNEED` per segment touched (`cstvault bench frames`).

    With `keep_open=False` every frame is read with open/pread/close instead (no LRU): the
    unsegmented "records on disk" read path that `bench phases` compares with.
    """

    def __init__(self, directory: Path, max_open: int = MAX_OPEN, keep_open: bool = True):
        self.directory = directory
        self._dir = str(directory)  # plain strings: pathlib interns every name it parses
        self.max_open = max_open
        self.keep_open = keep_open
        self._fds: OrderedDict[int, int] = OrderedDict()

    def _open(self, seg_id: int) -> int:
        path = os.path.join(self._dir, segment_name(seg_id))
        try:
            return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise CorruptRecord(f"segment {segment_name(seg_id)} unreadable: {exc}") from exc

    def _fd(self, seg_id: int) -> int:
        fd = self._fds.get(seg_id)
        if fd is not None:
            self._fds.move_to_end(seg_id)
            return fd
        fd = self._fds[seg_id] = self._open(seg_id)
        if len(self._fds) > self.max_open:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def read(self, seg_id: int, offset: int, length: int, crc: int) -> bytes:
        """The frame's bytes, after checking its CRC32C."""
        frame = self._pread(seg_id, offset, length)
        bad = _damage(frame, length, crc)
        if bad and self.keep_open:
            # the descriptor may be of a segment since deleted whose id a writer reused
            self.forget(seg_id)
            frame = self._pread(seg_id, offset, length)
            bad = _damage(frame, length, crc)
        if bad:
            raise CorruptRecord(f"segment {seg_id} {bad}" if bad == "truncated"
                                else f"segment {seg_id} frame at {offset}: {bad}")  # fmt: skip
        return frame

    def _pread(self, seg_id: int, offset: int, length: int) -> bytes:
        try:
            if self.keep_open:
                return os.pread(self._fd(seg_id), length, offset)
            fd = self._open(seg_id)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CorruptRecord(f"segment {seg_id} unreadable: {exc}") from exc

    def forget(self, seg_id: int) -> None:
        """Close a segment (before it is deleted: an open descriptor keeps its disk space)."""
        fd = self._fds.pop(seg_id, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
