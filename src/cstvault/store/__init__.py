"""The store: a directory with a SQLite catalog and append-only segment files.

`Store` opens it read-only for navigation (`cstvault.open`) or for writing (the indexer).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import zstandard

from .. import faults, languages
from ..cache import CacheConfig, TieredCache
from ..checksum import crc32c
from ..codec import CorruptRecord, read_header
from ..sources import DeferredSource
from ..tree import Node, Tree, tree_from_record
from . import packs, pathindex
from .catalog import Catalog, FileRow, IncompleteStore, StoreVersionError
from .history import IdsLoader
from .journal import JOURNAL_BASE, journal_position, needs_replay
from .lock import LOCK, StoreLocked, WriterLock
from .segments import SegmentReader, SegmentWriter, segment_name
from .versions import size_bytes as versions_bytes

__all__ = ["FileRow", "IncompleteStore", "ShardedStoreError", "Store", "StoreLocked",
           "StoreVersionError", "open_store"]

CATALOG = "catalog.sqlite"
LIVE_SHARE = 0.25  # of a writing store's memory budget, for the writer's live trees
DCTX_CACHE = 8
SEGMENTS = "segments"


class ShardedStoreError(ValueError):
    """A single store's operation (writes, gc, freeze, checkpoint) asked of a sharded store."""


def resolve(path: str | os.PathLike[str]) -> Path:
    """A store directory: `path` itself, or `path/.cstvault` when that holds a store."""
    p = Path(path)
    for d in (p, p / ".cstvault"):
        if (d / "shards.json").exists():
            raise ShardedStoreError(f"{d} is a sharded store: this works on a single store "
                                    "(read a sharded one with cstvault.open(); update it by "
                                    "running `cstvault index` again)")  # fmt: skip
    if (p / CATALOG).exists():
        return p
    if (p / ".cstvault" / CATALOG).exists():
        return p / ".cstvault"
    for d in (p, p / ".cstvault"):
        if (d / LOCK).exists():  # made first by a writer creating the store
            raise IncompleteStore(f"store at {d} is incomplete (its creation was interrupted): "
                                  "re-run `cstvault index` to create it")  # fmt: skip
    raise FileNotFoundError(f"no cstvault store at {p} (run `cstvault index` first)")


