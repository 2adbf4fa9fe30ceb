"""Identifier-like tokens of a tree, for the store's global symbol table."""

from __future__ import annotations

import numpy as np

from . import languages
from .columns import HAS_CHILDREN, Columns

MAX_SYMBOL_BYTES = 256


def symbol_texts(cols: Columns, source: bytes) -> set[bytes]:
    """The distinct texts of the identifier leaves of a tree."""
    table = languages.tables(cols.language).identifier
    leaf = (cols.flags & HAS_CHILDREN) == 0
    at = np.flatnonzero(leaf & table[cols.kind])
    if at.size == 0:
        return set()
    starts, ends = cols.start[at], cols.end[at]
    keep = (ends > starts) & (ends - starts <= MAX_SYMBOL_BYTES)
    return {source[s:e] for s, e in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)}


def pack_ids(ids: np.ndarray) -> bytes:
    """Sorted ids as LEB128 deltas."""
    from .codec import varint

    ids = np.sort(np.asarray(ids, dtype=np.int64))
    deltas = np.diff(ids, prepend=0)
    return varint.encode(deltas)


def unpack_ids(data: bytes, count: int) -> np.ndarray:
    from .codec import varint

    return np.cumsum(varint.decode(data, count))
