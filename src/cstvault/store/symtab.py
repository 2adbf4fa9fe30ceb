"""The global symbol table: identifier texts interned once per store, with their postings.

Sorted runs merged into sorted blocks, like an LSM tree, with nothing held in memory:
- `symbol_pending`: each indexing batch (or live group commit) writes its texts, sorted,
  with their blobs, as one run of blocks (ids not yet assigned); no lookup at all;
- `symbol_blocks`: the compacted symbols, sorted runs of BLOCK texts, each one zstd frame
  holding LEB128 text lengths, ids and posting lengths, the postings and the texts, plus a
  CRC32C, found by its first text.
`compact` (end of an index run unless deferred to the freeze that follows, checkpoint, gc)
merges the runs with the blocks in one streaming pass (a k-way merge, one block per source in
memory), giving each text met for the first time the next id; past MAX_RUNS runs, an `add`
first merges the runs into one (not the blocks). Ids are dense from 1 and never change.
Postings are blob ids as LEB128 deltas from 0. Blob ids are never reused (AUTOINCREMENT), so
postings of dropped blobs are harmless: paths are always resolved through the files table.
Meta keeps the count of symbols, of their text bytes and of (blob, symbol) references.

Stores written before runs existed may hold a recent layer of another form (`symbol_texts`,
`symbols`, `symbol_runs`: texts interned per batch with ids, and (id, blob) runs); it is
read by lookups and folded by `compact`, never written.
"""

from __future__ import annotations

import heapq
import sqlite3
import struct
from bisect import bisect_right
from collections.abc import Iterator
from itertools import groupby, repeat
from operator import itemgetter
from sqlite3 import Connection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from .._numpy import np
import zstandard

from .. import _native
from ..checksum import crc32c
from ..codec import CorruptRecord, varint

BLOCK = 128
LEVEL = 3  # of every sealed frame here: blocks are rewritten by compactions, level 19 is
# far slower for a few % less
_HEAD = struct.Struct("<IIIII")  # entries, bytes of: lengths, ids, posting lengths, postings
_RUN = struct.Struct("<II")  # pairs, bytes of the id deltas
_TEXTS = struct.Struct("<IQI")  # texts, id of the first, bytes of the lengths
MAX_RUNS = 256  # pending runs a lookup may search before they are merged into one
FLUSH = 16 * BLOCK  # merged entries packed into blocks at a time

SCHEMA = """
CREATE TABLE IF NOT EXISTS symbol_texts(     -- (older stores) texts a batch interned
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS symbols(          -- (older stores) block texts used again
    text BLOB PRIMARY KEY,
    id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS symbol_runs(      -- (older stores) a batch's (id, blob) pairs
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS symbol_blocks(    -- compacted, sorted runs of symbols (one zstd frame)
    id INTEGER PRIMARY KEY,
    first BLOB NOT NULL,                     -- the block's smallest text
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS symbol_blocks_first ON symbol_blocks(first);
"""
# made by a store's first `add` (a store created before runs existed lacks it)
PENDING = ("""CREATE TABLE IF NOT EXISTS symbol_pending(   -- runs not merged yet: blocks, ids 0
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    first BLOB NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
)""", "CREATE INDEX IF NOT EXISTS symbol_pending_run ON symbol_pending(run, first)")


def pack_block(texts: list[bytes], ids: list[int], streams: list[bytes]) -> bytes:
    """One block, spelled out: the reference `pack_blocks` is tested against."""
    lens = varint.encode(np.array([len(t) for t in texts], dtype=np.int64))
    idb = varint.encode(np.array(ids, dtype=np.int64))
    plens = varint.encode(np.array([len(s) for s in streams], dtype=np.int64))
    post = b"".join(streams)
    body = b"".join((_HEAD.pack(len(texts), len(lens), len(idb), len(plens), len(post)),
                     lens, idb, plens, post, *texts))  # fmt: skip
    return _seal(body, LEVEL)


