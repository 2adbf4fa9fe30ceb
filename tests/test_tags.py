"""Tags: definitions kept at index time, outline, definitions and references across the
store, as the grammar wheels' tags queries define them."""

from __future__ import annotations

import json
import random

import pytest
import tree_sitter as ts
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import cstvault
from cstvault import cli, indexer, languages
from cstvault.grammar_queries import query_text
from cstvault.tags import Tag, name_hash, pack_definitions, tags_query, unpack_definitions
from snippets import SNIPPETS

_KEEP: list = []  # py-tree-sitter queries kept alive (see test_query.py)

PY = b'''class Shape:
    def area(self):
        return 0

    def scaled(self, k):
        return helper(self.area(), k)


def helper(a, k):
    return a * k


def main():
    s = Shape()
    print(helper(s.area(), 2))
'''


def _reference_tags(lang: str, source: bytes) -> set[tuple]:
    """The tags convention applied to py-tree-sitter's own matches."""
    q = ts.Query(languages.language(lang), query_text(lang, "tags"))
    _KEEP.append(q)
    tree = languages.parser(lang).parse(source)
    out = set()
    for _, caps in ts.QueryCursor(q).matches(tree.root_node):
        if "name" not in caps:
            continue
        n = caps["name"][0]
        for cap, nodes in caps.items():
            if cap.startswith(("definition.", "reference.")):
                out.add((cap, n.text, nodes[0].start_byte, nodes[0].end_byte))
    return out


@pytest.mark.parametrize("lang", ["python", "javascript", "typescript", "rust", "go", "java",
                                  "c", "cpp"])  # fmt: skip
def test_tags_are_tree_sitters(lang):
    from cstvault.tags import source_tags

    q = tags_query(lang)
    assert q is not None
    for source in [*SNIPPETS[lang].values(), *([PY] if lang == "python" else [])]:
        ours = {(t.kind, t.name, t.start_byte, t.end_byte) for t in source_tags(q, source)}
        assert ours == _reference_tags(lang, source)


tag = st.builds(
    lambda kind, ns, nl, off, ln: Tag(kind, b"x" * nl, max(0, ns + off), max(0, ns + off) + ln,
                                      ns, ns + nl),
    st.sampled_from(["definition.function", "definition.class", "definition.method"]),
    st.integers(0, 10**6), st.integers(1, 40), st.integers(-50, 0), st.integers(0, 10**5),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(tag, max_size=60))
def test_definitions_pack_round_trip(tags):
    tags = sorted(tags, key=lambda t: t.name_start)
    back = unpack_definitions(pack_definitions(tags))
    assert [(d.kind, d.start_byte, d.end_byte, d.name_start, d.name_end, d.name_hash)
            for d in back] == [(t.kind, t.start_byte, t.end_byte, t.name_start, t.name_end,
                                name_hash(t.name)) for t in tags]  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(tag, min_size=1, max_size=20), st.data())
def test_damaged_definitions_raise_corrupt_record(tags, data):
    from cstvault.codec import CorruptRecord

    packed = bytearray(pack_definitions(sorted(tags, key=lambda t: t.name_start)))
    cut = data.draw(st.integers(1, len(packed) - 1))  # (empty data means: no definitions)
    if data.draw(st.booleans()):
        packed = packed[:cut]  # truncated
    else:
        packed += bytes([data.draw(st.integers(0, 255))])  # trailing garbage
    with pytest.raises(CorruptRecord):
        unpack_definitions(bytes(packed))


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")),
       st.lists(st.integers(0, 300), max_size=20))  # fmt: skip
def test_points_count_rows_by_newline(source, offsets):
    from cstvault import _native

    offsets = [min(o, len(source)) for o in offsets]
    want = [(source.count(b"\n", 0, o), o - (source.rfind(b"\n", 0, o) + 1)) for o in offsets]
    assert _native.points(source, offsets) == want


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("tagsrepo")
    (root / "shapes.py").write_bytes(PY)
    (root / "copy.py").write_bytes(PY)  # the same content: one blob, two files
    (root / "other.py").write_bytes(b"def area():\n    return helper(1, 2)\n")
    (root / "app.ts").write_bytes(b"function helper(a: number) { return a; }\nhelper(1);\n")
    indexer.index(root, jobs=1)
    return root


