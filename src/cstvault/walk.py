"""Find the supported source files under some paths, honouring .gitignore files (pathspec)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pathspec

from . import languages

ALWAYS_SKIPPED = {".git", ".hg", ".svn", ".cstvault", ".venv", "__pycache__", "node_modules"}


def _load_ignore(directory: Path) -> pathspec.GitIgnoreSpec | None:
    lines: list[str] = []
    for name in (".gitignore", os.path.join(".git", "info", "exclude")):
        p = directory / name
        if p.is_file():
            try:
                lines += p.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _ignored(specs: list[tuple[Path, pathspec.GitIgnoreSpec]], path: Path, is_dir: bool) -> bool:
    for base, spec in specs:
        rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        if spec.match_file(rel):
            return True
    return False


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, str]]:
    """Yield (path, language) for each supported file, in a stable sorted order.

    Directories are walked with their .gitignore files applied (nested ones included);
    a file named explicitly is yielded whenever its language is supported.
    """
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            lang = languages.detect(root)
            if lang:
                yield root, lang
            continue
        yield from _walk(root, [])


def _walk(
    directory: Path, specs: list[tuple[Path, pathspec.GitIgnoreSpec]]
) -> Iterator[tuple[Path, str]]:
    spec = _load_ignore(directory)
    if spec is not None:
        specs = [*specs, (directory, spec)]
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = entry.is_file(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            if entry.name in ALWAYS_SKIPPED or _ignored(specs, path, True):
                continue
            yield from _walk(path, specs)
        elif is_file:
            lang = languages.detect(entry.name)
            if lang and not _ignored(specs, path, False):
                yield path, lang
