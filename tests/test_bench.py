"""`cstvault bench codec` on a small tree the test writes: every documented key is measured."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cstvault import cli
from cstvault.bench import corpus
from snippets import SNIPPETS
from test_cli import EXT

KEYS = {
    "files", "lines", "nodes", "parse_lines_per_s", "extract_encode_lines_per_s",
    "tree_bytes_per_line_raw", "tree_bytes_per_line_zstd19", "source_bytes_per_line_zstd19",
    "decode_ns_per_node", "walk_ns_per_node", "walk_ns_per_node_tree_sitter", "parent_ns",
    "parent_ns_tree_sitter", "next_sibling_ns", "next_sibling_ns_tree_sitter",
}  # fmt: skip


def test_bench_codec_json(tmp_path):
    for lang, cases in SNIPPETS.items():
        for name, src in cases.items():
            (tmp_path / f"{lang}_{name}.{EXT[lang]}").write_bytes(src * 20)
    res = CliRunner().invoke(cli.main, ["bench", "codec", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert set(out["languages"]) == set(SNIPPETS)
    for block in [out["total"], *out["languages"].values()]:
        assert set(block) >= KEYS
        assert block["tree_bytes_per_line_zstd19"] < block["tree_bytes_per_line_raw"]
        assert block["decode_ns_per_node"] > 0
    assert out["total"]["files"] == 3 * len(SNIPPETS)
    assert out["total"]["nodes"] == sum(v["nodes"] for v in out["languages"].values())


def test_corpus_pins_cover_every_language_quota():
    langs = {s.language for s in corpus.SOURCES}
    assert langs == set(corpus.QUOTAS)
    assert sum(corpus.QUOTAS.values()) >= 8_000_000
    assert all(q >= 300_000 for q in corpus.QUOTAS.values())
    assert all(len(s.sha256) == 64 for s in corpus.SOURCES)


def test_bench_store_json(tmp_path):
    root = tmp_path / "code"
    root.mkdir()
    for lang, cases in SNIPPETS.items():
        for name, src in cases.items():
            (root / f"{lang}_{name}.{EXT[lang]}").write_bytes(src * 5)
    res = CliRunner().invoke(
        cli.main,
        ["bench", "store", "--root", str(root), "--store", str(tmp_path / "st"), "--jobs", "1",
         "--budget-mb", "1", "--ops", "300", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    for key in ("attributable_rss_mb", "cold_open_p50_ms", "cold_vs_reparse_median_ratio",
                "disk_bytes_per_line", "index_lines_per_s", "open_ms", "tiers", "freeze",
                "index_end_to_end_lines_per_s", "dictionaries", "index_peak_rss_mb",
                "freeze_peak_rss_mb",
                "index_cpu_steal_percent"):  # fmt: skip
        assert key in out, key
    assert out["index_peak_rss_mb"] > 5 and out["freeze_peak_rss_mb"] > 5  # sampled, a process
    stages = out["cold_open_stages_p50_us"]
    assert set(stages) == {"lookup", "frame", "zstd", "tree"}
    assert all(v > 0 for v in stages.values())
    rows = out["cold_vs_reparse_by_size"]
    assert sum(r["files"] for r in rows) == out["files"]  # the cold sample is every file here
    assert all(a["nodes"][1] <= b["nodes"][0] for a, b in zip(rows, rows[1:], strict=False))
    for r in rows:
        assert r["nodes"][0] <= r["nodes"][1] and r["ratio_p50"] > 0
        assert abs(r["cold_open_for_20x_us"] - r["reparse_p50_ms"] * 1000 / 20) <= 0.051
        assert set(r["stages_p50_us"]) == set(stages)
    assert out["attributable_rss_peak_mb"] >= out["attributable_rss_mb"]
    assert out["process_rss_peak_mb"] >= out["attributable_rss_peak_mb"] + out["import_rss_mb"]
    assert out["import_rss_mb"] > 0 and out["interpreter_rss_mb"] > 0
    assert out["numpy_loaded"] is False  # the reader process ran without numpy
    steal = out["index_cpu_steal_percent"]
    assert steal is None or 0 <= steal <= 100
    assert out["index_cpu_seconds"] > 0 and out["index_lines_per_cpu_s"] > 0
    assert out["dictionaries"]["sample_blobs"] == out["blobs"]
    assert out["dictionaries"]["tree_bytes_per_line"]["none"] > 0
    assert out["files"] == 3 * len(SNIPPETS)
    assert sum(t["hits"] for t in out["tiers"].values()) == 300
    assert out["cache_bytes"] <= 1024 * 1024

    res = CliRunner().invoke(
        cli.main, ["bench", "frames", "--store", str(tmp_path / "st"), "--reads", "200", "--json"])
    assert res.exit_code == 0, res.output
    frames = json.loads(res.output[res.output.index("{") :])
    assert set(frames["ways"]) == {"pread_segment_lru", "open_pread_close",
                                   "mmap_release_every_32", "mmap_never_released"}  # fmt: skip
    assert all(w["p50_us"] > 0 and w["mean_us"] > 0 for w in frames["ways"].values())
    assert frames["reads"] == 200 and frames["frame_bytes_p50"] > 0

    res = CliRunner().invoke(
        cli.main, ["bench", "texts", "--store", str(tmp_path / "st"), "--files", "50", "--json"])
    assert res.exit_code == 0, res.output
    texts = json.loads(res.output[res.output.index("{") :])
    assert set(texts["ways"]) == {"mmap_working_file", "read_working_file", "stored_frame"}
    assert texts["working_files_unchanged"] == texts["files"] > 0
    assert all(w["p50_us"] > 0 for w in texts["ways"].values())
    assert texts["cold_open_with_text_p50_ms"] > 0

    res = CliRunner().invoke(
        cli.main, ["bench", "disk", "--store", str(tmp_path / "st"), "--every", "1", "--json"])
    assert res.exit_code == 0, res.output
    disk = json.loads(res.output[res.output.index("{") :])
    parts = disk["disk_bytes_per_line"]
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"),
                                           abs=0.005)  # fmt: skip
    for part in ("trees", "sources"):  # (the catalog's WAL files vary between the two)
        assert parts[part] == pytest.approx(out["disk_bytes_per_line"][part], abs=0.005)
    langs = disk["by_language"]
    assert sum(r["lines"] for r in langs.values()) == disk["lines"] == out["lines"]
    assert sum(r["blobs"] for r in disk["by_size"].values()) == disk["blobs"]
    # every blob's source share adds up to the source frames on disk
    for part in ("tree", "source"):
        got = sum(r[f"{part}_bytes_per_line"] * r["lines"] for r in langs.values())
        assert got / disk["lines"] == pytest.approx(parts[part + "s"], abs=0.01)
    ideas = disk["ideas"]
    assert ideas["sample_blobs"] == disk["blobs"]  # --every 1: all of them
    for what in ("trees", "sources"):
        layouts = ideas[what]["zstd19_bytes_per_line"]
        assert {"per_file", "per_file_dictionary", "packs_1m", "packs_1m_dictionary"} \
            <= set(layouts)
        assert layouts["packs_1m"]["frames"] <= layouts["per_file"]["frames"]
        assert layouts["packs_1m"]["bytes_per_line"] < layouts["per_file"]["bytes_per_line"]
        small = ideas[what]["small_ones_packed"]
        assert [r["alone_bytes"] for r in small] == [0, 4096, 8192, 16384]
        assert small[0]["bytes_per_line"] >= small[-1]["bytes_per_line"] > 0
        speed = ideas[what]["per_file_dictionary_mb_per_cpu_s"]
        assert set(speed) == {"1", "3", "9", "19"} and all(v > 0 for v in speed.values())
    assert disk["catalog_ideas"]["symbol_blocks"]["stored"] > 0


def test_steal_percent_from_cpu_counters():
    from cstvault.bench import steal_percent

    before = [100, 0, 10, 50, 0, 0, 0, 5, 0, 0]
    after = [160, 0, 20, 70, 0, 0, 0, 15, 0, 0]  # 60 + 10 + 20 + 10 jiffies, 10 stolen
    assert steal_percent(before, after) == 10.0
    assert steal_percent(None, after) is None


def test_bench_query_reports_every_key(tmp_path):
    from cstvault import indexer
    from cstvault.bench.reliability import make_repo

    make_repo(tmp_path / "r", files=60)
    indexer.index(tmp_path / "r", tmp_path / "st", jobs=1)
    res = CliRunner().invoke(cli.main, ["bench", "query", "--store", str(tmp_path / "st"),
                                        "--samples", "10", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    for key in ("store_query_lines_per_s", "tree_sitter_lines_per_s", "ast_grep_lines_per_s",
                "selective_store_lines_per_s", "selective_ast_grep_lines_per_s",
                "definitions_p50_ms", "outline_cold_p50_ms", "cold_file_query_speedup",
                "point_lookup_ratio_to_tree_sitter", "node_text_ratio_to_tree_sitter"):  # fmt: skip
        assert key in out
    assert out["files"] == 12 and out["store_query_matches"] == out["tree_sitter_matches"] > 0
    assert out["definitions_p50_ms"] > 0 and out["cold_file_query_speedup"] > 0


def test_zipf_ranks_follow_numpys_zipf():
    """The numpy-free sampler draws what numpy's `Generator.zipf` draws, in distribution."""
    import random

    import numpy as np

    from cstvault.bench.zipf import zipf

    n = 40_000
    rng = random.Random(7)
    ours = np.array([zipf(rng, 1.2) for _ in range(n)])
    theirs = np.random.default_rng(7).zipf(1.2, size=n)
    assert ours.min() >= 1
    for k in (1, 2, 3, 10):
        p_ours, p_theirs = np.mean(ours == k), np.mean(theirs == k)
        assert abs(p_ours - p_theirs) < 0.012, (k, p_ours, p_theirs)
    # the heavy tail too: the share above 1,000 (about 15% at a = 1.2)
    assert abs(np.mean(ours > 1000) - np.mean(theirs > 1000)) < 0.012


