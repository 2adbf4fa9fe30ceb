"""Find the supported source files under some paths, honouring .gitignore files (pathspec)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from stat import S_ISDIR, S_ISREG

import pathspec

from . import languages

ALWAYS_SKIPPED = {".git", ".hg", ".svn", ".cstvault", ".venv", "__pycache__", "node_modules"}


def _load_ignore(directory: str) -> pathspec.GitIgnoreSpec | None:
    lines: list[str] = []
    for name in (".gitignore", os.path.join(".git", "info", "exclude")):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    lines += f.read().splitlines()
            except OSError:
                continue
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def _ignored(specs: list[tuple[str, pathspec.GitIgnoreSpec]], path: str, is_dir: bool) -> bool:
    for base, spec in specs:
        rel = path[len(base) + 1 :]  # below `base` (a prefix of `path` by construction)
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        if spec.match_file(rel + "/" if is_dir else rel):
            return True
    return False


Skip = Callable[[Path, str], None]


def iter_files(paths: Iterable[str | os.PathLike[str]],
               skipped: Skip | None = None) -> Iterator[tuple[Path, str]]:  # fmt: skip
    """Yield (path, language) for each supported file, in a stable sorted order.

    Directories are walked with their .gitignore files applied (nested ones included);
    a file named explicitly is yielded whenever its language is supported. Symbolic links
    are followed when they lead inside the walked root (a linked directory once: a link
    back to a directory being walked, or to one already walked, is not followed again);
    every other link is passed to `skipped(path, reason)`.
    """
    for path, language, _ in walk_files(paths, skipped):
        yield Path(path), language


def walk_files(paths: Iterable[str | os.PathLike[str]], skipped: Skip | None = None
               ) -> Iterator[tuple[str, str, os.stat_result | None]]:  # fmt: skip
    """`iter_files` as plain strings, with each walked file's `stat` (following a link to
    it; None when it could not be read): what `index` compares with the catalog."""
    report = skipped or (lambda p, r: None)
    for raw in paths:
        root = os.fspath(raw)
        if os.path.isfile(root):
            lang = languages.detect(root)
            if lang:
                yield root, lang, None
            continue
        real = os.path.realpath(root)
        yield from _walk(root.rstrip(os.sep) or os.sep, real, [], _Walk(real, report))


def listed_files(root: str, rels: Iterable[str]
                 ) -> Iterator[tuple[str, str, os.stat_result | None]]:  # fmt: skip
    """Root-relative files named by a caller (a shard's share of one walk) as `walk_files`
    yields them; unsupported names are left out, a file that cannot be stat'ed has None."""
    for rel in rels:
        lang = languages.detect(rel)
        if not lang:
            continue
        path = os.path.join(root, *rel.split("/"))
        try:
            st = os.stat(path)
        except OSError:
            st = None
        yield path, lang, st


class _Walk:
    def __init__(self, root: str, skipped: Skip):
        self.root = root
        self.skipped = skipped
        self.seen: set[str] = {root}  # real paths of the directories walked

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)


def _link(entry: os.DirEntry, walk: _Walk) -> tuple[str, str | None]:
    """('dir' | 'file' | '', reason to skip it or None) for a symbolic link."""
    try:
        st = os.stat(entry.path)
    except OSError as exc:
        return "", ("symlink: loop" if exc.errno == errno.ELOOP
                    else f"symlink: broken ({exc.strerror})")  # fmt: skip
    kind = "dir" if S_ISDIR(st.st_mode) else "file" if S_ISREG(st.st_mode) else ""
    real = os.path.realpath(entry.path)
    if not kind:
        return "", "symlink: not a regular file or directory"
    if not walk.inside(real):
        return kind, f"symlink: leads outside the root (to {os.readlink(entry.path)})"
    if kind == "dir" and real in walk.seen:
        return kind, "symlink: loop, or a directory already walked"
    return kind, None


def _entries(directory: str) -> list[os.DirEntry] | None:
    try:
        return sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return None


def _walk(
    directory: str, real_dir: str, specs: list[tuple[str, pathspec.GitIgnoreSpec]], walk: _Walk
) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """The files under `directory`, whose real path is `real_dir` (a subdirectory that is
    not a link is its parent's real path and its name: no `realpath` per directory), depth
    first in name order; an explicit stack, so a file is not passed up through a generator
    per directory level."""
    detect = languages.detect
    spec = _load_ignore(directory)
    if spec is not None:
        specs = [*specs, (directory, spec)]
    entries = _entries(directory)
    if entries is None:
        return
    stack = [(iter(entries), real_dir, specs)]
    while stack:
        it, real_dir, specs = stack[-1]
        for entry in it:
            path = entry.path
            try:
                link = entry.is_symlink()
                if link:
                    kind, reason = _link(entry, walk)
                    if reason is not None:
                        wanted = kind == "dir" or detect(entry.name) is not None
                        if wanted and entry.name not in ALWAYS_SKIPPED and not _ignored(
                            specs, path, kind == "dir"
                        ):
                            walk.skipped(Path(path), reason)
                        continue
                    is_dir, is_file = kind == "dir", kind == "file"
                else:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = not is_dir and entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if entry.name in ALWAYS_SKIPPED or (specs and _ignored(specs, path, True)):
                    continue
                real = os.path.realpath(path) if link else os.path.join(real_dir, entry.name)
                walk.seen.add(real)
                sub = _entries(path)
                if sub is None:
                    continue
                spec = _load_ignore(path)
                stack.append((iter(sub), real, [*specs, (path, spec)] if spec else specs))
                break  # descend: this directory's iterator resumes after it
            if is_file:
                lang = detect(entry.name)
                if lang and not (specs and _ignored(specs, path, False)):
                    try:
                        st = entry.stat()  # follows a link; cached by the entry
                    except OSError:
                        st = None
                    yield path, lang, st
        else:
            stack.pop()


class Ignored:
    """Would the walk skip this path? (`watch` asks it of each changed file.) The
    .gitignore files of the root and of each directory down to the path apply, as in the
    walk; they are read once and kept (`forget` drops them, e.g. after a .gitignore
    changes)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.path.abspath(root)
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}

    def forget(self) -> None:
        self._specs.clear()

    def _spec(self, directory: str) -> pathspec.GitIgnoreSpec | None:
        if directory not in self._specs:
            self._specs[directory] = _load_ignore(directory)
        return self._specs[directory]

    def __call__(self, path: str | os.PathLike[str]) -> bool:
        p = os.path.abspath(path)
        rel = os.path.relpath(p, self.root)
        if rel.startswith(os.pardir):
            return True
        parts = rel.split(os.sep)
        if any(part in ALWAYS_SKIPPED for part in parts):
            return True
        specs = []
        base = self.root
        for k, part in enumerate(parts):
            spec = self._spec(base)
            if spec is not None:
                specs.append((base, spec))
            sub = os.path.join(base, part)
            if specs and _ignored(specs, sub, k < len(parts) - 1):
                return True
            base = sub
        return False
