"""Packs: the texts of many small frozen blobs in one zstd frame.

Per-file frames compress small texts worst: zstd's matches cannot reach across files. So
`freeze` packs, per language and batch, sources under 256 KiB into packs of about 1 MiB
(without a dictionary: 4.86 B/line on the bench corpus where per-file frames with trained
dictionaries take 6.09) and tree records under 4 KiB into packs of about 16 KiB (with the
language's dictionary: 0.25 B/line less; a cold open of such a file then decompresses ~20 us
more). The catalog's definition groups use the same layout. `cstvault bench disk` measures
the choices. A member is read by decompressing the pack only up to the end of the member;
what was decompressed is kept in a small LRU for the next member.

A pack, as stored (one frame; every member's blob row names the whole of it, so the frame
CRC32C covers the member table too): a zstd skippable frame (magic MAGIC, u32 length)
holding the member table -- u32 count, count u64 blob ids ascending, count + 1 u32 offsets
into the decompressed text (the last is its length) -- then the zstd frame of the members'
texts, concatenated in table order.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections import OrderedDict
from collections.abc import Callable

import zstandard

from ..codec import CorruptRecord

# texts packed until a pack holds this many bytes, by kind; a text of ALONE_BYTES or more
# keeps a frame of its own (`cstvault bench disk` measures the choices)
PACK_BYTES = {"tree": 16 * 1024, "source": 1 << 20}
ALONE_BYTES = {"tree": 4 * 1024, "source": 256 * 1024}
MAGIC = 0x184D2A5C  # a zstd skippable frame (0x184D2A50-5F): zstd itself skips it
_SKIP = struct.Struct("<II")
WHOLE_BYTES = 128 * 1024  # a pack this small is decompressed whole (zstd's block size)
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


def member_count(frame_head: bytes) -> int | None:
    """A pack's member count from the first 12 bytes of its frame (None: not a pack)."""
    if len(frame_head) < 12 or not is_pack(frame_head):
        return None
    return struct.unpack_from("<I", frame_head, 8)[0]


def total_bytes(frame_head: bytes) -> int | None:
    """A pack's decompressed length from the start of its frame (None: not a pack)."""
    if not is_pack(frame_head):
        return None
    _, length = _SKIP.unpack_from(frame_head)
    (count,) = struct.unpack_from("<I", frame_head, 8)
    return struct.unpack_from("<I", frame_head, 8 + length - 4)[0] if count else 0


class PackCache:
    """Decompressed packs (or the part of each decompressed so far: a member is read by
    decompressing only up to its end) by frame location, least recently used first out."""

    def __init__(self, keep: int = CACHED):
        self.keep = keep
        self._packs: OrderedDict[tuple, tuple[array, array, bytes]] = OrderedDict()

    def __contains__(self, loc: tuple) -> bool:
        return loc in self._packs

    def member(self, loc: tuple, frame: bytes | Callable[[], bytes], blob: int,
               dctx: zstandard.ZstdDecompressor) -> bytes:  # fmt: skip
        """Blob `blob`'s text from the pack at `loc` (segment, offset, length, CRC32C);
        `frame`: its CRC-checked bytes, or how to read them (only read when the pack's
        text so far does not reach the member)."""
        got = self._packs.get(loc)
        if got is not None:
            self._packs.move_to_end(loc)
            ids, offsets, text = got
        else:
            data = frame() if callable(frame) else frame
            ids, offsets, _ = parse(data)
            text = b""
        k = bisect.bisect_left(ids, blob)
        if k == len(ids) or ids[k] != blob:
            raise CorruptRecord(f"pack holds no blob {blob}")
        end = offsets[k + 1]
        if got is None or len(text) < end:
            data = data if got is None else (frame() if callable(frame) else frame)
            start = 8 + _SKIP.unpack_from(data)[1]
            if offsets[-1] <= WHOLE_BYTES:  # one call beats a stream reader's overhead
                text = dctx.decompress(data[start:])
                if len(text) != offsets[-1]:
                    raise CorruptRecord("pack: text length does not match its table")
            else:
                with dctx.stream_reader(memoryview(data)[start:]) as r:
                    text = r.read(end) if end else b""  # up to the block holding its end
                if len(text) != end:
                    raise CorruptRecord("pack: text shorter than its table")
            self._packs[loc] = (ids, offsets, text)
            if len(self._packs) > self.keep:
                self._packs.popitem(last=False)
        return text[offsets[k] : end]

    def clear(self) -> None:
        self._packs.clear()

    def nbytes(self) -> int:
        return sum(len(t) for _, _, t in self._packs.values())


__all__ = ["ALONE_BYTES", "PACK_BYTES", "PackCache", "build", "is_pack", "member_count", "parse",
           "total_bytes"]  # fmt: skip
