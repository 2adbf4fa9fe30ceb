"""`cstvault bench scale`: sharded stores built on a Dask `LocalCluster`, against one store.

1. The corpus indexed twice by the CLI, each in a new process: `cstvault index --jobs J`
   (one store) and `cstvault index --dask local:J --shard-mb M` (a sharded store), both
   with their freeze; the ratio of their speeds is `dask_vs_local_throughput_ratio`.
2. Equality: every file's listing, source and tree record, and every symbol's files (all
   compacted symbols, in text order, the shards' merged), compared between the two stores.
3. Scale: the corpus copied `copies` times under c00/, c01/, ... (each file given a last
   line naming its copy, so deduplication does not hide the work), indexed on the cluster
   into shards of `scale_shard_mb` MB of source. Peak RSS per worker is each task's own
   peak (VmHWM of the worker process: Dask's baseline included); then a fresh reader
   process opens the sharded store (p50 over repeated opens), looks up symbols across all
   shards (p50) and runs a Zipf workload at the budget: its attributable RSS is its RSS
   minus a baseline process holding the same imports (numpy too: symbol lookups load it)
   and list of paths.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import sqlite3
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from . import fresh_process
from .rss import run_sampled

COMMENT = {".py": b"#"}  # every other language of the corpus takes //


def _index(args: list[str]) -> tuple[dict, float, float]:
    out, peak, seconds = run_sampled(["index", *args, "--json"], "cstvault index")
    return json.loads(out[out.index("{"):]), peak / 2**20, seconds


def equality(single: Path, sharded: Path, log=print) -> dict:
    """Differences between a single store and a sharded store of the same files."""
    from ..shards import ShardedStore
    from ..store import Store
    from ..store.symtab import Block, _blobs

    out = {"files_checked": 0, "listing_differs": 0, "sources_differ": 0, "trees_differ": 0,
           "symbols_checked": 0, "symbols_differ": 0, "pending_symbols": 0}  # fmt: skip
    with Store.open(single, working_tree=False) as one, \
            ShardedStore.open(sharded, working_tree=False) as sh:  # fmt: skip
        a = [f.path for f in one.files()]
        b = [f.path for f in sh.files()]
        out["listing_differs"] = int(a != b)
        log(f"comparing {len(a):,} files' sources and tree records")
        for path in a:
            blob, _ = one._located(path)
            store = sh.shard_for(path)
            try:
                other, _ = store._located(path)
            except KeyError:
                out["sources_differ"] += 1
                continue
            out["files_checked"] += 1
            out["sources_differ"] += one._source(blob, path) != store._source(other, path)
            out["trees_differ"] += one._record(blob, path) != store._record(other, path)
        log("comparing every symbol's files")
        stores = [sh.shard(k) for k in range(len(sh.manifest.shards))]

        def entries(store):
            paths = store.catalog.files_of_blobs([b.id for b in store.catalog.blobs()])
            for (data,) in store.catalog.db.execute(
                    "SELECT data FROM symbol_blocks ORDER BY first"):  # fmt: skip
                block = Block(data)
                for k in range(block.n):
                    found = sorted(p for blob in _blobs(block.stream(k)).tolist()
                                   for p in paths.get(blob, ()))  # fmt: skip
                    yield block.text(k), found

        for st in [one, *stores]:
            row = st.catalog.db.execute("SELECT count(*) FROM sqlite_master WHERE name = "
                                        "'symbol_pending'").fetchone()  # fmt: skip
            if row[0]:
                out["pending_symbols"] += st.catalog.db.execute(
                    "SELECT count(*) FROM symbol_pending").fetchone()[0]  # fmt: skip
        # every store's symbols in text order, tagged 0 (one store) or 1 (the shards)
        tagged = [((t, 0, f) for t, f in entries(one))]
        tagged += [((t, 1, f) for t, f in entries(s)) for s in stores]
        for _, group in groupby(heapq.merge(*tagged, key=itemgetter(0)), key=itemgetter(0)):
            files: list[list[str] | None] = [None, None]  # None: the side lacks the symbol
            for _, side, found in group:
                files[side] = sorted((files[side] or []) + found)
            out["symbols_checked"] += 1
            out["symbols_differ"] += files[0] is None or files[0] != files[1]
    out["differences"] = (out["listing_differs"] + out["sources_differ"] + out["trees_differ"]
                          + out["symbols_differ"])  # fmt: skip
    return out


def synthetic(corpus: Path, dest: Path, copies: int, log=print) -> int:
    """The corpus copied under c00/, c01/, ..., each file's last line naming its copy;
    returns the lines written."""
    if dest.exists():
        shutil.rmtree(dest)
    rels = sorted(p.relative_to(corpus) for p in corpus.rglob("*")
                  if p.is_file() and p.name != "manifest.json")  # fmt: skip
    lines = 0
    for c in range(copies):
        log(f"writing copy {c + 1} of {copies}")
        for rel in rels:
            data = (corpus / rel).read_bytes()
            if data and not data.endswith(b"\n"):
                data += b"\n"
            data += COMMENT.get(rel.suffix, b"//") + b" copy %d\n" % c
            out = dest / f"c{c:02d}" / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            lines += data.count(b"\n")
    return lines


_PATHS = """
import sqlite3, sys, json
from cstvault.shards import manifest as mf
m = mf.read(sys.argv[1])
paths = []
for s in m.shards:
    con = sqlite3.connect(sys.argv[1] + "/" + s.name + "/catalog.sqlite")
    from cstvault.store.catalog import FILE, PATH
    paths += [r[0] for r in con.execute(f"SELECT {PATH} AS p FROM {FILE} ORDER BY p")]
    con.close()
