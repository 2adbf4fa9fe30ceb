"""The `cstvault` command line."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import verify as verify_mod
from .store.catalog import printable
from .walk import iter_files

console = Console(stderr=True)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=console,
        disable=not enabled,
        transient=True,
    )


def storage_error(exc: BaseException) -> str:
    """One line for a failure of the disk under the store: full, quota, permissions."""
    text = str(exc)
    errno_ = getattr(exc, "errno", None)
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if errno_ in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in text:
        return (f"no space left on the device{where}: the step that was writing was rolled "
                "back and the store is as of its last commit; free space and re-run")
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in text:
        return f"permission denied{where}: {text}"
    return f"storage error{where}: {text}"


@contextlib.contextmanager
def _not_stored_is_an_error():
    """A path the store does not have (KeyError) as a one-line error."""
    try:
        yield
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc


class _Main(click.Group):
    """Turns the store's expected failures into clean one-line errors."""

    def invoke(self, ctx: click.Context):
        from .shards.manifest import ManifestError
        from .store import IncompleteStore, ShardedStoreError, StoreLocked, StoreVersionError

        try:
            return super().invoke(ctx)
        except (FileNotFoundError, StoreVersionError, StoreLocked, IncompleteStore,
                ShardedStoreError, ManifestError) as exc:  # fmt: skip
            raise click.ClickException(str(exc)) from exc
        except (OSError, sqlite3.Error) as exc:
            raise click.ClickException(storage_error(exc)) from exc


