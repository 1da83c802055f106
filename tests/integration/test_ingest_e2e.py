"""End to end on the real local stack: Glue-framed Avro in Kafka -> our job -> Iceberg.

Read back twice: with Spark, and with pyiceberg (an independent reader, proving the table
is spec-compliant outside Spark). Then more records and a restart from the checkpoint.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import StreamingQueryException

from devtools.producer import glue_frames, produce, register_schema
from devtools.sample_data import orders
from devtools.tables import hadoop_iceberg_table
from etl.config import Settings
from etl.registry import read_avsc
from jobs import ingest
from tests.conftest import REPO, catalog_block
from tests.integration.streams import start_recording
from tests.orders import ORDER, arrow_row, spark_row

pytestmark = pytest.mark.integration

SCHEMA = read_avsc(REPO / "schemas" / "orders.avsc")
REGISTRY = "etl-tests"


def _settings(
    warehouse: Path, stack: Any, tmp: Path, *, name: str, topic: str, auth: dict[str, Any]
) -> Settings:
    bootstrap = (
        stack.info.bootstrap_scram if auth["mode"] == "scram" else stack.info.bootstrap_plaintext
    )
    return Settings.model_validate(
        {
            "catalog": catalog_block(warehouse),
            "aws": {"endpoint_url": stack.info.aws_endpoint, "region": "us-east-1"},
            "registry": {"registry_name": REGISTRY, "max_attempts": 2},
            "pipelines": {
                name: {
                    "source": {"bootstrap_servers": bootstrap, "topics": [topic], "auth": auth},
                    "decode": {
                        "wire_format": "glue",
                        "schema_file": str(REPO / "schemas/orders.avsc"),
                    },
                    "sink": {
                        "table": f"local.e2e.{name}",
                        "partition_by": ["days(order_ts)"],
                        "properties": {"format-version": "2"},
                    },
                    "dead_letter": {"table": f"local.e2e.{name}_dlq"},
                    "checkpoint": str(tmp / "checkpoints" / name),
                    "trigger": {"mode": "available_now"},
                }
            },
        }
    )


def _publish(
    stack: Any, topic: str, records: list[dict[str, Any]], extra: list[bytes | None] = ()
) -> str:  # type: ignore[assignment]
    version = register_schema(
        stack.info.glue_client(), registry_name=REGISTRY, schema_name=topic, definition=SCHEMA
    )
    values = glue_frames(SCHEMA, version, records, compress_every=10)
    messages = [(r["order_id"].encode(), v) for r, v in zip(records, values, strict=True)]
    produce(stack.info.bootstrap_plaintext, topic, messages + [(b"poison", p) for p in extra])
    return version


def _pyiceberg_table(warehouse: Path, name: str) -> Any:
    """Opens the table from its metadata files alone (Hadoop layout: version-hint.text)."""
    return hadoop_iceberg_table(warehouse, f"e2e.{name}")


def _run(spark: SparkSession, settings: Settings, name: str) -> list[Any]:
    query, results = start_recording(spark, settings, name)
    try:
        query.awaitTermination(240)
        assert not query.isActive, "available_now query did not finish in time"
    finally:
        query.stop()
    return results


def test_ingest_glue_avro_to_iceberg_then_restart_from_checkpoint(
    spark: SparkSession, local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    name, topic = "orders_e2e", "orders-e2e"
    local_stack.broker.create_topic(topic, partitions=3)
    settings = _settings(
        warehouse, local_stack, tmp_path, name=name, topic=topic, auth={"mode": "plaintext"}
    )
    first = orders(300, start=0)
    poison: list[bytes | None] = [None, b"\x01junk", bytes([3, 0]) + uuid.uuid4().bytes + b"\x02"]
    version = _publish(local_stack, topic, first, poison)

    results = _run(spark, settings, name)

    assert [(r.read, r.written, r.dead_lettered, r.committed) for r in results] == [
        (303, 300, 3, True)
    ]
    table = spark.table(f"local.e2e.{name}")
    expected = spark.createDataFrame([spark_row(r) for r in first], ORDER)
    assert_df_equality(
        table.select(*ORDER.fieldNames()).orderBy("order_id"),
        expected.orderBy("order_id"),
        ignore_nullable=True,
    )
    provenance = table.select(
        F.col("_kafka_key").cast("string").alias("key"),
        "order_id",
        "_kafka_topic",
        "_schema_version_id",
    ).distinct()
    assert (
        provenance.where(
            (F.col("key") != F.col("order_id"))
            | (F.col("_kafka_topic") != topic)
            | (F.col("_schema_version_id") != version)
        ).count()
        == 0
    )
    assert table.select("_kafka_partition", "_kafka_offset").distinct().count() == 300

    dlq = spark.table(f"local.e2e.{name}_dlq").select(
        "error_class", "value", "topic", "pipeline", "batch_id"
    )
    assert sorted(tuple(r) for r in dlq.collect()) == sorted(
        [
            ("NULL_VALUE", None, topic, name, 0),
            ("UNKNOWN_HEADER_VERSION", bytearray(b"\x01junk"), topic, name, 0),
            ("UNKNOWN_SCHEMA", bytearray(poison[2] or b""), topic, name, 0),
        ],
        key=repr,
    )

    # an independent reader: pyiceberg over the same SQLite catalog
    arrow = (
        _pyiceberg_table(warehouse, name).scan(selected_fields=tuple(ORDER.fieldNames())).to_arrow()
    )
    got = sorted(arrow.to_pylist(), key=lambda r: r["order_id"])
    want = sorted((arrow_row(r) for r in first), key=lambda r: r["order_id"])
    for row in got:
        row["attributes"] = sorted(row["attributes"])
    assert got == want

    # more records, then a restart from the same checkpoint: exactly N + M rows, no duplicates
    second = orders(200, start=300)
    _publish(local_stack, topic, second)
    results = _run(spark, settings, name)
    assert [(r.batch_id, r.read, r.written, r.committed) for r in results] == [(1, 200, 200, True)]
    ids = spark.table(f"local.e2e.{name}").select("order_id")
    assert ids.count() == 500
    assert sorted(r[0] for r in ids.collect()) == sorted(r["order_id"] for r in first + second)
    snapshots = spark.sql(
        f"SELECT summary['etl.batch-id'] AS b, summary['added-records'] AS n "
        f"FROM local.e2e.{name}.snapshots ORDER BY committed_at"
    ).collect()
    assert [(r.b, r.n) for r in snapshots] == [("0", "300"), ("1", "200")]
    latest = _pyiceberg_table(warehouse, name).current_snapshot().summary.additional_properties
    assert latest["etl.pipeline"] == name
    assert latest["etl.batch-id"] == "1"


def test_ingest_over_scram_against_the_real_broker(
    spark: SparkSession,
    local_stack: Any,
    warehouse: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, topic = "orders_scram", "orders-scram"
    local_stack.broker.create_topic(topic, partitions=2)
    _publish(local_stack, topic, orders(50, start=1000))
    monkeypatch.setenv("ETL_TEST_SCRAM_PASSWORD", local_stack.info.scram_password)
    auth = {
        "mode": "scram",
        "tls": False,
        "username": local_stack.info.scram_username,
        "password_env": "ETL_TEST_SCRAM_PASSWORD",
    }
    settings = _settings(warehouse, local_stack, tmp_path, name=name, topic=topic, auth=auth)

    results = _run(spark, settings, name)

    assert [(r.read, r.written, r.dead_lettered) for r in results] == [(50, 50, 0)]
    got = sorted(r[0] for r in spark.table(f"local.e2e.{name}").select("order_id").collect())
    assert got == sorted(f"o-{n}" for n in range(1000, 1050))


def test_ingest_with_a_wrong_scram_password_fails_the_query(
    spark: SparkSession,
    local_stack: Any,
    warehouse: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, topic = "orders_badauth", "orders-badauth"
    local_stack.broker.create_topic(topic, partitions=1)
    monkeypatch.setenv("ETL_TEST_SCRAM_PASSWORD", "not-the-password")
    auth = {
        "mode": "scram",
        "tls": False,
        "username": local_stack.info.scram_username,
        "password_env": "ETL_TEST_SCRAM_PASSWORD",
    }
    settings = _settings(warehouse, local_stack, tmp_path, name=name, topic=topic, auth=auth)
    query, _ = start_recording(spark, settings, name)
    try:
        with pytest.raises(StreamingQueryException, match=r"(?i)authentication"):
            query.awaitTermination(180)
    finally:
        query.stop()
    assert "not-the-password" not in str(query.exception())


def test_ingest_main_runs_every_pipeline_of_the_file(
    spark: SparkSession, local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    plaintext = {"mode": "plaintext"}
    sizes = {"multi_a": 30, "multi_b": 20}
    config: dict[str, Any] = {"pipelines": {}}
    expected: dict[str, list[str]] = {}
    for i, (name, size) in enumerate(sizes.items()):
        topic = f"{name}-{uuid.uuid4().hex[:6]}"
        local_stack.broker.create_topic(topic, partitions=2)
        records = orders(size, start=1000 * (i + 1))
        _publish(local_stack, topic, records)
        expected[name] = sorted(r["order_id"] for r in records)
        one = _settings(
            warehouse, local_stack, tmp_path, name=name, topic=topic, auth=plaintext
        ).model_dump(mode="json", exclude={"spark"})
        config = {**one, "pipelines": {**config["pipelines"], **one["pipelines"]}}
    path = tmp_path / "two-pipelines.yaml"
    path.write_text(yaml.safe_dump(config))

    assert ingest.main(["--conf", str(path)]) == 0

    for name, ids in expected.items():
        got = spark.table(f"local.e2e.{name}").select("order_id").collect()
        assert sorted(r[0] for r in got) == ids, name
