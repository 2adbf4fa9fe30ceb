"""Source packs: the sources of many small frozen blobs in one zstd frame.

Per-file frames compress small sources worst: zstd's matches cannot reach across files. A
frozen store therefore keeps the sources of one language's blobs, a batch at a time, in
packs of about PACK_BYTES (1 MiB: 4.86 B/line on the bench corpus where per-file frames with
trained dictionaries take 6.09; `cstvault bench disk`). Tree records stay one frame per blob,
so a cold open still reads only its own tree frame; a source is read from its pack only when
the working file no longer holds it (or by `Store.source`), at the price of decompressing the
pack, kept in a small LRU for sequential readers.

A pack, as stored (one catalog frame; every member's blob row names the whole of it, so the
frame CRC32C covers the table too): a zstd skippable frame (magic MAGIC, u32 length) holding
the member table -- u32 count, count u64 blob ids ascending, count + 1 u32 offsets into the
decompressed text (the last is its length) -- then the zstd frame of the members' sources,
concatenated in table order.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections import OrderedDict
from collections.abc import Callable

from ..codec import CorruptRecord

PACK_BYTES = 1 << 20  # sources packed until a pack holds this many bytes
ALONE_BYTES = 256 * 1024  # a source this large keeps a frame of its own
MAGIC = 0x184D2A5C  # a zstd skippable frame (0x184D2A50-5F): zstd itself skips it
_SKIP = struct.Struct("<II")
CACHED = 2  # decompressed packs a store keeps (sequential readers alternate languages)


def is_pack(frame: bytes) -> bool:
    return len(frame) >= 8 and _SKIP.unpack_from(frame)[0] == MAGIC


def table(ids: list[int], sizes: list[int]) -> bytes:
    """The skippable frame of a pack of blobs `ids` (ascending) with sources of `sizes`."""
    offsets = array("I", [0])
    for n in sizes:
        offsets.append(offsets[-1] + n)
    body = struct.pack("<I", len(ids)) + array("Q", ids).tobytes() + offsets.tobytes()
    return _SKIP.pack(MAGIC, len(body)) + body


def build(members: list[tuple[int, bytes]], compress: Callable[[bytes], bytes]) -> bytes:
    """A pack of (blob id, source) members, sorted by id; `compress` makes the zstd frame."""
    members = sorted(members)
    return (table([b for b, _ in members], [len(s) for _, s in members])
            + compress(b"".join(s for _, s in members)))  # fmt: skip


def parse(frame: bytes) -> tuple[array, array, int]:
    """(blob ids, offsets, where the zstd frame starts) of a pack; CorruptRecord if damaged."""
    try:
        _, length = _SKIP.unpack_from(frame)
        (count,) = struct.unpack_from("<I", frame, 8)
        if length != 4 + 12 * count + 4 or 8 + length > len(frame):
            raise CorruptRecord("source pack: table length does not match its count")
        ids, offsets = array("Q"), array("I")
        ids.frombytes(frame[12 : 12 + 8 * count])
        offsets.frombytes(frame[12 + 8 * count : 8 + length])
    except struct.error as exc:
        raise CorruptRecord(f"source pack: truncated table ({exc})") from exc
    return ids, offsets, 8 + length


def total_bytes(frame_head: bytes) -> int | None:
    """A pack's decompressed length from the start of its frame (None: not a pack)."""
    if not is_pack(frame_head):
        return None
    _, length = _SKIP.unpack_from(frame_head)
    (count,) = struct.unpack_from("<I", frame_head, 8)
    return struct.unpack_from("<I", frame_head, 8 + length - 4)[0] if count else 0


class PackCache:
    """Decompressed packs by frame location, least recently used first out."""

    def __init__(self, keep: int = CACHED):
        self.keep = keep
        self._packs: OrderedDict[tuple, tuple[array, array, bytes]] = OrderedDict()

    def __contains__(self, loc: tuple) -> bool:
        return loc in self._packs

    def member(self, loc: tuple, frame: bytes, blob: int,
               decompress: Callable[[bytes], bytes]) -> bytes:  # fmt: skip
        """Blob `blob`'s source from the pack at `loc` (segment, offset, length, CRC32C),
        whose CRC-checked `frame` is needed only when the pack is not cached."""
        got = self._packs.get(loc)
        if got is None:
            ids, offsets, start = parse(frame)
            text = decompress(frame[start:])
            if len(text) != offsets[-1]:
                raise CorruptRecord("source pack: text length does not match its table")
            got = self._packs[loc] = (ids, offsets, text)
            if len(self._packs) > self.keep:
                self._packs.popitem(last=False)
        else:
            self._packs.move_to_end(loc)
        ids, offsets, text = got
        k = bisect.bisect_left(ids, blob)
        if k == len(ids) or ids[k] != blob:
            raise CorruptRecord(f"source pack holds no blob {blob}")
        return text[offsets[k] : offsets[k + 1]]

    def clear(self) -> None:
        self._packs.clear()

    def nbytes(self) -> int:
        return sum(len(t) for _, _, t in self._packs.values())


__all__ = ["ALONE_BYTES", "PACK_BYTES", "PackCache", "build", "is_pack", "parse",
           "total_bytes"]  # fmt: skip