def test_store_definitions_references_and_outline(repo):
    with cstvault.open(repo) as store:
        defs = store.definitions("helper")
        assert [(d.path, d.kind, d.name_point) for d in defs] == [
            ("app.ts", "definition.function", (0, 9)),
            ("copy.py", "definition.function", (8, 4)),
            ("shapes.py", "definition.function", (8, 4))]  # fmt: skip
        # Python's tags query calls methods functions
        assert [d.path for d in store.definitions("area", kind="function")] == [
            "copy.py", "other.py", "shapes.py"]  # fmt: skip
        assert store.definitions("area", kind="class") == []
        assert store.definitions("no_such_name") == []
        refs = store.references("helper")
        assert [(r.path, r.name_point) for r in refs] == [
            ("app.ts", (1, 0)), ("copy.py", (5, 15)), ("copy.py", (14, 10)),
            ("other.py", (1, 11)), ("shapes.py", (5, 15)), ("shapes.py", (14, 10))]  # fmt: skip
        tree = [(depth, d.kind, d.name) for depth, d in store.outline("shapes.py")]
        assert tree == [(0, "definition.class", "Shape"), (1, "definition.function", "area"),
                        (1, "definition.function", "scaled"),
                        (0, "definition.function", "helper"),
                        (0, "definition.function", "main")]  # fmt: skip
        kinds = {t.kind for t in store.tags("shapes.py")}
        assert {"definition.class", "definition.function", "reference.call"} <= kinds
        with pytest.raises(KeyError):
            store.outline("missing.py")


def test_a_name_hash_collision_is_confirmed_against_the_source(tmp_path):
    rng = random.Random(1)
    target = name_hash(b"helper")
    other = next(w for w in (f"h{rng.getrandbits(32):x}".encode() for _ in range(10**5))
                 if name_hash(w) == target)  # fmt: skip
    # `helper` is a symbol of this file (a call), `other` a definition with the same hash
    (tmp_path / "x.py").write_bytes(b"def " + other + b"():\n    return helper()\n")
    indexer.index(tmp_path, jobs=1)
    with cstvault.open(tmp_path) as store:
        assert store.files_with_symbol("helper") == ["x.py"]
        assert store.definitions("helper") == []
        assert [d.name for d in store.definitions(other)] == [other.decode()]


def test_tags_cli(repo):
    store = str(repo / ".cstvault")
    res = CliRunner().invoke(cli.main, ["defs", "helper", "--store", store])
    assert res.output.splitlines() == ["app.ts:1:10  definition.function  helper",
                                       "copy.py:9:5  definition.function  helper",
                                       "shapes.py:9:5  definition.function  helper"]  # fmt: skip
    res = CliRunner().invoke(cli.main, ["refs", "helper", "--store", store, "--json"])
    assert len(json.loads(res.output)) == 6
    res = CliRunner().invoke(cli.main, ["outline", "shapes.py", "--store", store])
    assert res.exit_code == 0 and "class Shape" in res.output and "function scaled" in res.output
    res = CliRunner().invoke(cli.main, ["outline", "shapes.py", "--store", store, "--json"])
    assert [(r["depth"], r["name"]) for r in json.loads(res.output)][:2] == [(0, "Shape"),
                                                                             (1, "area")]
    res = CliRunner().invoke(cli.main, ["outline", "nope.py", "--store", store])
    assert res.exit_code == 1 and "not in the store" in res.output


def test_highlight_renders_the_file_with_its_grammars_query(repo):
    import re

    store = str(repo / ".cstvault")
    plain = CliRunner().invoke(cli.main, ["highlight", "shapes.py", "--store", store])
    assert plain.exit_code == 0 and plain.output == PY.decode()
    res = CliRunner(env={"FORCE_COLOR": "1", "TERM": "xterm-256color"}).invoke(
        cli.main, ["highlight", "shapes.py", "--store", store])  # fmt: skip
    assert re.sub(r"\x1b\[[0-9;]*m", "", res.output) == PY.decode()
    assert "\x1b[1;35m" in res.output  # keywords styled
    assert CliRunner().invoke(cli.main, ["highlight", "nope.py", "--store", store]).exit_code == 1
