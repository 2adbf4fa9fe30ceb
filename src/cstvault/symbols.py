"""Identifier-like tokens of a tree, for the store's global symbol table."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

from . import _native, languages
from .columns import HAS_CHILDREN, Columns

MAX_SYMBOL_BYTES = 256


def symbol_texts(cols: Columns, source: bytes) -> set[bytes]:
    """The distinct texts of the identifier leaves of a tree."""
    table = languages.tables(cols.language).identifier
    leaf = (cols.flags & HAS_CHILDREN) == 0
    at = np.flatnonzero(leaf & table[cols.kind])
    if at.size == 0:
        return set()
    starts = np.ascontiguousarray(cols.start[at], dtype=np.int64)
    ends = np.ascontiguousarray(cols.end[at], dtype=np.int64)
    return _native.distinct_slices(source, starts, ends, MAX_SYMBOL_BYTES)


def pack_ids(ids: np.ndarray) -> bytes:
    """Sorted ids as LEB128 deltas."""
    from .codec import varint

    ids = np.sort(np.asarray(ids, dtype=np.int64))
    deltas = np.diff(ids, prepend=0)
    return varint.encode(deltas)


def pack_many(sorted_sets: list[np.ndarray]) -> list[bytes]:
    """`pack_ids` of many sorted id arrays with one vectorised encode."""
    from .codec import varint

    if not sorted_sets:
        return []
    flat = np.concatenate(sorted_sets)
    lengths = np.array([a.size for a in sorted_sets], dtype=np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    deltas = np.diff(flat, prepend=0)
    nonempty = lengths > 0
    deltas[starts[nonempty]] = flat[starts[nonempty]]  # each set restarts from 0
    return varint.encode_groups(deltas, lengths)


def unpack_ids(data: bytes, count: int) -> np.ndarray:
    from .codec import varint

    return np.cumsum(varint.decode(data, count))
