"""`cstvault bench store`: index a corpus, then a seeded Zipf workload in a fresh process.

RSS is measured, never estimated: attributable RSS = RSS of the workload process after the
workload minus RSS of another fresh process that made the same imports and holds the same
list of files to visit (the harness's own data); its peak is sampled every 1,000 ops (or
a tenth of them) during the workload. The workload process is a reader as a user's would
be: neither the read path nor the harness loads numpy (`numpy_loaded` says so). In another
process, cold opens (cache budget 0) and tree-sitter re-parses of the same sampled files are
timed in two separate passes; a third, in another fresh store, times the stages of the same
cold opens (path lookup, frame read + CRC32C, zstd decompression, record check + decode +
tree binding). `process_rss_peak_mb` is the
workload process's whole sampled peak; `import_rss_mb`, what `import cstvault` alone adds to
a fresh interpreter (`interpreter_rss_mb`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import cpu_times, fresh_process, steal_percent
from .rss import Sampler

# what both the workload process and its baseline import (nothing here loads numpy)
_IMPORTS = "import cstvault, cstvault.store, cstvault.bench.zipf, json, random, sys, time\n"

# the harness's list of files to visit: paths, and sizes in an array (held by both processes)
_FILES = """
import sqlite3
from array import array
from cstvault.store.catalog import FILE, PATH
_con = sqlite3.connect(sys.argv[1] + "/catalog.sqlite")
_rows = _con.execute(f"SELECT {PATH} AS p, f.size FROM {FILE} ORDER BY p").fetchall()
_con.close()
paths, sizes = [r[0] for r in _rows], array("q", [r[1] for r in _rows])
del _rows
"""

_BASELINE = _IMPORTS + _FILES + """
from cstvault.store import rss_bytes
print(rss_bytes())
"""

# what `import cstvault` alone adds to a fresh interpreter
_IMPORT = """
import os
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
import cstvault
print(before, rss())
"""

# the Zipf workload: a reader process as a user's would be (no numpy: the read path and this
# harness do not load it; `numpy_loaded` says so)
_WORKLOAD = _IMPORTS + _FILES + r"""
from cstvault.bench.zipf import zipf
from cstvault.cache import CacheConfig
from cstvault.store import Store, memory_breakdown, rss_bytes

