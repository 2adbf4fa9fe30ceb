"""The symbol table: pending sorted runs, compacted blocks, streaming merges."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cstvault
from cstvault import indexer
from cstvault.codec import CorruptRecord
from cstvault.store import symtab
from cstvault.symbols import pack_ids, pack_many, unpack_ids


def names(prefix: str, n: int) -> bytes:
    return b"".join(b"%s_%04d = 1\n" % (prefix.encode(), k) for k in range(n))


def test_compacted_blocks_answer_and_incremental_runs_merge(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.py").write_bytes(names("alpha", 3 * symtab.BLOCK) + b"shared = 2\n")
    (root / "b.py").write_bytes(names("beta", 10) + b"shared = 3\n")
    indexer.index(root, jobs=1)
    with cstvault.open(root) as store:
        db = store.catalog.db
        assert db.execute("SELECT count(*) FROM symbol_pending").fetchone()[0] == 0  # merged
        assert db.execute("SELECT count(*) FROM symbol_blocks").fetchone()[0] >= 3
        assert store.files_with_symbol("alpha_0200") == ["a.py"]
        assert store.files_with_symbol("shared") == ["a.py", "b.py"]
        ids_a = [store.catalog.symbols.id_of(b"alpha_%04d" % k) for k in range(0, 384, 7)]
        assert None not in ids_a and len(set(ids_a)) == len(ids_a)
        stats = store.stats()
        total = stats["symbols"]
        assert total == 3 * symtab.BLOCK + 10 + 1
        tables = stats["catalog_tables"]
        assert not tables or tables["symbol_blocks"] > 0  # empty only without SQLite's dbstat
    # a new file reusing old names and adding new ones, then a second compaction
    (root / "c.py").write_bytes(b"shared = 4\nalpha_0007 = 5\ngamma = 6\n")
    indexer.index(root, jobs=1)
    with cstvault.open(root) as store:
        assert store.files_with_symbol("shared") == ["a.py", "b.py", "c.py"]
        assert store.files_with_symbol("alpha_0007") == ["a.py", "c.py"]
        assert store.files_with_symbol("gamma") == ["c.py"]
        assert store.files_with_symbol("gamm") == []
        assert [store.catalog.symbols.id_of(b"alpha_%04d" % k)
                for k in range(0, 384, 7)] == ids_a  # ids are stable  # fmt: skip
        assert store.catalog.symbols.id_of(b"gamma") == total + 1  # the next id
        assert store.stats()["symbols"] == total + 1


def indexed(tmp_path, symbols: int):
    """A store of one file defining x_0000 .. x_{symbols - 1}; its root."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.py").write_bytes(names("x", symbols))
    indexer.index(root, jobs=1)
    return root


def test_pending_runs_are_read_before_compaction(tmp_path):
    with cstvault.open(indexed(tmp_path, 5), write=True) as store:
        cat = store.catalog
        refs = cat.symbol_counts()["symbol_refs"]
        cat.begin()
        cat.add_symbols({999: {b"x_0001", b"brand_new"}})
        cat.add_symbols({1000: {b"brand_new"}})
        cat.commit()
        assert cat.blobs_with_symbol(b"x_0001")[-1] == 999  # block + pending run
        assert cat.blobs_with_symbol(b"brand_new") == [999, 1000]  # two runs
        assert cat.symbols.id_of(b"brand_new") is None  # no id before the merge
        assert cat.symbol_counts()["symbol_refs"] == refs + 3
        assert cat.compact_symbols() == 5 + 1  # every text the merge wrote
        assert cat.blobs_with_symbol(b"x_0001")[-1] == 999
        assert cat.blobs_with_symbol(b"brand_new") == [999, 1000]
        assert cat.symbols.id_of(b"brand_new") == 6 and cat.symbol_counts()["symbols"] == 6
        assert not cat.symbols.pending()


