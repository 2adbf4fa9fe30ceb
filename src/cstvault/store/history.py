"""Reading past versions: text and tree rebuilt from the reverse deltas of `versions`."""

from __future__ import annotations

from .. import languages
from ..checksum import crc32c
from ..codec import CorruptRecord, encode
from ..tree import Tree, tree_from_record
from . import versions as vs
from .catalog import signed32


def _rows(store, path: str) -> dict[int, tuple]:
    if not vs.exists(store.catalog.db):
        return {}
    return {r[0]: r for r in vs.rows(store.catalog.db, path)}


def _missing(path: str, version: int, rows: dict) -> KeyError:
    kept = ", ".join(map(str, sorted(rows))) or "none"
    return KeyError(f"{path}@{version} is not kept (kept versions: {kept})")


def _blob_text(store, path: str, blob_id: int) -> bytes:
    blob = store.catalog.blob_row(blob_id)
    if blob is None:
        raise CorruptRecord(f"{path}: the blob of a kept version is gone")
    return store._source(blob, path)


def _past(store, path: str, version: int) -> tuple[dict, int] | None:
    """(rows, current version) for a kept past `version`; None when it is the current one
    (KeyError when it is not kept)."""
    rows = _rows(store, path)
    current = store.catalog.file_version(path)
    if version == current:
        return None
    if version not in rows:
        raise _missing(path, version, rows)
    return rows, current


def version_source(store, path: str, version: int) -> bytes:
    past = _past(store, path, version)
    return store.source(path) if past is None else _text(store, path, version, *past)


def _text(store, path: str, version: int, rows: dict, current: int) -> bytes:
    """Walk from the nearest version stored whole down to `version`."""
    chain = []
    v = version
    while True:
        row = rows.get(v)
        if row is None:
            raise _missing(path, version, rows)
        vs.checked(path, row)
        if row[5] == vs.FULL:
            text = _blob_text(store, path, row[9])
            break
        if row[5] == vs.CURRENT:
            if v != current:
                raise CorruptRecord(f"{path}: version {v} is marked current but is not")
            text = store.source(path)
            break
        chain.append(row)
        v += 1
    if signed32(crc32c(text)) != rows[v][4] and rows[v][4] != 0:
        raise CorruptRecord(f"{path}: version {v} does not have the text its row records")
    for row in reversed(chain):
        text = vs.older_text(path, row, text)
    return text


def _record(store, path: str, version: int, rows: dict, current: int,
            depth: int = 0) -> bytes | None:  # fmt: skip
    """The tree record of `version`, or None when it never had one (parse its text)."""
    if depth > len(rows) + 1:
        raise CorruptRecord(f"{path}: the tree deltas of its versions form a loop")
    if version == current:
        blob, _ = store._located(path)
        return store._record(blob, path)
    row = rows.get(version)
    if row is None:
        return None
    if row[5] == vs.FULL:
        blob = store.catalog.blob_row(row[9])
        if blob is None:
            raise CorruptRecord(f"{path}: the blob of version {version} is gone")
        return store._record(blob, path)
    if row[8] is None or row[7] is None:
        return None
    base = _record(store, path, row[7], rows, current, depth + 1)
    if base is None:
        return None
    try:
        return vs.apply_patch(base, row[8])
    except Exception as exc:  # zstandard.ZstdError and friends
        raise CorruptRecord(f"{path}: the tree of version {version} cannot be rebuilt: "
                            f"{exc}") from exc  # fmt: skip


def version_tree(store, path: str, version: int) -> Tree:
    past = _past(store, path, version)
    if past is None:
        return store.tree(path)
    rows, current = past
    text = _text(store, path, version, rows, current)
    record = _record(store, path, version, rows, current)
    if record is None:  # made inside a group commit: parse it (the store's pinned grammar)
        language = languages.detect(path)
        if rows[version][5] == vs.FULL:
            language = store.catalog.blob_row(rows[version][9]).language
        from ..extract import parse_extract

        record = encode(parse_extract(text, language), text)
    tree, length, crc, _ = tree_from_record(record)
    if length != len(text) or crc != crc32c(text):
        raise CorruptRecord(f"{path}: version {version}'s tree and text do not match")
    tree._src = text
    tree._ids = IdsLoader(store, path, version, None)
    return tree


