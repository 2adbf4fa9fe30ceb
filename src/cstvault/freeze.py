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
from ._native import release_free_memory
from .indexer import FROZEN_LEVEL, check_quota, quota_bytes
from .store import Store, packs
from .store.catalog import BlobRow

BATCH_BLOBS = 1024
BATCH_BYTES = 4 << 20  # of sources, held decompressed (with their records) while packed
ONE_OFF_BYTES = (1 << 20) + 1  # a text this large gets a zstd context of its own: cached
# ones then stay sized for 1 MiB (17.3 MiB each at level 19)
DICT_BYTES = 64 * 1024  # one zstd dictionary per language for tree records, one for sources
DICT_SAMPLES = 64  # blobs sampled per language to train them
DICT_MIN_FILES = 16  # fewer blobs of a language: its frames go without a dictionary

CONTEXTS = 2  # zstd contexts per dictionary kept by each thread: a level-19 context
# sized for a large frame holds tens of MB, so few are kept, least recently used first

_DICTS: dict[int, bytes] = {}
_ONE_OFF = threading.Lock()  # one large text compressed at a time
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


def _pack(did: int) -> zstandard.ZstdCompressor:
    return _contexts("c", did, lambda: zstandard.ZstdCompressor(level=FROZEN_LEVEL,
                                                                dict_data=_dict(did)))


def compress_frame(job: tuple[list[tuple[int, bytes]], int]) -> bytes:
    """(blob id, text) members and the target dictionary -> one frame at zstd-19: the
    text's own for a single member, else a pack (store/packs.py). zstd runs without the
    GIL: threads compress in parallel."""
    members, did = job
    if sum(len(t) for _, t in members) < ONE_OFF_BYTES:
        c = _pack(did)
        return c.compress(members[0][1]) if len(members) == 1 else \
            packs.build(members, c.compress)  # fmt: skip
    # a large text: a context of its own, freed after it (a level-19 context keeps the
    # tables it grew: 33 MiB for a 1.5 MiB text, 81 MiB from 6 MiB up, which cached ones
    # would then hold), one at a time
    with _ONE_OFF:
        c = zstandard.ZstdCompressor(level=FROZEN_LEVEL, dict_data=_dict(did))
        try:
            return c.compress(members[0][1]) if len(members) == 1 else \
                packs.build(members, c.compress)  # fmt: skip
        finally:
            del c
            release_free_memory()


def _groups(batch: list[BlobRow], texts: list[bytes], kind: str) -> list[list[int]]:
    """Which blobs' texts share a frame: per language in batch order, packs of about
    packs.PACK_BYTES[kind] (never more, so that a cached zstd context stays sized for
    that); a text of packs.ALONE_BYTES[kind] or more keeps its own frame."""
    out: list[list[int]] = []
    pack_bytes, alone = packs.PACK_BYTES[kind], packs.ALONE_BYTES[kind]
    open_: dict[str, tuple[list[int], list[int]]] = {}  # language -> (members, bytes)
    for k, (b, text) in enumerate(zip(batch, texts, strict=True)):
        if len(text) >= alone:
            out.append([k])
            continue
        members, size = open_.setdefault(b.language, ([], [0]))
        if members and size[0] + len(text) > pack_bytes:  # a pack stays within pack_bytes
            out.append(members)
            members, size = open_[b.language] = ([], [0])
        members.append(k)
        size[0] += len(text)
    out.extend(members for members, _ in open_.values())
    return out


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
        # files that keep frames of their own are left out: one large record would make
        # most of the sample (a shard's largest files come first: `indexer._large_first`)
        small = [b for b in blobs if b.size < packs.ALONE_BYTES["source"]]
        blobs = small if len(small) >= DICT_MIN_FILES else blobs
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


def _did(b: BlobRow, kind: str) -> int:
    return b.tree_dict if kind == "tree" else b.src_dict


def _loc(b: BlobRow, kind: str) -> tuple[int, int, int, int]:
    return b.tree if kind == "tree" else b.src


def _batches(rows: list[BlobRow], by_segment: bool) -> Iterator[list[BlobRow]]:
    """Batches of at most BATCH_BLOBS blobs and BATCH_BYTES of sources (held decompressed
    while their packs are made); `by_segment`: never more than the blobs whose tree frame
    lies in one segment (rows are in segment order), so that each batch's old segment can
    go before the next batch is written: the room a quota must leave (`freeze_room`)."""
    batch: list[BlobRow] = []
    size = 0
    for b in rows:
        if batch and (len(batch) >= BATCH_BLOBS or size >= BATCH_BYTES
                      or (by_segment and b.tree[0] != batch[0].tree[0])):  # fmt: skip
            yield batch
            batch, size = [], 0
        batch.append(b)
        size += b.size
    if batch:
        yield batch


