"""Errors raised by the codec."""


class CorruptRecord(ValueError):
    """A record failed its checksum or structural validation."""


class EncodeError(ValueError):
    """A tree that the record format cannot represent (reported, never silently stored)."""
