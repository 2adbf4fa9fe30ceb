"""Freeze: recompress the frames `index` wrote at a fast zstd level to level 19.

Indexing writes fast frames so a codebase becomes queryable at parse speed; freezing then
moves every blob's two frames to zstd-19 frames appended to new segments. A language without
trained dictionaries gets them first, from a sample of its stored records and sources (no
re-parse), and its frames are recompressed with them. Batches follow the commit protocol of
the indexer: new frames are fsynced before the
catalog transaction that points the blobs at them. Segments left without a referenced frame
are deleted as the freeze goes, so the extra disk it needs stays around one batch. A crash
leaves every blob readable (old or new frames); running freeze again resumes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from . import faults
from .indexer import FROZEN_LEVEL, check_quota, quota_bytes
from .store import Store
from .store.catalog import BlobRow

BATCH_BLOBS = 256
DICT_BYTES = 64 * 1024  # one zstd dictionary per language for tree records, one for sources
DICT_SAMPLES = 64  # blobs sampled per language to train them
DICT_MIN_FILES = 16  # fewer blobs of a language: its frames go without a dictionary

CONTEXTS = 2  # zstd contexts per dictionary kept by each thread: a level-19 context
# sized for a large frame holds tens of MB, so few are kept, least recently used first

_DICTS: dict[int, bytes] = {}
_LOCAL = threading.local()  # each thread's contexts (a context may not be shared)


@dataclass
class FreezeReport:
    blobs: int = 0
    bytes_before: int = 0  # frame bytes of the frozen blobs, before and after
    bytes_after: int = 0
    segments_removed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"blobs": self.blobs, "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after, "segments_removed": self.segments_removed,
                "seconds": round(self.seconds, 2)}  # fmt: skip


def _init(dicts: dict[int, bytes]) -> None:
    _DICTS.clear()
    _DICTS.update(dicts)
    _LOCAL.__dict__.clear()  # the caller's contexts (a pool's threads start with none)


def _contexts(kind: str, did: int, make: Callable[[], object]) -> object:
    """This thread's compressor or decompressor for dictionary `did` (an LRU of CONTEXTS)."""
    cache: OrderedDict | None = getattr(_LOCAL, kind, None)
    if cache is None:
        cache = OrderedDict()
        setattr(_LOCAL, kind, cache)
    c = cache.get(did)
    if c is None:
        c = cache[did] = make()
        if len(cache) > CONTEXTS:
            cache.popitem(last=False)
    else:
        cache.move_to_end(did)
    return c


def _dict(did: int) -> zstandard.ZstdCompressionDict | None:
    return zstandard.ZstdCompressionDict(_DICTS[did]) if did else None


def _unpack(did: int) -> zstandard.ZstdDecompressor:
    return _contexts("d", did, lambda: zstandard.ZstdDecompressor(dict_data=_dict(did)))


def _pack(did: int) -> zstandard.ZstdCompressor:
    return _contexts("c", did, lambda: zstandard.ZstdCompressor(level=FROZEN_LEVEL,
                                                                dict_data=_dict(did)))


def recompress(task: tuple[bytes, int, int, bytes, int, int]) -> tuple[bytes, bytes]:
    """(tree frame, its dictionary, the target one, source frame, its dictionary, the
    target one) -> zstd-19 frames (zstd runs without the GIL: threads compress in parallel)."""
    tree, t_from, t_to, src, s_from, s_to = task
    return (_pack(t_to).compress(_unpack(t_from).decompress(tree)),
            _pack(s_to).compress(_unpack(s_from).decompress(src)))  # fmt: skip


def _train_one(job: tuple[str, list[bytes], list[bytes]]) -> tuple[bytes, bytes] | None:
    _, records, sources = job
    try:
        return (zstandard.train_dictionary(DICT_BYTES, records).as_bytes(),
                zstandard.train_dictionary(DICT_BYTES, sources).as_bytes())  # fmt: skip
    except zstandard.ZstdError:
        return None  # too little material: the language's frames go without a dictionary


