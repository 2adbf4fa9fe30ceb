"""Columns <-> one self-describing bytes record (see docs/format.md).

Layout (format 3): fixed header, identity, one opcode per node (its index in the record's
node table of (kind, grammar, flags, field) entries), one LEB128 block (the table, child
counts, leaf gaps and lengths, ...), CRC32C. Formats 1 and 2 (a flags byte, a kind index
and a field column per node; subtree sizes) are still read. Decoding is one C pass.
"""

from __future__ import annotations

import json
import struct
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
else:
    from .._numpy import np

from .. import _native, languages
from ..checksum import crc32c
from ..columns import Columns
from .errors import CorruptRecord, EncodeError

MAGIC = b"CSTV"
FORMAT_VERSION = 3  # 3: node table and child counts; 2 and 1 (no status stream) still read
_HEAD = struct.Struct("<4sBBIIIHBI")  # magic, version, hflags, nodes, source len,
# source crc, kind-table entries, identity length, phantom section length
_WIDE_KIND = 0x01  # the per-node index is u16
_WIDE_FIELD = 0x02  # formats 1 and 2: field ids are u16
_STATUS = 0x04  # format 3: the query-status stream is present (format 2: always)
_MAX_U32 = 0xFFFFFFFF


class Header(NamedTuple):  # parsed at every cold open: a tuple is cheaper than a dataclass
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
    hflags: int

    @property
    def language(self) -> str:
        return languages.identity_language(self.identity)


def encode(cols: Columns, source: bytes) -> bytes:
    """Encode one tree's columns (and the identity of its grammar) as a record."""
    if len(cols) == 0:
        raise EncodeError("cannot encode an empty tree")
    phantoms = json.dumps(cols.phantoms).encode() if cols.phantoms else b""
    try:
        body = _native.encode_body(
            _c(cols.kind, np.uint16), _c(cols.grammar, np.uint16), _c(cols.flags, np.uint8),
            _c(cols.field, np.uint16), _c(cols.size, np.int64), _c(cols.start, np.int64),
            _c(cols.end, np.int64), _c(cols.unexpected, np.int64),
            languages.tables(cols.language).token_len,
            languages.identity(cols.language).encode("ascii"), phantoms, len(source),
            crc32c(source), None if cols.status is None else _c(cols.status, np.uint32),
            None if cols.tails is None else _c(cols.tails, np.uint32),
        )  # fmt: skip
    except _native.EncodeError as exc:
        raise EncodeError(str(exc)) from None
    return body + struct.pack("<I", crc32c(body))


def _c(a: np.ndarray, dtype: type) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def read_header(record: bytes | memoryview) -> Header:
    """Parse and bounds-check a record header (no checksum check)."""
    if len(record) < _HEAD.size + 4:
        raise CorruptRecord("record truncated: shorter than its header")
    magic, version, hflags, n, slen, scrc, kinds, ilen, plen = _HEAD.unpack_from(record, 0)
    if magic != MAGIC:
        raise CorruptRecord("not a cstvault record (bad magic)")
    if version not in (1, 2, FORMAT_VERSION):
        raise CorruptRecord(f"unsupported record format version {version}")
    if hflags & ~(_WIDE_KIND | (_STATUS if version == 3 else _WIDE_FIELD)):
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
        hflags,
    )


@cache
def _grammar_args(identity: str) -> tuple[str, memoryview, int, int]:
    """What the decoder needs of a record's grammar (language, token lengths, limits)."""
    name = languages.identity_language(identity)
    if name not in languages.BY_NAME:
        raise CorruptRecord(f"record for an unknown grammar: {identity}")
    t = languages.tables(name)  # no grammar loaded when a store offered its tables
    return name, t.token_lens, len(t.names) - 1, len(t.fields) - 1


def decode_raw(
    record: bytes | memoryview, *, verify_crc: bool = True, head: Header | None = None
) -> tuple[str, tuple, tuple]:
    """Decode a record into (language, the decoder's buffers, phantoms); CorruptRecord on
    damage. Buffers: kind, grammar, flags, field, size, start, end, unexpected, phantom JSON,
    parent, previous sibling, child count, query status and group tails (None without a
    status stream: a format-1 record, or a format-3 one without header flag 4; see
    `columns_of`)."""
    if head is None:
        head = read_header(record)
    if verify_crc:
        (stored,) = struct.unpack_from("<I", record, len(record) - 4)
        if crc32c(memoryview(record)[:-4]) != stored:
            raise CorruptRecord("record checksum (CRC32C) mismatch")
    language, token_len, kind_limit, field_limit = _grammar_args(head.identity)
    try:
        out = _native.decode_body(
            record, head.body, head.nodes, head.kinds, head.hflags, head.phantom_len,
            head.source_len, token_len, kind_limit, field_limit,
        )  # fmt: skip
    except _native.CorruptRecord as exc:
        raise CorruptRecord(str(exc)) from None
    phantoms: tuple = ()
    if out[8]:
        try:
            phantoms = tuple((int(k), int(j), str(t)) for k, j, t in json.loads(out[8]))
        except (ValueError, TypeError) as exc:
            raise CorruptRecord(f"phantom section invalid: {exc}") from exc
    return language, out, phantoms


def columns_of(language: str, out: tuple, phantoms: tuple) -> Columns:
    """Numpy columns over the decoder's buffers (no copy)."""
    kind, gram, flags, field, size, start, end, unexp = out[:8]
    return Columns(
        language=language,
        kind=np.frombuffer(kind, dtype=np.uint16),
        grammar=np.frombuffer(gram, dtype=np.uint16),
        flags=np.frombuffer(flags, dtype=np.uint8),
        field=np.frombuffer(field, dtype=np.uint16),
        size=np.frombuffer(size, dtype=np.int32),
        start=np.frombuffer(start, dtype=np.uint32),
        end=np.frombuffer(end, dtype=np.uint32),
        unexpected=np.frombuffer(unexp, dtype=np.int64),
        phantoms=phantoms,
        structure=out[9:12],
        status=None if out[12] is None else np.frombuffer(out[12], dtype=np.uint32),
        tails=None if out[13] is None else np.frombuffer(out[13], dtype=np.uint32),
    )


def decode(
    record: bytes | memoryview, *, verify_crc: bool = True, head: Header | None = None
) -> Columns:
    """Decode a record into columns (and their structure index); CorruptRecord on damage."""
    return columns_of(*decode_raw(record, verify_crc=verify_crc, head=head))
