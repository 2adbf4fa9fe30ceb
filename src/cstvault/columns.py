"""The in-memory form of one tree: numpy columns over nodes in preorder.

Flag bits are shared by the extractor, the record opcodes and the read API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

HAS_CHILDREN = 0x01
NAMED = 0x02
EXTRA = 0x04
MISSING = 0x08
HAS_FIELD = 0x10
HAS_ERROR = 0x20
EXPLICIT = 0x40  # record only: leaf length stored / internal span exception stored
UNEXPECTED = 0x80  # leaf only: an ERROR token that prints as (UNEXPECTED c)

ERROR_KIND = 0xFFFF


@dataclass
class Columns:
    """One tree as struct-of-arrays, N nodes in preorder (index 0 is the root)."""

    language: str
    kind: np.ndarray  # uint16 public symbol (node.kind_id)
    grammar: np.ndarray  # uint16 grammar symbol (node.grammar_id)
    flags: np.ndarray  # uint8 bit set above (never EXPLICIT)
    field: np.ndarray  # uint16 field id, 0 = none
    size: np.ndarray  # subtree size (the node plus its descendants): int64, int32 decoded
    start: np.ndarray  # start byte: int64, uint32 decoded (sources are under 4 GiB)
    end: np.ndarray  # end byte: int64, uint32 decoded
    unexpected: np.ndarray  # int64 char code for UNEXPECTED leaves, in preorder of those leaves
    # hidden MISSING tokens printed by str(node) but absent from the visible tree:
    # (node index, ')' count after it, text) -- see sexp.find_phantoms
    phantoms: tuple[tuple[int, int, str], ...] = field(default=())
    # int32 buffers (parent, prev sibling, child count) when the decoder built them
    structure: tuple[bytes, ...] | None = None
    # uint32 (node, field << 2 | inherits << 1 | can-have-later) pairs: where the field
    # tree-sitter's query cursor sees differs from `field`, where the parent's field map
    # inherits fields through the node, or where a later sibling may carry the same field
    # (from the grammar's productions); None when unknown (a format-1 record, the Python walk)
    status: np.ndarray | None = None
    # uint32 (node, end) pairs: an invisible group's end past its last visible child `node`
    # (TreeCursor.goto_first_child_for_byte / _point stop there); None when unknown
    tails: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.kind.shape[0])
