"""Past versions of a file, kept as reverse deltas in the catalog's `versions` table.

Every version of a file written through `Store.update/apply_edit` has a row. The current one
(kind CURRENT) is the file's blob. When a newer version arrives the row becomes a delta
against its successor: the inverse of the edit that made the successor (kind EDIT: start,
length of the inserted text, the text it replaced), or a zstd "patch-from" frame (kind ZSTD:
the older text compressed with the newer one as raw-content dictionary). A version whose
tree was stored keeps its tree record the same way (`tree_delta` against the record of
version `tree_base`); one made inside a group commit never had a record and its tree is
parsed from its text again when asked for (same grammar, pinned by the store: the same
tree). A removed file's last version keeps its blob (kind FULL). Every row carries CRC32Cs:
of its deltas, and of the text it reconstructs to. Layout: docs/format.md, "Versions".
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass

import zstandard

from ..checksum import crc32c
from ..codec.errors import CorruptRecord
from .catalog import db_text, signed32

CURRENT, EDIT, ZSTD, FULL = 0, 1, 2, 3
DELTA_LEVEL = 6  # patch-from frames: small, and fast enough to make per update
KEEP_VERSIONS = 16  # default retention, per file (meta `keep_versions`)

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions(
    path TEXT NOT NULL, version INTEGER NOT NULL,
    made_ms INTEGER NOT NULL,                -- when it was written (Unix ms)
    size INTEGER NOT NULL, lines INTEGER NOT NULL,
    crc INTEGER NOT NULL,                    -- CRC32C of the version's text
    kind INTEGER NOT NULL,                   -- 0 current, 1 inverse edit, 2 zstd, 3 full blob
    src_delta BLOB, tree_base INTEGER, tree_delta BLOB, blob INTEGER,
    edit BLOB,                               -- the edit that made it from version - 1
    ids BLOB, next_id INTEGER,               -- stable node ids (stable.pack_runs), next free
    "check" INTEGER NOT NULL,                -- CRC32C of src_delta, tree_delta, edit, ids
    PRIMARY KEY (path, version)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Version:
    """One version of a file, as `Store.versions` lists them."""

    version: int
    made_ms: int
    size: int
    lines: int
    current: bool
    kind: str  # current | edit | zstd | full
    edit: tuple[int, int, int] | None  # (start, old_end, new_end) that made it, if an edit
    delta_bytes: int  # bytes its row keeps (0 for the current version)


KIND_NAMES = {CURRENT: "current", EDIT: "edit", ZSTD: "zstd", FULL: "full"}


def ensure(db: sqlite3.Connection) -> None:
    db.execute(SCHEMA)


def exists(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'versions'").fetchone() is not None


def _check(*parts: bytes | None) -> int:
    return signed32(crc32c(b"".join(p or b"" for p in parts)))


def pack_edit(start: int, old_end: int, new_end: int) -> bytes:
    return struct.pack("<III", start, old_end, new_end)


def unpack_edit(data: bytes | None) -> tuple[int, int, int] | None:
    return struct.unpack("<III", data) if data and len(data) == 12 else None


def inverse_edit(start: int, new_end: int, old_text: bytes) -> bytes:
    """Delta that turns the edited text back: replace [start, new_end) by `old_text`."""
    return struct.pack("<II", start, new_end) + old_text


def _undo_edit(newer: bytes, delta: bytes) -> bytes:
    start, end = struct.unpack_from("<II", delta)
    return newer[:start] + delta[8:] + newer[end:]


def patch_from(older: bytes, newer: bytes) -> bytes:
    """`older` as a zstd frame with `newer` as its raw-content dictionary."""
    d = zstandard.ZstdCompressionDict(newer, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(level=DELTA_LEVEL, dict_data=d).compress(older)


def apply_patch(newer: bytes, delta: bytes) -> bytes:
    d = zstandard.ZstdCompressionDict(newer, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdDecompressor(dict_data=d).decompress(delta)


# writes (inside the writer's transaction)
def put_current(db, path: str, version: int, made_ms: int, size: int, lines: int, crc: int,
                edit: bytes | None, ids: bytes | None = None,
                next_id: int | None = None) -> None:  # fmt: skip
    db.execute(
        "INSERT OR REPLACE INTO versions(path, version, made_ms, size, lines, crc, kind, edit, "
        'ids, next_id, "check") VALUES (?,?,?,?,?,?,?,?,?,?,?)',
        (db_text(path), version, made_ms, size, lines, signed32(crc), CURRENT, edit, ids,
         next_id, _check(None, None, edit, ids)),
    )  # fmt: skip


def supersede(db, path: str, version: int, kind: int, src_delta: bytes | None,
              tree_base: int | None, tree_delta: bytes | None,
              blob: int | None = None) -> None:  # fmt: skip
    """Turn version `version`'s row into a delta (or, kind FULL, a kept blob)."""
    row = db.execute("SELECT edit, ids FROM versions WHERE path = ? AND version = ?",
                     (db_text(path), version)).fetchone()  # fmt: skip
    if row is None:
        return  # a file stored by `index` before: its first version has no row
    db.execute(
        "UPDATE versions SET kind = ?, src_delta = ?, tree_base = ?, tree_delta = ?, blob = ?, "
        '"check" = ? WHERE path = ? AND version = ?',
        (kind, src_delta, tree_base, tree_delta, blob,
         _check(src_delta, tree_delta, row[0], row[1]), db_text(path), version),
    )  # fmt: skip


