"""Whole-store queries: the same answers as py-tree-sitter file by file, files that cannot
match skipped unread, workers in parallel, the CLI."""

from __future__ import annotations

import json

import pytest
import tree_sitter as ts
from click.testing import CliRunner

import cstvault
from cstvault import cli, indexer, languages
from cstvault.bench.reliability import make_repo
from cstvault.query import Query
from cstvault.search import plan, required_literals

_KEEP: list = []  # py-tree-sitter queries kept alive (see test_query.py)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("searchrepo")
    make_repo(root, files=150)
    indexer.index(root, jobs=1)
    return root


def _expected(repo, lang: str, text: str) -> list[tuple]:
    q = ts.Query(languages.language(lang), text)
    _KEEP.append(q)
    parser = ts.Parser(languages.language(lang))
    out = []
    ext = {"python": ".py", "go": ".go", "rust": ".rs"}[lang]
    for path in sorted(p for p in repo.rglob(f"*{ext}") if ".cstvault" not in p.parts):
        rel = path.relative_to(repo).as_posix()
        root = parser.parse(path.read_bytes()).root_node
        for pattern, caps in ts.QueryCursor(q).matches(root):
            out.append((rel, pattern, sorted((k, [(n.start_byte, n.end_byte, n.type) for n in v])
                                             for k, v in caps.items())))  # fmt: skip
    return out


def _ours(matches) -> list[tuple]:
    return [(m.path, m.pattern_index, sorted((k, [(c.start_byte, c.end_byte, c.type) for c in v])
                                             for k, v in m.captures.items()))
            for m in matches]  # fmt: skip


@pytest.mark.parametrize(("lang", "text"), [
    ("python", '(function_definition name: (identifier) @n (#eq? @n "f5_2"))'),
    ("python", '((identifier) @x (#any-of? @x "f10_1" "f999_0"))'),
    ("python", '((identifier) @x (#not-any-of? @x "a" "b" "self") (#not-eq? @x "f3_1"))'),
    ("python", "(function_definition parameters: (parameters (identifier) @p) body: (block "
               "(return_statement (binary_operator left: (list (binary_operator left: "
               "(identifier) @l))))) (#eq? @p @l))"),
    ("python", "(binary_operator left: (identifier) @l right: (identifier) @r (#eq? @l @r))"
               "(binary_operator left: (identifier) @l right: (identifier) @r (#not-eq? @l @r))"),
    ("python", '((identifier) @i (#any-eq? @i "y"))'),
    ("python", "(function_definition parameters: (parameters (identifier) @p))"),
    ("python", '(binary_operator left: (list) @l) (default_parameter value: (_) @v)'),
    ("go", "(function_declaration name: (identifier) @f)"),
    ("rust", '(function_item name: (identifier) @f (#match? @f "_1$"))'),
])  # fmt: skip
@pytest.mark.parametrize("jobs", [1, 2])
def test_store_queries_answer_as_tree_sitter_does_file_by_file(repo, lang, text, jobs):
    with cstvault.open(repo) as store:
        got = _ours(store.query(text, lang, jobs=jobs))
    assert got == _expected(repo, lang, text)
    assert got or "f999_0" in text or "#match" in text


def test_files_that_cannot_match_are_not_read(repo, monkeypatch):
    with cstvault.open(repo) as store:
        q = Query("python", '(function_definition name: (identifier) @n (#eq? @n "f5_2"))')
        p = plan(store, q)
        assert p.literals == [b"f5_2"] and p.paths == ["pkg5/m0005.py"]
        assert p.candidates == 30
        read = []
        real = store.record_and_text
        monkeypatch.setattr(store, "record_and_text", lambda path: read.append(path) or
                            real(path))  # fmt: skip
        got = list(store.query('(function_definition name: (identifier) @n (#eq? @n "f5_2"))',
                               "python"))  # fmt: skip
        assert read == ["pkg5/m0005.py"]
        assert [(m.path, m.captures["n"][0].text) for m in got] == [("pkg5/m0005.py", b"f5_2")]
        assert len(plan(store, q, ["pkg4/**"]).paths) == 0
        assert plan(store, Query("python", "(identifier) @i"), ["pkg4/**"]).candidates == 4


@pytest.mark.parametrize(("text", "literals"), [
    ('((identifier) @x (#eq? @x "a"))', [b"a"]),
    ('((identifier) @x (#any-of? @x "a" "b")) ((identifier) @y (#eq? @y "c"))',
     [b"a", b"b", b"c"]),
    ('((_) @x (#eq? @x "a"))', None),  # a wildcard may capture a non-identifier
    ('((string) @x (#eq? @x "a"))', None),
    ('((identifier)? @x (#eq? @x "a"))', None),  # may match without a capture
    ('((identifier) @x (#not-eq? @x "a"))', None),
    ('((identifier) @x (#eq? @x "a")) (call) @c', None),  # the second pattern needs none
    ('((identifier) @x (#eq? @x "a b"))', None),  # never a symbol
])  # fmt: skip
def test_required_literals(text, literals):
    assert required_literals(Query("python", text)) == literals


