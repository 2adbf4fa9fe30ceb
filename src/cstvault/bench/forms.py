"""The in-RAM rows of `bench phases`: the same corpus held in successively leaner forms.

Each form holds every file and answers `tree(i)` (a navigable tree, built on demand where the
form is not a tree), `columns(i)` and `source(i)` (what the quality check compares with a fresh
tree-sitter parse) and `buffers()` (bytes per named buffer). Per-file payloads are built in
worker processes (parse included); the row process only holds them.

- Baseline: py-tree-sitter `Tree` objects (each keeps its source bytes).
- Packed (phase 1): numpy columns -- u16 kinds, u8 flag bits, u16 fields -- with LEB128
  sizes and positions, and every identifier occurrence as a u32 id into one interning table.
- Pruned (phase 2): content-deduplicated, and nothing stored that can be derived: NAMED /
  HAS_CHILDREN / HAS_FIELD flags, grammar ids equal to kind ids, token lengths the kind
  predicts, internal spans (from their first and last leaf), occurrence ids (kept as each
  file's set of symbol ids).
- Bytecode (phase 3): the record format of `cstvault.codec` in RAM, sources deduplicated.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import languages
from ..codec import decode, encode, varint
from ..columns import HAS_CHILDREN, HAS_FIELD, NAMED, Columns
from ..extract import extract, parse, parse_extract
from ..symbols import MAX_SYMBOL_BYTES, pack_ids
from ..tree import Tree

U16, U8 = np.uint16, np.uint8


def occurrences(cols: Columns, source: bytes) -> tuple[list[bytes], np.ndarray]:
    """Distinct identifier texts of a tree and, per identifier leaf, its index among them."""
    table = languages.tables(cols.language).identifier
    at = np.flatnonzero(((cols.flags & HAS_CHILDREN) == 0) & table[cols.kind])
    s, e = cols.start[at], cols.end[at]
    keep = (e > s) & (e - s <= MAX_SYMBOL_BYTES)
    texts = [source[a:b] for a, b in zip(s[keep].tolist(), e[keep].tolist(), strict=True)]
    distinct = sorted(set(texts))
    where = {t: k for k, t in enumerate(distinct)}
    return distinct, np.array([where[t] for t in texts], dtype=np.uint32)


def _read(task: tuple[str, str]) -> tuple[bytes, Columns]:
    path, language = task
    source = Path(path).read_bytes()
    return source, parse_extract(source, language)


# ---- phase 1: packed columns -------------------------------------------------------------
@dataclass
class Packed:
    language: str
    n: int
    kind: np.ndarray
    grammar: np.ndarray
    flags: np.ndarray
    field: np.ndarray
    size: bytes  # LEB128 of size - 1
    start: bytes  # LEB128 of zigzag start deltas in preorder
    length: bytes  # LEB128 of end - start
    unexpected: np.ndarray
    phantoms: tuple
    symbols: np.ndarray  # u32 global id per identifier occurrence (local ids until interned)


def pack(task: tuple[str, str]) -> tuple[bytes, Packed, list[bytes]]:
    source, c = _read(task)
    distinct, local = occurrences(c, source)
    p = Packed(
        c.language, len(c), c.kind.astype(U16), c.grammar.astype(U16), c.flags.astype(U8),
        c.field.astype(U16), varint.encode(c.size - 1),
        varint.encode(varint.zigzag(np.diff(c.start, prepend=0))), varint.encode(c.end - c.start),
        c.unexpected.copy(), c.phantoms, local,
    )  # fmt: skip
    return source, p, distinct


def unpack(p: Packed) -> Columns:
    size = varint.decode(p.size, p.n) + 1
    start = np.cumsum(varint.unzigzag(varint.decode(p.start, p.n)))
    end = start + varint.decode(p.length, p.n)
    return Columns(p.language, p.kind, p.grammar, p.flags, p.field, size, start, end,
                   p.unexpected, p.phantoms)  # fmt: skip


# ---- phase 2: deduplicated and pruned ----------------------------------------------------
def _sparse(mask: np.ndarray) -> tuple[np.ndarray, bytes]:
    at = np.flatnonzero(mask)
    return at, varint.encode(np.diff(at, prepend=0))


def _at(data: bytes, count: int) -> np.ndarray:
    return np.cumsum(varint.decode(data, count))


@dataclass
class Pruned:
    language: str
    n: int
    kind: np.ndarray  # u16, the only per-node column left
    size: bytes  # LEB128 of size - 1
    gram: tuple[int, bytes, np.ndarray]  # grammar ids that differ from the kind id
    flags: tuple[int, bytes, np.ndarray]  # flag bits the kind, size and field do not imply
    field: tuple[int, bytes, np.ndarray]
    gaps: bytes  # leaves: zigzag gap from the previous leaf's end
    lengths: bytes  # leaves whose kind predicts no length
    odd_len: tuple[int, bytes, bytes]  # leaves whose length differs from the prediction
    spans: tuple[int, bytes, bytes, bytes]  # internal nodes not spanning first..last leaf
    unexpected: np.ndarray
    phantoms: tuple
    symbols: tuple[int, bytes]  # the file's symbol-id set, LEB128 deltas


def _derived_flags(kind: np.ndarray, leaf: np.ndarray, field: np.ndarray, lang: str):
    named = languages.tables(lang).named[kind]
    return (np.where(named, NAMED, 0) | np.where(leaf, 0, HAS_CHILDREN)
            | np.where(field != 0, HAS_FIELD, 0)).astype(U8)  # fmt: skip


def _leaf_layout(kind: np.ndarray, size: np.ndarray, lang: str):
    leaf = size == 1
    li = np.flatnonzero(leaf)
    pred = languages.tables(lang).token_len[kind[li]].astype(np.int64)
    ii = np.flatnonzero(~leaf)
    first = li[np.searchsorted(li, ii)]
    return leaf, li, pred, ii, first, ii + size[ii] - 1


def prune(task: tuple[str, str]) -> tuple[bytes, Pruned, list[bytes]]:
    source, c = _read(task)
    lang, kind, size = c.language, c.kind.astype(U16), c.size
    leaf, li, pred, ii, first, last = _leaf_layout(kind, size, lang)
    g_at, g_idx = _sparse(c.grammar != kind)
    resid = c.flags.astype(U8) ^ _derived_flags(kind, leaf, c.field, lang)
    f_at, f_idx = _sparse(resid != 0)
    d_at, d_idx = _sparse(c.field != 0)
    ls, le = c.start[li], c.end[li]
    length = le - ls
    gaps = ls - np.concatenate(([0], le[:-1]))
    odd = (pred >= 0) & (pred != length)
    o_at, o_idx = _sparse(odd)
    ds, de = c.start[first], c.end[last]
    bad = (ds != c.start[ii]) | (de != c.end[ii])
    s_at, s_idx = _sparse(bad)
    p = Pruned(
        lang, len(c), kind, varint.encode(size - 1),
        (g_at.size, g_idx, c.grammar[g_at].astype(U16)),
        (f_at.size, f_idx, resid[f_at]),
        (d_at.size, d_idx, c.field[d_at].astype(U16)),
        varint.encode(varint.zigzag(gaps)), varint.encode(length[pred < 0]),
        (o_at.size, o_idx, varint.encode(length[o_at])),
        (s_at.size, s_idx, varint.encode(varint.zigzag(c.start[ii[bad]] - ds[bad])),
         varint.encode(varint.zigzag(c.end[ii[bad]] - de[bad]))),
        c.unexpected.copy(), c.phantoms, (0, b""),
    )  # fmt: skip
    distinct, _ = occurrences(c, source)
    return source, p, distinct


def unprune(p: Pruned) -> Columns:
    lang, n, kind = p.language, p.n, p.kind
    size = varint.decode(p.size, n) + 1
    leaf, li, pred, ii, first, last = _leaf_layout(kind, size, lang)
    grammar = kind.copy()
    grammar[_at(p.gram[1], p.gram[0])] = p.gram[2]
    field = np.zeros(n, dtype=U16)
    field[_at(p.field[1], p.field[0])] = p.field[2]
    flags = _derived_flags(kind, leaf, field, lang)
    flags[_at(p.flags[1], p.flags[0])] ^= p.flags[2]
    length = pred.copy()
    unknown = pred < 0
    length[unknown] = varint.decode(p.lengths, int(unknown.sum()))
    length[_at(p.odd_len[1], p.odd_len[0])] = varint.decode(p.odd_len[2], p.odd_len[0])
    gaps = varint.unzigzag(varint.decode(p.gaps, li.size))
    ls = np.cumsum(gaps) + np.cumsum(length) - length
    start = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    start[li], end[li] = ls, ls + length
    start[ii], end[ii] = start[first], end[last]
    count, idx, ds, de = p.spans
    bad = ii[_at(idx, count)]
    start[bad] += varint.unzigzag(varint.decode(ds, count))
    end[bad] += varint.unzigzag(varint.decode(de, count))
    return Columns(lang, kind, grammar, flags, field, size, start, end, p.unexpected, p.phantoms)


# ---- the forms ---------------------------------------------------------------------------
class Baseline:
    """py-tree-sitter trees and their sources, as a tool that keeps every tree would."""

    name = "Baseline"

    def __init__(self, files: list[tuple[str, str]], jobs: int = 1):
        self.files = files
        self.sources = [Path(path).read_bytes() for path, _ in files]
        self.trees = [parse(src, lang) for src, (_, lang) in zip(self.sources, files, strict=True)]

    def tree(self, i: int):
        return self.trees[i]

    def columns(self, i: int) -> Columns:
        return extract(self.trees[i], self.files[i][1])

    def source(self, i: int) -> bytes:
        return self.sources[i]

    def buffers(self) -> dict[str, int]:
        return {"sources": sum(map(len, self.sources))}


class _Interned:
    """Shared by the column forms: one global table of identifier texts."""

    def __init__(self) -> None:
        self.table: dict[bytes, int] = {}

    def intern(self, distinct: list[bytes]) -> np.ndarray:
        table = self.table
        return np.array([table.setdefault(t, len(table)) for t in distinct], dtype=np.uint32)

    def table_bytes(self) -> int:
        return sum(map(len, self.table))


class PackedForm(_Interned):
    name = "Phase 1"

    def __init__(self, files: list[tuple[str, str]], jobs: int = 1):
        super().__init__()
        self.files = files
        self.sources: list[bytes] = []
        self.items: list[Packed] = []
        with ProcessPoolExecutor(jobs) as pool:
            for source, p, distinct in pool.map(pack, files, chunksize=16):
                p.symbols = self.intern(distinct)[p.symbols] if distinct else p.symbols
                self.sources.append(source)
                self.items.append(p)

    def columns(self, i: int) -> Columns:
        return unpack(self.items[i])

    def tree(self, i: int) -> Tree:
        return Tree(self.columns(i), self.sources[i])

    def source(self, i: int) -> bytes:
        return self.sources[i]

    def buffers(self) -> dict[str, int]:
        it = self.items
        return {
            "kinds": sum(p.kind.nbytes + p.grammar.nbytes for p in it),
            "flags": sum(p.flags.nbytes for p in it),
            "fields": sum(p.field.nbytes for p in it),
            "sizes": sum(len(p.size) for p in it),
            "positions": sum(len(p.start) + len(p.length) for p in it),
            "symbol_ids": sum(p.symbols.nbytes for p in it),
            "symbol_table": self.table_bytes(),
            "sources": sum(map(len, self.sources)),
        }


class _Deduplicated(_Interned):
    """A form holding each distinct (language, source) once; `entry` maps files to them."""

    def __init__(self, files: list[tuple[str, str]]):
        super().__init__()
        self.files = files
        self.entry = np.empty(len(files), dtype=np.int32)
        self.sources: list[bytes] = []
        self._seen: dict[bytes, int] = {}

    def _first(self, i: int, language: str, source: bytes) -> bool:
        """Map file i to its content's entry; True when the content is new."""
        key = hashlib.sha256(language.encode() + b"\0" + source).digest()
        k = self.entry[i] = self._seen.setdefault(key, len(self.sources))
        if k < len(self.sources):
            return False
        self.sources.append(source)
        return True

    def columns(self, i: int) -> Columns:
        raise NotImplementedError

    def tree(self, i: int) -> Tree:
        return Tree(self.columns(i), self.source(i))

    def source(self, i: int) -> bytes:
        return self.sources[self.entry[i]]


