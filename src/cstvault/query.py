"""Tree-sitter queries over cstvault trees: `Query` and `QueryCursor`, py-tree-sitter's API.

Matching is tree-sitter's own engine (`_native.query_exec`: the tree's source re-parsed by
the same runtime and grammar, captured nodes named by their preorder index, which is their
index in the stored tree); the text predicates py-tree-sitter evaluates are evaluated here
the same way (`#eq?`, `#not-eq?`, `#any-eq?`, `#any-not-eq?`, `#match?`, `#not-match?`,
`#any-match?`, `#any-not-match?`, `#any-of?`, `#not-any-of?`), `#is?` / `#is-not?` become
assertions, `#set!` settings, and any other predicate goes to the caller's `predicate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import tree_sitter as ts

from . import _native, languages
from .tree import Node

__all__ = ["Capture", "Query", "QueryCursor", "QueryError", "QueryPredicate", "StoreMatch"]

QueryPredicate = Callable[[str, list[tuple[str, str]], int, dict[str, list[Node]]], bool]

_ERRORS = {1: "syntax", 2: "node type", 3: "field", 4: "capture", 5: "structure", 6: "language"}
_CAPTURE, _STRING = 1, 2  # TSQueryPredicateStepType


Capture = _native.Capture  # (type, start_byte, end_byte, start_point, end_point, text)


class StoreMatch(NamedTuple):
    """A match in a stored file, its captured nodes as `Capture`s."""

    path: str
    pattern_index: int
    captures: dict[str, list[Capture]]


class QueryError(ValueError):
    """A malformed query: `kind` (syntax, node type, field, capture, structure, predicate)
    and the byte `offset` where tree-sitter found it, with its row and column."""

    def __init__(self, message: str, kind: str = "predicate", offset: int = -1):
        super().__init__(message)
        self.kind = kind
        self.offset = offset


def _language_name(language: ts.Language | str) -> str:
    if isinstance(language, str):
        if language not in languages.BY_NAME:
            raise ValueError(f"unknown language {language!r}")
        return language
    for name in languages.names():
        if languages.language(name) == language:
            return name
    raise ValueError(f"{language!r} is not one of cstvault's languages")


def _position(source: bytes, offset: int) -> tuple[int, int]:
    row = source.count(b"\n", 0, offset)
    return row, offset - (source.rfind(b"\n", 0, offset) + 1)


def _error(source: bytes, kind: int, offset: int) -> QueryError:
    """py-tree-sitter's messages for tree-sitter's query errors."""
    row, col = _position(source, offset)
    name = _ERRORS.get(kind, "syntax")
    word = re.match(rb"[\w.?!-]*", source[offset:])
    text = (word.group(0) if word else b"").decode("utf-8", "replace")
    if kind == 1:
        msg = (f"Invalid syntax at row {row}, column {col}" if offset < len(source)
               else "Unexpected EOF")  # fmt: skip
    elif kind == 4:
        msg = f"Invalid capture name at row {row}, column {col}: {text}"
    elif kind in (2, 3):
        what = "node type" if kind == 2 else "field name"
        ident = re.match(r"\w*", text)
        msg = f"Invalid {what} at row {row}, column {col}: {ident.group(0) if ident else ''}"
    elif kind == 5:
        msg = f"Impossible pattern at row {row}, column {col}"
    else:
        msg = f"Invalid language at row {row}, column {col}"
    return QueryError(msg, name, offset)


class _Text:
    """A text predicate: (name, capture id(s), value(s), positive, any)."""

    __slots__ = ("kind", "capture", "other", "values", "regex", "positive", "any")

    def __init__(self, kind: str, capture: int, *, other: int = -1, values: tuple = (),
                 regex: re.Pattern | None = None, positive: bool = True,
                 any_: bool = False):  # fmt: skip
        self.kind, self.capture, self.other, self.values = kind, capture, other, values
        self.regex, self.positive, self.any = regex, positive, any_


class Query:
    """A compiled query for one language (`Query(language, source)`, as py-tree-sitter's:
    `language` is a `tree_sitter.Language` or a cstvault language name)."""

    def __init__(self, language: ts.Language | str, source: str | bytes):
        self.language_name = _language_name(language)
        text = source.encode() if isinstance(source, str) else bytes(source)
        made = _native.query_new(languages.capsule(self.language_name), text)
        if isinstance(made, tuple):
            raise _error(text, *made)
        self._q = made
        self._source = text
        names, strings, patterns, quantifiers = _native.query_info(made)
        self._names: list[str] = names
        self._strings: list[bytes] = strings
        self._patterns = patterns
        self._quantifiers = quantifiers
        self._predicates: list[list[Any]] = []
        self._settings: list[dict[str, str | None]] = []
        self._assertions: list[dict[str, tuple[str | None, bool]]] = []
        for index, (start, *_rest, steps) in enumerate(patterns):
            self._parse_predicates(index, _position(text, start)[0], steps)
        self._disabled_patterns: set[int] = set()
        self._names_t = tuple(self._names)
        self._ids = {name: i for i, name in enumerate(self._names)}
        self._all_patterns = frozenset(range(len(patterns)))
        self._c_checks, self._py_checked = self._split_checks()

    def _split_checks(self) -> tuple[tuple, frozenset[int]]:
        """Per pattern, its text predicates as `_native.record_matches` / `node_matches`
        evaluate them in C (None: none, or some only Python evaluates), and the patterns
        left to `QueryCursor._accept` (regexes, user predicates)."""
        checks: list[tuple | None] = []
        rest = set()
        for p, preds in enumerate(self._predicates):
            c_able = [x for x in preds if getattr(x, "kind", None) in ("eq_string", "any_of",
                                                                      "eq_capture")]  # fmt: skip
            if len(c_able) != len(preds):
                checks.append(None)
                rest.add(p)
                continue
            checks.append(tuple((1 if x.kind == "eq_capture" else 0, x.capture, x.other,
                                 x.values, x.positive, x.any and x.kind != "any_of")
                                for x in c_able) if c_able else None)  # fmt: skip
        return tuple(checks), frozenset(rest)

    def _by_id(self, caps: dict[str, list]) -> dict[int, list]:
        return {self._ids[name]: nodes for name, nodes in caps.items()}

    # the predicates, as py-tree-sitter parses them
    def _parse_predicates(self, index: int, row: int, steps: list[tuple[int, int]]) -> None:
        preds: list[Any] = []
        settings: dict[str, str | None] = {}
        assertions: dict[str, tuple[str | None, bool]] = {}
        group: list[tuple[int, int]] = []
        for step in steps:
            if step[0] != 0:
                group.append(step)
                continue
            if group:
                self._predicate(group, row, preds, settings, assertions, index)
            group = []
        self._predicates.append(preds)
        self._settings.append(settings)
        self._assertions.append(assertions)

    def _str(self, step: tuple[int, int]) -> str:
        return self._strings[step[1]].decode("utf-8", "surrogateescape")

    def _predicate(self, group: list[tuple[int, int]], row: int, preds: list, settings: dict,
                   assertions: dict, index: int) -> None:  # fmt: skip
        def fail(msg: str) -> QueryError:
            return QueryError(f"Invalid predicate in pattern at row {row}: {msg}")

        head, args = group[0], group[1:]
        if head[0] != _STRING:
            raise fail(f"@{self._names[head[1]]}")
        name = self._str(head)
        n = len(args)
        if name in ("eq?", "not-eq?", "any-eq?", "any-not-eq?", "match?", "not-match?",
                    "any-match?", "any-not-match?"):  # fmt: skip
            if n != 2:
                raise fail(f"#{name} expects 2 arguments, got {n}")
            if args[0][0] != _CAPTURE:
                raise fail(f'first argument to #{name} must be a capture name, got '
                           f'"{self._str(args[0])}"')  # fmt: skip
            any_ = name.startswith("any")
            positive = name in ("eq?", "any-eq?", "match?", "any-match?")
            if name.endswith("match?"):
                if args[1][0] != _STRING:
                    raise fail(f"second argument to #{name} must be a string literal, got "
                               f"@{self._names[args[1][1]]}")  # fmt: skip
                try:
                    regex = re.compile(self._str(args[1]))
                except re.error as exc:
                    raise fail("regular expression error") from exc
                preds.append(_Text("match", args[0][1], regex=regex, positive=positive,
                                   any_=any_))  # fmt: skip
            elif args[1][0] == _CAPTURE:
                preds.append(_Text("eq_capture", args[0][1], other=args[1][1],
                                   positive=positive, any_=any_))  # fmt: skip
            else:
                preds.append(_Text("eq_string", args[0][1], values=(self._strings[args[1][1]],),
                                   positive=positive, any_=any_))  # fmt: skip
        elif name in ("any-of?", "not-any-of?"):
            if n < 2:
                raise fail(f"#{name} expects at least 2 arguments, got {n}")
            if args[0][0] != _CAPTURE:
                raise fail(f'first argument to #{name} must be a capture name, got '
                           f'"{self._str(args[0])}"')  # fmt: skip
            for a in args[1:]:
                if a[0] != _STRING:
                    raise fail(f"arguments to #{name} must be string literals, got "
                               f"@{self._names[a[1]]}")  # fmt: skip
            preds.append(_Text("any_of", args[0][1],
                               values=tuple(self._strings[a[1]] for a in args[1:]),
                               positive=name == "any-of?"))  # fmt: skip
        elif name in ("is?", "is-not?", "set!"):
            if not 1 <= n <= 2 or args[0][0] != _STRING:
                raise fail(f"#{name} expects a property name and an optional value")
            key = self._str(args[0])
            value = self._str(args[1]) if n == 2 and args[1][0] == _STRING else None
            if name == "set!":
                settings[key] = value
            else:
                assertions[key] = (value, name == "is?")
        else:
            preds.append((name, [("capture", self._names[a[1]]) if a[0] == _CAPTURE
                                 else ("string", self._str(a)) for a in args]))  # fmt: skip

    # py-tree-sitter's Query API
    @property
    def pattern_count(self) -> int:
        return len(self._patterns)

    @property
    def capture_count(self) -> int:
        return len(self._names)

    @property
    def string_count(self) -> int:
        return len(self._strings)

    def capture_name(self, index: int) -> str:
        return self._names[index]

    def capture_quantifier(self, pattern_index: int, capture_index: int) -> str:
        return ("", "?", "*", "+", "")[self._quantifiers[pattern_index][capture_index]]

    def string_value(self, index: int) -> str:
        return self._strings[index].decode("utf-8", "surrogateescape")

    def start_byte_for_pattern(self, index: int) -> int:
        return self._patterns[index][0]

    def end_byte_for_pattern(self, index: int) -> int:
        return self._patterns[index][1]

    def is_pattern_rooted(self, index: int) -> bool:
        return self._patterns[index][2]

    def is_pattern_non_local(self, index: int) -> bool:
        return self._patterns[index][3]

    def is_pattern_guaranteed_at_step(self, offset: int) -> bool:
        return _native.query_guaranteed(self._q, offset)

    def pattern_settings(self, index: int) -> dict[str, str | None]:
        return dict(self._settings[index])

    def pattern_assertions(self, index: int) -> dict[str, tuple[str | None, bool]]:
        return dict(self._assertions[index])

    def disable_capture(self, name: str) -> None:
        _native.query_disable_capture(self._q, name.encode())

    def disable_pattern(self, index: int) -> None:
        if not 0 <= index < self.pattern_count:
            raise IndexError(f"pattern index {index} is out of range")
        _native.query_disable_pattern(self._q, index)
        self._disabled_patterns.add(index)

    def __repr__(self) -> str:
        return f"<cstvault.Query {self.language_name} patterns={self.pattern_count}>"


def _texts(nodes: list[Node]) -> list[bytes]:
    return [n.text for n in nodes]


def _holds(pred: _Text, nodes: dict[int, list[Node]]) -> bool:
    """A text predicate against one match's captures, as py-tree-sitter evaluates it: the
    plain forms need every captured node to pass, the `any-` forms one."""
    mine = nodes.get(pred.capture, [])
    if pred.kind == "any_of":
        return all((t in pred.values) == pred.positive for t in _texts(mine))
    if pred.kind == "eq_capture":
        pairs = zip(_texts(mine), _texts(nodes.get(pred.other, [])), strict=False)
        results = [(a == b) == pred.positive for a, b in pairs]
    elif pred.kind == "eq_string":
        results = [(t == pred.values[0]) == pred.positive for t in _texts(mine)]
    else:
        assert pred.regex is not None
        results = [(pred.regex.search(t.decode("utf-8", "surrogateescape")) is not None)
                   == pred.positive for t in _texts(mine)]  # fmt: skip
    if not results:
        return True
    return any(results) if pred.any else all(results)


class QueryCursor:
    """Runs a `Query` on a cstvault node (`QueryCursor(query, match_limit=…)`)."""

    def __init__(self, query: Query, *, match_limit: int | None = None):
        self.query = query
        self.match_limit = match_limit
        self._max_start_depth: int | None = None
        self._byte_range: tuple[int, int] | None = None
        self._point_range: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._containing_byte_range: tuple[int, int] | None = None
        self._containing_point_range: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._exceeded = False
        self._cursor: Any = None  # the native cursor, made on first use and kept

    @property
    def match_limit(self) -> int:
        return self._limit

    @match_limit.setter
    def match_limit(self, value: int | None) -> None:
        self._limit = 0xFFFFFFFF if value is None else int(value)

    @property
    def did_exceed_match_limit(self) -> bool:
        return self._exceeded

    def set_max_start_depth(self, max_start_depth: int) -> QueryCursor:
        self._max_start_depth = max_start_depth
        return self

    def set_byte_range(self, start: int, end: int) -> QueryCursor:
        if start > end:
            raise ValueError("Invalid byte range")
        self._byte_range = (start, end)
        return self

    def set_point_range(self, start: tuple[int, int], end: tuple[int, int]) -> QueryCursor:
        if tuple(start) > tuple(end):
            raise ValueError("Invalid point range")
        self._point_range = (tuple(start), tuple(end))  # type: ignore[assignment]
        return self

    def set_containing_byte_range(self, start: int, end: int) -> QueryCursor:
        if start > end:
            raise ValueError("Invalid byte range")
        self._containing_byte_range = (start, end)
        return self

    def set_containing_point_range(self, start: tuple[int, int],
                                   end: tuple[int, int]) -> QueryCursor:  # fmt: skip
        if tuple(start) > tuple(end):
            raise ValueError("Invalid point range")
        self._containing_point_range = (tuple(start), tuple(end))  # type: ignore[assignment]
        return self

    def _events(self, node: Node, captures: bool) -> tuple[Any, bytes, tuple[int, int, int]]:
        if not isinstance(node, Node):
            raise TypeError(f"expected a cstvault Node, not {type(node).__name__}")
        tree = node._t
        if tree._lang_name != self.query.language_name:
            raise ValueError(f"the query is for {self.query.language_name}, the tree is "
                             f"{tree._lang_name}")  # fmt: skip
        off = node._offset  # root_node_with_offset: every position moves
        raw = self._exec_columns(tree, node.id, captures, None, off[0] if off else 0)
        if raw is None:
            raw = self._exec(bytes(tree._source), node.id, captures, False, off or (0, 0, 0))
        return tree, raw, off or (0, 0, 0)

    def _exec_columns(self, tree: Any, node_index: int, captures: bool,
                      source: bytes | memoryview | None = None,
                      offset: int = 0) -> bytes | None:  # fmt: skip
        """The query run over the stored columns (`_native.colq_exec`), or None when they
        cannot answer it (then the source is parsed again: `_exec`)."""
        if self._point_range is not None or self._containing_point_range is not None:
            return None
        depth = -1 if self._max_start_depth is None else self._max_start_depth
        if self._cursor is None:
            self._cursor = _native.colq_cursor()
        got = _native.colq_exec(
            self._cursor, self.query._q, tree, tree._status, node_index, captures, self._limit,
            depth, self._byte_range, self._containing_byte_range, source, offset)  # fmt: skip
        if got is None:
            return None
        raw, self._exceeded = got
        return raw

    def _exec(self, source: bytes, node_index: int, captures: bool, records: bool,
              offset: tuple[int, int, int] = (0, 0, 0)) -> bytes:  # fmt: skip
        """`_native.query_exec` with this cursor's settings; the raw events."""
        depth = -1 if self._max_start_depth is None else self._max_start_depth
        raw, self._exceeded = _native.query_exec(
            self.query._q, languages.capsule(self.query.language_name), source, node_index,
            captures, self._limit, depth, self._byte_range, self._point_range,
            self._containing_byte_range, self._containing_point_range, records,
            offset)  # fmt: skip
        return raw

    def _accept(self, pattern: int, nodes: dict[int, list[Node]],
                predicate: QueryPredicate | None) -> bool:  # fmt: skip
        for pred in self.query._predicates[pattern]:
            if isinstance(pred, _Text):
                if not _holds(pred, nodes):
                    return False
            elif predicate is not None:
                named = {self.query._names[c]: ns for c, ns in nodes.items()}
                if not predicate(pred[0], pred[1], pattern, named):
                    return False
        return True

    def source_matches(self, source: bytes, predicate: QueryPredicate | None = None
                       ) -> list[tuple[int, dict[str, list[Capture]]]]:  # fmt: skip
        """`matches` over a whole source without a stored tree: captured nodes come back as
        `Capture` records (what whole-store queries stream)."""
        return self.record_matches(source, self._exec(source, 0, False, True), predicate)

    def record_matches(self, source: bytes, raw: bytes, predicate: QueryPredicate | None = None
                       ) -> list[tuple[int, dict[str, list[Capture]]]]:  # fmt: skip
        """The accepted matches among record events (`_native.query_exec(..., records=True)`
        or `extract.parse_extract_matches`) of this cursor's query on `source`."""
        return [(m.pattern_index, m.captures) for m in self._records("", source, raw, predicate)]

    def _records(self, path: str, source: bytes, raw: bytes,
                 predicate: QueryPredicate | None = None) -> list[StoreMatch]:  # fmt: skip
        """Record events as `StoreMatch`es of `Capture`s, made in C (which applies the text
        comparisons), the patterns with other predicates then checked here."""
        q = self.query
        matches = _native.record_matches(
            path, bytes(source), raw, q._names_t, languages.tables(q.language_name).names,
            StoreMatch, q._c_checks)  # fmt: skip
        rest = q._py_checked
        if rest:
            matches = [m for m in matches if m.pattern_index not in rest
                       or self._accept(m.pattern_index, q._by_id(m.captures), predicate)]
        return matches

    def matches(self, node: Node, predicate: QueryPredicate | None = None
                ) -> list[tuple[int, dict[str, list[Node]]]]:  # fmt: skip
        """Every match under `node`, in tree-sitter's order: (pattern index, capture name ->
        nodes)."""
        q = self.query
        tree, raw, off = self._events(node, False)
        out = _native.node_matches(tree, raw, False, q._names_t, q._c_checks, frozenset(), off)
        if q._py_checked:
            out = [m for m in out if m[0] not in q._py_checked
                   or self._accept(m[0], q._by_id(m[1]), predicate)]  # fmt: skip
        return out

    def captures(self, node: Node, predicate: QueryPredicate | None = None
                 ) -> dict[str, list[Node]]:  # fmt: skip
        """Every captured node under `node`, by capture name, in tree-sitter's capture
        order (each node once per name)."""
        q = self.query
        tree, raw, off = self._events(node, True)
        held_patterns = q._all_patterns if q._py_checked else frozenset()
        got, held = _native.node_matches(tree, raw, True, q._names_t, q._c_checks, held_patterns,
                                         off)  # fmt: skip
        if not held_patterns:
            return got
        out: dict[str, dict[Node, None]] = {}
        for pattern, caps, name, n in held:
            if pattern in q._py_checked and not self._accept(pattern, q._by_id(caps), predicate):
                continue
            out.setdefault(name, {})[n] = None
        return {name: list(ns) for name, ns in out.items()}
