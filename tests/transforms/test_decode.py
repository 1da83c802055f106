from __future__ import annotations

import datetime as dt
import json
import uuid
import zlib
from decimal import Decimal

import fastavro
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from devtools.wire import avro_body, encode_confluent, encode_glue
from tests.conftest import REPO
from tests.orders import ORDER, spark_row
from transforms.decode import (
    DECODED_MARKER,
    decode_avro,
    inflate_zlib,
    record_fields,
    with_decoded_marker,
)
from transforms.framing import parse_frame
from transforms.routing import dead_letter_rows, flatten_decoded, table_rows
from transforms.wire import WireFormat

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)

ORDERS = (REPO / "schemas" / "orders.avsc").read_text()
V1 = "11111111-1111-1111-1111-111111111111"
V2 = "22222222-2222-2222-2222-222222222222"
UNKNOWN = "99999999-9999-9999-9999-999999999999"

DECODED = StructType(
    [
        StructField("_error_class", StringType()),
        StructField("_error_message", StringType()),
        StructField("_record", ORDER),
    ]
)

FULL = {
    "order_id": "o-1",
    "customer_id": 2**40,
    "customer_email": "a@example.com",
    "status": "SHIPPED",
    "quantity": 3,
    "unit_price": 9.99,
    "amount": Decimal("29.97"),
    "currency": "EUR",
    "order_ts": dt.datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=dt.UTC),
    "updated_ts": dt.datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=dt.UTC),
    "order_date": dt.date(2026, 3, 4),
    "tags": ["gift", "express"],
    "attributes": {"channel": "web", "coupon": "X1"},
    "shipping_address": {
        "street": "1 Main St",
        "city": "Berlin",
        "postcode": None,
        "country": "DE",
    },
    "discount": 0.25,
    "is_gift": True,
}
SPARSE = {
    **FULL,
    "order_id": "o-2",
    "customer_email": None,
    "updated_ts": None,
    "tags": [],
    "attributes": {},
    "shipping_address": None,
    "discount": None,
    "is_gift": False,
}


def _framed(spark: SparkSession, values: list[bytes | None]) -> DataFrame:
    frame = spark.createDataFrame(
        [(v,) for v in values], StructType([StructField("value", BinaryType())])
    )
    return frame.transform(parse_frame(wire_format=WireFormat.GLUE, max_value_bytes=4096))


def _decoded(
    df: DataFrame, writers: dict[str, str], reader: str = ORDERS, engine: str = "python"
) -> DataFrame:
    return (
        df.transform(inflate_zlib(max_bytes=4096, engine=engine))
        .transform(
            decode_avro(wire_format=WireFormat.GLUE, writer_schemas=writers, reader_schema=reader)
        )
        .select(
            "_error_class",
            "_error_message",
            F.col("_record").dropFields(DECODED_MARKER).alias("_record"),
        )
        # maps cannot be sorted by Spark: order on scalar columns instead of ignore_row_order
        .orderBy(F.col("_error_message").asc_nulls_first(), F.to_json("_record"))
    )


ENGINES = pytest.mark.parametrize("engine", ["jvm", "python"])


