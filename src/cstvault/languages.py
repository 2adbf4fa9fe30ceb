"""Grammar registry: language name <-> grammar wheel <-> file extensions.

Grammars come only from the official single-language wheels installed with the package;
nothing is ever downloaded at run time.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import mmap
import os
from array import array
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from ._numpy import np
import tree_sitter as ts
import zstandard


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    module: str
    function: str
    distribution: str
    extensions: tuple[str, ...]


SPECS: tuple[LanguageSpec, ...] = (
    LanguageSpec("python", "tree_sitter_python", "language", "tree-sitter-python", (".py", ".pyi")),
    LanguageSpec(
        "javascript",
        "tree_sitter_javascript",
        "language",
        "tree-sitter-javascript",
        (".js", ".mjs", ".cjs", ".jsx"),
    ),
    LanguageSpec(
        "typescript",
        "tree_sitter_typescript",
        "language_typescript",
        "tree-sitter-typescript",
        (".ts", ".mts", ".cts"),
    ),
    LanguageSpec(
        "tsx", "tree_sitter_typescript", "language_tsx", "tree-sitter-typescript", (".tsx",)
    ),
    LanguageSpec("rust", "tree_sitter_rust", "language", "tree-sitter-rust", (".rs",)),
    LanguageSpec("go", "tree_sitter_go", "language", "tree-sitter-go", (".go",)),
    LanguageSpec("java", "tree_sitter_java", "language", "tree-sitter-java", (".java",)),
    LanguageSpec("c", "tree_sitter_c", "language", "tree-sitter-c", (".c", ".h")),
    LanguageSpec(
        "cpp",
        "tree_sitter_cpp",
        "language",
        "tree-sitter-cpp",
        (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".tcc"),
    ),
)

BY_NAME: dict[str, LanguageSpec] = {s.name: s for s in SPECS}
BY_EXTENSION: dict[str, str] = {ext: s.name for s in SPECS for ext in s.extensions}


class UnknownLanguage(ValueError):
    """Raised for a language name or file type no installed grammar handles."""


def names() -> list[str]:
    return [s.name for s in SPECS]


def detect(path: str | os.PathLike[str]) -> str | None:
    """Language name for a path by its extension, or None when unsupported."""
    p = path if isinstance(path, str) else os.fspath(path)
    dot = p.rfind(".")
    if dot <= 0 or "/" in p[dot:] or p[dot - 1] == "/":  # no extension, or a dotfile
        return None
    return BY_EXTENSION.get(p[dot:].lower())


@cache
def capsule(name: str) -> object:
    """The grammar wheel's capsule holding its `const TSLanguage *`."""
    spec = BY_NAME.get(name)
    if spec is None:
        raise UnknownLanguage(f"unknown language {name!r}; known: {', '.join(names())}")
    module = importlib.import_module(spec.module)
    return getattr(module, spec.function)()


@cache
def language(name: str) -> ts.Language:
    """The tree-sitter Language for a registered language name."""
    return ts.Language(capsule(name))


@cache
def parser(name: str) -> ts.Parser:
    return ts.Parser(language(name))


@cache
def identity(name: str) -> str:
    """Grammar identity stored in records: language, grammar wheel version and ABI."""
    return f"{name}:{wheel_version(name)}:abi{language(name).abi_version}"


def identity_language(ident: str) -> str:
    return ident.split(":", 1)[0]


# Named leaf kinds, besides every "...identifier", whose text names something.
_SYMBOL_KINDS = {"name", "constant", "symbol", "simple_identifier", "word"}


_SPAN = 65536  # entries per table: every u16 symbol id (ERROR is 0xFFFF)


@dataclass(frozen=True)
class KindTables:
    """Per-language lookup tables indexed by symbol id (65536 entries: ERROR is 0xFFFF).

    `block` holds named, visible and identifier (one byte each per id) then token_len (int16
    per id) in one anonymous mapping: only the pages of the ids a grammar uses (and ERROR's)
    ever become resident. Ids past the grammar's count are invalid kinds (the decoder
    rejects them); they read as 0. The numpy views are made on first use: readers need only
    `names`, `fields` and `token_lens`."""

    names: tuple[str, ...]  # symbol id -> type name; the last entry is ERROR (id 0xFFFF)
    fields: tuple[str | None, ...]
    block: mmap.mmap

    def _table(self, k: int, dtype: type) -> np.ndarray:
        return np.frombuffer(self.block, dtype=dtype, count=_SPAN, offset=k * _SPAN)

    @cached_property
    def named(self) -> np.ndarray:  # bool per symbol id
        return self._table(0, bool)

    @cached_property
    def visible(self) -> np.ndarray:  # bool per symbol id
        return self._table(1, bool)

    @cached_property
    def identifier(self) -> np.ndarray:
        """Bool per symbol id: named kinds whose text is a symbol name."""
        return self._table(2, bool)

    @cached_property
    def token_len(self) -> np.ndarray:
        """int16 per symbol id: UTF-8 length of an anonymous token, -1 if none."""
        return self._table(3, np.int16)

    @cached_property
    def token_lens(self) -> memoryview:
        """`token_len` as a memoryview (what the decoder takes; no numpy)."""
        return memoryview(self.block)[3 * _SPAN : 5 * _SPAN].cast("h")

    def name(self, kind: int) -> str:
        return self.names[-1] if kind == 0xFFFF else self.names[kind]

    def name_index(self, kinds: np.ndarray) -> np.ndarray:
        """Positions in `names` of an array of symbol ids (ERROR maps to the last)."""
        return np.where(kinds == 0xFFFF, len(self.names) - 1, kinds)


