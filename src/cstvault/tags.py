"""Tags: definitions and references, as the grammar wheels' tags queries define them.

The convention is tree-sitter's tags: in each match, the `@name` capture is the tag's name
and a `@definition.KIND` / `@reference.KIND` capture its node and kind. The indexer runs a
language's tags query on the tree it parses anyway (`extract.parse_extract_matches`) and
keeps each blob's definitions, packed (`pack_definitions`): per definition its kind, name
and node byte ranges as LEB128 deltas and one byte of the name's CRC32C (a quick filter
for `Store.definitions`, which confirms each hit against the stored source).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

from . import _native
from .checksum import crc32c
from .codec import varint
from .codec.errors import CorruptRecord
from .grammar_queries import query_text
from .query import Query, QueryCursor


class Tag(NamedTuple):
    kind: str  # e.g. definition.function, reference.call
    name: bytes
    start_byte: int  # the tagged node
    end_byte: int
    name_start: int
    name_end: int

    @property
    def is_definition(self) -> bool:
        return self.kind.startswith("definition.")


@cache
def tags_query(language: str) -> Query | None:
    """The language's tags query, compiled once per process (None: the grammar ships none)."""
    text = query_text(language, "tags")
    return Query(language, text) if text else None


def tags_of(matches: list[tuple[int, dict]]) -> list[Tag]:
    """The tags among a tags query's matches (`QueryCursor.source_matches` or
    `record_matches`), in source order."""
    out: set[Tag] = set()
    for _, caps in matches:
        names = caps.get("name")
        if not names:
            continue
        for cap, nodes in caps.items():
            if cap.startswith(("definition.", "reference.")):
                n, t = names[0], nodes[0]
                out.add(Tag(cap, n.text, t.start_byte, t.end_byte, n.start_byte, n.end_byte))
    return sorted(out, key=lambda t: (t.name_start, t.start_byte, t.kind))


def name_hash(name: bytes) -> int:
    return crc32c(name) & 0xFF


_HEAD = struct.Struct("<IH")  # definitions, length of the kinds list
_DEF = "definition."  # every kept kind's prefix, not stored


def pack_definitions(tags: list[Tag]) -> bytes:
    """A blob's definitions as stored: count and kinds, one name-hash byte each, then five
    LEB128 columns (kind, name start delta, name length, node start - name start zigzag,
    node length), interleaved."""
    defs = [t for t in tags if t.is_definition]
    if not defs:
        return b""
    kinds = sorted({t.kind for t in defs})
    index = {k: i for i, k in enumerate(kinds)}
    head = "\0".join(k.removeprefix(_DEF) for k in kinds).encode()
    starts = np.array([t.name_start for t in defs], dtype=np.int64)
    cols = np.stack([
        np.array([index[t.kind] for t in defs], dtype=np.int64),
        np.diff(starts, prepend=0),
        np.array([t.name_end - t.name_start for t in defs], dtype=np.int64),
        varint.zigzag(np.array([t.start_byte - t.name_start for t in defs], dtype=np.int64)),
        np.array([t.end_byte - t.start_byte for t in defs], dtype=np.int64),
    ], axis=1).ravel()  # fmt: skip
    hashes = bytes(name_hash(t.name) for t in defs)
    return _HEAD.pack(len(defs), len(head)) + head + hashes + varint.encode_fast(cols)


class Definition(NamedTuple):
    kind: str
    start_byte: int
    end_byte: int
    name_start: int
    name_end: int
    name_hash: int


def unpack_definitions(data: bytes) -> list[Definition]:
    if not data:
        return []
    try:
        n, hlen = _HEAD.unpack_from(data)
        at = _HEAD.size
        kinds = [_DEF + k for k in data[at : at + hlen].decode().split("\0")]
        hashes = data[at + hlen : at + hlen + n]
        rows = _native.definition_rows(data, n, at + hlen + n)
        return [Definition(kinds[k], s, e, ns, ne, h)
                for (k, s, e, ns, ne), h in zip(rows, hashes, strict=True)]  # fmt: skip
    except _native.CorruptRecord as exc:
        raise CorruptRecord(f"definitions damaged: {exc}") from None
    except (struct.error, IndexError, ValueError) as exc:  # ValueError: UnicodeDecodeError too
        raise CorruptRecord(f"definitions damaged: {exc}") from None


