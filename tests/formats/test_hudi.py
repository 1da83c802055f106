"""Hudi tables written through the whole pipeline, read back by hudi-rs (an independent reader).

``hudi`` on PyPI (hudi-rs 0.5) reads Hudi 1.0's table version 8, merge-on-read log files
included, without Spark; the expected tables are built from the input records by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
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
)

from devtools.sample_data import orders
from devtools.wire import avro_body, encode_glue
from etl.commit import BatchCommitter
from etl.config import Settings
from etl.decoding import BatchDecoder
from etl.exceptions import SinkError
from etl.formats import CommitInfo, TableSpec
from etl.formats.base import UpsertSpec
from etl.formats.hudi import HudiSink
from etl.pipeline import DEAD_LETTER_PARTITIONING, Pipeline, build_pipeline
from etl.registry import FileSchemas
from etl.replay import replay_dead_letters
from tests.conftest import REPO
from tests.etl.test_pipeline import KAFKA, SCHEMA, VERSION, _frames, _kafka_batch
from tests.etl.test_pipeline import _pipeline as iceberg_pipeline
from tests.orders import ORDER, arrow_row, spark_row
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET
from transforms.schema_evolution import ReaderSchema
from transforms.wire import WireFormat

pytestmark = pytest.mark.hudi

TS = dt.datetime(2026, 11, 25, 11, 0)  # the Kafka timestamp of every test record
NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
KAFKA_COLUMNS = ["_kafka_key", "_kafka_topic", "_kafka_partition", "_kafka_offset"]
LATE = "5a1e0000-0000-4000-8000-00000000001a"  # registered only after the records arrived


def _read(location: str | Path, columns: list[str], key: str = "order_id") -> list[dict[str, Any]]:
    """The table's rows as hudi-rs reads them (a snapshot read, log files merged)."""
    from hudi import HudiTable

    table = pa.Table.from_batches(HudiTable(str(location)).read())
    return sorted(table.select(columns).to_pylist(), key=lambda r: r[key])


def _instants(location: str | Path) -> dict[str, list[dict[str, str]]]:
    """Per completed action (hudi-rs's timeline), each instant's extra metadata."""
    from hudi import HudiTable

    timeline = HudiTable(str(location)).get_timeline()
    found = {
        "commit": timeline.get_completed_commits(),
        "deltacommit": timeline.get_completed_deltacommits(),
    }
    return {
        action: [
            json.loads(timeline.get_instant_metadata_in_json(i)).get("extraMetadata") or {}
            for i in sorted(instants, key=lambda i: i.timestamp)
        ]
        for action, instants in found.items()
    }


def _kafka(spark: SparkSession, records: list[tuple[int, dict[str, Any] | None]]) -> DataFrame:
    """A Kafka-source batch of plain-Avro values, keyed by order id, at the given offsets."""
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    rows = [
        (
            (r["order_id"] if r else f"o-{offset}").encode(),
            avro_body(parsed, r) if r else None,
            "t",
            0,
            offset,
            TS,
            0,
        )
        for offset, r in records
    ]
    return spark.createDataFrame(rows, KAFKA)


def _settings(tmp_path: Path, name: str, sink: dict[str, Any]) -> Settings:
    return Settings.model_validate(
        {
            "pipelines": {
                name: {
                    "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
                    "decode": {
                        "wire_format": "plain_avro",
                        "schema_file": str(REPO / "schemas/orders.avsc"),
                    },
                    "sink": {
                        "format": "hudi",
                        "table": f"hudi_tests.{name}",
                        "location": str(tmp_path / name),
                        **sink,
                    },
                    "dead_letter": {
                        "table": f"hudi_tests.{name}_dlq",
                        "location": str(tmp_path / f"{name}_dlq"),
                    },
                    "checkpoint": "/unused",
                }
            }
        }
    )


def _order(n: int, *, at: int | None, **changes: Any) -> dict[str, Any]:
    """Order ``o-{n}`` updated ``at`` seconds after T0 (None: no ordering value)."""
    record = orders(1, start=n)[0]
    updated = None if at is None else T0 + dt.timedelta(seconds=at)
    return {**record, "updated_ts": updated, **changes}


