"""Index a source tree into a store: walk (gitignore), parse + encode + compress in threads
(tree-sitter's parse and the extraction run in C without the GIL), append frames to segments,
and commit the catalog in batches. Memory is bounded: a window of files in flight, under an
estimate of their parse memory (`_run`).

Commit protocol: a batch's frames are written and fsynced before the catalog transaction
that references them; a crash at any instant loses at most the uncommitted batch, whose
frames are unreferenced bytes that `gc` reclaims. Re-running `index` resumes: files whose
size and mtime match the catalog are not read again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from . import faults
from ._native import release_free_memory
from .codec import EncodeError, encode
from .extract import parse_extract, parse_extract_matches
from .kinds import kind_bits
from .query import QueryCursor
from .sources import LARGE_FILE_BYTES, check_source, count_lines
from .store import Store
from .store.segments import SEGMENT_LIMIT
from .symbols import symbol_texts
from .tags import pack_definitions, tags_of, tags_query
from .walk import listed_files, walk_files

INDEX_LEVEL = 1  # frames are written fast; `freeze` recompresses them to FROZEN_LEVEL
FROZEN_LEVEL = 19
BATCH_FILES = 512
BATCH_BYTES = 16 * 1024 * 1024
DIGEST_BYTES = 16  # dedup key: 128 bits of sha256 (collision odds ~1e-21 at 10^9 blobs)
COMPACT_SHARE = 10  # compact the catalog when a run added at least 1/10 of its blobs
AHEAD = 8  # files in flight per encoding thread
WALK_CHUNK = 512  # walked files looked up in the catalog at a time
LOOKUP = 64  # encoded files whose content keys are looked up at a time
# memory a file's parse and extraction hold at their peak, per source byte, at most:
# tree-sitter's tree (~100 B a node) plus the columns. Measured: tsc.js (6 MB, 1.29M nodes)
# 28 B a byte, three.webgpu.js 38, the minified draco_encoder.js 146
PARSE_BYTES_PER_BYTE = 160
PARSE_BUDGET = 96 << 20  # estimated parse memory of the files in flight (> 600 KB: alone)


@dataclass
class Encoded:
    path: str
    language: str
    size: int
    mtime_ns: int
    digest: bytes = b""
    lines: int = 0
    nodes: int = 0
    tree: bytes = b""
    source: bytes = b""
    symbols: set[bytes] = field(default_factory=set)
    definitions: bytes = b""  # tags.pack_definitions
    kinds: bytes = b""  # kinds.kind_bits
    dicts: tuple[int, int] = (0, 0)
    level: int = FROZEN_LEVEL
    skipped: str = ""


@dataclass
class IndexReport:
    files: int = 0
    unchanged: int = 0
    new_blobs: int = 0
    deduplicated: int = 0
    removed: int = 0
    lines: int = 0
    nodes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # files per kind of reason
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0

    def skip(self, path: str, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.skipped[key] = self.skipped.get(key, 0) + 1
        self.skipped_files.append((path, reason))


# worker state: language -> ((tree dict id, data), (source dict id, data)), the frame level
_DICTS: dict[str, tuple[tuple[int, bytes], tuple[int, bytes]]] = {}
_LOCAL = threading.local()  # each encoding thread's zstd compressors (one may not be shared)
_GENERATION = [0]  # bumped by _init_worker: a thread's compressors of older settings go
_LEVEL = [FROZEN_LEVEL]
_OWNER: list[object] = [None]  # who set them up in this process (a live writer re-inits)


def _init_worker(dicts: dict[str, tuple[tuple[int, bytes], tuple[int, bytes]]],
                 level: int = FROZEN_LEVEL) -> None:  # fmt: skip
    _OWNER[0] = None
    _DICTS.clear()
    _DICTS.update(dicts)
    _GENERATION[0] += 1
    _LEVEL[0] = level


def _compressor(did: int, data: bytes | None) -> zstandard.ZstdCompressor:
    cache = getattr(_LOCAL, "compressors", None)
    if cache is None or _LOCAL.generation != _GENERATION[0]:
        cache = _LOCAL.compressors = {}
        _LOCAL.generation = _GENERATION[0]
    c = cache.get(did)
    if c is None:
        d = zstandard.ZstdCompressionDict(data) if data else None
        c = cache[did] = zstandard.ZstdCompressor(level=_LEVEL[0], dict_data=d)
    return c


def encode_file(task: tuple[str, str, str]) -> Encoded:
    """Worker: read, check, parse, encode and compress one file."""
    root, rel, language = task
    path = os.path.join(root, rel)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        return Encoded(rel, language, 0, 0, skipped=f"unreadable: {exc.strerror}")
    return encode_source(rel, language, source, st.st_mtime_ns)[0]


def encode_source(rel: str, language: str, source: bytes, mtime_ns: int,
                  parsed: tuple | None = None) -> tuple[Encoded, bytes]:  # fmt: skip
    """Check, parse, encode and compress one file's text: (what the catalog needs, the
    uncompressed tree record). `parsed`: its columns (and tags-query events, when the
    language has a tags query) from a parse already made (a live tree)."""
    out = Encoded(rel, language, len(source), mtime_ns)
    reason = check_source(source)
    if reason:
        out.skipped = reason
        return out, b""
    try:
        tq = tags_query(language)
        if parsed is not None:
            cols, events = parsed
        elif tq is None:
            cols, events = parse_extract(source, language), None
        else:  # the tags query on the same parse: the file's definitions
            cols, events = parse_extract_matches(source, language, tq._q)
        if tq is not None and events is not None:
            matches = QueryCursor(tq).record_matches(source, events)
            out.definitions = pack_definitions(tags_of(matches))
        record = encode(cols, source)
    except (EncodeError, ValueError, RuntimeError) as exc:
        out.skipped = f"unencodable: {exc}"
        return out, b""
    (tree_did, tree_dict), (src_did, src_dict) = _DICTS.get(language, ((0, b""), (0, b"")))
    out.digest = content_digest(language, source)
    out.lines = count_lines(source)
    out.nodes = len(cols)
    out.tree = _compressor(tree_did, tree_dict).compress(record)
    out.source = _compressor(src_did, src_dict).compress(source)
    out.dicts = (tree_did, src_did)
    out.level = _LEVEL[0]
    out.symbols = symbol_texts(cols, source)
    out.kinds = kind_bits(language, cols.kind)
    return out, record


def content_digest(language: str, source: bytes) -> bytes:
    """A blob's dedup key."""
    return hashlib.sha256(language.encode() + b"\0" + source).digest()[:DIGEST_BYTES]


