"""`cstvault bench disk`: where a store's bytes go, and what each way of storing them buys.

Over the whole store: bytes per line by part (tree records, sources, catalog tables, path
index), by language and by file-size class (a packed source counts its share of the pack,
by size). Over a sample (`blocks` of consecutive blobs, every `every`-th, so packs and
neighbouring files stay together): each layout of the sampled tree records and sources at
zstd-19 -- one frame per file with and without a trained per-language dictionary, packs of
64 KiB / 256 KiB / 1 MiB -- and zstd's speed per core at levels 1, 3, 9 and 19, which bounds
how fast any `index` that ends at level 19 can go; then the catalog's symbol blocks and
definitions stored otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import zstandard

from ..store import Store, packs

SIZE_CLASSES = (1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10)
BLOCK = 200  # consecutive blobs per sampled block
DICT_BYTES, DICT_SAMPLES = 64 * 1024, 64  # as freeze trains them
LAYOUTS = {"per_file": 0, "packs_64k": 64 << 10, "packs_256k": 256 << 10, "packs_1m": 1 << 20}
SPEED_LEVELS = (1, 3, 9, 19)
SMALL_PACKS = ((0, 0), (4 << 10, 16 << 10), (8 << 10, 32 << 10), (16 << 10, 64 << 10))


def _size_class(size: int) -> str:
    for k, limit in enumerate(SIZE_CLASSES):
        if size < limit:
            low = f"{SIZE_CLASSES[k - 1] >> 10}-" if k else "<"
            return f"{low}{limit >> 10}KiB"
    return f">={SIZE_CLASSES[-1] >> 10}KiB"


def shares(store: Store, rows: list, kind: str) -> dict[int, float]:
    """Each blob's tree record or source bytes on disk: its frame, or its share of its pack
    (by the member's length in the pack's table)."""
    members: dict[tuple, list] = defaultdict(list)
    for b in rows:
        members[b.tree if kind == "tree" else b.src].append(b)
    out = {}
    for loc, bs in members.items():
        sizes = None
        head = store.frame_head(loc, 12)
        if head is not None and packs.is_pack(head):
            with contextlib.suppress(ValueError):  # damaged: counted by its members
                ids, offsets, _ = packs.parse(store.raw_frame(loc))
                sizes = {b: offsets[k + 1] - offsets[k] for k, b in enumerate(ids)}
        if sizes is None:
            for b in bs:
                out[b.id] = loc[2] / len(bs)
            continue
        total = max(sum(sizes.values()), 1)
        for b in bs:
            out[b.id] = loc[2] * sizes.get(b.id, 0) / total
    return out


def _breakdown(rows: list, part: dict[str, dict[int, float]], lines: int) -> dict:
    parts: dict[str, dict[str, dict[str, float]]] = {"by_language": {}, "by_size": {}}
    for name, key in (("by_language", lambda b: b.language),
                      ("by_size", lambda b: _size_class(b.size))):  # fmt: skip
        acc: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
        for b in rows:
            a = acc[key(b)]
            a[0] += 1
            a[1] += b.lines
            a[2] += part["tree"][b.id]
            a[3] += part["source"][b.id]
        parts[name] = {k: {"blobs": a[0], "lines": a[1], "share_of_lines": round(a[1] / lines, 3),
                           "tree_bytes_per_line": round(a[2] / max(a[1], 1), 3),
                           "source_bytes_per_line": round(a[3] / max(a[1], 1), 3)}
                       for k, a in sorted(acc.items())}  # fmt: skip
    return parts


def _packed(items: list[tuple[str, bytes]], target: int) -> list[tuple[str, bytes]]:
    """Items concatenated per language in order into frames of about `target` bytes."""
    if target == 0:
        return items
    out, open_ = [], {}
    for lang, data in items:
        cur = open_.setdefault(lang, [])
        cur.append(data)
        if sum(map(len, cur)) >= target:
            out.append((lang, b"".join(cur)))
            del open_[lang]
    out.extend((lang, b"".join(cur)) for lang, cur in open_.items())
    return out


def _compressed(frames: list[tuple[str, bytes]], level: int, dicts: dict | None,
                jobs: int) -> tuple[int, float]:  # fmt: skip
    """(bytes, CPU seconds) of zstd at `level` over the frames, in `jobs` threads."""
    local = threading.local()

    def one(item: tuple[str, bytes]) -> int:
        cs = getattr(local, "cs", None)
        if cs is None:
            cs = local.cs = {}
        c = cs.get(item[0])
        if c is None:
            d = dicts.get(item[0]) if dicts else None
            c = cs[item[0]] = zstandard.ZstdCompressor(level=level, dict_data=d)
        return len(c.compress(item[1]))

    t0 = time.process_time()
    with ThreadPoolExecutor(jobs) as pool:
        n = sum(pool.map(one, frames, chunksize=16))
    return n, time.process_time() - t0


def _ideas(store: Store, rows: list, every: int, jobs: int) -> dict:
    picked = [b for k, b in enumerate(rows) if (k // BLOCK) % every == 0]
    trees, sources, lines = [], [], 0
    for b in picked:
        record, source = store.read_blob(b, f"blob {b.id}")
        trees.append((b.language, record))
        sources.append((b.language, source))
        lines += b.lines
    out: dict = {"sample_blobs": len(picked), "sample_lines": lines,
                 "sample_raw_bytes": {"trees": sum(len(r) for _, r in trees),
                                      "sources": sum(len(s) for _, s in sources)}}  # fmt: skip
    for what, items in (("trees", trees), ("sources", sources)):
        by_lang: dict[str, list[bytes]] = defaultdict(list)
        for lang, data in items:
            by_lang[lang].append(data)
        dicts = {}
        for lang, datas in by_lang.items():
            step = max(1, len(datas) // DICT_SAMPLES)
            with contextlib.suppress(zstandard.ZstdError):  # too little to train on
                dicts[lang] = zstandard.train_dictionary(DICT_BYTES, datas[::step][:DICT_SAMPLES])
        dict_bytes = sum(len(d.as_bytes()) for d in dicts.values())
        layouts = {}
        for name, target in LAYOUTS.items():
            frames = _packed(items, target)
            for use in (False, True):
                n, cpu = _compressed(frames, 19, dicts if use else None, jobs)
                n += dict_bytes if use else 0
                raw = sum(len(d) for _, d in frames)
                layouts[f"{name}{'_dictionary' if use else ''}"] = {
                    "bytes_per_line": round(n / max(lines, 1), 3), "frames": len(frames),
                    "mb_per_cpu_s": round(raw / max(cpu, 1e-9) / 1e6, 2)}
        speed = {}
        for level in SPEED_LEVELS:
            _, cpu = _compressed(items, level, dicts, jobs)
            raw = sum(len(d) for _, d in items)
            speed[str(level)] = round(raw / max(cpu, 1e-9) / 1e6, 2)
        out[what] = {"zstd19_bytes_per_line": layouts, "per_file_dictionary_mb_per_cpu_s": speed,
                     "small_ones_packed": _small_packs(items, dicts, lines, jobs)}
    return out


def _small_packs(items: list[tuple[str, bytes]], dicts: dict, lines: int, jobs: int) -> list:
    """Texts under `alone` bytes packed into frames of about `pack` (the rest one frame
    each), with the dictionaries, at zstd-19: bytes per line, and the p50 microseconds to
    decompress one such pack (what a cold open of a small file adds)."""
    out = []
    for alone, pack in SMALL_PACKS:
        small = [(lang, d) for lang, d in items if len(d) < alone]
        large = [(lang, d) for lang, d in items if len(d) >= alone]
        frames = _packed(small, pack)
        n = _compressed(frames + large, 19, dicts, 1 if jobs < 2 else jobs)[0]
        dctx = {lang: zstandard.ZstdDecompressor(dict_data=d) for lang, d in dicts.items()}
        plain = zstandard.ZstdDecompressor()
        times = []
        for lang, data in frames[:: max(1, len(frames) // 300)]:
            c = zstandard.ZstdCompressor(level=19, dict_data=dicts.get(lang))
            f = c.compress(data)
            d = dctx.get(lang, plain)
            t0 = time.perf_counter()
            d.decompress(f)
            times.append((time.perf_counter() - t0) * 1e6)
        times.sort()
        out.append({"alone_bytes": alone, "pack_bytes": pack,
                    "bytes_per_line": round(n / max(lines, 1), 3),
                    "pack_decompress_p50_us": round(times[len(times) // 2], 1) if times else None})
    return out


def _catalog_ideas(cat, lines: int) -> dict:
    db = cat.db
    d = zstandard.ZstdDecompressor()
    blocks = [d.decompress(r[0]) for r in db.execute("SELECT data FROM symbol_blocks")]
    stored = sum(len(r[0]) for r in db.execute("SELECT data FROM symbol_blocks"))
    out = {"symbol_blocks": {"stored": round(stored / lines, 3)}}
    for level in (9, 19):
        c = zstandard.ZstdCompressor(level=level)
        n = sum(len(c.compress(b)) for b in blocks)
        out["symbol_blocks"][f"zstd{level}"] = round(n / lines, 3)
    ids = [r[0] for r in db.execute("SELECT id FROM blobs ORDER BY id")]
    found = cat.definitions_of(ids)  # own rows and definition groups alike
    defs = [found[b] for b in ids if b in found]
    stored = sum(len(r[0]) for r in db.execute("SELECT data FROM definitions"))
    if cat._has_def_groups():
        stored += sum(len(r[0]) for r in db.execute("SELECT data FROM definition_groups"))
    c = zstandard.ZstdCompressor(level=19)
    out["definitions"] = {"stored": round(stored / lines, 3),
                          "one_row_each": round(sum(map(len, defs)) / lines, 3)}
    for group in (16, 64):
        n = sum(len(c.compress(b"".join(defs[k : k + group]))) for k in range(0, len(defs), group))
        out["definitions"][f"zstd19_{group}_blobs_a_frame"] = round(n / lines, 3)
    return out


def run(store_dir: str | os.PathLike[str], every: int = 4, jobs: int = 2) -> dict:
    with Store.open(store_dir) as store:
        cat = store.catalog
        counts = cat.counts()
        lines = max(counts["lines"], 1)
        rows = list(cat.blobs())
        parts = {kind: shares(store, rows, kind) for kind in ("tree", "source")}
        tables = cat.table_bytes()
        result = {
            "files": counts["files"], "blobs": len(rows), "lines": counts["lines"],
            "disk_bytes_per_line": store.stats()["disk_bytes_per_line"],  # as bench store
            "catalog_tables_bytes_per_line": {k: round(v / lines, 3) for k, v in tables.items()
                                              if v / lines >= 0.001},  # fmt: skip
            **_breakdown(rows, parts, lines),
            "catalog_ideas": _catalog_ideas(cat, lines),
            "sample_every": every,
            "ideas": _ideas(store, rows, every, jobs),
        }  # fmt: skip
    return result


__all__ = ["run", "shares"]

