"""Source packs: many small sources in one frame, read back exactly, packed again when sparse."""

from __future__ import annotations

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

import cstvault
from cstvault import freeze as freeze_mod
from cstvault import indexer
from cstvault.codec import CorruptRecord
from cstvault.freeze import freeze
from cstvault.store import packs
from cstvault.verify import verify_store

members_st = st.dictionaries(st.integers(1, 2**40), st.binary(max_size=300), min_size=1,
                             max_size=20)  # fmt: skip


@given(members_st, st.booleans())
def test_a_pack_gives_back_each_member_and_refuses_others(members, streamed):
    whole = packs.WHOLE_BYTES
    packs.WHOLE_BYTES = -1 if streamed else whole  # decompressed up to each member's end
    try:
        _pack_round_trip(members)
    finally:
        packs.WHOLE_BYTES = whole


def _pack_round_trip(members):
    c, d = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    frame = packs.build(list(members.items()), c.compress)
    assert packs.is_pack(frame)
    ids, offsets, start = packs.parse(frame)
    assert list(ids) == sorted(members) and offsets[-1] == sum(map(len, members.values()))
    assert packs.total_bytes(frame[: start]) == offsets[-1]
    cache = packs.PackCache()
    loc = (1, 0, len(frame), 7)
    reads = []

    def read() -> bytes:
        reads.append(1)
        return frame

    for blob in sorted(members, reverse=True):  # the last member: the whole text at once
        assert cache.member(loc, read, blob, d) == members[blob]
    assert loc in cache and cache.nbytes() == offsets[-1] and len(reads) == 1
    other = packs.PackCache()
    for blob in sorted(members):  # in order: decompressed further as needed
        assert other.member(loc, read, blob, d) == members[blob]
    with pytest.raises(CorruptRecord, match="holds no blob"):
        cache.member(loc, frame, max(members) + 1, d)


def test_a_damaged_pack_table_is_corrupt_not_a_crash():
    frame = packs.build([(1, b"abc"), (2, b"de")], zstandard.ZstdCompressor().compress)
    with pytest.raises(CorruptRecord):
        packs.parse(frame[:14])  # table cut short
    bad = bytearray(frame)
    bad[8] = 200  # a member count the table length does not hold
    with pytest.raises(CorruptRecord):
        packs.parse(bytes(bad))
    assert not packs.is_pack(zstandard.ZstdCompressor().compress(b"plain source"))


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for i in range(50):
        body = "".join(f"def g{i}_{k}(x):\n    return x + {k}\n\n" for k in range(3 + i % 7))
        (root / f"m{i:02d}.py").write_text(body)
    (root / "big.py").write_text("".join(f"v{k} = {k}\n" for k in range(4000)))
    return root


def test_freeze_packs_small_sources_and_leaves_large_ones_alone(repo, tmp_path, monkeypatch):
    monkeypatch.setitem(packs.PACK_BYTES, "source", 2000)
    monkeypatch.setitem(packs.ALONE_BYTES, "source", 20_000)
    monkeypatch.setitem(packs.PACK_BYTES, "tree", 1500)
    monkeypatch.setitem(packs.ALONE_BYTES, "tree", 20_000)
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=2)
    freeze(store_dir, jobs=2)
    with cstvault.open(store_dir) as store:
        blobs = {b.id: b for b in store.catalog.blobs()}
        by_path = {f.path: store._located(f.path)[0] for f in store.files()}
        packed = {loc for loc in (b.src for b in blobs.values())
                  if sum(c.src == loc for c in blobs.values()) > 1}  # fmt: skip
        assert len(packed) > 3  # 2000-byte packs of the small sources
        assert sum(b.src == by_path["big.py"].src for b in blobs.values()) == 1
        tree_packs = {b.tree for b in blobs.values()
                      if sum(c.tree == b.tree for c in blobs.values()) > 1}  # fmt: skip
        assert len(tree_packs) > 3
        assert sum(b.tree == by_path["big.py"].tree for b in blobs.values()) == 1  # large
        for path in by_path:
            assert store.source(path) == (repo / path).read_bytes()
        assert verify_store(store).mismatched == 0
    with cstvault.open(store_dir) as store:  # no working tree: texts come from the packs
        for path in by_path:
            assert store.tree(path).text == (repo / path).read_bytes()


