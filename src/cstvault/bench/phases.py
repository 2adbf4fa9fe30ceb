"""`cstvault bench phases`: the optimisation table of the original plan, measured.

Every row runs in a fresh subprocess on the same files: it builds (or opens) its form of the
corpus, measures the real RSS delta of holding it, runs one seeded Zipf workload (open a
file's tree, resolve the node at a random byte, read type, text and the parent chain) and
then checks every file's columns and source against digests of a fresh tree-sitter parse
made beforehand by the parent -- quality is compared, never assumed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..columns import Columns
from ..sources import check_source, count_lines
from ..walk import iter_files
from . import fresh_process

ROWS = ("Baseline", "Phase 1", "Phase 2", "Phase 3", "Phase 4a", "Phase 4b", "Phase 4c")
FORM_OF = {
    "Baseline": "py-tree-sitter Tree objects + source bytes in RAM",
    "Phase 1": "packed numpy columns in RAM: u16 kinds + flag bits, LEB128 positions, "
               "interned symbols",
    "Phase 2": "+ content dedup and pruning of derivable data",
    "Phase 3": "bytecode records in RAM (opcodes, jump tables, kind tables)",
    "Phase 4a": "frozen tier: zstd-19 records on disk (plain reads); RAM = catalog + cache",
    "Phase 4b": "+ sources read once from the unchanged working tree (CRC-checked)",
    "Phase 4c": "+ 256 KiB segments kept open in an LRU (production configuration)",
}  # fmt: skip
# what the plan this project started from claimed for 10M lines (never measured)
CLAIMED_GB = {"Baseline": 1.74, "Phase 1": 1.00, "Phase 2": 0.70, "Phase 3": 0.45,
              "Phase 4a": 0.11, "Phase 4b": 0.08, "Phase 4c": 0.05}  # fmt: skip
ZIPF_A = 1.2


def digest(cols: Columns, source: bytes) -> tuple[str, str]:
    """(columns digest, source digest): every column and the phantom list, in fixed dtypes."""
    h = hashlib.blake2b(digest_size=16)
    for a, dt in ((cols.kind, np.uint16), (cols.grammar, np.uint16), (cols.flags, np.uint8),
                  (cols.field, np.uint16), (cols.size, np.int64), (cols.start, np.int64),
                  (cols.end, np.int64), (cols.unexpected, np.int64)):  # fmt: skip
        h.update(np.ascontiguousarray(a, dtype=dt).tobytes())
    h.update(repr(tuple(cols.phantoms)).encode())
    return h.hexdigest(), hashlib.blake2b(bytes(source), digest_size=16).hexdigest()


def _reference(task: tuple[str, str]) -> tuple[str, str]:
    from ..extract import parse_extract

    path, lang = task
    source = Path(path).read_bytes()
    return digest(parse_extract(source, lang), source)


def select(corpus: Path, lines: int | None, seed: int) -> list[tuple[str, str, int, int]]:
    """A seeded random subset of the corpus's supported files totalling at most `lines` lines:
    (relative path, language, lines, bytes). Files the indexer would skip are left out."""
    found = []
    for path, lang in iter_files([corpus]):
        try:
            src = path.read_bytes()
        except OSError:
            continue
        if check_source(src) is None:
            found.append((path.relative_to(corpus).as_posix(), lang, count_lines(src), len(src)))
    order = np.random.default_rng(seed).permutation(len(found))
    picked, total = [], 0
    for k in order.tolist():
        if lines is not None and total + found[k][2] > lines:
            continue
        picked.append(found[k])
        total += found[k][2]
    return picked


def workload_plan(sizes: list[int], ops: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The same (file index, byte offset) pairs for every row: Zipf ranks over a permutation."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sizes))
    ranks = np.minimum(rng.zipf(ZIPF_A, size=ops), len(sizes)) - 1
    files = order[ranks]
    offsets = (rng.random(ops) * np.maximum(np.array(sizes)[files], 1)).astype(np.int64)
    return files, offsets


# ---- worker side: one row in this process --------------------------------------------------
def _rss() -> int:
    from ..store import rss_bytes

    return rss_bytes()


def _settle() -> int:
    from .._native import release_free_memory

    gc.collect()
    release_free_memory()
    return _rss()


def _run_ops(open_tree: Callable[[int], object], files: np.ndarray, offsets: np.ndarray):
    lat = np.empty(files.size)
    for k, (i, b) in enumerate(zip(files.tolist(), offsets.tolist(), strict=True)):
        t = time.perf_counter()
        node = open_tree(i).root_node.descendant_for_byte_range(b, b)
        _ = node.type, node.text
        while node is not None:
            node = node.parent
        lat[k] = time.perf_counter() - t
    return lat


def worker(row: str, spec_path: str) -> dict:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    rels = [f[0] for f in spec["files"]]
    sizes = [f[3] for f in spec["files"]]
    tasks = [(str(root / f[0]), f[1]) for f in spec["files"]]
    plan = workload_plan(sizes, spec["ops"], spec["seed"])
    from ..cache import CacheConfig
    from ..store import Store, memory_breakdown
    from ..tree import Tree  # noqa: F401 - imported before the baseline RSS, as in every row
    from . import forms

    out: dict = {"name": row, "form": FORM_OF[row], "files": len(tasks)}
    rss0 = _settle()
    t0 = time.perf_counter()
    if row in forms.FORMS:
        form = forms.FORMS[row](tasks, spec["jobs"])
        out["build_s"] = round(time.perf_counter() - t0, 2)
        out["ram_bytes"] = _settle() - rss0
        lat = _run_ops(form.tree, *plan)
        buffers = form.buffers()
        out["disk_bytes"] = 0
        columns, source = form.columns, form.source
    else:
        config = CacheConfig(max_memory_mb=spec["budget_mb"])
        store = Store.open(spec["store"], config, segment_lru=row == "Phase 4c",
                           working_tree=row != "Phase 4a")  # fmt: skip
        lat = _run_ops(lambda i: store.tree(rels[i]), *plan)
        out["ram_bytes"] = _rss() - rss0
        stats = store.stats()
        mem = memory_breakdown()
        buffers = {f"cache_{t}": stats["tiers"][t]["bytes"] for t in ("hot", "warm", "cold")}
        buffers.update(process_anonymous=mem.get("anonymous", 0),
                       process_file_backed=mem.get("file_backed", 0))  # fmt: skip
        out["disk_bytes"] = stats["disk_bytes"]["total"]
        out["hit_ratios"] = {t: v["hits"] for t, v in stats["tiers"].items()}

        def columns(i: int) -> Columns:
            return store.tree(rels[i]).columns

        def source(i: int) -> bytes:
            return store.tree(rels[i]).text

    out["p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 4)
    out["p99_ms"] = round(float(np.percentile(lat, 99)) * 1000, 4)
    out["buffers_mb"] = {k: round(v / 2**20, 2) for k, v in
                         sorted(buffers.items(), key=lambda kv: -kv[1])}  # fmt: skip
    t1 = time.perf_counter()
    lost = []
    for i, (want_cols, want_src) in enumerate(spec["reference"]):
        try:
            got = digest(columns(i), source(i))
        except Exception as exc:  # a file that cannot be read back is lost, whatever the cause
            got = (repr(exc), "")
        if got != (want_cols, want_src):
            lost.append(rels[i])
    out["lost"] = len(lost)
    out["lost_files"] = lost[:20]
    out["quality_s"] = round(time.perf_counter() - t1, 2)
    out["ram_mb"] = round(out.pop("ram_bytes") / 2**20, 2)
    out["disk_mb"] = round(out.pop("disk_bytes") / 2**20, 2)
    return out


# ---- driver side ---------------------------------------------------------------------------
def _row(row: str, spec: Path) -> dict:
    return json.loads(fresh_process(["-m", "cstvault.bench.phases", row, str(spec)], row))


def _index(root: Path, store: Path, files: list, jobs: int) -> dict:
    import shutil

    from ..freeze import freeze
    from ..indexer import index

    if store.exists():
        shutil.rmtree(store)
    rep = index(root, store, jobs=jobs, only={f[0] for f in files}, compact=False)
    frozen = freeze(store, jobs=jobs)  # the production store: zstd-19 frames, compacted
    lines = sum(f[2] for f in files)
    return {"index_seconds": round(rep.seconds, 2),
            "index_lines_per_s": round(lines / rep.seconds) if rep.seconds else None,
            "freeze_seconds": round(frozen.seconds, 2)}  # fmt: skip


def _spec(work: Path, name: str, root: Path, files: list, store: Path, refs: list,
          ops: int, seed: int, budget_mb: float, jobs: int) -> Path:  # fmt: skip
    path = work / f"{name}.json"
    path.write_text(json.dumps({
        "root": str(root), "files": files, "store": str(store), "reference": refs,
        "ops": ops, "seed": seed, "budget_mb": budget_mb, "jobs": jobs,
    }))  # fmt: skip
    return path


HASH_BYTES = 8  # the path index's sorted hash of one file, resident once its page is touched
PROJECTION = ("disk: the largest measured store's bytes per line, times the lines (frames, "
              "catalog rows and path-index entries all come per file or per byte of source); "
              "RAM: the largest measured reader's RSS plus 8 bytes per additional file (the "
              "path index's hash array, the only reader structure not bounded by a fixed "
              "size: cache budget, SQLite page cache, directory-id cache, segment and "
              "decompressor LRUs are), files growing with lines at the measured ratio; an "
              "upper bound, as a workload touches only some of the hash pages")  # fmt: skip


def project(largest: dict, lines: int) -> dict:
    """RAM and disk at `lines`, from the largest measured point, by the model PROJECTION
    states (no trend fitted through the measured sizes: their RAM is flat and noisy)."""
    files = largest["files"] * lines / largest["lines"]
    ram = largest["ram_mb"] + HASH_BYTES * (files - largest["files"]) / 2**20
    disk = largest["disk_mb"] * lines / largest["lines"]
    return {"lines": lines, "ram_mb": round(ram, 1), "disk_mb": round(disk, 1),
            "projected": True, "model": PROJECTION}  # fmt: skip


def run(corpus: Path, lines: int | None, work: Path, *, jobs: int = 2, ops: int = 20_000,
        seed: int = 1, budget_mb: float = 16.0, scale: bool = True,
        log: Callable[[str], None] = print) -> dict:  # fmt: skip
    corpus = corpus.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"selecting files of {corpus}")
    files = select(corpus, lines, seed)
    if not files:
        raise ValueError(f"no supported files under {corpus}")
    total = sum(f[2] for f in files)
    tasks = [(str(corpus / f[0]), f[1]) for f in files]
    log(f"{len(files):,} files, {total:,} lines; reference digests from a fresh parse")
    with ProcessPoolExecutor(jobs) as pool:
        refs = list(pool.map(_reference, tasks, chunksize=16))
    store = work / "store"
    log("indexing the production store")
    indexed = _index(corpus, store, files, jobs)
    spec = _spec(work, "spec", corpus, files, store, refs, ops, seed, budget_mb, jobs)
    rows = []
    for row in ROWS:
        log(f"{row}: {FORM_OF[row]}")
        rows.append(_row(row, spec))
    base = rows[0]["ram_mb"]
    for prev, r in zip([None, *rows[:-1]], rows, strict=True):
        r["reduction_vs_previous"] = round(prev["ram_mb"] / r["ram_mb"], 2) if (
            prev and r["ram_mb"] > 0) else None  # fmt: skip
        r["reduction_vs_baseline"] = round(base / r["ram_mb"], 1) if r["ram_mb"] > 0 else None
        r["claimed_gb_10m_lines"] = CLAIMED_GB[r["name"]]
    out = {"corpus": str(corpus), "files": len(files), "lines": total, "ops": ops, "seed": seed,
           "budget_mb": budget_mb, "jobs": jobs, **indexed, "rows": rows}  # fmt: skip
    if scale:
        out["scale"] = _scale(corpus, files, total, rows[-1], indexed, work, refs,
                              ops, seed, budget_mb, jobs, log)  # fmt: skip
    return out


def _scale(corpus: Path, files: list, total: int, full: dict, indexed: dict, work: Path,
           refs: list, ops: int, seed: int, budget_mb: float, jobs: int,
           log: Callable[[str], None]) -> list[dict]:  # fmt: skip
    """The production configuration at 1/8, 1/4, 1/2 and all of the lines (nested prefixes
    of the same selection), then 100M and 1B lines projected by the stated model."""
    points = []
    cum = np.cumsum([f[2] for f in files])
    for frac in (8, 4, 2):
        k = int(np.searchsorted(cum, total / frac, side="right"))
        sub = files[: max(k, 1)]
        n = sum(f[2] for f in sub)
        log(f"scale: {n:,} lines")
        store = work / f"store-{n}"
        idx = _index(corpus, store, sub, jobs)
        spec = _spec(work, f"spec-{n}", corpus, sub, store, refs[: len(sub)], ops, seed,
                     budget_mb, jobs)  # fmt: skip
        r = _row("Phase 4c", spec)
        points.append({"lines": n, "files": len(sub), "ram_mb": r["ram_mb"],
                       "disk_mb": r["disk_mb"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
                       "lost": r["lost"], **idx, "projected": False})  # fmt: skip
    points.append({"lines": total, "files": len(files), "ram_mb": full["ram_mb"],
                   "disk_mb": full["disk_mb"], "p50_ms": full["p50_ms"],
                   "p99_ms": full["p99_ms"], "lost": full["lost"], **indexed,
                   "projected": False})  # fmt: skip
    largest = max(points, key=lambda p: p["lines"])
    points += [project(largest, n) for n in (100_000_000, 1_000_000_000)]
    return points


# ---- rendering -----------------------------------------------------------------------------
def markdown(result: dict) -> str:
    """The two README tables, straight from a result."""
    lines = ["| row | form | RAM MB | vs previous | vs baseline | disk MB | p50 ms | p99 ms | lost "
             "| claimed (10M lines) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        prev = r["reduction_vs_previous"]
        lines.append(
            f"| {r['name']} | {r['form']} | {r['ram_mb']:,.1f} | "
            f"{'' if prev is None else f'{prev}×'} | {r['reduction_vs_baseline']}× | "
            f"{r['disk_mb']:,.1f} | {r['p50_ms']} | {r['p99_ms']} | {r['lost']} | "
            f"{r['claimed_gb_10m_lines']} GB |"
        )
    if "scale" in result:
        lines += ["", "| lines | files | RAM MB | disk MB | p50 ms | p99 ms | lost |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for p in result["scale"]:
            if p["projected"]:
                lines.append(f"| {p['lines']:,} (projected) | | {p['ram_mb']:,.1f} | "
                             f"{p['disk_mb']:,.1f} | | | |")  # fmt: skip
            else:
                lines.append(f"| {p['lines']:,} | {p['files']:,} | {p['ram_mb']:,.1f} | "
                             f"{p['disk_mb']:,.1f} | {p['p50_ms']} | {p['p99_ms']} | "
                             f"{p['lost']} |")  # fmt: skip
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """RAM per row (log scale) and latency per row; needs the `plot` extra (matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'cstvault[plot]'") from exc
    rows = result["rows"]
    names = [r["name"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.bar(names, [max(r["ram_mb"], 0.01) for r in rows], color="#4477aa")
    a.set_yscale("log")
    a.set_ylabel("RAM (MB, RSS delta, log scale)")
    a.set_title(f"Holding {result['lines']:,} lines")
    x = np.arange(len(rows))
    b.bar(x - 0.2, [r["p50_ms"] for r in rows], 0.4, label="p50")
    b.bar(x + 0.2, [r["p99_ms"] for r in rows], 0.4, label="p99")
    b.set_xticks(x, names)
    b.set_ylabel("access latency (ms)")
    b.set_title("Zipf workload: open tree, node at byte, text, parents")
    b.legend()
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def default_work_dir(corpus: Path) -> Path:
    return Path(os.environ.get("CSTVAULT_CACHE", Path.home() / ".cache" / "cstvault")) / (
        "bench-phases-" + corpus.resolve().name
    )


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1], sys.argv[2])))
