"""The SQLite catalog (WAL): files, content blobs and where their frames live, store metadata.

It is read on demand (no Python object per file at open) and inspectable with `sqlite3`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import zstandard

from .. import faults, languages
from ..checksum import crc32c
from ..codec.bytecode import FORMAT_VERSION
from ..codec.errors import CorruptRecord
from . import packs, symtab
from .journal import JOURNAL_BASE

SCHEMA_VERSION = "8"
# a file's path from files f JOIN dirs d
PATH = "CASE d.path WHEN '' THEN CAST(f.name AS TEXT) ELSE d.path || '/' || f.name END"
FILE = "files f JOIN dirs d ON d.id = f.dir"
BY_PATH = "d.path = ? AND f.name = ?"


def db_text(text: str) -> str | bytes:
    """A path as the catalog keeps it: text when it is valid UTF-8, else its raw bytes (a
    BLOB; file names are bytes on POSIX, and Python spells undecodable ones with surrogate
    escapes). Read back, both come out as the same str (`text_factory` below)."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def split(path: str) -> tuple[str | bytes, str | bytes]:
    """(directory, name) of a '/'-separated relative path, as the catalog keys them."""
    head, _, tail = path.rpartition("/")
    return db_text(head), db_text(tail)


def row_check(path: str, blob: int, size: int, mtime_ns: int) -> int:
    """CRC32C binding a file row's path to its blob, size and mtime (signed, as stored):
    SQLite keeps no checksums, and a damaged `files` row would otherwise answer with
    another file's tree."""
    return signed32(crc32c(path.encode("utf-8", "surrogateescape")
                                  + _ROW.pack(blob, size, mtime_ns)))  # fmt: skip


_ROW = struct.Struct("<qqq")


_DIGEST = "SELECT value FROM meta WHERE key = 'files_digest'"
IN_CHUNK = 500  # values bound in one `IN (...)`


DEF_GROUP = 16  # blobs' definitions a group holds (zstd-19 over 16: 0.28 B/line, alone 0.46)
DEF_GROUPS = """CREATE TABLE IF NOT EXISTS definition_groups(  -- definitions, DEF_GROUP blobs a row
    last INTEGER PRIMARY KEY,                -- the group's largest blob id
    data BLOB NOT NULL                       -- packs.py layout, zstd-19 with its checksum
)"""
_DEF_ZSTD = zstandard.ZstdCompressor(level=19, write_checksum=True)
_DEF_UNZSTD = zstandard.ZstdDecompressor()


def _pack_group(rows: list[tuple[int, bytes]]) -> bytes:
    return packs.build(rows, _DEF_ZSTD.compress)


def _unpack_group(data: bytes) -> dict[int, bytes]:
    """blob id -> packed definitions of a definition group (CorruptRecord if damaged)."""
    ids, offsets, start = packs.parse(data)
    try:
        text = _DEF_UNZSTD.decompress(data[start:])
    except zstandard.ZstdError as exc:
        raise CorruptRecord(f"definition group unreadable: {exc}") from exc
    if len(text) != offsets[-1]:
        raise CorruptRecord("definition group: text length does not match its table")
    return {b: text[offsets[k] : offsets[k + 1]] for k, b in enumerate(ids)}


def _in_chunks(values: list) -> Iterator[tuple[list, list, str]]:
    """`values` in chunks of IN_CHUNK: each chunk, its parameters and what goes inside its
    `IN (...)`. Integers are bound as one JSON array read by `json_each`, anything else as
    placeholders repeating the chunk's last value up to a power of two (at least 8): so a
    statement's text takes one or a few forms. Python's statement cache (per connection)
    would otherwise keep a prepared statement for every length met, up to ~100 KB each,
    and MBs across a sharded store's connections."""
    for k in range(0, len(values), IN_CHUNK):
        chunk = values[k : k + IN_CHUNK]
        if isinstance(chunk[0], int):
            yield chunk, ["[" + ",".join(map(str, chunk)) + "]"], _JSON_IN
            continue
        n = min(IN_CHUNK, max(8, 1 << (len(chunk) - 1).bit_length()))
        yield chunk, chunk + [chunk[-1]] * (n - len(chunk)), ",".join("?" * n)


_JSON_IN = "SELECT value FROM json_each(?)"


def _dictionary(did: int, stored: bytes) -> bytes:
    data = stored[:-4]
    if len(stored) < 4 or struct.pack("<I", crc32c(data)) != stored[-4:]:
        raise CorruptRecord(f"zstd dictionary {did} is damaged (CRC32C mismatch)")
    return data


def signed32(value: int) -> int:
    """A 32-bit value as SQLite stores it in 4 bytes (its integers are signed)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _checked(path: str, blob: int, size: int, mtime_ns: int, check: int) -> None:
    if row_check(path, blob, size, mtime_ns) != check:
        raise CorruptRecord(f"{path}: its catalog row is damaged (row check mismatch); "
                            "re-run `cstvault index` to repair it")  # fmt: skip


def printable(path: str) -> str:
    """A path safe to print: undecodable bytes shown as backslash escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# the columns a BlobRow is made of, in its order
BLOB_COLUMNS = ("id, language, size, lines, nodes, tree_seg, tree_off, tree_len, tree_crc, "
                "src_seg, src_off, src_len, src_crc, tree_dict, src_dict")  # fmt: skip
