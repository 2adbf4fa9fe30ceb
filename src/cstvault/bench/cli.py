"""`cstvault bench ...` commands."""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

err = Console(stderr=True)


def _machine() -> dict:
    import os

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": os.cpu_count(), "ram_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


def _stamp(result: dict, name: str, t0: float) -> None:
    """What every bench JSON carries: wall time, date, machine and the exact command."""
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    result["machine"] = _machine()
    result["command"] = f"cstvault bench {name} " + " ".join(sys.argv[3:])


def _on_store(name: str, run, store_dir: Path, count: int, option: str, seed: int,
              as_json: bool, lines) -> None:  # fmt: skip
    """Run a benchmark over an existing store: JSON, or `lines(result)` for people."""
    if count < 1:
        raise click.UsageError(f"--{option} must be at least 1")
    t0 = time.perf_counter()
    try:
        result = run(store_dir, count, seed)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    _stamp(result, name, t0)
    click.echo(json.dumps(result, indent=2) if as_json else "\n".join(lines(result)))


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
                  help="Cache directory (default ~/.cache/cstvault, or $CSTVAULT_CACHE).")
    @click.option("--lines", type=int, default=None,
                  help="Deterministic subset of about this many lines (default: full 8.5M).")
    @click.option("--json", "as_json", is_flag=True)
    def corpus(directory: Path | None, lines: int | None, as_json: bool) -> None:
        """Fetch the pinned benchmark corpus, verify checksums, write a manifest."""
        from . import corpus as corpus_mod

        d = directory or corpus_mod.DEFAULT_DIR
        try:
            manifest = corpus_mod.build(d, lines, log=lambda m: err.print(m, style="dim"))
        except corpus_mod.CorpusError as exc:
            raise click.ClickException(str(exc)) from exc
        summary = {k: manifest[k] for k in ("path", "languages", "total", "sources")}
        if as_json:
            click.echo(json.dumps(summary, indent=2))
        else:
            for lang, v in manifest["languages"].items():
                click.echo(f"{lang:11s} {v['files']:7,d} files {v['lines']:11,d} lines")
            t = manifest["total"]
            click.echo(f"{'total':11s} {t['files']:7,d} files {t['lines']:11,d} lines")
            click.echo(f"corpus at {manifest['path']}")

    @group.command()
    @click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  default=None, help="Index this tree afresh first (timed).")
    @click.option("--store", "store_dir", type=click.Path(path_type=Path), default=None,
                  help="Store directory (default: in the cache directory, named after ROOT).")
    @click.option("--jobs", "-j", type=int, default=2, show_default=True)
    @click.option("--budget-mb", type=float, default=16.0, show_default=True)
    @click.option("--ops", type=int, default=100_000, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def store(root: Path | None, store_dir: Path | None, jobs: int, budget_mb: float, ops: int,
              seed: int, as_json: bool) -> None:  # fmt: skip
        """Index lines/s, disk bytes/line, open time, Zipf workload latency per tier,
        attributable RSS under a budget, cold open vs tree-sitter re-parse."""
        import shutil

        from . import store as store_mod

        if root is None and store_dir is None:
            raise click.UsageError("give --root to index, or --store of an indexed store")
        target = store_dir or store_mod.default_store(root)  # type: ignore[arg-type]
        if root is not None and target.exists():
            shutil.rmtree(target)
        t0 = time.perf_counter()
        result = store_mod.run(root, target, jobs, budget_mb, ops, seed,
                               log=lambda m: err.print(m, style="dim"))  # fmt: skip
        _stamp(result, "store", t0)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            for key in ("index_lines_per_s", "disk_bytes_per_line", "open_ms", "op_p50_ms",
                        "op_p99_ms", "attributable_rss_mb", "cold_open_p50_ms",
                        "cold_vs_reparse_median_ratio", "hit_ratios"):  # fmt: skip
                click.echo(f"{key:30s} {result.get(key)}")

    @group.command("index")
    @click.option("--corpus", "corpus_dir", type=click.Path(path_type=Path, exists=True,
                  file_okay=False), default=None,
                  help="Tree to index (default: the bench corpus in the cache directory).")
    @click.option("--work", type=click.Path(path_type=Path), default=None,
                  help="Where the parts and their stores go (default: the cache directory).")
    @click.option("--jobs", "-j", type=int, default=2, show_default=True)
    @click.option("--steps", default="1000000,2000000,4000000", show_default=True,
                  help="Line counts of the parts indexed before the whole corpus.")
    @click.option("--largest/--no-largest", default=True, show_default=True,
                  help="Also index one generated Python file as large as the size cap.")
    @click.option("--verify/--no-verify", default=True, show_default=True,
                  help="Also run `verify --store` on each store (sampled the same way).")
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def index_cmd(corpus_dir: Path | None, work: Path | None, jobs: int, steps: str,
                  largest: bool, verify: bool, seed: int, as_json: bool) -> None:  # fmt: skip
        """Peak RSS (all processes, sampled) of index, freeze, gc and verify, and their speed,
        as the indexed part of the corpus grows, and for the largest file admitted."""
        from . import corpus as corpus_mod
        from . import index as index_mod

        corpus = corpus_dir or corpus_mod.DEFAULT_DIR / "corpus"
        if not corpus.is_dir():
            raise click.ClickException(f"no corpus at {corpus}: run `cstvault bench corpus`")
        try:
            counts = tuple(int(x) for x in steps.split(",") if x.strip())
        except ValueError as exc:
            raise click.UsageError(f"--steps: comma-separated line counts ({exc})") from exc
        t0 = time.perf_counter()
        result = index_mod.run(corpus, work or corpus_mod.DEFAULT_DIR / "bench-index", jobs,
                               seed, counts, largest, verify,
                               log=lambda m: err.print(m, style="dim"))  # fmt: skip
        _stamp(result, "index", t0)
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        rows = result["scale"] + ([result["largest_file"]] if "largest_file" in result else [])
        for r in rows:
            click.echo(f"{r['lines']:>11,d} lines  index {r['index_peak_rss_mb']:7.1f} MB "
                       f"{r['index_lines_per_s']:>8,d} lines/s  freeze "
                       f"{r['freeze_peak_rss_mb']:7.1f} MB  gc {r['gc_peak_rss_mb']:6.1f} MB  "
                       f"verify {r.get('verify_peak_rss_mb', '-')} MB  end to end "
                       f"{r['index_end_to_end_lines_per_s']:,d} lines/s")  # fmt: skip

    @group.command()
    @click.option("--corpus", "corpus_dir", type=click.Path(path_type=Path), default=None,
                  help="Corpus directory (default: the one `bench corpus` made).")
    @click.option("--work", type=click.Path(path_type=Path), default=None,
                  help="Where the stores and the synthetic tree go (default: the cache).")
    @click.option("--jobs", type=int, default=2, show_default=True,
                  help="Threads of `index --jobs`, workers of the LocalCluster.")
    @click.option("--shard-mb", type=float, default=32, show_default=True,
                  help="Shard size for the corpus's sharded store (the equality check).")
    @click.option("--copies", type=int, default=12, show_default=True,
                  help="Copies of the corpus in the synthetic tree (0: skip the scale run).")
    @click.option("--scale-shard-mb", type=float, default=256, show_default=True)
    @click.option("--budget-mb", type=float, default=16, show_default=True)
    @click.option("--ops", type=int, default=20_000, show_default=True)
    @click.option("--lookups", type=int, default=2_000, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--reader-only", is_flag=True,
                  help="Only the reader's part, on the sharded store an earlier run left.")
    @click.option("--json", "as_json", is_flag=True)
    def scale(corpus_dir: Path | None, work: Path | None, jobs: int, shard_mb: float,
              copies: int, scale_shard_mb: float, budget_mb: float, ops: int, lookups: int,
              seed: int, reader_only: bool, as_json: bool) -> None:  # fmt: skip
        """Sharded stores on a Dask LocalCluster: equality with one store, throughput
        against `index --jobs`, and a synthetic tree of `copies` corpora (RSS per worker,
        open, symbol lookups across shards, reader RSS)."""
        from . import corpus as corpus_mod
        from . import scale as scale_mod

        corpus = corpus_dir or corpus_mod.DEFAULT_DIR / "corpus"
        if not corpus.is_dir():
            raise click.ClickException(f"no corpus at {corpus}: run `cstvault bench corpus`")
        t0 = time.perf_counter()
        result = scale_mod.run(corpus, work or corpus_mod.DEFAULT_DIR / "bench-scale",
                               jobs=jobs, shard_mb=shard_mb, copies=copies,
                               scale_shard_mb=scale_shard_mb, budget_mb=budget_mb, ops=ops,
                               lookups=lookups, seed=seed, reader_only=reader_only,
                               log=lambda m: err.print(m, style="dim"))  # fmt: skip
        _stamp(result, "scale", t0)
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        if not reader_only:
            click.echo(f"differences {result['differences']}; dask / local throughput "
                       f"{result['dask_vs_local_throughput_ratio']}")  # fmt: skip
        if "lines" in result:
            click.echo(f"{result['lines']:,} lines in {result['shards']} shards; worker peak "
                       f"{result['worker_peak_rss_mb']} MB; open {result['sharded_open_ms']} "
                       f"ms; symbol lookup p50 {result['symbol_lookup_p50_ms']} ms; reader "
                       f"{result['attributable_rss_mb']} MB attributable")  # fmt: skip

    @group.command()
    @click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
                  help="An indexed store (e.g. the one `bench store` leaves in the cache).")
    @click.option("--reads", type=int, default=20_000, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def frames(store_dir: Path, reads: int, seed: int, as_json: bool) -> None:
        """Reading a stored frame at random: pread through the segment LRU (production) vs
        open/pread/close vs mmap'd segments (pages released every 32 reads, or never)."""
        from . import frames as frames_mod

        def lines(result: dict) -> list[str]:
            return [f"{name:24s} p50 {row['p50_us']:7.2f} us  mean {row['mean_us']:7.2f}"
                    f" us  file-backed RSS +{row['file_backed_rss_growth_mb']} MB"
                    for name, row in result["ways"].items()]  # fmt: skip

        _on_store("frames", frames_mod.run, store_dir, reads, "reads", seed, as_json, lines)

    @group.command()
    @click.option("--work", type=click.Path(path_type=Path), default=None,
                  help="Scratch directory (default: a new temporary one).")
    @click.option("--files", type=int, default=240, show_default=True,
                  help="Files in the generated repository.")
    @click.option("--repeats", type=int, default=3, show_default=True,
                  help="Kills at each named point (its 1st, 2nd, ... passage).")
    @click.option("--random-kills", type=int, default=200, show_default=True)
    @click.option("--flips", type=int, default=1000, show_default=True)
    @click.option("--rewrites", type=int, default=10, show_default=True,
                  help="Reader processes whose working files are changed under them.")
    @click.option("--fast", is_flag=True,
                  help="The quick variant `make test` runs (1 repeat, 12 random kills, "
                       "120 flips, 2 rewrite rounds, 120 files).")
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def reliability(work: Path | None, files: int, repeats: int, random_kills: int, flips: int,
                    rewrites: int, fast: bool, seed: int, as_json: bool) -> None:
        """Kill writers at every commit point and at random, run two writers at once, flip
        bytes, rewrite sources under readers; every figure but the trials must be 0."""
        import tempfile

        from . import reliability as rel

        if fast:
            files, repeats, random_kills, flips, rewrites = 120, 1, 12, 120, 2
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="cstvault-reliability-") as tmp:
            result = rel.run(work or Path(tmp) / "work", files=files, repeats=repeats,
                             random_kills=random_kills, flips=flips, rewrites=rewrites,
                             seed=seed)  # fmt: skip
        _stamp(result, "reliability", t0)
        bad = {k: result[k] for k in rel.Trials.KEYS if result[k]}
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            for key in ("kill_trials", "kills_landed", "random_kill_trials", "writer_pairs",
                        "byte_flips", "inplace_rewrites", *rel.Trials.KEYS):  # fmt: skip
                click.echo(f"{key:20s} {result[key]:,}")
            for line in result["failures"]:
                click.echo(f"  {line}")
        if bad:
            sys.exit(1)

    @group.command("query")
    @click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
                  help="An indexed store whose working tree is still in place.")
    @click.option("--samples", type=int, default=300, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def query_bench(store_dir: Path, samples: int, seed: int, as_json: bool) -> None:
        """Queries over the store's Python files against py-tree-sitter and ast-grep (which
        re-parse), definitions, cold outlines and point lookups."""
        from . import query as query_mod

        def lines(result: dict) -> list[str]:
            return [f"{k:34s} {v}" for k, v in result.items() if k not in ("machine",)]

        _on_store("query", query_mod.run, store_dir, samples, "samples", seed, as_json, lines)

    @group.command()
    @click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
                  help="A frozen store (e.g. the one `bench store` builds).")
    @click.option("--every", type=int, default=4, show_default=True,
                  help="Sample every N-th block of 200 consecutive blobs for the layouts.")
    @click.option("--jobs", type=int, default=2, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def disk(store_dir: Path, every: int, jobs: int, as_json: bool) -> None:
        """Where the store's bytes go (by part, table, language, file size) and what other
        layouts would take: dictionaries, packs, zstd levels and their speed."""
        from . import disk as disk_mod

        def lines(result: dict) -> list[str]:
            return [f"{k:20s} {v}" for k, v in result["disk_bytes_per_line"].items()]

        _on_store("disk", lambda d, n, _: disk_mod.run(d, n, jobs), store_dir, every, "every",
                  0, as_json, lines)  # fmt: skip

    @group.command()
    @click.option("--store", "store_dir", type=click.Path(path_type=Path), required=True,
                  help="An indexed store whose working tree is still in place.")
    @click.option("--files", type=int, default=5_000, show_default=True)
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def texts(store_dir: Path, files: int, seed: int, as_json: bool) -> None:
        """Fetching a tree's text: the working file mapped (previous design) vs read once
        and checked (production) vs the store's own frame; time and RSS held."""
        from . import texts as texts_mod

        def lines(result: dict) -> list[str]:
            return [*(f"{name:20s} p50 {row['p50_us']:8.2f} us  mean {row['mean_us']:8.2f}"
                      f" us  held RSS {row['held_rss_mb']}"
                      for name, row in result["ways"].items()),
                    f"cold open + text p50 {result['cold_open_with_text_p50_ms']} ms"]  # fmt: skip

        _on_store("texts", texts_mod.run, store_dir, files, "files", seed, as_json, lines)

    @group.command()
    @click.option("--corpus", "corpus_dir", type=click.Path(path_type=Path), default=None,
                  help="Source tree to measure (default: the `bench corpus` in the cache).")
    @click.option("--lines", type=int, default=None,
                  help="Seeded random subset of at most this many lines (default: all).")
    @click.option("--jobs", "-j", type=int, default=2, show_default=True)
    @click.option("--ops", type=int, default=20_000, show_default=True,
                  help="Zipf operations per row.")
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--budget-mb", type=float, default=16.0, show_default=True,
                  help="Cache budget of the on-disk rows (4a-4c).")
    @click.option("--scale/--no-scale", default=True, show_default=True,
                  help="Also measure production at 1/8, 1/4 and 1/2 of the lines.")
    @click.option("--work", "work_dir", type=click.Path(path_type=Path), default=None,
                  help="Where stores and specs go (default: in the cache directory).")
    @click.option("--plot", "plot_file", type=click.Path(path_type=Path), default=None,
                  help="Write a PNG of RAM and latency per row (needs the `plot` extra).")
    @click.option("--json", "as_json", is_flag=True)
    def phases(corpus_dir: Path | None, lines: int | None, jobs: int, ops: int, seed: int,
               budget_mb: float, scale: bool, work_dir: Path | None, plot_file: Path | None,
               as_json: bool) -> None:  # fmt: skip
        """The optimisation table, measured: Baseline and phases 1-4c, each in a fresh process
        (RAM as RSS delta, disk, Zipf latency, files lost), plus a scale table."""
        from . import corpus as corpus_mod
        from . import phases as phases_mod

        corpus_dir = corpus_dir or corpus_mod.DEFAULT_DIR / "corpus"
        if not corpus_dir.is_dir():
            raise click.ClickException(
                f"no corpus at {corpus_dir}: run `cstvault bench corpus` or pass --corpus")
        t0 = time.perf_counter()
        try:
            result = phases_mod.run(
                corpus_dir, lines, work_dir or phases_mod.default_work_dir(corpus_dir),
                jobs=jobs, ops=ops, seed=seed, budget_mb=budget_mb, scale=scale,
                log=lambda m: err.print(m, style="dim"))  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from exc
        _stamp(result, "phases", t0)
        if plot_file is not None:
            try:
                phases_mod.plot(result, plot_file)
            except RuntimeError as exc:
                raise click.ClickException(str(exc)) from exc
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(phases_mod.markdown(result))

    @group.command()
    @click.option("--corpus", "corpus_dir", type=click.Path(path_type=Path, exists=True),
                  default=None, help="The bench corpus (default ~/.cache/cstvault/corpus).")
    @click.option("--store", "store_dir", type=click.Path(path_type=Path), default=None,
                  help="The corpus's store, for the unchanged re-index (else not measured).")
    @click.option("--work", type=click.Path(path_type=Path), default=None,
                  help="Scratch directory (default: a temporary one, removed).")
    @click.option("--edits", type=int, default=400, show_default=True)
    @click.option("--updates", type=int, default=200, show_default=True)
    @click.option("--trials", type=int, default=100, show_default=True,
                  help="Crash trials (SIGKILL at random moments and at fault points).")
    @click.option("--memory-edits", type=int, default=10_000, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def live(corpus_dir: Path | None, store_dir: Path | None, work: Path | None, edits: int,
             updates: int, trials: int, memory_edits: int, as_json: bool) -> None:  # fmt: skip
        """Per-file writes on real edits: release replays, updates seen by a reader, a typed
        stream (group commit and fsync per edit), watch latency, crash trials, re-index of
        an unchanged tree, RSS with live trees."""
        import tempfile

        from . import corpus as corpus_mod
        from . import live as live_mod

        corpus = corpus_dir or corpus_mod.DEFAULT_DIR / "corpus"
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="cstvault-live-") as tmp:
            result = live_mod.run(work or Path(tmp) / "work", corpus, store_dir, edits=edits,
                                  updates=updates, trials=trials, memory_edits=memory_edits,
                                  log=lambda m: err.print(m, style="dim"))  # fmt: skip
        _stamp(result, "live", t0)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            for k, v in result.items():
                if k != "machine":
                    click.echo(f"{k:38s} {v}")

    @group.command()
    @click.argument("paths", nargs=-1, type=click.Path(exists=True), required=True)
    @click.option("--json", "as_json", is_flag=True)
    def codec(paths: tuple[str, ...], as_json: bool) -> None:
        """Codec sizes and speeds per language and in total, against tree-sitter."""
        from . import codec as codec_mod

        t0 = time.perf_counter()
        result = codec_mod.run(paths, log=lambda m: err.print(m, style="dim"))
        _stamp(result, "codec", t0)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            for lang, v in {**result["languages"], "total": result["total"]}.items():
                click.echo(
                    f"{lang:11s} lines {v['lines']:>10,d}  "
                    f"tree {v['tree_bytes_per_line_zstd19']:.2f} B/line z19  "
                    f"decode {v['decode_ns_per_node']:.1f} ns/node  "
                    f"enc {v['extract_encode_lines_per_s']:,d} lines/s"
                )