class Store:
    """An opened store. Use as a context manager; every read is CRC-checked."""

    def __init__(self, directory: Path, catalog: Catalog, config: CacheConfig | None = None,
                 *, segment_lru: bool = True, working_tree: bool = True,
                 lock: WriterLock | None = None, live: dict | None = None):  # fmt: skip
        self.directory = directory
        self.catalog = catalog
        self._lock = lock
        self.config = config or CacheConfig()
        self.cache = TieredCache(self.config)
        self._reader = SegmentReader(directory / SEGMENTS, keep_open=segment_lru)
        self._writer: SegmentWriter | None = None
        # (decompressor, its dictionary's bytes) by (shard, dictionary id)
        self._dctxs: OrderedDict[tuple, tuple[zstandard.ZstdDecompressor, int]] = OrderedDict()
        self._packs = packs.PackCache()  # decompressed source packs
        self._tree_packs = packs.PackCache()
        self._paths = pathindex.PathIndex(directory)
        catalog.before_write = self._before_write
        self._invalidate = pathindex.Invalidator(directory)
        self.closed = False
        meta = catalog.meta()
        root = meta.get("root") if working_tree else None
        self._root = root or None
        self._live = None
        self._live_options = live or {}
        self._shard: int | None = None  # a sharded store's shard: its key space in a shared cache
        self.recovery: dict | None = None  # what replaying the journal at open did
        if needs_replay(directory, meta):
            self._recover()

    def _recover(self) -> None:
        """Replay the journal's unapplied entries (a crash came between a write's journal
        entry and its catalog commit, or left a torn tail). A writer always does; a reader
        does when no writer holds the store (else the writer is live and applies them)."""
        mine = self._lock
        if mine is None:
            try:
                self._lock = WriterLock(self.directory, 0.0)
            except StoreLocked:
                return
        try:
            self.recovery = self.live_writer().replay()
        finally:
            if mine is None:
                self._live.close()
                self._live = None
                self._close_writer()
                self._lock = None
    @classmethod
    def create(cls, directory: Path, *, wait: float = 0.0) -> Store:
        """Open for writing, creating the store if needed (holds the writer lock, waiting
        up to `wait` seconds for another writer: else StoreLocked)."""
        lock = WriterLock(directory, wait)
        try:
            return cls(directory, Catalog(directory / CATALOG, create=True), lock=lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: CacheConfig | None = None, *,
             segment_lru: bool = True, working_tree: bool = True, write: bool = False,
             wait: float = 0.0, durability: str = "commit", batch_entries: int = 64,
             batch_ms: float = 20.0, keep_versions: int | None = None,
             keep_version_bytes: int | None = None) -> Store:  # fmt: skip
        """Open for reading, or with `write=True` for writing (holding the writer lock,
        waiting up to `wait` seconds for another writer: else StoreLocked).
        `segment_lru=False` opens and closes a segment for every frame read instead of
        keeping segments open (LRU); `working_tree=False` serves text from the store's own
        frames. Per-file writes (`update`, `remove`, `apply_edit`) are durable when they
        return with `durability="commit"`; with "batch" edits are committed as a group
        (`batch_entries`, `batch_ms`, `sync()`, close). `keep_versions`, `keep_version_bytes`:
        versions kept per file, by count and by delta bytes (kept in the store once given)."""
        live = {"durability": durability, "batch_entries": batch_entries,
                "batch_ms": batch_ms, "keep_versions": keep_versions,
                "keep_version_bytes": keep_version_bytes}  # fmt: skip
        directory = resolve(path)
        lock = WriterLock(directory, wait) if write else None
        try:
            catalog = Catalog(directory / CATALOG)
            for name, version, data in catalog.grammars():
                languages.offer(name, version, data)
            return cls(directory, catalog, config, segment_lru=segment_lru,
                       working_tree=working_tree, lock=lock, live=live)  # fmt: skip
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    def _before_write(self) -> None:
        """Run by `Catalog.begin` with SQLite's write lock held: only the holder of the
        store's writer lock writes; then the path index stops being current."""
        if self._lock is None or not self._lock.held:
            raise StoreLocked(f"store {self.directory} was opened for reading: writes need "
                              "Store.open(..., write=True), which takes the writer lock")
        self._invalidate(self._lock)

    def writer(self) -> SegmentWriter:
        if self._lock is None or not self._lock.held:
            raise StoreLocked(f"store {self.directory} was opened for reading")
        if self._writer is None:
            self._writer = SegmentWriter(self.directory / SEGMENTS, self.catalog.next_segment())
        return self._writer

    # per-file writes (live.py)
    def live_writer(self):
        """The per-file writer (needs the writer lock: `Store.open(..., write=True)`)."""
        if self._lock is None or not self._lock.held:
            raise StoreLocked(f"store {self.directory} was opened for reading: per-file writes "
                              "need cstvault.open(path, write=True)")  # fmt: skip
        if self._live is None:
            from ..live import LiveWriter

            opts = dict(self._live_options)
            meta = self.catalog.meta()
            want = {k: str(int(opts[k])) for k in ("keep_versions", "keep_version_bytes")
                    if opts.get(k) is not None and meta.get(k) != str(int(opts[k]))}  # fmt: skip
            if want:  # retention is kept in the store once given
                self.catalog.begin()
                for key, value in want.items():
                    self.catalog.set_meta(key, value)
                self.catalog.commit()
            self._live = LiveWriter(self, **opts)
            # the live trees' share comes out of the same budget: the RAM tiers keep the rest
            cfg = self.config
            self.config = CacheConfig(cfg.max_memory_mb * (1 - LIVE_SHARE), cfg.hot_percent,
                                      cfg.warm_percent, cfg.cold_percent)  # fmt: skip
            self.cache = TieredCache(self.config)
        return self._live

    def update(self, path: str | os.PathLike[str], source: bytes | None = None) -> int:
        """Store a file's new text (None: read the working file); returns its version."""
        return self.live_writer().update(path, source)

    def remove(self, path: str | os.PathLike[str]) -> int:
        """Drop a file (its history stays readable); returns its last version."""
        return self.live_writer().remove(path)

    def apply_edit(self, path: str | os.PathLike[str], start_byte: int, old_end_byte: int,
                   new_end_byte: int, new_text: bytes | str) -> int:  # fmt: skip
        """Apply an incremental change (LSP style: replace [start_byte, old_end_byte) by
        `new_text`, ending at `new_end_byte`) to the stored text; returns the new version."""
        return self.live_writer().apply_edit(path, start_byte, old_end_byte, new_end_byte,
                                             new_text)  # fmt: skip

    def sync(self) -> None:
        """Commit pending batched edits (durable and visible to readers when it returns)."""
        if self._live is not None:
            self._live.sync()

    def checkpoint(self, jobs: int = 1) -> dict:
        """Fold the journal into frozen segments (see LiveWriter.checkpoint)."""
        return self.live_writer().checkpoint(jobs)

    def versions(self, path: str) -> list:
        """The kept versions of a file (`versions.Version`), newest first."""
        from . import versions as vs

        listed = vs.listing(self.catalog.db, path) if vs.exists(self.catalog.db) else []
        current = self.catalog.file_version(path)
        if current and not any(v.version == current for v in listed):
            blob, _ = self._located(path)
            listed.insert(0, vs.Version(current, 0, blob.size, blob.lines, True, "current",
                                        None, 0))  # fmt: skip
        if not listed:
            raise KeyError(f"{path} is not in the store and has no kept versions")
        return listed

    def rotate_journal(self) -> bool:
        """Begin a new journal if the current one holds entries (all applied: a live
        writer's pending group is committed first); the old one's frames stay readable
        until `freeze` relocates them and it is deleted. False if there was nothing to do."""
        seg, _, seq = journal_position(self.catalog.meta())
        try:
            if os.stat(self.directory / SEGMENTS / segment_name(seg)).st_size == 0:
                return False
        except FileNotFoundError:
            return False
        if self._live is not None:
            self._live.sync()
            seq = max(seq, self._live.seq)
        self.catalog.begin()
        self.catalog.set_meta("journal", f"{seg + 1} 0 {seq}")
        self.catalog.commit()
        if self._live is not None:
            self._live.reopen_journal(seg + 1)
        faults.point("live.rotated")
        return True

    def rebuild_path_index(self) -> None:
        """Rebuild the path index now (a long-lived writer; otherwise done at close)."""
        if self.catalog.wrote and self._lock is not None and self._lock.held:
            self._invalidate.forget()  # first: a build that fails half-way is no exception
            pathindex.build(self.catalog, self.directory)
            self.catalog.wrote = False

    # reading
    def files(self) -> Iterator[FileRow]:
        return self.catalog.files()

    def _decompressor(self, did: int) -> zstandard.ZstdDecompressor:
        """Decompression contexts by dictionary, an LRU of DCTX_CACHE (each holds a zstd
        context and the digested dictionary; making one digests the dictionary again)."""
        key = (self._shard, did)  # a sharded store's shards share the LRU
        got = self._dctxs.get(key)
        if got is not None:
            self._dctxs.move_to_end(key)
            return got[0]
        data = self.catalog.dictionary(did) if did else b""
        d = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data)
                                       if data else None)  # fmt: skip
        self._dctxs[key] = (d, len(data))
        if len(self._dctxs) > DCTX_CACHE:
            self._dctxs.popitem(last=False)
        self._charge()
        return d

    def _charge(self) -> None:
        """Charge the cache's budget with what the store holds besides trees: its zstd
        contexts (as zstd sizes them, window buffers included, and their dictionaries) and
        its decompressed packs. Shards share these, and so the charge."""
        held = sum(d.memory_size() + n for d, n in self._dctxs.values())
        self.cache.hold("store", held + self._packs.nbytes() + self._tree_packs.nbytes())

    def _record(self, blob, path: str) -> bytes:
        """A blob's tree record: its own frame or its member of a tree pack."""
        return self._member(blob.tree, blob.tree_dict, blob.id, "tree record", path,
                            self._tree_packs)  # fmt: skip

    def _member(self, loc: tuple[int, int, int, int], did: int, blob: int, what: str,
                path: str, cache: packs.PackCache) -> bytes:  # fmt: skip
        key = loc if self._shard is None else (self._shard, *loc)  # shards share the caches
        try:
            dctx = self._decompressor(did)
            if key in cache:
                return cache.member(key, lambda: self._reader.read(*loc), blob, dctx)
            raw = self._reader.read(*loc)
            if packs.is_pack(raw):
                text = cache.member(key, raw, blob, dctx)
                self._charge()
                return text
            return dctx.decompress(raw)
        except (CorruptRecord, zstandard.ZstdError, KeyError) as exc:
            raise CorruptRecord(f"{path}: {what} unreadable: {exc}") from exc

    def raw_frame(self, loc: tuple[int, int, int, int]) -> bytes:
        """A frame's compressed bytes as stored, CRC-checked (freeze recompresses them)."""
        return self._reader.read(*loc)

    def frame_head(self, loc: tuple[int, int, int, int], n: int) -> bytes | None:
        """The first `n` bytes of a frame, unchecked (None if unreadable): enough to tell a
        source pack and its member count, never used as data."""
        try:
            return self._reader._pread(loc[0], loc[1], min(n, loc[2]))
        except CorruptRecord:
            return None

    def read_blob(self, blob, name: str) -> tuple[bytes, bytes]:
        """A blob's tree record and stored source, CRC-checked; `name` labels errors."""
        return self._record(blob, name), self._source(blob, name)

    def source(self, path: str, version: int | None = None) -> bytes:
        """A stored file's text; `version`: one of its kept versions."""
        if version is not None:
            from .history import version_source

            return version_source(self, path, version)
        return self._retrying(path, self._stored_source)

    def _stored_source(self, path: str, blob, indexed: tuple[int, int]) -> bytes:
        if self._root is None:
            return self._source(blob, path)
        return self._record_and_text(path, blob, indexed)[1]

    def record_and_text(self, path: str) -> tuple[bytes, bytes]:
        """A file's tree record and its text: the working-tree file when it still holds the
        bytes the record was made from (size and mtime as indexed, length and CRC32C as the
        record's), else the stored copy (whose source pack is then decompressed)."""
        return self._retrying(path, self._record_and_text)

    def _record_and_text(self, path: str, blob, indexed: tuple[int, int]) -> tuple[bytes, bytes]:
        record = self._record(blob, path)
        text = None
        if self._root is not None:
            try:
                head = read_header(record)
            except CorruptRecord:
                head = None  # the stored copy then (its caller checks the pair)
            if head is not None:
                text = self._working_text(path, indexed, head.source_len, head.source_crc)
        return record, (text if text is not None else self._source(blob, path))

    def _retrying(self, path: str, read):
        """`read(path, blob, indexed)`, once more with the catalog's new row if the blob's
        frames moved meanwhile (a concurrent `freeze` may delete the segments they were in)."""
        blob, indexed = self._located(path)
        try:
            return read(path, blob, indexed)
        except CorruptRecord:
            again, indexed = self._located(path)
            if again == blob:
                raise
            self._reader.close()
            return read(path, again, indexed)

    def _located(self, path: str):
        """(blob, (size, mtime_ns) when indexed): from the path index while it is current,
        else from the catalog."""
        found = self._paths.find(path)
        if found is False:
            found = self.catalog.blob_for(path)
        if found is None:
            raise KeyError(f"{path} is not in the store")
        return found

    def _blob(self, path: str):
        return self._located(path)[0]

    def _working_text(self, path: str, indexed: tuple[int, int], length: int,
                      crc: int) -> bytes | None:  # fmt: skip
        """The working-tree file's bytes, read once into memory, when its size and mtime
        are as indexed (checked on the opened file) and its length and CRC32C are the
        record's; else None. Never mapped: a file truncated or rewritten under a reader can
        neither fault it (SIGBUS) nor change bytes a tree already holds."""
        if self._root is None:
            return None
        try:
            fd = os.open(os.path.join(self._root, path), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if (st.st_size, st.st_mtime_ns) != indexed or st.st_size != length:
                return None
            data = os.pread(fd, length + 1, 0)  # one byte more: a file that grew since
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) == length and crc32c(data) == crc else None

    def tree(self, path: str, version: int | None = None) -> Tree:
        """The full tree of a stored file, served by the tiered cache (`version`: one of
        its kept versions, rebuilt from deltas).

        Its text is read when first asked for: from the working-tree file when that is
        unchanged (size and mtime as indexed, then its length and CRC32C those of the
        record), else from the store. Either way the tree then holds its own copy, counted
        in the cache budget, so it only ever returns the bytes it was parsed from.
        """
        if version is not None:
            from .history import version_tree

            return version_tree(self, path, version)
        return self._retrying(path, self._tree)

    def _cache_key(self, blob_id: int, path: str) -> tuple:
        """A tree's key in the tiered cache: its blob (and path, when its text may come from
        the working file), and the shard of a sharded store (whose shards share the cache)."""
        return blob_id, path if self._root is not None else None, self._shard

    def _tree(self, path: str, blob, indexed: tuple[int, int]) -> Tree:
        key = self._cache_key(blob.id, path)
        if self.cache.holds(key):  # callbacks only when a RAM tier may serve it
            tree = self.cache.get(
                key,
                lambda _: self._text(path, blob, indexed),
                lambda record, source: self._build(path, record, source),
            )  # fmt: skip
            if tree is not None:
                tree._ids = IdsLoader(self, path, None, blob.id)
                return tree
        t0 = time.perf_counter()  # the frozen tier: a cold open
        record = self._record(blob, path)
        tree, nbytes, source = self._build(path, record, self._text(path, blob, indexed))
        tree._ids = IdsLoader(self, path, None, blob.id)
        return self.cache.admit(key, tree, record, source, nbytes, t0)

    def stable_ids(self, path: str, version: int | None = None):
        """Stable node ids of a file's version (default: current), by node index: equal
        across versions for nodes matched as unchanged (see `stable`)."""
        from .history import stable_ids

        return stable_ids(self, path, version)

    def changed_ranges(self, path: str, old: int, new: int) -> list:
        """The ranges whose syntactic structure differs between two versions: what
        tree-sitter's `Tree.changed_ranges` answers after `old.edit(...)` with the edits that
        made `new` (the recorded ones when every version between was an `apply_edit`,
        else the line hunks of a diff) and a parse of `new` from the edited `old`."""
        from .history import changed_ranges

        return changed_ranges(self, path, old, new)

    def _text(self, path: str, blob, indexed: tuple[int, int]) -> object:
        """A tree's text, read when first needed: the working-tree file (checked), else the
        stored copy (a source pack is not decompressed for a tree whose text is never read)."""
        return _WorkingSource(self, blob, path, indexed)

    @staticmethod
    def _build(path: str, record: bytes, source: object) -> tuple[Tree, int, object]:
        """(tree, bytes of its buffers, its source) from a tree record and its source."""
        try:
            tree, length, crc, nbytes = tree_from_record(record)
            if isinstance(source, _WorkingSource):
                source.expect(length, crc)
            elif length != len(source) or crc != crc32c(source):
                raise CorruptRecord("source does not match its tree record")
        except CorruptRecord as exc:
            raise CorruptRecord(f"{path}: {exc}") from exc
        tree._src = source
        return tree, nbytes, source

    def _source(self, blob, path: str) -> bytes:
        """A blob's stored source: its own frame or its member of a source pack."""
        return self._member(blob.src, blob.src_dict, blob.id, "source", path, self._packs)

    def files_with_symbol(self, name: str | bytes) -> list[str]:
        """Paths of the files using an identifier, from the symbol table (no tree decoded)."""
        text = name.encode() if isinstance(name, str) else name
        return self.catalog.paths_of_blobs(self.catalog.blobs_with_symbol(text))

    def query(self, query: str | bytes, language: str, paths: list[str] | None = None,
              jobs: int = 1, progress=None):  # fmt: skip
        """Stream `StoreMatch(path, pattern_index, captures)` for a tree-sitter query over
        every stored file of `language` (under the gitignore-style globs `paths`), in path
        order. Files that cannot match are skipped unread (`search.plan`)."""
        from ..query import Query
        from ..search import plan, run

        q = Query(language, query)
        return run(self, q, plan(self, q, paths).paths, jobs, progress)

    def tags(self, path: str) -> list:
        """A file's definitions and references (`tags.Located`), as its grammar's tags query
        defines them."""
        from ..tags import file_tags

        return file_tags(self, path)

    def outline(self, path: str) -> list:
        """A file's definitions nested by containment, (depth, `tags.Located`), from the
        catalog (nothing parsed)."""
        from ..tags import file_definitions, outline

        return outline(file_definitions(self, path))

    def definitions(self, name: str | bytes, kind: str | None = None) -> list:
        """Where `name` is defined (`tags.Located`), optionally of one kind (e.g. function)."""
        from ..tags import definitions

        return definitions(self, name, kind)

    def references(self, name: str | bytes) -> list:
        """Where `name` is referenced (`tags.Located`)."""
        from ..tags import references

        return references(self, name)

    def node_at(self, path: str, row: int, column: int) -> Node:
        """The smallest node spanning the point (row, column) (0-based, byte columns)."""
        root = self.tree(path).root_node
        node = root.descendant_for_point_range((row, column), (row, column))
        return node if node is not None else root

    def _symbol_stats(self) -> dict:
        sym = self.catalog.symbol_counts()
        return {**sym, "symbol_interning_ratio": round(
            sym["symbol_refs"] / max(sym["symbols"], 1), 3)}  # fmt: skip

    def _segment_files(self) -> list[Path]:
        return sorted((self.directory / SEGMENTS).glob("*.seg"))

    def segment_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._segment_files())

    def gc(self, wait: float = 0.0) -> dict:
        """Reclaim what no committed file references (under the writer lock: a store opened
        for reading takes it for the duration, waiting up to `wait` seconds).

        Drops blobs no file points at, deletes segment files none of whose frames are
        referenced, truncates unreferenced tails (frames of a batch whose commit never
        happened), folds recent symbols into their blocks and compacts the catalog.
        """
        if self._lock is not None and self._lock.held:
            return self._gc()
        self._lock = WriterLock(self.directory, wait)
        try:
            return self._gc()
        finally:
            self._close_writer()

    def _gc(self) -> dict:
        if self.rotate_journal():  # fold the journal first (a checkpoint)
            from ..freeze import freeze_store

            freeze_store(self, jobs=1, gc=False)
        cat = self.catalog
        cat.begin()
        dropped = cat.drop_orphan_blobs()
        cat.commit()
        faults.point("gc.orphans_dropped")
        cat.compact_symbols()
        cat.compact()
        if self._writer is not None:  # our own appends are finished
            self._writer.close()
            self._writer = None
        removed, truncated, freed = self._reclaim(truncate=True)
        self._reader.close()
        return {"orphan_blobs": dropped, "segments_removed": removed,
                "segments_truncated": truncated, "bytes_freed": freed}  # fmt: skip

    def drop_dead_segments(self) -> int:
        """Delete segment files none of whose frames the catalog references (freeze calls
        this after each batch, so superseded segments go as it progresses)."""
        return self._reclaim(truncate=False)[0]

    def _reclaim(self, truncate: bool) -> tuple[int, int, int]:
        ends = self.catalog.referenced_segment_ends()
        active = self._writer.seg_id if self._writer is not None else None
        journal = journal_position(self.catalog.meta())[0]
        removed = truncated = freed = 0
        for seg in self._segment_files():
            seg_id = int(seg.stem)
            if seg_id == journal:
                continue  # the journal: its entries past the frames are not referenced
            size = seg.stat().st_size
            end = ends.get(seg_id)
            if end is None and seg_id != active:
                self._reader.forget(seg_id)
                seg.unlink()
                faults.point("segments.deleted")
                removed += 1
                freed += size
            elif truncate and end is not None and end < size and seg_id < JOURNAL_BASE:
                with open(seg, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
                faults.point("segments.truncated")
                truncated += 1
                freed += size - end
        return removed, truncated, freed

    def stats(self) -> dict:
        counts = self.catalog.counts()
        segments = self._segment_files()
        seg_bytes = sum(p.stat().st_size for p in segments)
        cat_bytes = sum(
            p.stat().st_size for p in self.directory.glob(CATALOG + "*") if p.is_file()
        )
        idx_bytes = sum(p.stat().st_size for p in (self.directory / pathindex.INDEX,
                                                     self.directory / pathindex.COUNTER)
                        if p.is_file())  # fmt: skip
        total = seg_bytes + cat_bytes + idx_bytes
        lines = max(counts["lines"], 1)
        return {
            **counts,
            "segments": len(segments),
            "version_delta_bytes": versions_bytes(self.catalog.db),
            "journal_bytes": sum(p.stat().st_size for p in segments
                                 if int(p.stem) >= JOURNAL_BASE),  # fmt: skip
            "disk_bytes": {"segments": seg_bytes, "catalog": cat_bytes,
                           "path_index": idx_bytes, "total": total},  # fmt: skip
            "disk_bytes_per_line": {
                "trees": round(counts["tree_frame_bytes"] / lines, 3),
                "sources": round(counts["source_frame_bytes"] / lines, 3),
                "catalog": round(cat_bytes / lines, 3),
                "path_index": round(idx_bytes / lines, 3),
                "total": round(total / lines, 3),
            },
            "skipped_files": [{"path": p, "reason": r}
                              for p, r in sorted(self.catalog.skipped().items())],  # fmt: skip
            "dedup_ratio": round(counts["files"] / max(counts["blobs"], 1), 3),
            "levels": self.catalog.levels(),
            "catalog_tables": self.catalog.table_bytes(),
            **self._symbol_stats(),
            "path_index": self._paths.summary(),
            "tiers": self.cache.summary(),
            "cache_bytes": self.cache.bytes_in_ram(),
            "budget_bytes": int(self.config.max_memory_mb * 1024 * 1024),
            "rss_bytes": rss_bytes(),
            "meta": self.catalog.meta(),
        }

    def committed(self) -> None:
        """The catalog now references every frame appended so far (after a commit)."""
        if self._writer is not None:
            self._writer.mark()

    def abort(self) -> None:
        """After a failed write step: take back the frames appended since the last commit,
        then close (the catalog rolled its transaction back itself)."""
        if self._writer is not None:
            self._writer.rollback()
            self._writer = None
        with contextlib.suppress(sqlite3.Error):
            if self.catalog.db.in_transaction:
                self.catalog.db.execute("ROLLBACK")
        self.close()

    def close(self) -> None:
        """Close; a store that wrote rebuilds the path index first (if that fails, e.g.
        another writer holds the lock, readers keep asking the catalog until a later run)."""
        self._packs.clear()
        self._tree_packs.clear()
        if self.closed:
            return
        self.closed = True
        try:
            if self._live is not None:
                self._live.close()
                self._live = None
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._reader.close()
            self._paths.close()
            self._close_writer()
            self.catalog.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _close_writer(self) -> None:
        """End a writing session: rebuild the path index (if this store wrote), then let the
        writer lock go."""
        if self._lock is None:
            return
        try:
            if self.catalog.wrote and self._lock.held:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self._invalidate.forget()
                    pathindex.build(self.catalog, self.directory)
                self.catalog.wrote = False
        finally:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _WorkingSource(DeferredSource):
    """A tree's text, fetched when first read: the working-tree file if it still holds the
    bytes the tree was parsed from (size, mtime, length and CRC32C checked), else the
    store's own copy; held in memory from then on, and counted in the cache budget."""

    __slots__ = ("store", "blob", "path", "indexed", "length", "crc")

    def __init__(self, store: Store, blob, path: str, indexed: tuple[int, int]):
        self.store, self.blob, self.path, self.indexed = store, blob, path, indexed
        self.length = self.crc = -1
        self.resolved = None

    def expect(self, length: int, crc: int) -> None:
        self.length, self.crc = length, crc

    def resolve(self) -> bytes:
        store = self.store
        source = None if store._root is None else \
            store._working_text(self.path, self.indexed, self.length, self.crc)  # fmt: skip
        if source is None:
            if store.closed:
                why = "the working file changed" if store._root is not None else \
                    "its text was not read yet"  # fmt: skip
                raise ValueError(f"{self.path}: {why} and the store is closed; reopen the "
                                 "store to read this tree's text")  # fmt: skip
            source = store._source(self.blob, self.path)
            if len(source) != self.length or crc32c(source) != self.crc:
                raise CorruptRecord(f"{self.path}: source does not match its tree record")
        self.resolved = source
        store.cache.grew(store._cache_key(self.blob.id, self.path), len(source))  # held in RAM
        return source


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def memory_breakdown() -> dict[str, int]:
    """Resident bytes split into anonymous (heap) and file-backed (mapped files) pages."""
    out = {"rss": 0, "anonymous": 0}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Anonymous"):
                    out[key.lower()] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return out
    out["file_backed"] = out["rss"] - out["anonymous"]
    return out


def open_store(path: str | os.PathLike[str], config: CacheConfig | None = None) -> Store:
    return Store.open(path, config)
