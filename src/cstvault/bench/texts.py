"""`cstvault bench texts`: the ways a tree's text can be fetched, timed side by side.

On the same seeded sample of stored files (page cache warm) each way fetches a file's text
and checks its length and CRC32C against the tree record's: the working file mapped
(`mmap`, the previous design: zero-copy, but a file truncated under the map kills the
reader with SIGBUS and a rewrite changes bytes a tree already handed out), the working file
read once into memory (`read`, production: `Store._working_text`), and the store's own
zstd-19 frame (`stored`). Reported per way: p50 and mean microseconds, and the RSS each
way adds while all the sample's texts are held (anonymous and file-backed), as a hot tier
holds them (a mapping costs whole pages: 4 KiB for a 1 KiB file); plus a cold open with
its text through the store (budget 0).
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable

import crc32c
import numpy as np

from .._native import release_free_memory
from ..cache import CacheConfig
from ..store import Store, memory_breakdown
from ..tree import tree_from_record


def _mapped(store: Store) -> Callable:
    def fetch(path: str, indexed: tuple[int, int], length: int, crc: int):
        full = os.path.join(store._root, path)
        st = os.stat(full)
        if (st.st_size, st.st_mtime_ns) != indexed:
            return None
        if st.st_size == 0:  # an empty file cannot be mapped
            return b"" if length == 0 else None
        with open(full, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return m if len(m) == length and crc32c.crc32c(m) == crc else None

    return fetch


def run(store_dir: str | os.PathLike[str], files: int = 5_000, seed: int = 1) -> dict:
    with Store.open(store_dir, CacheConfig(max_memory_mb=0)) as store:
        if store._root is None:
            raise FileNotFoundError(f"{store_dir}: the store records no working tree")
        rows = [f.path for f in store.files()]
        rng = np.random.default_rng(seed)
        sample = [rows[int(k)] for k in rng.choice(len(rows), min(files, len(rows)),
                                                   replace=False)]  # fmt: skip
        meta = []
        for path in sample:
            blob, indexed = store._located(path)
            record = store._record(blob, path)
            _, length, crc, _ = tree_from_record(record)
            meta.append((path, blob, indexed, length, crc))
        unchanged = [m for m in meta
                     if store._working_text(m[0], m[2], m[3], m[4]) is not None]

        def stored(path, indexed, length, crc, blob=None):
            data = store._source(blob, path)
            return data if len(data) == length and crc32c.crc32c(data) == crc else None

        ways = {"mmap_working_file": _mapped(store), "read_working_file": store._working_text,
                "stored_frame": stored}  # fmt: skip
        out: dict = {"store": str(store_dir), "files": len(meta), "seed": seed,
                     "working_files_unchanged": len(unchanged),
                     "text_bytes_p50": int(np.median([m[3] for m in meta])),
                     "ways": {}}  # fmt: skip
        for name, fetch in ways.items():
            release_free_memory()  # the previous way's texts, freed, go back to the OS
            before = memory_breakdown()
            held, lat = [], np.empty(len(unchanged))
            for k, (path, blob, indexed, length, crc) in enumerate(unchanged):
                t = time.perf_counter()
                text = (fetch(path, indexed, length, crc, blob=blob) if name == "stored_frame"
                        else fetch(path, indexed, length, crc))  # fmt: skip
                lat[k] = time.perf_counter() - t
                if text is None:
                    raise RuntimeError(f"{name}: {path} did not check out")
                held.append(text)
            after = memory_breakdown()
            out["ways"][name] = {
                "p50_us": round(float(np.median(lat)) * 1e6, 2),
                "mean_us": round(float(lat.mean()) * 1e6, 2),
                "held_rss_mb": {k: round((after.get(k, 0) - before.get(k, 0)) / 2**20, 2)
                                for k in ("anonymous", "file_backed")},  # fmt: skip
            }
            for text in held:
                if isinstance(text, mmap.mmap):
                    text.close()
            del held
    cold = Store.open(store_dir, CacheConfig(max_memory_mb=0))
    lat = np.empty(len(unchanged))
    for k, (path, *_) in enumerate(unchanged):
        t = time.perf_counter()
        cold.tree(path).text  # noqa: B018 - the text is what is timed
        lat[k] = time.perf_counter() - t
    cold.close()
    out["cold_open_with_text_p50_ms"] = round(float(np.median(lat)) * 1000, 4)
    return out