import random
order = list(range(len(paths)))  # the visiting order: the harness's data, in both processes
random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1).shuffle(order)
"""

# symbol lookups load numpy (the symbol blocks' columns), and a sharded store's modules
# load the store's: both processes import them first, so their code is not counted as data
# the store holds (as in `bench store`, whose processes both import cstvault.store)
_IMPORTS = ("import numpy, cstvault, cstvault.store, cstvault.shards, cstvault.bench.zipf, "
            "random, time\n")
_BASELINE = _IMPORTS + _PATHS + """
from cstvault.store import memory_breakdown, rss_bytes
m = memory_breakdown()
print(rss_bytes(), m.get("anonymous", 0), m.get("file_backed", 0))
"""

_READER = _IMPORTS + _PATHS + r"""
from cstvault.bench.zipf import zipf
from cstvault.cache import CacheConfig
from cstvault.store import memory_breakdown, rss_bytes
budget, ops, seed = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
symbols = json.loads(open(sys.argv[5]).read())
opens = []
for _ in range(21):
    t = time.perf_counter()
    s = cstvault.open(sys.argv[1], CacheConfig(max_memory_mb=budget))
    opens.append((time.perf_counter() - t) * 1000)
    s.close()
store = cstvault.open(sys.argv[1], CacheConfig(max_memory_mb=budget))
from cstvault._native import release_free_memory
probe = "cstvault_probe_no_such_symbol"  # a lookup's code runs, no list of paths is made
store.shard(0).files_with_symbol(probe)
release_free_memory()
one = rss_bytes()
store.files_with_symbol(probe)  # every other shard opened and searched
release_free_memory()
shard_open = (rss_bytes() - one) / max(1, len(store.manifest.shards) - 1)
store.files_with_symbol("x")
lookups, found = [], 0
for text in symbols:
    t = time.perf_counter()
    found += len(store.files_with_symbol(text))
    lookups.append((time.perf_counter() - t) * 1000)
