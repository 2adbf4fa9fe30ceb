"""tree-sitter's S-expression (`str(node)`) rendered from columns with numpy.

Mirrors ts_subtree__write_to_string for the visible tree: named and MISSING nodes print,
field names print before children that carry one (and flow through unprinted nodes),
ERROR tokens print as (UNEXPECTED c).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np

from . import languages
from .columns import HAS_CHILDREN, MISSING, NAMED, UNEXPECTED

if TYPE_CHECKING:
    from .tree import Tree

_PHANTOM = re.compile(r" (?:[A-Za-z_][A-Za-z0-9_]*: )?\(MISSING ")
_CHAR_NAMES = {-1: "INVALID", 0: "'\\0'", 10: "'\\n'", 9: "'\\t'", 13: "'\\r'"}


def char_repr(code: int) -> str:
    """tree-sitter's rendering of an unexpected character."""
    if code in _CHAR_NAMES:
        return _CHAR_NAMES[code]
    if 0x20 <= code < 0x7F:
        return f"'{chr(code)}'"
    return str(code)


def _label(tree: Tree, kind: int, flags: int) -> str:
    name = languages.tables(tree.language_name).name(kind)
    if flags & MISSING:
        return f"MISSING {name}" if flags & NAMED else f'MISSING "{name}"'
    return name


def render(tree: Tree, root: int) -> str:
    """S-expression of the subtree rooted at preorder index `root`."""
    piece, closes = pieces(tree, root)
    out = (piece + _close_strings(closes)[closes]).tolist()
    end = root + len(out)
    for k, j, text in tree._cols.phantoms:
        if root <= k < end and (k < end - 1 or j < closes[-1]):
            at = k - root
            c = int(closes[at])
            head = out[at][: len(out[at]) - c]
            out[at] = head + ")" * j + text + ")" * (c - j)
    return "".join(out)


def _close_strings(closes: np.ndarray) -> np.ndarray:
    return np.array([")" * c for c in range(int(closes.max()) + 1)], dtype=object)


def pieces(tree: Tree, root: int) -> tuple[np.ndarray, np.ndarray]:
    """Per node of the subtree: its opening text, and how many ')' follow it."""
    cols = tree._cols
    end = root + int(cols.size[root])
    flags = cols.flags[root:end]
    kind = cols.kind[root:end]
    size = cols.size[root:end]
    n = end - root
    printed = (flags & (NAMED | MISSING)) != 0
    root_printed = bool(printed[0])
    printed[0] = True  # the root always opens

    field = cols.field[root:end].astype(np.int64)
    field[0] = 0
    # a child without a field of its own inherits the field of an unprinted (anonymous) parent
    hidden_inner = (~printed) & ((flags & HAS_CHILDREN) != 0)
    if hidden_inner.any():
        parent = tree._structure().parent[root:end] - root
        for _ in range(n):
            take = (field == 0) & (np.arange(n) > 0)
            take &= hidden_inner[np.maximum(parent, 0)] & (parent > 0)
            new = np.where(take, field[np.maximum(parent, 0)], field)
            if np.array_equal(new, field):
                break
            field = new

    keys = (field << 32) | ((flags & (NAMED | MISSING)).astype(np.int64) << 16) | kind
    sel = np.flatnonzero(printed)
    uniq, inv = np.unique(keys[sel], return_inverse=True)
    fields = tree._field_names
    opens = np.empty(len(uniq), dtype=object)
    for j, key in enumerate(uniq.tolist()):
        fid, fl, kd = key >> 32, (key >> 16) & 0xFFFF, key & 0xFFFF
        prefix = f" {fields[fid]}: (" if fid else " ("
        opens[j] = prefix + _label(tree, kd, fl)
    piece = np.full(n, "", dtype=object)
    piece[sel] = opens[inv]

    unexpected = np.flatnonzero(flags & UNEXPECTED)
    if unexpected.size:
        before = int(np.count_nonzero(cols.flags[:root] & UNEXPECTED))
        codes = cols.unexpected[before : before + unexpected.size].tolist()
        for at, code in zip(unexpected.tolist(), codes, strict=True):
            fid = int(field[at])
            prefix = f" {fields[fid]}: (" if fid else " ("
            piece[at] = f"{prefix}UNEXPECTED {char_repr(code)}"

    # the root: no leading space or field; an anonymous root prints as tree-sitter does
    closing = printed.copy()
    if root_printed:
        piece[0] = piece[0][1:]
    else:
        name = languages.tables(tree.language_name).name(int(kind[0]))
        piece[0] = f'("{name}")' if n == 1 else f"({name}"
        closing[0] = False

    last = np.flatnonzero(closing) + size[closing] - 1
    return piece, np.bincount(last, minlength=n)


def find_phantoms(tree: Tree, theirs: str) -> list[tuple[int, int, str]]:
    """Hidden MISSING tokens tree-sitter prints but the visible tree lacks: (node, j, text).

    Each is placed after node `node`'s opening text and `j` of the ')' that follow it.
    """
    piece, closes = pieces(tree, 0)
    full = (piece + _close_strings(closes)[closes]).tolist()
    ours = "".join(full)
    bounds = np.cumsum([0] + [len(x) for x in full])
    found: list[tuple[int, int, str]] = []
    i_s = i_t = 0
    while ours[i_s:] != theirs[i_t:]:
        d = _first_difference(ours, theirs, i_s, i_t)
        i_s, i_t = i_s + d, i_t + d
        back = _phantom_start(theirs, i_t)
        if back is None:
            return found  # not a phantom: leave it for verify to report
        i_s, i_t = i_s - back, i_t - back
        text = _phantom_at(ours, theirs, i_s, i_t)
        if text is None:
            return found
        k = int(np.searchsorted(bounds, i_s, side="right")) - 1
        off = i_s - int(bounds[k])
        if off == 0 and k > 0:
            k, off = k - 1, len(full[k - 1])
        j = off - (len(full[k]) - int(closes[k]))
        if not 0 <= j <= int(closes[k]):
            return found
        found.append((k, j, text))
        i_t += len(text)
    return found


def _phantom_start(theirs: str, at: int) -> int | None:
    """How far before `at` the phantom that makes the strings differ begins."""
    for back in range(0, min(at, 64) + 1):
        if _PHANTOM.match(theirs, at - back):
            return back
    return None


def _first_difference(a: str, b: str, ia: int, ib: int) -> int:
    lo, hi = 0, min(len(a) - ia, len(b) - ib)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[ia : ia + mid] == b[ib : ib + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _phantom_at(ours: str, theirs: str, i_s: int, i_t: int) -> str | None:
    """The phantom text starting at theirs[i_t]: up to the ')' after which both strings
    line up again (or another phantom starts)."""
    m = _PHANTOM.match(theirs, i_t)
    if not m:
        return None
    window = ours[i_s : i_s + 16]
    close = theirs.find(")", m.end())
    while close != -1 and close < m.end() + 200:
        after = close + 1
        if theirs.startswith(window, after) or _PHANTOM.match(theirs, after):
            return theirs[i_t:after]
        close = theirs.find(")", after)
    return None
