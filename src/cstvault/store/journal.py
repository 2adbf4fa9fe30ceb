"""The edit journal: an append-only file of length-prefixed, CRC32C-checked entries.

Every per-file write (`Store.update/remove/apply_edit`) appends one entry and makes it
durable (fsync) before the catalog transaction that applies it; the catalog's meta row
`journal` says up to where entries are applied, in that same transaction. After a crash, the
next opener replays the entries past that point. The journal lives among the segments, with
an id from JOURNAL_BASE up, so the frames an entry carries are read in place (the catalog
points into the journal) until `checkpoint` recompresses them into frozen segments and a new
journal begins. Layout: docs/format.md, "Journal".
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..checksum import crc32c
from .segments import fsync_dir, segment_path

JOURNAL_BASE = 3_000_000_000  # segment ids of journals (regular segments count up from 1)
MAGIC = b"CSTJ"
_HEAD = struct.Struct("<4sBxxxIQI")  # magic, kind, pad, payload length, sequence, CRC32C
HEAD = _HEAD.size  # 24
MAX_PAYLOAD = 1 << 30
UPDATE, EDIT, REMOVE = 1, 2, 3
KINDS = {UPDATE: "update", EDIT: "edit", REMOVE: "remove"}


def _leb(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _read_leb(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def pack(ints: tuple[int, ...], blobs: tuple[bytes, ...]) -> tuple[bytes, list[int]]:
    """An entry's payload: zigzag LEB128 ints, then length-prefixed byte fields. Returns the
    payload and where each byte field starts in it."""
    out = bytearray()
    _leb(len(ints), out)
    for v in ints:
        _leb((v << 1) ^ (v >> 63) if v < 0 else v << 1, out)
    _leb(len(blobs), out)
    starts = []
    for b in blobs:
        _leb(len(b), out)
        starts.append(len(out))
        out += b
    return bytes(out), starts


def unpack(payload: bytes) -> tuple[list[int], list[bytes], list[int]]:
    """(ints, byte fields, where each byte field starts in the payload)."""
    n, pos = _read_leb(payload, 0)
    ints = []
    for _ in range(n):
        v, pos = _read_leb(payload, pos)
        ints.append((v >> 1) ^ -(v & 1))
    n, pos = _read_leb(payload, pos)
    blobs, starts = [], []
    for _ in range(n):
        size, pos = _read_leb(payload, pos)
        if pos + size > len(payload):
            raise ValueError("truncated field")
        starts.append(pos)
        blobs.append(payload[pos : pos + size])
        pos += size
    return ints, blobs, starts


@dataclass
class Entry:
    offset: int  # of its header in the journal
    kind: int
    seq: int
    ints: list[int]
    blobs: list[bytes]
    end: int  # offset just past it
    starts: list[int] = field(default_factory=list)  # file offset of each byte field


@dataclass
class Scan:
    """What a scan of the journal found: valid entries, then (if any) the first bad one."""

    entries: list[Entry]
    end: int  # offset past the last valid entry
    size: int  # the file's size
    damage: str = ""  # why the entry at `end` is not valid ("" if the file ends there)

    @property
    def dropped_bytes(self) -> int:
        return self.size - self.end


class Journal:
    """One journal file (segment id `seg_id`), opened for appending by the writer."""

    def __init__(self, directory: Path, seg_id: int):
        self.directory = directory
        self.seg_id = seg_id
        self.path = segment_path(directory, seg_id)
        directory.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if new:
            fsync_dir(directory)
        self.size = os.fstat(self._fd).st_size
        self.unsynced = 0  # entries written since the last sync

    def append(self, kind: int, seq: int, ints: tuple[int, ...],
               blobs: tuple[bytes, ...]) -> Entry:  # fmt: skip
        """Write one entry at the end (not yet durable: `sync`)."""
        payload, starts = pack(ints, blobs)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"journal entry of {len(payload):,} bytes is too large")
        head = _HEAD.pack(MAGIC, kind, len(payload), seq, 0)
        crc = crc32c(head[4:20] + payload)
        data = head[:20] + struct.pack("<I", crc) + payload
        offset = self.size
        written = os.pwrite(self._fd, data, offset)
        if written != len(data):
            raise OSError(f"short write to the journal {self.path} ({written} of {len(data)})")
        self.size += len(data)
        self.unsynced += 1
        base = offset + HEAD
        return Entry(offset, kind, seq, list(ints), list(blobs), self.size,
                     [base + s for s in starts])  # fmt: skip

    def sync(self) -> None:
        if self.unsynced:
            os.fdatasync(self._fd)
            self.unsynced = 0

    def sync_started(self):
        """Start `sync` on a thread of the native module's own (no GIL needed, so Python
        work overlaps it); returns the function that waits for it and raises its error."""
        if not self.unsynced:
            return lambda: None
        from .. import _native

        job = _native.fdatasync_start(self._fd)

        def wait() -> None:
            _native.fdatasync_wait(job)
            self.unsynced = 0

        return wait

    def truncate(self, size: int) -> None:
        """Cut the journal back to `size` bytes (a failed or torn tail), durably."""
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self.size = size

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self.sync()
            os.close(self._fd)
            self._fd = -1


def scan(path: Path, start: int = 0) -> Scan:
    """Read the entries from `start` on, stopping at the first that is torn or damaged."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Scan([], start, start)
    entries = []
    pos = start
    damage = ""
    while pos < len(data):
        if len(data) - pos < HEAD:
            damage = f"torn header ({len(data) - pos} bytes)"
            break
        magic, kind, length, seq, crc = _HEAD.unpack_from(data, pos)
        if magic != MAGIC or kind not in KINDS:
            damage = "bad entry header"
            break
        end = pos + HEAD + length
        if length > MAX_PAYLOAD or end > len(data):
            damage = f"torn entry ({len(data) - pos} of {HEAD + length} bytes)"
            break
        payload = data[pos + HEAD : end]
        if crc32c(data[pos + 4 : pos + 20] + payload) != crc:
            damage = "CRC32C mismatch"
            break
        try:
            ints, blobs, starts = unpack(payload)
        except ValueError as exc:
            damage = f"malformed entry: {exc}"
            break
        base = pos + HEAD
        entries.append(Entry(pos, kind, seq, ints, blobs, end, [base + k for k in starts]))
        pos = end
    return Scan(entries, pos, len(data), damage)