store_dir, budget = sys.argv[1], float(sys.argv[2])
ops, seed = int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
store = Store.open(store_dir, CacheConfig(max_memory_mb=budget))
open_ms = (time.perf_counter() - t0) * 1000
rng = random.Random(seed)
order = list(range(len(paths)))
rng.shuffle(order)
last = len(order)
lat = array("d", bytes(8 * ops))
rss_peak, every = 0, max(1, min(1000, ops // 10))  # sampled: during the run, not only after
for k in range(ops):
    at = order[min(zipf(rng, 1.2), last) - 1]
    t = time.perf_counter()
    tree = store.tree(paths[at])
    b = rng.randrange(max(sizes[at], 1))
    node = tree.root_node.descendant_for_byte_range(b, b)
    _ = node.type, node.text
    while node is not None:
        node = node.parent
    lat[k] = time.perf_counter() - t
    if k % every == every - 1:
        rss_peak = max(rss_peak, rss_bytes())
rss_after = rss_bytes()
rss_peak = max(rss_peak, rss_after)
numpy_loaded = "numpy" in sys.modules
memory = memory_breakdown()
stats = store.stats()
store.close()
q = sorted(lat)
print(json.dumps({
    "open_ms": round(open_ms, 3),
    "rss_after_bytes": rss_after,
    "rss_peak_bytes": rss_peak,
    "numpy_loaded": numpy_loaded,
    "rss_after_anonymous_mb": round(memory.get("anonymous", 0) / 2**20, 2),
    "rss_after_file_backed_mb": round(memory.get("file_backed", 0) / 2**20, 2),
    "op_p50_ms": round(q[len(q) // 2] * 1000, 4),
    "op_p99_ms": round(q[min(len(q) - 1, len(q) * 99 // 100)] * 1000, 4),
    "tiers": stats["tiers"],
    "cache_bytes": stats["cache_bytes"],
}))
"""

# cold opens (empty cache, frames from disk) against tree-sitter re-parsing the same files,
# in two passes so that neither pays for the other's trail through the CPU caches; then where
# a cold open's time goes: the same opens, stage by stage, in another fresh store
_COLD = r"""
import json, sys, time
import numpy as np
from cstvault.bench.store import by_size
from cstvault.cache import CacheConfig
from cstvault.extract import parse
from cstvault.store import Store, packs
from cstvault.store.catalog import FILE, PATH
from cstvault.tree import tree_from_record

store_dir, seed, cold_sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cold = Store.open(store_dir, CacheConfig(max_memory_mb=0))
files = cold.catalog.db.execute(f"SELECT {PATH} AS p, b.language FROM {FILE} "
                                "JOIN blobs b ON b.id = f.blob ORDER BY p").fetchall()
rng = np.random.default_rng(seed)
sample = rng.choice(len(files), size=min(cold_sample, len(files)), replace=False).tolist()
cold_ms, parse_ms, nodes = [], [], []
for k in sample:
    t = time.perf_counter()
    tree = cold.tree(files[k][0])
    tree.root_node
    cold_ms.append((time.perf_counter() - t) * 1000)
    nodes.append(len(tree))
    del tree
for k in sample:
    path, lang = files[k]
    src = cold.source(path)
    t = time.perf_counter()
    parse(src, lang).root_node
    parse_ms.append((time.perf_counter() - t) * 1000)
cold.close()
ratio = np.array(parse_ms) / np.maximum(np.array(cold_ms), 1e-9)
staged = Store.open(store_dir, CacheConfig(max_memory_mb=0))
stages = {k: [] for k in ("lookup", "frame", "zstd", "tree")}
for k in sample:
    path = files[k][0]
    t0 = time.perf_counter()
    blob, indexed = staged._located(path)
    t1 = time.perf_counter()
    frame = staged._reader.read(*blob.tree)
    t2 = time.perf_counter()
    record = packs.PackCache(keep=0).member(blob.tree, frame, blob.id, staged._decompressor(
        blob.tree_dict)) if packs.is_pack(frame) else \
        staged._decompressor(blob.tree_dict).decompress(frame)  # fmt: skip
    t3 = time.perf_counter()
    tree_from_record(record)[0].root_node
    t4 = time.perf_counter()
    for name, a, b in zip(stages, (t0, t1, t2, t3), (t1, t2, t3, t4)):
        stages[name].append((b - a) * 1e6)
staged.close()
print(json.dumps({
    "cold_open_p50_ms": round(float(np.median(cold_ms)), 4),
    "reparse_p50_ms": round(float(np.median(parse_ms)), 4),
    "cold_vs_reparse_median_ratio": round(float(np.median(ratio)), 2),
    "cold_open_stages_p50_us": {k: round(float(np.median(v)), 1) for k, v in stages.items()},
    "cold_vs_reparse_by_size": by_size(nodes, parse_ms, cold_ms, stages),
}))
"""


def _python(code: str, *args: str) -> str:
    return fresh_process(["-c", code, *args], "bench store subprocess")


def run(root: Path | None, store_dir: Path, jobs: int, budget_mb: float, ops: int,
        seed: int = 1, cold_sample: int = 500, log=print) -> dict:  # fmt: skip
    from ..freeze import freeze
    from ..indexer import index
    from ..store import Store

    out: dict = {"budget_mb": budget_mb, "ops": ops, "seed": seed, "jobs": jobs}
    if root is not None:
        log(f"indexing {root} into {store_dir} with {jobs} jobs")
        before, ours = cpu_times(), os.times()
        with Sampler() as sampled:  # this process and any it starts, every 20 ms
            rep = index(root, store_dir, jobs=jobs, compact=False)  # freeze compacts, as the CLI
        out["index_peak_rss_mb"] = round(sampled.peak / 2**20, 1)
        out["index_cpu_steal_percent"] = steal_percent(before, cpu_times())
        # CPU seconds of this process and its (reaped) workers: what the run cost whatever
        # share of the cores the hypervisor left it
        spent = [b - a for a, b in zip(ours, os.times(), strict=True)][:4]
        out["index_cpu_seconds"] = round(sum(spent), 2)
        out["index_lines_per_cpu_s"] = round(rep.lines / sum(spent)) if sum(spent) else None
        out["index_seconds"] = round(rep.seconds, 2)
        out["index_files"] = rep.files
        out["index_lines_per_s"] = round(rep.lines / rep.seconds) if rep.seconds else None
        with Store.open(store_dir) as store:
            out["disk_bytes_per_line_before_freeze"] = store.stats()["disk_bytes_per_line"]
        log("freezing the frames to zstd-19")
        with Sampler() as sampled:
            fz = freeze(store_dir, jobs=jobs)
        out["freeze_peak_rss_mb"] = round(sampled.peak / 2**20, 1)
        out["freeze"] = fz.as_dict()
        total = rep.seconds + fz.seconds
        out["index_end_to_end_lines_per_s"] = round(rep.lines / total) if total else None
    with Store.open(store_dir) as store:
        stats = store.stats()
    for key in ("files", "blobs", "lines", "nodes", "segments", "symbols",
                "symbol_interning_ratio", "dedup_ratio"):  # fmt: skip
        out[key] = stats[key]
    out["disk_bytes"] = stats["disk_bytes"]
    out["disk_bytes_per_line"] = stats["disk_bytes_per_line"]
    log("measuring what the trained dictionaries save on a sample of blobs")
    out["dictionaries"] = dictionary_effect(store_dir, seed=seed)
    log("measuring a fresh process's RSS with the same imports")
    base = int(_python(_BASELINE, str(store_dir)))
    log(f"running {ops:,} Zipf ops with a {budget_mb} MB budget")
    work = json.loads(_python(_WORKLOAD, str(store_dir), str(budget_mb), str(ops), str(seed)))
    log(f"timing {cold_sample} cold opens against re-parses")
    work.update(json.loads(_python(_COLD, str(store_dir), str(seed), str(cold_sample))))
    out["baseline_rss_mb"] = round(base / 2**20, 2)
    out["attributable_rss_mb"] = round((work.pop("rss_after_bytes") - base) / 2**20, 2)
    peak = work.pop("rss_peak_bytes")
    out["attributable_rss_peak_mb"] = round((peak - base) / 2**20, 2)
    # the whole workload process at its sampled peak (imports, store, cache, the harness's list)
    out["process_rss_peak_mb"] = round(peak / 2**20, 2)
    before, after = (int(x) for x in _python(_IMPORT).split())
    out["interpreter_rss_mb"] = round(before / 2**20, 2)
    out["import_rss_mb"] = round((after - before) / 2**20, 2)
    tiers = work["tiers"]
    total = sum(t["hits"] for name, t in tiers.items())
    out["hit_ratios"] = {name: round(t["hits"] / max(total, 1), 4) for name, t in tiers.items()}
    out.update(work)
    return out


def by_size(nodes: list[int], parse_ms: list[float], cold_ms: list[float],
            stages: dict[str, list[float]], groups: int = 5) -> list[dict]:
    """The cold-open sample in `groups` equal groups by node count: per group the node range,
    re-parse and cold-open p50, their median per-file ratio, the cold-open time a 20x ratio
    would allow at that re-parse p50, and the stages' p50 in microseconds."""
    import numpy as np

    n, p, c = np.asarray(nodes), np.asarray(parse_ms), np.asarray(cold_ms)
    order = np.argsort(n, kind="stable")
    rows = []
    for part in np.array_split(order, groups):
        if not part.size:
            continue
        reparse = float(np.median(p[part]))
        rows.append({
            "nodes": [int(n[part].min()), int(n[part].max())], "files": int(part.size),
            "reparse_p50_ms": round(reparse, 4),
            "cold_open_p50_ms": round(float(np.median(c[part])), 4),
            "ratio_p50": round(float(np.median(p[part] / np.maximum(c[part], 1e-9))), 2),
            "cold_open_for_20x_us": round(reparse * 1000 / 20, 1),
            "stages_p50_us": {k: round(float(np.median(np.asarray(v)[part])), 1)
                              for k, v in stages.items()},
        })  # fmt: skip
    return rows


def dictionary_effect(store_dir: Path, sample: int = 2000, seed: int = 1) -> dict:
    """Frame bytes per line of a seeded sample of blobs: as stored (zstd-19, tree records
    with the trained per-language dictionaries, alone or in tree packs; sources in packs;
    a pack's member counted at its share of the pack) and each recompressed at zstd-19
    alone, without a dictionary."""
    import numpy as np
    import zstandard

    from ..store import Store
    from .disk import shares

    plain = zstandard.ZstdCompressor(level=19)
    with Store.open(store_dir) as store:
        blobs = list(store.catalog.blobs())
        rng = np.random.default_rng(seed)
        picked = [blobs[k] for k in rng.choice(len(blobs), min(sample, len(blobs)),
                                               replace=False).tolist()]  # fmt: skip
        tree_share, src_share = shares(store, picked, "tree"), shares(store, picked, "source")
        lines = without_tree = without_src = 0
        for b in picked:
            record, source = store.read_blob(b, f"blob {b.id}")
            lines += b.lines
            without_tree += len(plain.compress(record))
            without_src += len(plain.compress(source))
    per = max(lines, 1)
    return {"sample_blobs": len(picked), "lines": lines,
            "tree_bytes_per_line": {"as_stored": round(sum(tree_share.values()) / per, 3),
                                    "none": round(without_tree / per, 3)},
            "source_bytes_per_line": {"as_stored": round(sum(src_share.values()) / per, 3),
                                      "none": round(without_src / per, 3)}}  # fmt: skip


def default_store(root: Path) -> Path:
    return Path(os.environ.get("CSTVAULT_CACHE", Path.home() / ".cache" / "cstvault")) / (
        "bench-store-" + root.name
    )


__all__ = ["by_size", "default_store", "run"]
