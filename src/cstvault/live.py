"""Per-file writes on an open store: `update`, `remove`, `apply_edit`, through the journal.

A write is encoded like `index` encodes a file, appended to the journal (frames included:
the catalog points into the journal until `checkpoint`), made durable, then applied to the
catalog in one transaction that also records how far the journal is applied. Replay after a
crash runs the same `_apply_*` code on the entries past that point.

`apply_edit` keeps the file's tree-sitter tree alive (a bounded LRU, counted in the store's
memory budget) and parses incrementally. With `durability="batch"` edits are journaled as
they come and committed as a group (one fsync, one transaction, one stored tree per file):
every `batch_entries` edits, at the first write past `batch_ms`, on `sync()` and on close.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from stat import S_ISDIR
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

from . import _native, faults, indexer, languages, stable
from .checksum import crc32c
from .codec import CorruptRecord, decode
from .extract import _from_native
from .sources import check_source, count_lines
from .store import journal as jn
from .store import versions as vs
from .store.catalog import signed32
from .tags import tags_query

LIVE_LEVEL = indexer.INDEX_LEVEL  # frames as `index` writes them; checkpoint freezes them
# tree-sitter's heap per node of a live tree: 116 bytes measured (RSS of 40 held trees of a
# 5,463-line file; `bench live` reports it as live_tree_bytes_per_node)
LIVE_NODE_BYTES = 116
CHECKPOINT_BYTES = 64 * 1024 * 1024  # journal size past which a commit checkpoints
DURABILITY = ("commit", "batch")


class FileError(ValueError):
    """A per-file write that cannot be made: path outside the root, unsupported language,
    binary or oversized text, an edit range outside the file."""


class FileVanished(FileNotFoundError):
    """`update(path)` of a working file that no longer exists (use `remove`)."""


@dataclass
class LiveFile:
    """A recently written file as the writer holds it: text, live tree, version."""

    path: str
    language: str
    source: bytes
    tree: object  # live_parse capsule, edited in step with `source`
    version: int
    record: bytes  # tree record of `record_version`, the last version stored with a tree
    record_version: int
    record_source: bytes  # the text of `record_version`
    pending: list = field(default_factory=list)  # versions journaled, not yet committed
    nodes: int = 0
    newlines: np.ndarray | None = None  # offsets of the text's newlines (points of edits)
    ids: tuple | None = None  # (stable.Side, ids, next id) of `record_version`

    @property
    def nbytes(self) -> int:
        nl = self.newlines.nbytes if self.newlines is not None else 0
        ids = 0
        if self.ids is not None:  # hashes, sizes, parents, kinds and ids: 34 bytes a node
            ids = self.ids[0].nbytes + self.ids[1].nbytes
        return len(self.source) + len(self.record) + self.nodes * LIVE_NODE_BYTES + nl + ids

    def lines(self) -> np.ndarray:
        if self.newlines is None:
            self.newlines = newline_offsets(self.source)
        return self.newlines


def newline_offsets(text: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)


def _row_col(newlines: np.ndarray, offset: int) -> tuple[int, int]:
    row = int(np.searchsorted(newlines, offset, "left"))
    return row, offset - (int(newlines[row - 1]) + 1 if row else 0)


def edit_lines(newlines: np.ndarray, start: int, old_end: int, text: bytes) -> np.ndarray:
    """The newline offsets after replacing [start, old_end) by `text`."""
    lo = int(np.searchsorted(newlines, start, "left"))
    hi = int(np.searchsorted(newlines, old_end, "left"))
    mine = newline_offsets(text) + start
    after = newlines[hi:] + (len(text) - (old_end - start))
    return np.concatenate((newlines[:lo], mine, after))


def common_edit(old: bytes, new: bytes) -> tuple[int, int, int]:
    """The one edit (start, old_end, new_end) turning `old` into `new`: their common prefix
    and suffix kept."""
    n = min(len(old), len(new))
    lo, hi = 0, n
    while lo < hi:  # longest common prefix by bisection on slices (C comparisons)
        mid = (lo + hi + 1) // 2
        if old[:mid] == new[:mid]:
            lo = mid
        else:
            hi = mid - 1
    start = lo
    lo, hi = 0, n - start
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[len(old) - mid :] == new[len(new) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return start, len(old) - lo, len(new) - lo


def edit_tree(tree: object, before: np.ndarray, start: int, old_end: int,
              text: bytes) -> np.ndarray:  # fmt: skip
    """ts_tree_edit of a live tree for replacing [start, old_end) by `text`, its points
    found from the text's newline offsets `before`; returns the offsets after the edit."""
    after = edit_lines(before, start, old_end, text)
    _native.live_edit(tree, start, old_end, start + len(text), *_row_col(before, start),
                      *_row_col(before, old_end), *_row_col(after, start + len(text)))
    return after


