"""`cstvault watch`: keep a store current as files change (watchfiles, batched).

Each batch of filesystem events (saves, creations, deletions, renames, a branch switch's
thousands of changes) becomes per-file writes in one group commit: durable and visible to
readers when the batch's line is printed. Ctrl-C commits what is pending and closes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import languages
from .live import FileError, FileVanished
from .store import Store
from .walk import Ignored, walk_files

DEBOUNCE_MS = 50


@dataclass
class Batch:
    """What one batch of events did."""

    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0  # from the batch's arrival to its commit


def apply_changes(store: Store, root: Path, paths: set[str], ignored: Ignored) -> Batch:
    """Write one batch of changed paths (absolute) to the store, then commit it."""
    t0 = time.perf_counter()
    out = Batch()
    paths = set(paths)
    for path in list(paths):  # a new directory: files made in it before it was watched
        if os.path.isdir(path) and not ignored(path):
            paths.update(p for p, _, _ in walk_files([path]))
    for path in sorted(paths):
        if os.path.basename(path) == ".gitignore":
            ignored.forget()
        if languages.detect(path) is None or ignored(path):
            continue
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        try:
            if os.path.isfile(path):
                before = store.catalog.file_version(rel)
                changed = store.update(rel) != before
                out.updated += changed
                out.unchanged += not changed
                continue
            raise FileVanished(rel)
        except FileVanished:
            if store.catalog.file_version(rel):
                store.remove(rel)
                out.removed += 1
        except FileError as exc:
            out.skipped.append((rel, str(exc)))
    store.sync()
    out.seconds = time.perf_counter() - t0
    return out


def watch(root: str | os.PathLike[str], store_dir: str | os.PathLike[str] | None = None, *,
          debounce_ms: int = DEBOUNCE_MS, on_batch: Callable[[Batch], None] | None = None,
          stop_event=None, wait: float = 0.0,
          ready: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Watch `root` until Ctrl-C (or `stop_event` is set), writing each batch of changes."""
    from watchfiles import watch as watch_files

    root = Path(root).resolve()
    directory = Path(store_dir) if store_dir else root / ".cstvault"
    ignored = Ignored(root)
    with Store.open(directory, write=True, wait=wait, durability="batch",
                    batch_entries=1 << 30, batch_ms=1e12) as store:  # fmt: skip
        if ready:
            ready()
        for changes in watch_files(root, debounce=debounce_ms, step=min(debounce_ms, 50),
                                   stop_event=stop_event, yield_on_timeout=False,
                                   raise_interrupt=False):  # fmt: skip
            batch = apply_changes(store, root, {p for _, p in changes}, ignored)
            if on_batch and (batch.updated or batch.removed or batch.skipped):
                on_batch(batch)
