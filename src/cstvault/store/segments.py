"""Append-only segment files holding zstd-19 frames, read back through mmap.

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

import crc32c

from ..codec.errors import CorruptRecord

SEGMENT_LIMIT = 256 * 1024
# segments kept mapped: their pages are released every RELEASE_EVERY reads, so a mapping
# costs address space, not RSS (Linux allows 65530 mappings per process by default)
MAX_MAPPED = 1024


def segment_name(seg_id: int) -> str:
    return f"{seg_id:08d}.seg"


def segment_path(directory: Path, seg_id: int) -> Path:
    return directory / segment_name(seg_id)


class SegmentWriter:
    """Appends frames to the newest segment; `sync` makes everything written durable."""

    def __init__(self, directory: Path, next_id: int):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.seg_id = next_id
        self._file = None
        self._size = 0
        self._dirty: list = []

    def _roll(self) -> None:
        if self._file is not None:
            self._file.flush()
            self._dirty.append(self._file)
        path = segment_path(self.directory, self.seg_id)
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across appends
        self._size = self._file.tell()

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
        return self.seg_id, offset, len(frame), crc32c.crc32c(frame)

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
_RANDOM = getattr(mmap, "MADV_RANDOM", None)
RELEASE_EVERY = 32  # frame reads between releases of the mapped pages


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


def unmap_pages(m: mmap.mmap) -> None:
    """Drop a segment's pages from this process's page tables (they stay in the OS page
    cache). The whole map, not just the frames read: the kernel maps neighbouring pages on
    each fault."""
    if _DONTNEED is None:
        return
    with contextlib.suppress(OSError, ValueError):
        m.madvise(_DONTNEED)


class SegmentReader:
    """Reads frames through mmap, keeping up to `max_open` segments mapped (LRU). Every
    RELEASE_EVERY reads, the pages mapped by those reads are released (`unmap_pages`), so
    mapped segments hold at most a few hundred KiB of RSS whatever their number; releasing
    after every read cost a syscall and a page fault per read.

    With `mapped=False` every frame is read with a plain open/pread/close instead (no map,
    no LRU): the unsegmented "records on disk" read path that `bench phases` compares with.
    """

    def __init__(self, directory: Path, max_open: int = MAX_MAPPED, mapped: bool = True):
        self.directory = directory
        self._dir = str(directory)  # plain strings: pathlib interns every name it parses
        self.max_open = max_open
        self.mapped = mapped
        self._maps: OrderedDict[int, mmap.mmap] = OrderedDict()
        self._touched: set[int] = set()  # segments read since the last release
        self._reads = 0

    def _map(self, seg_id: int) -> mmap.mmap:
        m = self._maps.get(seg_id)
        if m is not None:
            self._maps.move_to_end(seg_id)
            return m
        path = os.path.join(self._dir, segment_name(seg_id))
        try:  # os.open, not open(): a buffered file object costs several more syscalls
            fd = os.open(path, os.O_RDONLY)
            try:
                m = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
        except (OSError, ValueError) as exc:
            raise CorruptRecord(f"segment {segment_name(seg_id)} unreadable: {exc}") from exc
        if _RANDOM is not None:  # frames are read at random: no fault-around, no read-ahead
            with contextlib.suppress(OSError, ValueError):
                m.madvise(_RANDOM)
        self._maps[seg_id] = m
        if len(self._maps) > self.max_open:
            _, old = self._maps.popitem(last=False)
            old.close()
        return m

    def read(self, seg_id: int, offset: int, length: int, crc: int) -> bytes:
        """The frame's bytes, after checking its CRC32C."""
        if not self.mapped:
            return self._pread(seg_id, offset, length, crc)
        m = self._map(seg_id)
        if offset + length > len(m):
            # the segment may have grown since it was mapped
            self._maps.pop(seg_id).close()
            m = self._map(seg_id)
            if offset + length > len(m):
                raise CorruptRecord(f"segment {seg_id} truncated")
        frame = m[offset : offset + length]
        self._touched.add(seg_id)
        self._reads += 1
        if self._reads >= RELEASE_EVERY:
            self.release_pages()
        if crc32c.crc32c(frame) != crc:
            raise CorruptRecord(f"segment {seg_id} frame at {offset}: CRC32C mismatch")
        return frame

    def _pread(self, seg_id: int, offset: int, length: int, crc: int) -> bytes:
        path = os.path.join(self._dir, segment_name(seg_id))
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise CorruptRecord(f"segment {segment_name(seg_id)} unreadable: {exc}") from exc
        try:
            frame = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(frame) != length:
            raise CorruptRecord(f"segment {seg_id} truncated")
        if crc32c.crc32c(frame) != crc:
            raise CorruptRecord(f"segment {seg_id} frame at {offset}: CRC32C mismatch")
        return frame

    def release_pages(self) -> None:
        """Release the pages that reads since the last release mapped."""
        for seg_id in self._touched:
            m = self._maps.get(seg_id)
            if m is not None:
                unmap_pages(m)
        self._touched.clear()
        self._reads = 0

    def forget(self, seg_id: int) -> None:
        """Unmap a segment (before it is deleted: a mapping would keep its disk space)."""
        m = self._maps.pop(seg_id, None)
        if m is not None:
            m.close()

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
        self._maps.clear()