@click.group(cls=_Main)
@click.version_option(package_name="cstvault")
def main() -> None:
    """Lossless, compact, navigable concrete syntax trees for whole codebases."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--store", "store_dir", type=click.Path(exists=True),
              help="Verify every file of this store instead of PATHS.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--max-mismatches", default=20, show_default=True, help="Mismatches to report.")
@click.option("--jobs", "-j", type=int, default=os.cpu_count() or 1, show_default=True,
              help="A sharded store: shards verified at a time (processes).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="A sharded store: verify its shards on Dask (scheduler address or local:N).")
def verify(paths: tuple[str, ...], store_dir: str | None, as_json: bool,
           max_mismatches: int, jobs: int, dask_address: str | None) -> None:  # fmt: skip
    """Round-trip every supported file under PATHS (or in a store) against tree-sitter."""
    from .shards import find as find_sharded

    if not paths and not store_dir:
        raise click.UsageError("give PATHS to verify, or --store DIR")
    t0 = time.perf_counter()
    sharded = find_sharded(store_dir) if store_dir else None
    shards = None
    if sharded is not None:
        report, shards = _verify_sharded(sharded, jobs, dask_address, as_json, max_mismatches)
    elif store_dir:
        from .store import Store

        with Store.open(store_dir) as store, _progress(console.is_terminal and not as_json) as bar:
            task = bar.add_task("verify", total=store.catalog.counts()["blobs"], current="")

            def step(name: str) -> None:
                bar.update(task, current=printable(name)[-60:])
                bar.advance(task)

            report = verify_mod.verify_store(store, progress=step)
            report.max_mismatches = max_mismatches
    else:
        report = _verify_paths(paths, as_json, max_mismatches)
    result = report.as_dict()
    if shards is not None:
        result["shards"] = shards
        result["shards_with_mismatches"] = [s["name"] for s in shards if s["mismatched"]]
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_verify(result)
    sys.exit(1 if report.mismatched else 0)


@main.command("verify-queries")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--jobs", "-j", type=int, default=os.cpu_count() or 1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify_queries_cmd(paths: tuple[str, ...], jobs: int, as_json: bool) -> None:
    """Run every query the grammar wheels ship on cstvault's tree and on py-tree-sitter's
    tree of every supported file under PATHS; exits non-zero on any difference."""
    from .verify_queries import verify_queries

    t0 = time.perf_counter()
    files = list(iter_files(paths))
    with _progress(console.is_terminal and not as_json) as bar:
        task = bar.add_task("verify-queries", total=len(files), current="")

        def step(path: str) -> None:
            bar.update(task, current=printable(path)[-60:])
            bar.advance(task)

        report = verify_queries(files, jobs, step)
    out = {**report.as_dict(), "seconds": round(time.perf_counter() - t0, 3)}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"{out['files']:,} files, {out['queries']:,} queries run both ways, "
                   f"{out['matches']:,} matches: {out['differences']:,} differences")  # fmt: skip
        for e in out["examples"]:
            click.echo(f"  DIFFERENT {printable(e['path'])} {e['query']} match {e['match']}: "
                       f"ours {e['ours']} / tree-sitter {e['theirs']}")  # fmt: skip
    sys.exit(1 if report.differences else 0)


def _verify_paths(paths: tuple[str, ...], as_json: bool, max_mismatches: int):
    files = list(iter_files(paths))
    with _progress(console.is_terminal and not as_json) as bar:
        task = bar.add_task("verify", total=len(files), current="")

        def step(path: Path) -> None:
            bar.update(task, current=printable(str(path))[-60:])
            bar.advance(task)

        return verify_mod.verify_files(files, verify_mod.Report(max_mismatches=max_mismatches),
                                       progress=step)  # fmt: skip


_WAIT = click.option("--wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
                     help="Wait this long for another writer of the store to finish.")


@main.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False), default=".")
@click.option("--store", "store_dir", type=click.Path(), default=None,
              help="Store directory (default ROOT/.cstvault).")
@click.option("--jobs", "-j", type=int, default=os.cpu_count() or 1, show_default=True,
              help="Threads for parse + encode (and the freeze that follows).")
@click.option("--disk-quota-mb", type=float, default=None,
              help="Refuse to grow the segment files past this size (kept in the store).")
@click.option("--freeze/--no-freeze", default=True, show_default=True,
              help="Recompress the new frames to zstd-19 once indexed (else: `cstvault freeze`).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary.")
@click.option("--shard-mb", type=float, default=None,
              help="Index into a sharded store, cutting shards at this many MB of source "
                   "(default 256 with --dask).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Run the shards' tasks on Dask: a scheduler address, or local:N for a "
                   "LocalCluster of N workers (needs cstvault[dask]).")
@click.option("--scratch", type=click.Path(file_okay=False), default=None,
              help="Sharded: tasks build their shards here (a directory the workers and this "
                   "process share), and this process moves them into the store.")
@_WAIT
def index(root: str, store_dir: str | None, jobs: int, disk_quota_mb: float | None,
          freeze: bool, as_json: bool, shard_mb: float | None, dask_address: str | None,
          scratch: str | None, wait: float) -> None:  # fmt: skip
    """Index every supported file under ROOT (gitignore respected) into a store.

    Files are parsed, encoded and written as fast (zstd-1) frames, so the store is complete
    and queryable at parse speed; then, unless --no-freeze, the frames are frozen to zstd-19
    (dictionaries trained, symbols and catalog compacted).

    With --shard-mb or --dask (or when the store is a sharded one) the files are cut into
    shards by path ranges, each indexed and frozen as a task (--jobs processes, or Dask
    workers), and the shards' manifest is written once all of them are complete.
    """
    from . import indexer
    from .shards import find as find_sharded
    from .store import Store
    from .store.lock import WriterLock

    directory = Path(store_dir) if store_dir else Path(root) / ".cstvault"
    if shard_mb is not None or dask_address is not None or find_sharded(directory):
        _index_sharded(root, directory, jobs, shard_mb, dask_address, scratch, as_json, wait)
        return
    if scratch is not None:
        raise click.UsageError("--scratch is for sharded stores (--shard-mb or --dask)")
    with WriterLock(directory, wait, joinable=True):  # one writer from the index through its freeze
        with _progress(console.is_terminal and not as_json) as bar:
            task = bar.add_task("index", total=None, current="")

            def step(done: int, total: int, path: str) -> None:
                bar.update(task, completed=done, total=total, current=printable(path)[-60:])

            try:
                report = indexer.index(root, directory, jobs=jobs, progress=step,
                                       disk_quota_mb=disk_quota_mb,
                                       compact=not freeze)  # fmt: skip
            except indexer.DiskQuotaExceeded as exc:
                raise click.ClickException(str(exc)) from exc
        frozen = _freeze(directory, jobs, as_json) if freeze else None
    with Store.open(directory) as store:
        stats = store.stats()
    out = {
        "files": report.files, "unchanged": report.unchanged, "new_blobs": report.new_blobs,
        "deduplicated": report.deduplicated, "removed": report.removed,
        "skipped": report.skipped, "lines": report.lines, "nodes": report.nodes,
        "skipped_files": [{"path": p, "reason": r} for p, r in report.skipped_files],
        "seconds": round(report.seconds, 3),
        "lines_per_s": round(report.lines / report.seconds) if report.seconds else None,
        "store": str(store.directory), "disk_bytes": stats["disk_bytes"],
        "disk_bytes_per_line": stats["disk_bytes_per_line"], "frame_levels": stats["levels"],
        "freeze": frozen.as_dict() if frozen else None,
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(
            f"indexed {out['files']:,} files ({out['lines']:,} lines, {out['nodes']:,} nodes) "
            f"in {out['seconds']} s; {out['unchanged']:,} unchanged, "
            f"{out['deduplicated']:,} deduplicated, skipped {out['skipped'] or 0}; "
            f"store {out['disk_bytes']['total']:,} bytes at {out['store']}"
        )
        _print_skipped(out["skipped_files"])
        if frozen:
            click.echo(f"froze {frozen.blobs:,} blobs to zstd-19 in {frozen.seconds:.1f} s "
                       f"({frozen.bytes_before:,} -> {frozen.bytes_after:,} bytes)")  # fmt: skip


def _index_sharded(root: str, directory: Path, jobs: int, shard_mb: float | None,
                   dask_address: str | None, scratch: str | None, as_json: bool,
                   wait: float) -> None:  # fmt: skip
    from contextlib import ExitStack

    from .shards import build
    from .shards.manifest import ManifestError
    from .store import CATALOG

    if (directory / CATALOG).exists():
        raise click.ClickException(f"{directory} holds a single store: give --store another "
                                   "directory for the sharded one")  # fmt: skip
    with ExitStack() as stack:
        runner = _runner(stack, jobs, dask_address)
        bar = stack.enter_context(_progress(console.is_terminal and not as_json))
        task = bar.add_task("shards", total=None, current="")

        def step(done: int, total: int, res: dict) -> None:
            bar.update(task, completed=done, total=total, current=res["name"])

        try:
            out = build.index_sharded(root, directory, runner=runner,
                                      shard_mb=shard_mb or build.SHARD_MB, scratch=scratch,
                                      progress=step, wait=wait)  # fmt: skip
        except (build.ShardFailed, ManifestError) as exc:
            raise click.ClickException(str(exc)) from exc
    out["store"] = str(directory)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"indexed {out['files']:,} files ({out['lines']:,} lines) into {out['shards']} "
               f"shards in {out['seconds']} s; {out['unchanged']:,} unchanged; "
               f"worker peak RSS {out['worker_peak_rss_mb']} MB; store at {directory}")  # fmt: skip
    _print_skipped([{"path": p, "reason": r} for p, r in out["skipped_files"]])


def _open_read(store_dir: str):
    """A store opened for reading: a single store, or a sharded one read as one."""
    from . import open as open_store

    return open_store(store_dir)


def _verify_sharded(directory: Path, jobs: int, dask_address: str | None, as_json: bool,
                    max_mismatches: int):  # fmt: skip
    from contextlib import ExitStack

    from .shards import build, fanout
    from .shards import manifest as mf

    with ExitStack() as stack:
        runner = _runner(stack, jobs, dask_address)
        bar = stack.enter_context(_progress(console.is_terminal and not as_json))
        task = bar.add_task("verify", total=len(mf.read(directory).shards), current="")
        try:
            return fanout.verify_sharded(directory, runner, max_mismatches,
                                         progress=lambda out: bar.advance(task))  # fmt: skip
        except (build.ShardFailed, mf.ManifestError) as exc:
            raise click.ClickException(str(exc)) from exc


def _runner(stack, jobs: int, dask_address: str | None):
    """Where shard tasks run: `jobs` local processes, or the Dask cluster at the address
    (closed with `stack`)."""
    from .shards import build

    if dask_address is None:
        return build.local_runner(jobs)
    from .shards.on_dask import DaskUnavailable, dask_runner

    try:
        return stack.enter_context(dask_runner(dask_address))
    except DaskUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


def _store_of(opened, path: str):
    """The single store that holds `path`: itself, or the shard of a sharded store."""
    from .shards import ShardedStore

    return opened.shard_for(path) if isinstance(opened, ShardedStore) else opened


def _stores_of(opened) -> list:
    """The single stores behind an opened store: itself, or a sharded store's shards."""
    from .shards import ShardedStore

    if isinstance(opened, ShardedStore):
        return [opened.shard(k) for k in range(len(opened.manifest.shards))]
    return [opened]