def pack_blocks(texts: list[bytes], ids, streams: list[bytes]) -> list[tuple[bytes, int, bytes]]:
    """`pack_block` of every run of BLOCK consecutive entries, as (first text, count, data),
    with one vectorised LEB128 encode per column instead of three per block."""
    n = len(texts)
    if n == 0:
        return []
    cuts = np.arange(0, n, BLOCK)
    counts = np.minimum(cuts + BLOCK, n) - cuts
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    plens = np.fromiter(map(len, streams), dtype=np.int64, count=n)
    ids = np.asarray(ids, dtype=np.int64)
    cols = [varint.encode_groups(v, counts) for v in (lens, ids, plens)]
    posts = varint.pieces(b"".join(streams), np.add.reduceat(plens, cuts))
    words = varint.pieces(b"".join(texts), np.add.reduceat(lens, cuts))
    out = []
    for k, (a, m) in enumerate(zip(cuts.tolist(), counts.tolist(), strict=True)):
        lb, ib, pb, post = cols[0][k], cols[1][k], cols[2][k], posts[k]
        head = _HEAD.pack(m, len(lb), len(ib), len(pb), len(post))
        out.append((texts[a], m, _seal(b"".join((head, lb, ib, pb, post, words[k])), LEVEL)))
    return out


_COMPRESSORS: dict[int, zstandard.ZstdCompressor] = {}


def _seal(body: bytes, level: int) -> bytes:
    """`body` and its CRC32C as one zstd frame."""
    c = _COMPRESSORS.get(level)
    if c is None:
        c = _COMPRESSORS[level] = zstandard.ZstdCompressor(level=level)
    return c.compress(body + struct.pack("<I", crc32c(body)))


