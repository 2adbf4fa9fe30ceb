"""cstvault: lossless, compact, navigable concrete syntax trees for whole codebases."""

from __future__ import annotations

import os

from . import languages
from .cache import CacheConfig
from .codec import CorruptRecord, EncodeError, decode_raw
from .codec import encode as encode_columns
from .extract import parse_extract
from .query import Capture, Query, QueryCursor, QueryError
from .store import Store, StoreLocked
from .tree import Node, Point, Range, Tree, TreeCursor

__version__ = "0.1.0"

__all__ = [
    "CacheConfig",
    "Capture",
    "CorruptRecord",
    "EncodeError",
    "Node",
    "Point",
    "Query",
    "QueryCursor",
    "QueryError",
    "Range",
    "Store",
    "StoreLocked",
    "Tree",
    "TreeCursor",
    "encode",
    "load",
    "open",
    "parse",
]


def encode(source: bytes, language: str) -> bytes:
    """Parse `source` with tree-sitter and return its tree as a record."""
    return encode_columns(parse_extract(source, language), source)


def load(record: bytes | memoryview, source: bytes | memoryview) -> Tree:
    """A navigable `Tree` from a record and the source it was made from."""
    return Tree.from_decoded(decode_raw(record), source)


def parse(source: bytes, language: str) -> Tree:
    """Parse, encode and decode: a `Tree` exactly as the store would serve it."""
    return load(encode(source, language), source)


def open(  # noqa: A001 - the documented entry point
    path: str | os.PathLike[str], config: CacheConfig | None = None, *,
    write: bool = False, wait: float = 0.0, timeout: float | None = None,
    durability: str = "commit",
    batch_entries: int = 64, batch_ms: float = 20.0, keep_versions: int | None = None,
    keep_version_bytes: int | None = None,
) -> Store:  # fmt: skip
    """Open a store (a store directory, or a root holding `.cstvault`) with a cache budget;
    `write=True` takes the store's writer lock (waiting up to `wait` seconds — `timeout` is
    the same — for another writer, else `StoreLocked`) and allows per-file writes
    (`Store.update`, `remove`, `apply_edit`; `durability`, `batch_*`, `keep_versions`: see
    `Store.open`). A sharded store (`cstvault index --shards`) opens as a
    `shards.ShardedStore`, for reading: the same read API over all its shards."""
    if timeout is not None:
        wait = timeout
    from .shards import find

    if find(path) is not None:
        if write:
            from .store import ShardedStoreError

            raise ShardedStoreError(f"{path} is a sharded store: per-file writes are not "
                                    "supported on it (re-run `cstvault index` to bring it up "
                                    "to date)")  # fmt: skip
        from .shards import ShardedStore

        return ShardedStore.open(path, config)  # type: ignore[return-value]
    return Store.open(path, config, write=write, wait=wait, durability=durability,
                      batch_entries=batch_entries, batch_ms=batch_ms,
                      keep_versions=keep_versions,
                      keep_version_bytes=keep_version_bytes)  # fmt: skip


def detect_language(path: str) -> str | None:
    return languages.detect(path)
