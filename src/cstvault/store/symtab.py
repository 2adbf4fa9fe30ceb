"""The global symbol table: identifier texts interned once per store, with their postings.

Two layers, like an LSM tree:
- `symbols`: recent rows (text, id, postings appended batch by batch while indexing);
- `symbol_blocks`: compacted sorted runs of BLOCK symbols, each one zstd frame holding
  LEB128 text lengths, ids and posting lengths, the postings and the texts, plus a CRC32C.
  A block is found by its first text; `compact` folds the recent rows into the blocks.

Postings are blob ids as LEB128 deltas (a stream restarts from 0 in each layer). Blob ids are
never reused (AUTOINCREMENT), so postings of dropped blobs are harmless: paths are always
resolved through the files table. Ids are dense from 1; meta keeps the count and text bytes.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from sqlite3 import Connection

import crc32c
import numpy as np
import zstandard

from ..codec import CorruptRecord, varint

BLOCK = 128
LEVEL = 9  # blocks are rewritten by compactions: level 19 is 5x slower for 2.5% less
_HEAD = struct.Struct("<IIIII")  # entries, bytes of: lengths, ids, posting lengths, postings

SCHEMA = """
CREATE TABLE IF NOT EXISTS symbols(          -- recent symbols, not yet compacted
    text BLOB PRIMARY KEY,
    id INTEGER NOT NULL,                     -- dense ids, from meta 'next_symbol_id'
    last_blob INTEGER NOT NULL DEFAULT 0,    -- the largest blob id in postings
    postings BLOB NOT NULL DEFAULT x''       -- blob ids as LEB128 deltas
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS symbol_blocks(    -- compacted, sorted runs of symbols (one zstd frame)
    id INTEGER PRIMARY KEY,
    first BLOB NOT NULL,                     -- the block's smallest text
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS symbol_blocks_first ON symbol_blocks(first);
"""


def pack_block(texts: list[bytes], ids: list[int], streams: list[bytes]) -> bytes:
    lens = varint.encode(np.array([len(t) for t in texts], dtype=np.int64))
    idb = varint.encode(np.array(ids, dtype=np.int64))
    plens = varint.encode(np.array([len(s) for s in streams], dtype=np.int64))
    post = b"".join(streams)
    body = b"".join((_HEAD.pack(len(texts), len(lens), len(idb), len(plens), len(post)),
                     lens, idb, plens, post, *texts))  # fmt: skip
    crc = struct.pack("<I", crc32c.crc32c(body))
    return zstandard.ZstdCompressor(level=LEVEL).compress(body + crc)


class Block:
    """A decoded block: find a text by binary search over its offsets, no list of texts."""

    def __init__(self, data: bytes):
        try:
            raw = zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as exc:
            raise CorruptRecord(f"symbol block unreadable: {exc}") from exc
        if len(raw) < _HEAD.size + 4 or crc32c.crc32c(raw[:-4]) != struct.unpack_from(
            "<I", raw, len(raw) - 4
        )[0]:  # fmt: skip
            raise CorruptRecord("symbol block checksum (CRC32C) mismatch")
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
    return varint.encode(np.diff(blobs, prepend=0))


class SymbolTable:
    def __init__(self, db: Connection, meta_get, meta_set):
        self.db = db
        self._get, self._set = meta_get, meta_set

    def _block_for(self, text: bytes) -> Block | None:
        row = self.db.execute(
            "SELECT data FROM symbol_blocks WHERE first <= ? ORDER BY first DESC LIMIT 1", (text,)
        ).fetchone()
        return Block(row[0]) if row else None

    def blobs_with(self, text: bytes) -> list[int]:
        """Blob ids whose trees use `text` as an identifier (both layers, ascending)."""
        parts = []
        block = self._block_for(text)
        if block is not None and (k := block.find(text)) is not None:
            parts.append(_blobs(block.stream(k)))
        row = self.db.execute("SELECT postings FROM symbols WHERE text = ?", (text,)).fetchone()
        if row is not None:
            parts.append(_blobs(row[0]))
        return np.concatenate(parts).tolist() if parts else []

    def _known(self, texts: list[bytes]) -> dict[bytes, list[int]]:
        """text -> [id, last blob of its recent row (0 if none), has a recent row]."""
        info: dict[bytes, list[int]] = {}
        for k in range(0, len(texts), 500):
            chunk = texts[k : k + 500]
            marks = ",".join("?" * len(chunk))
            for text, sid, last in self.db.execute(
                f"SELECT text, id, last_blob FROM symbols WHERE text IN ({marks})", chunk
            ):
                info[text] = [sid, last, 1]
        rest = sorted(t for t in texts if t not in info)
        if rest and self.db.execute("SELECT 1 FROM symbol_blocks LIMIT 1").fetchone():
            q = "SELECT first FROM symbol_blocks ORDER BY first"
            firsts = [r[0] for r in self.db.execute(q)]
            by_block: dict[int, list[bytes]] = {}
            for t in rest:
                by_block.setdefault(bisect_right(firsts, t) - 1, []).append(t)
            for b, ts in by_block.items():
                if b < 0:
                    continue
                block = self._block_for(firsts[b])
                assert block is not None
                ids = block.ids
                for t in ts:
                    if (k := block.find(t)) is not None:
                        info[t] = [int(ids[k]), 0, 0]
        return info

    def add(self, per_blob: dict[int, set[bytes]]) -> dict[bytes, int]:
        """Intern the symbols of new blobs and extend their postings; returns text -> id."""
        texts = list(set().union(*per_blob.values()))
        info = self._known(texts)
        new = [t for t in texts if t not in info]
        first = int(self._get("next_symbol_id") or 1)
        for offset, text in enumerate(new):
            info[text] = [first + offset, 0, 0]
        if new:
            self._set("next_symbol_id", str(first + len(new)))
            text_bytes = int(self._get("symbol_text_bytes") or 0) + sum(map(len, new))
            self._set("symbol_text_bytes", str(text_bytes))
        postings: dict[bytes, list[int]] = {}
        for blob in sorted(per_blob):
            for t in per_blob[blob]:
                postings.setdefault(t, []).append(blob)
        fresh, grown = [], []
        for text, blobs in postings.items():
            sid, last, recent = info[text]
            deltas = varint.encode(np.diff(np.array(blobs, dtype=np.int64), prepend=last))
            if recent:
                grown.append((deltas, blobs[-1], text))
            else:
                fresh.append((text, sid, blobs[-1], deltas))
        self.db.executemany(
            "INSERT INTO symbols(text, id, last_blob, postings) VALUES (?, ?, ?, ?)", fresh
        )
        self.db.executemany(
            "UPDATE symbols SET postings = CAST(postings || ? AS BLOB), last_blob = ? "
            "WHERE text = ?",
            grown,
        )
        return {t: v[0] for t, v in info.items()}

    def compact(self) -> int:
        """Fold the recent rows into the sorted blocks (call inside a transaction): blocks a
        recent text falls in are rewritten with it, cut into runs of BLOCK. Returns rows folded."""
        recent = self.db.execute("SELECT text, id, postings FROM symbols ORDER BY text").fetchall()
        if not recent:
            return 0
        blocks = self.db.execute("SELECT id, first FROM symbol_blocks ORDER BY first").fetchall()
        firsts = [b[1] for b in blocks]
        groups: dict[int, list[tuple[bytes, int, bytes]]] = {}
        for row in recent:
            groups.setdefault(max(bisect_right(firsts, row[0]) - 1, -1), []).append(row)
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
                if old is not None:
                    stream = _stream(np.concatenate((_blobs(old[1]), _blobs(stream))))
                merged[text] = (sid, stream)
            self._write_runs(sorted(merged.items()))
        self.db.execute("DELETE FROM symbols")
        return len(recent)

    def _write_runs(self, items: list[tuple[bytes, tuple[int, bytes]]]) -> None:
        rows = []
        for k in range(0, len(items), BLOCK):
            run = items[k : k + BLOCK]
            texts = [t for t, _ in run]
            data = pack_block(texts, [v[0] for _, v in run], [v[1] for _, v in run])
            rows.append((texts[0], len(run), data))
        self.db.executemany("INSERT INTO symbol_blocks(first, count, data) VALUES (?, ?, ?)", rows)

    def counts(self) -> dict[str, int]:
        return {"symbols": int(self._get("next_symbol_id") or 1) - 1,
                "symbol_text_bytes": int(self._get("symbol_text_bytes") or 0)}  # fmt: skip


__all__ = ["BLOCK", "Block", "SymbolTable", "pack_block"]
