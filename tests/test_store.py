"""The store: index a repository the test writes, read trees back, verify, resume, dedup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import cstvault
from cstvault import cli, indexer
from cstvault.codec import CorruptRecord
from cstvault.extract import parse
from cstvault.freeze import DICT_MIN_FILES, freeze
from cstvault.sources import DeferredSource
from cstvault.store import Store
from cstvault.verify import compare_trees, verify_store
from snippets import SNIPPETS
from test_cli import EXT, make_repo


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    make_repo(root)
    (root / "copy_of_python_ok.py").write_bytes(SNIPPETS["python"]["ok"])  # a duplicate
    return root


def test_index_then_read_every_tree(repo):
    report = indexer.index(repo, jobs=1)
    assert report.files == 3 * len(SNIPPETS) + 2  # snippets, keep.py, the duplicate
    assert report.deduplicated == 1
    assert report.skipped == {"binary": 1}
    with cstvault.open(repo) as store:
        rows = {f.path: f for f in store.files()}
        assert "ignored/x.py" not in rows and "blob.c" not in rows
        for lang, cases in SNIPPETS.items():
            for name, src in cases.items():
                path = f"{lang}_{name}.{EXT[lang]}"
                tree = store.tree(path)
                assert tree.text == src
                assert compare_trees(path, parse(src, lang), tree) == []
                assert rows[path].lines == src.count(b"\n") + (not src.endswith(b"\n"))
        stats = store.stats()
        assert stats["files"] == report.files and stats["blobs"] == report.files - 1
        assert stats["disk_bytes"]["total"] > 0


def test_node_at_and_ancestors(repo):
    indexer.index(repo, jobs=1)
    with cstvault.open(repo) as store:
        src = SNIPPETS["python"]["ok"]
        line = src.split(b"\n").index(b"    x: int = 1")
        node = store.node_at("python_ok.py", line, 4)
        assert node.text == b"x" and node.type == "identifier"
        chain = []
        while node is not None:
            chain.append(node.type)
            node = node.parent
        assert chain[-1] == "module" and "class_definition" in chain


def test_parallel_index_matches_serial(repo, tmp_path):
    a, b = tmp_path / "s1", tmp_path / "s2"
    indexer.index(repo, a, jobs=1)
    indexer.index(repo, b, jobs=2)
    with Store.open(a) as sa, Store.open(b) as sb:
        fa = [(f.path, f.nodes, f.lines) for f in sa.files()]
        fb = [(f.path, f.nodes, f.lines) for f in sb.files()]
        assert fa == fb
        for path, _, _ in fa:
            assert str(sa.tree(path).root_node) == str(sb.tree(path).root_node)


@pytest.mark.parametrize(("jobs", "walk_chunk"), [(1, 512), (2, 512), (2, 3)])
def test_resume_and_changes(repo, jobs, walk_chunk, monkeypatch):
    """Re-runs index only what changed and drop what is gone; the walk's paths go to the
    catalog WALK_CHUNK at a time (3: chunks end inside and across directories)."""
    monkeypatch.setattr(indexer, "WALK_CHUNK", walk_chunk)
    seen: list[tuple[int, int]] = []
    first = indexer.index(repo, jobs=jobs, progress=lambda d, t, _: seen.append((d, t)))
    total = first.files + sum(first.skipped.values())
    assert [d for d, _ in seen] == list(range(1, total + 1))
    # the total: None while the walk runs ahead of the encoding, then every file's
    totals = [t for _, t in seen]
    first = totals.index(total)
    assert set(totals[:first]) <= {None} and set(totals[first:]) == {total}
    again = indexer.index(repo, jobs=jobs)
    assert again.files == 0 and again.unchanged == 3 * len(SNIPPETS) + 2
    (repo / "sub" / "keep.py").write_bytes(b"y = 3\nz = 4\n")
    (repo / "go_ok.go").unlink()
    third = indexer.index(repo, jobs=jobs)
    assert third.files == 1 and third.removed == 1
    with cstvault.open(repo) as store:
        assert store.tree("sub/keep.py").text == b"y = 3\nz = 4\n"
        row = next(f for f in store.files() if f.path == "sub/keep.py")
        assert row.version == 2
        with pytest.raises(KeyError):
            store.tree("go_ok.go")


def test_verify_store_and_byte_flip(repo):
    indexer.index(repo, jobs=1)
    with cstvault.open(repo) as store:
        report = verify_store(store)
        assert report.mismatched == 0 and report.ok == report.files > 0
        blob, _ = store.catalog.blob_for("rust_ok.rs")
        seg, off, length, _ = blob.tree
    seg_file = repo / ".cstvault" / "segments" / f"{seg:08d}.seg"
    data = bytearray(seg_file.read_bytes())
    data[off + length // 2] ^= 0x10
    seg_file.write_bytes(bytes(data))
    with cstvault.open(repo) as store:
        with pytest.raises(CorruptRecord, match="rust_ok.rs"):
            store.tree("rust_ok.rs")
        assert store.tree("java_ok.java").text == SNIPPETS["java"]["ok"]  # others still fine
        report = verify_store(store)
        assert report.mismatched == 1
        assert report.mismatches[0].path == "rust_ok.rs"


def test_cli_index_stats_show_verify(repo):
    run = CliRunner().invoke
    res = run(cli.main, ["index", str(repo), "--jobs", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["files"] == 3 * len(SNIPPETS) + 2 and out["lines"] > 100
    assert out["disk_bytes"]["total"] > 0
    res = run(cli.main, ["stats", "--store", str(repo), "--json"])
    assert json.loads(res.output)["files"] == out["files"]
    res = run(cli.main, ["show", "python_ok.py", "--store", str(repo)])
    assert res.exit_code == 0 and res.output.startswith("(module")
    res = run(cli.main, ["show", "python_ok.py:6:5", "--store", str(repo)])
    assert res.exit_code == 0 and "identifier" in res.output and "module" in res.output
    res = run(cli.main, ["show", "nope.py", "--store", str(repo)])
    assert res.exit_code != 0 and "not in the store" in res.output
    res = run(cli.main, ["verify", "--store", str(repo / ".cstvault"), "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output)["mismatched"] == 0


def test_symbols_are_interned_and_found_without_decoding(repo):
    indexer.index(repo, jobs=2)
    with cstvault.open(repo) as store:
        assert store.files_with_symbol("metaclass") == ["copy_of_python_ok.py", "python_ok.py"]
        assert store.files_with_symbol("fmt") == ["go_ok.go", "rust_ok.rs"]  # Go and Rust
        ns = store.files_with_symbol("ns")
        assert ns == ["cpp_ok.cpp"]
        assert store.files_with_symbol("no_such_symbol_anywhere") == []
        before = store.cache.summary()["frozen"]["hits"]
        store.files_with_symbol("A")
        assert store.cache.summary()["frozen"]["hits"] == before  # no tree was read
        stats = store.stats()
        assert stats["symbols"] > 50 and stats["symbol_refs"] > stats["symbols"]
        assert stats["symbol_interning_ratio"] > 1
        # a reference is a (blob, symbol) pair: the duplicate file's blob counts once
        from cstvault.extract import parse_extract
        from cstvault.languages import detect
        from cstvault.symbols import symbol_texts

        texts = {store.source(f.path): detect(f.path) for f in store.files()}
        assert len(texts) == len(list(store.files())) - 1
        assert stats["symbol_refs"] == sum(len(symbol_texts(parse_extract(src, lang), src))
                                           for src, lang in texts.items())  # fmt: skip


def test_sources_come_from_the_working_tree_read_once_until_it_changes(repo, monkeypatch):
    indexer.index(repo, jobs=1)
    with cstvault.open(repo) as store:
        tree = store.tree("java_ok.java")
        assert isinstance(tree._src, DeferredSource)  # nothing read until text is asked for
        assert tree.root_node.child_count > 0
        before = store.cache.stats["hot"].bytes
        reads = []
        monkeypatch.setattr(store, "_source", lambda *a: reads.append(a))  # no stored copy
        assert isinstance(tree._source, bytes)  # the tree's own copy of the working file
        assert tree.text == SNIPPETS["java"]["ok"] and not reads
        monkeypatch.undo()
        # counted in the budget
        assert store.cache.stats["hot"].bytes == before + len(SNIPPETS["java"]["ok"])
        # an edit: size/mtime differ, so the stored version is served
        (repo / "java_ok.java").write_bytes(b"class Changed {}\n")
        tree = store.tree("java_ok.java")
        assert isinstance(tree._source, bytes) and tree.text == SNIPPETS["java"]["ok"]
        node = tree.root_node.children[0]
        assert node.text == SNIPPETS["java"]["ok"][node.start_byte : node.end_byte]


def test_a_same_size_same_mtime_rewrite_falls_back_by_crc(repo):
    import os

    indexer.index(repo, jobs=1)
    path = repo / "go_ok.go"
    st = path.stat()
    original = path.read_bytes()
    path.write_bytes(original.replace(b"main", b"mian"))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    with cstvault.open(repo) as store:
        assert store.tree("go_ok.go").text == original  # the CRC caught it


def test_working_file_changed_after_open_but_before_text_is_read(repo):
    indexer.index(repo, jobs=1)
    path = repo / "rust_ok.rs"
    original = path.read_bytes()
    with cstvault.open(repo) as store:
        tree = store.tree("rust_ok.rs")  # size and mtime still match: text deferred
        path.write_bytes(original + b"// appended\n")
        assert tree.text == original  # length differs from the record's: the store's copy
        node = tree.root_node.children[0]
        assert node.text == original[node.start_byte : node.end_byte]


def test_text_first_read_after_the_store_closed(repo):
    indexer.index(repo, jobs=1)
    with cstvault.open(repo) as store:
        same = store.tree("c_ok.c")
        changed = store.tree("go_ok.go")
    assert same.text == (repo / "c_ok.c").read_bytes()  # unchanged file: no store needed
    (repo / "go_ok.go").write_bytes(b"package changed\n")
    with pytest.raises(ValueError, match="store is closed"):
        _ = changed.text


def test_clear_errors_for_missing_or_foreign_stores(tmp_path):
    import sqlite3

    run = CliRunner().invoke
    res = run(cli.main, ["stats", "--store", str(tmp_path)])
    assert res.exit_code == 1 and "no cstvault store" in res.output
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / "catalog.sqlite")
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    db.commit()
    db.close()
    res = run(cli.main, ["stats", "--store", str(old)])
    assert res.exit_code == 1 and "catalog schema unknown" in res.output
    assert "Traceback" not in res.output


def test_dictionary_contexts_are_bounded(tmp_path, monkeypatch):
    root = tmp_path / "many"
    root.mkdir()
    langs = ["python", "go", "c"]
    for lang in langs:
        for k in range(DICT_MIN_FILES):
            (root / f"{lang}_{k}.{EXT[lang]}").write_bytes(SNIPPETS[lang]["ok"] * (k + 1))
    indexer.index(root, jobs=1)
    freeze(root / ".cstvault", jobs=1)  # trains the dictionaries
    monkeypatch.setattr("cstvault.store.DCTX_CACHE", 1)
    with cstvault.open(root, cstvault.CacheConfig(max_memory_mb=0)) as store:
        assert len(store.catalog.dictionaries()) == 2 * len(langs)  # trained: tree + source
        for k in range(DICT_MIN_FILES):
            for lang in langs:  # alternate languages: every read switches dictionary
                path = f"{lang}_{k}.{EXT[lang]}"
                assert store.source(path) == SNIPPETS[lang]["ok"] * (k + 1)
                assert store.tree(path).root_node.end_byte > 0
                assert len(store._dctxs) <= 1


def test_reading_needs_no_grammar_loaded(repo):
    import subprocess
    import sys

    indexer.index(repo, jobs=1)
    code = (
        "import sys, cstvault\n"
        "with cstvault.open(sys.argv[1]) as s:\n"
        "    for f in s.files():\n"
        "        t = s.tree(f.path)\n"
        "        assert str(t.root_node).startswith('(') and t.text\n"
        "    print(sorted(m for m in sys.modules if m.startswith('tree_sitter_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


_NO_NUMPY_READER = """
import sys