def sparse_packs(store: Store) -> dict[int, tuple[BlobRow, set[str]]]:
    """Frozen blobs whose tree or source pack has fewer than half its members still stored
    (the rest were dropped), with which of their texts ("tree", "source") to pack again,
    so that the old pack can go."""
    cat = store.catalog
    out: dict[int, tuple[BlobRow, set[str]]] = {}
    for kind, col in (("tree", "tree"), ("source", "src")):
        for loc, live in cat.pack_candidates(col):
            head = store.frame_head(loc, 12)
            members = None if head is None else packs.member_count(head)
            if members is not None and 2 * live < members:
                for b in cat.blobs_in_frame(col, loc):
                    out.setdefault(b.id, (b, set()))[1].add(kind)
    return out


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
    dropped = cat.has_orphan_blobs()
    if dropped:  # blobs no file names any more are neither frozen nor packed
        cat.begin()
        cat.drop_orphan_blobs()
        cat.commit()
    rows = cat.blobs_below(FROZEN_LEVEL)
    quota = quota_bytes(disk_quota_mb) if disk_quota_mb is not None else cat.disk_quota()
    train_dictionaries(store, rows, jobs)
    have = cat.dictionaries()
    dicts = {did: data for (did, data) in have.values()}
    target = {key: did for key, (did, _) in have.items()}
    redo = {b.id: {"tree", "source"} for b in rows}
    for blob, (b, kinds) in sparse_packs(store).items():  # frozen: only the sparse packs
        rows.append(b)
        redo[blob] = kinds
    _init(dicts)
    pool = ThreadPoolExecutor(jobs, thread_name_prefix="cstvault-freeze") \
        if jobs > 1 and rows else None  # fmt: skip
    run = pool.map if pool else map
    read = {"tree": store._record, "source": store._source}
    try:
        for batch in _batches(rows, by_segment=quota is not None):
            made = {}  # kind -> (blobs, groups, dictionaries, frames)
            for kind in ("tree", "source"):
                todo = [b for b in batch if kind in redo[b.id]]
                texts = [read[kind](b, f"blob {b.id}") for b in todo]
                groups = _groups(todo, texts, kind)
                dids = [0 if kind == "source" and len(g) > 1 else  # 1 MiB: no dictionary
                        target.get((todo[g[0]].language, kind), _did(todo[g[0]], kind))
                        for g in groups]  # fmt: skip
                frames = list(run(compress_frame, [
                    ([(todo[k].id, texts[k]) for k in g], did)
                    for g, did in zip(groups, dids, strict=True)]))  # fmt: skip
                del texts
                made[kind] = (todo, groups, dids, frames)
            if quota is not None:
                need = sum(len(f) for m in made.values() for f in m[3])
                check_quota(quota, store.segment_bytes(), need,
                            f"freezing {len(batch)} blobs")  # fmt: skip
            writer = store.writer()
            at: dict[tuple[str, int], tuple[tuple, int]] = {}
            for kind, (todo, groups, dids, frames) in made.items():
                report.bytes_before += sum({_loc(b, kind): _loc(b, kind)[2]
                                            for b in todo}.values())  # a pack once
                report.bytes_after += sum(map(len, frames))
                for g, did, frame in zip(groups, dids, frames, strict=True):
                    loc = writer.append(frame)
                    for k in g:
                        at[(kind, todo[k].id)] = (loc, did)
            faults.point("freeze.frames_written")
            writer.sync()  # frames durable before the catalog points at them
            faults.point("freeze.frames_synced")
            cat.begin()
            for b in batch:
                tree_loc, tree_did = at.get(("tree", b.id), (b.tree, b.tree_dict))
                src_loc, src_did = at.get(("source", b.id), (b.src, b.src_dict))
                cat.relocate(b.id, tree_loc, src_loc, FROZEN_LEVEL, (tree_did, src_did))
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
        _LOCAL.__dict__.clear()  # this thread's level-19 contexts (17.3 MiB each for a pack):
        release_free_memory()  # a live writer checkpointing would otherwise keep them
    cat.group_definitions(sparse=dropped)
    if rows and gc:
        store.gc()  # drops what the batches left behind; compacts symbols and catalog
    elif cat.symbols.pending():  # e.g. after `index(compact=False)` stored no new blob
        cat.compact_symbols()
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["FreezeReport", "compress_frame", "freeze", "freeze_store", "sparse_packs",
           "train_dictionaries"]