_B_COLUMNS = ", ".join("b." + c.strip() for c in BLOB_COLUMNS.split(","))
PAGE_SIZE = 8192
READ_CACHE_KIB = 256  # SQLite page cache of a reading connection (default: 2000 KiB)
# prepared statements a reading connection keeps (Python's default: 128, tens of KB each;
# a sharded store has a connection per shard)
READ_STATEMENTS = 16
WRITE_CACHE_KIB = 4096  # a writer's: small, so the indexer's RSS stays flat (OS page cache)
DIR_CACHE = 4096  # directory ids a connection remembers


class StoreVersionError(RuntimeError):
    """The store was written by another catalog schema version."""


class IncompleteStore(RuntimeError):
    """The store's creation was interrupted before its catalog was complete."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY AUTOINCREMENT,     -- never reused: postings may name dropped blobs
    hash BLOB UNIQUE NOT NULL,            -- sha256 of language and source, first 16 bytes
    language TEXT NOT NULL,
    size INTEGER NOT NULL, lines INTEGER NOT NULL, nodes INTEGER NOT NULL,
    tree_seg INTEGER NOT NULL, tree_off INTEGER NOT NULL, tree_len INTEGER NOT NULL,
    tree_crc INTEGER NOT NULL,
    src_seg INTEGER NOT NULL, src_off INTEGER NOT NULL, src_len INTEGER NOT NULL,
    src_crc INTEGER NOT NULL,
    tree_dict INTEGER NOT NULL DEFAULT 0,    -- zstd dictionary of each frame (0: none)
    src_dict INTEGER NOT NULL DEFAULT 0,
    level INTEGER NOT NULL DEFAULT 19,       -- zstd level of both frames (< 19: not frozen yet)
    files_check INTEGER NOT NULL DEFAULT 0   -- sum of the row checks of the files naming it
);
CREATE TABLE IF NOT EXISTS dictionaries(     -- per-language trained zstd dictionaries
    id INTEGER PRIMARY KEY,
    language TEXT NOT NULL, kind TEXT NOT NULL,  -- kind: tree | source
    data BLOB NOT NULL,
    UNIQUE(language, kind)
);
CREATE TABLE IF NOT EXISTS dirs(             -- directories of stored files ('' is the root)
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL
);
CREATE TABLE IF NOT EXISTS files(            -- path = dirs.path + '/' + name, '/'-separated
    dir INTEGER NOT NULL REFERENCES dirs(id),
    name TEXT NOT NULL,
    blob INTEGER NOT NULL REFERENCES blobs(id),
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    "check" INTEGER NOT NULL,                -- row_check(path, blob, size, mtime_ns)
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_blob ON files(blob);
CREATE TABLE IF NOT EXISTS skipped(path TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grammars(         -- each language's kind tables (languages.to_bytes)
    language TEXT PRIMARY KEY,
    version TEXT NOT NULL,                   -- of the grammar wheel they came from
    tables BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS definitions(     -- each blob's definitions (tags.pack_definitions)
    blob INTEGER PRIMARY KEY REFERENCES blobs(id),
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_kinds(       -- each blob's named node kinds (kinds.kind_bits)
    blob INTEGER PRIMARY KEY REFERENCES blobs(id),
    bits BLOB NOT NULL
);
""" + symtab.SCHEMA


