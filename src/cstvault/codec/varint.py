"""Vectorised LEB128 (unsigned varint) and zigzag coding with numpy; no per-value Python loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from .._numpy import np

from .errors import CorruptRecord

_MAX_BYTES = 10  # a uint64 needs at most 10 LEB128 bytes


def zigzag(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.int64)
    return ((v << 1) ^ (v >> 63)).astype(np.uint64)


def unzigzag(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.uint64)
    return ((v >> np.uint64(1)).astype(np.int64)) ^ -((v & np.uint64(1)).astype(np.int64))


def sizes(values: np.ndarray) -> np.ndarray:
    """LEB128 bytes of each non-negative value."""
    v = np.asarray(values)
    n = np.ones(v.shape, dtype=np.int64)
    for k in range(1, _MAX_BYTES):
        n += v >= (1 << (7 * k))
    return n


def encode(values: np.ndarray) -> bytes:
    """LEB128-encode non-negative integers (any integer dtype) into one byte string."""
    v = np.asarray(values)
    if v.size == 0:
        return b""
    if v.dtype.kind == "i" and int(v.min()) < 0:
        raise ValueError("varint.encode takes non-negative values; zigzag them first")
    v = v.astype(np.uint64)
    if int(v.max()) < 0x80:
        return v.astype(np.uint8).tobytes()
    # number of 7-bit groups per value
    nbytes = sizes(v)
    total = int(nbytes.sum())
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    # byte j of value i sits at starts[i] + j; shift = 7*j
    owner = np.repeat(np.arange(v.size), nbytes)
    pos = np.arange(total) - starts[owner]
    out = ((v[owner] >> (pos * 7).astype(np.uint64)) & np.uint64(0x7F)).astype(np.uint8)
    cont = np.ones(total, dtype=bool)
    cont[ends - 1] = False
    out[cont] |= 0x80
    return out.tobytes()


def encode_fast(values: np.ndarray) -> bytes:
    """`encode` in one C pass (the catalog's small id lists: numpy's per-call cost is most
    of the time there); `encode` stays the numpy reference the tests hold it to."""
    from .. import _native

    v = np.asarray(values)
    if v.size == 0:
        return b""
    if v.dtype.kind == "i" and int(v.min()) < 0:
        raise ValueError("varint.encode takes non-negative values; zigzag them first")
    return _native.leb128(np.ascontiguousarray(v, dtype=np.uint64))


def pieces(data: bytes, lengths: np.ndarray) -> list[bytes]:
    """`data` cut into consecutive pieces of the given byte lengths."""
    ends = np.cumsum(lengths).tolist()
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def encode_groups(values: np.ndarray, counts: np.ndarray) -> list[bytes]:
    """`encode` of each run of `counts[k]` consecutive values (empty runs allowed), with one
    encode for all of them."""
    bounds = np.r_[0, np.cumsum(counts)]
    offsets = np.r_[0, np.cumsum(sizes(values))][bounds]
    return pieces(encode_fast(values), np.diff(offsets))


def decode(buf: bytes | memoryview | np.ndarray, count: int) -> np.ndarray:
    """Decode exactly `count` varints filling all of `buf`; CorruptRecord otherwise."""
    b = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf
    if count == 0:
        if b.size:
            raise CorruptRecord("trailing bytes after the last varint")
        return np.zeros(0, dtype=np.int64)
    if b.size == count:  # all single-byte values
        if int(b.max()) >= 0x80:
            raise CorruptRecord("varint stream length mismatch")
        return b.astype(np.int64)
    last = b < 0x80
    ends = np.flatnonzero(last)
    if ends.size != count or ends[-1] != b.size - 1:
        raise CorruptRecord(f"varint stream holds {ends.size} values, expected {count}")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if int((ends - starts).max()) >= _MAX_BYTES:
        raise CorruptRecord("varint longer than 10 bytes")
    pos = np.arange(b.size, dtype=np.int64) - np.repeat(starts, ends - starts + 1)
    parts = (b & 0x7F).astype(np.uint64) << (pos * 7).astype(np.uint64)
    values = np.add.reduceat(parts, starts)
    if int(values.max()) > np.iinfo(np.int64).max:
        raise CorruptRecord("varint value out of range")
    return values.astype(np.int64)