SHOW_SKIPPED = 20


def _print_skipped(rows: list[dict]) -> None:
    for row in rows[:SHOW_SKIPPED]:
        click.echo(f"  skipped {printable(row['path'])}: {row['reason']}")
    if len(rows) > SHOW_SKIPPED:
        click.echo(f"  … and {len(rows) - SHOW_SKIPPED:,} more skipped (--json lists all)")


def _freeze(directory: Path, jobs: int, quiet: bool, disk_quota_mb: float | None = None,
            wait: float = 0.0):  # fmt: skip
    from .freeze import freeze as freeze_store
    from .indexer import DiskQuotaExceeded

    with _progress(console.is_terminal and not quiet) as bar:
        task = bar.add_task("freeze", total=None, current="zstd-19")

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            return freeze_store(directory, jobs=jobs, progress=step, disk_quota_mb=disk_quota_mb,
                                wait=wait)  # fmt: skip
        except DiskQuotaExceeded as exc:
            raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--jobs", "-j", type=int, default=os.cpu_count() or 1, show_default=True)
@click.option("--disk-quota-mb", type=float, default=None,
              help="Refuse to grow the segment files past this size (default: the store's).")
@click.option("--json", "as_json", is_flag=True)
@_WAIT
def freeze(store_dir: str, jobs: int, disk_quota_mb: float | None, as_json: bool,
           wait: float) -> None:  # fmt: skip
    """Recompress frames not yet frozen to zstd-19, with per-language dictionaries (trained
    here for languages that have none yet); resumable, readers may stay open."""
    from .store import resolve

    report = _freeze(resolve(store_dir), jobs, as_json, disk_quota_mb, wait)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(f"froze {report.blobs:,} blobs in {report.seconds:.1f} s "
                   f"({report.bytes_before:,} -> {report.bytes_after:,} frame bytes)")  # fmt: skip