def _meta_rows() -> str:
    """SQL inserting a new catalog's version rows (part of its creation transaction)."""
    rows = {"schema_version": SCHEMA_VERSION, "format_version": str(FORMAT_VERSION),
            **{f"grammar:{n}": languages.identity(n) for n in languages.names()}}  # fmt: skip

    def q(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    return "".join(f"INSERT INTO meta(key, value) VALUES ({q(k)}, {q(v)});"
                   for k, v in rows.items())  # fmt: skip


class BlobRow(NamedTuple):  # a tuple: made on every lookup, a frozen dataclass costs 3x
    id: int
    language: str
    size: int
    lines: int
    nodes: int
    tree: tuple[int, int, int, int]  # segment, offset, length, crc32c of the frame
    src: tuple[int, int, int, int]
    tree_dict: int = 0
    src_dict: int = 0


@dataclass(frozen=True)
class FileRow:
    path: str
    language: str
    size: int
    mtime_ns: int
    version: int
    lines: int
    nodes: int


class Catalog:
    def __init__(self, path: Path, *, create: bool = False):
        if not create and not path.exists():
            raise FileNotFoundError(f"no cstvault store at {path.parent}")
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  cached_statements=128 if create else READ_STATEMENTS)
        self.db.text_factory = _decode  # names stored as BLOBs come back through `||`
        if create:  # only takes effect on a new file: symbol blocks (~2 KB) fill 8 KiB pages
            self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._sync = "FULL"
        # readers: B-tree interior pages stay cached, leaves come from the OS; writers keep
        # more (files and blobs are inserted by path and digest: random keys)
        self.cache_kib(WRITE_CACHE_KIB if create else READ_CACHE_KIB)
        has_meta = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'meta'"
        ).fetchone() is not None  # fmt: skip
        empty = not has_meta and self.db.execute(
            "SELECT count(*) FROM sqlite_master").fetchone()[0] == 0  # fmt: skip
        if create and empty:  # one transaction: a kill leaves no table or them all
            faults.point("create.catalog")
            self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + _meta_rows() + "COMMIT;")
            faults.point("create.done")
        elif empty:
            self.db.close()
            raise IncompleteStore(
                f"store at {path.parent} is incomplete (its creation was interrupted): "
                "re-run `cstvault index` to create it"
            )
        version = self._schema_version()
        if version != SCHEMA_VERSION:
            self.db.close()
            raise StoreVersionError(
                f"store at {path.parent} has catalog schema {version or 'unknown'}, this cstvault "
                f"reads {SCHEMA_VERSION}: index into a new store (or delete it and re-index)"
            )
        self.symbols = symtab.SymbolTable(self.db, self._meta_value, self.set_meta)
        self._dirs: dict[str | bytes, int] = {}
        self.before_write: Callable[[], None] | None = None
        self.wrote = False  # a write transaction was begun through this connection
        self._any_skipped = self.db.execute("SELECT 1 FROM skipped LIMIT 1").fetchone() is not None
        self._groups_table = False  # definition_groups known to exist
        self._kinds_table = False  # known to exist (a store made before kinds were kept lacks it)
        self._versions_table = False  # known to exist (made by the first per-file write)
        self._grammars: set[str] | None = None  # languages with stored kind tables
        if create:  # what this cstvault writes (only what differs: an unchanged store stays so)
            want = {"format_version": str(FORMAT_VERSION),
                    **{f"grammar:{n}": languages.identity(n) for n in languages.names()}}
            have = self.meta()
            for key, value in want.items():
                if have.get(key) != value:
                    self.set_meta(key, value)

    def _schema_version(self) -> str | None:
        try:
            row = self.db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        return row[0] if row else None

    # metadata
    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _meta_value(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def disk_quota(self) -> int | None:
        """The frozen tier's quota in bytes, as last given to `index` (None: no quota)."""
        value = self._meta_value("disk_quota_bytes")
        return int(value) if value else None

    def cache_kib(self, kib: int) -> None:
        """Bound this connection's SQLite page cache to `kib` KiB."""
        self.db.execute(f"PRAGMA cache_size=-{int(kib)}")

    def shrink(self) -> None:
        """Give back the memory SQLite holds for this connection (its page cache)."""
        self.db.execute("PRAGMA shrink_memory")

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def next_segment(self) -> int:
        row = self.db.execute(
            "SELECT max(m) FROM (SELECT max(tree_seg) AS m FROM blobs WHERE tree_seg < ? "
            "UNION ALL SELECT max(src_seg) FROM blobs WHERE src_seg < ?)",
            (JOURNAL_BASE, JOURNAL_BASE),
        ).fetchone()
        return (row[0] or 0) + 1

    # lookups
    def blob_id(self, digest: bytes) -> int | None:
        row = self.db.execute("SELECT id FROM blobs WHERE hash = ?", (digest,)).fetchone()
        return row[0] if row else None

    def blob_ids(self, digests: list[bytes]) -> dict[bytes, int]:
        """The stored blobs among these content keys, in one statement a chunk."""
        return self._pairs_in("SELECT hash, id FROM blobs WHERE hash IN ({})", digests)

    def _delete_in(self, sql: str, values: list) -> None:
        for _, params, marks in _in_chunks(values):
            self.db.execute(sql.format(marks), params)

    def _pairs_in(self, sql: str, values: list) -> dict:
        """The (key, value) rows of `sql` (its IN list `{}`) over `values`, IN_CHUNK at a
        time."""
        out: dict = {}
        for _, params, marks in _in_chunks(values):
            out.update(self.db.execute(sql.format(marks), params))
        return out

    def has_files(self) -> bool:
        return self.db.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None

    def blob_for(self, path: str) -> tuple[BlobRow, tuple[int, int]] | None:
        """The blob of a stored file, and the file's (size, mtime_ns) when indexed."""
        found = self.current(path)
        return None if found is None else (found[0], found[1])

    def current(self, path: str) -> tuple[BlobRow, tuple[int, int], int, bytes] | None:
        """(blob, (size, mtime_ns), version, content key) of a stored file, in one query (the
        per-file writer's first question)."""
        directory, name = split(path)
        did = self._dir_id(directory)
        if did is None:
            return None
        row = self.db.execute(
            f'SELECT {_B_COLUMNS}, f.size, f.mtime_ns, f."check", f.version, b.hash '
            "FROM files f JOIN blobs b ON b.id = f.blob WHERE f.dir = ? AND f.name = ?",
            (did, name),
        ).fetchone()
        if row is None:
            return None
        _checked(path, row[0], row[15], row[16], row[17])
        return _blob(row), (row[15], row[16]), row[18], row[19]

    def _dir_id(self, directory: str | bytes) -> int | None:
        """A directory's id, remembered (at most DIR_CACHE of them) once looked up."""
        did = self._dirs.get(directory)
        if did is None:
            row = self.db.execute("SELECT id FROM dirs WHERE path = ?", (directory,)).fetchone()
            if row is None:
                return None
            if len(self._dirs) >= DIR_CACHE:
                self._dirs.clear()
            did = self._dirs[directory] = row[0]
        return did

    def blobs(self):
        cur = self.db.execute(
            f"SELECT {BLOB_COLUMNS} FROM blobs ORDER BY id"
        )
        for row in cur:
            yield _blob(row)

    def paths_of_language(self, language: str) -> list[str]:
        """The stored files of one language, in path order (each row checked)."""
        out = []
        for path, *row in self.db.execute(
            f'SELECT {PATH} AS p, f.blob, f.size, f.mtime_ns, f."check" FROM {FILE} '
            "JOIN blobs b ON b.id = f.blob WHERE b.language = ? ORDER BY p",
                (language,)):  # fmt: skip
            _checked(path, *row)
            out.append(path)
        return out

    def paths_of_blob(self, blob: int) -> list[str]:
        return self.paths_of_blobs([blob])

    def files(self):
        # one statement, so one snapshot: the digest is the one these rows were written with
        cur = self.db.execute(
            f"SELECT {PATH} AS p, b.language, f.size, f.mtime_ns, f.version, b.lines, b.nodes, "
            f'f.blob, f."check", ({_DIGEST}) FROM {FILE} JOIN blobs b ON b.id = f.blob '
            "ORDER BY p"
        )
        total = 0
        digest = None
        for row in cur:
            _checked(row[0], row[7], row[2], row[3], row[8])
            total += row[8]
            digest = row[9]
            yield FileRow(*row[:7])
        if digest is None:
            digest = self._meta_value("files_digest")
        if signed32(total) != int(digest or 0):
            raise CorruptRecord("the catalog is damaged: its list of files does not match the "
                                "digest its writers kept; re-index into a new store")

    def counts(self) -> dict[str, int]:
        q = self.db.execute
        files, = q("SELECT count(*) FROM files").fetchone()
        blobs, lines, nodes, size = q(
            "SELECT count(*), coalesce(sum(lines),0), coalesce(sum(nodes),0), "
            "coalesce(sum(size),0) FROM blobs"
        ).fetchone()
        file_lines, = q(
            "SELECT coalesce(sum(b.lines),0) FROM files f JOIN blobs b ON b.id = f.blob"
        ).fetchone()
        tree, src = (q(  # a pack's frame is named by each of its members: counted once
            f"SELECT coalesce(sum({k}_len),0) FROM (SELECT DISTINCT {k}_seg, {k}_off, {k}_len "
            "FROM blobs)").fetchone()[0] for k in ("tree", "src"))  # fmt: skip
        skipped, = q("SELECT count(*) FROM skipped").fetchone()
        dict_bytes, = q("SELECT coalesce(sum(length(data)), 0) FROM dictionaries").fetchone()
        return {"files": files, "blobs": blobs, "lines": file_lines, "unique_lines": lines,
                "nodes": nodes, "source_bytes": size, "tree_frame_bytes": tree,
                "source_frame_bytes": src, "dictionary_bytes": dict_bytes,
                "skipped": skipped}  # fmt: skip

    def skipped(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT CAST(path AS TEXT), reason FROM skipped"))

    # writes (inside the caller's transaction)
    def begin(self, journaled: bool = False) -> None:
        """Start a write transaction; `before_write` (the path index's invalidation) runs
        with the write lock held, before anything changes. `journaled`: the transaction
        applies journal entries already durable, so its COMMIT need not fsync (SQLite's
        `synchronous=NORMAL`; every other transaction commits with FULL)."""
        want = "NORMAL" if journaled else "FULL"
        if self._sync != want:
            self.db.execute(f"PRAGMA synchronous={want}")
            self._sync = want
        self.db.execute("BEGIN IMMEDIATE")
        self._digests: dict[int, int] = {}  # blob (0: all files) -> change of its digest
        self.wrote = True
        if self.before_write is not None:
            try:
                self.before_write()
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def commit(self) -> None:
        self._write_digests()
        self.db.execute("COMMIT")

    def _file_row(self, directory: str | bytes, name: str | bytes, sign: int) -> int | None:
        """Count a files row out (sign -1, before it changes) or in (+1) of the digests;
        returns its blob (None: no such row)."""
        row = self.db.execute(
            'SELECT f.blob, f."check" FROM files f JOIN dirs d ON d.id = f.dir '
            "WHERE d.path = ? AND f.name = ?", (directory, name)).fetchone()  # fmt: skip
        if row is None:
            return None
        for key in (row[0], 0):
            self._digests[key] = self._digests.get(key, 0) + sign * row[1]
        return row[0]

    def _has_versions(self) -> bool:
        if not self._versions_table:
            self._versions_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'versions'").fetchone() is not None
        return self._versions_table

    def _retire(self, path: str, blob: int) -> None:
        """A file's current version is replaced or removed by `index`: a history row that
        stood for it keeps its blob (kind 3, full) so that the version stays readable."""
        if self._has_versions():
            self.db.execute("UPDATE versions SET kind = 3, blob = ? WHERE path = ? AND kind = 0",
                            (blob, db_text(path)))  # fmt: skip

    def remove_file(self, path: str) -> None:
        self._delete_file(path)

    def file_version(self, path: str) -> int:
        row = self.db.execute(f"SELECT f.version FROM {FILE} WHERE {BY_PATH}",
                              split(path)).fetchone()  # fmt: skip
        return int(row[0]) if row else 0

    def blob_row(self, blob: int) -> BlobRow | None:
        row = self.db.execute(f"SELECT {BLOB_COLUMNS} FROM blobs WHERE id = ?", (blob,)).fetchone()
        return _blob(row) if row else None

    def _write_digests(self) -> None:
        digests = getattr(self, "_digests", None)
        if not digests:
            return
        total = digests.pop(0, None)
        if total is not None:
            self.set_meta("files_digest", str(signed32(self.files_digest() + total)))
        for chunk, params, marks in _in_chunks(list(digests)):
            now = dict(self.db.execute(
                f"SELECT id, files_check FROM blobs WHERE id IN ({marks})", params))  # fmt: skip
            self.db.executemany("UPDATE blobs SET files_check = ? WHERE id = ?",
                                [(signed32(now[b] + digests[b]), b) for b in chunk
                                 if b in now])  # fmt: skip
        self._digests = {}

    def files_digest(self) -> int:
        """The sum (mod 2^32) of the files' row checks, as the writers left it: a row
        dropped, added or repeated behind their back changes it."""
        return int(self._meta_value("files_digest") or 0)

    def add_blob(
        self, digest: bytes, language: str, size: int, lines: int, nodes: int,
        tree: tuple[int, int, int, int], src: tuple[int, int, int, int],
        dicts: tuple[int, int] = (0, 0), level: int = 19,
    ) -> int:  # fmt: skip
        cur = self.db.execute(
            "INSERT INTO blobs(hash, language, size, lines, nodes, tree_seg, tree_off, tree_len, "
            "tree_crc, src_seg, src_off, src_len, src_crc, tree_dict, src_dict, level) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (digest, language, size, lines, nodes, *tree, *src, *dicts, level),
        )
        return int(cur.lastrowid)

    def relocate(self, blob: int, tree: tuple[int, int, int, int],
                 src: tuple[int, int, int, int], level: int,
                 dicts: tuple[int, int]) -> None:  # fmt: skip
        """Point a blob at recompressed frames and the dictionaries they were made with."""
        self.db.execute(
            "UPDATE blobs SET tree_seg=?, tree_off=?, tree_len=?, tree_crc=?, src_seg=?, "
            "src_off=?, src_len=?, src_crc=?, level=?, tree_dict=?, src_dict=? WHERE id=?",
            (*tree, *src, level, *dicts, blob),
        )

    def pack_candidates(self, kind: str) -> Iterator[tuple[tuple, int]]:
        """(frame location, blobs naming it) of the frozen tree (`kind` "tree") or source
        ("src") frames that may be packs: named by two blobs or more, or longer than the one
        text they hold could make them (a pack whose other members were dropped)."""
        size = "size" if kind == "src" else "nodes * 16"  # a record: far under 16 B a node
        cur = self.db.execute(
            f"SELECT {kind}_seg, {kind}_off, {kind}_len, {kind}_crc, count(*) FROM blobs "
            f"WHERE level >= 19 GROUP BY {kind}_seg, {kind}_off, {kind}_len, {kind}_crc "
            f"HAVING count(*) >= 2 OR {kind}_len > sum({size}) + 64")  # fmt: skip
        for seg, off, length, crc, n in cur:
            yield (seg, off, length, crc), n

    def blobs_in_frame(self, kind: str, loc: tuple[int, int, int, int]) -> list[BlobRow]:
        """The blobs whose tree ("tree") or source ("src") frame is at `loc`."""
        return [_blob(r) for r in self.db.execute(
            f"SELECT {BLOB_COLUMNS} FROM blobs WHERE {kind}_seg = ? AND {kind}_off = ? "
            f"AND {kind}_len = ? AND {kind}_crc = ? ORDER BY id", loc)]  # fmt: skip

    def blobs_below(self, level: int) -> list[BlobRow]:
        """Blobs whose frames are compressed below `level`, in segment order."""
        return [_blob(r) for r in self.db.execute(
            f"SELECT {BLOB_COLUMNS} FROM blobs WHERE level < ? ORDER BY tree_seg, tree_off",
            (level,))]  # fmt: skip

    def table_bytes(self) -> dict[str, int]:
        """Bytes of pages per table and index (SQLite's dbstat; empty where not compiled in)."""
        try:
            return dict(self.db.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"))  # fmt: skip
        except sqlite3.OperationalError:
            return {}

    def levels(self) -> dict[str, int]:
        """Blobs per zstd level of their frames."""
        return {str(lv): n for lv, n in self.db.execute(
            "SELECT level, count(*) FROM blobs GROUP BY level ORDER BY level")}  # fmt: skip

    # grammar tables
    def put_grammar(self, language: str) -> None:
        """Keep a language's kind tables, so that readers need not load its grammar."""
        if self._grammars is None:
            self._grammars = {r[0] for r in self.db.execute("SELECT language FROM grammars")}
        if language in self._grammars:
            return
        self.db.execute(
            "INSERT OR IGNORE INTO grammars(language, version, tables) VALUES (?, ?, ?)",
            (language, languages.wheel_version(language),
             languages.to_bytes(languages.grammar_tables(language))),
        )  # fmt: skip
        self._grammars = None  # known once committed (a rollback would take it back)

    def grammars(self) -> list[tuple[str, str, bytes]]:
        return self.db.execute("SELECT language, version, tables FROM grammars").fetchall()

    # dictionaries
    # A dictionary is stored with its CRC32C (4 bytes after it): frames are CRC-checked as
    # compressed bytes, so a damaged dictionary would otherwise decompress them into other
    # bytes without an error.
    def dictionaries(self) -> dict[tuple[str, str], tuple[int, bytes]]:
        """(language, kind) -> (id, dictionary bytes), each checked."""
        return {(lang, kind): (did, _dictionary(did, data)) for did, lang, kind, data in
                self.db.execute("SELECT id, language, kind, data FROM dictionaries")}  # fmt: skip

    def dictionary(self, did: int) -> bytes:
        row = self.db.execute("SELECT data FROM dictionaries WHERE id = ?", (did,)).fetchone()
        if row is None:
            raise KeyError(f"zstd dictionary {did} missing from the catalog")
        return _dictionary(did, row[0])

    def add_dictionary(self, language: str, kind: str, data: bytes) -> int:
        cur = self.db.execute(
            "INSERT INTO dictionaries(language, kind, data) VALUES (?, ?, ?)",
            (language, kind, data + struct.pack("<I", crc32c(data))),
        )
        return int(cur.lastrowid)

    def _dir(self, directory: str | bytes) -> int:
        did = self._dir_id(directory)
        if did is None:
            did = int(self.db.execute("INSERT INTO dirs(path) VALUES (?)", (directory,)).lastrowid)
            self._dirs[directory] = did
        return did

    def put_file(self, path: str, blob: int, size: int, mtime_ns: int,
                 version: int | None = None) -> None:  # fmt: skip
        """Store a file row; `version`: its number (per-file writes), else one more than
        before when the blob changed (`index`, which keeps a replaced version that has a
        history row as a full blob: `_retire`)."""
        directory, name = split(path)
        old = self._file_row(directory, name, -1)
        if version is None and old is not None and old != blob:
            self._retire(path, old)
        self.db.execute(
            'INSERT INTO files(dir, name, blob, size, mtime_ns, version, "check") '
            "VALUES (?,?,?,?,?,coalesce(?, 1),?) "
            "ON CONFLICT(dir, name) DO UPDATE SET blob=excluded.blob, size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, version=coalesce(?, files.version + "
            '(files.blob != excluded.blob)), "check"=excluded."check"',
            (self._dir(directory), name, blob, size, mtime_ns, version,
             row_check(path, blob, size, mtime_ns), version),
        )  # fmt: skip
        self._file_row(directory, name, +1)
        if self._any_skipped:
            self.db.execute("DELETE FROM skipped WHERE path = ?", (db_text(path),))

    def _delete_file(self, path: str) -> None:
        directory, name = split(path)
        old = self._file_row(directory, name, -1)
        if old is not None:
            self._retire(path, old)
        self.db.execute(
            "DELETE FROM files WHERE name = ? AND dir = (SELECT id FROM dirs WHERE path = ?)",
            (name, directory),
        )

    def put_skipped(self, path: str, reason: str) -> None:
        self._any_skipped = True
        self.db.execute(
            "INSERT OR REPLACE INTO skipped(path, reason) VALUES (?, ?)", (db_text(path), reason)
        )
        self._delete_file(path)

    # a walk's paths, kept in a temporary table (SQLite's, on disk past its page cache)
    # instead of a set in memory: what `index` compares the stored files with
    def begin_walk(self) -> None:
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS walked(dir, name, chunk INTEGER, "
                        "PRIMARY KEY (dir, name)) WITHOUT ROWID")  # fmt: skip
        self.db.execute("CREATE INDEX IF NOT EXISTS temp.walked_chunk ON walked(chunk)")
        self.db.execute("DELETE FROM temp.walked")

    def add_walked(self, chunk: int, paths: list[str]) -> dict[str, tuple[int, int]]:
        """Record a chunk of walked paths; (size, mtime_ns) of those stored (a damaged row
        is left out: the file is indexed again)."""
        from .. import _native

        self.db.execute("SAVEPOINT walked")  # one transaction of the temp database a chunk
        try:  # (else each row is its own, with its own journal file: 34 us a row)
            self.db.executemany(
                "INSERT OR IGNORE INTO temp.walked(dir, name, chunk) VALUES (?, ?, ?)",
                ((*split(p), chunk) for p in paths))  # fmt: skip
        finally:
            self.db.execute("RELEASE walked")
        return _native.checked_stats(self.db.execute(
            f'SELECT {PATH}, f.size, f.mtime_ns, f.blob, f."check" FROM temp.walked w '
            "JOIN dirs d ON d.path = w.dir JOIN files f ON f.dir = d.id AND f.name = w.name "
            "WHERE w.chunk = ?", (chunk,)))  # fmt: skip

    def missing_from_walk(self, also_skipped: set[str]) -> tuple[list[str], list[str]]:
        """(stored files the walk did not find, skip records of paths it did not find nor
        in `also_skipped`): what `remove_missing` deletes."""
        gone = [p for (p,) in self.db.execute(
            f"SELECT {PATH} FROM {FILE} WHERE NOT EXISTS (SELECT 1 FROM temp.walked w "
            "WHERE w.dir = d.path AND w.name = f.name)")]  # fmt: skip
        found = "SELECT 1 FROM temp.walked WHERE dir = ? AND name = ?"
        stale = [p for p in self.skipped() if p not in also_skipped
                 and self.db.execute(found, split(p)).fetchone() is None]  # fmt: skip
        return gone, stale

    def end_walk(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS temp.walked")

    def remove_missing(self, gone: list[str], stale: list[str]) -> int:
        """Delete the files and skip records `missing_from_walk` found; returns the files
        deleted."""
        for p in gone:
            self._delete_file(p)
        self.db.executemany("DELETE FROM skipped WHERE path = ?", [(db_text(p),) for p in stale])
        return len(gone)

    def _orphans(self) -> str:
        kept = " AND id NOT IN (SELECT blob FROM versions WHERE blob IS NOT NULL)" \
            if self._has_versions() else ""  # fmt: skip
        return f"id NOT IN (SELECT blob FROM files){kept}"

    def has_orphan_blobs(self) -> bool:
        """Whether a blob is named by no file and no kept version (a read, no transaction)."""
        return self.db.execute(f"SELECT 1 FROM blobs WHERE {self._orphans()} LIMIT 1"
                               ).fetchone() is not None  # fmt: skip

    def drop_orphan_blobs(self) -> int:
        cur = self.db.execute(f"DELETE FROM blobs WHERE {self._orphans()}")
        self.db.execute("DELETE FROM definitions WHERE blob NOT IN (SELECT id FROM blobs)")
        if self._has_kinds():
            self.db.execute("DELETE FROM blob_kinds WHERE blob NOT IN (SELECT id FROM blobs)")
        return cur.rowcount

    # symbols (see symtab: pending runs + compacted blocks)
    def add_symbols(self, per_blob: dict[int, set[bytes]]) -> None:
        """The symbols of new blobs, as a pending run of the symbol table."""
        self.symbols.add(per_blob)

    def add_definitions(self, rows: list[tuple[int, bytes]]) -> None:
        """Keep new blobs' packed definitions (tags.pack_definitions)."""
        self.db.executemany("INSERT OR REPLACE INTO definitions(blob, data) VALUES (?, ?)", rows)

    def add_kinds(self, rows: list[tuple[int, bytes]]) -> None:
        """Keep new blobs' node-kind bitmaps (kinds.kind_bits). A store made before they
        were kept gets the table now; its older blobs have none (never skipped)."""
        if not rows:
            return
        if not self._has_kinds():
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS blob_kinds(blob INTEGER PRIMARY KEY "
                "REFERENCES blobs(id), bits BLOB NOT NULL)")  # fmt: skip
        self.db.executemany("INSERT OR REPLACE INTO blob_kinds(blob, bits) VALUES (?, ?)", rows)

    def _has_kinds(self) -> bool:
        if not self._kinds_table:
            self._kinds_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'blob_kinds'").fetchone() is not None
        return self._kinds_table

    def kinds_of_language(self, language: str) -> dict[str, bytes]:
        """Path -> stored node-kind bitmap of the files of one language that have one (each
        row checked)."""
        if not self._has_kinds():
            return {}
        out = {}
        for path, bits, *row in self.db.execute(
            f'SELECT {PATH} AS p, k.bits, f.blob, f.size, f.mtime_ns, f."check" FROM {FILE} '
            "JOIN blobs b ON b.id = f.blob JOIN blob_kinds k ON k.blob = b.id "
            "WHERE b.language = ?", (language,)):  # fmt: skip
            _checked(path, *row)
            out[path] = bits
        return out

    def definitions_of(self, blobs: list[int]) -> dict[int, bytes]:
        """Packed definitions of these blobs (those that have any): their own rows, else
        their definition group's members."""
        out = self._pairs_in("SELECT blob, data FROM definitions WHERE blob IN ({})", blobs)
        rest = sorted(set(blobs) - out.keys())
        if rest and self._has_def_groups():
            group: tuple[int, dict[int, bytes]] = (-1, {})
            for b in rest:
                if b > group[0]:  # groups hold disjoint ranges of blob ids, keyed by the last
                    row = self.db.execute("SELECT last, data FROM definition_groups WHERE "
                                          "last >= ? ORDER BY last LIMIT 1", (b,)).fetchone()
                    if row is None:
                        break
                    group = (row[0], _unpack_group(row[1]))
                if b in group[1]:
                    out[b] = group[1][b]
        return out

    def _has_def_groups(self) -> bool:
        if not self._groups_table:
            self._groups_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'definition_groups'"
            ).fetchone() is not None  # fmt: skip
        return self._groups_table

    def group_definitions(self, sparse: bool = True, size: int = DEF_GROUP) -> int:
        """Move blobs' definition rows into groups of `size` (one zstd-19 frame each, keyed
        by their last blob id; ids only grow, so groups hold disjoint ranges) and, when
        `sparse`, rewrite each group of which fewer than half the blobs remain with those
        that do. One transaction, only when there is something to do; returns the groups
        written."""
        have = self._has_def_groups()
        last = self.db.execute("SELECT coalesce(max(last), 0) FROM definition_groups"
                               ).fetchone()[0] if have else 0  # fmt: skip
        n, = self.db.execute("SELECT count(*) FROM definitions WHERE blob > ?", (last,)).fetchone()
        thin = []
        if sparse and have:
            for key, data in self.db.execute("SELECT last, data FROM definition_groups"):
                ids = list(packs.parse(data)[0])
                live = self._pairs_in("SELECT id, 1 FROM blobs WHERE id IN ({})", ids)
                if 2 * len(live) < len(ids):
                    thin.append((key, data, live))
        if n < size and not thin:
            return 0
        self.begin()
        self.db.execute(DEF_GROUPS)
        self._groups_table = True
        for key, data, live in thin:
            kept = [(b, d) for b, d in _unpack_group(data).items() if b in live]
            if kept:
                self.db.execute("UPDATE definition_groups SET data = ? WHERE last = ?",
                                (_pack_group(kept), key))  # fmt: skip
            else:
                self.db.execute("DELETE FROM definition_groups WHERE last = ?", (key,))
        rows = self.db.execute("SELECT blob, data FROM definitions WHERE blob > ? "
                               "ORDER BY blob", (last,)).fetchall()  # fmt: skip
        written = len(thin)
        for k in range(0, len(rows) - len(rows) % size, size):
            chunk = rows[k : k + size]
            self.db.execute("INSERT INTO definition_groups(last, data) VALUES (?, ?)",
                            (chunk[-1][0], _pack_group(chunk)))  # fmt: skip
            self._delete_in("DELETE FROM definitions WHERE blob IN ({})", [b for b, _ in chunk])
            written += 1
        self.commit()
        return written

    def compact_symbols(self) -> int:
        """Merge the pending symbol runs into the compacted blocks, in one transaction."""
        self.begin()
        try:
            folded = self.symbols.compact()
            faults.point("symbols.compacted")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.commit()
        return folded

    def blobs_with_symbol(self, text: bytes) -> list[int]:
        return self.symbols.blobs_with(text)

    def paths_of_blobs(self, blobs: list[int]) -> list[str]:
        """The paths of the files holding these blobs, each row checked, and for each blob
        all of them (their row checks add up to the blob's digest)."""
        return sorted(p for paths in self.files_of_blobs(blobs).values() for p in paths)

    def files_of_blobs(self, blobs: list[int]) -> dict[int, list[str]]:
        """`paths_of_blobs`, by blob."""
        out: dict[int, list[str]] = {}
        for chunk, params, marks in _in_chunks(blobs):
            want: dict[int, int] = {}
            got: dict[int, int] = {}
            # one statement (one snapshot): each blob with its digest and its files, if any
            for blob, digest, path, *row in self.db.execute(
                f'SELECT b.id, b.files_check, {PATH}, f.blob, f.size, f.mtime_ns, f."check" '
                "FROM blobs b LEFT JOIN files f ON f.blob = b.id "
                f"LEFT JOIN dirs d ON d.id = f.dir WHERE b.id IN ({marks})", params):  # fmt: skip
                want[blob] = digest
                if path is None:
                    continue
                _checked(path, *row)
                got[blob] = got.get(blob, 0) + row[3]
                out.setdefault(blob, []).append(path)
            for b in chunk:  # a blob without a row has no file (postings may name dropped ones)
                if signed32(got.get(b, 0)) != want.get(b, 0):
                    raise CorruptRecord(f"the catalog is damaged: the files of blob {b} do not "
                                        "match its digest; re-index into a new store")
        return out

    def symbol_counts(self) -> dict[str, int]:
        counts = self.symbols.counts()
        if self._meta_value("symbol_refs") is None and self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'blob_symbols'").fetchone():
            # a store made before the count was kept: its per-blob id sets still hold it
            (counts["symbol_refs"],) = self.db.execute(
                "SELECT coalesce(sum(count), 0) FROM blob_symbols").fetchone()  # fmt: skip
        return counts

    def referenced_segment_ends(self) -> dict[int, int]:
        """For each segment with a referenced frame, the end of its last referenced frame."""
        ends: dict[int, int] = {}
        for seg, end in self.db.execute(
            "SELECT seg, max(e) FROM (SELECT tree_seg AS seg, tree_off + tree_len AS e FROM blobs "
            "UNION ALL SELECT src_seg, src_off + src_len FROM blobs) GROUP BY seg"
        ):
            ends[seg] = end
        return ends

    def compact(self) -> None:
        """Rewrite the catalog densely (VACUUM): B-trees filled in random key order -- the
        symbol table above all -- leave pages partly empty. Skipped if another connection
        is busy."""
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("VACUUM")

    def largest_blob_frames(self) -> int:
        """The most frame bytes (tree + source) of one blob."""
        return self.db.execute(
            "SELECT coalesce(max(tree_len + src_len), 0) FROM blobs").fetchone()[0]  # fmt: skip

    def blob_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM blobs").fetchone()[0]

    def close(self) -> None:
        # fold the WAL back into the database file (if another connection is busy, the WAL
        # simply stays valid as it is)
        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


def _blob(row) -> BlobRow:
    return BlobRow(row[0], row[1], row[2], row[3], row[4], tuple(row[5:9]), tuple(row[9:13]),
                   row[13], row[14])  # fmt: skip