def stable_ids(store, path: str, version: int | None = None, blob: int | None = None,
               tree: Tree | None = None):  # fmt: skip
    """Stable node ids of a version (default: the current one) as an int64 array, by node
    index. `blob`: the blob the caller's tree came from (an error if the file changed
    since). A version without stored ids (its first, or one made inside a group commit)
    is matched against the nearest older version that has them."""
    import numpy as np

    from .. import stable

    current = store.catalog.file_version(path)
    if version is None:
        version = current
        if blob is not None:
            found = store.catalog.blob_for(path)
            if found is None or found[0].id != blob:
                raise ValueError(f"{path} changed since this tree was read: read it again "
                                 "for its stable ids")  # fmt: skip
    if tree is None:
        tree = store.tree(path, version=None if version == current else version)
    n = len(tree)
    got = vs.ids_of(store.catalog.db, path, version) if vs.exists(store.catalog.db) else None
    if got is not None and got[0] is not None:
        return stable.unpack_runs(got[0])
    rows = _rows(store, path)
    older = [v for v, r in rows.items() if v < version and r[12] is not None]
    if not older:
        return np.arange(n, dtype=np.int64)
    base = max(older)
    base_tree = store.tree(path, version=base)
    base_ids = stable.unpack_runs(rows[base][12])
    matched = stable.match(base_tree._cols, bytes(base_tree._source), tree._cols,
                           bytes(tree._source))  # fmt: skip
    return stable.assign(base_ids, matched, int(rows[base][13]))[0]


class IdsLoader:
    """What a tree from the store resolves its stable ids with, on first use."""

    __slots__ = ("store", "path", "version", "blob")

    def __init__(self, store, path: str, version: int | None, blob: int | None):
        self.store, self.path, self.version, self.blob = store, path, version, blob

    def __call__(self, tree: Tree):
        """The tree's ids; None when its file has no history (ids are then preorder
        indexes, and nothing loads numpy)."""
        if not _rows(self.store, self.path):
            return None
        return stable_ids(self.store, self.path, self.version, self.blob, tree)


def _edits(store, path: str, old: int, new: int, old_text: bytes,
           new_text: bytes) -> list[tuple[int, int, int, bytes]]:  # fmt: skip
    """The edits (start, old_end, new_end, inserted text) turning version `old` into `new`,
    each in the coordinates of the text the previous ones made: the recorded edits when
    every version in between was made by one, else the line hunks of a diff (applied from
    the last, so that their old positions hold)."""
    rows = _rows(store, path)
    recorded = [vs.unpack_edit(rows[v][10]) if v in rows else None for v in range(old + 1, new + 1)]
    if new > old and all(e is not None for e in recorded):
        out = []
        for v, (start, old_end, new_end) in zip(range(old + 1, new + 1), recorded, strict=True):
            text = new_text if v == new else version_source(store, path, v)
            out.append((start, old_end, new_end, text[start:new_end]))
        return out
    import difflib

    a = old_text.splitlines(keepends=True)
    b = new_text.splitlines(keepends=True)
    offs_a, offs_b = [0], [0]
    for line in a:
        offs_a.append(offs_a[-1] + len(line))
    for line in b:
        offs_b.append(offs_b[-1] + len(line))
    out = []
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in reversed(ops):
        if tag != "equal":
            piece = new_text[offs_b[j1] : offs_b[j2]]
            out.append((offs_a[i1], offs_a[i2], offs_a[i1] + len(piece), piece))
    return out


def changed_ranges(store, path: str, old: int, new: int) -> list:
    from tree_sitter import Point, Range

    from .. import _native
    from ..live import edit_tree, newline_offsets

    language = languages.detect(path)
    old_text = version_source(store, path, old)
    new_text = version_source(store, path, new)
    cap = languages.capsule(language)
    tree = _native.live_parse(old_text, cap, None, None, False)[0]
    text, lines = old_text, newline_offsets(old_text)
    for start, old_end, _, piece in _edits(store, path, old, new, old_text, new_text):
        lines = edit_tree(tree, lines, start, old_end, piece)
        text = text[:start] + piece + text[old_end:]
    if text != new_text:
        raise CorruptRecord(f"{path}: the edits between versions {old} and {new} do not "
                            "rebuild the newer text")  # fmt: skip
    new_tree = _native.live_parse(new_text, cap, tree, None, False)[0]
    return [Range(Point(sr, sc), Point(er, ec), s, e)
            for s, e, sr, sc, er, ec in _native.live_changed_ranges(tree, new_tree)]
