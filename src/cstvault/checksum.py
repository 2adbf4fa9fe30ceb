"""CRC32C (Castagnoli) of everything stored: the native module's, with the SSE4.2 instruction
where the CPU has it and a slicing-by-8 table otherwise (`binding/crc.c`; the tests hold both
to the `crc32c` package)."""

from ._native import crc32c, crc32c_hardware

__all__ = ["crc32c", "crc32c_hardware"]