def _unseal(data: bytes, what: str, head: int) -> bytes:
    """The body and CRC32C of a sealed frame, checked; CorruptRecord naming `what` if not."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptRecord(f"{what} unreadable: {exc}") from exc
    if len(raw) < head + 4 or crc32c(raw[:-4]) != struct.unpack_from(
        "<I", raw, len(raw) - 4
    )[0]:  # fmt: skip
        raise CorruptRecord(f"{what} checksum (CRC32C) mismatch")
    return raw


class Block:
    """A decoded block: find a text by binary search over its offsets, no list of texts."""

    def __init__(self, data: bytes):
        raw = _unseal(data, "symbol block", _HEAD.size)
        n, ln, li, lp, lpost = _HEAD.unpack_from(raw, 0)
        at = _HEAD.size
        self.n = n
        lens = varint.decode(raw[at : at + ln], n)
        self.ids = varint.decode(raw[at + ln : at + ln + li], n)
        plens = varint.decode(raw[at + ln + li : at + ln + li + lp], n)
        at += ln + li + lp
        self.post_off = np.concatenate(([at], at + np.cumsum(plens))).tolist()
        at += lpost
        self.text_off = np.concatenate(([at], at + np.cumsum(lens))).tolist()
        self.raw = raw

    def text(self, k: int) -> bytes:
        return self.raw[self.text_off[k] : self.text_off[k + 1]]

    def stream(self, k: int) -> bytes:
        return self.raw[self.post_off[k] : self.post_off[k + 1]]

    def find(self, text: bytes) -> int | None:
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.text(mid) < text:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.n and self.text(lo) == text else None

    def entries(self) -> list[tuple[bytes, int, bytes]]:
        ids = self.ids.tolist()
        return [(self.text(k), ids[k], self.stream(k)) for k in range(self.n)]


def _blobs(stream: bytes) -> np.ndarray:
    if not stream:
        return np.zeros(0, dtype=np.int64)
    b = np.frombuffer(stream, dtype=np.uint8)
    return np.cumsum(varint.decode(b, int(np.count_nonzero(b < 0x80))))


def _stream(blobs: np.ndarray) -> bytes:
    return varint.encode_fast(np.diff(blobs, prepend=0))


def _streams(sids: np.ndarray, blobs: np.ndarray) -> tuple[list[int], list[bytes]]:
    """Postings sorted by (id, blob) -> each id and its blobs as LEB128 deltas (from 0),
    with one vectorised encode."""
    if sids.size == 0:
        return [], []
    starts = np.flatnonzero(np.r_[True, sids[1:] != sids[:-1]])
    prev = np.empty_like(blobs)
    prev[1:] = blobs[:-1]
    prev[starts] = 0
    deltas = blobs - prev
    counts = np.diff(np.r_[starts, sids.size])
    return sids[starts].tolist(), varint.encode_groups(deltas, counts)


def pack_run(sids: np.ndarray, blobs: np.ndarray) -> bytes:
    """(id, blob) pairs sorted by id then blob: id deltas and blob ids, LEB128, CRC32C, zstd."""
    a = varint.encode_fast(np.diff(sids, prepend=0))
    return _seal(_RUN.pack(sids.size, len(a)) + a + varint.encode_fast(blobs), LEVEL)


def unpack_run(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    raw = _unseal(data, "symbol run", _RUN.size)
    n, la = _RUN.unpack_from(raw, 0)
    at = _RUN.size
    sids = np.cumsum(varint.decode(raw[at : at + la], n))
    return sids, varint.decode(raw[at + la : -4], n)


def pack_texts(texts: list[bytes], first: int) -> bytes:
    """Sorted new texts with ids first, first + 1, ...: LEB128 lengths, texts, CRC32C, zstd."""
    lens = varint.encode_fast(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    return _seal(_TEXTS.pack(len(texts), first, len(lens)) + lens + b"".join(texts), LEVEL)


def unpack_texts(data: bytes) -> list[tuple[bytes, int]]:
    raw = _unseal(data, "symbol texts", _TEXTS.size)
    n, first, ll = _TEXTS.unpack_from(raw, 0)
    at = _TEXTS.size + ll
    ends = (at + np.cumsum(varint.decode(raw[_TEXTS.size : at], n))).tolist()
    return [(raw[a:b], first + k) for k, (a, b) in enumerate(zip([at, *ends[:-1]], ends,
                                                                   strict=True))]  # fmt: skip


def _union(streams: list[bytes]) -> bytes:
    """One posting stream holding every blob of `streams` once, ascending (in C)."""
    if len(streams) == 1:
        return streams[0]
    try:
        return _native.merge_postings(streams)
    except _native.CorruptRecord as exc:
        raise CorruptRecord(f"symbol postings unreadable: {exc}") from None


class SymbolTable:
    def __init__(self, db: Connection, meta_get, meta_set):
        self.db = db
        self._get, self._set = meta_get, meta_set
        self._pending_table = False  # known to exist
        self._no_legacy_runs = False  # an older store's `symbol_runs` known empty (never refilled)

    def _has_pending(self) -> bool:
        if not self._pending_table:
            self._pending_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'symbol_pending'").fetchone() is not None
        return self._pending_table

    # lookups
    def _block_for(self, text: bytes) -> Block | None:
        row = self.db.execute(
            "SELECT data FROM symbol_blocks WHERE first <= ? ORDER BY first DESC LIMIT 1", (text,)
        ).fetchone()
        return Block(row[0]) if row else None

    def _runs(self) -> list[int]:
        if not self._has_pending():
            return []
        return [r for (r,) in self.db.execute("SELECT DISTINCT run FROM symbol_pending")]

    def id_of(self, text: bytes) -> int | None:
        """The id of a compacted text (None before the compaction that gives it one)."""
        block = self._block_for(text)
        k = block.find(text) if block is not None else None
        if k is not None:
            return int(block.ids[k])
        row = self.db.execute("SELECT id FROM symbols WHERE text = ?", (text,)).fetchone()
        return row[0] if row else self._legacy_texts().get(text)

    def blobs_with(self, text: bytes) -> list[int]:
        """Blob ids whose trees use `text` as an identifier (blocks, pending runs and an
        older store's recent layer; ascending)."""
        parts = []
        sid = None
        block = self._block_for(text)
        if block is not None and (k := block.find(text)) is not None:
            parts.append(_blobs(block.stream(k)))
            sid = int(block.ids[k])
        for run in self._runs():
            row = self.db.execute(
                "SELECT data FROM symbol_pending WHERE run = ? AND first <= ? "
                "ORDER BY first DESC LIMIT 1", (run, text)).fetchone()  # fmt: skip
            if row is not None:
                pending = Block(row[0])
                if (k := pending.find(text)) is not None:
                    parts.append(_blobs(pending.stream(k)))
        if self._legacy_runs() and sid is None:
            sid = self.id_of(text)
        if sid is not None and self._legacy_runs():
            for (data,) in self.db.execute("SELECT data FROM symbol_runs"):
                sids, blobs = unpack_run(data)
                lo, hi = np.searchsorted(sids, [sid, sid + 1])
                parts.append(blobs[lo:hi])
        return np.unique(np.concatenate(parts)).tolist() if parts else []

    def _legacy_runs(self) -> bool:
        """Does an older store's `symbol_runs` still hold rows (folded by the next compaction,
        never written again: once empty, known empty)?"""
        if not self._no_legacy_runs:
            try:
                found = self.db.execute("SELECT 1 FROM symbol_runs LIMIT 1").fetchone()
            except sqlite3.OperationalError:  # no such table
                found = None
            self._no_legacy_runs = found is None
        return not self._no_legacy_runs

    # writes (inside the caller's transaction)
    def add(self, per_blob: dict[int, set[bytes]]) -> None:
        """The symbols of new blobs as one pending run: texts sorted, each with its blobs
        (postings made by one vectorised sort and encode)."""
        texts = sorted(set().union(*per_blob.values()))
        if not texts:
            return
        if not self._has_pending():
            for statement in PENDING:
                self.db.execute(statement)
        if len(self._runs()) >= MAX_RUNS:
            self._merge_runs()
        index = {t: k for k, t in enumerate(texts)}
        blobs = sorted(per_blob)
        sizes = [len(per_blob[b]) for b in blobs]
        pairs = sum(sizes)
        tid = np.fromiter((index[t] for b in blobs for t in per_blob[b]), dtype=np.int64,
                          count=pairs)  # fmt: skip
        blob = np.repeat(np.array(blobs, dtype=np.int64), sizes)
        order = np.lexsort((blob, tid))
        _, streams = _streams(tid[order], blob[order])  # one stream per text, in order
        (run,) = self.db.execute("SELECT coalesce(max(run), 0) + 1 FROM symbol_pending").fetchone()
        self.db.executemany(
            "INSERT INTO symbol_pending(run, first, count, data) VALUES (?, ?, ?, ?)",
            ((run, *row) for row in pack_blocks(texts, [0] * len(texts), streams)))  # fmt: skip
        self._set("symbol_refs", str(self.refs() + pairs))

    def pending(self) -> bool:
        """Is there anything for `compact` to fold?"""
        return bool(self._runs()) or any(
            self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in ("symbol_texts", "symbols", "symbol_runs"))  # fmt: skip

    def _entries(self, table: str, ids: list[int], rank: int) -> Iterator[tuple]:
        """(text, rank, id, stream) of the blocks `ids` of `table`, in order, one block
        decoded at a time."""
        for row_id in ids:
            (data,) = self.db.execute(f"SELECT data FROM {table} WHERE id = ?",
                                      (row_id,)).fetchone()  # fmt: skip
            for text, sid, stream in Block(data).entries():
                yield text, rank, sid, stream

    def _run_sources(self) -> list[Iterator[tuple]]:
        rows = self.db.execute("SELECT run, id FROM symbol_pending ORDER BY run, first")
        by_run: dict[int, list[int]] = {}
        for run, row_id in rows.fetchall():
            by_run.setdefault(run, []).append(row_id)
        return [self._entries("symbol_pending", ids, k + 1)
                for k, ids in enumerate(by_run.values())]  # fmt: skip

    def _write(self, table: str, merged: Iterator[tuple[bytes, int, bytes]],
               run: int | None = None) -> int:  # fmt: skip
        """Pack merged (text, id, stream) entries into blocks of `table`, FLUSH at a time."""
        texts: list[bytes] = []
        ids: list[int] = []
        streams: list[bytes] = []
        written = 0

        def flush() -> None:
            rows = pack_blocks(texts, ids, streams)
            if run is None:
                self.db.executemany(f"INSERT INTO {table}(first, count, data) VALUES (?, ?, ?)",
                                    rows)  # fmt: skip
            else:
                self.db.executemany(f"INSERT INTO {table}(run, first, count, data) "
                                    "VALUES (?, ?, ?, ?)", ((run, *r) for r in rows))  # fmt: skip
            texts.clear(), ids.clear(), streams.clear()

        for text, sid, stream in merged:
            texts.append(text), ids.append(sid), streams.append(stream)
            written += 1
            if len(texts) == FLUSH:
                flush()
        if texts:
            flush()
        return written

    def _merge_runs(self) -> None:
        """The pending runs merged into one (the blocks untouched): lookups search one run."""
        (last,) = self.db.execute("SELECT max(id) FROM symbol_pending").fetchone()
        merged = ((text, 0, _union([e[3] for e in group])) for text, group in
                  groupby(heapq.merge(*self._run_sources()), key=itemgetter(0)))  # fmt: skip
        (run,) = self.db.execute("SELECT max(run) + 1 FROM symbol_pending").fetchone()
        self._write("symbol_pending", merged, run)
        self.db.execute("DELETE FROM symbol_pending WHERE id <= ?", (last,))

    def compact(self) -> int:
        """Merge the pending runs (and an older store's recent layer) into the blocks, in one
        streaming pass (call inside a transaction). Returns the texts folded in."""
        folded = self._fold_legacy()
        if not self._runs():
            return folded
        old = [i for (i,) in self.db.execute("SELECT id FROM symbol_blocks ORDER BY first")]
        sources = [self._entries("symbol_blocks", old, 0), *self._run_sources()]
        next_id = int(self._get("next_symbol_id") or 1)
        new_bytes = 0

        def merged() -> Iterator[tuple[bytes, int, bytes]]:
            nonlocal next_id, new_bytes, folded
            for text, group in groupby(heapq.merge(*sources), key=itemgetter(0)):
                entries = list(group)
                folded += 1
                if entries[0][1] == 0:  # in the blocks: it keeps its id
                    sid = entries[0][2]
                else:
                    sid, next_id = next_id, next_id + 1
                    new_bytes += len(text)
                yield text, sid, _union([e[3] for e in entries])

        self._write("symbol_blocks", merged())
        if old:
            self.db.executemany("DELETE FROM symbol_blocks WHERE id = ?", ((i,) for i in old))
        self.db.execute("DELETE FROM symbol_pending")
        self._set("next_symbol_id", str(next_id))
        self._set("symbol_text_bytes", str(int(self._get("symbol_text_bytes") or 0) + new_bytes))
        return folded

    # an older store's recent layer
    def _legacy_texts(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for (data,) in self.db.execute("SELECT data FROM symbol_texts ORDER BY id"):
            out.update(unpack_texts(data))
        return out

    def _fold_legacy(self) -> int:
        """Fold an older store's recent layer (texts with ids, id-keyed runs) into the
        blocks: blocks a recent text falls in are rewritten with it."""
        recent = self._legacy_texts()
        recent.update(self.db.execute("SELECT text, id FROM symbols"))
        texts = sorted(recent)
        runs = [unpack_run(d) for (d,) in self.db.execute("SELECT data FROM symbol_runs")]
        if not texts and not runs:
            return 0
        ids = list(map(recent.__getitem__, texts))
        if runs:
            sids = np.concatenate([r[0] for r in runs])
            blobs = np.concatenate([r[1] for r in runs])
            order = np.lexsort((blobs, sids))
            stream_of = dict(zip(*_streams(sids[order], blobs[order]), strict=True))
        else:
            stream_of = {}
        streams = list(map(stream_of.get, ids, repeat(b"")))
        blocks = self.db.execute("SELECT id, first FROM symbol_blocks ORDER BY first").fetchall()
        firsts = [b[1] for b in blocks]
        groups: dict[int, list[tuple[bytes, int, bytes]]] = {}
        for text, sid, stream in zip(texts, ids, streams, strict=True):
            groups.setdefault(max(bisect_right(firsts, text) - 1, -1), []).append(
                (text, sid, stream))  # fmt: skip
        for b, rows in groups.items():
            merged: dict[bytes, tuple[int, bytes]] = {}
            if b >= 0:
                (data,) = self.db.execute(
                    "SELECT data FROM symbol_blocks WHERE id = ?", (blocks[b][0],)
                ).fetchone()
                merged = {t: (sid, s) for t, sid, s in Block(data).entries()}
                self.db.execute("DELETE FROM symbol_blocks WHERE id = ?", (blocks[b][0],))
            for text, sid, stream in rows:
                old = merged.get(text)
                merged[text] = (sid, _union([old[1], stream]) if old and old[1] else stream)
            items = sorted(merged.items())
            self._write("symbol_blocks", ((t, v[0], v[1]) for t, v in items))
        self.db.execute("DELETE FROM symbols")
        self.db.execute("DELETE FROM symbol_texts")
        self.db.execute("DELETE FROM symbol_runs")
        return len(texts)

    def refs(self) -> int:
        return int(self._get("symbol_refs") or 0)

    def counts(self) -> dict[str, int]:
        return {"symbols": int(self._get("next_symbol_id") or 1) - 1,
                "symbol_text_bytes": int(self._get("symbol_text_bytes") or 0),
                "symbol_refs": self.refs()}  # fmt: skip


__all__ = ["BLOCK", "Block", "SymbolTable", "pack_block", "pack_blocks"]
