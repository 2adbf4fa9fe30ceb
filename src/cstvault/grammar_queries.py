"""The queries the grammar wheels ship (tags, highlights, locals, injections), per language.

Each wheel's `queries/*.scm` files, combined as the grammar's tree-sitter.json combines
them: TypeScript and TSX extend JavaScript, so their queries are JavaScript's followed by
their own (TSX also takes JavaScript's JSX highlights).
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from . import languages

KINDS = ("tags", "highlights", "locals", "injections")
_EXTENDS = {"typescript": ("javascript",), "tsx": ("javascript",)}
_EXTRA = {"tsx": {"highlights": (("javascript", "highlights-jsx.scm"),)}}


def _file(language: str, name: str) -> str | None:
    module = importlib.import_module(languages.BY_NAME[language].module)
    path = Path(module.__file__ or "").parent / "queries" / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


@cache
def query_text(language: str, kind: str) -> str | None:
    """The grammar's `kind` query for `language` (None: it ships none)."""
    if kind not in KINDS:
        raise ValueError(f"unknown query kind {kind!r}; one of {', '.join(KINDS)}")
    parts = [_file(base, f"{kind}.scm") for base in _EXTENDS.get(language, ())]
    parts += [_file(base, name) for base, name in _EXTRA.get(language, {}).get(kind, ())]
    own = _file(language, f"{kind}.scm")
    if own is None and not any(parts):
        return None
    return "\n".join(p for p in [*parts, own] if p)


def query_texts(language: str) -> dict[str, str]:
    """Every query the grammar ships for `language`, by kind."""
    return {k: t for k in KINDS if (t := query_text(language, k)) is not None}