def _row(record: dict[str, Any], offset: int) -> dict[str, Any]:
    """An order as hudi-rs returns it, with its Kafka coordinates."""
    return {
        **arrow_row(record),
        "_kafka_key": record["order_id"].encode(),
        "_kafka_topic": "t",
        "_kafka_partition": 0,
        "_kafka_offset": offset,
    }


def _spark_rows(spark: SparkSession, rows: list[tuple[dict[str, Any], int]]) -> DataFrame:
    """Orders as Spark reads them, with their Kafka coordinates."""
    schema = StructType(
        [
            *ORDER.fields,
            StructField("_kafka_key", BinaryType()),
            StructField("_kafka_topic", StringType()),
            StructField("_kafka_partition", IntegerType()),
            StructField("_kafka_offset", LongType()),
        ]
    )
    data = [(*spark_row(r), r["order_id"].encode(), "t", 0, offset) for r, offset in rows]
    return spark.createDataFrame(data, schema).orderBy("order_id")


@pytest.mark.parametrize("table_type", ["COPY_ON_WRITE", "MERGE_ON_READ"])
def test_hudi_append_pipeline_lands_rows_dead_letters_and_commit_metadata(
    spark: SparkSession, tmp_path: Path, table_type: str
) -> None:
    name = f"append_{table_type.lower()}"
    settings = _settings(tmp_path, name, {"hudi": {"table_type": table_type}})
    records = orders(4)
    batch = [*enumerate(records), (4, None)]  # a tombstone: a dead letter in an append table

    result = build_pipeline(settings, name).process(_kafka(spark, batch), 0, query_id="q1")

    assert (result.read, result.written, result.dead_lettered) == (5, 4, 1)
    columns = [*ORDER.fieldNames(), *KAFKA_COLUMNS]
    assert _read(tmp_path / name, columns) == [_row(r, i) for i, r in enumerate(records)]
    dlq = _read(tmp_path / f"{name}_dlq", ["offset", "error_class", "pipeline"], key="offset")
    assert dlq == [{"offset": 4, "error_class": "NULL_VALUE", "pipeline": name}]
    offsets = '{"t":{"0":[0,5]}}'
    batch_keys = {
        "etl.pipeline": name,
        "etl.query-id": "q1",
        "etl.batch-id": "0",
        "etl.kafka.offsets": offsets,
    }
    # both tables are append-only: one commit (or delta commit) each, nothing compacted
    action = "commit" if table_type == "COPY_ON_WRITE" else "deltacommit"
    table_meta = _instants(tmp_path / name)[action]
    assert [{k: v for k, v in m.items() if k.startswith("etl.")} for m in table_meta] == [
        {**batch_keys, "etl.records-read": "5", "etl.reader-schema": SCHEMA}
    ]
    dlq_meta = _instants(tmp_path / f"{name}_dlq")["commit"]
    assert [{k: v for k, v in m.items() if k.startswith("etl.")} for m in dlq_meta] == [
        {
            **batch_keys,
            "etl.records-read": "5",
            "etl.records-written": "4",
            "etl.records-dead-lettered": "1",
            "etl.records-forgotten": "0",
        }
    ]