class DiskQuotaExceeded(RuntimeError):
    """Writing would take the frozen tier (segment files) past its disk quota."""


def quota_bytes(megabytes: float) -> int:
    return int(megabytes * 1024 * 1024)


def check_quota(quota: int | None, used: int, need: int, what: str) -> None:
    """DiskQuotaExceeded, naming `what`, if writing `need` more bytes past `used` would
    exceed `quota`."""
    if quota is not None and used + need > quota:
        raise DiskQuotaExceeded(
            f"disk quota of {quota:,} bytes ({quota / 2**20:.2f} MiB) for the segment files "
            f"would be exceeded by {what} ({used + need:,} bytes needed); raise "
            "--disk-quota-mb or free space with `cstvault gc`"
        )


def freeze_room(largest: int) -> int:
    """Disk that `freeze` needs beside a store under a quota: it recompresses the blobs of
    one segment at a time (their frames lie in that segment and the start of the next),
    so at most a segment's frames plus the largest blob's exist twice before the old
    segment is deleted. `index` keeps this much of the quota free."""
    return SEGMENT_LIMIT + largest


def index(
    root: str | os.PathLike[str],
    store_dir: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    batch_files: int = BATCH_FILES,
    on_commit: Callable[[list[str]], None] | None = None,
    disk_quota_mb: float | None = None,
    only: set[str] | None = None,
    paths: list[str] | None = None,
    level: int = INDEX_LEVEL,
    compact: bool = True,
    wait: float = 0.0,
) -> IndexReport:
    """Index every supported file under `root` into the store (created if missing).

    `on_commit` is called with the paths of each batch once its transaction has committed.
    With `disk_quota_mb`, a batch that would take the segment files past the quota raises
    DiskQuotaExceeded before anything of it is written (earlier batches stay committed). The
    quota is kept in the store: later runs (and `freeze`) enforce it when given none.
    With `only` (root-relative '/'-separated paths), just those files are indexed. With
    `paths` (root-relative: a shard's share of a walk made by the caller) nothing is
    walked: the store then holds exactly those files, and any other it held is removed;
    the files encoded alone (the largest) go first, while the process holds least.
    `progress(done, total, path)` is called per file; `total` is None until the walk,
    which runs ahead of the encoding, has found every file.
    Frames are written at zstd `level` (fast by default); `freeze.freeze` then recompresses
    them to level 19. The run ends by folding its symbols into the compacted blocks (and,
    after a bulk load, packing the catalog) unless `compact=False`: freeze does both when it
    finishes, so `cstvault index` leaves them to it rather than doing them twice.
    The run holds the store's writer lock (waiting up to `wait` seconds for another
    writer, else `StoreLocked`).
    """
    t0 = time.perf_counter()
    root = Path(root).resolve()
    store = Store.create(Path(store_dir) if store_dir else root / ".cstvault", wait=wait)
    report = IndexReport()
    try:
        want = {"root": str(root)}
        if disk_quota_mb is not None:
            want["disk_quota_bytes"] = str(quota_bytes(disk_quota_mb))
        have = store.catalog.meta()
        if any(have.get(k) != v for k, v in want.items()):  # no write when nothing differs
            store.catalog.begin()
            for key, value in want.items():
                store.catalog.set_meta(key, value)
            store.catalog.commit()
        quota = store.catalog.disk_quota()
        dicts = _store_dictionaries(store)
        fresh = not store.catalog.has_files()  # nothing stored: no file can be unchanged
        found: dict[str, int] = {}  # files to encode, by language
        links: list[tuple[str, str]] = []  # symbolic links not followed, and why
        cat = store.catalog

        def skipped(path: Path, reason: str) -> None:
            links.append((path.relative_to(root).as_posix(), reason))

        def decide(chunk: list[tuple[str, str, os.stat_result | None]], k: int
                   ) -> Iterator[tuple[tuple[str, str, str], int]]:  # fmt: skip
            """The walked files to encode: those not stored as they are now."""
            known = {} if fresh else cat.add_walked(k, [rel for rel, _, _ in chunk])
            for rel, language, st in chunk:
                was = known.get(rel)
                if was is not None:
                    if st is None:  # vanished or unreadable since listed: left as stored
                        continue
                    if was == (st.st_size, st.st_mtime_ns):
                        report.unchanged += 1
                        continue
                found[language] = found.get(language, 0) + 1
                yield (str(root), rel, language), st.st_size if st is not None else 0

        def tasks() -> Iterator[tuple[tuple[str, str, str], int]]:
            """The walk, WALK_CHUNK files at a time: each chunk's paths go to the catalog's
            temporary table of walked paths, and their stored sizes and mtimes come back
            (one statement a chunk; nothing the size of the tree is held in memory)."""
            top = os.fspath(root).rstrip(os.sep) or os.sep
            chunk: list[tuple[str, str, os.stat_result | None]] = []
            k = 0
            listed = walk_files([root], skipped) if paths is None else _large_first(top, paths)
            for path, language, st in listed:
                rel = path[len(top) + 1 :]
                if os.sep != "/":
                    rel = rel.replace(os.sep, "/")
                if only is not None and rel not in only:
                    continue
                chunk.append((rel, language, st))
                if len(chunk) == WALK_CHUNK:
                    yield from decide(chunk, k)
                    chunk, k = [], k + 1
            yield from decide(chunk, k)

        def walked() -> None:
            """Once the walk is complete: drop what is gone, record the links not followed;
            no write at all when nothing changed (a write would make readers wait for a new
            path index)."""
            mine = [(p, r) for p, r in links if only is None or p in only]
            for path, reason in mine:
                report.skip(path, reason)
            known = cat.skipped()
            gone, stale = ([], []) if fresh else cat.missing_from_walk({p for p, _ in links})
            cat.end_walk()
            if not (gone or stale or any(known.get(p) != r for p, r in mine)):
                return
            cat.begin()
            report.removed = cat.remove_missing(gone, stale)
            for path, reason in mine:
                cat.put_skipped(path, reason)
            cat.commit()

        walk_done = [False]

        def walk_then_record() -> Iterator[tuple[tuple[str, str, str], int]]:
            yield from tasks()
            walked()
            walk_done[0] = True

        if not fresh:
            cat.begin_walk()
        results = _run(_ahead(walk_then_record()), jobs, dicts, level)
        batch = _Batch(store, report, batch_files, on_commit, quota)
        done = 0
        for enc in results:
            if enc is None:  # a large file is next, encoded alone: hold nothing meanwhile
                batch.flush()
                store.catalog.shrink()
                continue
            batch.add(enc)
            done += 1
            if progress:  # the total once the walk has found every file
                progress(done, sum(found.values()) if walk_done[0] else None, enc.path)
        batch.flush()
        if compact and (report.new_blobs or report.removed):  # else nothing to fold
            store.catalog.compact_symbols()
            if report.new_blobs * COMPACT_SHARE >= store.catalog.blob_count():
                store.catalog.compact()  # a bulk load: pack the catalog's pages
    except BaseException:
        store.abort()  # the failed batch's frames go; every committed one stays
        raise
    finally:
        store.close()
        release_free_memory()  # what the run freed goes back before a freeze or a caller runs
    report.seconds = time.perf_counter() - t0
    return report