@main.command()
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--json", "as_json", is_flag=True)
def stats(store_dir: str, as_json: bool) -> None:
    """Counts and sizes of a store."""
    with _open_read(store_dir) as store:
        s = store.stats()
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    table = Table(title=f"cstvault store {store_dir}", show_header=False)
    for key in ("files", "blobs", "lines", "nodes", "segments", "skipped", "dedup_ratio"):
        table.add_row(key, f"{s[key]:,}")
    for key, v in s["disk_bytes_per_line"].items():
        table.add_row(f"disk bytes/line {key}", f"{v}")
    Console().print(table)
    _print_skipped(s["skipped_files"])


@main.command()
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--json", "as_json", is_flag=True)
@_WAIT
def gc(store_dir: str, as_json: bool, wait: float) -> None:
    """Reclaim unreferenced blobs, segments and segment tails (takes the writer lock)."""
    from .store import Store

    with Store.open(store_dir, write=True, wait=wait) as store:
        out = store.gc()
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(
        f"freed {out['bytes_freed']:,} bytes: {out['segments_removed']} segments removed, "
        f"{out['segments_truncated']} truncated, {out['orphan_blobs']} orphan blobs"
    )


@main.command()
@click.argument("pattern")
@click.argument("globs", nargs=-1)
@click.option("--lang", "language", required=True, help="The language the query is for.")
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--jobs", "-j", type=int, default=os.cpu_count() or 1, show_default=True)
@click.option("--count", is_flag=True, help="Print only how many matches and files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def query(pattern: str, globs: tuple[str, ...], language: str, store_dir: str, jobs: int,
          count: bool, as_json: bool) -> None:  # fmt: skip
    """Run a tree-sitter query (PATTERN, or a FILE.scm) over every stored file of a
    language, optionally only under PATH-GLOBs (gitignore syntax). Prints
    `path:row:col  @capture  text` per capture (1-based row and column)."""
    from .query import Query, QueryError
    from .search import NothingToSearch, plan, run

    text = Path(pattern).read_text() if pattern.endswith(".scm") and Path(pattern).is_file() \
        else pattern  # fmt: skip
    if language not in languages_names():
        raise click.BadParameter(f"{language!r}; one of {', '.join(languages_names())}",
                                 param_hint="--lang")  # fmt: skip
    t0 = time.perf_counter()
    try:
        q = Query(language, text)
    except QueryError as exc:
        raise click.ClickException(f"query: {exc}") from exc
    with _open_read(store_dir) as opened, \
            _progress(console.is_terminal and not as_json) as bar:  # fmt: skip
        plans = []
        for store in _stores_of(opened):  # a sharded store: each shard in turn
            try:
                plans.append((store, plan(store, q, list(globs) or None)))
            except NothingToSearch as exc:
                why = exc
        if not plans:
            raise click.ClickException(f"query: {why}")
        task = bar.add_task("query", total=sum(len(p.paths) for _, p in plans), current="")
        matches = files = 0
        found = []
        last = None
        for m in (m for store, p in plans
                  for m in run(store, q, p.paths, jobs, lambda n: bar.advance(task, n))):
            matches += 1
            files += m.path != last
            last = m.path
            if count:
                continue
            if as_json:
                found.append({"path": m.path, "pattern": m.pattern_index, "captures": {
                    name: [{"type": c.type, "start_byte": c.start_byte, "end_byte": c.end_byte,
                            "start_point": c.start_point, "end_point": c.end_point,
                            "text": c.text.decode("utf-8", "replace")} for c in caps]
                    for name, caps in m.captures.items()}})  # fmt: skip
                continue
            for name, caps in m.captures.items():
                for c in caps:
                    line = c.text.split(b"\n", 1)[0][:120].decode("utf-8", "replace")
                    click.echo(f"{printable(m.path)}:{c.start_point[0] + 1}:"
                               f"{c.start_point[1] + 1}  @{name}  {line}")
    read = sum(len(p.paths) for _, p in plans)
    candidates = sum(p.candidates for _, p in plans)
    kind_skipped = sum(p.kind_skipped for _, p in plans)
    summary = {"matches": matches, "files_matched": files, "files_read": read,
               "files_of_language": candidates,
               "skipped_by_symbols": candidates - read - kind_skipped,
               "skipped_by_kinds": kind_skipped,
               "seconds": round(time.perf_counter() - t0, 3)}  # fmt: skip
    if as_json:
        click.echo(json.dumps({**summary, "matches_found": found} if not count else summary,
                              indent=2))  # fmt: skip
    elif count:
        click.echo(f"{matches:,} matches in {files:,} files ({read:,} of "
                   f"{candidates:,} {language} files read)")  # fmt: skip


