"""Which named node kinds a stored tree holds: one bitmap a blob, the whole-store query's
kind prefilter.

A bit per named kind of the language (in symbol-id order; anonymous tokens and ERROR are not
kept), packed little-endian, stored with its CRC32C. A query's pattern needs every kind of
its steps that no path through the pattern can skip (`_native.query_required_kinds`); a
file whose bitmap lacks one for every pattern cannot match and is not read.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

from . import _native, languages
from .checksum import crc32c
from .codec.errors import CorruptRecord


@cache
def _positions(language: str) -> np.ndarray:
    """Symbol id -> bit position among the language's named kinds (-1: not kept)."""
    t = languages.tables(language)
    count = len(t.names) - 1  # the last name is ERROR's (symbol 0xFFFF)
    named = np.flatnonzero(t.named[:count])
    pos = np.full(count, -1, dtype=np.int64)
    pos[named] = np.arange(named.size)
    return pos


def kind_bits(language: str, kind: np.ndarray) -> bytes:
    """The bitmap of a tree's kind column, with its CRC32C (4 bytes, little-endian) after."""
    pos = _positions(language)
    present = np.unique(kind)
    present = present[present < pos.size]
    bits = np.zeros(max(1, int((pos >= 0).sum())), dtype=bool)
    got = pos[present]
    bits[got[got >= 0]] = True
    data = np.packbits(bits, bitorder="little").tobytes()
    return data + struct.pack("<I", crc32c(data))


def bits_value(stored: bytes, what: str) -> int:
    """A stored bitmap as an int (bit k = named kind k), its CRC32C checked."""
    data, crc = stored[:-4], stored[-4:]
    if len(stored) < 5 or struct.pack("<I", crc32c(data)) != crc:
        raise CorruptRecord(f"{what}: node-kind bitmap damaged (CRC32C mismatch)")
    return int.from_bytes(data, "little")


def required_masks(query) -> list[int] | None:
    """Per enabled pattern, the bitmap of the kinds it needs; None when some pattern needs
    none (every file may match)."""
    pos = _positions(query.language_name)
    masks = []
    for p, kinds in enumerate(_native.query_required_kinds(query._q)):
        if p in query._disabled_patterns:
            continue
        mask = 0
        for k in kinds:
            if k < pos.size and pos[k] >= 0:
                mask |= 1 << int(pos[k])
        if mask == 0:
            return None
        masks.append(mask)
    return masks


def may_match(bits: int, masks: list[int]) -> bool:
    return any(bits & m == m for m in masks)
