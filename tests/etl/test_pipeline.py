"""Pipeline.process on static DataFrames shaped like Spark's Kafka source (no broker needed)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
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

from devtools.sample_data import orders
from devtools.wire import avro_body, encode_confluent, encode_glue
from etl.commit import BatchCommitter
from etl.config import PipelineSettings, Settings
from etl.decoding import BatchDecoder
from etl.exceptions import ConfigError, ExpectationFailedError
from etl.formats import TableSpec
from etl.formats.iceberg import IcebergSink
from etl.pipeline import Pipeline, build_pipeline, stored_reader_schema
from etl.registry import FileSchemas, read_avsc
from tests.conftest import REPO, catalog_block
from tests.orders import ORDER, spark_row
from transforms.schema_evolution import ReaderSchema

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


def _pipeline(
    name: str,
    *,
    expectations: list[dict[str, str]] | None = None,
    schemas: dict[str, str] | None = None,
) -> Pipeline:
    settings = PipelineSettings.model_validate(
        {
            "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
            "decode": {"schema_file": str(REPO / "schemas/orders.avsc"), "max_value_bytes": 4096},
            "sink": {"table": f"local.unit.{name}", "partition_by": ["days(order_ts)"]},
            "dead_letter": {"table": f"local.unit.{name}_dlq"},
            "checkpoint": "/unused",
            "expectations": expectations or [],
        }
    )
    expectations_ = tuple(settings.expectations)
    table = IcebergSink(TableSpec(f"local.unit.{name}", settings.sink.partition_fields))
    return Pipeline(
        name,
        BatchDecoder(
            name,
            settings.decode,
            FileSchemas({VERSION: SCHEMA, **(schemas or {})}),
            ReaderSchema.from_json(SCHEMA),
            expectations_,
            stored_schema=functools.partial(stored_reader_schema, table),
        ),
        BatchCommitter(
            name,
            table,
            IcebergSink(TableSpec(f"local.unit.{name}_dlq", evolve=False)),
            expectations_,
        ),
        clock=lambda: NOW,
    )


def _kafka_batch(
    spark: SparkSession, values: list[bytes | None], first_offset: int = 0
) -> DataFrame:
    ts = dt.datetime(2026, 11, 25, 11, 0)
    rows = [(f"k{i}".encode(), v, "t", 0, first_offset + i, ts, 0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA)


def _frames(
    records: list[dict[str, Any]], schema: str = SCHEMA, version: str = VERSION
) -> list[bytes | None]:
    parsed = fastavro.parse_schema(json.loads(schema))
    return [
        encode_glue(avro_body(parsed, r), version, compress=i % 2 == 0)
        for i, r in enumerate(records)
    ]


def test_process_commits_good_rows_and_dead_letters_bad_ones(spark: SparkSession) -> None:
    pipeline = _pipeline("mixed")
    records = orders(6)
    bad_version = uuid.UUID("00000000-0000-4000-8000-00000000dead")
    poison = [None, b"\x03\x00" + bad_version.bytes + b"\x02"]

    result = pipeline.process(_kafka_batch(spark, _frames(records) + poison), 0, query_id="q1")

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
                None,
                None,
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
                None,
                None,
            ),
        ],
        "pipeline string, batch_id long, ingested_at timestamp, topic string, partition int, "
        "offset long, key binary, value binary, schema_version_id string, error_class string, "
        "error_message string, replayed_at timestamp, replay_id string",
    )
    assert_df_equality(dlq, expected_dlq, ignore_nullable=True)
    # the table commit knows what was read (the rest is counted during its write); the
    # dead-letter commit comes after it and carries every count
    summary = spark.sql("SELECT summary FROM local.unit.mixed.snapshots").first()
    assert summary is not None
    assert summary[0]["added-records"] == "6"
    batch = {
        "etl.pipeline": "mixed",
        "etl.query-id": "q1",
        "etl.batch-id": "0",
        # offset lineage: the Kafka offsets the commit holds (both tables' commits)
        "etl.kafka.offsets": '{"t":{"0":[0,8]}}',
    }
    assert {k: summary[0][k] for k in summary[0] if k.startswith("etl.")} == {
        **batch,
        "etl.records-read": "8",
        # a restarted job evolves on from the reader schema the table recorded
        "etl.reader-schema": SCHEMA,
    }
    dlq_summary = spark.sql("SELECT summary FROM local.unit.mixed_dlq.snapshots").first()
    assert dlq_summary is not None
    assert {k: dlq_summary[0][k] for k in dlq_summary[0] if k.startswith("etl.")} == {
        **batch,
        "etl.records-read": "8",
        "etl.records-written": "6",
        "etl.records-dead-lettered": "2",
        "etl.records-forgotten": "0",
    }


def test_process_replayed_batch_is_not_committed_twice(spark: SparkSession) -> None:
    batch = _kafka_batch(spark, _frames(orders(4)))
    _pipeline("replay").process(batch, 0, query_id="q1")

    # a fresh pipeline = a restarted job: it must learn the last batch from the table itself
    replayed = _pipeline("replay").process(batch, 0, query_id="q1")
    later = _pipeline("replay").process(
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


def test_process_all_failed_batch_commits_only_dead_letters(spark: SparkSession) -> None:
    poison = [None, b"\x00bad", encode_glue(b"\x07" * 30, VERSION)]
    batch = _kafka_batch(spark, poison)
    first = _pipeline("all_dead").process(batch, 0, query_id="q")
    replayed = _pipeline("all_dead").process(batch, 0, query_id="q")

    assert (first.read, first.written, first.dead_lettered, first.committed) == (3, 0, 3, True)
    assert (replayed.dead_lettered, replayed.committed) == (3, False)
    assert not spark.catalog.tableExists("local.unit.all_dead")
    classes = spark.table("local.unit.all_dead_dlq").orderBy("offset").select("error_class")
    assert [r[0] for r in classes.collect()] == [
        "NULL_VALUE",
        "UNKNOWN_HEADER_VERSION",
        "DECODE_ERROR",
    ]


def test_process_new_query_id_starts_a_new_batch_sequence(spark: SparkSession) -> None:
    batch = _kafka_batch(spark, _frames(orders(3)))
    first = _pipeline("newq").process(batch, 0, query_id="old-checkpoint")
    second = _pipeline("newq").process(batch, 0, query_id="new-checkpoint")
    assert (first.committed, second.committed) == (True, True)
    assert spark.table("local.unit.newq").count() == 6


def _evolved(change: Any) -> str:
    """orders.avsc with a change applied to its parsed JSON."""
    schema = json.loads(SCHEMA)
    change(schema)
    return json.dumps(schema)


def test_process_evolves_the_table_for_a_compatible_new_version(spark: SparkSession) -> None:
    def v2_change(schema: dict[str, Any]) -> None:
        fields = {f["name"]: f for f in schema["fields"]}
        fields["quantity"]["type"] = "long"  # widened
        fields["status"]["type"]["symbols"].append("RETURNED")  # new enum symbol
        schema["fields"].append({"name": "channel", "type": "string"})  # new field

    v2 = _evolved(v2_change)
    v2_id = "5a1e0000-0000-4000-8000-000000000002"
    pipeline = _pipeline("evolve", schemas={v2_id: v2})
    pipeline.process(_kafka_batch(spark, _frames(orders(2))), 0, query_id="q")
    new_rows = [
        {**r, "quantity": 2**40, "status": "RETURNED", "channel": "app"} for r in orders(2, start=2)
    ]
    result = pipeline.process(
        _kafka_batch(spark, _frames(new_rows, v2, v2_id), first_offset=2), 1, query_id="q"
    )

    assert (result.written, result.dead_lettered) == (2, 0)
    table = spark.table("local.unit.evolve")
    assert dict(table.dtypes)["quantity"] == "bigint"
    got = table.select("order_id", "quantity", "status", "channel").orderBy("order_id").collect()
    old = orders(2)
    assert [tuple(r) for r in got] == [
        ("o-0", old[0]["quantity"], old[0]["status"], None),
        ("o-1", old[1]["quantity"], old[1]["status"], None),
        ("o-2", 2**40, "RETURNED", "app"),
        ("o-3", 2**40, "RETURNED", "app"),
    ]


def test_process_dead_letters_an_incompatible_version_and_keeps_going(
    spark: SparkSession,
) -> None:
    def bad_change(schema: dict[str, Any]) -> None:
        next(f for f in schema["fields"] if f["name"] == "customer_id")["type"] = "string"

    bad = _evolved(bad_change)
    bad_id = "5a1e0000-0000-4000-8000-0000000000ba"
    pipeline = _pipeline("incompatible", schemas={bad_id: bad})
    bad_rows = [{**r, "customer_id": "c-1"} for r in orders(1, start=50)]
    values = _frames(orders(2)) + _frames(bad_rows, bad, bad_id)

    result = pipeline.process(_kafka_batch(spark, values), 0, query_id="q")

    assert (result.read, result.written, result.dead_lettered) == (3, 2, 1)
    dlq = spark.table("local.unit.incompatible_dlq").select("error_class", "error_message")
    assert [tuple(r) for r in dlq.collect()] == [
        (
            "INCOMPATIBLE_SCHEMA",
            f"schema version {bad_id} is incompatible with the table schema: "
            "Order.customer_id: type changed from long to string",
        )
    ]


def test_process_expectations_drop_warn_and_count(spark: SparkSession) -> None:
    pipeline = _pipeline(
        "expect",
        expectations=[
            {"name": "has_email", "expr": "customer_email IS NOT NULL", "action": "drop"},
            {"name": "few_items", "expr": "quantity < 5", "action": "warn"},
        ],
    )
    records = orders(10)
    result = pipeline.process(_kafka_batch(spark, _frames(records)), 0, query_id="q")

    no_email = sum(r["customer_email"] is None for r in records)
    many = sum(r["quantity"] >= 5 for r in records)
    assert no_email and many  # the sample data exercises both
    assert (result.written, result.dead_lettered) == (10 - no_email, no_email)
    assert result.violations == {"has_email": no_email, "few_items": many}
    dlq = spark.table("local.unit.expect_dlq").select("error_class", "error_message").distinct()
    assert [tuple(r) for r in dlq.collect()] == [
        ("EXPECTATION_FAILED", "expectation 'has_email' failed: customer_email IS NOT NULL")
    ]
    summary = spark.sql("SELECT summary FROM local.unit.expect_dlq.snapshots").first()
    assert summary is not None
    assert summary[0]["etl.expectation.few_items.violations"] == str(many)


def test_process_fail_expectation_raises_and_commits_nothing(spark: SparkSession) -> None:
    pipeline = _pipeline(
        "expect_fail", expectations=[{"name": "cheap", "expr": "amount < 10", "action": "fail"}]
    )
    with pytest.raises(ExpectationFailedError, match=r"expectation 'cheap' \(amount < 10\) failed"):
        pipeline.process(_kafka_batch(spark, _frames(orders(5))), 0, query_id="q")
    assert not spark.catalog.tableExists("local.unit.expect_fail")


def test_process_bad_expectation_expression_names_the_config_key(spark: SparkSession) -> None:
    pipeline = _pipeline(
        "expect_bad",
        expectations=[{"name": "oops", "expr": "no_such_column > 1", "action": "drop"}],
    )
    with pytest.raises(ConfigError, match=r"^pipelines\.expect_bad\.expectations: "):
        pipeline.process(_kafka_batch(spark, _frames(orders(1))), 0, query_id="q")


def test_process_restart_decides_schema_versions_as_the_run_before(spark: SparkSession) -> None:
    def add_note(kind: str) -> str:
        return _evolved(
            lambda s: s["fields"].append({"name": "note", "type": ["null", kind], "default": None})
        )

    as_string, as_long = add_note("string"), add_note("long")
    id_string = "5a1e0000-0000-4000-8000-0000000000a1"
    id_long = "5a1e0000-0000-4000-8000-0000000000a2"
    # registered in this order: the string version first
    schemas = {id_string: as_string, id_long: as_long}
    first = _pipeline("restart_schema", schemas=schemas)
    noted = [{**r, "note": "hi"} for r in orders(2)]
    first.process(_kafka_batch(spark, _frames(noted, as_string, id_string)), 0, query_id="q")

    # a restarted job whose first batch holds only the long version: seeded from the table's
    # recorded reader schema it is rejected (dead letters, batch commits); from the configured
    # schema it would be admitted and the table write would fail the whole batch
    restarted = _pipeline("restart_schema", schemas=schemas)
    values = _frames([{**r, "note": 7} for r in orders(1, start=5)], as_long, id_long)
    values += _frames(orders(1, start=6))
    result = restarted.process(_kafka_batch(spark, values, first_offset=2), 1, query_id="q")

    assert (result.read, result.written, result.dead_lettered) == (2, 1, 1)
    dlq = spark.table("local.unit.restart_schema_dlq").select("error_class", "error_message")
    assert [tuple(r) for r in dlq.collect()] == [
        (
            "INCOMPATIBLE_SCHEMA",
            f"schema version {id_long} is incompatible with the table schema: "
            "Order.note: type changed from string to long",
        )
    ]
    table = spark.table("local.unit.restart_schema").select("order_id", "note").orderBy("order_id")
    assert [tuple(r) for r in table.collect()] == [("o-0", "hi"), ("o-1", "hi"), ("o-6", None)]


def _settings_for(warehouse: Path, name: str, decode: dict[str, Any]) -> Settings:
    return Settings.model_validate(
        {
            "catalog": catalog_block(warehouse),
            "pipelines": {
                name: {
                    "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
                    "decode": decode,
                    "sink": {"table": f"local.unit.{name}"},
                    "dead_letter": {"table": f"local.unit.{name}_dlq"},
                    "checkpoint": "/unused",
                }
            },
        }
    )


def _assert_landed(spark: SparkSession, name: str, records: list[dict[str, Any]]) -> None:
    """The pipeline's table holds exactly these records."""
    assert_df_equality(
        spark.table(f"local.unit.{name}").select(*ORDER.fieldNames()).orderBy("order_id"),
        spark.createDataFrame([spark_row(r) for r in records], ORDER).orderBy("order_id"),
        ignore_nullable=True,
    )


