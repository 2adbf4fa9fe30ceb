"""Queries over cstvault trees answer exactly what py-tree-sitter's Query/QueryCursor answer
over tree-sitter's own tree of the same source."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import tree_sitter as ts

import cstvault
from cstvault import languages
from cstvault.query import Query, QueryCursor, QueryError
from snippets import SNIPPETS

HERE = Path(__file__).resolve().parent
OWN = sorted((HERE.parent / "src" / "cstvault").rglob("*.py"))[:12]

QUERIES = {
    "python": [
        "(function_definition name: (identifier) @name) @def",
        "(call function: (identifier) @fn arguments: (argument_list . (_) @first))",
        "(call function: (attribute object: (_) @obj attribute: (identifier) @attr))",
        "(function_definition !return_type) @untyped",
        "[(string) (integer) (float)] @literal",
        "(block (_)* @stmts)",
        "(block . (expression_statement) @first_stmt)",
        "(argument_list (_) @a . (_) @b)",
        "((identifier) @self (#eq? @self \"self\"))",
        "((identifier) @x (#not-eq? @x \"self\"))",
        "((identifier) @c (#match? @c \"^[A-Z]\"))",
        "((identifier) @c (#not-match? @c \"_\"))",
        "((identifier) @k (#any-of? @k \"len\" \"range\" \"print\"))",
        "(assignment left: (_) @l right: (_) @r (#eq? @l @r))",
        "(parameters (identifier)+ @ps)",
        "(parameters (identifier)? @p)",
        "(ERROR) @err",
        "(MISSING) @missing",
        "(_ (comment) @c)",
        "(expression) @expr",  # a supertype
        "(decorated_definition (decorator)* @d definition: (_) @def)",
        "((comment)+ @comments (#match? @comments \"#\"))",
        "((identifier) @x (#any-eq? @x \"x\"))",
        "((identifier) @x (#set! kind \"name\") (#is? local))",
        "(match_statement !alternative) @m",  # a field inherited through a renamed hidden rule
        "(_ !body) @bodiless",
    ],
    "rust": ["(function_item name: (identifier) @f) (struct_item name: (type_identifier) @s)",
             "(call_expression function: (_) @callee)", "(MISSING \";\") @m"],
    "go": ["(function_declaration name: (identifier) @f)", "(call_expression) @call"],
    "c": ["(function_definition declarator: (function_declarator declarator: (_) @name))"],
    "javascript": ["(call_expression function: (member_expression property: (_) @p))"],
}


def _key(node) -> tuple:
    return (node.start_byte, node.end_byte, node.type)


# py-tree-sitter 0.26.1 frees a Query holding #eq? string predicates twice (valgrind: a use
# after free in its query_dealloc), corrupting the heap for whatever runs next: the
# reference queries are kept alive for the whole session
_KEEP: list[ts.Query] = []


def _ts_query(lang: str, text: str) -> ts.Query:
    q = ts.Query(languages.language(lang), text)
    _KEEP.append(q)
    return q


def _theirs(lang: str, source: bytes, query_text: str):
    q = _ts_query(lang, query_text)
    tree = ts.Parser(languages.language(lang)).parse(source)
    return q, tree.root_node


def _compare(lang: str, source: bytes, query_text: str) -> int:
    q_ts, root_ts = _theirs(lang, source, query_text)
    q = Query(lang, query_text)
    root = cstvault.parse(source, lang).root_node
    theirs = ts.QueryCursor(q_ts).matches(root_ts)
    ours = QueryCursor(q).matches(root)
    norm = [[(p, sorted((k, [_key(n) for n in v]) for k, v in caps.items()))] for p, caps in theirs]
    assert [[(p, sorted((k, [_key(n) for n in v]) for k, v in caps.items()))]
            for p, caps in ours] == norm, query_text  # fmt: skip
    c_ts = ts.QueryCursor(q_ts).captures(root_ts)
    c = QueryCursor(q).captures(root)
    assert {k: sorted(map(_key, v)) for k, v in c.items()} == {
        k: sorted(map(_key, v)) for k, v in c_ts.items()}, query_text  # fmt: skip
    return len(ours)


@pytest.mark.parametrize("lang", sorted(QUERIES))
def test_queries_match_py_tree_sitter_on_snippets(lang):
    found = 0
    for source in SNIPPETS[lang].values():
        for text in QUERIES[lang]:
            found += _compare(lang, source, text)
    assert found > 0


def test_queries_match_on_real_files():
    found = 0
    for path in OWN:
        for text in QUERIES["python"]:
            found += _compare("python", path.read_bytes(), text)
    assert found > 500


@pytest.mark.parametrize("lang", ["python", "javascript", "rust", "go", "java", "c", "cpp"])
def test_the_grammars_own_tags_and_highlights_queries(lang):
    module = importlib.import_module(languages.BY_NAME[lang].module)
    found = 0
    for name in ("TAGS_QUERY", "HIGHLIGHTS_QUERY"):
        text = getattr(module, name, None)
        if text is None:
            continue
        for source in SNIPPETS[lang].values():
            found += _compare(lang, source, text)
    assert found > 0


def test_query_metadata_is_py_tree_sitters():
    text = '((identifier) @a (#eq? @a "x")) (call) @b @c (string)? @d'
    q, q_ts = Query("python", text), _ts_query("python", text)
    assert q.pattern_count == q_ts.pattern_count == 3
    assert q.capture_count == q_ts.capture_count
    assert [q.capture_name(i) for i in range(q.capture_count)] == [
        q_ts.capture_name(i) for i in range(q_ts.capture_count)]  # fmt: skip
    for i in range(q.pattern_count):
        assert q.start_byte_for_pattern(i) == q_ts.start_byte_for_pattern(i)
        assert q.end_byte_for_pattern(i) == q_ts.end_byte_for_pattern(i)
        assert q.is_pattern_rooted(i) == q_ts.is_pattern_rooted(i)
        assert q.is_pattern_non_local(i) == q_ts.is_pattern_non_local(i)
    settings = Query("python", '((identifier) @x (#set! kind "name") (#is-not? local))')
    assert settings.pattern_settings(0) == {"kind": "name"}
    assert settings.pattern_assertions(0) == {"local": (None, False)}


def test_cursor_ranges_depth_limits_and_disabling():
    source = b"".join(b"def f%d(a):\n    return g(a, %d)\n\n" % (k, k) for k in range(50))
    q_ts, root_ts = _theirs("python", source, "(call) @c (identifier) @i")
    q = Query("python", "(call) @c (identifier) @i")
    root = cstvault.parse(source, "python").root_node
    for setup in (lambda c: c.set_byte_range(100, 400), lambda c: c.set_point_range((3, 0), (9, 4)),
                  lambda c: c.set_max_start_depth(2),
                  lambda c: c.set_containing_byte_range(30, 300)):  # fmt: skip
        theirs, ours = ts.QueryCursor(q_ts), QueryCursor(q)
        setup(theirs)
        setup(ours)
        assert [(p, {k: [_key(n) for n in v] for k, v in caps.items()})
                for p, caps in ours.matches(root)] == [
            (p, {k: [_key(n) for n in v] for k, v in caps.items()})
            for p, caps in theirs.matches(root_ts)]  # fmt: skip
    # a match limit: both exceed it the same way
    text = "(module (function_definition)* @f (function_definition) @last)"
    theirs = ts.QueryCursor(_ts_query("python", text), match_limit=2)
    ours = QueryCursor(Query("python", text), match_limit=2)
    assert len(ours.matches(root)) == len(theirs.matches(root_ts))
    assert ours.did_exceed_match_limit == theirs.did_exceed_match_limit
    # a sub-node, disabled captures and patterns
    fn = root.children[3]
    q.disable_capture("i")
    q_ts.disable_capture("i")
    assert sorted(map(_key, QueryCursor(q).captures(fn)["c"])) == sorted(
        map(_key, ts.QueryCursor(q_ts).captures(root_ts.children[3])["c"]))  # fmt: skip
    q.disable_pattern(0)
    assert QueryCursor(q).captures(root) == {}


def test_user_predicates_see_the_captures():
    text = '((identifier) @x (#starts-with? @x "f"))'
    seen = []

    def predicate(name, args, pattern, captures):
        seen.append((name, args, pattern))
        return captures["x"][0].text.startswith(args[1][1].encode())

    root = cstvault.parse(b"foo = bar + far\n", "python").root_node
    got = QueryCursor(Query("python", text)).captures(root, predicate)
    assert [n.text for n in got["x"]] == [b"foo", b"far"]
    assert seen[0] == ("starts-with?", [("capture", "x"), ("string", "f")], 0)


@pytest.mark.parametrize(("text", "kind", "offset"), [
    ("(function_definition", "syntax", 20),
    ("(no_such_node) @x", "node type", 1),
    ("(function_definition nope: (identifier))", "field", 21),
    ("(identifier) @", "syntax", 14),
    ('((identifier) @a (#eq? @b "x"))', "capture", 24),
    ("(function_definition (return_statement) (return_statement) . (block))", "structure", 21),
])  # fmt: skip
def test_malformed_queries_say_what_and_where(text, kind, offset):
    with pytest.raises(QueryError) as err:
        Query("python", text)
    assert err.value.kind == kind and err.value.offset == offset
    with pytest.raises(ts.QueryError) as theirs:
        _ts_query("python", text)
    assert str(err.value) == str(theirs.value)


def test_bad_predicates_are_query_errors():
    for text in ('((identifier) @x (#eq? @x))', '((identifier) @x (#match? @x @x))',
                 '((identifier) @x (#match? @x "("))'):  # fmt: skip
        with pytest.raises(QueryError, match="Invalid predicate"):
            Query("python", text)


def test_queries_over_stored_trees(tmp_path):
    from cstvault import indexer

    (tmp_path / "a.py").write_bytes(SNIPPETS["python"]["ok"])
    indexer.index(tmp_path, jobs=1)
    with cstvault.open(tmp_path) as store:
        root = store.tree("a.py").root_node
        got = QueryCursor(Query("python", "(function_definition name: (_) @n)")).captures(root)
    q_ts, root_ts = _theirs("python", SNIPPETS["python"]["ok"],
                            "(function_definition name: (_) @n)")  # fmt: skip
    assert sorted(map(_key, got["n"])) == sorted(map(_key, ts.QueryCursor(q_ts).captures(
        root_ts)["n"]))  # fmt: skip


def test_not_any_of_means_none_of_the_values():
    """Tree-sitter's documented meaning; py-tree-sitter 0.26.1 keeps a node that differs
    from any one value (so `len` passes `#not-any-of? @k "len" "range"` there)."""
    text = '((identifier) @k (#not-any-of? @k "len" "range"))'
    root = cstvault.parse(b"a = len(x)\nb = range(y)\n", "python").root_node
    got = QueryCursor(Query("python", text)).captures(root)["k"]
    assert sorted(n.text for n in got) == [b"a", b"b", b"x", b"y"]


def test_verify_queries_gate(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from cstvault import cli, grammar_queries
    from cstvault import verify_queries as vq
    from test_cli import make_repo

    make_repo(tmp_path)
    res = CliRunner().invoke(cli.main, ["verify-queries", str(tmp_path), "--jobs", "1",
                                        "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["files"] == 3 * len(SNIPPETS) + 1 and out["skipped"] == 1  # blob.c: binary
    assert out["differences"] == 0
    kinds = sum(len(grammar_queries.query_texts(lang)) for lang in SNIPPETS)
    assert out["queries"] == 3 * kinds + len(grammar_queries.query_texts("python"))
    assert out["matches"] > 1000
    # a difference is found and reported: our side answers one match fewer
    real = QueryCursor.matches
    monkeypatch.setattr(QueryCursor, "matches", lambda self, node, p=None: real(self, node)[1:])
    res = CliRunner().invoke(cli.main, ["verify-queries", str(tmp_path / "sub"), "--jobs", "1",
                                        "--json"])  # fmt: skip
    assert res.exit_code == 1 and json.loads(res.output)["differences"] > 0
    assert vq.QueryReport().as_dict()["differences"] == 0


def test_shipped_queries_extend_javascript_for_typescript():
    from cstvault.grammar_queries import query_text

    js, ts_tags = query_text("javascript", "tags"), query_text("typescript", "tags")
    assert js is not None and ts_tags is not None and ts_tags.startswith(js)
    assert "jsx" in (query_text("tsx", "highlights") or "")
    assert query_text("go", "locals") is None


def _engine(text: str, source: bytes, setup=None) -> str:
    """Which engine QueryCursor picks: "columns" (the stored tree) or "parse"."""
    cursor = QueryCursor(Query("python", text))
    if setup:
        setup(cursor)
    tree = cstvault.parse(source, "python")
    return "columns" if cursor._exec_columns(tree, 0, False) is not None else "parse"


def test_the_columns_answer_unless_hidden_nodes_could_matter():
    ok = SNIPPETS["python"]["ok"]
    assert _engine("(function_definition name: (identifier) @n)", ok) == "columns"
    assert _engine("(call) @c", ok, lambda c: c.set_byte_range(0, 40)) == "columns"
    assert _engine("(call) @c", ok, lambda c: c.set_max_start_depth(1)) == "columns"
    # supertypes are hidden nodes; points are not columns; a non-rooted pattern or an empty
    # node with a range may meet a hidden repetition tree-sitter skips
    assert _engine("(expression) @e", ok) == "parse"
    assert _engine("(call) @c", ok, lambda c: c.set_point_range((0, 0), (2, 0))) == "parse"
    assert _engine("((identifier) @a (identifier) @b)", ok,
                   lambda c: c.set_byte_range(0, 40)) == "parse"  # fmt: skip
    empty = b"if x:\npass\n"  # an empty block
    assert _engine("(call) @c", empty, lambda c: c.set_byte_range(0, 4)) == "parse"
    assert _engine("(call) @c", empty) == "columns"
    # a tree decoded from a format-1 record has no status stream: parse
    cols = cstvault.parse_extract(ok, "python")
    cols.status = None
    from cstvault.codec import decode, encode

    old = cstvault.Tree(decode(encode(cols, ok)), ok)
    q = Query("python", "(function_definition name: (identifier) @n)")
    assert QueryCursor(q)._exec_columns(old, 0, False) is None
    new = cstvault.parse(ok, "python")
    assert [(p, {k: [_key(n) for n in v] for k, v in c.items()})
            for p, c in QueryCursor(q).matches(old.root_node)] == [
        (p, {k: [_key(n) for n in v] for k, v in c.items()})
        for p, c in QueryCursor(q).matches(new.root_node)]  # fmt: skip


def test_capture_reads_like_its_tuple():
    import pickle

    from cstvault.query import Capture

    c = Capture("identifier", 4, 7, (0, 4), (0, 7), b"foo")
    assert (c.type, c.start_byte, c.end_byte, c.start_point, c.end_point, c.text) == (
        "identifier", 4, 7, (0, 4), (0, 7), b"foo")  # fmt: skip
    kind, start, end, sp, ep, text = c
    assert (kind, text, len(c), c[2]) == ("identifier", b"foo", 6, 7)
    assert c == ("identifier", 4, 7, (0, 4), (0, 7), b"foo")
    assert c == pickle.loads(pickle.dumps(c)) and hash(c) == hash(tuple(c))
    assert "text=b'foo'" in repr(c)
    with pytest.raises(ValueError):
        Capture("identifier", 4, 9, (0, 4), (0, 9), b"foo")


def test_a_reused_cursor_exceeds_its_match_limit_as_py_tree_sitters():
    """A QueryCursor keeps its native cursor, whose capture lists outlive a run, as
    py-tree-sitter's does: the same runs exceed the same limit."""
    text = "(module (function_definition)* @f (function_definition) @last)"
    small = b"def a():\n    pass\n"
    big = b"".join(b"def f%d():\n    pass\n" % k for k in range(30))
    ours = QueryCursor(Query("python", text), match_limit=3)
    theirs = ts.QueryCursor(_ts_query("python", text), match_limit=3)
    seen = []
    for source in (big, small, big, small, small):
        got = ours.matches(cstvault.parse(source, "python").root_node)
        want = theirs.matches(languages.parser("python").parse(source).root_node)
        assert len(got) == len(want)
        assert ours.did_exceed_match_limit == theirs.did_exceed_match_limit
        seen.append(ours.did_exceed_match_limit)
    assert True in seen