class Refuse:  # any import of numpy fails, and says from where
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "numpy":
            raise ImportError("the read path imported numpy")

sys.meta_path.insert(0, Refuse())
import cstvault

def visit(n, depth):
    _ = (n.type, n.kind_id, n.grammar_name, n.is_named, n.is_missing, n.is_extra, n.is_error,
         n.has_error, n.byte_range, n.start_point, n.end_point, n.range, n.text, n.child_count,
         n.named_child_count, n.descendant_count, n.parent, n.next_sibling, n.prev_sibling,
         n.next_named_sibling, n.prev_named_sibling, n.stable_id, repr(n), n.id)
    for i in range(n.child_count):
        _ = n.child(i), n.field_name_for_child(i)
    _ = n.child_by_field_name("name"), n.children_by_field_name("body"), n.named_children
    _ = n.descendant_for_point_range(n.start_point, n.end_point)
    _ = n.named_descendant_for_byte_range(n.start_byte, n.start_byte)
    _ = n.first_child_for_byte(n.start_byte)
    if depth < 4:
        for c in n.children:
            visit(c, depth + 1)

seen = 0
with cstvault.open(sys.argv[1]) as s:
    for f in s.files():
        t = s.tree(f.path)
        visit(t.root_node, 0)
        c = t.walk()
        while c.goto_first_child():
            _ = c.node, c.field_name, c.depth
        while c.goto_next_sibling():
            pass
        _ = t.root_node_with_offset(1, (0, 1)).start_point, t.copy(), t.text, len(t)
        _ = s.node_at(f.path, 0, 0).type, s.source(f.path)
        seen += 1
