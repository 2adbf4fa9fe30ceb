"""Record codec: columns <-> self-describing, checksummed bytes."""

from .bytecode import decode, encode, read_header
from .errors import CorruptRecord, EncodeError

__all__ = ["CorruptRecord", "EncodeError", "decode", "encode", "read_header"]
