"""`cstvault bench live`: per-file writes measured on real edits.

- Release replay: Django 5.1.2 -> 5.1.3 -> 5.1.4 (pinned wheels from PyPI) written file by
  file into a store of the older release; stored deltas and stable ids across each pair.
- `update` of median-size files, each new version confirmed by a reader process.
- A typed stream (statements and comments typed one character at a time, some
  backspaced) into a 5,000-line file, with group commit and with an fsync per edit;
  tree-sitter's own incremental parse of the same stream timed beside it; `changed_ranges`
  compared with tree-sitter's after every edit.
- `watch`: a file saved -> its new text visible to a reader, minus the debounce.
- Crash trials (SIGKILL at random moments and at every live fault point), re-index of an
  unchanged tree, the RSS a writer holding live trees adds at a 16 MB budget (and what a
  held tree costs a node), and a one-line edit's text delta in files of 0.2 to 7.4 MB.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import crc32c

from .corpus import DEFAULT_DIR, SOURCES, Source, _members, fetch

RELEASES = (
    Source("django-5.1.2", "pypi", "django", "5.1.2", "Django-5.1.2-py3-none-any.whl",
           "f11aa87ad8d5617171e3f77e1d5d16f004b79a2cf5d2e1d2b97a6a1f8e9ba5ed", "python"),
    next(s for s in SOURCES if s.name == "django"),  # 5.1.3
    Source("django-5.1.4", "pypi", "django", "5.1.4", "Django-5.1.4-py3-none-any.whl",
           "236e023f021f5ce7dee5779de7b286565fdea5f4ab86bae5338e3f7b69896cf0", "python"),
)  # fmt: skip
TYPED_FILE = "python/sympy/sympy/combinatorics/perm_groups.py"  # 5,463 lines in the corpus
REINDEX_FILES = 57_612  # the tree of real repositories issue 13 was tried on


def _p50(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def _ms(xs: list[float]) -> list[float]:
    return [x * 1000 for x in xs]


def release_texts(src: Source, cache: Path) -> dict[str, bytes]:
    package = fetch(src, cache / "downloads")
    return {name: read() for name, read in _members(src, package) if name.endswith(".py")}


def _write_tree(root: Path, texts: dict[str, bytes]) -> None:
    for name, data in texts.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def replay_releases(work: Path, cache: Path) -> dict:
    """Write each release over the previous one through `update`/`remove`."""
    import numpy as np

    import cstvault

    from .. import indexer

    root = work / "django"
    releases = [release_texts(s, cache) for s in RELEASES]
    _write_tree(root, releases[0])
    indexer.index(root, jobs=2, compact=False)
    deltas, kept, outside, times, pairs = [], 0, 0, [], []
    with cstvault.open(root, write=True) as store:
        for old, new in zip(releases, releases[1:], strict=False):
            changed = sorted(p for p in new if old.get(p) != new[p])
            gone = sorted(p for p in old if p not in new)
            for p in changed:
                (root / p).parent.mkdir(parents=True, exist_ok=True)
                (root / p).write_bytes(new[p])
                had = p in old
                if had:
                    old_ids = set(store.stable_ids(p).tolist())
                t0 = time.perf_counter()
                v = store.update(p)
                times.append(time.perf_counter() - t0)
                if not had:
                    continue
                row = store.versions(p)[1]
                deltas.append(row.delta_bytes)
                ranges = store.changed_ranges(p, v - 1, v)
                tree = store.tree(p)
                ids = store.stable_ids(p)
                cols = tree._cols
                start, end = cols.start.astype(np.int64), cols.end.astype(np.int64)
                out_mask = np.ones(len(cols), dtype=bool)
                for r in ranges:
                    out_mask &= (end <= r.start_byte) | (start >= r.end_byte)
                outside += int(out_mask.sum())
                kept += int(np.isin(ids[out_mask], np.fromiter(old_ids, dtype=np.int64)).sum())
            for p in gone:
                (root / p).unlink()
                store.remove(p)
            pairs.append({"from": RELEASES[len(pairs)].version,
                          "to": RELEASES[len(pairs) + 1].version,
                          "changed": len(changed), "removed": len(gone)})  # fmt: skip
    return {"pairs": pairs, "release_delta_bytes_median": _p50(deltas),
            "release_update_p50_ms": _p50(_ms(times)),
            "stable_id_kept_fraction": round(kept / outside, 5) if outside else None,
            "stable_id_nodes_outside_changes": outside}  # fmt: skip


_READER = """
import sys, zlib, json, cstvault, crc32c
s = cstvault.open(sys.argv[1])
for line in sys.stdin:
    path, crc = line.split()
    ok = crc32c.crc32c(s.source(path)) == int(crc)
    print(int(ok), flush=True)