rng = random.Random(seed + 1)  # the Zipf draws (the order was shuffled with `seed`)
peak, every = 0, max(1, min(1000, ops // 10))
for k in range(ops):
    at = order[min(zipf(rng, 1.2), len(order)) - 1]
    tree = store.tree(paths[at])
    node = tree.root_node.descendant_for_byte_range(0, 0)
    _ = node.type, node.text
    if k % every == every - 1:
        peak = max(peak, rss_bytes())
after = rss_bytes()
memory = memory_breakdown()
cache = store.stats()["cache_bytes"]
store.close()
first = opens[0]
opens.sort(); lookups.sort()
print(json.dumps({"open_ms": opens[len(opens) // 2], "first_open_ms": first,
                  "lookup_p50_ms": lookups[len(lookups) // 2],
                  "lookup_p99_ms": lookups[min(len(lookups) - 1, len(lookups) * 99 // 100)],
                  "lookups": len(lookups), "lookup_files_found": found,
                  "rss_after": after, "rss_peak": max(peak, after), "cache_bytes": cache,
                  "shard_open": shard_open, "anonymous": memory.get("anonymous", 0),
                  "file_backed": memory.get("file_backed", 0)}))
"""


def symbol_sample(sharded: Path, count: int, seed: int) -> list[str]:
    """`count` symbol texts drawn from the shards' compacted symbol blocks."""
    import random

    from cstvault.shards import manifest as mf
    from cstvault.store.symtab import Block

    m = mf.read(sharded)
    texts = []
    for s in m.shards:
        con = sqlite3.connect(sharded / s.name / "catalog.sqlite")
        rows = con.execute("SELECT data FROM symbol_blocks").fetchall()
        con.close()
        rng = random.Random(seed)
        for (data,) in rng.sample(rows, min(len(rows), max(1, count // len(m.shards)))):
            block = Block(data)
            texts.append(block.text(rng.randrange(block.n)).decode("utf-8", "replace"))
    return texts[:count]


def reader(sharded: Path, budget_mb: float, ops: int, lookups: int, seed: int,
           work: Path) -> dict:  # fmt: skip
    sample = work / "symbols.json"
    sample.write_text(json.dumps(symbol_sample(sharded, lookups, seed)))
    got = fresh_process(["-c", _BASELINE, str(sharded), "", "", str(seed)],
                        "bench scale baseline")  # fmt: skip
    base, anon, backed = (int(x) for x in got.split())
    got = json.loads(fresh_process(["-c", _READER, str(sharded), str(budget_mb), str(ops),
                                    str(seed), str(sample)], "bench scale reader"))  # fmt: skip
    return {"sharded_open_ms": round(got["open_ms"], 3),
            "sharded_first_open_ms": round(got["first_open_ms"], 3),
            "symbol_lookup_p50_ms": round(got["lookup_p50_ms"], 4),
            "symbol_lookup_p99_ms": round(got["lookup_p99_ms"], 4),
            "symbol_lookups": got["lookups"], "symbol_lookup_files_found":
            got["lookup_files_found"], "reader_ops": ops, "budget_mb": budget_mb,
            "baseline_rss_mb": round(base / 2**20, 2),
            "attributable_rss_mb": round((got["rss_after"] - base) / 2**20, 2),
            "attributable_rss_peak_mb": round((got["rss_peak"] - base) / 2**20, 2),
            "attributable_anonymous_mb": round((got["anonymous"] - anon) / 2**20, 2),
            "attributable_file_backed_mb": round((got["file_backed"] - backed) / 2**20, 2),
            "cache_mb": round(got["cache_bytes"] / 2**20, 2),
            # what opening one more shard costs (RSS after opening every shard and a lookup
            # in each, freed heap given back, less after the first shard's, per shard)
            "shard_open_kib": round(got["shard_open"] / 1024)}


def run(corpus: Path, work: Path, *, jobs: int = 2, shard_mb: float = 32, copies: int = 12,
        scale_shard_mb: float = 256, budget_mb: float = 16, ops: int = 20_000,
        lookups: int = 2_000, seed: int = 1, reader_only: bool = False,
        log=print) -> dict:  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    if reader_only:  # the reader's part again, on the sharded store an earlier run left
        big = work / "sharded-scale"
        if not (big / "shards.json").is_file():
            raise FileNotFoundError(f"no sharded store at {big}: run `bench scale` first")
        import cstvault

        with cstvault.open(big) as s:
            out = {"reader_only": True, "lines": s.manifest.lines,
                   "shards": len(s.manifest.shards)}  # fmt: skip
        log(f"a reader: opens, {lookups:,} symbol lookups, {ops:,} Zipf ops at {budget_mb} MB")
        out.update(reader(big, budget_mb, ops, lookups, seed, work))
        return out
    single, sharded = work / "single", work / "sharded"
    for d in (single, sharded):
        if d.exists():
            shutil.rmtree(d)
    out: dict = {"jobs": jobs, "shard_mb": shard_mb}
    log(f"cstvault index --jobs {jobs} (one store)")
    one, one_peak, one_s = _index([str(corpus), "--store", str(single), "--jobs", str(jobs)])
    log(f"cstvault index --dask local:{jobs} --shard-mb {shard_mb}")
    many, many_peak, many_s = _index([str(corpus), "--store", str(sharded), "--dask",
                                      f"local:{jobs}", "--shard-mb", str(shard_mb)])  # fmt: skip
    out["local"] = {"seconds": round(one_s, 2), "lines": one["lines"],
                    "lines_per_s": round(one["lines"] / one_s), "peak_rss_mb": round(one_peak, 1)}
    out["dask"] = {"seconds": round(many_s, 2), "lines": many["lines"], "shards": many["shards"],
                   "lines_per_s": round(many["lines"] / many_s),
                   "all_processes_peak_rss_mb": round(many_peak, 1),
                   "worker_peak_rss_mb": many["worker_peak_rss_mb"]}  # fmt: skip
    out["dask_vs_local_throughput_ratio"] = round(one_s / many_s, 3)
    out["equality"] = equality(single, sharded, log)
    out["differences"] = out["equality"]["differences"]
    if copies:
        tree = work / "synthetic"
        log(f"writing the corpus {copies} times under {tree}")
        written = synthetic(corpus, tree, copies, log)
        big = work / "sharded-scale"
        if big.exists():
            shutil.rmtree(big)
        log(f"cstvault index --dask local:{jobs} --shard-mb {scale_shard_mb} ({written:,} lines)")
        res, peak, seconds = _index([str(tree), "--store", str(big), "--dask", f"local:{jobs}",
                                     "--shard-mb", str(scale_shard_mb)])  # fmt: skip
        import cstvault

        with cstvault.open(big) as s:
            stats = s.stats()
        out["lines"] = res["lines"]
        out["shards"] = res["shards"]
        out["worker_peak_rss_mb"] = res["worker_peak_rss_mb"]
        out["scale"] = {"lines_written": written, "files": res["files"],
                        "seconds": round(seconds, 1),
                        "lines_per_s": round(res["lines"] / seconds),
                        "all_processes_peak_rss_mb": round(peak / 2**20, 1),
                        "shard_mb": scale_shard_mb,
                        "workers": [{k: r[k] for k in ("name", "files", "lines", "seconds",
                                                       "peak_rss_mb")}
                                    for r in res["shard_results"]],
                        "disk_bytes": stats["disk_bytes"],
                        "disk_bytes_per_line": stats["disk_bytes_per_line"]}  # fmt: skip
        log(f"a reader: opens, {lookups:,} symbol lookups, {ops:,} Zipf ops at {budget_mb} MB")
        out.update(reader(big, budget_mb, ops, lookups, seed, work))
        if not os.environ.get("CSTVAULT_KEEP_SCALE"):
            shutil.rmtree(tree)
    return out