@pytest.mark.parametrize("table_type", ["COPY_ON_WRITE", "MERGE_ON_READ"])
def test_hudi_upsert_pipeline_keeps_the_newer_change_per_key(
    spark: SparkSession, tmp_path: Path, table_type: str
) -> None:
    name = f"upsert_{table_type.lower()}"
    sink = {
        "mode": "upsert",
        "key": ["order_id"],
        "ordering": "updated_ts",
        "deletes": {"field": "status", "equals": "CANCELLED"},
        # a key whose currency changes moves partitions: the global index keeps one row
        "partition_by": ["currency"],
        "hudi": {"table_type": table_type, "compaction_delta_commits": 2},
    }
    pipeline = build_pipeline(_settings(tmp_path, name, sink), name)
    o1_tie = _order(1, at=12, status="CREATED", currency="USD")
    o2_back = _order(2, at=30, status="PAID")
    o3_first_value = _order(3, at=1)
    o5 = _order(5, at=3, status="PAID")
    batches: list[list[tuple[int, dict[str, Any] | None]]] = [
        [
            (0, _order(1, at=10, status="PAID")),
            (1, _order(1, at=12, status="SHIPPED")),  # the newest of the batch wins
            (2, _order(1, at=11, status="CREATED")),
            (3, _order(2, at=10, status="PAID")),
            (4, _order(3, at=None)),  # no ordering value yet
        ],
        [
            (5, _order(2, at=5, status="SHIPPED", currency="USD")),  # out of order: ignored
            (6, o3_first_value),  # any value beats null
            (7, _order(4, at=1, status="CANCELLED")),  # a delete of an absent key
            (8, o1_tie),  # same ordering value, later offset: wins, moves to USD
            (9, o5),
        ],
        [
            (10, _order(2, at=20, status="CANCELLED")),  # a delete
            (11, _order(5, at=1, status="CANCELLED")),  # a late delete: ignored
        ],
        [
            (12, o2_back),  # re-inserted after its delete
            (13, _order(3, at=0, status="SHIPPED")),  # late again: ignored
        ],
    ]
    written = [
        pipeline.process(_kafka(spark, batch), batch_id, query_id="q").written
        for batch_id, batch in enumerate(batches)
    ]

    assert written == [5, 5, 2, 2]
    columns = [*ORDER.fieldNames(), *KAFKA_COLUMNS]
    want = [_row(o1_tie, 8), _row(o2_back, 12), _row(o3_first_value, 6), _row(o5, 9)]
    assert _read(tmp_path / name, columns) == want
    # Spark's Hudi reader, on a fresh read, agrees
    assert_df_equality(
        pipeline.committer.table.read(spark).select(*columns).orderBy("order_id"),
        _spark_rows(spark, [(o1_tie, 8), (o2_back, 12), (o3_first_value, 6), (o5, 9)]),
        ignore_nullable=True,
    )
    instants = _instants(tmp_path / name)
    batch_ids = [
        m.get("etl.batch-id")
        for m in instants["deltacommit" if "MERGE" in table_type else "commit"]
    ]
    if table_type == "MERGE_ON_READ":
        # four delta commits, compacted inline after every second one (the compactions
        # complete as commits that carry no batch)
        assert (batch_ids, len(instants["commit"])) == (["0", "1", "2", "3"], 2)
    else:
        assert (batch_ids, instants["deltacommit"]) == (["0", "1", "2", "3"], [])


def test_hudi_existing_table_with_another_key_or_type_is_refused(
    spark: SparkSession, tmp_path: Path
) -> None:
    location = (tmp_path / "keyed").as_uri()
    upsert = UpsertSpec(("id",), "ts")
    first = HudiSink(TableSpec("hudi_tests.keyed", upsert=upsert, location=location))
    df = spark.createDataFrame(
        [(1, 1, 0, False)], f"id int, ts int, {KAFKA_OFFSET} long, {DELETE_FLAG} boolean"
    )
    first.prepare(spark, df.drop(DELETE_FLAG).schema)
    first.upsert(df, CommitInfo("p", "q", 0))
    other_key = HudiSink(
        TableSpec("hudi_tests.keyed", upsert=UpsertSpec(("ts",), "id"), location=location)
    )
    other_type = HudiSink(
        TableSpec(
            "hudi_tests.keyed",
            upsert=upsert,
            options={"table_type": "MERGE_ON_READ"},
            location=location,
        )
    )

    with pytest.raises(SinkError, match=r"hoodie\.table\.recordkey\.fields is id, configured ts"):
        other_key.prepare(spark, df.schema)
    with pytest.raises(
        SinkError, match=r"hoodie\.table\.type is COPY_ON_WRITE, configured MERGE_ON_READ"
    ):
        other_type.prepare(spark, df.schema)
    # nothing written: the first upsert's commit is still the only one
    assert {k: len(v) for k, v in _instants(tmp_path / "keyed").items()} == {
        "commit": 1,
        "deltacommit": 0,
    }


