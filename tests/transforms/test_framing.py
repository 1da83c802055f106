from __future__ import annotations

import uuid
import zlib

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from devtools.wire import encode_confluent, encode_glue
from transforms.framing import parse_frame, schema_id_column, schema_id_of_key, schema_key
from transforms.wire import WireFormat

VERSION = uuid.UUID("0ee7736e-7736-4ff4-8cff-db01e0a1e584")
FRAMED = StructType(
    [
        StructField("value", BinaryType()),
        StructField("_error_class", StringType()),
        StructField("_error_message", StringType()),
        StructField("_schema_key", BinaryType()),
        StructField("_compression", StringType()),
        StructField("_payload", BinaryType()),
    ]
)


def _values(spark: SparkSession, values: list[bytes | None]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(
        [(v,) for v in values], StructType([StructField("value", BinaryType())])
    )


def test_parse_frame_glue_good_and_bad_frames(spark: SparkSession) -> None:
    body = b"\x02\x04ab"
    compressed = encode_glue(body, VERSION, compress=True)
    bad_compression = bytes([0x03, 0x07]) + VERSION.bytes + body
    values = [
        encode_glue(body, VERSION),
        compressed,
        None,
        b"",
        b"\x00\x00\x00\x00\x01\x02",
        b"\x03\x00\x01\x02",
        bad_compression,
        b"\x03" * 65,
    ]
    actual = _values(spark, values).transform(
        parse_frame(wire_format=WireFormat.GLUE, max_value_bytes=64)
    )
    expected = spark.createDataFrame(
        [
            (values[0], None, None, VERSION.bytes, "none", body),
            (compressed, None, None, VERSION.bytes, "zlib", zlib.compress(body)),
            (None, "NULL_VALUE", "record value is null (tombstone)", None, None, None),
            (b"", "FRAME_TOO_SHORT", "value is empty, expected a Glue frame", None, None, None),
            (
                values[4],
                "UNKNOWN_HEADER_VERSION",
                "expected Glue header version byte 0x03, found 0x00",
                None,
                None,
                None,
            ),
            (
                values[5],
                "FRAME_TOO_SHORT",
                "expected a Glue header of 18 bytes, value has 4",
                None,
                None,
                None,
            ),
            (
                bad_compression,
                "UNKNOWN_COMPRESSION",
                "expected compression byte 0x00 (none) or 0x05 (zlib), found 0x07",
                None,
                None,
                None,
            ),
            (
                values[7],
                "VALUE_TOO_LARGE",
                "value is 65 bytes, over the limit of 64",
                None,
                None,
                None,
            ),
        ],
        FRAMED,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_parse_frame_glue_header_only_gives_empty_payload(spark: SparkSession) -> None:
    value = encode_glue(b"", VERSION)
    actual = _values(spark, [value]).transform(
        parse_frame(wire_format=WireFormat.GLUE, max_value_bytes=64)
    )
    expected = spark.createDataFrame([(value, None, None, VERSION.bytes, "none", b"")], FRAMED)
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_parse_frame_confluent(spark: SparkSession) -> None:
    good = encode_confluent(b"\x02x", 258)
    values = [good, b"\x01\x00\x00\x00\x01x", b"\x00\x00\x01"]
    actual = _values(spark, values).transform(
        parse_frame(wire_format=WireFormat.CONFLUENT, max_value_bytes=64)
    )
    expected = spark.createDataFrame(
        [
            (good, None, None, (258).to_bytes(4, "big"), "none", b"\x02x"),
            (
                values[1],
                "UNKNOWN_HEADER_VERSION",
                "expected Confluent magic byte 0x00, found 0x01",
                None,
                None,
                None,
            ),
            (
                values[2],
                "FRAME_TOO_SHORT",
                "expected a Confluent header of 5 bytes, value has 3",
                None,
                None,
                None,
            ),
        ],
        FRAMED,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_parse_frame_plain_avro_passes_value_through(spark: SparkSession) -> None:
    actual = _values(spark, [b"\x02x", None]).transform(
        parse_frame(wire_format=WireFormat.PLAIN_AVRO, max_value_bytes=64)
    )
    expected = spark.createDataFrame(
        [
            (b"\x02x", None, None, b"plain", "none", b"\x02x"),
            (None, "NULL_VALUE", "record value is null (tombstone)", None, None, None),
        ],
        FRAMED,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize(
    ("wire_format", "schema_id", "key"),
    [
        (WireFormat.GLUE, str(VERSION), VERSION.bytes),
        (WireFormat.CONFLUENT, "258", b"\x00\x00\x01\x02"),
        (WireFormat.PLAIN_AVRO, "plain", b"plain"),
    ],
)
def test_schema_key_round_trips_and_matches_the_column_expression(
    spark: SparkSession, wire_format: WireFormat, schema_id: str, key: bytes
) -> None:
    assert schema_key(wire_format, schema_id) == key
    assert schema_id_of_key(wire_format, key) == schema_id
    keys = spark.createDataFrame([(key,), (None,)], "k binary")
    actual = keys.select(schema_id_column(wire_format, F.col("k")).alias("id"))
    expected = spark.createDataFrame([(schema_id,), (None,)], "id string")
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_schema_key_rejects_an_id_of_another_format() -> None:
    with pytest.raises(ValueError, match="expected 'plain', found '7'"):
        schema_key(WireFormat.PLAIN_AVRO, "7")
    with pytest.raises(ValueError, match="badly formed hexadecimal UUID string"):
        schema_key(WireFormat.GLUE, "7")
