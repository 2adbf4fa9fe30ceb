"""The global symbol table: identifier texts interned once per store, with their postings.

Two layers, like an LSM tree:
- recent: `symbol_texts` (one row per indexing batch: the texts it interned, sorted, with
  consecutive ids, one zstd frame), `symbols` (text -> id of older texts a batch used again,
  found in the blocks) and `symbol_runs` (one row per batch: its (id, blob) postings, one
  zstd frame); a batch costs two rows plus one per text it reuses from the blocks;
- `symbol_blocks`: compacted sorted runs of BLOCK symbols, each one zstd frame holding
  LEB128 text lengths, ids and posting lengths, the postings and the texts, plus a CRC32C.
  A block is found by its first text; `compact` (end of an index run unless deferred to the
  freeze that follows, gc, and mid-run once a run met CACHE_MAX texts) folds the recent
  layer into the blocks.

Postings are blob ids as LEB128 deltas (a stream restarts from 0 in each layer). Blob ids are
never reused (AUTOINCREMENT), so postings of dropped blobs are harmless: paths are always
resolved through the files table. Ids are dense from 1; meta keeps the count and text bytes.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from itertools import chain, compress, repeat
from sqlite3 import Connection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from .._numpy import np
import zstandard

from ..checksum import crc32c
from ..codec import CorruptRecord, varint

BLOCK = 128
LEVEL = 3  # of every sealed frame here: blocks are rewritten by compactions, level 19 is
# far slower for a few % less
_HEAD = struct.Struct("<IIIII")  # entries, bytes of: lengths, ids, posting lengths, postings
_RUN = struct.Struct("<II")  # pairs, bytes of the id deltas
_TEXTS = struct.Struct("<IQI")  # texts, id of the first, bytes of the lengths
CACHE_MAX = 2_000_000  # texts an indexing run remembers the ids of

SCHEMA = """
CREATE TABLE IF NOT EXISTS symbol_texts(     -- texts one batch interned (one zstd frame)
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS symbols(          -- block texts used again since the last compaction
    text BLOB PRIMARY KEY,
    id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS symbol_runs(      -- one batch's (id, blob) postings, one zstd frame
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


class SymbolTable:
    def __init__(self, db: Connection, meta_get, meta_set):
        self.db = db
        self._get, self._set = meta_get, meta_set
        self._cache: dict[bytes, int] | None = None
        self._all_new = False

    def _block_for(self, text: bytes) -> Block | None:
        row = self.db.execute(
            "SELECT data FROM symbol_blocks WHERE first <= ? ORDER BY first DESC LIMIT 1", (text,)
        ).fetchone()
        return Block(row[0]) if row else None

    def _new_texts(self) -> dict[bytes, int]:
        """Texts interned since the last compaction (the packed batch rows)."""
        out: dict[bytes, int] = {}
        for (data,) in self.db.execute("SELECT data FROM symbol_texts ORDER BY id"):
            out.update(unpack_texts(data))
        return out

    def blobs_with(self, text: bytes) -> list[int]:
        """Blob ids whose trees use `text` as an identifier (both layers, ascending)."""
        parts = []
        sid = None
        block = self._block_for(text)
        if block is not None and (k := block.find(text)) is not None:
            parts.append(_blobs(block.stream(k)))
            sid = int(block.ids[k])
        row = self.db.execute("SELECT id FROM symbols WHERE text = ?", (text,)).fetchone()
        if row is not None:
            sid = row[0]
        elif sid is None:
            sid = self._new_texts().get(text)
        if sid is not None:
            for (data,) in self.db.execute("SELECT data FROM symbol_runs"):
                sids, blobs = unpack_run(data)
                lo, hi = np.searchsorted(sids, [sid, sid + 1])
                parts.append(blobs[lo:hi])
        return np.unique(np.concatenate(parts)).tolist() if parts else []

    def begin_bulk(self) -> None:
        """An indexing run starts: remember text -> id for its batches; on a store without
        symbols every unseen text is new, so no lookups at all."""
        self._cache = self._new_texts()  # left by an interrupted run, if any
        self._all_new = self.counts()["symbols"] == len(self._cache)

    def end_bulk(self) -> None:
        self._cache = None
        self._all_new = False

    def _known(self, texts: list[bytes]) -> dict[bytes, int]:
        """Ids of the texts already interned: recent layer, then the blocks."""
        info: dict[bytes, int] = {}
        for k in range(0, len(texts), 500):
            chunk = texts[k : k + 500]
            marks = ",".join("?" * len(chunk))
            info.update(self.db.execute(
                f"SELECT text, id FROM symbols WHERE text IN ({marks})", chunk))  # fmt: skip
        # in a bulk run the cache already holds every recent text (begin_bulk loaded them)
        if len(info) < len(texts) and self._cache is None and self.db.execute(
            "SELECT 1 FROM symbol_texts LIMIT 1"
        ).fetchone():
            fresh = self._new_texts()
            info.update((t, fresh[t]) for t in texts if t in fresh)
        rest = sorted(t for t in texts if t not in info)
        if rest and self.db.execute("SELECT 1 FROM symbol_blocks LIMIT 1").fetchone():
            q = "SELECT first FROM symbol_blocks ORDER BY first"
            firsts = [r[0] for r in self.db.execute(q)]
            by_block: dict[int, list[bytes]] = {}
            for t in rest:
                by_block.setdefault(bisect_right(firsts, t) - 1, []).append(t)
            found = []
            for b, ts in by_block.items():
                if b < 0:
                    continue
                block = self._block_for(firsts[b])
                assert block is not None
                for t in ts:
                    if (k := block.find(t)) is not None:
                        found.append((t, int(block.ids[k])))
            # the recent layer must name every text its runs use (compaction needs them)
            self.db.executemany("INSERT OR IGNORE INTO symbols(text, id) VALUES (?, ?)", found)
            info.update(found)
        return info

    def ids(self, texts: list[bytes]) -> dict[bytes, int]:
        """text -> id for every text, interning the new ones (inside the caller's transaction).

        In a bulk run the cache remembers every text the run met, up to CACHE_MAX; past that
        the recent layer is folded into the blocks first (compaction, as an LSM flushes a full
        memtable) and lookups go to the blocks, so neither memory nor lookup time grows with
        the run."""
        if self._cache is not None and len(self._cache) + len(texts) > CACHE_MAX:
            self.compact()  # before this batch's run exists: every run's texts are recent
        cache = self._cache
        out: dict[bytes, int] = {}
        missing = texts
        if cache is not None:
            found = list(map(cache.get, texts))
            missing = [t for t, sid in zip(texts, found, strict=True) if sid is None]
            out.update(zip(compress(texts, found), filter(None, found), strict=True))  # ids >= 1
        if missing and not self._all_new:
            out.update(self._known(missing))
        new = sorted(t for t in missing if t not in out)
        if new:
            first = int(self._get("next_symbol_id") or 1)
            self.db.execute("INSERT INTO symbol_texts(data) VALUES (?)", (pack_texts(new, first),))
            out.update(zip(new, range(first, first + len(new)), strict=True))
            self._set("next_symbol_id", str(first + len(new)))
            text_bytes = int(self._get("symbol_text_bytes") or 0) + sum(map(len, new))
            self._set("symbol_text_bytes", str(text_bytes))
        if cache is not None:
            cache.update((t, out[t]) for t in missing)
        return out

    def add(self, per_blob: dict[int, set[bytes]]) -> tuple[list[int], np.ndarray, list[int]]:
        """Intern the symbols of new blobs and write the batch's postings as one run.
        Returns the blob ids (ascending), the id of every (blob, text) pair in that order,
        and how many pairs each blob has."""
        ids = self.ids(list(set().union(*per_blob.values())))
        blobs = sorted(per_blob)
        sizes = [len(per_blob[b]) for b in blobs]
        pairs = chain.from_iterable(map(per_blob.__getitem__, blobs))
        sid = np.fromiter(map(ids.__getitem__, pairs), dtype=np.int64, count=sum(sizes))
        blob = np.repeat(np.array(blobs, dtype=np.int64), sizes)
        order = np.lexsort((blob, sid))
        if sid.size:
            self.db.execute("INSERT INTO symbol_runs(data) VALUES (?)",
                            (pack_run(sid[order], blob[order]),))  # fmt: skip
        return blobs, sid, sizes

    def pending(self) -> bool:
        """Is there anything for `compact` to fold?"""
        return bool(self._new_texts()) or any(
            self.db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
            for table in ("symbols", "symbol_runs"))  # fmt: skip

    def compact(self) -> int:
        """Fold the recent layer into the sorted blocks (call inside a transaction): blocks a
        recent text falls in are rewritten with it, cut into runs of BLOCK. Returns texts folded."""
        recent = self._new_texts()
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
        if not blocks:  # a first load: the recent texts, sorted, are the blocks
            self._insert_blocks(pack_blocks(texts, ids, streams))
            return self._clear_recent(len(texts))
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
                if old is not None and old[1]:
                    stream = _stream(np.concatenate((_blobs(old[1]), _blobs(stream))))
                merged[text] = (sid, stream)
            items = sorted(merged.items())
            self._insert_blocks(pack_blocks([t for t, _ in items], [v[0] for _, v in items],
                                            [v[1] for _, v in items]))  # fmt: skip
        return self._clear_recent(len(texts))

    def _clear_recent(self, folded: int) -> int:
        self.db.execute("DELETE FROM symbols")
        self.db.execute("DELETE FROM symbol_texts")
        self.db.execute("DELETE FROM symbol_runs")
        if self._cache is not None:
            self._cache.clear()
            self._all_new = False
        return folded

    def _insert_blocks(self, rows: list[tuple[bytes, int, bytes]]) -> None:
        self.db.executemany("INSERT INTO symbol_blocks(first, count, data) VALUES (?, ?, ?)", rows)

    def counts(self) -> dict[str, int]:
        return {"symbols": int(self._get("next_symbol_id") or 1) - 1,
                "symbol_text_bytes": int(self._get("symbol_text_bytes") or 0)}  # fmt: skip


__all__ = ["BLOCK", "Block", "SymbolTable", "pack_block", "pack_blocks"]