def test_freeze_packs_again_a_pack_most_of_whose_members_were_dropped(repo, tmp_path):
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    freeze(store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        (pack,) = {b.src for b in store.catalog.blobs() if b.size < packs.ALONE_BYTES["source"]}
        trees = {b.id: b.tree for b in store.catalog.blobs()}
        members = {loc: sum(t == loc for t in trees.values()) for loc in trees.values()}
        tree_packs = {loc for loc, n in members.items() if n > 1}
        assert 0 < len(tree_packs) < 5  # the small files' records in 16 KiB packs
    for i in range(40):  # 40 of the 50 small files go
        (repo / f"m{i:02d}.py").unlink()
    indexer.index(repo, store_dir, jobs=1)
    assert freeze(store_dir, jobs=1).blobs == 11  # the 11 survivors: packed again
    with cstvault.open(store_dir) as store:
        rows = list(store.catalog.blobs())
        assert len(rows) == 11
        assert pack not in {b.src for b in rows}  # the survivors' sources were packed again
        assert len({b.src for b in rows if b.size < packs.ALONE_BYTES["source"]}) == 1
        now = {b.tree for b in rows}
        for loc in tree_packs:  # a tree pack under half live was packed again; others stay
            live = sum(trees[b.id] == loc for b in rows)
            assert (loc in now) == (2 * live >= members[loc])
        assert any(2 * sum(trees[b.id] == loc for b in rows) < members[loc] for loc in tree_packs)
        assert not (store_dir / "segments" / f"{pack[0]:08d}.seg").exists() or \
            store.catalog.referenced_segment_ends().get(pack[0], 0) < pack[1] + pack[2]
        for f in store.files():
            assert store.source(f.path) == (repo / f.path).read_bytes()
        assert verify_store(store).mismatched == 0
    with cstvault.store.Store.open(store_dir) as store:
        assert freeze_mod.sparse_packs(store) == {}


def test_definitions_are_grouped_at_freeze_and_found_as_before(repo, tmp_path):
    from cstvault.store import catalog as catalog_mod

    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        assert not store.catalog._has_def_groups()
        want = {f.path: store.outline(f.path) for f in store.files()}
        defs = store.definitions("g7_2")
    assert len(defs) == 1 and defs[0].path == "m07.py"
    freeze(store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        db = store.catalog.db
        groups, = db.execute("SELECT count(*) FROM definition_groups").fetchone()
        rows, = db.execute("SELECT count(*) FROM definitions").fetchone()
        assert groups == 51 // catalog_mod.DEF_GROUP and rows == 51 % catalog_mod.DEF_GROUP
        assert {f.path: store.outline(f.path) for f in store.files()} == want
        assert store.definitions("g7_2") == defs
    for i in range(1, 40):  # most of the first groups' blobs go
        (repo / f"m{i:02d}.py").unlink()
    indexer.index(repo, store_dir, jobs=1)
    freeze(store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        db = store.catalog.db
        members = [len(catalog_mod._unpack_group(d))
                   for (d,) in db.execute("SELECT data FROM definition_groups")]  # fmt: skip
        live = {b.id for b in store.catalog.blobs()}
        assert all(set(catalog_mod._unpack_group(d)) <= live
                   for (d,) in db.execute("SELECT data FROM definition_groups"))  # fmt: skip
        assert sum(members) + db.execute("SELECT count(*) FROM definitions").fetchone()[0] \
            == len([f for f in store.files() if store.outline(f.path)])  # fmt: skip
        for f in store.files():
            assert store.outline(f.path) == want[f.path]
        assert store.definitions("g0_1")[0].path == "m00.py"
        assert store.definitions("g7_2") == []
