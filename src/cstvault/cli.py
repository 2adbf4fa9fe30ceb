"""The `cstvault` command line."""

from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import verify as verify_mod
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


@click.group()
@click.version_option(package_name="cstvault")
def main() -> None:
    """Lossless, compact, navigable concrete syntax trees for whole codebases."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--max-mismatches", default=20, show_default=True, help="Mismatches to report.")
def verify(paths: tuple[str, ...], as_json: bool, max_mismatches: int) -> None:
    """Round-trip every supported file under PATHS and compare with tree-sitter node by node."""
    files = list(iter_files(paths))
    report = verify_mod.Report(max_mismatches=max_mismatches)
    t0 = time.perf_counter()
    with _progress(console.is_terminal and not as_json) as bar:
        task = bar.add_task("verify", total=len(files), current="")
        for path, language in files:
            bar.update(task, current=str(path)[-60:])
            try:
                source = path.read_bytes()
            except OSError as exc:
                report.skipped.append({"path": str(path), "reason": f"unreadable: {exc}"})
            else:
                verify_mod.verify_source(str(path), source, language, report)
            bar.advance(task)
    result = report.as_dict()
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_verify(result)
    sys.exit(1 if report.mismatched else 0)


def _print_verify(r: dict) -> None:
    out = Console()
    table = Table(title="cstvault verify", show_header=False)
    for key in ("files", "ok", "mismatched", "lines", "nodes", "source_bytes", "record_bytes"):
        table.add_row(key, f"{r[key]:,}")
    table.add_row("skipped", f"{len(r['skipped']):,} {r['skipped_by_reason'] or ''}")
    table.add_row("seconds", f"{r['seconds']}")
    if r["source_bytes"]:
        table.add_row("record bytes / line", f"{r['record_bytes'] / max(r['lines'], 1):.2f}")
    out.print(table)
    for m in r["mismatches"]:
        out.print(
            f"[red]MISMATCH[/red] {m['path']} node {m['node']} {m['attribute']}: "
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