@ENGINES
def test_decode_avro_every_type_plain_and_zlib(spark: SparkSession, engine: str) -> None:
    parsed = fastavro.parse_schema(json.loads(ORDERS))
    values = [
        encode_glue(avro_body(parsed, FULL), V1),
        encode_glue(avro_body(parsed, SPARSE), V1, compress=True),
    ]
    actual = _decoded(_framed(spark, values), {V1: ORDERS}, engine=engine)
    expected = spark.createDataFrame(
        [(None, None, spark_row(FULL)), (None, None, spark_row(SPARSE))], DECODED
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


@ENGINES
def test_decode_avro_failures_get_their_error_class(spark: SparkSession, engine: str) -> None:
    parsed = fastavro.parse_schema(json.loads(ORDERS))
    body = avro_body(parsed, FULL)
    values = [
        encode_glue(body, UNKNOWN),
        encode_glue(body[:7], V1),  # truncated body
        encode_glue(b"\x07" * 40, V1),  # corrupt body: string length runs past the end
        bytes([0x03, 0x05]) + uuid.UUID(V1).bytes + b"not zlib",
        bytes([0x03, 0x05]) + uuid.UUID(V1).bytes + zlib.compress(body)[:-6],  # cut stream
        bytes([0x03, 0x05]) + uuid.UUID(V1).bytes + zlib.compress(b"\x00" * 5000),  # bomb
        encode_glue(body, V1),
    ]
    actual = _decoded(_framed(spark, values), {V1: ORDERS}, engine=engine)
    bad_body = f"Avro body does not decode with writer schema version {V1}"
    expected = spark.createDataFrame(
        [
            (None, None, spark_row(FULL)),
            ("DECODE_ERROR", bad_body, None),
            ("DECODE_ERROR", bad_body, None),
            ("UNKNOWN_SCHEMA", f"schema version {UNKNOWN} is not in the registry", None),
            ("VALUE_TOO_LARGE", "zlib body inflates past the limit of 4096 bytes", None),
            (
                "DECOMPRESS_ERROR",
                "zlib stream does not inflate: incorrect header check",
                None,
            ),
            ("DECOMPRESS_ERROR", "zlib stream is truncated", None),
        ],
        DECODED,
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_decode_avro_resolves_each_version_onto_the_reader_schema(spark: SparkSession) -> None:
    v1 = {
        "type": "record",
        "name": "Ev",
        "fields": [{"name": "id", "type": "long"}, {"name": "score", "type": "int"}],
    }
    v2 = {
        "type": "record",
        "name": "Ev",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "score", "type": "long"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
    body1 = avro_body(fastavro.parse_schema(v1), {"id": 1, "score": 7})
    body2 = avro_body(fastavro.parse_schema(v2), {"id": 2, "score": 2**40, "note": "hi"})
    frames = _framed(spark, [encode_glue(body1, V1), encode_glue(body2, V2)])
    actual = _decoded(frames, {V1: json.dumps(v1), V2: json.dumps(v2)}, reader=json.dumps(v2))
    record = StructType(
        [
            StructField("id", LongType()),
            StructField("score", LongType()),
            StructField("note", StringType()),
        ]
    )
    expected = spark.createDataFrame(
        [(None, None, (1, 7, None)), (None, None, (2, 2**40, "hi"))],
        StructType([*DECODED.fields[:2], StructField("_record", record)]),
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_decode_avro_all_null_record_is_not_a_decode_error(spark: SparkSession) -> None:
    optional = {
        "type": "record",
        "name": "Opt",
        "fields": [{"name": "a", "type": ["null", "string"], "default": None}],
    }
    body = avro_body(fastavro.parse_schema(optional), {"a": None})
    schema = json.dumps(optional)
    actual = _decoded(_framed(spark, [encode_glue(body, V1)]), {V1: schema}, reader=schema)
    expected = spark.createDataFrame(
        [(None, None, (None,))],
        StructType(
            [
                *DECODED.fields[:2],
                StructField("_record", StructType([StructField("a", StringType())])),
            ]
        ),
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_with_decoded_marker_requires_a_record() -> None:
    with pytest.raises(ValueError, match="expected an Avro record, found type 'string'"):
        with_decoded_marker('{"type": "string"}')


def test_decode_avro_names_versions_keeps_the_marker_and_drops_frame_columns(
    spark: SparkSession,
) -> None:
    body = avro_body(fastavro.parse_schema(json.loads(ORDERS)), FULL)
    frames = _framed(spark, [encode_glue(body, V1), encode_glue(body, UNKNOWN), None])
    decoded = frames.transform(
        decode_avro(
            wire_format=WireFormat.GLUE,
            writer_schemas={V1: ORDERS, V2: ORDERS},
            reader_schema=ORDERS,
            rejected={V2: "field x changed type"},
        )
    )
    assert [c for c in decoded.columns if c != "_record"] == [
        "value",
        "_compression",
        "_schema_id",
        "_barrier",
        "_error_class",
        "_error_message",
    ]
    assert record_fields(decoded) == [f["name"] for f in json.loads(ORDERS)["fields"]]
    actual = decoded.select(
        "_schema_id", "_error_class", F.col(f"_record.{DECODED_MARKER}").alias("marker")
    ).orderBy(F.col("_schema_id").asc_nulls_last())
    expected = spark.createDataFrame(
        [(V1, None, True), (UNKNOWN, "UNKNOWN_SCHEMA", None), (None, "NULL_VALUE", None)],
        "_schema_id string, _error_class string, marker boolean",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_decode_avro_rejected_version_is_incompatible(spark: SparkSession) -> None:
    body = avro_body(fastavro.parse_schema(json.loads(ORDERS)), FULL)
    frames = _framed(spark, [encode_glue(body, V2)])
    actual = frames.transform(
        decode_avro(
            wire_format=WireFormat.GLUE,
            writer_schemas={V2: ORDERS},
            reader_schema=ORDERS,
            rejected={V2: "field x changed type"},
        )
    ).select("_error_class", "_error_message", "_record")
    assert actual.collect() == [
        (
            "INCOMPATIBLE_SCHEMA",
            f"schema version {V2} is incompatible with the table schema: field x changed type",
            None,
        )
    ]


def test_routing_filters_do_not_decode_twice(spark: SparkSession) -> None:
    # a filter on the error columns pushed below the decode would inline from_avro into it
    body = avro_body(fastavro.parse_schema(json.loads(ORDERS)), FULL)
    rows = (
        _framed(spark, [encode_glue(body, V1)])
        .withColumns({"key": F.lit(None).cast("binary"), "topic": F.lit("t")})
        .withColumns({"partition": F.lit(0), "offset": F.lit(0).cast("long")})
        .withColumn("timestamp", F.lit(None).cast("timestamp"))
        .transform(inflate_zlib(max_bytes=4096))
        .transform(
            decode_avro(
                wire_format=WireFormat.GLUE, writer_schemas={V1: ORDERS}, reader_schema=ORDERS
            )
        )
        .transform(flatten_decoded())
    )
    for routed in (
        rows.transform(table_rows()),
        rows.transform(dead_letter_rows(pipeline="p", batch_id=0, ingested_at=NOW)),
    ):
        plan = routed._jdf.queryExecution().optimizedPlan().toString()
        # once, in the decode projection (the CASE fallback on a null literal folds away)
        assert plan.count("from_avro(") == 1, plan
    assert rows.transform(table_rows()).count() == 1


@ENGINES
def test_inflate_zlib_limits_and_trailing_bytes(spark: SparkSession, engine: str) -> None:
    exact = b"x" * 4096
    values = [
        bytes([0x03, 0x05]) + uuid.UUID(V1).bytes + zlib.compress(exact),  # at the limit
        bytes([0x03, 0x05]) + uuid.UUID(V1).bytes + zlib.compress(exact + b"y"),  # one over
        bytes([0x03, 0x05]) + uuid.UUID(V1).bytes + zlib.compress(b"ab") + b"junk",  # ignored
        bytes([0x03, 0x00]) + uuid.UUID(V1).bytes + b"plain",  # not compressed: untouched
    ]
    actual = (
        _framed(spark, values)
        .transform(inflate_zlib(max_bytes=4096, engine=engine))
        .select("_compression", "_payload", "_error_class", "_error_message")
        .orderBy(F.length("_payload").desc_nulls_last(), "_payload")
    )
    expected = spark.createDataFrame(
        [
            ("none", exact, None, None),
            ("none", b"plain", None, None),
            ("none", b"ab", None, None),
            (None, None, "VALUE_TOO_LARGE", "zlib body inflates past the limit of 4096 bytes"),
        ],
        "_compression string, _payload binary, _error_class string, _error_message string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_inflate_zlib_rejects_an_unknown_engine() -> None:
    with pytest.raises(ValueError, match="expected jvm or python, found 'c'"):
        inflate_zlib(max_bytes=1, engine="c")


def test_decode_avro_confluent_ids_match_their_framed_key(spark: SparkSession) -> None:
    body = avro_body(fastavro.parse_schema(json.loads(ORDERS)), FULL)
    values = spark.createDataFrame(
        [(encode_confluent(body, 7),), (encode_confluent(body, 8),)],
        StructType([StructField("value", BinaryType())]),
    )
    actual = (
        values.transform(parse_frame(wire_format=WireFormat.CONFLUENT, max_value_bytes=4096))
        .transform(
            decode_avro(
                wire_format=WireFormat.CONFLUENT, writer_schemas={"7": ORDERS}, reader_schema=ORDERS
            )
        )
        .select("_schema_id", "_error_class", F.col("_record.order_id").alias("order_id"))
        .orderBy("_schema_id")
    )
    expected = spark.createDataFrame(
        [("7", None, "o-1"), ("8", "UNKNOWN_SCHEMA", None)],
        "_schema_id string, _error_class string, order_id string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True)