def _glue_pipeline(tmp_path: Path, name: str, schemas: dict[str, str] | None = None) -> Pipeline:
    """Glue-framed orders into a Hudi table and a Hudi dead-letter table."""
    settings = _settings(tmp_path, name, {}).pipeline(name)
    return Pipeline(
        name,
        BatchDecoder(
            name,
            settings.decode.model_copy(update={"wire_format": WireFormat.GLUE}),
            FileSchemas({VERSION: SCHEMA, **(schemas or {})}),
            ReaderSchema.from_json(SCHEMA),
        ),
        BatchCommitter(
            name,
            HudiSink(TableSpec(f"hudi_tests.{name}", location=(tmp_path / name).as_uri())),
            HudiSink(
                TableSpec(
                    f"hudi_tests.{name}_dlq",
                    DEAD_LETTER_PARTITIONING,
                    evolve=False,
                    location=(tmp_path / f"{name}_dlq").as_uri(),
                )
            ),
        ),
        clock=lambda: NOW,
    )


def test_hudi_replay_from_a_hudi_dead_letter_table(spark: SparkSession, tmp_path: Path) -> None:
    name = "replay_hudi"
    good, late = orders(2), orders(3, start=10)
    corrupt = encode_glue(b"\x07" * 30, LATE)  # never decodes
    values = _frames(good) + _frames(late, SCHEMA, LATE) + [corrupt]
    first = _glue_pipeline(tmp_path, name).process(_kafka_batch(spark, values), 0, query_id="q")
    assert (first.written, first.dead_lettered) == (2, 4)

    fixed = _glue_pipeline(tmp_path, name, schemas={LATE: SCHEMA})
    result = replay_dead_letters(spark, fixed, replay_id="r1", now=NOW)

    assert (result.candidates, result.appended, result.marked) == (4, 3, 3)
    assert result.still_failing == {"DECODE_ERROR": 1}
    got = _read(tmp_path / name, ["order_id", "_kafka_offset"])
    assert got == [
        {"order_id": r["order_id"], "_kafka_offset": i} for i, r in enumerate(good + late)
    ]
    marks = _read(
        tmp_path / f"{name}_dlq",
        ["offset", "error_class", "replay_id", "replayed_at", "ingested_at"],
        key="offset",
    )
    replayed = {"replay_id": "r1", "replayed_at": NOW}
    assert marks == [
        {"offset": 2, "error_class": "UNKNOWN_SCHEMA", **replayed, "ingested_at": NOW},
        {"offset": 3, "error_class": "UNKNOWN_SCHEMA", **replayed, "ingested_at": NOW},
        {"offset": 4, "error_class": "UNKNOWN_SCHEMA", **replayed, "ingested_at": NOW},
        # still failing: released, unmarked
        {
            "offset": 5,
            "error_class": "UNKNOWN_SCHEMA",
            "replay_id": None,
            "replayed_at": None,
            "ingested_at": NOW,
        },
    ]


def test_hudi_session_hosts_iceberg_too(spark: SparkSession) -> None:
    # the Hudi run's session also has the Iceberg catalog: an Iceberg pipeline commits in it,
    # and Iceberg's CALL procedures still parse (its extension is listed after Hudi's)
    result = iceberg_pipeline("beside_hudi").process(
        _kafka_batch(spark, _frames(orders(3))), 0, query_id="q"
    )
    spark.sql("CALL local.system.expire_snapshots(table => 'unit.beside_hudi', retain_last => 1)")

    assert (result.written, result.committed) == (3, True)
    assert sorted(
        r[0] for r in spark.table("local.unit.beside_hudi").select("order_id").collect()
    ) == [
        "o-0",
        "o-1",
        "o-2",
    ]
