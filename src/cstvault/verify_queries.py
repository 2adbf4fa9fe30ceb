"""The query gate: every query the grammar wheels ship, run on cstvault's tree of each file
(the record the store keeps, decoded) and on py-tree-sitter's fresh parse, must answer the
same (`cstvault verify-queries`).

Compared per (file, query): the `matches` (pattern index, capture names, each node's type
and byte range, in order) and the `captures` (per capture name, the nodes as a multiset:
py-tree-sitter 0.26.1 returns them out of a set, in an order that varies between runs).
Files are spread over worker processes; py-tree-sitter's compiled queries are kept for the
life of a process (0.26.1 corrupts the heap when it frees one holding `#eq?` predicates).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter as ts

from . import languages
from .grammar_queries import query_texts
from .query import Query, QueryCursor
from .sources import check_source, count_lines

_OURS: dict[tuple[str, str], Query] = {}
_THEIRS: dict[tuple[str, str], ts.Query] = {}  # never freed (see above)


@dataclass
class QueryReport:
    files: int = 0
    lines: int = 0
    queries: int = 0  # (file, query) pairs compared
    matches: int = 0
    differences: int = 0
    skipped: int = 0
    examples: list[dict] = field(default_factory=list)

    def add(self, other: QueryReport) -> None:
        for name in ("files", "lines", "queries", "matches", "differences", "skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples += other.examples[: max(0, 20 - len(self.examples))]

    def as_dict(self) -> dict:
        return {"files": self.files, "lines": self.lines, "queries": self.queries,
                "matches": self.matches, "differences": self.differences,
                "skipped": self.skipped, "examples": self.examples}  # fmt: skip


def _queries(language: str) -> list[tuple[str, Query, ts.Query]]:
    out = []
    for kind, text in query_texts(language).items():
        key = (language, kind)
        if key not in _OURS:
            _OURS[key] = Query(language, text)
            _THEIRS[key] = ts.Query(languages.language(language), text)
        out.append((kind, _OURS[key], _THEIRS[key]))
    return out


def _node(n) -> tuple:
    return (n.type, n.start_byte, n.end_byte)


def compare_file(path: str, language: str, source: bytes) -> QueryReport:
    """All of a language's shipped queries on one source, both ways."""
    import cstvault

    rep = QueryReport(files=1, lines=count_lines(source))
    queries = _queries(language)
    if not queries:
        return rep
    ours_root = cstvault.parse(source, language).root_node
    theirs_root = languages.parser(language).parse(source).root_node
    for kind, ours_q, theirs_q in queries:
        rep.queries += 1
        ours_m = [(p, {k: [_node(n) for n in v] for k, v in c.items()})
                  for p, c in QueryCursor(ours_q).matches(ours_root)]  # fmt: skip
        theirs_m = [(p, {k: [_node(n) for n in v] for k, v in c.items()})
                    for p, c in ts.QueryCursor(theirs_q).matches(theirs_root)]  # fmt: skip
        ours_c = {k: Counter(map(_node, v))
                  for k, v in QueryCursor(ours_q).captures(ours_root).items()}  # fmt: skip
        theirs_c = {k: Counter(map(_node, v))
                    for k, v in ts.QueryCursor(theirs_q).captures(theirs_root).items()}  # fmt: skip
        rep.matches += len(theirs_m)
        if ours_m != theirs_m or ours_c != theirs_c:
            rep.differences += 1
            if len(rep.examples) < 20:
                where = next((k for k, (a, b) in enumerate(zip(ours_m, theirs_m, strict=False))
                              if a != b), min(len(ours_m), len(theirs_m)))  # fmt: skip
                rep.examples.append({"path": path, "query": kind, "match": where,
                                     "ours": str(ours_m[where:where + 1])[:300],
                                     "theirs": str(theirs_m[where:where + 1])[:300]})  # fmt: skip
    return rep


def _one(task: tuple[str, str]) -> QueryReport:
    path, language = task
    try:
        source = Path(path).read_bytes()
    except OSError:
        return QueryReport(skipped=1)
    if check_source(source):
        return QueryReport(skipped=1)
    return compare_file(path, language, source)


def verify_queries(files: Iterable[tuple[Path, str]], jobs: int = 1,
                   progress: Callable[[str], None] | None = None) -> QueryReport:  # fmt: skip
    """Compare on every (path, language); `progress(path)` after each file."""
    tasks = [(str(p), lang) for p, lang in files]
    report = QueryReport()
    results: Iterator[QueryReport]
    if jobs > 1:
        pool = ProcessPoolExecutor(jobs)
        results = pool.map(_one, tasks, chunksize=16)
    else:
        pool = None
        results = map(_one, tasks)
    try:
        for (path, _), rep in zip(tasks, results, strict=True):
            report.add(rep)
            if progress:
                progress(path)
    finally:
        if pool is not None:
            pool.shutdown()
    return report
