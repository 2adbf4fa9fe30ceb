"""Index a source tree into a store: walk (gitignore), parse + encode + compress in worker
processes, append frames to segments, and commit the catalog in batches.

Commit protocol: a batch's frames are written and fsynced before the catalog transaction
that references them; a crash at any instant loses at most the uncommitted batch, whose
frames are unreferenced bytes that `gc` reclaims. Re-running `index` resumes: files whose
size and mtime match the catalog are not read again.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from .codec import EncodeError, encode
from .extract import parse_extract
from .store import Store
from .symbols import symbol_texts
from .verify import check_source
from .walk import iter_files

ZSTD_LEVEL = 19
BATCH_FILES = 512
BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class Encoded:
    path: str
    language: str
    size: int
    mtime_ns: int
    digest: bytes = b""
    lines: int = 0
    nodes: int = 0
    tree: bytes = b""
    source: bytes = b""
    symbols: set[bytes] = field(default_factory=set)
    skipped: str = ""


@dataclass
class IndexReport:
    files: int = 0
    unchanged: int = 0
    new_blobs: int = 0
    deduplicated: int = 0
    removed: int = 0
    lines: int = 0
    nodes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


_CCTX: zstandard.ZstdCompressor | None = None


def count_lines(source: bytes) -> int:
    return source.count(b"\n") + (1 if source and not source.endswith(b"\n") else 0)


def encode_file(task: tuple[str, str, str]) -> Encoded:
    """Worker: read, check, parse, encode and compress one file."""
    global _CCTX
    root, rel, language = task
    path = os.path.join(root, rel)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        return Encoded(rel, language, 0, 0, skipped=f"unreadable: {exc.strerror}")
    out = Encoded(rel, language, len(source), st.st_mtime_ns)
    reason = check_source(source)
    if reason:
        out.skipped = reason
        return out
    try:
        cols = parse_extract(source, language)
        record = encode(cols, source)
    except (EncodeError, ValueError, RuntimeError) as exc:
        out.skipped = f"unencodable: {exc}"
        return out
    if _CCTX is None:
        _CCTX = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    out.digest = hashlib.sha256(language.encode() + b"\0" + source).digest()
    out.lines = count_lines(source)
    out.nodes = len(cols)
    out.tree = _CCTX.compress(record)
    out.source = _CCTX.compress(source)
    out.symbols = symbol_texts(cols, source)
    return out


class DiskQuotaExceeded(RuntimeError):
    """Writing would take the frozen tier (segment files) past its disk quota."""


def index(
    root: str | os.PathLike[str],
    store_dir: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    batch_files: int = BATCH_FILES,
    on_commit: Callable[[list[str]], None] | None = None,
    disk_quota_mb: float | None = None,
) -> IndexReport:
    """Index every supported file under `root` into the store (created if missing).

    `on_commit` is called with the paths of each batch once its transaction has committed.
    With `disk_quota_mb`, a batch that would take the segment files past the quota raises
    DiskQuotaExceeded before anything of it is written (earlier batches stay committed).
    """
    t0 = time.perf_counter()
    root = Path(root).resolve()
    store = Store.create(Path(store_dir) if store_dir else root / ".cstvault")
    report = IndexReport()
    try:
        tasks: list[tuple[str, str, str]] = []
        present: set[str] = set()
        for path, language in iter_files([root]):
            rel = path.relative_to(root).as_posix()
            present.add(rel)
            known = store.catalog.file_stat(rel)
            if known is not None:
                try:
                    st = path.stat()
                except OSError:
                    continue
                if known == (st.st_size, st.st_mtime_ns):
                    report.unchanged += 1
                    continue
            tasks.append((str(root), rel, language))
        total = len(tasks)
        store.catalog.begin()
        store.catalog.set_meta("root", str(root))
        report.removed = store.catalog.remove_missing(present)
        store.catalog.commit()
        batch = _Batch(store, report, batch_files, on_commit, disk_quota_mb)
        for done, enc in enumerate(_run(tasks, jobs), 1):
            batch.add(enc)
            if progress:
                progress(done, total, enc.path)
        batch.flush()
    finally:
        store.close()
    report.seconds = time.perf_counter() - t0
    return report


def _run(tasks: list[tuple[str, str, str]], jobs: int) -> Iterator[Encoded]:
    if jobs <= 1:
        yield from map(encode_file, tasks)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(encode_file, tasks, chunksize=8)


class _Batch:
    """Frames appended as they come; catalog rows committed after the frames are durable."""

    def __init__(self, store: Store, report: IndexReport, limit: int,
                 on_commit: Callable[[list[str]], None] | None,
                 quota_mb: float | None):  # fmt: skip
        self.store = store
        self.report = report
        self.limit = limit
        self.on_commit = on_commit
        self.quota = None if quota_mb is None else int(quota_mb * 1024 * 1024)
        self.disk = store.segment_bytes() if quota_mb is not None else 0
        self.rows: list[tuple[Encoded, tuple, tuple] | tuple[Encoded, int]] = []
        self.pending: dict[bytes, tuple[tuple, tuple]] = {}
        self.bytes = 0

    def add(self, enc: Encoded) -> None:
        cat = self.store.catalog
        if enc.skipped:
            self.rows.append((enc, -1))
        else:
            blob = cat.blob_id(enc.digest)
            if blob is not None:
                self.rows.append((enc, blob))
            elif enc.digest in self.pending:
                self.rows.append((enc, *self.pending[enc.digest]))
            else:
                need = len(enc.tree) + len(enc.source)
                if self.quota is not None and self.disk + need > self.quota:
                    self.flush()
                    raise DiskQuotaExceeded(
                        f"disk quota of {self.quota / 2**20:.1f} MiB for the frozen tier would be "
                        f"exceeded by {enc.path} ({self.disk + need:,} bytes needed); "
                        "raise --disk-quota-mb or free space with `cstvault gc`"
                    )
                self.disk += need
                writer = self.store.writer()
                tree = writer.append(enc.tree)
                src = writer.append(enc.source)
                self.pending[enc.digest] = (tree, src)
                self.rows.append((enc, tree, src))
                self.bytes += len(enc.tree) + len(enc.source)
        if len(self.rows) >= self.limit or self.bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.store.writer().sync()  # frames durable before the rows that point at them
        cat = self.store.catalog
        rep = self.report
        cat.begin()
        made: dict[bytes, int] = {}
        symbols: dict[int, set[bytes]] = {}
        for row in self.rows:
            enc = row[0]
            if enc.skipped:
                cat.put_skipped(enc.path, enc.skipped)
                key = enc.skipped.split(":", 1)[0]
                rep.skipped[key] = rep.skipped.get(key, 0) + 1
                continue
            if len(row) == 2:
                blob = row[1]
                rep.deduplicated += 1
            elif enc.digest in made:
                blob = made[enc.digest]
                rep.deduplicated += 1
            else:
                blob = cat.add_blob(enc.digest, enc.language, enc.size, enc.lines, enc.nodes,
                                    row[1], row[2])  # fmt: skip
                made[enc.digest] = blob
                symbols[blob] = enc.symbols
                rep.new_blobs += 1
            cat.put_file(enc.path, blob, enc.language, enc.size, enc.mtime_ns)
            rep.files += 1
            rep.lines += enc.lines
            rep.nodes += enc.nodes
        cat.add_symbols(symbols)
        cat.commit()
        if self.on_commit:
            self.on_commit([row[0].path for row in self.rows if not row[0].skipped])
        self.rows = []
        self.pending = {}
        self.bytes = 0
