"""Reference encoder in numpy: the record format written out array by array.

Production encoding is `cstvault._native.encode_body` (one C pass); the tests hold it to this
readable implementation: both must decode to the same columns.
"""

from __future__ import annotations

import json
import struct

import crc32c
import numpy as np

from .. import _native, languages
from ..columns import EXPLICIT, HAS_CHILDREN, HAS_FIELD, Columns
from . import varint
from .bytecode import _HEAD, _STATUS, _WIDE_KIND, FORMAT_VERSION, MAGIC
from .errors import EncodeError

_MAX_U32 = 0xFFFFFFFF


def encode(cols: Columns, source: bytes) -> bytes:
    """Encode one tree's columns (and the identity of its grammar) as a record."""
    n = len(cols)
    if n == 0 or n > _MAX_U32 or len(source) > _MAX_U32:
        raise EncodeError(f"cannot encode a tree of {n} nodes over {len(source)} bytes")
    size = cols.size
    leaf = size == 1
    inner = ~leaf

    # leaves: gap from the previous leaf's end, length unless the kind predicts it
    lstart = cols.start[leaf]
    lend = cols.end[leaf]
    lens = lend - lstart
    prev_end = np.empty_like(lend)
    prev_end[0] = 0
    prev_end[1:] = lend[:-1]
    gaps = lstart - prev_end
    if (gaps < 0).any() or (lens < 0).any():
        raise EncodeError("leaves overlap or run backwards")
    fixed = languages.tables(cols.language).token_len[cols.kind[leaf].astype(np.int64)]
    explicit_leaf = lens != fixed

    # internal nodes: span derived from first/last leaf; store exceptions only
    rank = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(leaf, out=rank[1:])
    inner_at = np.flatnonzero(inner)
    first = rank[inner_at]
    last = rank[inner_at + size[inner_at]] - 1
    lead = lstart[first] - cols.start[inner_at]
    tail = cols.end[inner_at] - lend[last]
    exc = (lead != 0) | (tail != 0)

    op = cols.flags & np.uint8(~(EXPLICIT | HAS_CHILDREN) & 0xFF)
    op[inner] |= HAS_CHILDREN
    explicit = np.zeros(n, dtype=bool)
    explicit[leaf] = explicit_leaf
    explicit[inner_at[exc]] = True
    op = op | np.where(explicit, EXPLICIT, 0).astype(np.uint8)

    # the node table: one entry per distinct (kind, grammar, flags, field), ascending
    field = np.where((op & HAS_FIELD) != 0, cols.field, 0).astype(np.uint64)
    key = (cols.kind.astype(np.uint64) << np.uint64(48)) | (
        cols.grammar.astype(np.uint64) << np.uint64(32)) | (
        op.astype(np.uint64) << np.uint64(16)) | field  # fmt: skip
    table, kidx = np.unique(key, return_inverse=True)
    if table.size > 0xFFFF:
        raise EncodeError("too many distinct node kinds")
    entries = np.column_stack([table >> np.uint64(48), (table >> np.uint64(32)) & np.uint64(0xFFFF),
                               (table >> np.uint64(16)) & np.uint64(0xFF),
                               table & np.uint64(0xFFFF)])  # fmt: skip

    # child counts of internal nodes: a node's parent is the nearest open subtree
    parents = np.frombuffer(_native.structure(np.ascontiguousarray(size, dtype=np.int64))[0],
                            dtype=np.int32)  # fmt: skip
    counts = np.bincount(parents[1:], minlength=n)[inner_at]

    wide_kind = table.size > 256
    ident = languages.identity(cols.language).encode("ascii")
    phantoms = json.dumps(cols.phantoms).encode() if cols.phantoms else b""

    exc_vals = np.empty(2 * int(exc.sum()), dtype=np.int64)
    exc_vals[0::2] = lead[exc]
    exc_vals[1::2] = tail[exc]
    block = np.concatenate(
        [
            entries.ravel().astype(np.uint64),
            (counts - 1).astype(np.uint64),
            gaps.astype(np.uint64),
            lens[explicit_leaf].astype(np.uint64),
            varint.zigzag(exc_vals),
            varint.zigzag(cols.unexpected),
        ]
        + _status_stream(cols.status)
        + _tail_stream(cols)
    )
    head = _HEAD.pack(
        MAGIC,
        FORMAT_VERSION,
        (_WIDE_KIND if wide_kind else 0) | (0 if cols.status is None else _STATUS),
        n,
        len(source),
        crc32c.crc32c(source),
        table.size,
        len(ident),
        len(phantoms),
    )
    body = b"".join(
        [
            head,
            ident,
            kidx.astype(np.uint16 if wide_kind else np.uint8).tobytes(),
            phantoms,
            varint.encode(block),
        ]
    )
    return body + struct.pack("<I", crc32c.crc32c(body))


def _status_stream(status: np.ndarray | None) -> list[np.ndarray]:
    """Format 2's last stream: the pair count, then (node gap, value) per pair."""
    if status is None:
        return []
    pairs = np.asarray(status, dtype=np.uint64).reshape(-1, 2).copy()
    pairs[1:, 0] -= pairs[:-1, 0].copy()
    return [np.array([len(pairs)], dtype=np.uint64), pairs.ravel()]


def _tail_stream(cols: Columns) -> list[np.ndarray]:
    """Format 2's tails: the pair count, then (node gap, end - the node's end) per pair."""
    if cols.status is None:
        return []
    pairs = np.asarray(cols.tails if cols.tails is not None else [], dtype=np.int64).reshape(-1, 2)
    out = pairs.copy()
    out[1:, 0] -= pairs[:-1, 0]
    out[:, 1] = pairs[:, 1] - cols.end[pairs[:, 0]]
    return [np.array([len(pairs)], dtype=np.uint64), out.astype(np.uint64).ravel()]
