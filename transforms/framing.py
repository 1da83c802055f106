"""Parse Glue / Confluent wire frames with column expressions (no per-row Python).

``parse_frame`` adds these columns to a DataFrame of Kafka records:

- ``_schema_key`` (binary): the schema id's raw bytes as framed (Glue: the 16 bytes of the
  version UUID; Confluent: the 4-byte id; plain Avro: a fixed key); null when the frame is
  bad. Kept as bytes so no row pays for formatting it: ``schema_key`` / ``schema_id_of_key``
  convert between a registry id and its key, ``schema_id_column`` formats it where needed.
- ``_compression`` (string): ``none`` or ``zlib``; null when the frame is bad.
- ``_payload`` (binary): the Avro body (still compressed for ``zlib``); null when bad.
- ``_error_class`` / ``_error_message`` (string): why the frame is bad; null when good.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms.columns import COMPRESSION, ERROR_CLASS, ERROR_MESSAGE, PAYLOAD, SCHEMA_KEY
from transforms.errors import ErrorClass
from transforms.wire import (
    CONFLUENT_HEADER_LENGTH,
    CONFLUENT_MAGIC,
    GLUE_COMPRESSION_NONE,
    GLUE_COMPRESSION_ZLIB,
    GLUE_HEADER_LENGTH,
    GLUE_HEADER_VERSION,
    WireFormat,
)

PLAIN_AVRO_SCHEMA_ID = "plain"
FRAME_COLUMNS = (SCHEMA_KEY, COMPRESSION, PAYLOAD, ERROR_CLASS, ERROR_MESSAGE)

_Checks = list[tuple[Column, ErrorClass, Column]]


def parse_frame(
    *, wire_format: WireFormat, max_value_bytes: int, value_col: str = "value"
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform that parses each record value's wire frame.

    Args:
        wire_format: How the values are framed (plain Avro: no header).
        max_value_bytes: Larger values are rejected as ``VALUE_TOO_LARGE``.
        value_col: The binary column holding the Kafka record value.

    Returns:
        A function for ``df.transform(...)`` adding the frame columns listed in the module doc.
    """

    def _transform(df: DataFrame) -> DataFrame:
        value = F.col(value_col)
        size = F.length(value)
        checks: _Checks = [
            (value.isNull(), ErrorClass.NULL_VALUE, F.lit("record value is null (tombstone)")),
            (
                size > max_value_bytes,
                ErrorClass.VALUE_TOO_LARGE,
                F.format_string(f"value is %d bytes, over the limit of {max_value_bytes}", size),
            ),
        ]
        if wire_format is WireFormat.GLUE:
            checks += _glue_checks(value, size)
            key = value.substr(F.lit(3), F.lit(16))
            compression = F.when(
                _byte(value, 2) == _literal(GLUE_COMPRESSION_ZLIB), F.lit("zlib")
            ).otherwise(F.lit("none"))
            payload = F.substring(value, GLUE_HEADER_LENGTH + 1, _TO_THE_END)
        elif wire_format is WireFormat.CONFLUENT:
            checks += _confluent_checks(value, size)
            key = value.substr(F.lit(2), F.lit(4))
            compression = F.lit("none")
            payload = F.substring(value, CONFLUENT_HEADER_LENGTH + 1, _TO_THE_END)
        else:
            key = F.lit(PLAIN_AVRO_SCHEMA_ID.encode())
            compression = F.lit("none")
            payload = value

        error_class: Column = F.lit(None).cast("string")
        error_message: Column = F.lit(None).cast("string")
        # first matching check wins: build the CASE from the last check backwards
        for condition, error, message in reversed(checks):
            error_class = F.when(condition, F.lit(error.value)).otherwise(error_class)
            error_message = F.when(condition, message).otherwise(error_message)
        good = F.col(ERROR_CLASS).isNull()
        return (
            df.withColumn(ERROR_CLASS, error_class)
            .withColumn(ERROR_MESSAGE, error_message)
            .withColumn(SCHEMA_KEY, F.when(good, key))
            .withColumn(COMPRESSION, F.when(good, compression))
            .withColumn(PAYLOAD, F.when(good, payload))
        )

    return _transform


# substring length meaning "to the end" (avoids computing each value's length again)
_TO_THE_END = 2**31 - 1


def _byte(value: Column, position: int) -> Column:
    """The byte at 1-based ``position`` as a 1-byte binary (compared with binary literals:
    no per-row hex/number conversion)."""
    return F.substring(value, position, 1)


