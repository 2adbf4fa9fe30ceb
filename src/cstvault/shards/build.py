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
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
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


def walk(root: Path) -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
    """(root-relative path, size, mtime in ns) of every supported file under `root`,
    ascending, and the links not followed with why."""
    top = os.fspath(root).rstrip(os.sep) or os.sep
    links: list[tuple[str, str]] = []
    files = []
    for path, _, st in walk_files([root], lambda p, r: links.append((
            Path(p).relative_to(root).as_posix(), r))):  # fmt: skip
        rel = path[len(top) + 1 :].replace(os.sep, "/")
        files.append((rel, st.st_size if st is not None else 0,
                      st.st_mtime_ns if st is not None else 0))
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


def assign(files: list[tuple[str, int, int]], firsts: list[str]) -> list[list[tuple]]:
    """Each shard's files (path, size, mtime), by the ranges that `firsts` start."""
    groups: list[list[tuple]] = [[] for _ in firsts]
    for f in files:
        groups[mf.shard_of(firsts, f[0])].append(f)
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
        check_frames(store)
        out = {"name": task.name, **shard_summary(store), "indexed": report.files,
               "unchanged": report.unchanged, "removed": report.removed,
               "skipped_files": report.skipped_files}  # fmt: skip
    return {**out, "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_mb": round(_peak_rss() or rss_bytes() / 2**20, 1)}  # fmt: skip


def check_frames(store) -> None:
    """Read every stored frame once, CRC32C-checked (a shard is only recorded whole)."""
    seen: set[tuple] = set()  # a pack's frame is named by each of its members
    for blob in store.catalog.blobs():
        for loc in (blob.tree, blob.src):
            if loc not in seen:
                seen.add(loc)
                store.raw_frame(loc)


def shard_summary(store) -> dict:
    """What the manifest records of a shard, from its catalog."""
    cat = store.catalog
    counts = cat.counts()
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


def results(done: Iterable, name_of: Callable, where: str = "") -> Iterator:
    """The results of finished futures, a failure raised as ShardFailed naming its shard."""
    for fut in done:
        try:
            yield fut.result()
        except Exception as exc:  # noqa: BLE001 - reported by shard name
            raise ShardFailed(f"shard {name_of(fut)} failed{where}: {exc!r}") from exc


def local_runner(jobs: int) -> Runner:
    """Run tasks on a pool of `jobs` processes (spawned: nothing of the driver is shared)."""

    def run(fn: Callable, items: list, names: list[str]) -> Iterator:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(items))),
                                 mp_context=get_context("spawn")) as pool:  # fmt: skip
            futures = {pool.submit(fn, item): name for item, name in zip(items, names,
                                                                         strict=True)}  # fmt: skip
            yield from results(as_completed(futures), futures.__getitem__)

    return run


def _as_stored(directory: Path, files: list[tuple[str, int, int]], digest: int) -> bool:
    """Does the shard at `directory` hold exactly `files` (path, size, mtime) as they are
    now, with the files digest the manifest recorded (then its task need not run)? A shard
    with a skipped file always runs again (a skip keeps no size or mtime to compare)."""
    from ..store import Store

    try:
        with Store.open(directory, working_tree=False) as store:
            if store.catalog.files_digest() != digest or store.catalog.skipped():
                return False
            have = {f.path: (f.size, f.mtime_ns) for f in store.files()}
    except (OSError, ValueError, RuntimeError, sqlite3.Error):  # missing, damaged, old: rebuild
        return False
    return have == {rel: (size, mtime) for rel, size, mtime in files}