def test_bench_index_scale_rows(tmp_path):
    """`bench index`: a row per part and for the whole tree, peaks sampled in the processes
    it runs (never zero), the last row's keys repeated at the top, a largest-file row."""
    root = tmp_path / "code"
    root.mkdir()
    for lang, cases in SNIPPETS.items():
        for name, src in cases.items():
            (root / f"{lang}_{name}.{EXT[lang]}").write_bytes(src * 5)
    res = CliRunner().invoke(cli.main, [
        "bench", "index", "--corpus", str(root), "--work", str(tmp_path / "w"), "--steps", "40",
        "--jobs", "2", "--no-verify", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    rows = out["scale"]
    assert len(rows) == 2 and 40 <= rows[0]["lines"] < rows[1]["lines"]
    assert rows[1]["files"] == 3 * len(SNIPPETS)
    assert 0 < rows[0]["largest_file_bytes"] <= rows[1]["largest_file_bytes"]
    for r in rows + [out["largest_file"]]:
        for key in ("index_peak_rss_mb", "freeze_peak_rss_mb", "gc_peak_rss_mb"):
            assert r[key] > 5, (key, r)  # a Python process at least
        assert r["index_end_to_end_lines_per_s"] > 0 and r["disk_bytes_per_line"] > 0
    for key in ("index_peak_rss_mb", "freeze_peak_rss_mb", "index_end_to_end_lines_per_s"):
        assert out[key] == rows[-1][key]
    largest = out["largest_file"]
    assert largest["files"] == 1 and largest["file_bytes"] > 0
    python = sum(len(src * 5) for src in SNIPPETS["python"].values())
    assert largest["file_bytes"] >= python  # every Python file of the tree, concatenated


def test_rss_sampler_sees_a_child_process():
    """The sampler sums a process and the processes it starts."""
    import subprocess
    import sys

    from cstvault.bench.rss import Sampler

    code = ("import subprocess, sys, time\n"
            "x = bytearray(60 << 20)\n"  # the parent holds 60 MB, its child 60 MB more
            "subprocess.run([sys.executable, '-c', 'import time; y = bytearray(60 << 20); "
            "[y.__setitem__(k, 1) for k in range(0, len(y), 4096)]; time.sleep(1)'])\n"
            "for k in range(0, len(x), 4096): x[k] = 1\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code])
    with Sampler(proc.pid) as s:
        proc.wait()
    assert s.peak > 110 << 20


def test_bench_scale_reports_every_key(tmp_path):
    """`bench scale` on a small tree: the two indexes, their equality (0 differences, every
    file and symbol checked), the synthetic copies in shards, the reader's figures."""
    root = tmp_path / "code"
    for k in range(4):
        for lang, cases in SNIPPETS.items():
            for name, src in cases.items():
                p = root / f"d{k}" / f"{lang}_{name}.{EXT[lang]}"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(src * (k + 1))
    res = CliRunner().invoke(cli.main, [
        "bench", "scale", "--corpus", str(root), "--work", str(tmp_path / "w"),
        "--shard-mb", "0.004", "--copies", "2", "--scale-shard-mb", "0.008", "--ops", "200",
        "--lookups", "20", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    eq = out["equality"]
    assert out["differences"] == 0 and eq["files_checked"] == 4 * 3 * len(SNIPPETS)
    assert eq["symbols_checked"] > 20 and eq["pending_symbols"] == 0
    assert out["dask"]["shards"] >= 3 and out["dask_vs_local_throughput_ratio"] > 0
    assert out["shards"] >= 3 and out["lines"] == out["scale"]["lines_written"]
    for key in ("worker_peak_rss_mb", "sharded_open_ms", "symbol_lookup_p50_ms",
                "attributable_rss_mb"):
        assert out[key] > 0, key
    assert not (tmp_path / "w" / "synthetic").exists()  # the copies are removed
    res = CliRunner().invoke(cli.main, [
        "bench", "scale", "--work", str(tmp_path / "w"), "--corpus", str(root), "--ops", "100",
        "--lookups", "10", "--reader-only", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    again = json.loads(res.output[res.output.index("{") :])
    assert again["reader_only"] and again["lines"] == out["lines"]
    assert again["cache_mb"] >= 0 and again["attributable_anonymous_mb"] != 0