def set_tree_delta(db, path: str, version: int, tree_base: int, tree_delta: bytes) -> None:
    row = db.execute("SELECT src_delta, edit, ids FROM versions WHERE path = ? AND version = ?",
                     (db_text(path), version)).fetchone()  # fmt: skip
    if row is None:
        return
    db.execute('UPDATE versions SET tree_base = ?, tree_delta = ?, "check" = ? '
               "WHERE path = ? AND version = ?",
               (tree_base, tree_delta, _check(row[0], tree_delta, row[1], row[2]),
                db_text(path), version))  # fmt: skip


def prune(db, path: str, current: int, keep: int, keep_bytes: int | None = None) -> int:
    """Drop the versions older than the `keep` newest, and the oldest while the file's
    deltas take more than `keep_bytes` (deltas only ever point at newer versions, so the
    oldest can always go)."""
    key = db_text(path)
    n = db.execute("DELETE FROM versions WHERE path = ? AND version <= ?",
                   (key, current - keep)).rowcount  # fmt: skip
    if keep_bytes is not None:
        total = 0
        for version, size in db.execute(
                "SELECT version, coalesce(length(src_delta), 0) + "
                "coalesce(length(tree_delta), 0) FROM versions WHERE path = ? "
                "ORDER BY version DESC", (key,)).fetchall():  # fmt: skip
            total += size
            if total > keep_bytes:
                n += db.execute("DELETE FROM versions WHERE path = ? AND version <= ?",
                                (key, version)).rowcount  # fmt: skip
                break
    return n


def has_row(db, path: str, version: int) -> bool:
    return db.execute("SELECT 1 FROM versions WHERE path = ? AND version = ?",
                      (db_text(path), version)).fetchone() is not None  # fmt: skip


def edit_of(db, path: str, version: int) -> bytes | None:
    """The recorded edit that made `version` (None: none, or no row)."""
    row = db.execute("SELECT edit FROM versions WHERE path = ? AND version = ?",
                     (db_text(path), version)).fetchone()  # fmt: skip
    return row[0] if row else None


def last_version(db, path: str) -> int:
    row = db.execute("SELECT max(version) FROM versions WHERE path = ?",
                     (db_text(path),)).fetchone()  # fmt: skip
    return int(row[0] or 0)


def rows(db, path: str) -> list[tuple]:
    """(version, made_ms, size, lines, crc, kind, src_delta, tree_base, tree_delta, blob, edit,
    check, ids, next_id) of every kept version, newest first."""
    return db.execute(
        "SELECT version, made_ms, size, lines, crc, kind, src_delta, tree_base, tree_delta, "
        'blob, edit, "check", ids, next_id FROM versions WHERE path = ? ORDER BY version DESC',
        (db_text(path),),
    ).fetchall()


def listing(db, path: str) -> list[Version]:
    return [Version(r[0], r[1], r[2], r[3], r[5] == CURRENT, KIND_NAMES.get(r[5], "?"),
                    unpack_edit(r[10]),
                    len(r[6] or b"") + len(r[8] or b""))  # fmt: skip
            for r in rows(db, path)]


def checked(path: str, row: tuple) -> tuple:
    if _check(row[6], row[8], row[10], row[12]) != row[11]:
        raise CorruptRecord(f"{path}: version {row[0]} is damaged (row check mismatch)")
    return row


def older_text(path: str, row: tuple, newer: bytes) -> bytes:
    """Version `row`'s text from its successor's."""
    kind, delta = row[5], row[6]
    try:
        text = _undo_edit(newer, delta) if kind == EDIT else apply_patch(newer, delta)
    except (zstandard.ZstdError, struct.error, TypeError) as exc:
        raise CorruptRecord(f"{path}: version {row[0]} cannot be rebuilt: {exc}") from exc
    if signed32(crc32c(text)) != row[4]:
        raise CorruptRecord(f"{path}: version {row[0]} rebuilt with the wrong text (CRC32C)")
    return text


def ids_of(db, path: str, version: int) -> tuple[bytes | None, int | None] | None:
    """(stable id runs, next free id) of a version, None without a row."""
    row = db.execute('SELECT ids, next_id, src_delta, tree_delta, edit, "check" FROM versions '
                     "WHERE path = ? AND version = ?",
                     (db_text(path), version)).fetchone()  # fmt: skip
    if row is None:
        return None
    if _check(row[2], row[3], row[4], row[0]) != row[5]:
        raise CorruptRecord(f"{path}: version {version} is damaged (row check mismatch)")
    return row[0], row[1]


def size_bytes(db) -> int:
    if not exists(db):
        return 0
    row = db.execute("SELECT coalesce(sum(length(src_delta)), 0) + "
                     "coalesce(sum(length(tree_delta)), 0) FROM versions").fetchone()  # fmt: skip
    return int(row[0])