print(seen, "numpy" in sys.modules)
"""


def test_reading_needs_no_numpy(repo):
    """open, tree, the node API, cursors, node_at and source run without numpy (whose
    import alone is ~19 MB of a reader's RSS)."""
    import subprocess
    import sys

    indexer.index(repo, jobs=1)
    out = subprocess.run([sys.executable, "-c", _NO_NUMPY_READER, str(repo)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    seen, loaded = out.stdout.split()
    assert int(seen) == len(list(Store.open(repo).files())) > 5 and loaded == "False"


def test_wheel_versions_read_without_importlib_metadata_agree_with_it():
    from importlib import metadata

    from cstvault import languages

    for name in languages.names():
        spec = languages.BY_NAME[name]
        assert languages.wheel_version(name) == metadata.version(spec.distribution)


def test_stored_tables_equal_the_grammars():
    from cstvault import languages

    for name in languages.names():
        a = languages.grammar_tables(name)
        b = languages.from_bytes(languages.to_bytes(a))
        assert a.names == b.names and a.fields == b.fields
        for col in ("named", "visible", "identifier", "token_len"):
            assert (getattr(a, col) == getattr(b, col)).all(), (name, col)
        assert a.token_lens.tolist() == b.token_lens.tolist() == a.token_len.tolist()


def _open_segments() -> int:
    """Descriptors of segment files this process holds open (/proc/self/fd)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _target(fd).endswith(".seg"))


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def _segment_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.rstrip().endswith(".seg"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_segments_are_read_through_a_bounded_lru_of_open_files(repo, monkeypatch):
    from cstvault.store import segments

    monkeypatch.setattr(segments, "SEGMENT_LIMIT", 512)  # small segments: several of them
    indexer.index(repo, jobs=1)
    with cstvault.open(repo, cstvault.CacheConfig(max_memory_mb=0)) as store:
        store._reader.max_open = 2
        paths = sorted(f.path for f in store.files())
        seg_ids = {store._blob(p).src[0] for p in paths}
        assert len(seg_ids) > 2
        for path in paths:
            store.source(path)
            assert _open_segments() <= 2 and _segment_maps() == 0  # nothing mapped, bounded
        assert len(store._reader._fds) == 2
        last = next(reversed(store._reader._fds))
        store._reader.forget(last)
        assert last not in store._reader._fds and _open_segments() == 1
    assert _open_segments() == 0  # closing the store closes them


def test_segment_read_without_lru_keeps_nothing_open(repo):
    indexer.index(repo, jobs=1)
    with cstvault.Store.open(repo, segment_lru=False) as store:
        for f in store.files():
            assert store.source(f.path)
            assert _open_segments() == 0


def test_text_served_from_the_store_counts_against_the_budget(repo):
    indexer.index(repo, jobs=1)
    with cstvault.open(repo) as store:
        tree = store.tree("java_ok.java")
        before = store.cache.stats["hot"].bytes
        (repo / "java_ok.java").write_bytes(b"class Changed {}\n")  # before the text is read
        assert tree.text == SNIPPETS["java"]["ok"]  # the stored copy, now held in RAM
        assert store.cache.stats["hot"].bytes == before + len(SNIPPETS["java"]["ok"])


def test_segment_reader_reopens_a_segment_whose_id_was_reused(tmp_path):
    from cstvault.store.segments import SegmentReader, SegmentWriter, segment_path

    first = SegmentWriter(tmp_path, 1)
    a = first.append(b"frame of the first segment 1")
    first.close()
    reader = SegmentReader(tmp_path)
    assert reader.read(*a) == b"frame of the first segment 1"  # segment 1 now held open
    segment_path(tmp_path, 1).unlink()  # gc deletes it; a later writer reuses the id
    second = SegmentWriter(tmp_path, 1)
    b = second.append(b"another frame, in the new segment 1, longer")
    second.close()
    assert reader.read(*b) == b"another frame, in the new segment 1, longer"
    damaged = (b[0], b[1], b[2], b[3] ^ 1)
    with pytest.raises(CorruptRecord, match="CRC32C"):
        reader.read(*damaged)  # a real mismatch still fails after the reopen
    with pytest.raises(CorruptRecord, match="truncated"):
        reader.read(b[0], b[1], b[2] + 100, b[3])
    reader.close()


def test_native_crc32c_is_the_crc32c_packages_both_ways():
    import os as _os

    import crc32c as _crc

    from cstvault import _native

    for n in (0, 1, 3, 7, 8, 9, 63, 64, 65, 1000, 4097):
        data = _os.urandom(n)
        want = _crc.crc32c(data)
        assert _native.crc32c(data) == want == _native.crc32c_table(data)
        half = n // 2
        assert _native.crc32c(data[half:], _native.crc32c(data[:half])) == want
        assert _native.crc32c_table(data[half:], _native.crc32c_table(data[:half])) == want


def test_checked_stats_leaves_out_a_damaged_row():
    from cstvault import _native
    from cstvault.store.catalog import row_check

    rows = [("a.py", 10, 5, 1, row_check("a.py", 1, 10, 5)),
            ("b\udcff.py", 3, 4, 2, row_check("b\udcff.py", 2, 3, 4)),
            ("c.py", 7, 8, 3, row_check("c.py", 3, 7, 8) ^ 1)]  # fmt: skip
    assert _native.checked_stats(rows) == {"a.py": (10, 5), "b\udcff.py": (3, 4)}


@pytest.mark.parametrize("jobs", [1, 2])
def test_duplicates_across_lookups_and_batches_make_one_blob(tmp_path, monkeypatch, jobs):
    """Content keys are looked up LOOKUP files at a time; a duplicate whose first copy was
    committed by a batch closed within the same lookup is still found."""
    monkeypatch.setattr(indexer, "LOOKUP", 4)
    root = tmp_path / "r"
    root.mkdir()
    for k in range(11):
        (root / f"a{k:02d}.py").write_bytes(b"same = 1\n")
        (root / f"b{k:02d}.py").write_bytes(b"other_%d = 2\n" % (k % 3))
    rep = indexer.index(root, jobs=jobs, batch_files=3)
    assert rep.files == 22 and rep.new_blobs == 1 + 3 and rep.deduplicated == 22 - 4
    with cstvault.open(root) as store:
        assert store.stats()["blobs"] == 4
        assert verify_store(store).mismatched == 0
        assert store.files_with_symbol("same") == [f"a{k:02d}.py" for k in range(11)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_shards_files_encoded_alone_go_first_largest_first_and_commit_what_came_before(
        repo, tmp_path, monkeypatch, jobs):  # fmt: skip
    """With `paths` (a shard's share), the files whose parse estimate is over the budget
    are encoded first, largest first, each after the batch before it was committed."""
    single = tmp_path / "one"
    indexer.index(repo, single, jobs=1)
    with cstvault.open(single) as one:
        rels = [f.path for f in one.files()]
        want = {r: str(one.tree(r).root_node) for r in rels}
    monkeypatch.setattr(indexer, "PARSE_BUDGET", 300 * indexer.PARSE_BYTES_PER_BYTE)
    size = {r: (repo / r).stat().st_size for r in rels}
    large = sorted((r for r in rels if size[r] > 300), key=lambda r: (-size[r], r))
    assert 2 <= len(large) < len(rels)
    order, commits = [], []
    report = indexer.index(repo, tmp_path / "s", jobs=jobs, paths=rels,
                           progress=lambda done, total, path: order.append(path),
                           on_commit=commits.append)  # fmt: skip
    assert report.files == len(rels)
    assert order[: len(large)] == large and sorted(order) == sorted(rels)
    assert commits[: len(large) - 1] == [[p] for p in large[:-1]]  # each alone in its batch
    with cstvault.open(tmp_path / "s") as store:
        assert {r: str(store.tree(r).root_node) for r in rels} == want


def test_in_lists_take_a_few_statement_forms_whatever_their_length():
    """IN lists are bound so that a statement's text takes few forms (the statement cache
    of each connection keeps one prepared statement per form), and select what they list."""
    import sqlite3

    from cstvault.store.catalog import IN_CHUNK, _in_chunks

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, h BLOB)")
    db.executemany("INSERT INTO t VALUES (?, ?)", ((k, b"%d" % k) for k in range(1200)))
    ints, blobs = set(), set()
    for n in range(1, 1100, 7):
        want = list(range(3, 3 + 2 * n, 2))
        got = []
        for chunk, params, marks in _in_chunks(want):
            assert len(chunk) <= IN_CHUNK
            ints.add(marks)
            got += [r for (r,) in db.execute(f"SELECT id FROM t WHERE id IN ({marks})", params)]
        assert sorted(got) == [w for w in want if w < 1200]
        keys = [b"%d" % w for w in want]
        got = []
        for _, params, marks in _in_chunks(keys):
            blobs.add(marks)
            got += [r for (r,) in db.execute(f"SELECT h FROM t WHERE h IN ({marks})", params)]
        assert sorted(got) == sorted(k for k in keys if int(k) < 1200)
    assert len(ints) == 1 and len(blobs) <= 8