def _tag_rows(items) -> list[dict]:
    return [{"path": t.path, "kind": t.kind, "name": t.name, "start_point": t.start_point,
             "end_point": t.end_point, "name_point": t.name_point} for t in items]  # fmt: skip


def _print_tags(items, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_tag_rows(items), indent=2))
        return
    for t in items:
        click.echo(f"{printable(t.path)}:{t.name_point[0] + 1}:{t.name_point[1] + 1}  "
                   f"{t.kind}  {t.name}")  # fmt: skip


def _on_a_file(command):
    """Arguments of a command about one stored FILE: FILE, --store, --json."""
    command = click.option("--json", "as_json", is_flag=True)(command)
    command = click.option("--store", "store_dir", type=click.Path(exists=True),
                           default=".")(command)  # fmt: skip
    return click.argument("file")(command)


@main.command()
@_on_a_file
def outline(file: str, store_dir: str, as_json: bool) -> None:
    """The definitions in a stored FILE, nested (from the store: nothing is parsed)."""
    from rich.tree import Tree as RichTree


    with _open_read(store_dir) as store, _not_stored_is_an_error():
        items = store.outline(file)
    if as_json:
        click.echo(json.dumps([{**row, "depth": depth} for (depth, _), row in
                               zip(items, _tag_rows(t for _, t in items), strict=True)],
                              indent=2))  # fmt: skip
        return
    root = RichTree(printable(file))
    branches = [root]
    for depth, t in items:
        del branches[depth + 1 :]
        label = f"{t.kind.removeprefix('definition.')} [bold]{t.name}[/bold]  " \
                f"[dim]{t.start_point[0] + 1}-{t.end_point[0] + 1}[/dim]"  # fmt: skip
        branches.append(branches[depth].add(label))
    Console().print(root)


