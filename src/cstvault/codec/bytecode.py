"""Columns <-> one self-describing bytes record (see docs/format.md).

Layout: fixed header, identity, one opcode byte per node, kind-table index per node, field
ids of nodes that have one, one LEB128 block, CRC32C. Everything is decoded with a handful
of numpy calls; nothing loops over nodes in Python.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import crc32c
import numpy as np

from .. import languages
from ..columns import EXPLICIT, HAS_CHILDREN, HAS_FIELD, UNEXPECTED, Columns
from . import varint
from .errors import CorruptRecord, EncodeError

MAGIC = b"CSTV"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sBBIIIHBI")  # magic, version, hflags, nodes, source len,
# source crc, kind-table entries, identity length, phantom section length
_WIDE_KIND = 0x01
_WIDE_FIELD = 0x02
_MAX_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Header:
    version: int
    nodes: int
    source_len: int
    source_crc: int
    kinds: int
    identity: str
    phantom_len: int
    wide_kind: bool
    wide_field: bool
    body: int  # offset of the opcode section

    @property
    def language(self) -> str:
        return languages.identity_language(self.identity)


def encode(cols: Columns, source: bytes) -> bytes:
    """Encode one tree's columns (and the identity of its grammar) as a record."""
    n = len(cols)
    if n == 0 or n > _MAX_U32 or len(source) > _MAX_U32:
        raise EncodeError(f"cannot encode a tree of {n} nodes over {len(source)} bytes")
    size = cols.size
    leaf = size == 1
    inner = ~leaf

    key = (cols.kind.astype(np.uint32) << np.uint32(16)) | cols.grammar.astype(np.uint32)
    table, kidx = np.unique(key, return_inverse=True)
    if table.size > 0xFFFF:
        raise EncodeError("too many distinct kinds")
    table_kind = (table >> np.uint32(16)).astype(np.int64)
    table_gram = (table & np.uint32(0xFFFF)).astype(np.int64)

    # leaves: gap from the previous leaf's end, length unless the kind predicts it
    lstart = cols.start[leaf]
    lend = cols.end[leaf]
    lens = lend - lstart
    prev_end = np.empty_like(lend)
    prev_end[0] = 0
    prev_end[1:] = lend[:-1]
    gaps = lstart - prev_end
    if (gaps < 0).any() or (lens < 0).any():
        raise EncodeError("leaves overlap or run backwards")
    fixed = languages.tables(cols.language).token_len[table_kind][kidx[leaf]]
    explicit_leaf = lens != fixed

    # internal nodes: span derived from first/last leaf; store exceptions only
    rank = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(leaf, out=rank[1:])
    inner_at = np.flatnonzero(inner)
    first = rank[inner_at]
    last = rank[inner_at + size[inner_at]] - 1
    lead = lstart[first] - cols.start[inner_at]
    tail = cols.end[inner_at] - lend[last]
    exc = (lead != 0) | (tail != 0)

    op = cols.flags & np.uint8(~EXPLICIT & 0xFF)
    explicit = np.zeros(n, dtype=bool)
    explicit[leaf] = explicit_leaf
    explicit[inner_at[exc]] = True
    op = op | np.where(explicit, EXPLICIT, 0).astype(np.uint8)

    wide_kind = table.size > 256
    fields = cols.field[(cols.flags & HAS_FIELD) != 0]
    wide_field = bool(fields.size) and int(fields.max()) > 255
    ident = languages.identity(cols.language).encode("ascii")
    phantoms = json.dumps(cols.phantoms).encode() if cols.phantoms else b""

    exc_vals = np.empty(2 * int(exc.sum()), dtype=np.int64)
    exc_vals[0::2] = lead[exc]
    exc_vals[1::2] = tail[exc]
    block = np.concatenate(
        [
            np.column_stack([table_kind, table_gram]).ravel().astype(np.uint64),
            (size[inner_at] - 2).astype(np.uint64),
            gaps.astype(np.uint64),
            lens[explicit_leaf].astype(np.uint64),
            varint.zigzag(exc_vals),
            varint.zigzag(cols.unexpected),
        ]
    )
    head = _HEAD.pack(
        MAGIC,
        FORMAT_VERSION,
        (_WIDE_KIND if wide_kind else 0) | (_WIDE_FIELD if wide_field else 0),
        n,
        len(source),
        crc32c.crc32c(source),
        table.size,
        len(ident),
        len(phantoms),
    )
    body = b"".join(
        [
            head,
            ident,
            op.tobytes(),
            kidx.astype(np.uint16 if wide_kind else np.uint8).tobytes(),
            fields.astype(np.uint16 if wide_field else np.uint8).tobytes(),
            phantoms,
            varint.encode(block),
        ]
    )
    return body + struct.pack("<I", crc32c.crc32c(body))