def train_dictionaries(store: Store, rows: list[BlobRow], jobs: int) -> int:
    """Train and store the dictionaries of languages that have none yet, from an evenly
    spaced sample of their blobs among `rows`; returns how many languages got one."""
    cat = store.catalog
    have = cat.dictionaries()
    by_lang: dict[str, list[BlobRow]] = {}
    for b in rows:
        by_lang.setdefault(b.language, []).append(b)
    todo = []
    for lang, blobs in sorted(by_lang.items()):
        if (lang, "tree") in have or len(blobs) < DICT_MIN_FILES:
            continue
        step = max(1, len(blobs) // DICT_SAMPLES)
        pairs = [store.read_blob(b, f"blob {b.id}") for b in blobs[::step][:DICT_SAMPLES]]
        todo.append((lang, [r for r, _ in pairs], [src for _, src in pairs]))
    if jobs > 1 and len(todo) > 1:  # zstd trains without the GIL
        with ThreadPoolExecutor(min(jobs, len(todo))) as pool:
            trained = list(pool.map(_train_one, todo))
    else:
        trained = list(map(_train_one, todo))
    if any(d is not None for d in trained):  # no write when there is nothing to keep
        cat.begin()
        for (lang, _, _), dicts in zip(todo, trained, strict=True):
            if dicts is not None:
                cat.add_dictionary(lang, "tree", dicts[0])
                cat.add_dictionary(lang, "source", dicts[1])
        cat.commit()
    faults.point("freeze.dictionaries")
    return sum(d is not None for d in trained)


def _task(store: Store, b: BlobRow, target: dict[tuple[str, str], int]) -> tuple:
    """What `recompress` needs of a blob: each frame, its dictionary and the one to use."""
    return (store.raw_frame(b.tree), b.tree_dict, target.get((b.language, "tree"), b.tree_dict),
            store.raw_frame(b.src), b.src_dict, target.get((b.language, "source"), b.src_dict))


def _batches(rows: list[BlobRow], by_segment: bool) -> Iterator[list[BlobRow]]:
    """Batches of BATCH_BLOBS; `by_segment`: never more than the blobs whose tree frame
    lies in one segment (rows are in segment order), so that each batch's old segment can
    go before the next batch is written: the room a quota must leave (`freeze_room`)."""
    batch: list[BlobRow] = []
    for b in rows:
        if batch and (len(batch) >= BATCH_BLOBS
                      or (by_segment and b.tree[0] != batch[0].tree[0])):  # fmt: skip
            yield batch
            batch = []
        batch.append(b)
    if batch:
        yield batch


def freeze(store_dir: str | Path, jobs: int = 2,
           progress: Callable[[int, int], None] | None = None,
           disk_quota_mb: float | None = None, *, wait: float = 0.0) -> FreezeReport:  # fmt: skip
    """Recompress every blob not yet at level 19; returns what was done.

    A batch whose new frames would take the segment files past the quota (`disk_quota_mb`,
    else the store's) raises indexer.DiskQuotaExceeded before it is written; the batches
    before it stay frozen, the rest stay readable at their fast level. Holds the store's
    writer lock throughout (waiting up to `wait` seconds for another writer)."""
    store = Store.open(store_dir, write=True, wait=wait)
    try:
        return freeze_store(store, jobs, progress, disk_quota_mb)
    except BaseException:
        store.abort()  # the failed batch's frames go; every committed one stays
        raise
    finally:
        store.close()


def freeze_store(store: Store, jobs: int = 2,
                 progress: Callable[[int, int], None] | None = None,
                 disk_quota_mb: float | None = None, gc: bool = True) -> FreezeReport:  # fmt: skip
    """`freeze` on a store opened for writing: the journal of per-file writes is folded in
    too (a checkpoint: a new journal begins, the old one's frames are recompressed and it
    goes once nothing points into it). `gc=False`: leave the final gc to the caller."""
    t0 = time.perf_counter()
    report = FreezeReport()
    cat = store.catalog
    store.rotate_journal()
    rows = cat.blobs_below(FROZEN_LEVEL)
    quota = quota_bytes(disk_quota_mb) if disk_quota_mb is not None else cat.disk_quota()
    train_dictionaries(store, rows, jobs)
    have = cat.dictionaries()
    dicts = {did: data for (did, data) in have.values()}
    target = {key: did for key, (did, _) in have.items()}
    _init(dicts)
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="cstvault-freeze") \
        if jobs > 1 and rows else None  # fmt: skip
    try:
        for batch in _batches(rows, by_segment=quota is not None):
            tasks = [_task(store, b, target) for b in batch]
            done = list(pool.map(recompress, tasks) if pool else map(recompress, tasks))
            if quota is not None:
                need = sum(len(t) + len(s) for t, s in done)
                check_quota(quota, store.segment_bytes(), need,
                            f"freezing {len(batch)} blobs")  # fmt: skip
            writer = store.writer()
            moved = []
            for b, task, (tree19, src19) in zip(batch, tasks, done, strict=True):
                moved.append((b.id, writer.append(tree19), writer.append(src19),
                              (task[2], task[5])))  # fmt: skip
                report.bytes_before += len(task[0]) + len(task[3])
                report.bytes_after += len(tree19) + len(src19)
            faults.point("freeze.frames_written")
            writer.sync()  # frames durable before the catalog points at them
            faults.point("freeze.frames_synced")
            cat.begin()
            for blob, tree_loc, src_loc, dicts_to in moved:
                cat.relocate(blob, tree_loc, src_loc, FROZEN_LEVEL, dicts_to)
            faults.point("freeze.txn_begun")
            cat.commit()
            faults.point("freeze.committed")
            store.committed()
            report.blobs += len(batch)
            report.segments_removed += store.drop_dead_segments()
            if progress:
                progress(report.blobs, len(rows))
    finally:
        if pool is not None:
            pool.shutdown()
    if rows and gc:
        store.gc()  # drops what the batches left behind; compacts symbols and catalog
    elif cat.symbols.pending():  # e.g. after `index(compact=False)` stored no new blob
        cat.compact_symbols()
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["FreezeReport", "freeze", "freeze_store", "recompress", "train_dictionaries"]
