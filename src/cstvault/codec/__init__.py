"""Record codec: columns <-> self-describing, checksummed bytes."""

from .bytecode import columns_of, decode, decode_raw, encode, read_header
from .errors import CorruptRecord, EncodeError

__all__ = ["CorruptRecord", "EncodeError", "columns_of", "decode", "decode_raw", "encode",
           "read_header"]
