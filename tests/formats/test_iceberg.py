"""Iceberg tables written through the whole pipeline, read back by pyiceberg."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from devtools.tables import hadoop_iceberg_table
from devtools.wire import encode_confluent
from etl.config import Settings
from etl.pipeline import Pipeline, build_pipeline
from etl.registry import read_avsc
from tests.conftest import REPO, catalog_block
from tests.etl.test_pipeline import KAFKA
from tests.formats import upsert_scenario as scenario

SCHEMA = read_avsc(REPO / "schemas" / "orders.avsc")


def _kafka(spark: SparkSession, batch: list[tuple[bytes, bytes | None, int]]) -> DataFrame:
    ts = dt.datetime(2026, 11, 25, 11, 0)
    return spark.createDataFrame([(k, v, "t", 0, o, ts, 0) for k, v, o in batch], KAFKA)


def _pipeline(warehouse: Path, name: str) -> Pipeline:
    settings = Settings.model_validate(
        {
            "catalog": catalog_block(warehouse),
            "pipelines": {
                name: scenario.settings_block(name, f"local.fmt.{name}", f"local.fmt.{name}_dlq")
            },
        }
    )
    return build_pipeline(settings, name)


def _pyiceberg_rows(warehouse: Path, table: str) -> list[dict[str, Any]]:
    arrow = hadoop_iceberg_table(warehouse, f"fmt.{table}").scan().to_arrow()
    return sorted(arrow.to_pylist(), key=lambda r: r["order_id"])


def test_iceberg_upsert_table_matches_the_model(spark: SparkSession, warehouse: Path) -> None:
    name = "upsert_orders"
    batches = scenario.kafka_batches(SCHEMA, lambda body: encode_confluent(body, 7))
    for batch_id, batch in enumerate(batches):
        # a fresh pipeline per batch: every batch as after a restart
        _pipeline(warehouse, name).process(_kafka(spark, batch), batch_id, query_id="q")

    expected = [
        (key, row.offset, row.record["updated_ts"], row.record["status"], row.record["amount"])
        for key, row in sorted(scenario.expected_rows().items())
    ]
    got = [
        (r["order_id"], r["_kafka_offset"], r["updated_ts"], r["status"], r["amount"])
        for r in _pyiceberg_rows(warehouse, name)
    ]
    assert got == expected
    # the CANCELLED-of-an-absent-key and the tombstones left no dead letters
    assert not spark.catalog.tableExists(f"local.fmt.{name}_dlq")


def test_iceberg_upsert_replayed_batch_changes_nothing(
    spark: SparkSession, warehouse: Path
) -> None:
    name = "upsert_replay"
    batches = scenario.kafka_batches(SCHEMA, lambda body: encode_confluent(body, 7))
    for batch_id, batch in enumerate(batches):
        _pipeline(warehouse, name).process(_kafka(spark, batch), batch_id, query_id="q")
    before = _pyiceberg_rows(warehouse, name)

    replayed = _pipeline(warehouse, name).process(
        _kafka(spark, batches[-1]), len(batches) - 1, query_id="q"
    )

    assert not replayed.committed
    assert _pyiceberg_rows(warehouse, name) == before


def test_iceberg_upsert_tombstone_without_a_kafka_key_is_a_dead_letter(
    spark: SparkSession, warehouse: Path
) -> None:
    name = "upsert_nokey"
    # a keyed tombstone deletes (here: nothing to delete); one without a key cannot say which
    # key it deletes, so it stays a NULL_VALUE dead letter
    batch = _kafka(spark, [(b"o-1", None, 0), (None, None, 1)])  # type: ignore[list-item]
    result = _pipeline(warehouse, name).process(batch, 0, query_id="q")

    assert (result.read, result.written, result.dead_lettered) == (2, 1, 1)
    classes = spark.table(f"local.fmt.{name}_dlq").select("offset", "error_class").collect()
    assert [tuple(r) for r in classes] == [(1, "NULL_VALUE")]


def test_iceberg_upsert_expectations_skip_deletes(spark: SparkSession, warehouse: Path) -> None:
    name = "upsert_expect"
    block = scenario.settings_block(name, f"local.fmt.{name}", f"local.fmt.{name}_dlq")
    block["expectations"] = [{"name": "priced", "expr": "amount > 0", "action": "fail"}]
    settings = Settings.model_validate(
        {"catalog": catalog_block(warehouse), "pipelines": {name: block}}
    )
    frame = lambda body: encode_confluent(body, 7)  # noqa: E731
    first, second = (
        scenario.kafka_batches(SCHEMA, frame)[0],
        [(b"o-1", None, 100)],  # a tombstone: no fields, so no amount to check
    )
    build_pipeline(settings, name).process(_kafka(spark, first), 0, query_id="q")
    result = build_pipeline(settings, name).process(_kafka(spark, second), 1, query_id="q")

    assert (result.read, result.written, result.dead_lettered, result.violations) == (
        1,
        1,
        0,
        {"priced": 0},
    )
    ids = sorted(r["order_id"] for r in _pyiceberg_rows(warehouse, name))
    assert ids == ["o-2", "o-3", "o-4", "o-5"]