def _alone(size: int) -> bool:
    """Is a file of `size` bytes encoded alone (its parse estimate over PARSE_BUDGET)?"""
    return size * PARSE_BYTES_PER_BYTE > PARSE_BUDGET


def _large_first(top: str, rels: list[str]) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """`listed_files`, the files encoded alone first, largest first: their parses, the
    run's peaks, then come while the process holds least (nothing committed yet, few
    grammars loaded; each large parse leaves the process a little larger)."""
    large = [(st.st_size, path, language, st) for path, language, st in listed_files(top, rels)
             if st is not None and _alone(st.st_size)]  # fmt: skip
    large.sort(key=lambda f: (-f[0], f[1]))
    yield from (f[1:] for f in large)
    seen = {f[1] for f in large}
    for path, language, st in listed_files(top, rels):
        if path not in seen:
            yield path, language, st


def _store_dictionaries(store: Store) -> dict:
    """What workers need of the dictionaries the store already has (trained by `freeze`)."""
    have = store.catalog.dictionaries()
    return {lang: (have[(lang, "tree")], have[(lang, "source")])
            for lang, kind in have if kind == "tree" and (lang, "source") in have}  # fmt: skip


def _run(tasks: Iterable[tuple[tuple[str, str, str], int]], jobs: int, dicts: dict,
         level: int) -> Iterator[Encoded | None]:  # fmt: skip
    """Encode (task, source bytes) pairs in order, in `jobs` threads of this process (the
    parse and extraction run in C without the GIL). At most AHEAD files per thread are in
    flight, and their estimated parse memory (PARSE_BYTES_PER_BYTE a source byte) stays
    under PARSE_BUDGET: a file whose estimate is larger is encoded alone, announced by a
    None so that the caller can commit its batch first. So memory does not grow with the
    corpus, and one process holds one copy of everything imported."""
    _init_worker(dicts, level)
    if jobs <= 1:
        for task, size in tasks:
            if _alone(size):  # as below: commit, then alone
                yield None
                release_free_memory()
            yield _encode(task)
        return
    with ThreadPoolExecutor(jobs, thread_name_prefix="cstvault-encode") as pool:
        window: deque[tuple[Future[Encoded], int]] = deque()
        inflight = 0
        for task, size in tasks:
            cost = size * PARSE_BYTES_PER_BYTE
            while window and (len(window) >= AHEAD * jobs or inflight + cost > PARSE_BUDGET):
                fut, done = window.popleft()
                inflight -= done
                yield fut.result()
            if _alone(size):  # encoded alone: the caller commits what it holds
                yield None  # (the window is empty now), and freed heap goes back first
                release_free_memory()
            window.append((pool.submit(_encode, task), cost))
            inflight += cost
        while window:
            yield window.popleft()[0].result()


