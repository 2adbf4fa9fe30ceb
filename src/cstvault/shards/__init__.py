"""Sharded stores: several complete stores under one manifest, read as one.

`ShardedStore` gives a reader `Store`'s read API: a path's operations go to the shard whose
range holds it; whole-store ones (listings, symbols, definitions, queries, stats) visit the
shards in path order and merge. Shards are opened on first use and share one tiered cache,
so `max_memory_mb` is the process's budget, not a shard's. Writing and the Dask glue:
`build.py` and `on_dask.py`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from ..cache import CacheConfig, TieredCache
from ..store import CATALOG
from ..store.catalog import READ_CACHE_KIB
from ..store.packs import PackCache
from . import manifest as mf
from .manifest import MANIFEST, Manifest, ManifestError

__all__ = ["MANIFEST", "Manifest", "ManifestError", "ShardedStore", "find"]

SHARD_CACHE_MIN_KIB = 32  # a shard's SQLite page cache at least (4 pages)
# what an open shard holds besides its page cache and the shared caches (its connection,
# prepared statements, path index map, Store): charged to the budget per open shard.
# `cstvault bench scale --reader-only --json` measures it: `shard_open_kib`
SHARD_OPEN_BYTES = 384 * 1024


def find(path: str | os.PathLike[str]) -> Path | None:
    """The sharded store at `path` (or `path/.cstvault`), None when there is none."""
    p = Path(path)
    for d in (p, p / ".cstvault"):
        if mf.is_sharded(d):
            return d
    return None


class ShardedStore:
    """A sharded store opened for reading. Use as a context manager."""

    def __init__(self, directory: Path, manifest: Manifest, config: CacheConfig | None = None,
                 *, working_tree: bool = True):  # fmt: skip
        self.directory = directory
        self.manifest = manifest
        self.config = config or CacheConfig()
        self.cache = TieredCache(self.config)
        # what a store keeps besides its trees, kept once for all shards (keys name the shard)
        self._dctxs: OrderedDict = OrderedDict()
        self._packs, self._tree_packs = PackCache(), PackCache()
        self._working_tree = working_tree
        self._stores: list = [None] * len(manifest.shards)
        for shard in manifest.shards:
            if not (directory / shard.name / CATALOG).is_file():
                raise ManifestError(f"{directory}: shard {shard.name} is missing (the manifest "
                                    "names it): re-run the index to rebuild it")  # fmt: skip

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: CacheConfig | None = None, *,
             working_tree: bool = True) -> ShardedStore:  # fmt: skip
        directory = find(path)
        if directory is None:
            raise FileNotFoundError(f"no sharded store at {path}")
        return cls(directory, mf.read(directory), config, working_tree=working_tree)

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for store in self._stores:
            if store is not None:
                store.close()
        self._stores = [None] * len(self.manifest.shards)
        self.cache = TieredCache(self.config)

    # shards
    def shard(self, k: int):
        """Shard `k`'s store, opened on first use and checked against the manifest."""
        store = self._stores[k]
        if store is None:
            from ..store import Store

            info = self.manifest.shards[k]
            store = Store.open(self.directory / info.name, self.config,
                               working_tree=self._working_tree)  # fmt: skip
            digest = store.catalog.files_digest()
            if digest != info.digest:
                store.close()
                raise ManifestError(f"{self.directory}: shard {info.name} does not hold what "
                                    f"the manifest records (files digest {digest}, recorded "
                                    f"{info.digest}): an index run is rebuilding it in place, "
                                    "or it was changed or damaged; reopen once the index has "
                                    "finished, or re-run the index")  # fmt: skip
            # the shards' SQLite page caches together as one store's; what an open shard
            # holds is charged to the budget
            kib = max(SHARD_CACHE_MIN_KIB, READ_CACHE_KIB // len(self.manifest.shards))
            store.catalog.cache_kib(kib)
            self.cache.hold(("shard", k), kib * 1024 + SHARD_OPEN_BYTES)
            store.cache, store._shard = self.cache, k  # one budget for the process
            store._dctxs, store._packs, store._tree_packs = \
                self._dctxs, self._packs, self._tree_packs  # fmt: skip
            self._stores[k] = store
        return store

    def shard_for(self, path: str):
        """The store of the shard whose range holds `path`."""
        return self.shard(self.manifest.shard_of(path))

    def _all(self) -> Iterator:
        for k in range(len(self.manifest.shards)):
            yield self.shard(k)

    # one file
    def tree(self, path: str, version: int | None = None):
        return self.shard_for(path).tree(path, version)

    def source(self, path: str, version: int | None = None) -> bytes:
        return self.shard_for(path).source(path, version)

    def node_at(self, path: str, row: int, column: int):
        return self.shard_for(path).node_at(path, row, column)

    def tags(self, path: str) -> list:
        return self.shard_for(path).tags(path)

    def outline(self, path: str) -> list:
        return self.shard_for(path).outline(path)

    def versions(self, path: str) -> list:
        return self.shard_for(path).versions(path)

    def stable_ids(self, path: str, version: int | None = None):
        return self.shard_for(path).stable_ids(path, version)

    # the whole store
    def files(self) -> Iterator:
        """Every file, in path order (each shard's range in turn)."""
        for store in self._all():
            yield from store.files()

    def files_with_symbol(self, name: str | bytes) -> list[str]:
        out: list[str] = []
        for store in self._all():
            out.extend(store.files_with_symbol(name))
        return out

    def definitions(self, name: str | bytes, kind: str | None = None) -> list:
        return [d for store in self._all() for d in store.definitions(name, kind)]

    def references(self, name: str | bytes) -> list:
        return [r for store in self._all() for r in store.references(name)]

    def query(self, query: str | bytes, language: str, paths: list[str] | None = None,
              jobs: int = 1, progress=None, client=None) -> Iterator:  # fmt: skip
        """`Store.query` over every shard in path order (a shard without files of the
        language is passed over; NothingToSearch only when none has any). With `client` (a
        `distributed.Client`), a task per shard on its cluster, matches streamed in order."""
        from ..search import NothingToSearch

        if client is not None:
            from .fanout import query_sharded
            from .on_dask import client_runner

            return query_sharded(self.directory, query, language, paths,
                                 client_runner(client))  # fmt: skip

        runs, why = [], None
        for store in self._all():
            try:
                runs.append(store.query(query, language, paths, jobs, progress))
            except NothingToSearch as exc:
                why = exc
        if not runs and why is not None:
            raise NothingToSearch(f"no shard of the sharded store at {self.directory} holds "
                                  f"{language} files") from why
        return (m for run in runs for m in run)

    def stats(self) -> dict:
        """The shards' counts and disk bytes summed, and each shard's own."""
        per = []
        total: dict = {"segments": 0}
        disk: dict = {}
        skipped: list = []
        for k, store in enumerate(self._all()):
            st = store.stats()
            per.append({"name": self.manifest.shards[k].name, "files": st["files"],
                        "lines": st["lines"], "disk_bytes": st["disk_bytes"]["total"]})  # fmt: skip
            skipped.extend(st["skipped_files"])
            for key in ("files", "blobs", "lines", "unique_lines", "nodes", "source_bytes",
                        "tree_frame_bytes", "source_frame_bytes", "dictionary_bytes",
                        "skipped", "segments"):  # fmt: skip
                total[key] = total.get(key, 0) + st[key]
            for key, value in st["disk_bytes"].items():
                disk[key] = disk.get(key, 0) + value
        lines = max(total.get("lines", 0), 1)
        return {**total, "shards": per, "disk_bytes": disk,
                "skipped_files": sorted(skipped, key=lambda r: r["path"]),
                "dedup_ratio": round(total.get("files", 0) / max(total.get("blobs", 0), 1), 3),
                "disk_bytes_per_line": {
                    "trees": round(total.get("tree_frame_bytes", 0) / lines, 3),
                    "sources": round(total.get("source_frame_bytes", 0) / lines, 3),
                    "catalog": round(disk.get("catalog", 0) / lines, 3),
                    "path_index": round(disk.get("path_index", 0) / lines, 3),
                    "total": round(disk.get("total", 0) / lines, 3)},
                "tiers": self.cache.summary(), "cache_bytes": self.cache.bytes_in_ram(),
                "budget_bytes": int(self.config.max_memory_mb * 1024 * 1024)}  # fmt: skip
