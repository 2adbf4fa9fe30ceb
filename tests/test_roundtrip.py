"""The round-trip gate on snippets: decoded tree == tree-sitter's tree, for every language."""

from __future__ import annotations

import numpy as np
import pytest

import cstvault
from cstvault import languages
from cstvault.extract import parse
from cstvault.verify import Report, compare_trees, verify_source
from snippets import COMMENT_ONLY, EDGE_CASES, SNIPPETS, deep
from test_tree_api import ts_preorder

CASES = [(lang, name, src) for lang, d in SNIPPETS.items() for name, src in d.items()]


def assert_roundtrip(source: bytes, language: str) -> cstvault.Tree:
    expected = parse(source, language)
    got = cstvault.parse(source, language)
    assert compare_trees("<snippet>", expected, got) == []
    assert got.text == source
    assert str(got.root_node) == str(expected.root_node)
    return got


def test_every_language_has_snippets():
    assert set(SNIPPETS) == set(languages.names())
    assert set(COMMENT_ONLY) == set(languages.names())


@pytest.mark.parametrize(
    ("language", "name", "source"), CASES, ids=[f"{a}-{b}" for a, b, _ in CASES]
)
def test_snippet_roundtrip(language: str, name: str, source: bytes):
    tree = assert_roundtrip(source, language)
    has_error = parse(source, language).root_node.has_error
    assert tree.root_node.has_error == has_error
    if name != "ok":
        assert has_error


def test_missing_nodes_survive():
    tree = assert_roundtrip(SNIPPETS["python"]["error"], "python")
    missing = [n for n in _all(tree) if n.is_missing]
    assert missing and all(n.start_byte == n.end_byte for n in missing)


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_cases_python(name: str):
    assert_roundtrip(EDGE_CASES[name], "python")


@pytest.mark.parametrize("language", languages.names())
def test_empty_and_comment_only(language: str):
    assert_roundtrip(b"", language)
    tree = assert_roundtrip(COMMENT_ONLY[language], language)
    assert any(n.is_extra for n in _all(tree))


@pytest.mark.parametrize("language", languages.names())
def test_unicode_crlf_bom(language: str):
    base = SNIPPETS[language]["ok"]
    assert_roundtrip(base.replace(b"\n", b"\r\n"), language)
    assert_roundtrip(b"\xef\xbb\xbf" + base, language)
    assert_roundtrip(base + "// \u00e9\u4e2d \U0001f600\n".encode(), language)


@pytest.mark.parametrize("language", languages.names())
def test_nesting_10000_deep(language: str):
    source = deep(language, 10_000)
    tree = assert_roundtrip(source, language)
    depths = tree._structure().depth
    depth = int(depths.max())
    assert depth > 10_000
    leaf = cstvault.Node(tree, int(depths.argmax()))
    chain = 0
    while leaf.parent is not None:
        leaf = leaf.parent
        chain += 1
    assert chain == depth


def test_verify_source_reports_and_skips():
    report = Report()
    verify_source("a.py", SNIPPETS["python"]["ok"], "python", report)
    verify_source("b.py", b"\0\0binary", "python", report)
    assert report.ok == 1 and report.files == 1
    assert report.skipped[0]["reason"].startswith("binary")
    assert report.nodes > 50 and report.lines == SNIPPETS["python"]["ok"].count(b"\n")


def _all(tree: cstvault.Tree):
    return [cstvault.Node(tree, i) for i in range(len(tree))]


@pytest.mark.parametrize(("language", "name", "source"), CASES[::2] + CASES[1::2])
def test_native_walker_matches_python_oracle(language: str, name: str, source: bytes):
    from cstvault.extract import extract, parse_extract

    native = parse_extract(source, language)
    oracle = extract(parse(source, language), language)
    for col in ("kind", "grammar", "flags", "field", "size", "start", "end", "unexpected"):
        assert np.array_equal(getattr(native, col), getattr(oracle, col)), col
    assert native.phantoms == oracle.phantoms


PHANTOMS = [
    ("c", b'#include "a.h"'),
    ("c", b"int x;\n#include <a.h> int y;\nint z;\n"),
    ("go", b"package p\nfunc f() {} func g() {}\n"),
    ("go", b"package p\nvar x = 1 var y = 2 var z = 3\n"),
    ("cpp", b'#include <a.h>\n#include "b.h" #include "c.h" #include "d.h"\n'),
    ("cpp", b"#if A\n#include <x.h> #include <y.h>\n#endif\n"),
]


@pytest.mark.parametrize(("language", "source"), PHANTOMS)
def test_hidden_missing_tokens_print_like_tree_sitter(language: str, source: bytes):
    """A MISSING token with no visible node ("phantom") still prints in str(node)."""
    from cstvault.extract import parse_extract

    assert parse_extract(source, language).phantoms
    tree = assert_roundtrip(source, language)
    expected = parse(source, language)
    theirs = {(n.start_byte, n.end_byte, n.type): str(n) for n in ts_preorder(expected)}
    for node in _all(tree):
        assert str(node) == theirs[(node.start_byte, node.end_byte, node.type)]


def test_chunked_comparison_finds_what_a_whole_one_finds(monkeypatch):
    """compare_trees walks CHUNK nodes at a time and compares S-expressions per subtree of
    at most SEXP_NODES: small limits find the same node mismatches, and an S-expression
    difference inside a subtree still shows."""
    from cstvault import verify

    ok = SNIPPETS["python"]["ok"]
    mine = cstvault.parse(ok, "python")
    longer = ok.replace(b"def ", b"def xx", 1)  # every node after it shifts by two bytes
    assert longer != ok
    whole = compare_trees("a.py", parse(longer, "python"), mine, limit=1000)
    assert whole and compare_trees("a.py", parse(ok, "python"), mine) == []
    monkeypatch.setattr(verify, "CHUNK", 7)
    monkeypatch.setattr(verify, "SEXP_NODES", 5)
    assert len(mine) > 3 * 7
    assert compare_trees("a.py", parse(ok, "python"), mine) == []
    chunked = compare_trees("a.py", parse(longer, "python"), mine, limit=1000)
    assert sorted((m.node, m.attribute) for m in chunked) == sorted(
        (m.node, m.attribute) for m in whole)  # fmt: skip
    # a MISSING token differs only in the S-expression of the subtree holding it
    broken = cstvault.parse(b"def f(:\n    pass\n", "python")
    expected = parse(b"def f():\n    pass\n", "python")
    found = compare_trees("b.py", expected, broken, limit=1000)
    assert found
