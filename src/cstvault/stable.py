"""Stable node ids across versions: structural subtree hashes and top-down matching.

A file's first version numbers its nodes in preorder (id = index). A later version's node
keeps the id of the old node it is matched to; unmatched nodes get fresh ids, above every id
used so far. Matching, in the manner of GumTree: (1) top-down, the largest subtrees whose
structural hash (kinds, shapes and leaf texts, not positions) occurs in the old tree are
matched, whole, to an unused occurrence (the one nearest its expected place: moves are found);
(2) bottom-up, children before parents, an unmatched node whose matched children mostly came
from one old parent of its kind is matched to that parent. Hashing and both passes are C
over the columns (`binding/stable.c`): no Python object per node.

Ids are stored per version as runs (`pack_runs`): a one-line edit keeps a handful.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

from .columns import Columns


def subtree_hashes(cols: Columns, source: bytes) -> np.ndarray:
    """Per node, a 64-bit hash of its subtree: kinds, fields, shape and leaf texts in preorder
    (equal subtrees hash equal wherever they are); one C pass."""
    from . import _native

    c = np.ascontiguousarray
    out = _native.subtree_hashes(
        c(cols.kind, np.uint16), c(cols.field, np.uint16), c(cols.flags, np.uint8),
        c(cols.size, np.int64), c(cols.start, np.uint32), c(cols.end, np.uint32), source)
    return np.frombuffer(out, dtype=np.uint64)


def _parents(size: np.ndarray) -> np.ndarray:
    """Each node's parent index (-1 for the root), from the subtree sizes."""
    from . import _native

    parent = _native.structure(np.ascontiguousarray(size, dtype=np.int64))[0]
    return np.frombuffer(parent, dtype=np.int32).astype(np.int64)


class Side:
    """What matching needs of one version: subtree hashes, sizes, parents and kinds."""

    __slots__ = ("hashes", "size", "parent", "kind")

    def __init__(self, cols: Columns, source: bytes):
        self.hashes = subtree_hashes(cols, source)
        self.size = np.ascontiguousarray(cols.size, dtype=np.int64)
        self.parent = _parents(self.size) if len(cols) else np.zeros(0, dtype=np.int64)
        self.kind = np.asarray(cols.kind)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.hashes, self.size, self.parent, self.kind))


def match(old: Columns | Side, old_src: bytes | None, new: Columns | Side,
          new_src: bytes | None) -> np.ndarray:  # fmt: skip
    """For each node of `new`, the index of its matched node in `old`, or -1 (columns and
    their texts, or `Side`s made from them)."""
    from . import _native

    a = old if isinstance(old, Side) else Side(old, old_src)
    b = new if isinstance(new, Side) else Side(new, new_src)
    n, m = len(b.size), len(a.size)
    if not n or not m:
        return np.full(n, -1, dtype=np.int64)
    ho, hn, so, sn, po, pn = a.hashes, b.hashes, a.size, b.size, a.parent, b.parent
    # top-down (C): largest identical subtrees first, each to the nearest unused occurrence
    out = np.frombuffer(_native.match_top(hn, sn, pn, ho, so), dtype=np.int64).copy()
    used = np.zeros(m, dtype=bool)
    used[out[out >= 0]] = True  # a bool array: its bytes are the C side's u8 flags
    if out[0] < 0 and not used[0]:  # the roots correspond
        out[0] = 0
        used[0] = True
    # bottom-up (C), children before parents: an unmatched node takes the old parent most
    # of its matched children's partners have, if unused and of its kind
    used8 = used.view(np.uint8)
    _native.match_up(out, sn, po, np.ascontiguousarray(b.kind, dtype=np.uint16),
                     np.ascontiguousarray(a.kind, dtype=np.uint16), used8)  # fmt: skip
    return out


def assign(old_ids: np.ndarray, matched: np.ndarray, next_id: int) -> tuple[np.ndarray, int]:
    """New ids: the old id of a matched node, else fresh ones from `next_id` in preorder."""
    ids = np.where(matched >= 0, old_ids[np.maximum(matched, 0)], -1).astype(np.int64)
    fresh = ids < 0
    count = int(fresh.sum())
    ids[fresh] = np.arange(next_id, next_id + count)
    return ids, next_id + count


def pack_runs(ids: np.ndarray) -> bytes:
    """Ids as runs of consecutive values: LEB128 (count, then per run: length, zigzag
    start delta from the previous run's end)."""
    from .codec import varint

    if len(ids) == 0:
        return b""
    ids = ids.astype(np.int64)
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [len(ids)])))
    first = ids[starts]
    prev_end = np.concatenate(([0], first[:-1] + lengths[:-1]))
    body = np.stack([lengths, varint.zigzag(first - prev_end).astype(np.int64)], axis=1).ravel()
    return varint.encode_fast(np.concatenate(([len(starts)], body)).astype(np.uint64))


def unpack_runs(data: bytes) -> np.ndarray:
    from .codec import varint

    if not data:
        return np.zeros(0, dtype=np.int64)
    from .store.journal import _read_leb

    count, pos = _read_leb(data, 0)
    vals = varint.decode(data[pos:], 2 * count).astype(np.int64)
    lengths = vals[0::2]
    deltas = varint.unzigzag(vals[1::2].astype(np.uint64))
    ends = np.cumsum(lengths)
    # firsts[k] = prev_end + delta, prev_end = firsts[k-1] + lengths[k-1]: a prefix sum
    firsts = np.cumsum(deltas + np.concatenate(([0], lengths[:-1])))
    offsets = np.arange(int(ends[-1])) - np.repeat(ends - lengths, lengths)
    return np.repeat(firsts, lengths) + offsets
