"""Freeze: recompress the frames `index` wrote at a fast zstd level to level 19.

Indexing writes fast frames so a codebase becomes queryable at parse speed; freezing then
moves every blob's two frames to zstd-19 frames (same dictionaries) appended to new segments,
in batches that follow the commit protocol of the indexer: new frames are fsynced before the
catalog transaction that points the blobs at them. Segments left without a referenced frame
are deleted as the freeze goes, so the extra disk it needs stays around one batch. A crash
leaves every blob readable (old or new frames); running freeze again resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from .indexer import FROZEN_LEVEL, check_quota, quota_bytes
from .store import Store
from .store.catalog import BlobRow

BATCH_BLOBS = 256

_DICTS: dict[int, bytes] = {}
_CTX: dict[int, tuple[zstandard.ZstdDecompressor, zstandard.ZstdCompressor]] = {}


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
    _CTX.clear()


def _ctx(did: int) -> tuple[zstandard.ZstdDecompressor, zstandard.ZstdCompressor]:
    c = _CTX.get(did)
    if c is None:
        d = zstandard.ZstdCompressionDict(_DICTS[did]) if did else None
        c = _CTX[did] = (zstandard.ZstdDecompressor(dict_data=d),
                         zstandard.ZstdCompressor(level=FROZEN_LEVEL, dict_data=d))  # fmt: skip
    return c


def recompress(task: tuple[bytes, int, bytes, int]) -> tuple[bytes, bytes]:
    """Worker: (tree frame, its dictionary, source frame, its dictionary) -> zstd-19 frames."""
    tree, tdid, src, sdid = task
    out = []
    for frame, did in ((tree, tdid), (src, sdid)):
        dctx, cctx = _ctx(did)
        out.append(cctx.compress(dctx.decompress(frame)))
    return out[0], out[1]


def _batches(rows: list[BlobRow]) -> Iterator[list[BlobRow]]:
    for k in range(0, len(rows), BATCH_BLOBS):
        yield rows[k : k + BATCH_BLOBS]


def freeze(store_dir: str | Path, jobs: int = 2,
           progress: Callable[[int, int], None] | None = None,
           disk_quota_mb: float | None = None) -> FreezeReport:  # fmt: skip
    """Recompress every blob not yet at level 19; returns what was done.

    A batch whose new frames would take the segment files past the quota (`disk_quota_mb`,
    else the store's) raises indexer.DiskQuotaExceeded before it is written; the batches
    before it stay frozen, the rest stay readable at their fast level."""
    t0 = time.perf_counter()
    report = FreezeReport()
    store = Store.open(store_dir)
    try:
        cat = store.catalog
        rows = cat.blobs_below(FROZEN_LEVEL)
        quota = quota_bytes(disk_quota_mb) if disk_quota_mb is not None else cat.disk_quota()
        dicts = {did: data for (_lang, _kind), (did, data) in cat.dictionaries().items()}
        pool = ProcessPoolExecutor(jobs, initializer=_init, initargs=(dicts,)) if jobs > 1 else None
        if pool is None:
            _init(dicts)
        try:
            for batch in _batches(rows):
                tasks = [(store.raw_frame(b.tree), b.tree_dict,
                          store.raw_frame(b.src), b.src_dict) for b in batch]  # fmt: skip
                done = list(pool.map(recompress, tasks, chunksize=8) if pool
                            else map(recompress, tasks))  # fmt: skip
                if quota is not None:
                    need = sum(len(t) + len(s) for t, s in done)
                    check_quota(quota, store.segment_bytes(), need,
                                f"freezing {len(batch)} blobs")  # fmt: skip
                writer = store.writer()
                moved = []
                for b, (tree, _, src, _), (tree19, src19) in zip(batch, tasks, done, strict=True):
                    moved.append((b.id, writer.append(tree19), writer.append(src19)))
                    report.bytes_before += len(tree) + len(src)
                    report.bytes_after += len(tree19) + len(src19)
                writer.sync()  # frames durable before the catalog points at them
                cat.begin()
                for blob, tree_loc, src_loc in moved:
                    cat.relocate(blob, tree_loc, src_loc, FROZEN_LEVEL)
                cat.commit()
                report.blobs += len(batch)
                report.segments_removed += store.drop_dead_segments()
                if progress:
                    progress(report.blobs, len(rows))
        finally:
            if pool is not None:
                pool.shutdown()
        if rows:
            store.gc()
    finally:
        store.close()
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["FreezeReport", "freeze", "recompress"]