def parse_live(source: bytes, language: str, old: object = None,
               extract: bool = True) -> tuple[object, tuple | None]:  # fmt: skip
    """(live tree, (columns, tags-query events or None)), incrementally when `old` is an
    edited live tree; without `extract`, (live tree, None): the walk waits for the commit."""
    tq = tags_query(language)
    cap, out = _native.live_parse(source, languages.capsule(language), old,
                                  tq._q if tq is not None else None, extract)  # fmt: skip
    return cap, (_columns(language, tq, out) if extract else None)


def extract_live(tree: object, language: str) -> tuple:
    """(columns, tags-query events or None) of a live tree."""
    tq = tags_query(language)
    return _columns(language, tq, _native.live_extract(tree, tq._q if tq is not None else None))


def _columns(language: str, tq, out: tuple) -> tuple:
    if tq is None:
        return _from_native(language, out), None
    return _from_native(language, out[0]), out[1]


def _pack_symbols(symbols: set[bytes]) -> bytes:
    return jn.pack((), tuple(sorted(symbols)))[0]


def _unpack_symbols(data: bytes) -> set[bytes]:
    return set(jn.unpack(data)[1]) if data else set()


def now_ms() -> int:
    return int(time.time() * 1000)


# UPDATE entry: ints, then byte fields
U_INTS = ("version", "size", "mtime_ns", "lines", "nodes", "level", "tree_dict", "src_dict",
          "crc", "made_ms", "start", "old_end", "new_end", "prev_version", "prev_kind",
          "prev_size", "prev_lines", "prev_crc", "tree_of", "next_id")  # fmt: skip
U_BLOBS = ("path", "language", "digest", "tree", "source", "symbols", "definitions", "kinds",
           "src_delta", "tree_delta", "ids")  # fmt: skip
E_INTS = ("version", "start", "old_end", "new_end", "size", "lines", "crc", "made_ms")
E_BLOBS = ("path", "new_text", "old_text")


