"""Error classes written to the dead-letter table, one per way a record can fail."""

from __future__ import annotations

import enum


class ErrorClass(enum.StrEnum):
    """Why a record went to the dead-letter table."""

    NULL_VALUE = "NULL_VALUE"
    VALUE_TOO_LARGE = "VALUE_TOO_LARGE"
    FRAME_TOO_SHORT = "FRAME_TOO_SHORT"
    UNKNOWN_HEADER_VERSION = "UNKNOWN_HEADER_VERSION"
    UNKNOWN_COMPRESSION = "UNKNOWN_COMPRESSION"
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
    DECOMPRESS_ERROR = "DECOMPRESS_ERROR"
    DECODE_ERROR = "DECODE_ERROR"
    INCOMPATIBLE_SCHEMA = "INCOMPATIBLE_SCHEMA"
    EXPECTATION_FAILED = "EXPECTATION_FAILED"
    # upsert tables: a record without a value in a key field
    MISSING_KEY = "MISSING_KEY"