def _errors(spark: SparkSession, table: str) -> list[tuple[int, str]]:
    rows = spark.table(table).select("offset", "error_class").orderBy("offset").collect()
    return [(r[0], r[1]) for r in rows]


def test_process_confluent_frames_through_build_pipeline(
    spark: SparkSession, warehouse: Path
) -> None:
    name = "confluent_e2e"
    pipeline = build_pipeline(
        _settings_for(
            warehouse,
            name,
            {
                "wire_format": "confluent",
                "schema_file": str(REPO / "schemas/orders.avsc"),
                "confluent_schemas": {7: str(REPO / "schemas/orders.avsc")},
            },
        ),
        name,
    )
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    records = orders(3)
    values = [encode_confluent(avro_body(parsed, r), 7) for r in records]
    values.append(encode_confluent(avro_body(parsed, records[0]), 9))  # id not configured

    result = pipeline.process(_kafka_batch(spark, values), 0, query_id="q")

    assert (result.read, result.written, result.dead_lettered) == (4, 3, 1)
    _assert_landed(spark, name, records)
    assert _errors(spark, f"local.unit.{name}_dlq") == [(3, "UNKNOWN_SCHEMA")]


def test_process_plain_avro_through_build_pipeline(spark: SparkSession, warehouse: Path) -> None:
    name = "plain_e2e"
    pipeline = build_pipeline(
        _settings_for(
            warehouse,
            name,
            {"wire_format": "plain_avro", "schema_file": str(REPO / "schemas/orders.avsc")},
        ),
        name,
    )
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    records = orders(2)
    values = [avro_body(parsed, r) for r in records] + [b"\x07" * 3]

    result = pipeline.process(_kafka_batch(spark, values), 0, query_id="q")

    assert (result.read, result.written, result.dead_lettered) == (3, 2, 1)
    _assert_landed(spark, name, records)
    assert _errors(spark, f"local.unit.{name}_dlq") == [(2, "DECODE_ERROR")]


def test_process_dead_letters_nothing_commits_nothing_to_the_dead_letter_table(
    spark: SparkSession,
) -> None:
    result = _pipeline("clean").process(_kafka_batch(spark, _frames(orders(3))), 0, query_id="q")
    assert (result.written, result.dead_lettered, result.committed) == (3, 0, True)
    assert not spark.catalog.tableExists("local.unit.clean_dlq")