@main.command()
@click.argument("name")
@click.option("--kind", default=None, help="Only this kind (e.g. function, class, method).")
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--json", "as_json", is_flag=True)
def defs(name: str, kind: str | None, store_dir: str, as_json: bool) -> None:
    """Where NAME is defined, across the store: path:row:col  kind  name."""

    with _open_read(store_dir) as store:
        _print_tags(store.definitions(name, kind), as_json)


@main.command()
@click.argument("name")
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--json", "as_json", is_flag=True)
def refs(name: str, store_dir: str, as_json: bool) -> None:
    """Where NAME is referenced (calls and uses, as the grammars' tags queries define them)."""

    with _open_read(store_dir) as store:
        _print_tags(store.references(name), as_json)


THEME = {"keyword": "bold magenta", "function": "bold blue", "method": "bold blue",
         "type": "cyan", "constructor": "cyan", "string": "green", "escape": "bold green",
         "comment": "dim italic", "number": "yellow", "constant": "yellow",
         "property": "bright_blue", "operator": "red", "punctuation": "dim", "tag": "magenta",
         "attribute": "bright_magenta", "label": "bright_cyan", "embedded": "white",
         "variable": "default"}  # fmt: skip


@main.command()
@click.argument("file")
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
def highlight(file: str, store_dir: str) -> None:
    """A stored FILE highlighted with its grammar's own highlights query (as a terminal
    shows it: a visible check of the queries). The first pattern that captures a byte
    styles it, as tree-sitter's highlighter does."""
    from rich.text import Text

    from .grammar_queries import query_text
    from .query import Query
    from .search import file_matches

    with _open_read(store_dir) as opened:
        store = _store_of(opened, file)
        try:
            blob, _ = store._located(file)
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0])) from exc
        text = query_text(blob.language, "highlights")
        if text is None:
            raise click.ClickException(f"the {blob.language} grammar ships no highlights query")
        q = Query(blob.language, text)
        source, matches = file_matches(store, q, file)
    styled = bytearray(len(source))  # 1 where a style has been given
    spans: list[tuple[int, int, str]] = []
    for _, _, caps in sorted(matches, key=lambda m: m.pattern_index):
        for name, nodes in caps.items():
            style = THEME.get(name.split(".")[0])
            for n in nodes if style else ():
                if not any(styled[n.start_byte : n.end_byte]):
                    styled[n.start_byte : n.end_byte] = b"\1" * (n.end_byte - n.start_byte)
                    spans.append((n.start_byte, n.end_byte, style))
    out = Text()
    at = 0
    for start, end, style in sorted(spans):
        out.append(source[at:start].decode("utf-8", "replace"))
        out.append(source[start:end].decode("utf-8", "replace"), style=style)
        at = end
    out.append(source[at:].decode("utf-8", "replace"))
    Console(highlight=False, soft_wrap=True).print(out, end="")


