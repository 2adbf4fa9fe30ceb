"""`cstvault bench codec`: sizes and speeds of the record codec against tree-sitter itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import zstandard

from ..codec import decode, encode
from ..extract import parse, parse_extract
from ..sources import check_source, count_lines
from ..tree import Node, Tree, build_structure
from ..walk import iter_files

SEGMENT = 256 * 1024
WALK_SAMPLE_NODES = 400_000  # per language: nodes walked for the cursor / family timings
FAMILY_SAMPLE = 50_000


def _segments_zstd19(blobs: Iterable[bytes]) -> int:
    """Compressed size when blobs are packed in order into 256 KiB segments, zstd-19 each."""
    cctx = zstandard.ZstdCompressor(level=19)
    total = 0
    buf: list[bytes] = []
    size = 0
    for b in blobs:
        buf.append(b)
        size += len(b)
        if size >= SEGMENT:
            total += len(cctx.compress(b"".join(buf)))
            buf, size = [], 0
    if buf:
        total += len(cctx.compress(b"".join(buf)))
    return total


def _walk(tree) -> int:
    """Visit every node in preorder through the tree's cursor, reading type and start byte.

    The same loop serves tree-sitter's trees and ours (the APIs match)."""
    c = tree.walk()
    n = 0
    while True:
        node = c.node
        _ = node.type, node.start_byte
        n += 1
        if c.goto_first_child():
            continue
        while not c.goto_next_sibling():
            if not c.goto_parent():
                return n


def _ts_nodes(tree, limit: int) -> list:
    out = []
    c = tree.walk()
    while len(out) < limit:
        out.append(c.node)
        if c.goto_first_child():
            continue
        while not c.goto_next_sibling():
            if not c.goto_parent():
                return out
    return out


def _time_family(ts_nodes: list, ours: list[Node]) -> dict[str, float]:
    out: dict[str, float] = {}
    for attr in ("parent", "next_sibling"):
        t = time.perf_counter()
        for n in ts_nodes:
            getattr(n, attr)
        ts_ns = (time.perf_counter() - t) / max(len(ts_nodes), 1) * 1e9
        t = time.perf_counter()
        for n in ours:
            getattr(n, attr)
        our_ns = (time.perf_counter() - t) / max(len(ours), 1) * 1e9
        out[f"{attr}_ns"] = round(our_ns, 1)
        out[f"{attr}_ns_tree_sitter"] = round(ts_ns, 1)
        out[f"{attr}_speedup"] = round(ts_ns / our_ns, 2) if our_ns else None
    return out


def bench_language(files: list[tuple[Path, str]], log: Callable[[str], None]) -> dict:
    lines = nodes = 0
    parse_s = extract_s = encode_s = decode_s = struct_s = 0.0
    records: list[bytes] = []
    sources: list[bytes] = []
    per_record_z = 0
    skipped = 0
    walk_budget = WALK_SAMPLE_NODES
    ts_walk_s = our_walk_s = 0.0
    walk_nodes = 0
    fam_ts: list = []
    fam_ours: list[Node] = []
    z19 = zstandard.ZstdCompressor(level=19)
    for path, lang in files:
        try:
            src = path.read_bytes()
        except OSError:
            skipped += 1
            continue
        if check_source(src):
            skipped += 1
            continue
        t0 = time.perf_counter()
        tst = parse(src, lang)  # tree-sitter's own parse: the baseline
        t1 = time.perf_counter()
        cols = parse_extract(src, lang)  # ours: parse + extract, in C
        t2 = time.perf_counter()
        rec = encode(cols, src)
        t3 = time.perf_counter()
        dec = decode(rec)
        t4 = time.perf_counter()
        build_structure(dec)
        t5 = time.perf_counter()
        parse_s += t1 - t0
        extract_s += t2 - t1
        encode_s += t3 - t2
        decode_s += t4 - t3
        struct_s += t5 - t4
        lines += count_lines(src)
        nodes += len(cols)
        records.append(rec)
        sources.append(src)
        per_record_z += len(z19.compress(rec))
        if walk_budget > 0:
            tree = Tree(dec, src)
            t = time.perf_counter()
            _walk(tst)
            ts_walk_s += time.perf_counter() - t
            t = time.perf_counter()
            walk_nodes += _walk(tree)
            our_walk_s += time.perf_counter() - t
            walk_budget -= len(cols)
            if len(fam_ours) < FAMILY_SAMPLE:
                take = _ts_nodes(tst, FAMILY_SAMPLE - len(fam_ours))
                fam_ts += take
                tree._structure()
                fam_ours += [Node(tree, i) for i in range(len(take))]
    rec_bytes = sum(len(r) for r in records)
    log(f"  compressing {len(records)} records in 256 KiB segments (zstd-19)")
    tree_z = _segments_zstd19(records)
    src_z = _segments_zstd19(sources)
    src_bytes = sum(len(s) for s in sources)
    per_line = max(lines, 1)
    per_node = max(nodes, 1)
    out = {
        "files": len(records),
        "skipped": skipped,
        "lines": lines,
        "nodes": nodes,
        "nodes_per_line": round(nodes / per_line, 2),
        "parse_lines_per_s": round(lines / parse_s) if parse_s else None,
        "extract_encode_lines_per_s": round(lines / (extract_s + encode_s)),
        "extract_encode_lines_per_s_excluding_parse": round(
            lines / max(extract_s - parse_s + encode_s, 1e-9)
        ),
        "parse_extract_ns_per_node": round(extract_s / per_node * 1e9, 1),
        "encode_ns_per_node": round(encode_s / per_node * 1e9, 1),
        "decode_ns_per_node": round(decode_s / per_node * 1e9, 1),
        "structure_index_ns_per_node": round(struct_s / per_node * 1e9, 1),
        "tree_bytes_per_line_raw": round(rec_bytes / per_line, 3),
        "tree_bytes_per_line_zstd19": round(tree_z / per_line, 3),
        "tree_bytes_per_line_zstd19_per_record": round(per_record_z / per_line, 3),
        "tree_bytes_per_node_zstd19": round(tree_z / per_node, 3),
        "source_bytes_per_line_raw": round(src_bytes / per_line, 3),
        "source_bytes_per_line_zstd19": round(src_z / per_line, 3),
        "walk_nodes": walk_nodes,
        "walk_ns_per_node": round(our_walk_s / max(walk_nodes, 1) * 1e9, 1),
        "walk_ns_per_node_tree_sitter": round(ts_walk_s / max(walk_nodes, 1) * 1e9, 1),
        "_sums": {
            "parse_s": parse_s, "extract_s": extract_s, "encode_s": encode_s,
            "decode_s": decode_s, "struct_s": struct_s, "rec_bytes": rec_bytes,
            "tree_z": tree_z, "src_z": src_z, "src_bytes": src_bytes, "per_record_z": per_record_z,
            "ts_walk_s": ts_walk_s, "our_walk_s": our_walk_s,
        },  # fmt: skip
    }
    out.update(_time_family(fam_ts, fam_ours))
    return out