class PrunedForm(_Deduplicated):
    name = "Phase 2"

    def __init__(self, files: list[tuple[str, str]], jobs: int = 1):
        super().__init__(files)
        self.items: list[Pruned] = []
        with ProcessPoolExecutor(jobs) as pool:
            for i, (source, p, distinct) in enumerate(pool.map(prune, files, chunksize=16)):
                if self._first(i, p.language, source):
                    ids = self.intern(distinct)
                    p.symbols = (ids.size, pack_ids(ids))
                    self.items.append(p)

    def columns(self, i: int) -> Columns:
        return unprune(self.items[self.entry[i]])

    def buffers(self) -> dict[str, int]:
        it = self.items

        def sparse(p: Pruned) -> int:
            return (len(p.gram[1]) + p.gram[2].nbytes + len(p.flags[1]) + p.flags[2].nbytes
                    + len(p.field[1]) + p.field[2].nbytes)  # fmt: skip

        return {
            "kinds": sum(p.kind.nbytes for p in it),
            "sizes": sum(len(p.size) for p in it),
            "sparse_grammar_flags_fields": sum(sparse(p) for p in it),
            "positions": sum(len(p.gaps) + len(p.lengths) + len(p.odd_len[1]) + len(p.odd_len[2])
                             + sum(map(len, p.spans[1:])) for p in it),  # fmt: skip
            "symbol_ids": sum(len(p.symbols[1]) for p in it),
            "symbol_table": self.table_bytes(),
            "sources": sum(map(len, self.sources)),
            "file_map": self.entry.nbytes,
        }


def _record(task: tuple[str, str]) -> tuple[bytes, bytes, str, list[bytes]]:
    source, c = _read(task)
    distinct, _ = occurrences(c, source)
    return source, encode(c, source), c.language, distinct


class BytecodeForm(_Deduplicated):
    name = "Phase 3"

    def __init__(self, files: list[tuple[str, str]], jobs: int = 1):
        super().__init__(files)
        self.records: list[bytes] = []
        self.symbols: list[bytes] = []
        with ProcessPoolExecutor(jobs) as pool:
            done = pool.map(_record, files, chunksize=16)
            for i, (source, record, lang, distinct) in enumerate(done):
                if self._first(i, lang, source):
                    self.records.append(record)
                    self.symbols.append(pack_ids(self.intern(distinct)))

    def columns(self, i: int) -> Columns:
        return decode(self.records[self.entry[i]])

    def buffers(self) -> dict[str, int]:
        return {
            "records": sum(map(len, self.records)),
            "symbol_ids": sum(map(len, self.symbols)),
            "symbol_table": self.table_bytes(),
            "sources": sum(map(len, self.sources)),
            "file_map": self.entry.nbytes,
        }


FORMS = {f.name: f for f in (Baseline, PackedForm, PrunedForm, BytecodeForm)}