def _literal(byte: int) -> Column:
    """A 1-byte binary literal."""
    return F.lit(bytes([byte]))


def _hex_byte(value: Column, position: int) -> Column:
    """The byte at 1-based ``position`` as two lower-case hex digits, for messages."""
    return F.lower(F.hex(_byte(value, position)))


def _glue_checks(value: Column, size: Column) -> _Checks:
    """Header version, then length, then compression byte — the order a reader hits them."""
    return [
        (size == 0, ErrorClass.FRAME_TOO_SHORT, F.lit("value is empty, expected a Glue frame")),
        (
            _byte(value, 1) != _literal(GLUE_HEADER_VERSION),
            ErrorClass.UNKNOWN_HEADER_VERSION,
            F.concat(
                F.lit(f"expected Glue header version byte 0x{GLUE_HEADER_VERSION:02x}, found 0x"),
                _hex_byte(value, 1),
            ),
        ),
        (
            size < GLUE_HEADER_LENGTH,
            ErrorClass.FRAME_TOO_SHORT,
            F.format_string(
                f"expected a Glue header of {GLUE_HEADER_LENGTH} bytes, value has %d", size
            ),
        ),
        (
            ~_byte(value, 2).isin(_literal(GLUE_COMPRESSION_NONE), _literal(GLUE_COMPRESSION_ZLIB)),
            ErrorClass.UNKNOWN_COMPRESSION,
            F.concat(
                F.lit(
                    f"expected compression byte 0x{GLUE_COMPRESSION_NONE:02x} (none) or "
                    f"0x{GLUE_COMPRESSION_ZLIB:02x} (zlib), found 0x"
                ),
                _hex_byte(value, 2),
            ),
        ),
    ]


def _confluent_checks(value: Column, size: Column) -> _Checks:
    """Magic byte, then length."""
    return [
        (
            size == 0,
            ErrorClass.FRAME_TOO_SHORT,
            F.lit("value is empty, expected a Confluent frame"),
        ),
        (
            _byte(value, 1) != _literal(CONFLUENT_MAGIC),
            ErrorClass.UNKNOWN_HEADER_VERSION,
            F.concat(
                F.lit(f"expected Confluent magic byte 0x{CONFLUENT_MAGIC:02x}, found 0x"),
                _hex_byte(value, 1),
            ),
        ),
        (
            size < CONFLUENT_HEADER_LENGTH,
            ErrorClass.FRAME_TOO_SHORT,
            F.format_string(
                f"expected a Confluent header of {CONFLUENT_HEADER_LENGTH} bytes, value has %d",
                size,
            ),
        ),
    ]


def schema_key(wire_format: WireFormat, schema_id: str) -> bytes:
    """The framed bytes of a registry schema id (the inverse of ``schema_id_of_key``).

    Raises:
        ValueError: ``schema_id`` is not an id of that wire format.
    """
    if wire_format is WireFormat.GLUE:
        return uuid.UUID(schema_id).bytes
    if wire_format is WireFormat.CONFLUENT:
        return int(schema_id).to_bytes(4, "big")
    if schema_id != PLAIN_AVRO_SCHEMA_ID:
        raise ValueError(
            f"plain_avro schema id: expected {PLAIN_AVRO_SCHEMA_ID!r}, found {schema_id!r}"
        )
    return PLAIN_AVRO_SCHEMA_ID.encode()


def schema_id_of_key(wire_format: WireFormat, key: bytes) -> str:
    """The registry schema id of a framed key (Glue: UUID string, Confluent: decimal)."""
    if wire_format is WireFormat.GLUE:
        return str(uuid.UUID(bytes=bytes(key)))
    if wire_format is WireFormat.CONFLUENT:
        return str(int.from_bytes(key, "big"))
    return bytes(key).decode()


def schema_id_column(wire_format: WireFormat, key: Column) -> Column:
    """``schema_id_of_key`` as a column expression (for rows whose id is not a known literal)."""
    if wire_format is WireFormat.GLUE:
        return F.when(key.isNotNull(), _uuid_string(key))
    if wire_format is WireFormat.CONFLUENT:
        return F.conv(F.hex(key), 16, 10)
    return key.cast("string")


def _uuid_string(raw16: Column) -> Column:
    """Formats 16 big-endian bytes as the canonical lower-case UUID string."""
    digits = F.lower(F.hex(raw16))
    return F.concat_ws(
        "-",
        digits.substr(1, 8),
        digits.substr(9, 4),
        digits.substr(13, 4),
        digits.substr(17, 4),
        digits.substr(21, 12),
    )