def run(paths: Iterable[str], log: Callable[[str], None] = print) -> dict:
    by_lang: dict[str, list[tuple[Path, str]]] = {}
    for path, lang in iter_files(paths):
        by_lang.setdefault(lang, []).append((path, lang))
    result: dict = {"languages": {}}
    for lang in sorted(by_lang):
        log(f"{lang}: {len(by_lang[lang])} files")
        result["languages"][lang] = bench_language(by_lang[lang], log)
    result["total"] = _total(result["languages"])
    for v in result["languages"].values():
        v.pop("_sums")
    return result


def _total(per: dict[str, dict]) -> dict:
    if not per:
        return {}
    s: dict[str, float] = {}
    for v in per.values():
        for k, x in v["_sums"].items():
            s[k] = s.get(k, 0) + x
    lines = sum(v["lines"] for v in per.values())
    nodes = sum(v["nodes"] for v in per.values())
    walk_nodes = sum(v["walk_nodes"] for v in per.values())
    pl, pn = max(lines, 1), max(nodes, 1)

    def wavg(key: str) -> float:
        return round(sum(v[key] * v["walk_nodes"] for v in per.values()) / max(walk_nodes, 1), 1)

    fam = {}
    for attr in ("parent", "next_sibling"):
        ours = sum(v[f"{attr}_ns"] for v in per.values()) / len(per)
        theirs = sum(v[f"{attr}_ns_tree_sitter"] for v in per.values()) / len(per)
        fam[f"{attr}_ns"] = round(ours, 1)
        fam[f"{attr}_ns_tree_sitter"] = round(theirs, 1)
        fam[f"{attr}_speedup"] = round(theirs / ours, 2) if ours else None
    return {
        "files": sum(v["files"] for v in per.values()),
        "lines": lines,
        "nodes": nodes,
        "nodes_per_line": round(nodes / pl, 2),
        "parse_lines_per_s": round(lines / s["parse_s"]),
        "extract_encode_lines_per_s": round(lines / (s["extract_s"] + s["encode_s"])),
        "extract_encode_lines_per_s_excluding_parse": round(
            lines / max(s["extract_s"] - s["parse_s"] + s["encode_s"], 1e-9)
        ),
        "parse_extract_ns_per_node": round(s["extract_s"] / pn * 1e9, 1),
        "encode_ns_per_node": round(s["encode_s"] / pn * 1e9, 1),
        "decode_ns_per_node": round(s["decode_s"] / pn * 1e9, 1),
        "structure_index_ns_per_node": round(s["struct_s"] / pn * 1e9, 1),
        "tree_bytes_per_line_raw": round(s["rec_bytes"] / pl, 3),
        "tree_bytes_per_line_zstd19": round(s["tree_z"] / pl, 3),
        "tree_bytes_per_line_zstd19_per_record": round(s["per_record_z"] / pl, 3),
        "tree_bytes_per_node_zstd19": round(s["tree_z"] / pn, 3),
        "source_bytes_per_line_raw": round(s["src_bytes"] / pl, 3),
        "source_bytes_per_line_zstd19": round(s["src_z"] / pl, 3),
        "walk_nodes": walk_nodes,
        "walk_ns_per_node": wavg("walk_ns_per_node"),
        "walk_ns_per_node_tree_sitter": wavg("walk_ns_per_node_tree_sitter"),
        **fam,
    }
