"""`cstvault bench index`: the indexer's memory and speed as the codebase grows.

Each step indexes a larger part of the corpus (nested prefixes of one seeded shuffle of its
files, hard-linked into a directory of their own; the last step is the whole corpus) in a
fresh process, `cstvault index --no-freeze`, then `freeze`, `gc` and `verify --store`,
each in a fresh process of its own whose RSS, summed over it and every process it starts,
is sampled every 20 ms: the peaks are measured, never estimated. A last row indexes one
generated Python file as large as the size cap admits (corpus Python files concatenated).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from ..sources import MAX_FILE_BYTES, count_lines
from ..walk import iter_files
from . import cpu_times, steal_percent
from .rss import run_sampled

STEPS = (1_000_000, 2_000_000, 4_000_000)  # then the whole corpus


def _files(corpus: Path, seed: int) -> list[tuple[str, str, int, int]]:
    """(relative path, language, lines, bytes) of every indexable file, seeded shuffle."""
    out = []
    for path, language in iter_files([corpus]):
        data = path.read_bytes()
        if len(data) <= MAX_FILE_BYTES:
            out.append((path.relative_to(corpus).as_posix(), language, count_lines(data),
                        len(data)))  # fmt: skip
    random.Random(seed).shuffle(out)
    return out


def _linked(corpus: Path, files: list[tuple[str, str, int, int]], target: Path) -> None:
    """`files` of `corpus` hard-linked (copied across file systems) under `target`."""
    if target.exists():
        shutil.rmtree(target)
    for rel, *_ in files:
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(corpus / rel, dst)
        except OSError:
            shutil.copy2(corpus / rel, dst)


def _largest(corpus: Path, files: list[tuple[str, str, int, int]], target: Path) -> Path:
    """One Python file just under the size cap: corpus Python files, sorted, concatenated."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    parts, size = [], 0
    for rel, language, *_ in sorted(files):
        if language != "python":
            continue
        data = (corpus / rel).read_bytes()
        if not data.endswith(b"\n"):
            data += b"\n"
        if size + len(data) > MAX_FILE_BYTES:
            break
        parts.append(data)
        size += len(data)
    (target / "generated.py").write_bytes(b"".join(parts))
    return target


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def measure(root: Path, store: Path, jobs: int, verify: bool) -> dict:
    """Index, freeze, gc and verify one tree, each in a sampled fresh process."""
    if store.exists():
        shutil.rmtree(store)
    j = ["--jobs", str(jobs)]
    before = cpu_times()
    out, index_peak, index_s = run_sampled(
        ["index", str(root), "--store", str(store), "--no-freeze", "--json", *j], "index")
    steal = steal_percent(before, cpu_times())
    report = json.loads(out)
    _, freeze_peak, freeze_s = run_sampled(["freeze", "--store", str(store), *j], "freeze")
    _, gc_peak, _ = run_sampled(["gc", "--store", str(store)], "gc")
    stats = json.loads(run_sampled(["stats", "--store", str(store), "--json"], "stats")[0])
    lines = stats["lines"]
    row = {
        "lines": lines, "files": stats["files"],
        "index_peak_rss_mb": _mb(index_peak), "index_seconds": round(index_s, 1),
        "index_lines_per_s": round(lines / index_s),
        "index_cpu_steal_percent": steal,
        "freeze_peak_rss_mb": _mb(freeze_peak), "freeze_seconds": round(freeze_s, 1),
        "index_end_to_end_lines_per_s": round(lines / (index_s + freeze_s)),
        "gc_peak_rss_mb": _mb(gc_peak),
        "disk_bytes_per_line": stats["disk_bytes_per_line"]["total"],
        "skipped": report.get("skipped", {}),
    }  # fmt: skip
    if verify:
        out, verify_peak, verify_s = run_sampled(
            ["verify", "--store", str(store), "--json"], "verify")
        result = json.loads(out)
        row.update(verify_peak_rss_mb=_mb(verify_peak), verify_seconds=round(verify_s, 1),
                   verify_ok=result["ok"], verify_mismatched=result["mismatched"])  # fmt: skip
    return row


def run(corpus: Path, work: Path, jobs: int, seed: int, steps: tuple[int, ...], largest: bool,
        verify: bool, log: Callable[[str], None] = print) -> dict:  # fmt: skip
    log(f"listing {corpus}")
    files = _files(corpus, seed)
    total = sum(f[2] for f in files)
    rows = []
    for n in [s for s in steps if s < total] + [total]:
        k, acc = 0, 0
        while k < len(files) and acc < n:
            acc += files[k][2]
            k += 1
        if n < total:
            root = work / f"part-{n}"
            _linked(corpus, files[:k], root)
        else:
            root = corpus
        log(f"step: {n:,} lines")
        row = measure(root, work / f"store-{n}", jobs, verify)
        row["largest_file_bytes"] = max(f[3] for f in files[:k])  # what a parse peak follows
        rows.append(row)
    out: dict = {"jobs": jobs, "seed": seed, "corpus": str(corpus), "scale": rows}
    if largest:
        log("the largest file the size cap admits")
        root = _largest(corpus, files, work / "largest")
        row = measure(root, work / "store-largest", jobs, verify)
        row["file_bytes"] = (root / "generated.py").stat().st_size
        out["largest_file"] = row
    full = rows[-1]
    for key in ("index_peak_rss_mb", "freeze_peak_rss_mb", "index_end_to_end_lines_per_s"):
        out[key] = full[key]
    return out


__all__ = ["measure", "run"]