def _encode(task: tuple[str, str, str]) -> Encoded:
    """`encode_file`; the heap a large file freed goes back to the OS (glibc would keep
    it, and the process's RSS would stay at its largest file's)."""
    enc = encode_file(task)
    if enc.size >= LARGE_FILE_BYTES:
        release_free_memory()
    return enc


def _ahead(items: Iterator) -> Iterator:
    """`items`, each given once the next has been taken (so the walk is known to be
    complete when its last file is handed out, before that file is encoded)."""
    prev = next(items, _END)
    while prev is not _END:
        cur = next(items, _END)
        yield prev
        prev = cur


_END = object()


class _Batch:
    """Frames appended as they come; catalog rows committed after the frames are durable."""

    def __init__(self, store: Store, report: IndexReport, limit: int,
                 on_commit: Callable[[list[str]], None] | None,
                 quota: int | None):  # fmt: skip
        self.store = store
        self.report = report
        self.limit = limit
        self.on_commit = on_commit
        self.quota = quota
        self.disk = store.segment_bytes() if quota is not None else 0
        self.largest = store.catalog.largest_blob_frames() if quota is not None else 0
        self.rows: list[tuple[Encoded, tuple, tuple] | tuple[Encoded, int]] = []
        self.pending: dict[bytes, tuple[tuple, tuple]] = {}
        self.queue: list[Encoded] = []  # files whose content keys are not looked up yet
        self.bytes = 0

    def add(self, enc: Encoded) -> None:
        """Take a file's encoding; its content key is looked up with the next LOOKUP."""
        self.queue.append(enc)
        if len(self.queue) >= LOOKUP:
            self._take()

    def _take(self) -> None:
        """The queued files: each content key looked up in one statement, frames of new
        blobs appended, the batch committed when full."""
        queue, self.queue = self.queue, []
        cat = self.store.catalog
        stored = cat.blob_ids([e.digest for e in queue if not e.skipped])
        for k, enc in enumerate(queue):
            self._place(enc, stored.get(enc.digest))
            if len(self.rows) >= self.limit or self.bytes >= BATCH_BYTES:
                self.flush()  # the blobs it committed are stored now for the rest too
                stored.update(cat.blob_ids([e.digest for e in queue[k + 1 :] if not e.skipped]))

    def _place(self, enc: Encoded, blob: int | None) -> None:
        if enc.skipped:
            self.rows.append((enc, -1))
        elif blob is not None:
            self.rows.append((enc, blob))
        elif enc.digest in self.pending:
            self.rows.append((enc, *self.pending[enc.digest]))
        else:
            need = len(enc.tree) + len(enc.source)
            self.largest = max(self.largest, need)
            room = freeze_room(self.largest)
            try:
                check_quota(self.quota, self.disk, need + room,
                            f"{enc.path} (with {room:,} bytes kept for freezing)")  # fmt: skip
            except DiskQuotaExceeded:
                self.flush()
                raise
            self.disk += need
            writer = self.store.writer()
            tree = writer.append(enc.tree)
            src = writer.append(enc.source)
            self.pending[enc.digest] = (tree, src)
            self.rows.append((enc, tree, src))
            self.bytes += len(enc.tree) + len(enc.source)
            enc.tree = enc.source = b""  # in the segment now: the batch holds rows, not frames

    def flush(self) -> None:
        if self.queue:
            self._take()  # commits through flush when it fills the batch; the rest below
        if not self.rows:
            return
        faults.point("index.frames_written")
        self.store.writer().sync()  # frames durable before the rows that point at them
        faults.point("index.frames_synced")
        cat = self.store.catalog
        rep = self.report
        cat.begin()
        made: dict[bytes, int] = {}
        symbols: dict[int, set[bytes]] = {}
        definitions: list[tuple[int, bytes]] = []
        kinds: list[tuple[int, bytes]] = []
        for row in self.rows:
            enc = row[0]
            if enc.skipped:
                cat.put_skipped(enc.path, enc.skipped)
                rep.skip(enc.path, enc.skipped)
                continue
            if len(row) == 2:
                blob = row[1]
                rep.deduplicated += 1
            elif enc.digest in made:
                blob = made[enc.digest]
                rep.deduplicated += 1
            else:
                cat.put_grammar(enc.language)  # its kind tables, once per store
                blob = cat.add_blob(enc.digest, enc.language, enc.size, enc.lines, enc.nodes,
                                    row[1], row[2], enc.dicts, enc.level)  # fmt: skip
                made[enc.digest] = blob
                symbols[blob] = enc.symbols
                if enc.definitions:
                    definitions.append((blob, enc.definitions))
                kinds.append((blob, enc.kinds))
                rep.new_blobs += 1
            cat.put_file(enc.path, blob, enc.size, enc.mtime_ns)
            rep.files += 1
            rep.lines += enc.lines
            rep.nodes += enc.nodes
        cat.add_symbols(symbols)
        cat.add_definitions(definitions)
        cat.add_kinds(kinds)
        faults.point("index.txn_begun")
        cat.commit()
        faults.point("index.committed")
        self.store.committed()
        if self.on_commit:
            self.on_commit([row[0].path for row in self.rows if not row[0].skipped])
        self.rows = []
        self.pending = {}
        self.bytes = 0
