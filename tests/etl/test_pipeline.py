"""BatchProcessor on static DataFrames shaped like Spark's Kafka source (no broker needed)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from typing import Any

import fastavro
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from etl.config import PipelineSettings
from etl.pipeline import BatchProcessor
from etl.registry import FileSchemas, read_avsc
from etl.schema_evolution import ReaderSchema
from etl.sample_data import orders
from etl.sinks import TableSpec
from etl.sinks.iceberg import IcebergSink
from etl.wire import avro_body, encode_glue
from tests.conftest import REPO
from tests.orders import ORDER, spark_row

SCHEMA = read_avsc(REPO / "schemas" / "orders.avsc")
VERSION = "5a1e0000-0000-4000-8000-000000000001"
KAFKA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
)
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def _processor(name: str) -> BatchProcessor:
    settings = PipelineSettings.model_validate(
        {
            "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
            "decode": {"schema_file": str(REPO / "schemas/orders.avsc"), "max_value_bytes": 4096},
            "sink": {"table": f"local.unit.{name}"},
            "dead_letter": {"table": f"local.unit.{name}_dlq"},
            "checkpoint": "/unused",
        }
    )
    return BatchProcessor(
        name=name,
        settings=settings,
        resolver=FileSchemas({VERSION: SCHEMA}),
        reader=ReaderSchema.from_json(SCHEMA),
        sink=IcebergSink(TableSpec(f"local.unit.{name}", ("days(order_ts)",))),
        dead_letter=IcebergSink(TableSpec(f"local.unit.{name}_dlq")),
        clock=functools.partial(lambda: NOW),
    )


def _kafka_batch(
    spark: SparkSession, values: list[bytes | None], first_offset: int = 0
) -> DataFrame:
    ts = dt.datetime(2026, 11, 25, 11, 0)
    rows = [(f"k{i}".encode(), v, "t", 0, first_offset + i, ts, 0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA)


def _frames(records: list[dict[str, Any]]) -> list[bytes | None]:
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    return [
        encode_glue(avro_body(parsed, r), VERSION, compress=i % 2 == 0)
        for i, r in enumerate(records)
    ]


def test_process_commits_good_rows_and_dead_letters_bad_ones(spark: SparkSession) -> None:
    processor = _processor("mixed")
    records = orders(6)
    bad_version = uuid.UUID("00000000-0000-4000-8000-00000000dead")
    poison = [None, b"\x03\x00" + bad_version.bytes + b"\x02"]

    result = processor.process(_kafka_batch(spark, _frames(records) + poison), 0, query_id="q1")

    assert (result.read, result.written, result.dead_lettered, result.committed) == (8, 6, 2, True)
    table = spark.table("local.unit.mixed")
    assert_df_equality(
        table.select(*ORDER.fieldNames()).orderBy("order_id"),
        spark.createDataFrame([spark_row(r) for r in records], ORDER).orderBy("order_id"),
        ignore_nullable=True,
    )
    assert_df_equality(
        table.select("_kafka_key", "_kafka_offset", "_schema_version_id").orderBy("_kafka_offset"),
        spark.createDataFrame(
            [(f"k{i}".encode(), i, VERSION) for i in range(6)],
            "_kafka_key binary, _kafka_offset long, _schema_version_id string",
        ),
        ignore_nullable=True,
    )
    dlq = spark.table("local.unit.mixed_dlq").drop("kafka_timestamp").orderBy("offset")
    expected_dlq = spark.createDataFrame(
        [
            (
                "mixed",
                0,
                NOW.replace(tzinfo=None),
                "t",
                0,
                6,
                b"k6",
                None,
                None,
                "NULL_VALUE",
                "record value is null (tombstone)",
            ),
            (
                "mixed",
                0,
                NOW.replace(tzinfo=None),
                "t",
                0,
                7,
                b"k7",
                poison[1],
                str(bad_version),
                "UNKNOWN_SCHEMA",
                f"schema version {bad_version} is not in the registry",
            ),
        ],
        "pipeline string, batch_id long, ingested_at timestamp, topic string, partition int, "
        "offset long, key binary, value binary, schema_version_id string, error_class string, "
        "error_message string",
    )
    assert_df_equality(dlq, expected_dlq, ignore_nullable=True)
    summary = spark.sql("SELECT summary FROM local.unit.mixed.snapshots").first()
    assert summary is not None
    assert {k: summary[0][k] for k in summary[0] if k.startswith("etl.")} == {
        "etl.pipeline": "mixed",
        "etl.query-id": "q1",
        "etl.batch-id": "0",
        "etl.records-read": "8",
        "etl.records-written": "6",
        "etl.records-dead-lettered": "2",
    }


def test_process_replayed_batch_is_not_committed_twice(spark: SparkSession) -> None:
    batch = _kafka_batch(spark, _frames(orders(4)))
    _processor("replay").process(batch, 0, query_id="q1")

    # a fresh processor = a restarted job: it must learn the last batch from the table itself
    replayed = _processor("replay").process(batch, 0, query_id="q1")
    later = _processor("replay").process(
        _kafka_batch(spark, _frames(orders(2, start=4)), first_offset=4), 1, query_id="q1"
    )

    assert (replayed.committed, later.committed) == (False, True)
    ids = [
        r[0]
        for r in spark.table("local.unit.replay").orderBy("order_id").select("order_id").collect()
    ]
    assert ids == ["o-0", "o-1", "o-2", "o-3", "o-4", "o-5"]
    snapshots = spark.sql(
        "SELECT summary['etl.batch-id'] FROM local.unit.replay.snapshots ORDER BY committed_at"
    ).collect()
    assert [r[0] for r in snapshots] == ["0", "1"]


def test_process_new_query_id_starts_a_new_batch_sequence(spark: SparkSession) -> None:
    batch = _kafka_batch(spark, _frames(orders(3)))
    first = _processor("newq").process(batch, 0, query_id="old-checkpoint")
    second = _processor("newq").process(batch, 0, query_id="new-checkpoint")
    assert (first.committed, second.committed) == (True, True)
    assert spark.table("local.unit.newq").count() == 6


def test_batch_processor_call_records_results_once_bound(spark: SparkSession) -> None:
    processor = _processor("bound")
    processor.bind("q-bound")
    processor(_kafka_batch(spark, _frames(orders(2))), 0)
    assert [(r.batch_id, r.read, r.written, r.committed) for r in processor.results] == [
        (0, 2, 2, True)
    ]
