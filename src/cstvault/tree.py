"""Read-only `Tree`, `Node` and `TreeCursor` over decoded columns, named as in py-tree-sitter.

Nodes are flyweights (tree, preorder index). Navigation reads column memoryviews:
first child = i + 1, next sibling = i + size[i]; parent and previous sibling come from a
structure index built once per tree with numpy on first use, so both are O(1).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tree_sitter as ts
from tree_sitter import Point, Range

from . import _native, languages, sexp
from .codec.errors import CorruptRecord
from .columns import (
    ERROR_KIND,
    EXTRA,
    HAS_CHILDREN,
    HAS_ERROR,
    MISSING,
    NAMED,
    Columns,
)

__all__ = ["Node", "Point", "Range", "Tree", "TreeCursor"]


@dataclass(frozen=True)
class Structure:
    """Derived per-tree index: parent, previous sibling, child count, depth."""

    parent: np.ndarray
    prev: np.ndarray
    child_count: np.ndarray
    depth: np.ndarray


def build_structure(cols: Columns) -> Structure:
    """Parent / previous-sibling / child-count / depth arrays (one C pass over the sizes)."""
    raw = cols.structure
    if raw is None:
        try:
            raw = _native.structure(np.ascontiguousarray(cols.size, dtype=np.int64))
        except _native.CorruptRecord as exc:
            raise CorruptRecord(str(exc)) from None
    parent, prev, child_count, depth = (np.frombuffer(b, dtype=np.int32) for b in raw)
    return Structure(parent, prev, child_count, depth)


class Tree:
    """A syntax tree decoded from a record, read-only."""

    __slots__ = (
        "_cols", "_source", "_names", "_field_names", "_named_tab", "_lang_name",
        "_kind", "_gram", "_flags", "_size", "_start", "_end", "_field", "_n",
        "_struct", "_parent", "_prev", "_lines", "_lines_mv",
    )  # fmt: skip

    def __init__(self, cols: Columns, source: bytes | memoryview):
        self._cols = cols
        self._source = source
        tables = languages.tables(cols.language)
        self._names = tables.names
        self._field_names = tables.fields
        self._lang_name = cols.language
        self._kind = memoryview(np.ascontiguousarray(cols.kind))
        self._gram = memoryview(np.ascontiguousarray(cols.grammar))
        self._flags = memoryview(np.ascontiguousarray(cols.flags))
        self._size = memoryview(np.ascontiguousarray(cols.size))
        self._start = memoryview(np.ascontiguousarray(cols.start))
        self._end = memoryview(np.ascontiguousarray(cols.end))
        self._field = memoryview(np.ascontiguousarray(cols.field))
        self._n = len(cols)
        self._struct: Structure | None = None
        self._parent: memoryview | None = None
        self._prev: memoryview | None = None
        self._lines: np.ndarray | None = None
        self._lines_mv: memoryview | None = None

    # -- derived indexes, built on first use -------------------------------------------
    def _structure(self) -> Structure:
        if self._struct is None:
            self._struct = build_structure(self._cols)
            self._parent = memoryview(self._struct.parent)
            self._prev = memoryview(self._struct.prev)
        return self._struct

    def _line_starts(self) -> memoryview:
        if self._lines_mv is None:
            src = np.frombuffer(self._source, dtype=np.uint8)
            starts = np.empty(int(np.count_nonzero(src == 10)) + 1, dtype=np.int64)
            starts[0] = 0
            starts[1:] = np.flatnonzero(src == 10) + 1
            self._lines = starts
            self._lines_mv = memoryview(starts)
        return self._lines_mv

    def _point(self, byte: int) -> Point:
        lines = self._line_starts()
        row = bisect_right(lines, byte) - 1
        return Point(row, byte - lines[row])

    def points(self, byte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (row, column) of byte offsets, counting only '\\n' as tree-sitter does."""
        self._line_starts()
        assert self._lines is not None
        row = np.searchsorted(self._lines, byte, side="right") - 1
        return row, byte - self._lines[row]

    # -- py-tree-sitter API ------------------------------------------------------------
    @property
    def root_node(self) -> Node:
        return Node(self, 0)

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

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"<cstvault.Tree {self._lang_name} nodes={self._n}>"


