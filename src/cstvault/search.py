"""Whole-store queries: one tree-sitter query over every stored file of a language.

Candidates are the files of the query's language (optionally under path globs); when every
pattern needs a literal identifier (`#eq?` / `#any-of?` on a capture that only ever names
identifier-kind leaves, captured at least once), only files whose symbol table holds one of
those literals are read; and a file whose stored set of named node kinds (`kinds.py`) lacks,
for every pattern, a kind the pattern cannot match without, is not read either. Each candidate's
tree record and source are decompressed and tree-sitter's query cursor runs over the
decoded columns (`_native.colq_exec`; over a parse of the source when the columns cannot
answer the query); nothing enters the cache. Matches come back as record events, made into
`StoreMatch`es of `Capture`s in C (`_native.record_matches`, which also applies the text
predicates). With `jobs` > 1, worker processes each open the store and take chunks of
paths, a bounded number in flight, and send back each file's source and events (bytes,
no object per match), so memory does not grow with the number of results waiting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import cache
from typing import NamedTuple

import pathspec

from . import kinds, languages
from .query import Query, QueryCursor, StoreMatch

CHUNK = 64  # paths per task
IN_FLIGHT = 4  # tasks per worker submitted ahead


class Plan(NamedTuple):
    paths: list[str]  # the files to read, in path order
    candidates: int  # files of the language under the globs
    literals: list[bytes] | None  # what the symbol prefilter looked up (None: not used)
    kind_skipped: int = 0  # files the kind prefilter left out


@cache
def _identifier_kinds(language: str) -> frozenset[str]:
    t = languages.tables(language)
    kinds: dict[str, bool] = {}
    for k, name in enumerate(t.names[:-1]):
        kinds[name] = kinds.get(name, True) and bool(t.identifier[k])
    return frozenset(name for name, ident in kinds.items() if ident)


def required_literals(query: Query) -> list[bytes] | None:
    """Identifiers of which a file must hold at least one for any pattern to match it, or
    None when some pattern can match without one."""
    idents = _identifier_kinds(query.language_name)
    source = query._source.decode("utf-8", "replace")
    out: set[bytes] = set()
    for p in range(query.pattern_count):
        if p in query._disabled_patterns:
            continue
        text = source[query.start_byte_for_pattern(p) : query.end_byte_for_pattern(p)]
        found = None
        for pred in query._predicates[p]:
            kind = getattr(pred, "kind", None)
            if kind not in ("eq_string", "any_of") or not pred.positive or pred.any:
                continue
            if query._quantifiers[p][pred.capture] not in (3, 4):  # One, OneOrMore
                continue
            name = re.escape(query.capture_name(pred.capture))
            uses = [m for m in re.finditer(rf"@{name}(?![\w.-])", text)  # not as arguments
                    if not re.search(r"\(#[\w?!.-]+[^()]*$", text[: m.start()])]
            attached = [re.search(r"\((\w+)\)\s*$", text[: m.start()]) for m in uses]
            if uses and all(a is not None and a.group(1) in idents for a in attached):
                values = [v for v in pred.values if re.fullmatch(rb"[A-Za-z_]\w*", v)]
                if len(values) == len(pred.values):
                    found = values
                    break
        if found is None:
            return None
        out.update(found)
    return sorted(out)


class NothingToSearch(ValueError):
    """The store holds no file the query could be run on (a clear error, not an empty
    answer: an empty store, a language it lacks, globs matching none of its files)."""


def plan(store, query: Query, globs: list[str] | None = None) -> Plan:
    """Which stored files a query has to read (NothingToSearch when there are none)."""
    spec = pathspec.GitIgnoreSpec.from_lines(globs) if globs else None
    every = store.catalog.paths_of_language(query.language_name)
    if not every:
        raise NothingToSearch(f"the store at {store.directory} holds no "
                              f"{query.language_name} files")  # fmt: skip
    paths = [p for p in every if spec is None or spec.match_file(p)]
    if not paths:
        raise NothingToSearch(f"no stored {query.language_name} file matches "
                              f"{' '.join(globs or [])}")  # fmt: skip
    candidates = len(paths)
    literals = required_literals(query)
    if literals is not None:
        holding: set[str] = set()
        for text in literals:
            holding.update(store.files_with_symbol(text))
        paths = [p for p in paths if p in holding]
    masks = kinds.required_masks(query)
    before = len(paths)
    if masks and paths:
        stored = store.catalog.kinds_of_language(query.language_name)
        paths = [p for p in paths if p not in stored
                 or kinds.may_match(kinds.bits_value(stored[p], p), masks)]  # fmt: skip
    return Plan(paths, candidates, literals, before - len(paths))


def _match_files(store, query: Query, paths: list[str]) -> list[tuple[str, bytes, bytes]]:
    """(path, source, record events) of each file (what a worker sends back: three bytes-like
    objects a file, no object per match)."""
    cursor = QueryCursor(query)
    return [(path, *_file_matches(store, cursor, path)) for path in paths]


def _store_matches(query: Query, found: list[tuple[str, bytes, bytes]]) -> Iterator[StoreMatch]:
    """The matches of `_match_files`' answer, as `StoreMatch`es, predicates applied."""
    cursor = QueryCursor(query)
    for path, source, raw in found:
        yield from cursor._records(path, source, raw)


def _file_matches(store, cursor: QueryCursor, path: str) -> tuple[bytes, bytes]:
    """(stored source, record events) of one file: the query over its stored tree's
    columns, or over a parse of its source when they cannot answer it."""
    tree, _, source = store._build(path, *store.record_and_text(path))  # checked as a pair
    raw = cursor._exec_columns(tree, 0, False, source)
    if raw is None:
        raw = cursor._exec(source, 0, False, True)
    return source, raw


def file_matches(store, query: Query, path: str) -> tuple[bytes, list[StoreMatch]]:
    """One stored file's source and its matches (what `run` streams for it)."""
    source, raw = _file_matches(store, QueryCursor(query), path)
    return source, list(_store_matches(query, [(path, source, raw)]))


_WORKER: dict = {}


def _init(store_dir: str, language: str, text: bytes, disabled: list[int]) -> None:
    from .store import Store

    _WORKER["store"] = Store.open(store_dir)
    q = Query(language, text)
    for p in disabled:
        q.disable_pattern(p)
    _WORKER["query"] = q


def _task(paths: list[str]) -> list[tuple[str, bytes, bytes]]:
    return _match_files(_WORKER["store"], _WORKER["query"], paths)


def run(store, query: Query, paths: list[str], jobs: int = 1,
        progress: Callable[[int], None] | None = None) -> Iterator[StoreMatch]:  # fmt: skip
    """Stream the matches of `query` in `paths` (in path order); `progress(n)` after each
    chunk of n files."""
    chunks = [paths[k : k + CHUNK] for k in range(0, len(paths), CHUNK)]
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield from _store_matches(query, _match_files(store, query, chunk))
            if progress:
                progress(len(chunk))
        return
    args = (str(store.directory), query.language_name, query._source,
            sorted(query._disabled_patterns))  # fmt: skip
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=args) as pool:
        pending: list[tuple[Future, int]] = []
        todo = iter(chunks)
        for chunk in todo:
            pending.append((pool.submit(_task, chunk), len(chunk)))
            if len(pending) >= IN_FLIGHT * jobs:
                break
        while pending:
            future, n = pending.pop(0)
            yield from _store_matches(query, future.result())
            if progress:
                progress(n)
            chunk = next(todo, None)
            if chunk is not None:
                pending.append((pool.submit(_task, chunk), len(chunk)))