def languages_names() -> list[str]:
    from . import languages

    return languages.names()


def _file_version(target: str) -> tuple[str, int | None, str]:
    """FILE[@VERSION][:ROW:COL] -> (file, version or None, position text)."""
    path, _, pos = target.partition(":")
    name, at, version = path.rpartition("@")
    if at and version.isdigit():
        return name, int(version), pos
    return path, None, pos


@main.command()
@click.argument("target")
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
def show(target: str, store_dir: str) -> None:
    """S-expression of a stored FILE (FILE@VERSION: a kept version), or the node at
    FILE[@VERSION]:ROW:COL (1-based) and its ancestors."""

    path, version, pos = _file_version(target)
    with _open_read(store_dir) as store:
        try:
            tree = store.tree(path, version=version)
            if not pos:
                click.echo(str(tree.root_node))
                return
            row_s, _, col_s = pos.partition(":")
            row, col = int(row_s) - 1, int(col_s or 1) - 1
            node = tree.root_node.descendant_for_point_range((row, col), (row, col))
            node = node if node is not None else tree.root_node
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0])) from exc
        except ValueError as exc:
            raise click.ClickException(f"bad position {pos!r}: use FILE:ROW:COL") from exc
        chain = []
        while node is not None:
            chain.append(node)
            node = node.parent
        for depth, n in enumerate(reversed(chain)):
            (sr, sc), (er, ec) = n.start_point, n.end_point
            click.echo(f"{'  ' * depth}{n.type} [{sr + 1}:{sc + 1}-{er + 1}:{ec + 1}]")
        text = chain[0].text.decode("utf-8", "replace")
        click.echo(f"text: {text[:200]!r}")


@main.command()
@_on_a_file
def history(file: str, store_dir: str, as_json: bool) -> None:
    """The kept versions of FILE, newest first (read one with `show FILE@VERSION`)."""

    with _open_read(store_dir) as store, _not_stored_is_an_error():
        rows = [v.__dict__ for v in store.versions(file)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"history of {printable(file)}")
    for col in ("version", "written", "lines", "bytes", "kept as", "delta bytes", "made by"):
        table.add_column(col)
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["made_ms"] / 1000)) \
            if r["made_ms"] else "(indexed)"  # fmt: skip
        how = f"edit {r['edit'][0]}..{r['edit'][1]} -> ..{r['edit'][2]}" if r["edit"] else ""
        table.add_row(str(r["version"]), when, f"{r['lines']:,}", f"{r['size']:,}", r["kind"],
                      f"{r['delta_bytes']:,}", how)  # fmt: skip
    Console().print(table)


@main.command()
@click.option("--store", "store_dir", type=click.Path(exists=True), default=".")
@click.option("--jobs", "-j", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_WAIT
def checkpoint(store_dir: str, jobs: int, as_json: bool, wait: float) -> None:
    """Fold the journal of per-file writes into frozen (zstd-19) segments."""
    from .store import Store

    with Store.open(store_dir, write=True, wait=wait) as store:
        out = store.checkpoint(jobs)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"checkpoint: {out['blobs_frozen']:,} blobs frozen, "
                   f"{out['segments_removed']} segments removed in {out['seconds']} s")  # fmt: skip


@main.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False), default=".")
@click.option("--store", "store_dir", type=click.Path(), default=None,
              help="Store directory (default ROOT/.cstvault; it must exist: run `index` first).")
