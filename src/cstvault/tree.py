"""Read-only `Tree`, `Node` and `TreeCursor` over decoded columns, named as in py-tree-sitter.

Nodes are flyweights (tree, preorder index) whose hot attributes are C getters
(cstvault._native.NodeBase): first child = i + 1, next sibling = i + size[i], parent and
previous sibling from the structure index, all O(1). Rarer queries are Python here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np
import tree_sitter as ts
from tree_sitter import Point, Range

from . import _native, languages, sexp
from .codec.bytecode import _grammar_args, columns_of, decode_raw, read_header
from .codec.errors import CorruptRecord
from .columns import (
    HAS_CHILDREN,
    NAMED,
    Columns,
)
from .sources import DeferredSource

__all__ = ["Node", "Point", "Range", "Tree", "TreeCursor"]



def _structure_of(size: np.ndarray) -> tuple[bytes, ...]:
    """(parent, prev, child_count, depth) int32 buffers: one C pass over the sizes."""
    try:
        return _native.structure(np.ascontiguousarray(size, dtype=np.int64))
    except _native.CorruptRecord as exc:
        raise CorruptRecord(str(exc)) from None


class Structure:
    """Derived per-tree index: parent, previous sibling, child count (int32 arrays); depth
    is derived from the sizes when first asked for (nothing on the read path needs it)."""

    __slots__ = ("parent", "prev", "child_count", "_size", "_depth")

    def __init__(self, parent: np.ndarray, prev: np.ndarray, child_count: np.ndarray,
                 size: np.ndarray):  # fmt: skip
        self.parent, self.prev, self.child_count = parent, prev, child_count
        self._size = size
        self._depth: np.ndarray | None = None

    @property
    def depth(self) -> np.ndarray:
        if self._depth is None:
            self._depth = np.frombuffer(_structure_of(self._size)[3], dtype=np.int32)
        return self._depth


def build_structure(cols: Columns) -> Structure:
    """Parent / previous-sibling / child-count arrays: the decoder's, else one C pass."""
    raw = cols.structure if cols.structure is not None else _structure_of(cols.size)[:3]
    parent, prev, child_count = (np.frombuffer(b, dtype=np.int32) for b in raw)
    return Structure(parent, prev, child_count, cols.size)


def _view(k: int) -> property:
    """Tree._flags / _field / _size / _start / _end: the k-th of `Tree._memoryviews()`."""
    return property(lambda self: (self._views or self._memoryviews())[k])


