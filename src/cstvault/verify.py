"""The round-trip gate: stored tree == tree-sitter's tree, node for node, byte for byte.

The reference side is tree-sitter's own TreeCursor walk (independent of `extract`); our side
is the decoded record. Attribute columns are compared with numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np
import tree_sitter as ts
import zstandard

from . import languages
from ._native import release_free_memory
from .codec import CorruptRecord, EncodeError, encode
from .columns import ERROR_KIND, EXTRA, HAS_ERROR, MISSING, NAMED
from .extract import parse, parse_extract
from .sources import LARGE_FILE_BYTES, check_source, count_lines
from .tree import Tree, tree_from_record

ATTRIBUTES = (
    "type", "kind_id", "field_name", "is_named", "is_extra", "is_missing", "is_error",
    "has_error", "start_byte", "end_byte", "start_row", "start_column", "end_row",
    "end_column", "child_count",
)  # fmt: skip


@dataclass
class Mismatch:
    path: str
    node: int
    attribute: str
    expected: Any
    got: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "node": self.node,
            "attribute": self.attribute,
            "expected": self.expected,
            "got": self.got,
        }


@dataclass
class Report:
    files: int = 0
    ok: int = 0
    mismatched: int = 0
    lines: int = 0
    nodes: int = 0
    bytes: int = 0
    record_bytes: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    max_mismatches: int = 20

    def add_mismatches(self, found: list[Mismatch]) -> None:
        room = self.max_mismatches - len(self.mismatches)
        if room > 0:
            self.mismatches.extend(found[:room])

    def as_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for s in self.skipped:
            key = s["reason"].split(":", 1)[0]
            reasons[key] = reasons.get(key, 0) + 1
        return {
            "files": self.files,
            "ok": self.ok,
            "mismatched": self.mismatched,
            "skipped": self.skipped,
            "skipped_by_reason": reasons,
            "lines": self.lines,
            "nodes": self.nodes,
            "source_bytes": self.bytes,
            "record_bytes": self.record_bytes,
            "mismatches": [m.as_dict() for m in self.mismatches],
        }


CHUNK = 1 << 14  # nodes compared at a time: memory stays flat whatever the tree's size
SEXP_NODES = 1 << 16  # S-expressions are compared per subtree of at most this many nodes


def reference(tree: ts.Tree, chunk: int | None = None) -> Iterator[dict[str, list[Any]]]:
    """Every compared attribute of every node, read from tree-sitter's own cursor walk, in
    preorder chunks of `chunk` (default CHUNK) nodes."""
    chunk = chunk or CHUNK
    c = tree.walk()
    while True:
        out: dict[str, list[Any]] = {a: [] for a in ATTRIBUTES}
        (a_type, a_kind, a_field, a_named, a_extra, a_missing, a_error, a_herr, a_sb, a_eb,
         a_sr, a_sc, a_er, a_ec, a_cc) = (out[a].append for a in ATTRIBUTES)  # fmt: skip
        for _ in range(chunk):
            n = c.node
            a_type(n.type)
            a_kind(n.kind_id)
            a_field(c.field_name)
            a_named(n.is_named)
            a_extra(n.is_extra)
            a_missing(n.is_missing)
            a_error(n.is_error)
            a_herr(n.has_error)
            a_sb(n.start_byte)
            a_eb(n.end_byte)
            sp, ep = n.start_point, n.end_point
            a_sr(sp[0])
            a_sc(sp[1])
            a_er(ep[0])
            a_ec(ep[1])
            a_cc(n.child_count)
            if c.goto_first_child():
                continue
            while not c.goto_next_sibling():
                if not c.goto_parent():
                    yield out
                    return
        yield out


def ours(tree: Tree, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """The same attributes from a decoded tree, as arrays, for nodes start:stop."""
    cols = tree.columns
    sl = slice(start, len(tree) if stop is None else stop)
    tables = languages.tables(tree.language_name)
    names = np.array(tables.names, dtype=object)
    fields = np.array(tree._field_names, dtype=object)
    flags, kind, first, last = cols.flags[sl], cols.kind[sl], cols.start[sl], cols.end[sl]
    sr, sc = tree.points(first)
    er, ec = tree.points(last)
    field_names = fields[cols.field[sl]]
    if start == 0 and field_names.size:
        field_names[0] = None  # tree-sitter's cursor reports no field at its root
    return {
        "type": names[tables.name_index(kind)],
        "kind_id": kind.astype(np.int64),
        "field_name": field_names,
        "is_named": (flags & NAMED) != 0,
        "is_extra": (flags & EXTRA) != 0,
        "is_missing": (flags & MISSING) != 0,
        "is_error": kind == ERROR_KIND,
        "has_error": (flags & HAS_ERROR) != 0,
        "start_byte": first,
        "end_byte": last,
        "start_row": sr,
        "start_column": sc,
        "end_row": er,
        "end_column": ec,
        "child_count": tree._structure().child_count[sl],
    }


def compare_trees(path: str, expected: ts.Tree, got: Tree, limit: int = 20) -> list[Mismatch]:
    """Node-by-node comparison in preorder (CHUNK nodes at a time) plus the S-expressions
    (of the root, or of its subtrees of at most SEXP_NODES nodes); the first mismatches."""
    found: list[Mismatch] = []
    n_got, n_ref = len(got), 0
    for ref in reference(expected):
        a = n_ref
        n_ref += len(ref["kind_id"])
        if a >= n_got:
            continue
        mine = ours(got, a, min(n_ref, n_got))
        m = len(mine["kind_id"])
        for attr in ATTRIBUTES:
            exp = np.array(ref[attr][:m], dtype=object if attr in ("type", "field_name")
                           else None)  # fmt: skip
            bad = np.flatnonzero(exp != mine[attr])
            for i in bad[:limit].tolist():
                found.append(Mismatch(path, a + i, attr, _plain(exp[i]), _plain(mine[attr][i])))
        if len(found) >= limit:
            break
    if n_ref != n_got and len(found) < limit:
        found.append(Mismatch(path, min(n_ref, n_got), "node_count", n_ref, n_got))
    if not found:
        found.extend(_sexp_mismatches(path, expected.root_node, got.root_node, limit))
    return found[:limit]


def _sexp_mismatches(path: str, expected: ts.Node, got, limit: int) -> list[Mismatch]:
    """str() of both nodes; a node of more than SEXP_NODES descendants is compared through
    its children instead (its own attributes were compared node by node)."""
    todo, found = [(expected, got)], []
    while todo and len(found) < limit:
        e, g = todo.pop()
        if e.descendant_count > SEXP_NODES and e.child_count:
            todo.extend(zip(reversed(e.children), reversed(g.children), strict=False))
            continue
        exp_s, got_s = str(e), str(g)
        if exp_s != got_s:
            at = next((k for k, (a, b) in enumerate(zip(exp_s, got_s, strict=False))
                       if a != b), min(len(exp_s), len(got_s)))  # fmt: skip
            found.append(Mismatch(path, -1, "str(root)", exp_s[at : at + 80], got_s[at : at + 80]))
    return found


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


_ZSTD_C = zstandard.ZstdCompressor(level=3)
_ZSTD_D = zstandard.ZstdDecompressor()


def verify_stored(path: str, language: str, record: bytes, source: bytes, report: Report) -> None:
    """Compare a stored record with a fresh tree-sitter parse of its stored source."""
    _check(path, parse(source, language), record, source, source, report)


def _check(path: str, expected: ts.Tree, record: bytes, source: bytes, stored_source: bytes,
           report: Report) -> None:  # fmt: skip
    """Decode `record` over `stored_source` as a store's cold open does (`tree_from_record`),
    compare with `expected`, count the outcome."""
    report.files += 1
    try:
        tree = tree_from_record(record)[0]
        tree._src = stored_source
    except CorruptRecord as exc:
        report.mismatched += 1
        report.add_mismatches([Mismatch(path, -1, "record", "decodable", str(exc))])
        return
    report.lines += count_lines(source)
    report.nodes += len(tree)
    report.bytes += len(source)
    report.record_bytes += len(record)
    found = compare_trees(path, expected, tree)
    if stored_source != source:
        found.append(Mismatch(path, -1, "source", len(source), len(stored_source)))
    if found:
        report.mismatched += 1
        report.add_mismatches(found)
    else:
        report.ok += 1


def verify_store(store, progress: Callable[[str], None] | None = None) -> Report:
    """Every stored blob: frame CRCs, decode, and comparison with a fresh parse."""
    report = Report()
    for blob in store.catalog.blobs():
        paths = store.catalog.paths_of_blob(blob.id)
        name = paths[0] if paths else f"<blob {blob.id}>"
        if progress:
            progress(name)
        if blob.size >= LARGE_FILE_BYTES:  # two trees of a large file: first hand back the heap
            release_free_memory()  # earlier files freed (glibc would keep it)
        try:
            record, source = store.read_blob(blob, name)
        except CorruptRecord as exc:
            report.files += 1
            report.mismatched += 1
            report.add_mismatches([Mismatch(name, -1, "frame", "intact", str(exc))])
            continue
        verify_stored(name, blob.language, record, source, report)
    return report


def verify_source(path: str, source: bytes, language: str, report: Report) -> None:
    reason = check_source(source)
    if reason:
        report.skipped.append({"path": path, "reason": reason})
        return
    ts_tree = parse(source, language)
    if ts_tree is None:
        report.skipped.append({"path": path, "reason": "tree-sitter: parse failed"})
        return
    try:
        record = encode(parse_extract(source, language), source)
    except EncodeError as exc:
        report.skipped.append({"path": path, "reason": f"unencodable: {exc}"})
        return
    stored_source = _ZSTD_D.decompress(_ZSTD_C.compress(source))
    _check(path, ts_tree, record, source, stored_source, report)


def verify_files(
    files: Iterable[tuple[Path, str]],
    report: Report,
    progress: Callable[[Path], None] | None = None,
) -> Report:
    """Round-trip each (path, language); unreadable files are skipped with the reason."""
    for path, language in files:
        if progress:
            progress(path)
        try:
            source = path.read_bytes()
        except OSError as exc:
            report.skipped.append({"path": str(path), "reason": f"unreadable: {exc}"})
            continue
        verify_source(str(path), source, language, report)
    return report