"""


def updates_seen_by_a_reader(work: Path, count: int, rounds: int = 3) -> dict:
    """`update` of files of about the median size, each confirmed by another process; in
    `rounds` rounds of `count` updates (the VM's speed drifts: the median round is
    reported, and every round's p50)."""
    import cstvault

    root = work / "django"
    with cstvault.open(root) as s:
        files = sorted(s.files(), key=lambda f: f.size)
    median = files[len(files) // 2].size
    pick = sorted(files, key=lambda f: abs(f.size - median))[:50]
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(root)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    p50s, unseen, k = [], 0, 0
    try:
        for _ in range(rounds):
            times = []
            with cstvault.open(root, write=True) as store:  # a new writer: cold again
                for _ in range(count):
                    f = pick[k % len(pick)]
                    text = (root / f.path).read_bytes() + f"# edit {k}\n".encode()
                    (root / f.path).write_bytes(text)
                    t0 = time.perf_counter()
                    store.update(f.path)
                    times.append(time.perf_counter() - t0)
                    reader.stdin.write(f"{f.path} {crc32c.crc32c(text)}\n")
                    reader.stdin.flush()
                    unseen += reader.stdout.readline().strip() != "1"
                    k += 1
            p50s.append(_p50(_ms(times)))
    finally:
        reader.stdin.close()
        reader.wait(30)
    return {"update_p50_ms": statistics.median(p50s), "update_p50_ms_by_round": p50s,
            "update_files_median_bytes": median, "updates": count * rounds,
            "updates_not_seen_by_reader": unseen}  # fmt: skip


def typed_stream(text: bytes, count: int, seed: int) -> list[tuple[int, int, bytes]]:
    """One-character edits (start, old_end, new text) as someone typing: statements and
    comments at the end of random lines, some characters backspaced."""
    rng = random.Random(seed)
    out: list[tuple[int, int, bytes]] = []
    while len(out) < count:
        lines = [k for k in range(len(text)) if text[k] == 10]
        at = rng.choice(lines)
        line_start = text.rfind(b"\n", 0, at) + 1
        indent = len(text[line_start:at]) - len(text[line_start:at].lstrip(b" "))
        word = rng.choice([b"total", b"value", b"result", b"count"])
        piece = (b"\n" + b" " * indent + word + b" = " + word + b" + %d" % rng.randrange(99)
                 if rng.random() < 0.7 else b"  # " + word + b" checked")  # fmt: skip
        for ch in piece:
            out.append((at, at, bytes([ch])))
            text = text[:at] + bytes([ch]) + text[at:]
            at += 1
            if rng.random() < 0.1:  # a typo, backspaced
                out.append((at - 1, at, b""))
                text = text[: at - 1] + text[at:]
                at -= 1
                out.append((at, at, bytes([ch])))
                text = text[:at] + bytes([ch]) + text[at:]
                at += 1
    return out[:count]


def _points(text: bytes, start: int, end: int, after: bytes, new_end: int):
    def pt(t: bytes, o: int) -> tuple[int, int]:
        return t.count(b"\n", 0, o), o - (t.rfind(b"\n", 0, o) + 1)

    return pt(text, start), pt(text, end), pt(after, new_end)


def edit_stream(work: Path, corpus: Path, count: int) -> dict:
    """The typed stream with group commit and with an fsync per edit."""
    import cstvault

    from .. import indexer
    from ..verify import compare_trees

    root = work / "typed"
    root.mkdir(parents=True, exist_ok=True)
    original = (corpus / TYPED_FILE).read_bytes()
    (root / "big.py").write_bytes(original)
    indexer.index(root, compact=False)
    stream = typed_stream(original, count, 11)
    parser = cstvault.languages.parser("python")
    out: dict = {"typed_file_lines": original.count(b"\n"), "edits": len(stream)}
    for mode in ("batch", "commit"):
        text = original
        times, ts_times, same, deltas = [], [], 0, []
        with cstvault.open(root, write=True, durability=mode, keep_versions=10**6) as store:
            store.update("big.py", original)  # each mode starts from the same text
            store.apply_edit("big.py", 0, 0, 0, b"")  # loads the live tree (one full parse)
            store.sync()
            ts_tree = parser.parse(text)
            first = store.versions("big.py")[0].version
            for start, end, new in stream:
                after = text[:start] + new + text[end:]
                t0 = time.perf_counter()
                store.apply_edit("big.py", start, end, start + len(new), new)
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ts_tree.edit(start, end, start + len(new),
                             *_points(text, start, end, after, start + len(new)))  # fmt: skip
                new_tree = parser.parse(after, ts_tree)
                ts_times.append(time.perf_counter() - t0)
                if mode == "commit":
                    theirs = list(ts_tree.changed_ranges(new_tree))
                    v = store.versions("big.py")[0].version
                    same += store.changed_ranges("big.py", v - 1, v) == theirs
                ts_tree, text = new_tree, after
            store.sync()
            final_ok = compare_trees("big.py", parser.parse(text), store.tree("big.py")) == []
            if mode == "commit":
                deltas = [v.delta_bytes for v in store.versions("big.py")
                          if not v.current and v.version >= first]  # fmt: skip
        key = "apply_edit_p50_ms" if mode == "batch" else "apply_edit_fsync_p50_ms"
        out[key] = _p50(_ms(times))
        ms = sorted(_ms(times))
        out[key.replace("p50", "p90")] = round(ms[int(0.9 * len(ms))], 4)
        out[key.replace("p50", "mean")] = round(statistics.fmean(ms), 4)
        out[f"{mode}_tree_sitter_parse_p50_ms"] = _p50(_ms(ts_times))
        out[f"{mode}_final_tree_identical"] = final_ok
        if mode == "commit":
            out["changed_ranges_identical_fraction"] = round(same / len(stream), 5)
            out["delta_bytes_median"] = _p50(deltas)
            out["delta_bytes_p90"] = sorted(deltas)[int(0.9 * len(deltas))] if deltas else None
    return out


def large_file_deltas(corpus: Path) -> dict:
    """A one-line edit's text delta (zstd patch-from) as files grow: does it need content-
    defined chunking? (The typed file repeated to about 0.2, 1.5 and 7.4 MB.)"""
    from ..store import versions as vs

    base = (corpus / TYPED_FILE).read_bytes()
    out = {}
    for mult in (1, 8, 40):
        text = base * mult
        at = text.index(b"\n", len(text) // 2) + 1
        new = text[:at] + b"# one line edit\n" + text[at:]
        t0 = time.perf_counter()
        delta = vs.patch_from(text, new)
        ms = (time.perf_counter() - t0) * 1000
        assert vs.apply_patch(new, delta) == text
        out[f"{len(text) / 1e6:.1f}MB"] = {"delta_bytes": len(delta), "ms": round(ms, 2)}
    return {"large_file_text_delta": out}


def watch_latency(work: Path, count: int, debounce_ms: int = 20) -> dict:
    """`cstvault watch` in its own process; a save -> visible to a reader, minus debounce."""
    import cstvault

    root = work / "django"
    cmd = [sys.executable, "-m", "cstvault.cli", "watch", str(root), "--debounce-ms",
           str(debounce_ms), "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lat = []
    try:
        time.sleep(2.0)  # the watcher is set up
        with cstvault.open(root) as r:
            files = [f.path for f in r.files()][:count]
        for k, path in enumerate(files):
            text = (root / path).read_bytes() + f"# watched {k}\n".encode()
            want = crc32c.crc32c(text)
            with cstvault.open(root) as r:
                (root / path).write_bytes(text)
                t0 = time.perf_counter()
                deadline = t0 + 10
                while time.perf_counter() < deadline:
                    try:
                        if crc32c.crc32c(r.source(path)) == want:
                            break
                    except (KeyError, ValueError):
                        pass
                    time.sleep(0.001)
                lat.append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(30)
    visible = [x * 1000 - debounce_ms for x in lat]
    return {"watch_visible_p50_ms": _p50(visible), "watch_saves": len(lat),
            "watch_debounce_ms": debounce_ms, "watch_visible_p90_ms":
            round(sorted(visible)[int(0.9 * len(visible))], 3) if visible else None}  # fmt: skip


def crash(work: Path, trials: int) -> dict:
    """`trials` SIGKILLs at random moments of a stream of updates, edits and checkpoints
    (one in four with group commit; one in five followed by a process that replays the
    journal and is killed too, at a random moment or at the replay's fault point), then
    three kills at every live fault point."""
    from .. import faults
    from . import live_crash

    root = work / "crash"
    live_crash.make_root(root)
    results = []
    rng = random.Random(17)
    for k in range(trials):
        replay = None
        if k % 5 == 4:
            replay = "fault" if k % 10 == 4 else round(rng.uniform(0.05, 0.4), 3)
        results.append(live_crash.trial(root, k, durability="batch" if k % 4 == 3 else "commit",
                                        replay_kill=replay))  # fmt: skip
    for point in faults.LIVE_POINTS:
        for n in (1, 2, 3):
            results.append(live_crash.trial(root, 1000 + n, fault=f"{point}:{n}"))
    return {"crash_trials": len(results), "crash_random_kills": trials,
            "acknowledged_writes": sum(r["acknowledged"] for r in results),
            "acknowledged_lost": sum(r["lost"] for r in results),
            "failed_open": sum(r["failed_open"] for r in results),
            "failed_verify": sum(r["failed_verify"] for r in results),
            "replays": sum(bool(r["recovery"] and r["recovery"]["replayed"]) for r in results),
            "replaying_processes_killed": sum(r["replay_killed"] for r in results),
            "errors": [r["error"] for r in results if r["error"]][:5]}  # fmt: skip


def reindex_unchanged(work: Path, corpus: Path, store_dir: Path | None,
                      files: int = REINDEX_FILES) -> dict:  # fmt: skip
    """`index` over a tree where nothing changed: a tree of `files` small files laid out as
    the corpus's (its directories repeated under r0/, r1/, ...: the cost is per file and per
    directory, not per byte, and nothing is read), and the corpus itself with its store."""
    from .. import indexer

    rels = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*")
                  if p.is_file() and p.name != "manifest.json")  # fmt: skip
    root = work / "reindex"
    for k in range(files):
        p = root / f"r{k // len(rels)}" / rels[k % len(rels)]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x = %d\n" % k if p.suffix == ".py" else b"// %d\n" % k)
    indexer.index(root, jobs=2, compact=False)
    out: dict = {}

    def timed(key: str, r: Path, store: Path | None) -> None:
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            rep = indexer.index(r, store, jobs=2, compact=False)
            runs.append(time.perf_counter() - t0)
        out[f"{key}_s"] = round(min(runs), 3)
        out[f"{key}_runs_s"] = [round(x, 3) for x in runs]
        out[f"{key}_files"] = rep.unchanged
        out[f"{key}_written"] = rep.files

    timed("reindex_unchanged", root, None)
    if store_dir is not None:
        timed("reindex_unchanged_corpus", corpus, store_dir)
    return out


_TREE_RSS = """
import gc, json, sys
from cstvault import _native, languages
from cstvault._native import release_free_memory
from cstvault.store import rss_bytes
src = open(sys.argv[1], "rb").read()
cap = languages.capsule("python")
nodes = _native.live_parse(src, cap, None, None, True)[1][0]
gc.collect(); release_free_memory()
base = rss_bytes()
held = [_native.live_parse(src, cap, None, None, False)[0] for _ in range(40)]
gc.collect(); release_free_memory()
print(json.dumps({"nodes": nodes, "bytes": (rss_bytes() - base) / 40}))
"""


def live_tree_size(corpus: Path) -> dict:
    """RSS of a held tree-sitter tree per node (what the live tier counts them at)."""
    res = subprocess.run([sys.executable, "-c", _TREE_RSS, str(corpus / TYPED_FILE)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return {"live_tree_bytes_per_node": round(got["bytes"] / got["nodes"], 1),
            "live_tree_nodes": got["nodes"]}  # fmt: skip


_RSS = """
import sys, json, random, time
import numpy  # the write path's bulk encoding loads it; code, not data held: in the base
import cstvault
from cstvault.store import rss_bytes
root, count = sys.argv[1], int(sys.argv[2])
s = cstvault.open(root, cstvault.CacheConfig(max_memory_mb=16), write=True, durability="batch")
files = sorted(f.path for f in s.files())[:50]
texts = {p: s.source(p) for p in files}
s.tree(files[0])
base = peak = rss_bytes()
rng = random.Random(5)
for k in range(count):
    p = files[k % len(files)]
    t = texts[p]
    at = t.rfind(b"\\n", 0, max(1, len(t) - 1)) + 1
    s.apply_edit(p, at, at, at + 1, b"#")
    texts[p] = t[:at] + b"#" + t[at:]
    if k % 100 == 0:
        peak = max(peak, rss_bytes())
s.sync()
peak = max(peak, rss_bytes())
print(json.dumps({"base": base, "peak": peak, "live": s.live_writer().live_summary()}))
s.close()
"""


def live_memory(work: Path, edits: int) -> dict:
    root = work / "django"
    res = subprocess.run([sys.executable, "-c", _RSS, str(root), str(edits)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return {"attributable_rss_mb": round((got["peak"] - got["base"]) / 2**20, 2),
            "rss_base_mb": round(got["base"] / 2**20, 2), "rss_peak_mb":
            round(got["peak"] / 2**20, 2), "memory_edits": edits, "memory_files": 50,
            "budget_mb": 16, "live_tier": got["live"]}  # fmt: skip


def run(work: Path, corpus: Path, store_dir: Path | None, *, edits: int = 400,
        updates: int = 200, saves: int = 40, trials: int = 100, memory_edits: int = 10000,
        log=print) -> dict:  # fmt: skip
    cache = corpus.parent if corpus.name == "corpus" else DEFAULT_DIR
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    out: dict = {}
    steps = [("release replay", lambda: replay_releases(work, cache)),
             ("updates", lambda: updates_seen_by_a_reader(work, updates)),
             ("typed stream", lambda: edit_stream(work, corpus, edits)),
             ("watch", lambda: watch_latency(work, saves)),
             ("memory", lambda: {**live_memory(work, memory_edits), **live_tree_size(corpus)}),
             ("large-file deltas", lambda: large_file_deltas(corpus)),
             ("crash trials", lambda: crash(work, trials))]  # fmt: skip
    steps.append(("re-index", lambda: reindex_unchanged(work, corpus, store_dir)))
    for name, step in steps:
        t0 = time.perf_counter()
        log(f"{name}...")
        out.update(step())
        out.setdefault("step_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    out["cpu"] = os.cpu_count()
    return out