class LiveWriter:
    """The per-file write side of a Store opened with `write=True`."""

    def __init__(self, store, durability: str = "commit", batch_entries: int = 64,
                 batch_ms: float = 20.0, keep_versions: int | None = None,
                 keep_version_bytes: int | None = None,
                 live_bytes: int | None = None):  # fmt: skip
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {DURABILITY}, not {durability!r}")
        self.store = store
        self.cat = store.catalog
        self.durability = durability
        self.batch_entries = batch_entries
        self.batch_ms = batch_ms
        from .store import LIVE_SHARE

        self.live_bytes = live_bytes if live_bytes is not None else \
            int(store.config.max_memory_mb * 1024 * 1024 * LIVE_SHARE)  # fmt: skip
        self.live: OrderedDict[str, LiveFile] = OrderedDict()
        self._live_sizes: dict[str, int] = {}
        self._live_total = 0
        self.dirty: dict[str, LiveFile] = {}
        self.unsynced: list[jn.Entry] = []
        self.first_pending = 0.0
        if not vs.exists(self.cat.db):
            self.cat.begin()
            vs.ensure(self.cat.db)
            self.cat.commit()
        meta = self.cat.meta()
        self.keep = keep_versions if keep_versions is not None else \
            int(meta.get("keep_versions") or vs.KEEP_VERSIONS)  # fmt: skip
        kb = keep_version_bytes if keep_version_bytes is not None else \
            meta.get("keep_version_bytes")  # fmt: skip
        self.keep_bytes = int(kb) if kb not in (None, "") else None
        seg, applied, seq = jn.journal_position(meta)
        self.journal = jn.Journal(store.directory / "segments", seg)
        self.applied = applied
        self.seq = seq
        self.root = meta.get("root") or ""
        self.dicts = indexer._store_dictionaries(store)
        self._checkpointing = False
        self.stats = {"updates": 0, "edits": 0, "removes": 0, "commits": 0, "checkpoints": 0}

    # paths
    def rel(self, path: str | os.PathLike[str]) -> str:
        """A store path: '/'-separated, relative to the root (absolute paths must lie in it)."""
        p = os.fspath(path)
        if os.path.isabs(p):
            if not self.root:
                raise FileError(f"{p}: the store has no root to resolve it against")
            p = os.path.relpath(os.path.abspath(p), self.root)
        p = os.path.normpath(p).replace(os.sep, "/")
        if p in (".", "") or p.startswith("../") or p == ".." or os.path.isabs(p):
            raise FileError(f"{path}: outside the store's root {self.root or '(none)'}")
        return p

    def _language(self, rel: str) -> str:
        language = languages.detect(rel)
        if language is None:
            raise FileError(f"{rel}: unsupported language (extension "
                            f"{os.path.splitext(rel)[1] or 'none'})")  # fmt: skip
        return language

    def _read_working(self, rel: str) -> tuple[bytes, int, int]:
        path = os.path.join(self.root, rel)
        for _ in range(3):  # a file rewritten while read is read again
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise FileVanished(f"{rel}: the file vanished (use remove() to drop it)") from None
            try:
                before = os.fstat(fd)
                if S_ISDIR(before.st_mode):
                    raise FileError(f"{rel}: is a directory")
                data = os.pread(fd, before.st_size + 1, 0)  # one byte more: it grew
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) \
                    and len(data) == after.st_size:  # fmt: skip
                return data, after.st_size, after.st_mtime_ns
        return data, len(data), -1  # still changing: stored as an unsaved text

    # state
    def _current(self, rel: str) -> tuple[object, int] | None:
        """(blob row, version) of a stored file, or None."""
        found = self.cat.current(rel)
        return None if found is None else (found[0], found[2])

    def _live_file(self, rel: str) -> LiveFile:
        """The file's live state, made from the store (one full parse) when not held."""
        lf = self.live.get(rel)
        if lf is not None:
            return lf
        cur = self._current(rel)
        if cur is None:
            raise KeyError(f"{rel} is not in the store (update() it first)")
        blob, version = cur
        source = self.store._source(blob, rel)
        record = self.store._record(blob, rel)
        cap, _ = parse_live(source, blob.language, extract=False)
        lf = LiveFile(rel, blob.language, source, cap, version, record, version, source,
                      nodes=blob.nodes)  # fmt: skip
        self._hold(lf)
        return lf

    def _hold(self, lf: LiveFile) -> None:
        """Keep `lf` (most recent last), letting the least recent go past the live budget;
        the total is kept as files come and go (each file's size taken when it is held)."""
        self._live_total -= self._live_sizes.pop(lf.path, 0)
        self.live.pop(lf.path, None)
        size = lf.nbytes
        self.live[lf.path] = lf
        self._live_sizes[lf.path] = size
        self._live_total += size
        while self._live_total > self.live_bytes and len(self.live) > 1:
            path = next(iter(self.live))
            if path in self.dirty:  # commit before letting its tree go
                self._commit_group()
            self.live.pop(path)
            self._live_total -= self._live_sizes.pop(path)

    def live_summary(self) -> dict:
        return {"files": len(self.live), "bytes": self._live_total,
                "budget_bytes": self.live_bytes}  # fmt: skip

    # the three writes
    def update(self, path: str | os.PathLike[str], source: bytes | None = None) -> int:
        rel = self.rel(path)
        language = self._language(rel)
        if source is None:
            source, size, mtime = self._read_working(rel)
        else:
            source, size, mtime = bytes(source), len(source), -1
        reason = check_source(source)
        if reason:
            raise FileError(f"{rel}: cannot be stored: {reason}")
        if rel in self.dirty:
            self._commit_group()
        found = self.cat.current(rel)
        cur = None if found is None else (found[0], found[2])
        if found is not None and found[3] == indexer.content_digest(language, source):
            if found[1] != (size, mtime):
                self.cat.begin()
                self.cat.put_file(rel, found[0].id, size, mtime, version=found[2])
                self.cat.commit()
            return found[2]
        lf = self.live.get(rel)
        if lf is not None and lf.language == language:
            start, old_end, new_end = common_edit(lf.source, source)
            edit_tree(lf.tree, lf.lines(), start, old_end, source[start:new_end])
            cap, parsed = parse_live(source, language, lf.tree)
        else:
            cap, parsed = parse_live(source, language)
        prev: dict = {}
        if cur is not None:
            blob, version = cur
            prev["prev_version"] = version
            prev["prev_text"] = lf.source if lf is not None and lf.version == version else \
                self.store._source(blob, rel)  # fmt: skip
            held = lf is not None and lf.record_version == version
            prev["prev_record"] = lf.record if held else \
                self.store._record(blob, rel)  # fmt: skip
            prev["prev_ids"] = lf.ids if held else None
        version = self._next_version(rel, cur)
        entry_args = self._materialize(rel, language, source, size, mtime, parsed, version,
                                       **prev)  # fmt: skip
        self._write(jn.UPDATE, entry_args)
        new = LiveFile(rel, language, source, cap, version, entry_args[2], version, source,
                       nodes=len(parsed[0]), ids=entry_args[3])  # fmt: skip
        self._hold(new)
        self.stats["updates"] += 1
        self._commit_if_due(force=self.durability == "commit")
        return version

    def remove(self, path: str | os.PathLike[str]) -> int:
        rel = self.rel(path)
        if rel in self.dirty:
            self._commit_group()
        cur = self._current(rel)
        if cur is None:
            raise KeyError(f"{rel} is not in the store")
        if rel in self.live:
            self.live.pop(rel)
            self._live_total -= self._live_sizes.pop(rel)
        self._write(jn.REMOVE, ((cur[1], now_ms()), (rel.encode("utf-8", "surrogateescape"),)))
        self.stats["removes"] += 1
        self._commit_if_due(force=self.durability == "commit")
        return cur[1]

    def apply_edit(self, path: str | os.PathLike[str], start_byte: int, old_end_byte: int,
                   new_end_byte: int, new_text: bytes | str) -> int:  # fmt: skip
        rel = self.rel(path)
        text = new_text.encode() if isinstance(new_text, str) else bytes(new_text)
        lf = self._live_file(rel)
        old = lf.source
        if not (0 <= start_byte <= old_end_byte <= len(old)):
            raise FileError(f"{rel}: edit range [{start_byte}, {old_end_byte}) is outside the "
                            f"file (0..{len(old)} bytes)")  # fmt: skip
        if new_end_byte != start_byte + len(text):
            raise FileError(f"{rel}: new_end_byte {new_end_byte} != start_byte {start_byte} + "
                            f"{len(text)} bytes of new text")  # fmt: skip
        new = old[:start_byte] + text + old[old_end_byte:]
        reason = check_source(new)
        if reason:
            raise FileError(f"{rel}: the edit would make it unstorable: {reason}")
        after = edit_tree(lf.tree, lf.lines(), start_byte, old_end_byte, text)
        batch = self.durability == "batch"
        cap, parsed = parse_live(new, lf.language, lf.tree, extract=not batch)
        version = lf.version + 1
        old_text = old[start_byte:old_end_byte]
        if self.durability == "commit":
            args = self._materialize(
                rel, lf.language, new, len(new), -1, parsed, version, prev_version=lf.version,
                prev_text=old, prev_record=lf.record if lf.record_version == lf.version else None,
                edit=(start_byte, old_end_byte, new_end_byte), old_text=old_text,
                prev_ids=lf.ids if lf.record_version == lf.version else None)
            self._write(jn.UPDATE, args)
            lf.record, lf.record_version, lf.record_source = args[2], version, new
            lf.ids = args[3]
        else:
            lines = len(after) + (1 if new and new[-1] != 10 else 0)
            ints = (version, start_byte, old_end_byte, new_end_byte, len(new), lines,
                    signed32(crc32c(new)), now_ms())  # fmt: skip
            self._write(jn.EDIT, (ints, (rel.encode("utf-8", "surrogateescape"), text, old_text)))
            lf.pending.append(version)
            self.dirty[rel] = lf
        lf.source, lf.tree, lf.version, lf.newlines = new, cap, version, after
        if parsed is not None:
            lf.nodes = len(parsed[0])
        self._hold(lf)
        self.stats["edits"] += 1
        self._commit_if_due(force=self.durability == "commit")
        return version

    # encoding and journaling
    def _next_version(self, rel: str, cur) -> int:
        """One more than the file's version; for a file not stored, than any version its
        history keeps (a removed file written again)."""
        if cur is not None:
            return cur[1] + 1  # no kept version is newer than a stored file's own
        return vs.last_version(self.cat.db, rel) + 1

    def _encode(self, rel, language, source, mtime, parsed):
        if indexer._OWNER[0] is not self:
            indexer._init_worker(self.dicts, LIVE_LEVEL)
            indexer._OWNER[0] = self
        enc, record = indexer.encode_source(rel, language, source, mtime, parsed)
        if enc.skipped:
            raise FileError(f"{rel}: cannot be stored: {enc.skipped}")
        return enc, record

    def _materialize(self, rel, language, source, size, mtime, parsed, version, *,
                     prev_version: int = -1, prev_text: bytes | None = None,
                     prev_record: bytes | None = None, prev_record_text: bytes | None = None,
                     edit=None, old_text: bytes = b"",
                     prev_ids: tuple | None = None) -> tuple:  # fmt: skip
        """An UPDATE entry's (ints, blobs) and the new tree record, for `version` of `rel`.
        The entry carries the delta of the version it supersedes (`prev_version`): of its
        text when `prev_text` is given (for an edit: the inverse edit), of its tree when
        `prev_record` is (the record of `prev_version`)."""
        enc, record = self._encode(rel, language, source, mtime, parsed)
        exists = self.cat.blob_id(enc.digest) is not None
        src_delta = tree_delta = b""
        pv = pkind = psize = plines = pcrc = tree_of = -1
        if prev_text is not None:
            pv = prev_version
            psize, plines = len(prev_text), count_lines(prev_text)
            pcrc = signed32(crc32c(prev_text))
            if edit is not None:
                pkind, src_delta = vs.EDIT, vs.inverse_edit(edit[0], edit[2], old_text)
            else:
                pkind, src_delta = vs.ZSTD, vs.patch_from(prev_text, source)
        if prev_record:
            tree_of, tree_delta = prev_version, vs.patch_from(prev_record, record)
        ids, next_id, mine = b"", -1, None
        if prev_record:  # stable ids: this version's nodes matched to those of prev_version
            before = prev_record_text if prev_record_text is not None else prev_text
            if before is not None:
                ids, next_id, mine = self._stable_ids(rel, prev_version, prev_record, before,
                                                      parsed[0], source, prev_ids)  # fmt: skip
        start, old_end, new_end = edit if edit is not None else (-1, -1, -1)
        ints = (version, size, mtime, enc.lines, enc.nodes, enc.level, *enc.dicts,
                signed32(crc32c(source)), now_ms(), start, old_end, new_end,
                pv, pkind, psize, plines, pcrc, tree_of, next_id)  # fmt: skip
        blobs = (rel.encode("utf-8", "surrogateescape"), language.encode(), enc.digest,
                 b"" if exists else enc.tree, b"" if exists else enc.source,
                 _pack_symbols(enc.symbols), enc.definitions, enc.kinds, src_delta, tree_delta,
                 ids)  # fmt: skip
        return ints, blobs, record, mine

    def _stable_ids(self, rel: str, prev_version: int, prev_record: bytes, prev_text: bytes,
                    cols, source: bytes,
                    prev_ids: tuple | None) -> tuple[bytes, int, tuple]:  # fmt: skip
        """(packed ids, next free id, (Side, ids, next id)) of a new version, from the
        previous one's ids (`prev_ids`: its (Side, ids, next id) when the writer holds them)."""
        if prev_ids is None:
            prev_cols = decode(prev_record)
            got = vs.ids_of(self.cat.db, rel, prev_version)
            if got is not None and got[0] is not None:
                old_ids, next_id = stable.unpack_runs(got[0]), int(got[1])
            else:  # its first version: ids are preorder indexes
                old_ids, next_id = np.arange(len(prev_cols), dtype=np.int64), len(prev_cols)
            prev_ids = (stable.Side(prev_cols, prev_text), old_ids, next_id)
        side = stable.Side(cols, source)
        matched = stable.match(prev_ids[0], None, side, None)
        ids, next_id = stable.assign(prev_ids[1], matched, prev_ids[2])
        return stable.pack_runs(ids), next_id, (side, ids, next_id)

    def _write(self, kind: int, args: tuple) -> None:
        self.seq += 1
        entry = self.journal.append(kind, self.seq, args[0], args[1])
        self.unsynced.append(entry)
        if not self.first_pending:
            self.first_pending = time.monotonic()

    def _commit_if_due(self, force: bool = False) -> None:
        if not self.unsynced:
            return
        if force or len(self.unsynced) >= self.batch_entries or \
                (time.monotonic() - self.first_pending) * 1000 >= self.batch_ms:  # fmt: skip
            self._commit_group()

    def sync(self) -> None:
        """Commit what is pending: durable and visible to readers when it returns."""
        self._commit_group()

    def _commit_group(self) -> None:
        """Store each dirty file's newest version (its tree), fsync the journal, apply every
        entry written since the last commit in one catalog transaction."""
        for rel, lf in list(self.dirty.items()):
            base = lf.pending[0] - 1  # its text deltas came with the edit entries
            parsed = extract_live(lf.tree, lf.language)
            lf.nodes = len(parsed[0])
            args = self._materialize(
                rel, lf.language, lf.source, len(lf.source), -1, parsed, lf.version,
                prev_version=base, prev_record=lf.record if lf.record_version == base else None,
                prev_record_text=lf.record_source,
                prev_ids=lf.ids if lf.record_version == base else None)
            self._write(jn.UPDATE, args)
            lf.record, lf.record_version, lf.record_source = args[2], lf.version, lf.source
            lf.ids = args[3]
            lf.pending = []
        self.dirty.clear()
        if not self.unsynced:
            return
        faults.point("live.journal_written")
        synced = self.journal.sync_started()  # the transaction is built while it runs

        def durable() -> None:
            synced()
            faults.point("live.journaled")

        self.apply(self.unsynced, before_commit=durable)
        faults.point("live.committed")
        self.unsynced = []
        self.first_pending = 0.0
        self.stats["commits"] += 1
        if self.journal.size >= CHECKPOINT_BYTES and not self._checkpointing:
            self.checkpoint()

    # applying entries to the catalog (commit and replay)
    def apply(self, entries: list[jn.Entry], before_commit=None, more=None) -> None:
        """Apply entries in one catalog transaction; `before_commit` (waiting for the
        journal's fsync) runs just before COMMIT: an entry is durable before the
        transaction that applies it. `more()`, called once `entries` are applied (inside the
        transaction), returns further entries it journaled and synced, applied too."""
        cat = self.cat
        try:
            cat.begin(journaled=True)  # the journal is the durable copy
            self._apply_each(entries)
            if more is not None:
                extra = more()
                self._apply_each(extra)
                entries = entries + extra
            last = entries[-1]
            cat.set_meta("journal", f"{self.journal.seg_id} {last.end} {last.seq}")
            if before_commit is not None:
                before_commit()
            cat.commit()
        except BaseException:
            if cat.db.in_transaction:
                cat.db.execute("ROLLBACK")
            raise
        self.applied = entries[-1].end
        self.store.committed()

    def _apply_each(self, entries: list[jn.Entry]) -> None:
        for e in entries:
            if e.kind == jn.UPDATE:
                self._apply_update(e)
            elif e.kind == jn.EDIT:
                self._apply_edit(e)
            else:
                self._apply_remove(e)

    def _apply_update(self, e: jn.Entry) -> None:
        u = dict(zip(U_INTS, e.ints, strict=True))
        path_b, lang_b, digest, tree, src, syms, defs, kinds, src_delta, tree_delta, ids = e.blobs
        rel = path_b.decode("utf-8", "surrogateescape")
        language = lang_b.decode()
        cat = self.cat
        blob = cat.blob_id(digest)
        if blob is None:
            if not tree:
                raise CorruptRecord(f"journal entry {e.seq} ({rel}): its blob is gone")
            seg = self.journal.seg_id
            t = (seg, e.starts[3], len(tree), crc32c(tree))
            s = (seg, e.starts[4], len(src), crc32c(src))
            blob = cat.add_blob(digest, language, u["size"], u["lines"], u["nodes"], t, s,
                                (u["tree_dict"], u["src_dict"]), u["level"])  # fmt: skip
            cat.add_symbols({blob: _unpack_symbols(syms)})
            if defs:
                cat.add_definitions([(blob, defs)])
            cat.add_kinds([(blob, kinds)])
            cat.put_grammar(language)
        db = cat.db
        pv = u["prev_version"]
        if pv >= 0:
            self._keep_row(rel, pv, (u["prev_size"], u["prev_lines"], u["prev_crc"]))
            vs.supersede(db, rel, pv, u["prev_kind"], src_delta, None, None)
        if u["tree_of"] >= 0 and tree_delta:
            vs.set_tree_delta(db, rel, u["tree_of"], u["version"], tree_delta)
        edit = vs.pack_edit(u["start"], u["old_end"], u["new_end"]) if u["start"] >= 0 else \
            vs.edit_of(db, rel, u["version"])  # fmt: skip  (made by an edit entry of the group)
        vs.put_current(db, rel, u["version"], u["made_ms"], u["size"], u["lines"], u["crc"],
                       edit, ids or None, u["next_id"] if u["next_id"] >= 0 else None)  # fmt: skip
        cat.put_file(rel, blob, u["size"], u["mtime_ns"], version=u["version"])
        vs.prune(db, rel, u["version"], self.keep, self.keep_bytes)

    def _apply_edit(self, e: jn.Entry) -> None:
        d = dict(zip(E_INTS, e.ints, strict=True))
        path_b, new_text, old_text = e.blobs
        rel = path_b.decode("utf-8", "surrogateescape")
        db = self.cat.db
        v = d["version"]
        self._keep_row(rel, v - 1)  # the version it edits, if stored by `index`
        vs.supersede(db, rel, v - 1, vs.EDIT,
                     vs.inverse_edit(d["start"], d["new_end"], old_text), None, None)
        vs.put_current(db, rel, v, d["made_ms"], d["size"], d["lines"], d["crc"],
                       vs.pack_edit(d["start"], d["old_end"], d["new_end"]))  # fmt: skip

    def _apply_remove(self, e: jn.Entry) -> None:
        version, made = e.ints
        rel = e.blobs[0].decode("utf-8", "surrogateescape")
        cat = self.cat
        found = cat.blob_for(rel)
        if found is None:
            return
        blob = found[0]
        self._keep_row(rel, version, blob=blob)
        vs.supersede(cat.db, rel, version, vs.FULL, None, None, None, blob=blob.id)
        cat.remove_file(rel)

    def _keep_row(self, rel: str, version: int, stats: tuple[int, int, int] | None = None,
                  blob=None) -> None:  # fmt: skip
        """Give `version` of `rel` a history row if it has none (a version `index` stored):
        from `stats` (size, lines, CRC32C), else from the text of `blob` (default: the
        file's current one)."""
        db = self.cat.db
        if vs.has_row(db, rel, version):
            return
        if stats is None:
            if blob is None:
                found = self.cat.blob_for(rel)
                if found is None:
                    return
                blob = found[0]
            src = self.store._source(blob, rel)
            stats = (len(src), count_lines(src), signed32(crc32c(src)))
        vs.put_current(db, rel, version, 0, *stats, None)

    # replay and checkpoint
    def replay(self) -> dict:
        """Apply the journal's entries past the applied point (after a crash). A torn or
        damaged entry ends the replay: it and everything after it are set aside
        (`<journal>.rejected-<time>`) and reported."""
        self.journal.unsynced = 1  # what a crashed process wrote may be in the page cache only
        self.journal.sync()
        sc = jn.scan(self.journal.path, self.applied)
        todo = [e for e in sc.entries if e.seq > self._applied_seq()]
        report = {"replayed": len(todo), "dropped_bytes": sc.dropped_bytes, "damage": sc.damage,
                  "entries_after_damage": 0, "rejected_file": None}  # fmt: skip
        if sc.damage:
            report["entries_after_damage"] = jn.count_entries_after(self.journal.path, sc.end)
            kept = jn.set_aside(self.journal.path, sc.end)
            report["rejected_file"] = str(kept) if kept else None
            self.journal.truncate(sc.end)
        if todo:
            self.seq = max(self.seq, todo[-1].seq)
            faults.point("live.replaying")
            self._replay(todo)
        return report

    def _applied_seq(self) -> int:
        return jn.journal_position(self.cat.meta())[2]

    def _replay(self, todo: list[jn.Entry]) -> None:
        """Apply replayed entries. A file's edits whose group never reached its UPDATE entry
        (a torn group) are stored too, in the same transaction: applied forward to the text
        they started from, journaled as an UPDATE entry and synced before the commit (a kill
        before it leaves the journal to replay again, never half a replay)."""
        open_edits: dict[str, list[jn.Entry]] = {}
        for e in todo:
            rel = e.blobs[0].decode("utf-8", "surrogateescape")
            if e.kind == jn.EDIT:
                open_edits.setdefault(rel, []).append(e)
            else:
                open_edits.pop(rel, None)

        def store_open_edits() -> list[jn.Entry]:
            for rel, edits in open_edits.items():
                found = self.cat.blob_for(rel)  # inside the transaction: after the entries
                if found is None:
                    continue
                b = found[0]
                text = base_text = self.store._source(b, rel)
                for e in edits:
                    d = dict(zip(E_INTS, e.ints, strict=True))
                    text = text[: d["start"]] + e.blobs[1] + text[d["old_end"] :]
                    if signed32(crc32c(text)) != d["crc"]:
                        raise CorruptRecord(f"{rel}: journaled edits do not rebuild version "
                                            f"{d['version']}")  # fmt: skip
                language = self._language(rel)
                _, parsed = parse_live(text, language)
                record = self.store._record(b, rel)
                args = self._materialize(
                    rel, language, text, len(text), -1, parsed, edits[-1].ints[0],
                    prev_version=edits[0].ints[0] - 1, prev_record=record,
                    prev_record_text=base_text)
                self._write(jn.UPDATE, args)
            stored, self.unsynced, self.first_pending = self.unsynced, [], 0.0
            if stored:
                self.journal.sync()
                faults.point("live.replay_stored")
            return stored

        self.apply(todo, more=store_open_edits if open_edits else None)

    def checkpoint(self, jobs: int = 1) -> dict:
        """Fold the journal into frozen segments: commit what is pending, begin a new
        journal, recompress the blobs written since (zstd 19), drop the old journal once
        nothing points into it, rebuild the path index. Readers are never blocked."""
        from .freeze import freeze_store

        self._commit_group()
        self._checkpointing = True
        try:
            report = freeze_store(self.store, jobs)  # rotates the journal first
        finally:
            self._checkpointing = False
        self.store.rebuild_path_index()
        self.stats["checkpoints"] += 1
        return {"blobs_frozen": report.blobs, "segments_removed": report.segments_removed,
                "journal": self.journal.seg_id, "seconds": round(report.seconds, 3)}  # fmt: skip

    def reopen_journal(self, seg_id: int) -> None:
        """Append to journal `seg_id` from now on (the store rotated it)."""
        self.journal.close()
        self.journal = jn.Journal(self.store.directory / "segments", seg_id)
        self.applied = 0

    def close(self) -> None:
        try:
            self._commit_group()
        finally:
            self.journal.close()
            self.live.clear()
            self._live_sizes.clear()
            self._live_total = 0