def read_header(record: bytes | memoryview) -> Header:
    """Parse and bounds-check a record header (no checksum check)."""
    if len(record) < _HEAD.size + 4:
        raise CorruptRecord("record truncated: shorter than its header")
    magic, version, hflags, n, slen, scrc, kinds, ilen, plen = _HEAD.unpack_from(record, 0)
    if magic != MAGIC:
        raise CorruptRecord("not a cstvault record (bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptRecord(f"unsupported record format version {version}")
    if hflags & ~(_WIDE_KIND | _WIDE_FIELD):
        raise CorruptRecord("unknown header flags")
    body = _HEAD.size + ilen
    if n == 0 or body + n > len(record) or kinds == 0 or kinds > n:
        raise CorruptRecord("record truncated or node count out of range")
    try:
        ident = bytes(record[_HEAD.size : body]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise CorruptRecord("grammar identity is not ASCII") from exc
    return Header(
        version,
        n,
        slen,
        scrc,
        kinds,
        ident,
        plen,
        bool(hflags & _WIDE_KIND),
        bool(hflags & _WIDE_FIELD),
        body,
    )


def decode(record: bytes | memoryview, *, verify_crc: bool = True) -> Columns:
    """Decode a record into columns; raises CorruptRecord on any damage."""
    head = read_header(record)
    buf = np.frombuffer(record, dtype=np.uint8)
    if verify_crc:
        (stored,) = struct.unpack_from("<I", record, len(record) - 4)
        if crc32c.crc32c(buf[:-4]) != stored:
            raise CorruptRecord("record checksum (CRC32C) mismatch")
    try:
        return _decode_body(head, buf[:-4])
    except (IndexError, ValueError, OverflowError, TypeError) as exc:
        if isinstance(exc, CorruptRecord):
            raise
        raise CorruptRecord(f"record structure invalid: {exc}") from exc


def _decode_body(head: Header, buf: np.ndarray) -> Columns:
    n = head.nodes
    pos = head.body
    op = buf[pos : pos + n]
    pos += n
    kw = 2 if head.wide_kind else 1
    if pos + kw * n > buf.size:
        raise CorruptRecord("record truncated in the kind column")
    kidx = buf[pos : pos + kw * n].view(np.uint16 if kw == 2 else np.uint8)
    pos += kw * n
    has_field = (op & HAS_FIELD) != 0
    nf = int(np.count_nonzero(has_field))
    fw = 2 if head.wide_field else 1
    if pos + fw * nf > buf.size:
        raise CorruptRecord("record truncated in the field column")
    field = np.zeros(n, dtype=np.uint16)
    field[has_field] = buf[pos : pos + fw * nf].view(np.uint16 if fw == 2 else np.uint8)
    pos += fw * nf
    phantoms: tuple = ()
    if head.phantom_len:
        raw = buf[pos : pos + head.phantom_len].tobytes()
        pos += head.phantom_len
        phantoms = tuple((int(k), int(j), str(t)) for k, j, t in json.loads(raw))

    inner = (op & HAS_CHILDREN) != 0
    leaf = ~inner
    explicit = (op & EXPLICIT) != 0
    n_inner = int(np.count_nonzero(inner))
    n_leaf = n - n_inner
    leaf_explicit = explicit[leaf]
    n_xlen = int(np.count_nonzero(leaf_explicit))
    exc = explicit[inner]
    n_exc = int(np.count_nonzero(exc))
    n_unexp = int(np.count_nonzero(op & UNEXPECTED))
    k = head.kinds
    counts = (2 * k, n_inner, n_leaf, n_xlen, 2 * n_exc, n_unexp)
    vals = varint.decode(buf[pos:], sum(counts))
    cut = np.cumsum(counts)
    table = vals[: cut[0]]
    table_kind = table[0::2]
    table_gram = table[1::2]
    lang = languages.language(head.language)
    known = (table < lang.node_kind_count) | (table == 0xFFFF)
    if not known.all():
        raise CorruptRecord("kind id out of range")
    if nf and int(field.max()) > lang.field_count:
        raise CorruptRecord("field id out of range")
    if int(kidx.max()) >= k:
        raise CorruptRecord("kind index out of range")
    if inner[-1] or (inner & ((op & UNEXPECTED) != 0)).any():
        raise CorruptRecord("opcode flags inconsistent")

    size = np.ones(n, dtype=np.int64)
    inner_at = np.flatnonzero(inner)
    size[inner_at] = vals[cut[0] : cut[1]] + 2
    if int((inner_at + size[inner_at]).max(initial=0)) > n or size[0] != n:
        raise CorruptRecord("subtree sizes out of range")

    gaps = vals[cut[1] : cut[2]]
    leaf_kidx = kidx[leaf]
    lens = languages.tables(head.language).token_len[table_kind][leaf_kidx]
    lens[leaf_explicit] = vals[cut[2] : cut[3]]
    if (lens < 0).any():
        raise CorruptRecord("leaf length missing")
    lend = np.cumsum(gaps + lens)
    lstart = lend - lens
    if lend[-1] > head.source_len:
        raise CorruptRecord("node spans run past the end of the source")

    rank = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(leaf, out=rank[1:])
    start = np.empty(n, dtype=np.int64)
    end = np.empty(n, dtype=np.int64)
    start[leaf] = lstart
    end[leaf] = lend
    start[inner_at] = lstart[rank[inner_at]]
    end[inner_at] = lend[rank[inner_at + size[inner_at]] - 1]
    if n_exc:
        ev = varint.unzigzag(vals[cut[3] : cut[4]])
        at = inner_at[exc]
        start[at] -= ev[0::2]
        end[at] += ev[1::2]
        if (start[at] < 0).any() or (end[at] > head.source_len).any():
            raise CorruptRecord("span exception out of range")

    return Columns(
        language=head.language,
        kind=table_kind.astype(np.uint16)[kidx],
        grammar=table_gram.astype(np.uint16)[kidx],
        flags=op & np.uint8(~EXPLICIT & 0xFF),
        field=field,
        size=size,
        start=start,
        end=end,
        unexpected=varint.unzigzag(vals[cut[4] : cut[5]]),
        phantoms=phantoms,
    )
