"""The manifest of a sharded store (`shards.json`): which shard stores it has, which paths
each one holds, and what each held when it was last built (checked at open).

A sharded store is a directory holding the manifest and one complete store per shard
(`shard-000/`, ...). Shards hold contiguous ranges of root-relative paths in byte order:
shard k holds the paths p with `first[k] <= p < first[k + 1]` (`first[0]` is ""), so a
path's shard is one bisection, and a listing of all files is the shards' listings in turn.
The manifest is written once every shard is complete and checked (a temporary file,
fsynced, renamed over the old one): readers see the old shards or the new, never a mix.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from .. import languages
from ..checksum import crc32c
from ..codec.bytecode import FORMAT_VERSION
from ..store.catalog import SCHEMA_VERSION

MANIFEST = "shards.json"
MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A sharded store's manifest is missing, damaged, from another version of cstvault,
    or names a shard that is missing or not the one it describes."""


@dataclass(frozen=True)
class Shard:
    """One shard as the manifest records it."""

    name: str  # its directory, inside the sharded store
    first: str  # the smallest path it may hold ("" for the first shard)
    files: int
    lines: int
    blobs: int
    digest: int  # its catalog's files digest (meta `files_digest`) when it was built


@dataclass
class Manifest:
    root: str  # the working tree the paths are relative to
    shards: list[Shard]
    shard_bytes: int  # the bound on a shard's source bytes it was cut with
    record_format: int = FORMAT_VERSION
    schema_version: str = SCHEMA_VERSION
    grammars: dict[str, str] = field(default_factory=dict)

    def shard_of(self, path: str) -> int:
        """Index of the shard whose range holds `path`."""
        return shard_of(self.firsts, path)

    @cached_property
    def firsts(self) -> list[str]:
        return [s.first for s in self.shards]

    @property
    def lines(self) -> int:
        return sum(s.lines for s in self.shards)

    def to_json(self) -> str:
        body = {"format": MANIFEST_FORMAT, **asdict(self)}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return json.dumps({**body, "check": crc32c(text.encode())}, indent=1, sort_keys=True)


def shard_of(firsts: list[str], path: str) -> int:
    """Index of the range (ascending first paths, the first "") that holds `path`."""
    return max(bisect.bisect_right(firsts, path) - 1, 0)


def is_sharded(directory: str | os.PathLike[str]) -> bool:
    return (Path(directory) / MANIFEST).is_file()


def read(directory: str | os.PathLike[str]) -> Manifest:
    """The manifest of the sharded store at `directory` (ManifestError when it is damaged
    or was written by a cstvault whose formats this one does not read)."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
        check = data.pop("check")
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ManifestError(f"{path}: not a readable manifest: {exc}") from exc
    if check != crc32c(text.encode()):
        raise ManifestError(f"{path}: damaged (CRC32C mismatch)")
    if data.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: manifest format {data.get('format')}, this "
                            f"cstvault reads format {MANIFEST_FORMAT}: re-index with this "
                            "version")  # fmt: skip
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: its shards have catalog schema "
                            f"{data.get('schema_version')}, this cstvault reads "
                            f"{SCHEMA_VERSION}: re-index with this version")  # fmt: skip
    if int(data.get("record_format", 0)) > FORMAT_VERSION:
        raise ManifestError(f"{path}: record format {data['record_format']} is newer than "
                            f"this cstvault's ({FORMAT_VERSION}): upgrade cstvault")  # fmt: skip
    try:
        shards = [Shard(**s) for s in data["shards"]]
        manifest = Manifest(data["root"], shards, int(data["shard_bytes"]),
                            int(data["record_format"]), data["schema_version"],
                            dict(data["grammars"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: malformed: {exc}") from exc
    firsts = [s.first for s in shards]
    if not shards or firsts[0] != "" or firsts != sorted(set(firsts)):
        raise ManifestError(f"{path}: malformed: shard ranges out of order")
    return manifest


def write(directory: str | os.PathLike[str], manifest: Manifest) -> None:
    """Replace the manifest atomically (fsynced before and after the rename)."""
    d = Path(directory)
    tmp = d / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / MANIFEST)
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def grammar_identities() -> dict[str, str]:
    return {name: languages.identity(name) for name in languages.names()}
