"""The path index (store/pathindex.py) and the one-call record -> tree path (open_tree)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cstvault
from cstvault import indexer
from cstvault.codec import CorruptRecord, decode
from cstvault.store import Store, StoreLocked, pathindex
from cstvault.tree import tree_from_record
from snippets import SNIPPETS
from test_cli import make_repo
from test_roundtrip import PHANTOMS


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    make_repo(root)
    (root / "ünïcode dir").mkdir()
    (root / "ünïcode dir" / "naïve.py").write_bytes(SNIPPETS["python"]["ok"])
    indexer.index(root, jobs=1)
    return root


def _current(store: Store) -> bool:
    return store._paths.find(next(store.files()).path) is not False


def test_index_answers_like_the_catalog(repo):
    with cstvault.open(repo) as store:
        assert (store.directory / pathindex.INDEX).exists() and _current(store)
        paths = [f.path for f in store.files()]
        assert "ünïcode dir/naïve.py" in paths
        for p in paths:
            assert store._paths.find(p) == store.catalog.blob_for(p)
        assert store._paths.find("no/such/file.py") is None
        assert store.stats()["path_index"] == {
            "entries": len(paths), "bytes": (store.directory / pathindex.INDEX).stat().st_size,
            "current": True}  # fmt: skip
        with pytest.raises(KeyError):
            store.tree("no/such/file.py")


def test_a_writer_makes_the_index_not_current_until_it_rebuilds_it(repo):
    reader = cstvault.open(repo)
    before = reader.tree("python_ok.py").text
    writer = Store.open(repo, write=True)
    writer.catalog.begin()  # the invalidation happens here, under the write lock
    assert not _current(reader)
    assert reader.stats()["path_index"]["current"] is False
    writer.catalog.put_file("python_ok.py", reader._located("c_ok.c")[0].id, 1, 2)
    writer.catalog.commit()
    # not current: the catalog answers, so the change is seen at once
    assert reader._located("python_ok.py")[0].language == "c"
    assert not _current(reader)
    writer.close()  # a store that wrote rebuilds the index
    assert _current(reader)  # mapped again on the next miss
    assert reader._located("python_ok.py")[0].language == "c"
    assert reader._paths.find("python_ok.py") == reader.catalog.blob_for("python_ok.py")
    reader.close()
    assert before == SNIPPETS["python"]["ok"]


def test_a_run_killed_before_rebuilding_leaves_the_catalog_in_charge(repo):
    writer = Store.open(repo, write=True)
    writer.catalog.begin()
    writer.catalog.commit()
    writer.catalog.close()  # no Store.close(): as if killed after its last commit
    writer._lock.release()  # (the kernel releases a dead writer's lock)
    with cstvault.open(repo) as store:
        assert not _current(store)
        assert store.tree("go_ok.go").text == (repo / "go_ok.go").read_bytes()
    indexer.index(repo, jobs=1)  # the next run rebuilds it
    with cstvault.open(repo) as store:
        assert _current(store)


def test_reindex_after_an_edit_is_seen_by_an_open_reader(repo):
    with cstvault.open(repo) as store:
        assert store.tree("rust_ok.rs").text == SNIPPETS["rust"]["ok"]
        (repo / "rust_ok.rs").write_bytes(b"fn changed() {}\n")
        indexer.index(repo, jobs=1)
        assert store.tree("rust_ok.rs").text == b"fn changed() {}\n"
        assert _current(store)


@pytest.mark.parametrize("where", ["header", "body"])
def test_a_damaged_index_is_not_used(repo, where):
    path = repo / ".cstvault" / pathindex.INDEX
    data = bytearray(path.read_bytes())
    data[9 if where == "header" else len(data) - 3] ^= 0x40
    path.write_bytes(bytes(data))
    with cstvault.open(repo) as store:
        assert not _current(store)
        for f in store.files():
            assert store.tree(f.path).text == (repo / f.path).read_bytes()


def _records() -> list[bytes]:
    out = [cstvault.encode(src, lang) for lang, cases in SNIPPETS.items() for src in cases.values()]
    return out + [cstvault.encode(src, lang) for lang, src in PHANTOMS]


def test_open_tree_builds_the_tree_decode_builds():
    for record in _records():
        tree, length, crc, nbytes = tree_from_record(record)
        cols = decode(record)
        for name in ("kind", "grammar", "flags", "field", "size", "start", "end"):
            assert np.array_equal(getattr(tree.columns, name), getattr(cols, name)), name
        assert tree.columns.phantoms == cols.phantoms
        assert nbytes == tree.buffer_bytes() > 0
        assert np.array_equal(tree.columns.status, cols.status)
        # the budget counts the real buffers: u16 kind, grammar and field, u8 flags, i32 size,
        # parent, previous sibling and child count, u32 start and end: 31 bytes a node, and
        # the query-status and tail pairs
        assert nbytes == (31 * len(tree) + 8 * len(cols.unexpected) + 4 * len(cols.status)
                          + 4 * len(cols.tails))  # fmt: skip
        assert tree.columns.start.dtype == np.uint32 and tree.columns.size.dtype == np.int32
        assert (length, crc) == struct.unpack_from("<II", record, 10)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_open_tree_rejects_damage(data):
    record = bytearray(_records()[data.draw(st.integers(0, 3))])
    at = data.draw(st.integers(0, len(record) - 1))
    record[at] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CorruptRecord):
        tree_from_record(bytes(record))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_open_tree_damage_behind_a_valid_crc_never_crashes(data):
    record = bytearray(_records()[data.draw(st.integers(0, 3))])
    for _ in range(data.draw(st.integers(1, 4))):
        record[data.draw(st.integers(0, len(record) - 5))] = data.draw(st.integers(0, 255))
    record[-4:] = struct.pack("<I", crc32c.crc32c(bytes(record[:-4])))
    try:
        tree, *_ = tree_from_record(bytes(record))
    except CorruptRecord:
        return
    cols = decode(bytes(record))  # whatever open_tree accepts, decode accepts identically
    assert np.array_equal(tree.columns.end, cols.end)


def test_a_writer_invalidates_again_after_another_writer_rebuilt(repo):
    a = Store.open(repo, write=True)
    a.catalog.begin()
    a.catalog.commit()
    with pytest.raises(StoreLocked):  # one writer at a time, in one process too
        Store.open(repo, write=True)
    a.close()  # rebuilds: current again
    b = Store.open(repo, write=True)
    with cstvault.open(repo) as reader:
        assert _current(reader)
        b.catalog.begin()  # `b` must notice the stamp is no longer its own
        assert not _current(reader)
        b.catalog.commit()
    b.close()
    with cstvault.open(repo) as reader:
        assert _current(reader)


def test_values_too_wide_for_an_entry_leave_the_catalog_in_charge(repo, monkeypatch):
    entries = np.zeros(1, dtype=pathindex.entry_dtype())
    with pytest.raises(pathindex._TooWide):
        pathindex._put(entries, "tree_dict", [70_000])
    (repo / "go_ok.go").write_bytes(b"package wide\n")

    def too_wide(entries, name, values):
        raise pathindex._TooWide(name)

    monkeypatch.setattr(pathindex, "_put", too_wide)
    indexer.index(repo, jobs=1)  # its closing rebuild gives up
    with cstvault.open(repo) as store:
        assert not _current(store)
        assert store.tree("go_ok.go").text == b"package wide\n"


def _mapped_rss(suffix: str) -> int:
    """Resident bytes of this process's mappings of files ending in `suffix` (smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = head[-1].endswith(suffix)
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_lookups_map_no_entry_page_and_keep_hash_pages(tmp_path):
    import mmap

    root = tmp_path / "many"
    root.mkdir()
    for k in range(300):  # entries span several pages
        (root / f"m{k:03d}.py").write_bytes(b"x = %d\n" % k)
    indexer.index(root, jobs=1)
    fds = len(os.listdir("/proc/self/fd"))
    with cstvault.open(root) as store:
        index = store._paths
        head = pathindex._HEAD.unpack_from(index._index, 0)
        count, hashes, entries = head[3], head[4], head[5]
        kept = pathindex.entries_page(index._index)
        assert kept % mmap.PAGESIZE == 0 and hashes + 8 * count <= entries <= kept
        assert kept - mmap.PAGESIZE < entries < len(index._index) - 2 * mmap.PAGESIZE
        assert 0 < _mapped_rss(pathindex.INDEX) <= kept  # opening checked the CRC: released
        for path in sorted(f.path for f in store.files()):
            assert index.find(path)[0] == store.catalog.blob_for(path)[0]
            assert _mapped_rss(pathindex.INDEX) <= kept  # entries are read, never mapped in
        assert _mapped_rss(pathindex.INDEX) > 0  # the hash pages the searches walk stay
    assert len(os.listdir("/proc/self/fd")) == fds  # the index's descriptor is closed too


def test_reindexing_an_unchanged_tree_writes_nothing(tmp_path):
    """Nothing changed: no transaction, so the path index stays current (not rebuilt) and
    the catalog file is not touched; one file changed: it alone is indexed again."""
    from cstvault import indexer
    from cstvault.bench.reliability import make_repo
    from cstvault.freeze import freeze

    make_repo(tmp_path, files=30)
    indexer.index(tmp_path, jobs=1)
    store = tmp_path / ".cstvault"
    freeze(store, jobs=1)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.iterdir()
              if p.is_file() and p.name != "writer.lock"}  # fmt: skip
    report = indexer.index(tmp_path, jobs=2)
    assert report.unchanged == 30 and report.files == 0 and report.removed == 0
    assert freeze(store, jobs=2).blobs == 0  # as `cstvault index` runs it: nothing to do
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.iterdir()
             if p.is_file() and p.name in before}  # fmt: skip
    assert after == before
    victim = sorted(p for p in tmp_path.rglob("*.py") if ".cstvault" not in p.parts)[0]
    victim.write_text(victim.read_text() + "\nx = 1\n")
    report = indexer.index(tmp_path, jobs=1)
    assert report.files == 1 and report.unchanged == 29