def index_sharded(root: str | os.PathLike[str], directory: str | os.PathLike[str], *,
                  runner: Runner, shard_mb: float = SHARD_MB, scratch: str | None = None,
                  progress: Callable[[int, int, dict], None] | None = None,
                  wait: float = 0.0) -> dict:  # fmt: skip
    """Index `root` into the sharded store at `directory` (created if missing): walk, cut
    (or keep the manifest's ranges), run one task per shard whose files changed through
    `runner`, check every shard against what its task reported, then write the manifest.

    Tasks write their shard in place, or, with `scratch` (a directory the workers can
    write to, shared with the driver), under it, from a copy of the shard they resume;
    the driver then moves each finished shard into `directory` under a new name, and the
    shards it replaces are deleted once the manifest names the new ones. Nothing is
    committed when a shard fails: the old manifest (if any) still names the old shards'
    contents, and a re-run resumes."""
    from ..store import Store
    from ..store.lock import WriterLock

    t0 = time.perf_counter()
    root = Path(root).resolve()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]  # names the shards this run builds in `scratch`
    stage = Path(scratch) / f"cstvault-{run_id}" if scratch is not None else None
    with WriterLock(directory, wait):
        old = mf.read(directory) if mf.is_sharded(directory) else None
        if old is not None and old.root != str(root):
            raise mf.ManifestError(f"{directory}: its shards index {old.root}, not {root}")
        files, links = walk(root)
        shard_bytes = old.shard_bytes if old else max(1, int(shard_mb * 2**20))
        firsts = old.firsts if old else cut([(r, s) for r, s, _ in files], shard_bytes)
        groups = assign(files, firsts)
        kept: dict[int, mf.Shard] = {}
        tasks: list[tuple[int, ShardTask]] = []
        for k, group in enumerate(groups):
            prev = old.shards[k] if old else None
            if prev is not None and _as_stored(directory / prev.name, group, prev.digest):
                kept[k] = prev  # nothing changed: no task
                continue
            name = prev.name if prev is not None else shard_name(k)
            where = directory / name
            if stage is not None:
                name = f"{shard_name(k)}.{run_id}"
                where = stage / name
                if prev is not None and (directory / prev.name).is_dir():
                    shutil.copytree(directory / prev.name, where)  # resumed there
            paths = tuple(rel for rel, _, _ in group)
            tasks.append((k, ShardTask(str(root), str(where), name, paths)))
        results: dict[str, dict] = {}
        for res in runner(build_shard, [t for _, t in tasks], [t.name for _, t in tasks]):
            results[res["name"]] = res
            if progress:
                progress(len(results), len(tasks), res)
        made: dict[int, mf.Shard] = {}
        for k, task in tasks:
            res = results.get(task.name)
            if res is None:
                raise ShardFailed(f"shard {task.name}: its task returned nothing")
            with Store.open(task.directory, working_tree=False) as store:
                got = shard_summary(store)
            want = {key: res[key] for key in got}
            if got != want:
                raise ShardFailed(f"shard {task.name} does not hold what its task reported "
                                  f"({got} != {want}): run the index again")  # fmt: skip
            made[k] = mf.Shard(task.name, firsts[k], **got)
        if stage is not None:  # the driver moves the finished shards in (new names)
            for _, task in tasks:
                if (directory / task.name).exists():
                    raise ShardFailed(f"shard {task.name}: {directory / task.name} exists")
                shutil.move(task.directory, directory / task.name)
        shards = [kept.get(k) or made[k] for k in range(len(groups))]
        manifest = mf.Manifest(str(root), shards, shard_bytes, grammars=mf.grammar_identities())
        mf.write(directory, manifest)
        names = {s.name for s in shards}
        for s in old.shards if old else ():
            if s.name not in names:  # replaced by a shard built in the scratch directory
                shutil.rmtree(directory / s.name, ignore_errors=True)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    seconds = time.perf_counter() - t0
    lines = manifest.lines
    return {"shards": len(shards), "files": sum(s.files for s in shards), "lines": lines,
            "shards_rebuilt": len(tasks),
            "indexed": sum(r["indexed"] for r in results.values()),
            "unchanged": sum(r["unchanged"] for r in results.values())
            + sum(s.files for s in kept.values()),
            "skipped_files": sorted([tuple(x) for r in results.values()
                                     for x in r["skipped_files"]] + links),
            "seconds": round(seconds, 3),
            "lines_per_s": round(lines / seconds) if seconds else None,
            "worker_peak_rss_mb": max((r["peak_rss_mb"] for r in results.values()), default=0),
            "shard_results": sorted(results.values(), key=lambda r: r["name"])}  # fmt: skip
