"""`cstvault bench query`: queries over a store against tools that re-parse, same files.

Python files of the store (the language every tool here handles alike), timed side by side:
the grammar's tags query over the whole store with 2 workers (`Store.query`) against
py-tree-sitter parse + `QueryCursor.matches` in 2 processes and against `ast-grep` (the
`bench` extra, `--threads 2`) with a rule matching the same function definitions; a
selective query (calls of one identifier) both ways; these whole-store runs are repeated in
3 rounds and reported by their medians, with the ratios per round; `Store.definitions`, a cold
`Store.outline` (stored definitions: nothing parsed), the tags query on a cold file (its
stored tree opened, `QueryCursor.matches`) against py-tree-sitter's parse + the same query,
and a cold `Store.tags` (those matches made into named, placed tags), each in a loop of its
own over the same 300 files (and, as a second protocol, ours and theirs alternating file by
file: `..._alternating`); point lookups against py-tree-sitter's on the same trees, the
first one (which reads the tree's text and makes its line table) apart from the 20 timed;
`node.text` of every node of those trees against py-tree-sitter's.
ast-grep keys are null when it is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import languages
from ..cache import CacheConfig
from ..grammar_queries import query_text
from ..store import Store
from ..tags import unpack_definitions

LANG = "python"
SELECTIVE = "getattr"
ROUNDS = 3
_KEEP: list = []


def _preorder(root) -> list:
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(n.children))
    return out


def _ts_chunk(task: tuple[str, list[str]]) -> int:
    import tree_sitter as ts

    text, paths = task
    q = ts.Query(languages.language(LANG), text)
    _ts_chunk.keep = q  # type: ignore[attr-defined]  # py-tree-sitter 0.26.1 frees it badly
    parser = languages.parser(LANG)
    n = 0
    for p in paths:
        n += len(ts.QueryCursor(q).matches(parser.parse(Path(p).read_bytes()).root_node))
    return n


def _tree_sitter(text: str, files: list[str], jobs: int) -> tuple[float, int]:
    chunks = [files[k :: jobs * 8] for k in range(jobs * 8)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        n = sum(pool.map(_ts_chunk, [(text, c) for c in chunks]))
    return time.perf_counter() - t0, n


def _ast_grep(pattern: str, root: str) -> tuple[float, int] | None:
    beside = Path(sys.executable).parent / "ast-grep"  # the bench extra, in this venv
    exe = str(beside) if beside.is_file() else shutil.which("ast-grep")
    if exe is None:
        return None
    t0 = time.perf_counter()
    args = [exe, "run", "-p", pattern, "-l", LANG, "--threads", "2", "--json=stream", root]
    res = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode not in (0, 1):  # 1: no match
        raise RuntimeError(f"ast-grep failed: {res.stderr.strip()[-300:]}")
    return time.perf_counter() - t0, len(res.stdout.splitlines())


def _store(store: Store, text: str, jobs: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(1 for _ in store.query(text, LANG, jobs=jobs))
    return time.perf_counter() - t0, n


def run(store_dir: str | os.PathLike[str], samples: int = 300, seed: int = 1,
        jobs: int = 2) -> dict:  # fmt: skip
    rng = np.random.default_rng(seed)
    with Store.open(store_dir, CacheConfig(max_memory_mb=0)) as store:
        root = store._root
        if root is None:
            raise FileNotFoundError(f"{store_dir}: the store records no working tree")
        paths = store.catalog.paths_of_language(LANG)
        lines = sum(f.lines for f in store.files() if f.language == LANG)
        files = [os.path.join(root, p) for p in paths]
        tags = query_text(LANG, "tags")
        assert tags is not None
        out: dict = {"language": LANG, "files": len(paths), "lines": lines, "jobs": jobs,
                     "rounds": ROUNDS}  # fmt: skip
        selective = f'(call function: (identifier) @f (#eq? @f "{SELECTIVE}"))'
        runs: dict[str, list] = {}
        # the whole-store measures, round after round (the VM's speed drifts: each figure is
        # the median of its rounds, and the ratios are taken within each round)
        for _ in range(ROUNDS):
            for key, measure in (
                ("store_query", lambda: _store(store, tags, jobs)),
                ("tree_sitter", lambda: _tree_sitter(tags, files, jobs)),
                ("ast_grep", lambda: _ast_grep("def $F($$$ARGS): $$$BODY", root)),
                ("selective_store", lambda: _store(store, selective, jobs)),
                ("selective_ast_grep", lambda: _ast_grep(f"{SELECTIVE}($$$A)", root)),
            ):  # fmt: skip
                got = measure()
                runs.setdefault(key, []).append(got)
        for key, got in runs.items():
            if got[0] is None:
                out[f"{key}_lines_per_s"] = out[f"{key}_matches"] = None
                continue
            out[f"{key}_lines_per_s"] = round(lines / float(np.median([s for s, _ in got])))
            out[f"{key}_matches"] = got[0][1]
        if runs["ast_grep"][0] is not None:
            for mine, theirs in (("store_query", "ast_grep"),
                                 ("selective_store", "selective_ast_grep")):  # fmt: skip
                out[f"{mine}_vs_ast_grep_by_round"] = [
                    round(t[0] / m[0], 2) for m, t in zip(runs[mine], runs[theirs], strict=True)]

        # definitions of names defined somewhere, drawn from the stored definitions
        sample = [paths[int(k)] for k in rng.choice(len(paths), min(samples, len(paths)),
                                                    replace=False)]  # fmt: skip
        names = []
        for p in sample:
            blob, _ = store._located(p)
            defs = unpack_definitions(store.catalog.definitions_of([blob.id]).get(blob.id, b""))
            if defs:
                d = defs[int(rng.integers(len(defs)))]
                names.append(store.source(p)[d.name_start : d.name_end])
        lat = []
        for name in names:
            t0 = time.perf_counter()
            store.definitions(name)
            lat.append(time.perf_counter() - t0)
        out["definitions_p50_ms"] = round(float(np.median(lat)) * 1000, 4) if lat else None
    import tree_sitter as ts

    from ..query import Query, QueryCursor

    ours_q = Query(LANG, tags)
    theirs_q = ts.Query(languages.language(LANG), tags)
    _KEEP.append(theirs_q)  # py-tree-sitter 0.26.1 frees a query badly
    parser = languages.parser(LANG)

    def timed(fn) -> list[float]:
        """ms of `fn(path)` over the sample, in one loop of its own."""
        out = []
        for p in sample:
            t0 = time.perf_counter()
            fn(p)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    point_ours, point_ts, point_first, text_ours, text_ts = [], [], [], [], []
    inter_ours, inter_theirs = [], []
    with Store.open(store_dir, CacheConfig(max_memory_mb=0)) as cold:
        sources = {p: cold.source(p) for p in sample}
        # each measure in a loop of its own over the sample (every file cold each time: the
        # store keeps no tree), so that each tool runs in its own steady state
        cold_ms = timed(cold.outline)
        tags_ms = timed(cold.tags)  # the tags query made into tags: names, kinds, points
        query_rounds, parse_rounds = [], []
        for _ in range(ROUNDS):  # ours and a re-parsing tool, a loop each, round after round
            query_rounds.append(timed(lambda p: QueryCursor(ours_q).matches(
                cold.tree(p).root_node)))  # fmt: skip
            parse_rounds.append(timed(lambda p: ts.QueryCursor(theirs_q).matches(
                parser.parse(sources[p]).root_node)))  # fmt: skip
        query_ms = [float(np.median(r)) for r in query_rounds]  # p50 of each round
        parse_ms = [float(np.median(r)) for r in parse_rounds]
        for p in sample:  # the two alternating file by file, as a second protocol
            t0 = time.perf_counter()
            QueryCursor(ours_q).matches(cold.tree(p).root_node)
            t1 = time.perf_counter()
            ts.QueryCursor(theirs_q).matches(parser.parse(sources[p]).root_node)
            inter_ours.append(t1 - t0)
            inter_theirs.append(time.perf_counter() - t1)
        for p in sample:
            source = sources[p]
            tree, theirs = cold.tree(p), parser.parse(source)
            rows = source.count(b"\n") + 1
            pts = [(int(rng.integers(rows)), int(rng.integers(40))) for _ in range(20)]
            t0 = time.perf_counter()  # the first asks for the text (read, checked, line table)
            tree.root_node.descendant_for_point_range(pts[0], pts[0])
            point_first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for pt in pts:
                tree.root_node.descendant_for_point_range(pt, pt)
            point_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for pt in pts:
                theirs.root_node.descendant_for_point_range(pt, pt)
            point_ts.append(time.perf_counter() - t0)
            # node.text of every node, the nodes made beforehand (their text read already)
            ours_nodes = [tree.node(k) for k in range(len(tree))]
            theirs_nodes = _preorder(theirs.root_node)
            t0 = time.perf_counter()
            size = sum(len(n.text) for n in ours_nodes)
            text_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs_size = sum(len(n.text) for n in theirs_nodes)
            text_ts.append(time.perf_counter() - t0)
            if size != theirs_size:
                raise RuntimeError(f"{p}: node texts differ from py-tree-sitter's")
    out["outline_cold_p50_ms"] = round(float(np.median(cold_ms)), 4)
    out["query_cold_p50_ms"] = round(float(np.median(query_ms)), 4)  # median of the rounds
    out["tags_cold_p50_ms"] = round(float(np.median(tags_ms)), 4)
    out["parse_and_tags_p50_ms"] = round(float(np.median(parse_ms)), 4)
    out["cold_file_query_speedup"] = round(float(np.median(parse_ms) / np.median(query_ms)), 2)
    out["cold_file_query_speedup_by_round"] = [round(b / a, 2) for a, b in zip(query_ms,
                                                                              parse_ms,
                                                                              strict=True)]
    out["cold_file_query_speedup_alternating"] = round(
        float(np.median(inter_theirs) / np.median(inter_ours)), 2)  # fmt: skip
    out["point_lookup_ratio_to_tree_sitter"] = round(
        float(np.median(point_ours) / np.median(point_ts)), 2)  # fmt: skip
    out["point_lookup_p50_us"] = round(float(np.median(point_ours)) / 20 * 1e6, 3)
    out["point_lookup_tree_sitter_p50_us"] = round(float(np.median(point_ts)) / 20 * 1e6, 3)
    out["point_lookup_first_p50_us"] = round(float(np.median(point_first)) * 1e6, 1)
    out["node_text_ratio_to_tree_sitter"] = round(float(np.median(text_ours)
                                                        / np.median(text_ts)), 2)  # fmt: skip
    return out