class Node:
    """A flyweight handle on one node of a `Tree` (compares by tree identity and index)."""

    __slots__ = ("_t", "_i")

    def __init__(self, tree: Tree, index: int):
        self._t = tree
        self._i = index

    # identity
    @property
    def id(self) -> int:
        return self._i

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other._t is self._t and other._i == self._i

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((id(self._t), self._i))

    def __repr__(self) -> str:
        return (
            f"<Node type={self.type}, start_point={tuple(self.start_point)}, "
            f"end_point={tuple(self.end_point)}>"
        )

    def __str__(self) -> str:
        return sexp.render(self._t, self._i)

    # kind
    @property
    def type(self) -> str:
        t = self._t
        return t._names[t._kind[self._i]]

    @property
    def kind_id(self) -> int:
        return self._t._kind[self._i]

    @property
    def grammar_id(self) -> int:
        return self._t._gram[self._i]

    @property
    def grammar_name(self) -> str:
        t = self._t
        return t._names[t._gram[self._i]]

    @property
    def is_named(self) -> bool:
        return bool(self._t._flags[self._i] & NAMED)

    @property
    def is_extra(self) -> bool:
        return bool(self._t._flags[self._i] & EXTRA)

    @property
    def is_missing(self) -> bool:
        return bool(self._t._flags[self._i] & MISSING)

    @property
    def is_error(self) -> bool:
        return self._t._kind[self._i] == ERROR_KIND

    @property
    def has_error(self) -> bool:
        return bool(self._t._flags[self._i] & HAS_ERROR)

    @property
    def has_changes(self) -> bool:
        return False

    # position
    @property
    def start_byte(self) -> int:
        return self._t._start[self._i]

    @property
    def end_byte(self) -> int:
        return self._t._end[self._i]

    @property
    def byte_range(self) -> tuple[int, int]:
        t = self._t
        return t._start[self._i], t._end[self._i]

    @property
    def start_point(self) -> Point:
        return self._t._point(self._t._start[self._i])

    @property
    def end_point(self) -> Point:
        return self._t._point(self._t._end[self._i])

    @property
    def range(self) -> Range:
        s, e = self.byte_range
        return Range(self.start_point, self.end_point, s, e)

    @property
    def text(self) -> bytes:
        t = self._t
        return bytes(t._source[t._start[self._i] : t._end[self._i]])

    @property
    def descendant_count(self) -> int:
        return self._t._size[self._i]

    # children
    def _child_indexes(self) -> Iterator[int]:
        t = self._t
        i = self._i
        if not t._flags[i] & HAS_CHILDREN:
            return
        size = t._size
        end = i + size[i]
        j = i + 1
        while j < end:
            yield j
            j += size[j]

    @property
    def children(self) -> list[Node]:
        t = self._t
        return [Node(t, j) for j in self._child_indexes()]

    @property
    def child_count(self) -> int:
        if not self._t._flags[self._i] & HAS_CHILDREN:
            return 0
        return int(self._t._structure().child_count[self._i])

    @property
    def named_children(self) -> list[Node]:
        t = self._t
        flags = t._flags
        return [Node(t, j) for j in self._child_indexes() if flags[j] & NAMED]

    @property
    def named_child_count(self) -> int:
        flags = self._t._flags
        return sum(1 for j in self._child_indexes() if flags[j] & NAMED)

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
        return Node(self._t, self._nth(index, False))

    def named_child(self, index: int) -> Node | None:
        return Node(self._t, self._nth(index, True))

    def _field_id(self, name: str) -> int:
        fid = self._t.language.field_id_for_name(name)
        return fid or 0

    def child_by_field_id(self, field_id: int) -> Node | None:
        """First child carrying the field (see docs/architecture.md on inherited fields)."""
        fields = self._t._field
        for j in self._child_indexes():
            if fields[j] == field_id:
                return Node(self._t, j)
        return None

    def child_by_field_name(self, name: str) -> Node | None:
        fid = self._field_id(name)
        return self.child_by_field_id(fid) if fid else None

    def children_by_field_id(self, field_id: int) -> list[Node]:
        fields = self._t._field
        return [Node(self._t, j) for j in self._child_indexes() if fields[j] == field_id]

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

    # family
    @property
    def parent(self) -> Node | None:
        t = self._t
        if t._parent is None:
            t._structure()
        p = t._parent[self._i]  # type: ignore[index]
        return None if p < 0 else Node(t, p)

    @property
    def next_sibling(self) -> Node | None:
        t = self._t
        i = self._i
        if i == 0:
            return None
        if t._parent is None:
            t._structure()
        p = t._parent[i]  # type: ignore[index]
        j = i + t._size[i]
        return Node(t, j) if j < p + t._size[p] else None

    @property
    def prev_sibling(self) -> Node | None:
        t = self._t
        if t._prev is None:
            t._structure()
        j = t._prev[self._i]  # type: ignore[index]
        return None if j < 0 else Node(t, j)

    @property
    def next_named_sibling(self) -> Node | None:
        node = self.next_sibling
        while node is not None and not node.is_named:
            node = node.next_sibling
        return node

    @property
    def prev_named_sibling(self) -> Node | None:
        node = self.prev_sibling
        while node is not None and not node.is_named:
            node = node.prev_sibling
        return node

    # search
    def _descend(self, covers, include_anonymous: bool) -> Node:
        """tree-sitter's descendant-for-range walk, over visible children."""
        t = self._t
        flags = t._flags
        node = self._i
        found = node
        descended = True
        while descended:
            descended = False
            for j in Node(t, node)._child_indexes():
                verdict = covers(j)
                if verdict is None:
                    continue
                if not verdict:
                    break
                node = j
                if include_anonymous or flags[j] & NAMED:
                    found = j
                descended = True
                break
        return Node(t, found)

    def descendant_for_byte_range(self, start_byte: int, end_byte: int) -> Node | None:
        return self._byte_range(start_byte, end_byte, True)

    def named_descendant_for_byte_range(self, start_byte: int, end_byte: int) -> Node | None:
        return self._byte_range(start_byte, end_byte, False)

    def _byte_range(self, lo: int, hi: int, anon: bool) -> Node | None:
        if lo > hi:
            return None
        starts, ends = self._t._start, self._t._end

        def covers(j: int) -> bool | None:
            e, s = ends[j], starts[j]
            if e < hi or (e < lo if s == e else e <= lo):
                return None
            return not lo < s

        return self._descend(covers, anon)

    def descendant_for_point_range(self, start_point, end_point) -> Node | None:
        return self._point_range(tuple(start_point), tuple(end_point), True)

    def named_descendant_for_point_range(self, start_point, end_point) -> Node | None:
        return self._point_range(tuple(start_point), tuple(end_point), False)

    def _point_range(self, lo: tuple, hi: tuple, anon: bool) -> Node | None:
        if lo > hi:
            return None
        t = self._t

        def covers(j: int) -> bool | None:
            e = tuple(t._point(t._end[j]))
            s = tuple(t._point(t._start[j]))
            if e < hi or (e < lo if s == e else e <= lo):
                return None
            return not lo < s

        return self._descend(covers, anon)

    def first_child_for_byte(self, byte: int) -> Node | None:
        ends = self._t._end
        for j in self._child_indexes():
            if ends[j] > byte:
                return Node(self._t, j)
        return None

    def first_named_child_for_byte(self, byte: int) -> Node | None:
        t = self._t
        for j in self._child_indexes():
            if t._end[j] > byte and t._flags[j] & NAMED:
                return Node(t, j)
        return None

    def walk(self) -> TreeCursor:
        return TreeCursor(self._t, self._i)