def test_many_runs_are_merged_into_one_before_a_lookup_would_search_them_all(
        tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.setattr(symtab, "MAX_RUNS", 3)
    with cstvault.open(indexed(tmp_path, 2), write=True) as store:
        cat = store.catalog
        for k in range(7):
            cat.begin()
            cat.add_symbols({100 + k: {b"common", b"only_%d" % k}})
            cat.commit()
            assert len(cat.symbols._runs()) <= 3
        assert cat.blobs_with_symbol(b"common") == list(range(100, 107))
        assert cat.blobs_with_symbol(b"only_4") == [104]
        cat.compact_symbols()
        assert cat.blobs_with_symbol(b"common") == list(range(100, 107))
        assert cat.symbol_counts()["symbols"] == 2 + 1 + 7


def test_an_older_stores_recent_layer_is_read_and_folded(tmp_path):
    """Rows of the recent layer older stores wrote (texts with ids, id-keyed runs)."""
    root = indexed(tmp_path, 5)
    with cstvault.open(root, write=True) as store:
        cat = store.catalog
        old = cat.symbols.id_of(b"x_0001")
        cat.begin()  # as an interrupted older run left them: one new text (id 6), one reused
        cat.db.execute("INSERT INTO symbol_texts(data) VALUES (?)",
                       (symtab.pack_texts([b"fresh_1"], 6),))  # fmt: skip
        cat.db.execute("INSERT INTO symbols(text, id) VALUES (?, ?)", (b"x_0001", old))
        cat.db.execute("INSERT INTO symbol_runs(data) VALUES (?)", (symtab.pack_run(
            np.array([old, 6], dtype=np.int64), np.array([999, 999], dtype=np.int64)),))
        cat.set_meta("next_symbol_id", "7")
        cat.commit()
        assert cat.blobs_with_symbol(b"fresh_1") == [999]
        assert cat.blobs_with_symbol(b"x_0001")[-1] == 999
        assert cat.symbols.id_of(b"fresh_1") == 6
    (root / "b.py").write_bytes(b"fresh_1 = 1\nfresh_2 = 2\n")
    indexer.index(root, jobs=1)
    with cstvault.open(root) as store:
        db = store.catalog.db
        assert db.execute("SELECT count(*) FROM symbol_texts").fetchone()[0] == 0  # folded
        assert store.stats()["symbols"] == 5 + 2  # fresh_1 kept its id, fresh_2 is new
        assert store.catalog.symbols.id_of(b"fresh_1") == 6
        assert store.catalog.symbols.id_of(b"fresh_2") == 7
        assert store.catalog.blobs_with_symbol(b"fresh_1")[-1] == 999
        assert store.files_with_symbol("fresh_1") == ["b.py"]
        assert store.files_with_symbol("fresh_2") == ["b.py"]


def test_packed_texts_round_trip():
    texts = [b"", b"a", b"\xff\x00b", b"z" * 300]
    assert symtab.unpack_texts(symtab.pack_texts(texts, 41)) == list(
        zip(texts, range(41, 45), strict=True)
    )


def test_damaged_block_is_detected(tmp_path):
    root = indexed(tmp_path, 5)
    db = sqlite3.connect(root / ".cstvault" / "catalog.sqlite")
    data = bytearray(db.execute("SELECT data FROM symbol_blocks").fetchone()[0])
    data[len(data) // 2] ^= 0x40
    db.execute("UPDATE symbol_blocks SET data = ?", (bytes(data),))
    db.commit()
    db.close()
    with cstvault.open(root) as store, pytest.raises(CorruptRecord):
        store.files_with_symbol("x_0002")


def test_block_round_trip():
    texts = [b"a", b"ab", b"b" * 300, b"\xff\x00"]
    streams = [b"\x01", b"\x02\x03", b"", b"\x7f"]
    block = symtab.Block(symtab.pack_block(texts, [5, 1, 9, 2], streams))
    assert block.entries() == list(zip(texts, [5, 1, 9, 2], streams, strict=True))
    assert block.find(b"ab") == 1 and block.find(b"aa") is None and block.find(b"c") is None


@given(st.lists(st.tuples(st.binary(max_size=20), st.integers(1, 2**40), st.binary(max_size=9)),
                max_size=3 * symtab.BLOCK + 5))  # fmt: skip
def test_pack_blocks_equals_pack_block_per_run(entries):
    texts, ids, streams = ([e[k] for e in entries] for k in range(3))
    want = [
        (texts[a], len(texts[a : a + symtab.BLOCK]),
         symtab.pack_block(texts[a : a + symtab.BLOCK], ids[a : a + symtab.BLOCK],
                           streams[a : a + symtab.BLOCK]))
        for a in range(0, len(texts), symtab.BLOCK)
    ]  # fmt: skip
    assert symtab.pack_blocks(texts, ids, streams) == want


@given(st.lists(st.sets(st.integers(0, 2**40), max_size=30), max_size=20))
def test_pack_many_equals_pack_ids(sets):
    arrays = [np.sort(np.array(sorted(s), dtype=np.int64)) for s in sets]
    assert pack_many(arrays) == [pack_ids(a) for a in arrays]
    for a, data in zip(arrays, pack_many(arrays), strict=True):
        assert (unpack_ids(data, a.size) == a).all()


def test_runs_merged_mid_index_keep_ids_unique_and_postings_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(symtab, "MAX_RUNS", 2)
    root = tmp_path / "r"
    root.mkdir()
    for k in range(12):
        (root / f"f{k:02d}.py").write_bytes(names("s", 10 + k) + b"common = %d\n" % k)
    indexer.index(root, jobs=1, batch_files=3)
    with cstvault.open(root) as store:
        assert store.stats()["symbols"] == 21 + 1  # s_0000..s_0020 and common, once each
        assert store.files_with_symbol("common") == [f"f{k:02d}.py" for k in range(12)]
        assert store.files_with_symbol("s_0020") == ["f11.py"]
        for k in range(21):  # f{j} defines s_0000 .. s_{9 + j}: postings survived every merge
            want = [f"f{j:02d}.py" for j in range(12) if k < 10 + j]
            assert store.files_with_symbol(f"s_{k:04d}") == want, k
        ids = [store.catalog.symbols.id_of(b"s_%04d" % k) for k in range(21)]
        assert sorted(ids + [store.catalog.symbols.id_of(b"common")]) == list(range(1, 23))


@given(st.binary(max_size=60), st.lists(st.tuples(st.integers(-3, 70), st.integers(-3, 70)),
                                        max_size=40), st.integers(0, 8))  # fmt: skip
def test_distinct_slices_matches_python(source, spans, max_len):
    from cstvault import _native

    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    want = {source[s:e] for s, e in spans if 0 <= s < e <= len(source) and e - s <= max_len}
    assert _native.distinct_slices(source, starts, ends, max_len) == want


@given(st.lists(st.sets(st.integers(1, 2**40), max_size=25), min_size=1, max_size=6))
def test_merge_postings_is_the_union(sets):
    """The C merge of posting streams equals the numpy union, whatever their overlap."""
    from cstvault import _native

    streams = [symtab._stream(np.array(sorted(s), dtype=np.int64)) for s in sets]
    want = sorted(set().union(*sets))
    got = _native.merge_postings(streams)
    assert symtab._blobs(got).tolist() == want
    assert got == symtab._stream(np.array(want, dtype=np.int64))


def test_merge_postings_rejects_a_cut_stream():
    with pytest.raises(CorruptRecord):
        symtab._union([b"\x05", b"\x81"])  # a continuation byte with nothing after