def test_query_cli(repo):
    store = str(repo / ".cstvault")
    text = '(function_definition name: (identifier) @n (#any-of? @n "f5_2" "f15_0"))'
    res = CliRunner().invoke(cli.main, ["query", text, "--lang", "python", "--store", store])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["pkg1/m0015.py:1:5  @n  f15_0",
                                       "pkg5/m0005.py:7:5  @n  f5_2"]  # fmt: skip
    res = CliRunner().invoke(cli.main, ["query", text, "--lang", "python", "--store", store,
                                        "--json"])  # fmt: skip
    out = json.loads(res.output)
    assert out["matches"] == 2 and out["files_read"] == 2 and out["files_of_language"] == 30
    assert out["matches_found"][0]["captures"]["n"][0]["start_point"] == [0, 4]
    scm = repo / "q.scm"
    scm.write_text("(function_definition) @d")
    res = CliRunner().invoke(cli.main, ["query", str(scm), "--lang", "python", "--store", store,
                                        "--count", "pkg1/**"])  # fmt: skip
    assert res.output.endswith(" matches in 4 files (4 of 4 python files read)\n")
    res = CliRunner().invoke(cli.main, ["query", "(function_definition", "--lang", "python",
                                        "--store", store])  # fmt: skip
    assert res.exit_code == 1 and "query: Unexpected EOF" in res.output


def test_nothing_to_search_is_a_clear_error(repo, tmp_path):
    from cstvault.search import NothingToSearch

    store = str(repo / ".cstvault")
    for args, said in ((["--lang", "java"], "holds no java files"),
                       (["--lang", "python", "nowhere/**"], "no stored python file matches")):
        res = CliRunner().invoke(cli.main, ["query", "(identifier) @i", *args, "--store", store])
        assert res.exit_code == 1 and said in res.output, res.output
    (tmp_path / "e").mkdir()
    indexer.index(tmp_path / "e", jobs=1)  # an empty store
    with cstvault.open(tmp_path / "e") as empty, pytest.raises(NothingToSearch):
        list(empty.query("(identifier) @i", "python"))
    res = CliRunner().invoke(cli.main, ["query", "(identifier) @i", "--lang", "cobol",
                                        "--store", store])  # fmt: skip
    assert res.exit_code == 2 and "cobol" in res.output


def test_files_without_a_needed_kind_are_not_read(repo, monkeypatch):
    """The kind prefilter: the generated Python files hold no lambda, no class and no
    comment, so patterns that need one are answered without reading a file."""
    with cstvault.open(repo) as store:
        for text in ("(lambda) @l", "(class_definition name: (_) @n)",
                     "(function_definition (comment) @c)"):  # fmt: skip
            p = plan(store, Query("python", text))
            assert p.paths == [] and p.kind_skipped == p.candidates == 30, text
        # alternatives, quantifiers and wildcards need nothing they could skip
        for text in ("[(lambda) (function_definition)] @x", "(function_definition (comment)* @c)",
                     "(function_definition (comment)? @c)", "(_) @x"):  # fmt: skip
            assert plan(store, Query("python", text)).kind_skipped == 0, text
        # with the prefilter's decisions, still tree-sitter's answers
        text = "[(lambda) (return_statement)] @x (class_definition) @c"
        assert _ours(store.query(text, "python")) == _expected(repo, "python", text)


def test_a_store_without_kind_bitmaps_reads_every_file(tmp_path):
    make_repo(tmp_path, files=20)
    indexer.index(tmp_path, jobs=1)
    with cstvault.open(tmp_path, write=True) as store:
        store.catalog.db.execute("DROP TABLE blob_kinds")  # as a store made before them
    with cstvault.open(tmp_path) as store:
        p = plan(store, Query("python", "(lambda) @l"))
        assert p.kind_skipped == 0 and len(p.paths) == p.candidates
        assert list(store.query("(lambda) @l", "python")) == []
    indexer.index(tmp_path, jobs=1)  # new blobs get bitmaps again; the table is made anew
    (tmp_path / "new.py").write_text("x = lambda: 1\n")
    indexer.index(tmp_path, jobs=1)
    with cstvault.open(tmp_path) as store:
        got = list(store.query("(lambda) @l", "python"))
        assert [m.path for m in got] == ["new.py"]


def test_a_damaged_kind_bitmap_is_an_error(tmp_path):
    from cstvault.codec import CorruptRecord

    make_repo(tmp_path, files=20)
    indexer.index(tmp_path, jobs=1)
    with cstvault.open(tmp_path, write=True) as store:
        store.catalog.db.execute("UPDATE blob_kinds SET bits = x'00000000000000'")
    with cstvault.open(tmp_path) as store, pytest.raises(CorruptRecord, match="node-kind"):
        plan(store, Query("python", "(lambda) @l"))