class TreeCursor:
    """A cursor over a `Tree`, rooted at the node it was created from."""

    __slots__ = ("_t", "_root", "_i", "_stack", "_ends", "_size", "_flags")

    def __init__(self, tree: Tree, index: int):
        self._t = tree
        self._root = index
        self._i = index
        self._stack: list[int] = []
        self._ends: list[int] = []
        self._size = tree._size
        self._flags = tree._flags

    @property
    def node(self) -> Node:
        return Node(self._t, self._i)

    @property
    def field_id(self) -> int | None:
        if not self._stack:
            return None
        return self._t._field[self._i] or None

    @property
    def field_name(self) -> str | None:
        fid = self.field_id
        return None if fid is None else self._t._field_names[fid]

    @property
    def depth(self) -> int:
        return len(self._stack)

    @property
    def descendant_index(self) -> int:
        return self._i - self._root

    def goto_first_child(self) -> bool:
        i = self._i
        if self._flags[i] & HAS_CHILDREN:
            self._stack.append(i)
            self._ends.append(i + self._size[i])
            self._i = i + 1
            return True
        return False

    def goto_last_child(self) -> bool:
        i = self._i
        if not self._flags[i] & HAS_CHILDREN:
            return False
        size = self._size
        end = i + size[i]
        j = i + 1
        while j + size[j] < end:
            j += size[j]
        self._stack.append(i)
        self._ends.append(end)
        self._i = j
        return True

    def goto_next_sibling(self) -> bool:
        ends = self._ends
        if not ends:
            return False
        j = self._i + self._size[self._i]
        if j < ends[-1]:
            self._i = j
            return True
        return False

    def goto_previous_sibling(self) -> bool:
        if not self._stack:
            return False
        t = self._t
        if t._prev is None:
            t._structure()
        j = t._prev[self._i]  # type: ignore[index]
        if j < 0:
            return False
        self._i = j
        return True

    def goto_parent(self) -> bool:
        if not self._stack:
            return False
        self._i = self._stack.pop()
        self._ends.pop()
        return True

    def goto_first_child_for_byte(self, byte: int) -> int | None:
        node = Node(self._t, self._i)
        for k, j in enumerate(node._child_indexes()):
            if self._t._end[j] > byte:
                self._stack.append(self._i)
                self._ends.append(self._i + self._size[self._i])
                self._i = j
                return k
        return None

    def goto_descendant(self, descendant_index: int) -> None:
        target = self._root + descendant_index
        if not 0 <= descendant_index < self._size[self._root]:
            raise IndexError("descendant index out of range")
        self.reset_to_index(self._root)
        while self._i != target:
            self.goto_first_child()
            while self._i + self._size[self._i] <= target:
                self._i += self._size[self._i]

    def reset_to_index(self, index: int) -> None:
        self._i = index
        self._stack.clear()
        self._ends.clear()

    def reset(self, node: Node) -> None:
        if node._t is not self._t:
            raise ValueError("node belongs to another tree")
        self._root = node._i
        self.reset_to_index(node._i)

    def copy(self) -> TreeCursor:
        c = TreeCursor(self._t, self._root)
        c._i = self._i
        c._stack = list(self._stack)
        c._ends = list(self._ends)
        return c

    def __copy__(self) -> TreeCursor:
        return self.copy()