class Located(NamedTuple):
    """A tag in a stored file, with its points (0-based rows, byte columns)."""

    path: str
    kind: str
    name: str
    start_point: tuple[int, int]
    end_point: tuple[int, int]
    name_point: tuple[int, int]
    start_byte: int
    end_byte: int


def _located(path: str, source: bytes, items) -> list[Located]:
    if not items:
        return []
    pts = _native.points(source, [b for t in items for b in (t.start_byte, t.end_byte,
                                                              t.name_start)])  # fmt: skip
    return [Located(path, t.kind, source[t.name_start : t.name_end].decode("utf-8", "replace"),
                    pts[3 * k], pts[3 * k + 1], pts[3 * k + 2], t.start_byte, t.end_byte)
            for k, t in enumerate(items)]  # fmt: skip


def file_definitions(store, path: str) -> list[Located]:
    """A stored file's definitions, from the catalog (nothing parsed)."""
    blob, _ = store._located(path)
    data = store.catalog.definitions_of([blob.id]).get(blob.id, b"")
    defs = unpack_definitions(data)
    return _located(path, store.source(path), defs) if defs else []


def file_tags(store, path: str) -> list[Located]:
    """A stored file's definitions and references: its tags query run on its stored tree."""
    blob, _ = store._located(path)
    q = tags_query(blob.language)
    if q is None:
        return []
    from .search import file_matches

    source, matches = file_matches(store, q, path)
    return _located(path, source, tags_of([(m.pattern_index, m.captures) for m in matches]))


def source_tags(query: Query, source: bytes) -> list[Tag]:
    """A tags query's tags on a source (parsed for it)."""
    return tags_of(QueryCursor(query).source_matches(source))


def definitions(store, name: str | bytes, kind: str | None = None) -> list[Located]:
    """Where `name` is defined, across the store: the blobs whose symbols hold it, their
    stored definitions filtered by the name's hash byte, each hit confirmed against the
    stored source."""
    text = name.encode() if isinstance(name, str) else name
    h = name_hash(text)
    blobs = store.catalog.blobs_with_symbol(text)
    rows = store.catalog.definitions_of(blobs)
    files = store.catalog.files_of_blobs(sorted(rows))
    out: list[Located] = []
    for blob, data in rows.items():
        hits = [d for d in unpack_definitions(data) if d.name_hash == h
                and (kind is None or d.kind == kind or d.kind == f"definition.{kind}")]  # fmt: skip
        if not hits or not files.get(blob):
            continue
        source = store.source(files[blob][0])
        hits = [d for d in hits if source[d.name_start : d.name_end] == text]
        for path in files[blob]:
            out += _located(path, source, hits)
    return sorted(out)


def references(store, name: str | bytes) -> list[Located]:
    """Where `name` is referenced (calls, uses, as the tags queries define them): the tags
    query run on every file whose symbols hold it."""
    text = name.encode() if isinstance(name, str) else name
    shown = text.decode("utf-8", "replace")
    out: list[Located] = []
    for path in store.files_with_symbol(text):
        out += [t for t in file_tags(store, path)
                if t.kind.startswith("reference.") and t.name == shown]  # fmt: skip
    return sorted(out)


def outline(items: list[Located]) -> list[tuple[int, Located]]:
    """Definitions nested by containment: (depth, definition) in source order."""
    out: list[tuple[int, Located]] = []
    stack: list[Located] = []
    for d in sorted(items, key=lambda d: (d.start_byte, -d.end_byte)):
        while stack and d.start_byte >= stack[-1].end_byte:
            stack.pop()
        out.append((len(stack), d))
        stack.append(d)
    return out
