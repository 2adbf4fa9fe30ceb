"""`cstvault bench frames`: ways of reading one stored frame at random, timed side by side.

Each way reads the same seeded random sample of tree frames (page cache warmed first) and
checks each frame's CRC32C: `pread` through the store's LRU of open segments (production),
open/pread/close per frame, and the mmap designs: slicing mapped segments, with the pages
released every 32 reads (`MADV_DONTNEED` per segment touched, which keeps RSS flat) or never
released (RSS grows with every page read). Reported per way: p50 and mean microseconds per
read (the mean carries the amortised releases) and the file-backed RSS left afterwards.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path

import crc32c
import numpy as np

from ..store import Store, memory_breakdown
from ..store.segments import SegmentReader, segment_name, unmap_pages

RELEASE_EVERY = 32


def _mapped_reader(directory: Path, release: bool) -> tuple[Callable, Callable]:
    maps: dict[int, mmap.mmap] = {}
    touched: set[int] = set()
    reads = [0]

    def read(seg: int, offset: int, length: int, crc: int) -> bytes:
        m = maps.get(seg)
        if m is None:
            fd = os.open(directory / segment_name(seg), os.O_RDONLY)
            try:
                m = maps[seg] = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            with contextlib.suppress(OSError, ValueError):
                m.madvise(mmap.MADV_RANDOM)
        frame = m[offset : offset + length]
        if crc32c.crc32c(frame) != crc:
            raise ValueError("CRC32C mismatch")
        if release:
            touched.add(seg)
            reads[0] += 1
            if reads[0] >= RELEASE_EVERY:
                for s in touched:
                    unmap_pages(maps[s])
                touched.clear()
                reads[0] = 0
        return frame

    def close() -> None:
        for m in maps.values():
            m.close()

    return read, close


def run(store_dir: str | os.PathLike[str], reads: int = 20_000, seed: int = 1) -> dict:
    with Store.open(store_dir) as store:
        directory = store.directory / "segments"
        locs = [b.tree for b in store.catalog.blobs()]
    rng = np.random.default_rng(seed)
    sample = [locs[int(k)] for k in rng.integers(0, len(locs), size=reads)]
    warm = SegmentReader(directory)
    for loc in sample:  # page cache warm for every way
        warm.read(*loc)
    warm.close()
    ways: dict[str, tuple[Callable, Callable]] = {}
    lru, plain = SegmentReader(directory), SegmentReader(directory, keep_open=False)
    ways["pread_segment_lru"] = (lru.read, lru.close)
    ways["open_pread_close"] = (plain.read, plain.close)
    ways["mmap_release_every_32"] = _mapped_reader(directory, release=True)
    ways["mmap_never_released"] = _mapped_reader(directory, release=False)
    frame_p50 = int(np.median([loc[2] for loc in sample]))
    out: dict = {"store": str(store_dir), "reads": reads, "seed": seed,
                 "frame_bytes_p50": frame_p50, "ways": {}}  # fmt: skip
    for name, (read, close) in ways.items():
        before = memory_breakdown().get("file_backed", 0)
        lat = np.empty(len(sample))
        for k, loc in enumerate(sample):
            t = time.perf_counter()
            read(*loc)
            lat[k] = time.perf_counter() - t
        after = memory_breakdown().get("file_backed", 0)
        close()
        out["ways"][name] = {
            "p50_us": round(float(np.median(lat)) * 1e6, 2),
            "mean_us": round(float(lat.mean()) * 1e6, 2),
            "file_backed_rss_growth_mb": round((after - before) / 2**20, 2),
        }
    return out