class Tree(_native.TreeBase):
    """A syntax tree decoded from a record, read-only."""

    # attributes live in the C base (None until set): _colcache, _decoded, _src, _lang_name,
    # _structcache, _views, _lines, _lines_mv
    __slots__ = ()

    def __init__(self, cols: Columns, source: bytes | memoryview | DeferredSource):
        self._colcache = cols
        self._src = source
        self._lang_name = cols.language
        st = self._structcache = build_structure(cols)
        tables = languages.tables(cols.language)
        kind = np.ascontiguousarray(cols.kind, dtype=np.uint16)
        gram = np.ascontiguousarray(cols.grammar, dtype=np.uint16)
        flags = np.ascontiguousarray(cols.flags, dtype=np.uint8)
        field = np.ascontiguousarray(cols.field, dtype=np.uint16)
        size = np.ascontiguousarray(cols.size, dtype=np.int32)
        start = np.ascontiguousarray(cols.start, dtype=np.uint32)
        end = np.ascontiguousarray(cols.end, dtype=np.uint32)
        self._bind(kind, gram, flags, field, size, start, end, st.parent, st.prev,
                   st.child_count, tables.names, tables.fields, Node)  # fmt: skip
        self._views = tuple(memoryview(a) for a in (flags, field, size, start, end))

    @classmethod
    def from_decoded(
        cls, decoded: tuple[str, tuple, tuple], source: bytes | memoryview | DeferredSource
    ) -> Tree:
        """A tree straight over `codec.decode_raw`'s buffers: no numpy object is made until
        something asks for the columns (the cold-open path of the store)."""
        language, out, _ = decoded
        t = cls.__new__(cls)
        tables = languages.tables(language)
        kind, gram, flags, field, size, start, end = out[:7]
        t._bind(kind, gram, flags, field, size, start, end, out[9], out[10], out[11],
                tables.names, tables.fields, Node)  # fmt: skip
        t._decoded = decoded
        t._src = source
        t._lang_name = language
        return t

    def _memoryviews(self) -> tuple[memoryview, ...]:
        """Flags, field, size, start, end as typed memoryviews (made on first use)."""
        views = self._views
        if views is None:
            assert self._decoded is not None
            out = self._decoded[1]
            wide = (memoryview(out[4]).cast("i"), *(memoryview(out[k]).cast("I") for k in (5, 6)))
            views = self._views = (memoryview(out[2]), memoryview(out[3]).cast("H"), *wide)
        return views

    _flags, _field, _size, _start, _end = (_view(k) for k in range(5))

    @property
    def _source(self) -> bytes | memoryview:
        src = self._src
        if isinstance(src, DeferredSource):
            src = self._src = src.resolve()
        return src

    @property
    def _cols(self) -> Columns:
        if self._colcache is None:
            assert self._decoded is not None
            self._colcache = columns_of(*self._decoded)
        return self._colcache

    def _structure(self) -> Structure:
        if self._structcache is None:
            self._structcache = build_structure(self._cols)
        return self._structcache

    def buffer_bytes(self) -> int:
        """Bytes of the buffers this tree holds (columns and structure index)."""
        if self._decoded is not None:
            out = self._decoded[1]
            return sum(len(b) for b in out[:8]) + sum(len(b) for b in out[9:] if b is not None)
        cols, st = self._cols, self._structure()
        arrays = (cols.kind, cols.grammar, cols.flags, cols.field, cols.size, cols.start, cols.end)
        return sum(a.nbytes for a in arrays) + sum(
            a.nbytes for a in (st.parent, st.prev, st.child_count))

    @property
    def _status(self) -> bytes | np.ndarray | None:
        """The query-status pairs (`Columns.status`), None when the record predates them."""
        if self._decoded is not None:
            return self._decoded[1][12]
        return self._cols.status

    @property
    def _tails(self) -> bytes | np.ndarray | None:
        """The group-tail pairs (`Columns.tails`), None when the record predates them."""
        if self._decoded is not None:
            return self._decoded[1][13]
        return self._cols.tails

    def _line_starts(self) -> memoryview:
        """Byte offset of each line's start (int64), made on first use."""
        if self._lines_mv is None:
            self._lines_mv = memoryview(_native.line_starts(self._source)).cast("q")
        return self._lines_mv

    def _point(self, byte: int) -> Point:
        lines = self._line_starts()
        row = bisect_right(lines, byte) - 1
        return Point(row, byte - lines[row])

    def points(self, byte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (row, column) of byte offsets, counting only '\\n' as tree-sitter does."""
        if self._lines is None:
            self._lines = np.frombuffer(self._line_starts(), dtype=np.int64)
        row = np.searchsorted(self._lines, byte, side="right") - 1
        return row, byte - self._lines[row]

    @property
    def text(self) -> bytes:
        return bytes(self._source)

    @property
    def language(self) -> ts.Language:
        return languages.language(self._lang_name)

    @property
    def language_name(self) -> str:
        return self._lang_name

    @property
    def columns(self) -> Columns:
        return self._cols

    def walk(self) -> TreeCursor:
        return TreeCursor(self, 0)

    def copy(self) -> Tree:
        """Another `Tree` over the same (read-only) buffers, as py-tree-sitter's copy."""
        if self._decoded is not None:
            return type(self).from_decoded(self._decoded, self._src)
        return type(self)(self._cols, self._src)

    __copy__ = copy

    def __repr__(self) -> str:
        return f"<cstvault.Tree {self._lang_name} nodes={len(self)}>"


class Node(_native.NodeBase):
    """A flyweight handle on one node of a `Tree` (compares by tree identity and index).

    type, kind_id, flags, byte offsets, children and family are C getters; the rest is here.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return (
            f"<Node type={self.type}, start_point={tuple(self.start_point)}, "
            f"end_point={tuple(self.end_point)}>"
        )

    def __str__(self) -> str:
        return sexp.render(self._t, self._i)

    @property
    def has_changes(self) -> bool:
        return False

    @property
    def stable_id(self) -> int:
        """An id equal across a file's versions for the node matched as the same (its
        subtree unchanged, or its children mostly so; moves included): see
        `cstvault.stable`. A tree made outside a store, or of a file without history, numbers
        its nodes in preorder."""
        t = self._t
        ids = t._ids
        if callable(ids):  # a store's loader, resolved on first use
            ids = t._ids = ids(t)
        return self._i if ids is None else int(ids[self._i])

    @property
    def start_point(self) -> Point:
        return self._shifted(self.start_byte)

    @property
    def end_point(self) -> Point:
        return self._shifted(self.end_byte)

    def _shifted(self, byte: int) -> Point:
        """The point of a byte of this node: the tree's, moved by the node's offset
        (`Tree.root_node_with_offset`) as tree-sitter adds extents."""
        off = self._offset
        if off is None:
            return self._t._point(byte)
        row, column = self._t._point(byte - off[0])
        return Point(row + off[1], column if row else column + off[2])

    @property
    def range(self) -> Range:
        s, e = self.byte_range
        return Range(self.start_point, self.end_point, s, e)


    def _child_indexes(self) -> Iterator[int]:
        t, i = self._t, self._i
        if not t._flags[i] & HAS_CHILDREN:
            return
        size = t._size
        end = i + size[i]
        j = i + 1
        while j < end:
            yield j
            j += size[j]

    def _nth(self, index: int, named: bool) -> int:
        if index < 0:
            raise ValueError("child index must be positive")
        flags = self._t._flags
        k = 0
        for j in self._child_indexes():
            if named and not flags[j] & NAMED:
                continue
            if k == index:
                return j
            k += 1
        raise IndexError("child index out of range")

    def child(self, index: int) -> Node | None:
        return self._at(self._nth(index, False))

    def named_child(self, index: int) -> Node | None:
        return self._at(self._nth(index, True))

    def _field_id(self, name: str) -> int:
        return self._t.language.field_id_for_name(name) or 0

    def child_by_field_id(self, field_id: int) -> Node | None:
        """First child carrying the field (see docs/architecture.md on inherited fields).
        None on an ERROR node, as tree-sitter: it has no field map of its own, so a child's
        field (from a hidden node in between) is not found through it."""
        if self.is_error:
            return None
        fields = self._t._field
        for j in self._child_indexes():
            if fields[j] == field_id:
                return self._at(j)
        return None

    def child_by_field_name(self, name: str) -> Node | None:
        fid = self._field_id(name)
        return self.child_by_field_id(fid) if fid else None

    def children_by_field_id(self, field_id: int) -> list[Node]:
        t = self._t
        return [self._at(j) for j in self._child_indexes() if t._field[j] == field_id]

    def children_by_field_name(self, name: str) -> list[Node]:
        fid = self._field_id(name)
        return self.children_by_field_id(fid) if fid else []

    def field_name_for_child(self, child_index: int) -> str | None:
        t = self._t
        return t._field_names[t._field[self._nth(child_index, False)]]

    def field_name_for_named_child(self, named_child_index: int) -> str | None:
        # tree-sitter bounds-checks against child_count, then answers None past the last
        # named child; mirror it.
        if named_child_index >= 0 and named_child_index >= self.child_count:
            raise IndexError("child index out of range")
        try:
            j = self._nth(named_child_index, True)
        except IndexError:
            return None
        return self._t._field_names[self._t._field[j]]

    # search: descendant_for_byte_range / _point_range and their named twins are C methods
    # (node.c), O(depth) walks over the children as tree-sitter's

    def child_with_descendant(self, descendant: Node) -> Node | None:
        """The child of this node that contains `descendant` (which may be that child
        itself), found by byte range as tree-sitter's `ts_node_child_with_descendant` finds
        it (so a node asked for itself answers its child of the same range, if any)."""
        if descendant._t is not self._t:
            return None
        start, end = descendant.start_byte, descendant.end_byte
        empty = start == end
        for child in self.children:
            if child.start_byte > start:
                return None
            if child.id == descendant.id:
                return child
            if empty and child.end_byte >= end and child.child_count > 0 \
                    and child.child_with_descendant(descendant) is not None:  # fmt: skip
                return child
            if not ((child.end_byte <= end if empty else child.end_byte < end)
                    or child.child_count == 0):  # fmt: skip
                return child
        return None

    def first_child_for_byte(self, byte: int) -> Node | None:
        ends, off = self._t._end, self._offset
        byte -= off[0] if off else 0
        for j in self._child_indexes():
            if ends[j] > byte:
                return self._at(j)
        return None

    def first_named_child_for_byte(self, byte: int) -> Node | None:
        t, off = self._t, self._offset
        byte -= off[0] if off else 0
        for j in self._child_indexes():
            if t._end[j] > byte and t._flags[j] & NAMED:
                return self._at(j)
        return None

    def walk(self) -> TreeCursor:
        off = self._offset
        return TreeCursor(self._t, self._i, off) if off else TreeCursor(self._t, self._i)


TreeCursor = _native.TreeCursor


# what open_tree needs of each grammar identity met so far
_GRAMMARS: dict[bytes, tuple] = {}


def tree_from_record(record: bytes) -> tuple[Tree, int, int, int]:
    """(tree, source length, source CRC32C, bytes of its buffers) of a record, checked like
    `codec.decode_raw`; the caller sets the tree's text (`tree._src`). One C call when the
    record's grammar was met before and it has no phantom section."""
    try:
        got = _native.open_tree(Tree, record, _GRAMMARS)
    except _native.CorruptRecord as exc:
        raise CorruptRecord(str(exc)) from None
    if got is not None:
        return got
    head = read_header(record)
    key = head.identity.encode("ascii")
    if key not in _GRAMMARS:
        name, token_len, kind_limit, field_limit = _grammar_args(head.identity)
        t = languages.tables(name)
        _GRAMMARS[key] = (name, token_len, kind_limit, field_limit, t.names, t.fields, Node)
        if not head.phantom_len:
            return tree_from_record(record)
    tree = Tree.from_decoded(decode_raw(record, head=head), b"")
    return tree, head.source_len, head.source_crc, tree.buffer_bytes()
