"""Indexing a sharded store: one walk, its files cut into shards of bounded source bytes,
each shard indexed, frozen and checked as one task (on a local process pool, or on Dask
workers: `shards/on_dask.py`), and the manifest written once every shard is complete.

Re-running resumes: the manifest's ranges are kept, so every file goes to the shard that
holds its range, and each shard's index skips what it already holds unchanged (size and
mtime). A task is idempotent, so a task rerun after its worker died (Dask does this) ends
with the same shard.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from ..walk import walk_files
from . import manifest as mf

SHARD_MB = 256  # MB of source a shard is cut at (frozen, it takes about a third of that)


@dataclass(frozen=True)
class ShardTask:
    root: str
    directory: str  # the shard's store directory
    name: str
    paths: tuple[str, ...]  # root-relative, ascending: what the shard holds
    jobs: int = 1  # threads inside the task


class ShardFailed(RuntimeError):
    """A shard's task failed, or the shard it left does not match what the task reported."""


def walk(root: Path) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """(root-relative path, size) of every supported file under `root`, ascending, and the
    links not followed with why."""
    top = os.fspath(root).rstrip(os.sep) or os.sep
    links: list[tuple[str, str]] = []
    files = []
    for path, _, st in walk_files([root], lambda p, r: links.append((
            Path(p).relative_to(root).as_posix(), r))):  # fmt: skip
        rel = path[len(top) + 1 :].replace(os.sep, "/")
        files.append((rel, st.st_size if st is not None else 0))
    files.sort()
    return files, links


def cut(files: list[tuple[str, int]], shard_bytes: int) -> list[str]:
    """The first path of each shard: ranges of consecutive files of at most `shard_bytes`
    (a larger file is a shard of its own)."""
    firsts, total = [""], 0
    for rel, size in files:
        if total and total + size > shard_bytes:
            firsts.append(rel)
            total = 0
        total += size
    return firsts


def assign(files: list[tuple[str, int]], firsts: list[str]) -> list[list[str]]:
    """Each shard's files, by the ranges that `firsts` start."""
    groups: list[list[str]] = [[] for _ in firsts]
    for rel, _ in files:
        groups[mf.shard_of(firsts, rel)].append(rel)
    return groups


def shard_name(k: int) -> str:
    return f"shard-{k:03d}"


def build_shard(task: ShardTask) -> dict:
    """Index, freeze and check one shard (runs where the task runs); what it holds."""
    from .. import faults, indexer
    from ..freeze import freeze
    from ..store import Store, rss_bytes

    t0 = time.perf_counter()
    report = indexer.index(task.root, task.directory, jobs=task.jobs, paths=list(task.paths),
                           compact=False)  # fmt: skip
    faults.point("shards.indexed")
    freeze(task.directory, jobs=task.jobs)
    with Store.open(task.directory, working_tree=False) as store:
        return {"name": task.name, **shard_summary(store), "indexed": report.files,
                "unchanged": report.unchanged, "removed": report.removed,
                "skipped_files": report.skipped_files,
                "seconds": round(time.perf_counter() - t0, 3),
                "peak_rss_mb": round(_peak_rss() or rss_bytes() / 2**20, 1)}  # fmt: skip


def shard_summary(store) -> dict:
    """What the manifest records of a shard, read from its catalog, every stored frame's
    CRC32C checked on the way (a shard is only recorded whole)."""
    cat = store.catalog
    counts = cat.counts()
    seen: set[tuple] = set()  # a pack's frame is named by each of its members
    for blob in cat.blobs():
        for loc in (blob.tree, blob.src):
            if loc not in seen:
                seen.add(loc)
                store.raw_frame(loc)
    return {"files": counts["files"], "lines": counts["lines"], "blobs": counts["blobs"],
            "digest": cat.files_digest()}  # fmt: skip


def _peak_rss() -> float | None:
    """This process's peak RSS in MB (VmHWM), None where /proc has none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# run(fn, items, names): fn(item) for every item, where the runner runs tasks, results in
# the order they finish; a failure raises ShardFailed naming the item's shard
Runner = Callable[[Callable, list, list[str]], Iterator]


def local_runner(jobs: int) -> Runner:
    """Run tasks on a pool of `jobs` processes (spawned: nothing of the driver is shared)."""

    def run(fn: Callable, items: list, names: list[str]) -> Iterator:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(items))),
                                 mp_context=get_context("spawn")) as pool:  # fmt: skip
            futures = {pool.submit(fn, item): name for item, name in zip(items, names,
                                                                         strict=True)}  # fmt: skip
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except Exception as exc:  # noqa: BLE001 - reported by shard name
                    raise ShardFailed(f"shard {futures[fut]} failed: {exc!r}") from exc

    return run


def index_sharded(root: str | os.PathLike[str], directory: str | os.PathLike[str], *,
                  runner: Runner, shard_mb: float = SHARD_MB,
                  progress: Callable[[int, int, dict], None] | None = None,
                  wait: float = 0.0) -> dict:  # fmt: skip
    """Index `root` into the sharded store at `directory` (created if missing): walk, cut
    (or keep the manifest's ranges), run one task per shard through `runner`, check every
    shard against what its task reported, then write the manifest. Nothing is committed
    when a shard fails: the old manifest (if any) still names the old shards' contents,
    and a re-run resumes."""
    from ..store import Store
    from ..store.lock import WriterLock

    t0 = time.perf_counter()
    root = Path(root).resolve()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with WriterLock(directory, wait):
        old = mf.read(directory) if mf.is_sharded(directory) else None
        if old is not None and old.root != str(root):
            raise mf.ManifestError(f"{directory}: its shards index {old.root}, not {root}")
        files, links = walk(root)
        shard_bytes = old.shard_bytes if old else max(1, int(shard_mb * 2**20))
        firsts = [s.first for s in old.shards] if old else cut(files, shard_bytes)
        groups = assign(files, firsts)
        tasks = [ShardTask(str(root), str(directory / shard_name(k)), shard_name(k),
                           tuple(g)) for k, g in enumerate(groups)]  # fmt: skip
        results: dict[str, dict] = {}
        for res in runner(build_shard, tasks, [t.name for t in tasks]):
            results[res["name"]] = res
            if progress:
                progress(len(results), len(tasks), res)
        shards = []
        for task, first in zip(tasks, firsts, strict=True):
            res = results.get(task.name)
            if res is None:
                raise ShardFailed(f"shard {task.name}: its task returned nothing")
            with Store.open(task.directory, working_tree=False) as store:
                got = shard_summary(store)
            want = {k: res[k] for k in got}
            if got != want:
                raise ShardFailed(f"shard {task.name} does not hold what its task reported "
                                  f"({got} != {want}): run the index again")  # fmt: skip
            shards.append(mf.Shard(task.name, first, **got))
        manifest = mf.Manifest(str(root), shards, shard_bytes, grammars=mf.grammar_identities())
        mf.write(directory, manifest)
    seconds = time.perf_counter() - t0
    lines = manifest.lines
    return {"shards": len(shards), "files": sum(s.files for s in shards), "lines": lines,
            "indexed": sum(r["indexed"] for r in results.values()),
            "unchanged": sum(r["unchanged"] for r in results.values()),
            "skipped_files": sorted([tuple(x) for r in results.values()
                                     for x in r["skipped_files"]] + links),
            "seconds": round(seconds, 3),
            "lines_per_s": round(lines / seconds) if seconds else None,
            "worker_peak_rss_mb": max((r["peak_rss_mb"] for r in results.values()), default=0),
            "shard_results": sorted(results.values(), key=lambda r: r["name"])}  # fmt: skip
