"""What counts as a storable source file, how its lines are counted, and text that is
fetched only when first read."""

from __future__ import annotations

MAX_FILE_BYTES = 32 * 1024 * 1024
# past this size a file's freed heap is handed back to the OS after (or before) its
# trees are made: glibc would keep it (binding/extract.c's TRIM_AFTER is the same)
LARGE_FILE_BYTES = 256 << 10


def check_source(source: bytes) -> str | None:
    """Why a file cannot be stored, or None."""
    if len(source) > MAX_FILE_BYTES:
        return f"too large: {len(source)} bytes > {MAX_FILE_BYTES}"
    if b"\0" in source[:8192]:
        return "binary: NUL byte in the first 8 KiB"
    return None


def count_lines(source: bytes) -> int:
    """Lines as an editor shows them: newlines, plus an unterminated last line."""
    return source.count(b"\n") + (1 if source and not source.endswith(b"\n") else 0)


class DeferredSource:
    """A tree's text, produced on first use (`Tree` calls `resolve` once and keeps the
    result, also left in `resolved`): the store defers reading and checking a working-tree
    file to that moment."""

    __slots__ = ("resolved",)

    def resolve(self) -> bytes | memoryview:
        raise NotImplementedError
