"""The only code that walks tree-sitter trees: one iterative TreeCursor pass -> Columns.

`parse_extract` is the production path: parse and walk in tree-sitter's C (cstvault._native),
no Python object per node. `extract` walks a py-tree-sitter Tree from Python; it is the
oracle the tests hold the native walker to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np
import tree_sitter as ts

from . import _native, languages
from .columns import (
    ERROR_KIND,
    EXTRA,
    HAS_CHILDREN,
    HAS_ERROR,
    HAS_FIELD,
    MISSING,
    NAMED,
    UNEXPECTED,
    Columns,
)

_SPECIAL_CHARS = {"INVALID": -1, "'\\0'": 0, "'\\n'": 10, "'\\t'": 9, "'\\r'": 13}


def parse(source: bytes, language: str) -> ts.Tree:
    return languages.parser(language).parse(source)


def parse_extract(source: bytes, language: str) -> Columns:
    """Parse `source` and return its columns, all in C."""
    return _from_native(language, _native.parse_extract(source, languages.capsule(language)))


def parse_extract_matches(source: bytes, language: str, query: object) -> tuple[Columns, bytes]:
    """`parse_extract`, and the matches of a compiled query (`Query._q`) on the same parse, as
    `_native.query_exec`'s record events."""
    out, events = _native.parse_extract(source, languages.capsule(language), query)
    return _from_native(language, out), events


def _from_native(language: str, out: tuple) -> Columns:
    n, kind, gram, flags, field, size, start, end, unexpected, sexp_text, status, tails = out
    cols = Columns(
        language=language,
        kind=np.frombuffer(kind, dtype=np.uint16),
        grammar=np.frombuffer(gram, dtype=np.uint16),
        flags=np.frombuffer(flags, dtype=np.uint8),
        field=np.frombuffer(field, dtype=np.uint16),
        size=np.frombuffer(size, dtype=np.uint32).astype(np.int64),
        start=np.frombuffer(start, dtype=np.uint32).astype(np.int64),
        end=np.frombuffer(end, dtype=np.uint32).astype(np.int64),
        unexpected=np.frombuffer(unexpected, dtype=np.int64),
        status=np.frombuffer(status, dtype=np.uint32),
        tails=np.frombuffer(tails, dtype=np.uint32),
    )
    if sexp_text is not None:
        _attach_phantoms(cols, sexp_text)
    return cols


def _unexpected_char(sexp: str) -> int | None:
    """Char code of tree-sitter's '(UNEXPECTED c)' rendering, None for other renderings."""
    prefix = "(UNEXPECTED "
    if not sexp.startswith(prefix):
        return None
    token = sexp[len(prefix) : -1]
    if token in _SPECIAL_CHARS:
        return _SPECIAL_CHARS[token]
    if len(token) == 3 and token[0] == "'" and token[2] == "'":
        return ord(token[1])
    return int(token)


def extract(tree: ts.Tree, language: str) -> Columns:
    """Walk `tree` once in preorder and return its columns."""
    has_errors = tree.root_node.has_error
    kinds: list[int] = []
    grams: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    field_at: list[int] = []
    field_id: list[int] = []
    extra_at: list[int] = []
    inner_at: list[int] = []
    inner_size: list[int] = []
    err_flags: list[int] = []
    unexpected: list[int] = []
    ka, ga, sa, ea = kinds.append, grams.append, starts.append, ends.append
    c = tree.walk()
    first_child, next_sibling, parent = c.goto_first_child, c.goto_next_sibling, c.goto_parent
    i = 0
    while True:
        n = c.node
        ka(n.kind_id)
        ga(n.grammar_id)
        sa(n.start_byte)
        ea(n.end_byte)
        f = c.field_id
        if f is not None:
            field_at.append(i)
            field_id.append(f)
        if n.is_extra:
            extra_at.append(i)
        if has_errors:
            bits = (MISSING if n.is_missing else 0) | (HAS_ERROR if n.has_error else 0)
            if n.kind_id == ERROR_KIND and n.child_count == 0:
                ch = _unexpected_char(str(n))
                if ch is not None:
                    unexpected.append(ch)
                    bits |= UNEXPECTED
            err_flags.append(bits)
        i += 1
        if first_child():
            inner_at.append(i - 1)
            inner_size.append(n.descendant_count)
            continue
        while not next_sibling():
            if not parent():
                cols = _columns(
                    language, kinds, grams, starts, ends, field_at, field_id, extra_at,
                    inner_at, inner_size, err_flags, unexpected,
                )
                return _with_phantoms(cols, tree) if has_errors else cols


def _columns(
    language: str,
    kinds: list[int],
    grams: list[int],
    starts: list[int],
    ends: list[int],
    field_at: list[int],
    field_id: list[int],
    extra_at: list[int],
    inner_at: list[int],
    inner_size: list[int],
    err_flags: list[int],
    unexpected: list[int],
) -> Columns:
    n = len(kinds)
    kind = np.array(kinds, dtype=np.uint16)
    size = np.ones(n, dtype=np.int64)
    size[np.array(inner_at, dtype=np.int64)] = inner_size
    flags = np.where(languages.tables(language).named[kind], NAMED, 0).astype(np.uint8)
    flags[size > 1] |= HAS_CHILDREN
    flags[np.array(extra_at, dtype=np.int64)] |= EXTRA
    field = np.zeros(n, dtype=np.uint16)
    fat = np.array(field_at, dtype=np.int64)
    field[fat] = field_id
    flags[fat] |= HAS_FIELD
    if err_flags:
        flags |= np.array(err_flags, dtype=np.uint8)
    cols = Columns(
        language=language,
        kind=kind,
        grammar=np.array(grams, dtype=np.uint16),
        flags=flags,
        field=field,
        size=size,
        start=np.array(starts, dtype=np.int64),
        end=np.array(ends, dtype=np.int64),
        unexpected=np.array(unexpected, dtype=np.int64),
    )
    return cols


def _with_phantoms(cols: Columns, tree: ts.Tree) -> Columns:
    return _attach_phantoms(cols, str(tree.root_node))


def _attach_phantoms(cols: Columns, theirs: str) -> Columns:
    """Record hidden MISSING tokens that only tree-sitter's S-expression shows."""
    from . import sexp
    from .tree import Tree

    mine = Tree(cols, b"")
    if sexp.render(mine, 0) != theirs:
        cols.phantoms = tuple(sexp.find_phantoms(mine, theirs))
    return cols
