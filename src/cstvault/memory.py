"""Hand freed heap memory back to the OS (glibc `malloc_trim`), so RSS follows the budget."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _trim():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap pages to the OS where the C library can; True if it could."""
    fn = _trim()
    if fn is None:
        return False
    fn(0)
    return True