@click.option("--debounce-ms", type=int, default=50, show_default=True,
              help="Collect events this long before writing them as one batch.")
@click.option("--keep-versions", type=int, default=None,
              help="Versions kept per file (kept in the store; default 16).")
@click.option("--keep-version-bytes", type=int, default=None,
              help="Delta bytes kept per file before the oldest versions go.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per batch.")
@_WAIT
def watch(root: str, store_dir: str | None, debounce_ms: int, keep_versions: int | None,
          keep_version_bytes: int | None, as_json: bool, wait: float) -> None:  # fmt: skip
    """Keep the store of ROOT current as files are saved, created, deleted or renamed
    (one group commit per batch of events); Ctrl-C leaves it consistent."""
    from .store import Store
    from .watch import watch as watch_root

    directory = Path(store_dir) if store_dir else Path(root) / ".cstvault"
    if keep_versions is not None or keep_version_bytes is not None:
        with Store.open(directory, write=True, wait=wait, keep_versions=keep_versions,
                        keep_version_bytes=keep_version_bytes) as store:  # fmt: skip
            store.live_writer()  # records the retention in the store
    totals = {"batches": 0, "updated": 0, "removed": 0}

    def line(b) -> None:
        totals["batches"] += 1
        totals["updated"] += b.updated
        totals["removed"] += b.removed
        if as_json:
            click.echo(json.dumps({"updated": b.updated, "removed": b.removed,
                                   "skipped": b.skipped, "ms": round(b.seconds * 1000, 3)}),
                       nl=True)  # fmt: skip
            sys.stdout.flush()
            return
        stamp = time.strftime("%H:%M:%S")
        console.print(f"{stamp} {b.updated} updated, {b.removed} removed"
                      f"{f', {len(b.skipped)} skipped' if b.skipped else ''} "
                      f"in {b.seconds * 1000:.1f} ms")  # fmt: skip
        for rel, reason in b.skipped[:SHOW_SKIPPED]:
            console.print(f"  skipped {printable(rel)}: {reason}", style="dim")

    def ready() -> None:
        if not as_json:
            console.print(f"watching {root} (Ctrl-C to stop)")

    watch_root(root, directory, debounce_ms=debounce_ms, on_batch=line, wait=wait, ready=ready)
    if not as_json:
        console.print(f"stopped: {totals['batches']} batches, {totals['updated']} updated, "
                      f"{totals['removed']} removed; the store is committed")  # fmt: skip


def _print_verify(r: dict) -> None:
    out = Console()
    table = Table(title="cstvault verify", show_header=False)
    for key in ("files", "ok", "mismatched", "lines", "nodes", "source_bytes", "record_bytes"):
        table.add_row(key, f"{r[key]:,}")
    table.add_row("skipped", f"{len(r['skipped']):,} {r['skipped_by_reason'] or ''}")
    table.add_row("seconds", f"{r['seconds']}")
    if r.get("shards") is not None:
        table.add_row("shards", f"{len(r['shards'])}, with mismatches: "
                                f"{', '.join(r['shards_with_mismatches']) or 'none'}")
    if r["source_bytes"]:
        table.add_row("record bytes / line", f"{r['record_bytes'] / max(r['lines'], 1):.2f}")
    out.print(table)
    for m in r["mismatches"]:
        out.print(
            f"[red]MISMATCH[/red] {printable(str(m['path']))} node {m['node']} {m['attribute']}: "
            f"expected {m['expected']!r}, got {m['got']!r}"
        )
    verdict = "[green]all trees round-trip[/green]" if not r["mismatched"] else "[red]FAILED[/red]"
    out.print(verdict)


@main.group()
def bench() -> None:
    """Benchmarks (JSON output with --json)."""


def _register_bench() -> None:
    from .bench import cli as bench_cli

    bench_cli.register(bench)


_register_bench()


if __name__ == "__main__":
    main()


