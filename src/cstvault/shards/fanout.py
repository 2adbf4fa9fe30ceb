"""Whole-store work on a sharded store, one task per shard on a runner (a local process
pool, or Dask workers: `build.Runner`), merged as the tasks finish."""

from __future__ import annotations

from pathlib import Path

from ..verify import Mismatch, Report
from . import manifest as mf
from .build import Runner


def verify_shard(args: tuple[str, int, str]) -> dict:
    """`verify --store` of one shard (runs where the task runs): its report as a dict."""
    from ..store import Store
    from ..verify import verify_store

    directory, max_mismatches, name = args
    with Store.open(directory, working_tree=False) as store:
        out = verify_store(store).as_dict()
    out["mismatches"] = out["mismatches"][:max_mismatches]
    out["shard"] = name
    return out


def verify_sharded(directory: str | Path, runner: Runner, max_mismatches: int = 20,
                   progress=None) -> tuple[Report, list[dict]]:  # fmt: skip
    """Every shard verified (frame CRCs, decode, comparison with a fresh parse) as one task
    each: one report, and each shard's name, files and mismatches, by name."""
    directory = Path(directory)
    m = mf.read(directory)
    names = [s.name for s in m.shards]
    merged = Report(max_mismatches=max_mismatches)
    items = [(str(directory / n), max_mismatches, n) for n in names]
    shards = []
    for out in runner(verify_shard, items, names):
        shards.append({"name": out["shard"], "files": out["files"],
                       "mismatched": out["mismatched"]})  # fmt: skip
        for key in ("files", "ok", "mismatched", "lines", "nodes"):
            setattr(merged, key, getattr(merged, key) + out[key])
        merged.bytes += out["source_bytes"]
        merged.record_bytes += out["record_bytes"]
        merged.skipped.extend(out["skipped"])
        merged.add_mismatches([Mismatch(**x) for x in out["mismatches"]])
        if progress:
            progress(out)
    return merged, sorted(shards, key=lambda s: s["name"])


def query_shard(args: tuple) -> tuple[int, list]:
    """A whole-store query over one shard (runs where the task runs): (shard, matches)."""
    from ..search import NothingToSearch
    from ..store import Store

    k, directory, query, language, paths = args
    with Store.open(directory, working_tree=False) as store:
        try:
            return k, list(store.query(query, language, paths))
        except NothingToSearch:
            return k, []


def query_sharded(directory: str | Path, query: str | bytes, language: str,
                  paths: list[str] | None, runner: Runner):  # fmt: skip
    """`Store.query` as a task per shard; the matches streamed in path order (a shard's as
    soon as it and every shard before it are done)."""
    directory = Path(directory)
    m = mf.read(directory)
    names = [s.name for s in m.shards]
    items = [(k, str(directory / n), query, language, paths) for k, n in enumerate(names)]
    done: dict[int, list] = {}
    nxt = 0
    for k, matches in runner(query_shard, items, names):
        done[k] = matches
        while nxt in done:
            yield from done.pop(nxt)
            nxt += 1