def _tables(names: tuple[str, ...], fields: tuple[str | None, ...], named: list[int],
            visible: list[int], identifier: list[int], token_len: list[int]) -> KindTables:
    """Tables from the ids of the named, visible and identifier kinds and every kind's token
    length (ERROR is added: named, visible, no token)."""
    block = mmap.mmap(-1, 5 * _SPAN)
    for k, ids in enumerate((named, visible, identifier)):
        for i in ids:
            block[k * _SPAN + i] = 1
    block[0xFFFF] = block[_SPAN + 0xFFFF] = 1
    lens = memoryview(block)[3 * _SPAN :].cast("h")
    lens[: len(token_len)] = array("h", token_len)
    lens[0xFFFF] = -1
    return KindTables((*names, "ERROR"), (None, *fields), block)


def to_bytes(t: KindTables) -> bytes:
    """A language's tables, compact: what a store keeps so readers need no grammar loaded."""
    count = len(t.names) - 1
    body = {
        "names": list(t.names[:count]),
        "named": np.flatnonzero(t.named[:count]).tolist(),
        "visible": np.flatnonzero(t.visible[:count]).tolist(),
        "identifier": np.flatnonzero(t.identifier[:count]).tolist(),
        "token_len": t.token_len[:count].tolist(),
        "fields": list(t.fields[1:]),
    }
    return zstandard.ZstdCompressor(level=19, write_checksum=True).compress(
        json.dumps(body).encode())  # fmt: skip


def from_bytes(data: bytes) -> KindTables:
    body = json.loads(zstandard.ZstdDecompressor().decompress(data))
    return _tables(tuple(body["names"]), tuple(body["fields"]), body["named"], body["visible"],
                   body["identifier"], body["token_len"])  # fmt: skip


_TABLES: dict[str, KindTables] = {}
_OFFERED: dict[str, tuple[str, bytes]] = {}


@cache
def wheel_version(name: str) -> str:
    """The installed grammar wheel's version, from the name of the one `.dist-info` directory
    beside its package (`{name}-{version}.dist-info`, as wheels install): a reader then needs
    no `importlib.metadata` (≈ 5 MB of imports). Any other layout asks importlib.metadata."""
    spec = BY_NAME[name]
    found = importlib.util.find_spec(spec.module)
    if found is not None and found.submodule_search_locations:
        site = os.path.dirname(next(iter(found.submodule_search_locations)))
        prefix = spec.distribution.replace("-", "_").lower() + "-"
        with contextlib.suppress(OSError):
            hits = [e.name[len(prefix) : -len(".dist-info")] for e in os.scandir(site)
                    if e.name.lower().startswith(prefix) and e.name.endswith(".dist-info")]
            if len(hits) == 1:
                return hits[0]
    from importlib import metadata

    return metadata.version(spec.distribution)


def offer(name: str, version: str, data: bytes) -> None:
    """Tables read from a store, used instead of loading the grammar when the installed wheel
    has the same version (the grammar's .so then never needs to be mapped to read trees)."""
    if name in BY_NAME and name not in _TABLES:
        _OFFERED[name] = (version, data)


def tables(name: str) -> KindTables:
    """The lookup tables of a language: from a store's copy when offered, else the grammar."""
    t = _TABLES.get(name)
    if t is None:
        offered = _OFFERED.pop(name, None)
        t = None
        if offered is not None and offered[0] == wheel_version(name):
            with contextlib.suppress(zstandard.ZstdError, ValueError, KeyError, TypeError,
                                     IndexError):
                t = from_bytes(offered[1])  # a damaged copy: the grammar itself instead
        if t is None:
            t = grammar_tables(name)
        _TABLES[name] = t
    return t


def grammar_tables(name: str) -> KindTables:
    lang = language(name)
    count = lang.node_kind_count
    names = tuple(lang.node_kind_for_id(k) or "" for k in range(count))
    named = [k for k in range(count) if lang.node_kind_is_named(k)]
    visible = [k for k in range(count) if lang.node_kind_is_visible(k)]
    identifier = [k for k in named if "identifier" in names[k] or names[k] in _SYMBOL_KINDS]
    token_len = [-1] * count
    for k in set(visible).difference(named):  # anonymous visible kinds: fixed tokens
        token_len[k] = len(names[k].encode("utf-8"))
    fields = tuple(lang.field_name_for_id(f) for f in range(1, lang.field_count + 1))
    return _tables(names, fields, named, visible, identifier, token_len)