def count_entries_after(path: Path, offset: int) -> int:
    """Entry headers (magic and kind) found past a damaged point: how much a damaged entry in
    the middle cost, for the report (a guess from magic bytes; nothing past it is applied)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset + 1)
            data = f.read()
    except OSError:
        return 0
    n = pos = 0
    while (pos := data.find(MAGIC, pos)) >= 0:
        if pos + 5 <= len(data) and data[pos + 4] in KINDS:
            n += 1
        pos += 1
    return n


def set_aside(path: Path, offset: int) -> Path | None:
    """Copy the journal's bytes from `offset` on to `<journal>.rejected-<time>` (kept for
    inspection), before the journal is cut back there."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return None
    if not data:
        return None
    out = path.with_name(f"{path.name}.rejected-{int(time.time())}")
    with open(out, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    return out


def journal_position(meta: dict[str, str]) -> tuple[int, int, int]:
    """(journal segment id, applied offset, last applied sequence number) from the meta row."""
    value = meta.get("journal")
    if not value:
        return JOURNAL_BASE, 0, 0
    seg, offset, seq = (int(x) for x in value.split())
    return seg, offset, seq


def needs_replay(directory, meta: dict[str, str]) -> bool:
    """Does the journal hold bytes past its applied point (an unapplied entry or a torn tail)?"""
    seg, offset, _ = journal_position(meta)
    try:
        return os.stat(segment_path(Path(directory) / "segments", seg)).st_size > offset
    except OSError:
        return False

