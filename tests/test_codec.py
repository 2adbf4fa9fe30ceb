"""Codec properties: varints, records of random trees, and damaged input."""

from __future__ import annotations

import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cstvault
from cstvault import languages
from cstvault.codec import CorruptRecord, EncodeError, decode, encode, reference, varint
from cstvault.columns import EXTRA, HAS_CHILDREN, HAS_FIELD, NAMED, Columns
from cstvault.query import Query, QueryCursor
from snippets import SNIPPETS

U64 = st.integers(min_value=0, max_value=2**63 - 1)


@given(st.lists(U64, max_size=200))
def test_varint_roundtrip(values):
    arr = np.array(values, dtype=np.uint64)
    data = varint.encode(arr)
    assert varint.decode(data, len(values)).tolist() == values


@given(st.lists(st.integers(min_value=-(2**62), max_value=2**62), max_size=100))
def test_zigzag_roundtrip(values):
    arr = np.array(values, dtype=np.int64)
    assert varint.unzigzag(varint.zigzag(arr)).tolist() == values


def test_varint_known_bytes():
    assert varint.encode(np.array([0, 1, 127, 128, 300])) == bytes(
        [0, 1, 127, 0x80, 0x01, 0xAC, 0x02]
    )


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=70))
def test_varint_decode_garbage_never_crashes(data, count):
    try:
        out = varint.decode(data, count)
    except CorruptRecord:
        return
    assert len(out) == count


@st.composite
def random_columns(draw):
    """A random but well-formed tree over the Python grammar's symbols."""
    tables = languages.tables("python")
    n_kinds = languages.language("python").node_kind_count
    shape = draw(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=60))
    # build child counts in preorder from the drawn list, closing the tree when it runs out
    sizes: list[int] = []
    stack: list[tuple[int, int]] = []  # (index, remaining children)
    it = iter(shape)
    while True:
        k = next(it, 0) if len(sizes) < 200 else 0
        i = len(sizes)
        sizes.append(1)
        if k:
            stack.append((i, k))
        else:
            while stack:
                j, rem = stack.pop()
                if rem > 1:
                    stack.append((j, rem - 1))
                    break
            if not stack:
                break
    n = len(sizes)
    # subtree sizes by a reverse scan over a parent list
    parents = [-1] * n
    stack2: list[int] = []
    child_left: dict[int, int] = {}
    it2 = iter(shape)
    for i in range(n):
        parents[i] = stack2[-1] if stack2 else -1
        if stack2:
            child_left[stack2[-1]] -= 1
        k = next(it2, 0) if i < 200 else 0
        if i == n - 1 or k == 0:
            while stack2 and child_left[stack2[-1]] == 0:
                stack2.pop()
        else:
            stack2.append(i)
            child_left[i] = k
            continue
    size = np.ones(n, dtype=np.int64)
    for i in range(n - 1, 0, -1):
        size[parents[i]] += size[i]
    kinds = draw(st.lists(st.integers(1, n_kinds - 1), min_size=n, max_size=n))
    kind = np.array(kinds, dtype=np.uint16)
    alias = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    grammar = np.where(alias, (kind + 1) % n_kinds, kind).astype(np.uint16)
    leaf = size == 1
    gaps = np.array(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)))
    lens = np.array(draw(st.lists(st.integers(0, 200), min_size=n, max_size=n)))
    predicted = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    token_len = tables.token_len[kind]
    lens = np.where(np.array(predicted) & (token_len >= 0), token_len, lens)
    lens[~leaf] = 0
    gaps[~leaf] = 0
    ends = np.cumsum(gaps + lens)
    start = ends - lens
    end = ends.copy()
    idx = np.arange(n)
    # internal spans: first/last leaf, widened by random exceptions
    for i in range(n - 1, -1, -1):
        if not leaf[i]:
            sub = idx[i : i + size[i]][leaf[i : i + size[i]]]
            start[i] = start[sub[0]]
            end[i] = end[sub[-1]]
    widen = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    widen[leaf] = 0
    start = np.maximum(start - widen, 0)
    end = end + widen
    source = b"x" * int(end.max())
    flags = np.where(tables.named[kind], NAMED, 0).astype(np.uint8)
    flags[~leaf] |= HAS_CHILDREN
    extra = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    flags[extra] |= EXTRA
    field = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), dtype=np.uint16)
    field[0] = 0
    flags[field > 0] |= HAS_FIELD
    cols = Columns("python", kind, grammar, flags, field, size, start, end,
                   np.zeros(0, dtype=np.int64))
    if draw(st.booleans()):  # a format-2 record: query-status pairs on random nodes
        nodes = sorted(draw(st.sets(st.integers(1, n - 1), max_size=8)) if n > 1 else [])
        values = draw(st.lists(st.integers(0, 4 * (len(tables.fields) - 1) + 3),
                               min_size=len(nodes), max_size=len(nodes)))  # fmt: skip
        cols.status = np.array([x for pair in zip(nodes, values, strict=True)
                                for x in pair], dtype=np.uint32)
        ends = [int(cols.end[k]) for k in nodes]
        tails = [(k, e + draw(st.integers(1, max(1, len(source) - e))))
                 for k, e in zip(nodes, ends, strict=True) if e < len(source)]  # fmt: skip
        cols.tails = np.array([x for pair in tails for x in pair], dtype=np.uint32)
    return cols, source


