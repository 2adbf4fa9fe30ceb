"""Grammar registry: language name <-> grammar wheel <-> file extensions.

Grammars come only from the official single-language wheels installed with the package;
nothing is ever downloaded at run time.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import mmap
import os
from dataclasses import dataclass
from functools import cache
from importlib import metadata

import numpy as np
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
    spec = BY_NAME[name]
    return f"{name}:{metadata.version(spec.distribution)}:abi{language(name).abi_version}"


def identity_language(ident: str) -> str:
    return ident.split(":", 1)[0]


# Named leaf kinds, besides every "...identifier", whose text names something.
_SYMBOL_KINDS = {"name", "constant", "symbol", "simple_identifier", "word"}


@dataclass(frozen=True)
class KindTables:
    """Per-language lookup tables indexed by symbol id (65536 entries: ERROR is 0xFFFF)."""

    names: tuple[str, ...]  # symbol id -> type name; the last entry is ERROR (id 0xFFFF)
    named: np.ndarray  # bool per symbol id
    visible: np.ndarray  # bool per symbol id
    identifier: np.ndarray  # bool per symbol id: named kinds whose text is a symbol name
    token_len: np.ndarray  # int16 per symbol id: UTF-8 length of an anonymous token, -1 if none
    fields: tuple[str | None, ...]

    def name(self, kind: int) -> str:
        return self.names[-1] if kind == 0xFFFF else self.names[kind]

    def name_index(self, kinds: np.ndarray) -> np.ndarray:
        """Positions in `names` of an array of symbol ids (ERROR maps to the last)."""
        return np.where(kinds == 0xFFFF, len(self.names) - 1, kinds)


def _lazy_zeros() -> tuple[np.ndarray, ...]:
    """Three bool and one int16 array of 65536 entries in one anonymous mapping: only the
    pages of the ids a grammar uses (and ERROR's) ever become resident. Ids past the
    grammar's count are invalid kinds (the decoder rejects them); they read as 0."""
    block = mmap.mmap(-1, 5 * 65536)
    named, visible, identifier = (
        np.frombuffer(block, dtype=bool, count=65536, offset=k * 65536) for k in range(3)
    )
    token_len = np.frombuffer(block, dtype=np.int16, count=65536, offset=3 * 65536)
    return named, visible, identifier, token_len


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
    count = len(body["names"])
    named, visible, identifier, token_len = _lazy_zeros()
    for arr, key in ((named, "named"), (visible, "visible"), (identifier, "identifier")):
        arr[np.array(body[key], dtype=np.int64)] = True
    named[0xFFFF] = visible[0xFFFF] = True
    token_len[:count] = np.array(body["token_len"], dtype=np.int16)
    token_len[0xFFFF] = -1
    return KindTables(tuple(body["names"]) + ("ERROR",), named, visible, identifier, token_len,
                      (None, *body["fields"]))  # fmt: skip


_TABLES: dict[str, KindTables] = {}
_OFFERED: dict[str, tuple[str, bytes]] = {}


@cache
def wheel_version(name: str) -> str:
    return metadata.version(BY_NAME[name].distribution)


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
    kind_names: list[str] = [""] * (count + 1)
    named, visible, identifier, token_len = _lazy_zeros()
    token_len[:count] = -1
    token_len[0xFFFF] = -1
    for k in range(count):
        kn = lang.node_kind_for_id(k) or ""
        kind_names[k] = kn
        named[k] = lang.node_kind_is_named(k)
        visible[k] = lang.node_kind_is_visible(k)
        identifier[k] = bool(named[k]) and ("identifier" in kn or kn in _SYMBOL_KINDS)
        if not named[k] and lang.node_kind_is_visible(k):
            token_len[k] = len(kn.encode("utf-8"))
    kind_names[count] = "ERROR"
    named[0xFFFF] = True
    visible[0xFFFF] = True
    fields: list[str | None] = [None] + [
        lang.field_name_for_id(f) for f in range(1, lang.field_count + 1)
    ]
    return KindTables(tuple(kind_names), named, visible, identifier, token_len, tuple(fields))