@settings(max_examples=150, deadline=None)
@given(random_columns())
def test_random_tree_records_roundtrip(case):
    """The C encoder and the numpy reference encoder both decode back to the same tree."""
    cols, source = case
    native, ref = encode(cols, source), reference.encode(cols, source)
    assert native == ref
    for record in (native,):
        got = decode(record)
        for name in ("kind", "grammar", "flags", "field", "size", "start", "end"):
            assert np.array_equal(getattr(got, name), getattr(cols, name)), name
        assert record[4] == 3  # the format version
        assert bool(record[5] & 4) == (cols.status is not None)  # the status stream's flag
        if cols.status is None:
            assert got.status is None and got.tails is None
        else:
            assert np.array_equal(got.status, cols.status)
            assert np.array_equal(got.tails, cols.tails)


def _record() -> bytes:
    return cstvault.encode(SNIPPETS["python"]["error"], "python")


def _recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", crc32c.crc32c(data[:-4]))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_bit_flips_are_detected(data):
    rec = bytearray(_record())
    at = data.draw(st.integers(0, len(rec) - 1))
    bit = data.draw(st.integers(0, 7))
    rec[at] ^= 1 << bit
    with pytest.raises(CorruptRecord):
        decode(bytes(rec))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damage_behind_a_valid_crc_never_crashes(data):
    """Even with the checksum patched up, damage raises CorruptRecord or decodes cleanly."""
    rec = bytearray(_record())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(rec) - 5))
        rec[at] = data.draw(st.integers(0, 255))
    try:
        cols = decode(_recrc(bytes(rec)))
    except CorruptRecord:
        return
    tree = cstvault.Tree(cols, SNIPPETS["python"]["error"])
    try:
        str(tree.root_node)
        tree._structure()
    except CorruptRecord:
        pass
    # the query cursor walks whatever the decoder accepted without faulting
    QueryCursor(Query("python", "(_ (identifier) @i . (_)? @n) @p")).matches(tree.root_node)


def test_the_status_stream_is_checked():
    """The last stream (query status) is bounded and ordered, and a record without it
    decodes with its status unknown."""
    source = SNIPPETS["python"]["ok"]
    cols = cstvault.parse_extract(source, "python")
    cols.status = np.array([3, 1, 5, 2], dtype=np.uint32)
    assert np.array_equal(decode(encode(cols, source)).status, cols.status)
    for bad in ([5, 1, 3, 2], [3, 1, 3, 1], [len(cols), 1]):  # out of order, repeated, no node
        cols.status = np.array(bad, dtype=np.uint32)
        with pytest.raises(EncodeError):
            encode(cols, source)
    cols.status = None
    old = encode(cols, source)
    assert old[4] == 3 and not old[5] & 4 and decode(old).status is None


DATA = Path(__file__).parent / "data" / "records"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.iterdir()))
def test_records_of_formats_1_and_2_still_decode(name):
    """Records written before format 3 (tests/data/records: the snippets' trees, format 2
    with the query-status stream, format 1 without) decode to the trees format 3 holds."""
    language, case = name.split(".")[0].split("-")
    source = SNIPPETS[language][case]
    old = (DATA / name).read_bytes()
    assert old[4] == int(name[-1])
    got, want = decode(old), decode(encode(cstvault.parse_extract(source, language), source))
    for col in ("kind", "grammar", "flags", "field", "size", "start", "end", "unexpected"):
        assert np.array_equal(getattr(got, col), getattr(want, col)), col
    assert got.structure == want.structure
    if old[4] == 1:
        assert got.status is None and got.tails is None
    else:
        assert np.array_equal(got.status, want.status) and np.array_equal(got.tails, want.tails)
    tree = cstvault.Tree(got, source)
    assert str(tree.root_node) == str(cstvault.languages.parser(language).parse(source).root_node)


def test_a_node_table_entry_is_checked():
    """Format 3's node table: a field on an entry without HAS_FIELD, or a child count that
    runs past the last node, is damage (CorruptRecord), never a tree."""
    source = SNIPPETS["python"]["ok"]
    rec = bytearray(encode(cstvault.parse_extract(source, "python"), source))
    head = cstvault.codec.read_header(bytes(rec))
    block = head.body + head.nodes * (2 if head.wide_kind else 1)
    # the first entry's 4 varints (kind, grammar, flags, field): give it a field it may not have
    vals, at = [], block
    for _ in range(4):
        start = at
        while rec[at] & 0x80:
            at += 1
        at += 1
        vals.append((start, at))
    flags_at = vals[2][0]
    assert not rec[flags_at] & HAS_FIELD and rec[vals[3][0]] == 0
    damaged = bytearray(rec)
    damaged[vals[3][0]] = 1
    with pytest.raises(CorruptRecord, match="field id"):
        decode(_recrc(bytes(damaged)))
    # the root's child count (the first varint after the table's 4 x K): one more child
    at = block
    for _ in range(4 * head.kinds):
        while rec[at] & 0x80:
            at += 1
        at += 1
    assert rec[at] < 0x7F
    rec[at] += 1
    with pytest.raises(CorruptRecord, match="child count"):
        decode(_recrc(bytes(rec)))


@given(st.binary(max_size=300))
def test_random_bytes_raise_corrupt_record(blob):
    with pytest.raises(CorruptRecord):
        decode(blob)
    with pytest.raises(CorruptRecord):
        decode(b"CSTV\x01" + blob)


def test_truncation_is_detected():
    rec = _record()
    for cut in range(0, len(rec) - 1, 3):
        with pytest.raises(CorruptRecord):
            decode(rec[:cut])


def test_header_records_identity_and_source():
    rec = cstvault.encode(SNIPPETS["go"]["ok"], "go")
    head = cstvault.codec.read_header(rec)
    assert head.language == "go" and head.identity == languages.identity("go")
    assert head.source_len == len(SNIPPETS["go"]["ok"])
    assert head.source_crc == crc32c.crc32c(SNIPPETS["go"]["ok"])
