"""Delta tables written through ``Pipeline.process``, read back with delta-rs (``deltalake``).

delta-rs is an independent reader (Rust, no Spark): what it reads is what another engine sees.
Expected rows are built from the source records, not from anything the sink wrote.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from devtools.sample_data import orders
from devtools.wire import encode_glue
from etl.config import PartitionField, PartitionTransform, Settings, TableFormat
from etl.exceptions import SinkError
from etl.formats import CommitInfo, TableSpec, load_sink
from etl.formats.base import UpsertSpec
from etl.formats.delta.sink import (
    USER_METADATA_CONF,
    DeltaSink,
    GeneratedColumn,
    partition_columns,
    schema_changes,
)
from etl.pipeline import Pipeline, build_pipeline
from etl.registry import FileSchemas
from etl.replay import replay_dead_letters
from tests.conftest import REPO
from tests.etl.test_pipeline import SCHEMA, VERSION, _frames, _kafka_batch
from tests.orders import ORDER, arrow_row
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
LATE = "5a1e0000-0000-4000-8000-00000000001a"  # registered only after its records arrived
DATABASE = "delta_tests"


def _settings(root: Path, name: str, **sink: Any) -> Settings:
    return Settings.model_validate(
        {
            "pipelines": {
                name: {
                    "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
                    "decode": {"schema_file": str(REPO / "schemas/orders.avsc")},
                    "sink": {
                        "format": "delta",
                        "table": f"{DATABASE}.{name}",
                        "location": str(root / name),
                        "partition_by": ["days(order_ts)"],
                        **sink,
                    },
                    "dead_letter": {
                        "table": f"{DATABASE}.{name}_dlq",
                        "location": str(root / f"{name}_dlq"),
                    },
                    "checkpoint": str(root / "checkpoint"),
                }
            }
        }
    )


def _pipeline(settings: Settings, name: str, schemas: dict[str, str] | None = None) -> Pipeline:
    """The pipeline ``build_pipeline`` wires, with Glue schema versions served from memory."""
    pipeline = build_pipeline(settings, name)
    pipeline.decoder.resolver = FileSchemas({VERSION: SCHEMA, **(schemas or {})})
    pipeline.clock = lambda: NOW
    return pipeline


def _read(location: Path) -> list[dict[str, Any]]:
    """The table as delta-rs reads it, ordered by order id (map entries sorted)."""
    rows = DeltaTable(str(location)).to_pyarrow_table().to_pylist()
    for row in rows:
        if isinstance(row.get("attributes"), list):
            row["attributes"] = sorted(row["attributes"])
    return sorted(rows, key=lambda r: (r.get("order_id") or "", r.get("offset") or 0))


def _expected(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table rows of these records: the order fields plus the generated day partition."""
    rows = [{**arrow_row(r), "order_ts_day": r["order_ts"].date()} for r in records]
    return sorted(rows, key=lambda r: str(r["order_id"]))


def _order_fields(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = [*ORDER.fieldNames(), "order_ts_day"]
    return [{k: r[k] for k in keep} for r in rows]


def test_append_pipeline_writes_what_delta_rs_reads(spark: SparkSession, tmp_path: Path) -> None:
    settings = _settings(tmp_path, "appended")
    pipeline = _pipeline(settings, "appended")
    first, second = orders(5), orders(3, start=5)
    poison = [None, encode_glue(b"\x07" * 30, VERSION)]

    pipeline.process(_kafka_batch(spark, _frames(first) + poison), 0, query_id="q")
    pipeline.process(_kafka_batch(spark, _frames(second), first_offset=7), 1, query_id="q")

    table = _read(tmp_path / "appended")
    assert _order_fields(table) == _expected(first + second)
    assert [r[KAFKA_OFFSET] for r in table] == [0, 1, 2, 3, 4, 7, 8, 9]
    dead = [(r["offset"], r["error_class"]) for r in _read(tmp_path / "appended_dlq")]
    assert dead == [(5, "NULL_VALUE"), (6, "DECODE_ERROR")]
    # each commit carries the batch identity, and Delta's own idempotency token
    log = DeltaTable(str(tmp_path / "appended"))
    metadata = [json.loads(c["userMetadata"]) for c in log.history() if c.get("userMetadata")]
    assert [{k: v for k, v in m.items() if k != "etl.reader-schema"} for m in metadata] == [
        {
            "etl.pipeline": "appended",
            "etl.query-id": "q",
            "etl.batch-id": "1",
            "etl.records-read": "3",
            "etl.kafka.offsets": '{"t":{"0":[7,10]}}',
        },
        {
            "etl.pipeline": "appended",
            "etl.query-id": "q",
            "etl.batch-id": "0",
            "etl.records-read": "7",
            "etl.kafka.offsets": '{"t":{"0":[0,7]}}',
        },
    ]
    # the reader schema is recorded when it changes: here by the process's first commit only
    assert [m.get("etl.reader-schema") for m in metadata] == [None, SCHEMA]
    assert log.transaction_version("q") == 1
    assert log.metadata().partition_columns == ["order_ts_day"]


def _order(n: int, updated: int, status: str = "PAID", **changes: Any) -> dict[str, Any]:
    """Order ``o-{n}`` at update time ``updated`` (seconds past the epoch of the sample)."""
    record = orders(1, start=n)[0]
    record.update(
        updated_ts=dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=updated),
        status=status,
        **changes,
    )
    return record


def test_upsert_pipeline_applies_the_newer_change_per_key(
    spark: SparkSession, tmp_path: Path
) -> None:
    name = "upserted"
    settings = _settings(
        tmp_path,
        name,
        mode="upsert",
        key=["order_id"],
        ordering="updated_ts",
        deletes={"field": "status", "equals": "CANCELLED"},
    )
    moved = dt.datetime(2026, 11, 30, 8, tzinfo=dt.UTC)  # another day: another partition
    batches = [
        [
            _order(1, 10),
            _order(2, 10),
            _order(2, 20, "SHIPPED"),  # the same key again in the batch: the newer wins
            _order(3, 10),
            _order(9, 50, "CANCELLED"),  # delete of a key the table lacks: nothing
            _order(4, 5),
        ],
        [
            _order(1, 5, "SHIPPED"),  # older than the table's row: ignored
            _order(2, 15, "PAID"),  # older than the table's row: ignored
            _order(3, 30, "SHIPPED", order_ts=moved),  # newer: replaces, moves partition
            _order(4, 6, "CANCELLED"),  # newer delete: the key goes
        ],
        [
            _order(4, 7, "CREATED"),  # re-inserted after its delete
            _order(1, 10, "SHIPPED"),  # same ordering value, later offset: wins
        ],
    ]
    offset = 0
    for batch_id, records in enumerate(batches):
        batch = _kafka_batch(spark, _frames(records), first_offset=offset)
        _pipeline(settings, name).process(batch, batch_id, query_id="q")
        offset += len(records)
    # a restarted job replays batch 1: skipped, the table is unchanged
    replayed = _pipeline(settings, name).process(
        _kafka_batch(spark, _frames(batches[1]), first_offset=6), 1, query_id="q"
    )

    assert not replayed.committed
    final = [batches[2][1], batches[0][2], batches[1][2], batches[2][0]]
    assert _order_fields(_read(tmp_path / name)) == _expected(final)
    assert [r[KAFKA_OFFSET] for r in _read(tmp_path / name)] == [11, 2, 8, 10]


@pytest.mark.parametrize(
    ("transform", "partition"),
    [
        (PartitionTransform.YEAR, lambda ts: f"ts_year={ts.year}"),
        (PartitionTransform.MONTH, lambda ts: f"ts_month={ts:%Y-%m}"),
        (PartitionTransform.DAY, lambda ts: f"ts_day={ts:%Y-%m-%d}"),
        (PartitionTransform.HOUR, lambda ts: f"ts_hour={ts:%Y-%m-%d-%H}"),
    ],
    ids=lambda v: getattr(v, "value", ""),
)
def test_time_partitions_are_pruned_by_filters_on_the_source_column(
    spark: SparkSession,
    tmp_path: Path,
    transform: PartitionTransform,
    partition: Callable[[dt.datetime], str],
) -> None:
    sink = load_sink(
        TableFormat.DELTA,
        TableSpec(
            f"{DATABASE}.pruned_{transform.value}",
            (PartitionField("ts", transform),),
            location=str(tmp_path / "pruned"),
        ),
    )
    stamps = [dt.datetime(2025 + i % 2, 1 + i % 12, 1 + i, i) for i in range(20)]
    df = spark.createDataFrame(list(enumerate(stamps)), "id int, ts timestamp")
    sink.prepare(spark, df.schema)
    sink.append(df, CommitInfo("p", "q", 0))
    cut = dt.datetime(2026, 6, 1)

    read = spark.table(sink.name).where(F.col("ts") >= F.lit(cut)).inputFiles()

    # only the partitions holding matching rows are read (Delta derives the partition filter)
    assert {path.rsplit("/", 2)[-2] for path in read} == {partition(t) for t in stamps if t >= cut}


def test_deletion_vectors_are_off_unless_asked_for(spark: SparkSession, tmp_path: Path) -> None:
    rows = spark.createDataFrame([(1, "keep"), (2, "erase")], "id int, name string")

    def erase(options: dict[str, Any], where: str) -> DeltaTable:
        sink = load_sink(
            TableFormat.DELTA,
            TableSpec(f"{DATABASE}.dv_{where}", options=options, location=str(tmp_path / where)),
        )
        sink.prepare(spark, rows.schema)
        sink.append(rows.coalesce(1), CommitInfo("p", "q", 0))  # both rows in one file
        spark.sql(f"DELETE FROM {sink.name} WHERE id = 2")
        return DeltaTable(str(tmp_path / where))

    def in_files(table: DeltaTable) -> list[str]:
        """Every name in the live Parquet files, deleted-marked rows too."""
        return sorted(
            n for uri in table.file_uris() for n in pq.read_table(uri)["name"].to_pylist()
        )

    default = erase({}, "default")
    assert default.metadata().configuration["delta.enableDeletionVectors"] == "false"
    assert "deletionVectors" not in (default.protocol().reader_features or [])
    # without deletion vectors the DELETE rewrote the file: the row is physically gone
    assert in_files(default) == ["keep"]

    with_dv = erase({"deletion_vectors": True}, "with_dv")
    assert with_dv.metadata().configuration["delta.enableDeletionVectors"] == "true"
    assert "deletionVectors" in (with_dv.protocol().reader_features or [])
    # with them the row stays in its file, only marked deleted (what GDPR erasure must avoid)
    assert in_files(with_dv) == ["erase", "keep"]
    # read through Spark: delta-rs 1.6 reads no table with the deletionVectors reader feature
    assert [r[0] for r in spark.table(f"{DATABASE}.dv_with_dv").select("name").collect()] == [
        "keep"
    ]


def test_widening_version_is_dead_lettered_and_the_stream_goes_on(
    spark: SparkSession, tmp_path: Path
) -> None:
    wide = json.loads(SCHEMA)
    next(f for f in wide["fields"] if f["name"] == "quantity")["type"] = "long"
    wide_id = "5a1e0000-0000-4000-8000-000000000002"
    settings = _settings(tmp_path, "widened")
    first = orders(2)
    _pipeline(settings, "widened").process(_kafka_batch(spark, _frames(first)), 0, query_id="q")
    pipeline = _pipeline(settings, "widened", {wide_id: json.dumps(wide)})
    later = orders(1, start=5)
    values = _frames(
        [{**r, "quantity": 2**40} for r in orders(2, start=2)], json.dumps(wide), wide_id
    )
    values += _frames(later)

    # Delta 3.3 on Spark 3.5 cannot widen int -> long: the version is incompatible for this
    # table, its rows are dead letters, the rest of the batch commits
    result = pipeline.process(_kafka_batch(spark, values, first_offset=2), 1, query_id="q")

    assert (result.read, result.written, result.dead_lettered) == (3, 1, 2)
    assert _order_fields(_read(tmp_path / "widened")) == _expected(first + later)
    dead = spark.table(f"{DATABASE}.widened_dlq").select("error_class", "error_message").collect()
    assert {tuple(r) for r in dead} == {
        (
            "INCOMPATIBLE_SCHEMA",
            f"schema version {wide_id} is incompatible with the table schema: "
            "Order.quantity: widening int -> long is not supported by the table format",
        )
    }


def test_sink_refuses_a_batch_that_widens_a_column(spark: SparkSession, tmp_path: Path) -> None:
    # the sink's own guard, for writers that bypass the decoder's schema check
    sink = load_sink(
        TableFormat.DELTA,
        TableSpec(f"{DATABASE}.guard", location=(tmp_path / "guard").as_uri()),
    )
    narrow = spark.createDataFrame([(1,)], "quantity int")
    sink.prepare(spark, narrow.schema)
    sink.append(narrow, CommitInfo("p", "q", 0))
    with pytest.raises(SinkError, match=r"column `quantity` is int in the table, bigint"):
        sink.append(spark.createDataFrame([(2**40,)], "quantity long"), CommitInfo("p", "q", 1))
    assert sink.last_committed_batch(spark, "q") == 0


def test_existing_table_of_another_shape_fails_clearly(spark: SparkSession, tmp_path: Path) -> None:
    location = tmp_path / "foreign"
    spark.createDataFrame([("c-1", 1)], "customer_id string, quantity int").write.format(
        "delta"
    ).save(str(location))
    pipeline = _pipeline(_settings(tmp_path, "foreign"), "foreign")

    with pytest.raises(
        SinkError, match=r"column `customer_id` is string in the table, bigint in the batch"
    ):
        pipeline.process(_kafka_batch(spark, _frames(orders(1))), 0, query_id="q")

    assert DeltaTable(str(location)).to_pyarrow_table().to_pylist() == [
        {"customer_id": "c-1", "quantity": 1}
    ]


def test_restarted_job_finds_the_table_by_its_location(spark: SparkSession, tmp_path: Path) -> None:
    settings = _settings(tmp_path, "restarted")
    first, second = orders(2), orders(2, start=2)
    batch = _kafka_batch(spark, _frames(first))
    _pipeline(settings, "restarted").process(batch, 0, query_id="q")
    # a new process: the in-memory session catalog has forgotten the table, the files remain
    spark.sql(f"DROP TABLE {DATABASE}.restarted")
    assert not spark.catalog.tableExists(f"{DATABASE}.restarted")

    restarted = _pipeline(settings, "restarted")
    replayed = restarted.process(batch, 0, query_id="q")
    later = restarted.process(_kafka_batch(spark, _frames(second), first_offset=2), 1, query_id="q")

    assert (replayed.committed, later.committed) == (False, True)
    assert _order_fields(_read(tmp_path / "restarted")) == _expected(first + second)
    assert_df_equality(
        spark.table(f"{DATABASE}.restarted").select("order_id", KAFKA_OFFSET),
        spark.createDataFrame(
            [(f"o-{i}", i) for i in range(4)], f"order_id string, {KAFKA_OFFSET} long"
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_delta_drops_a_batch_it_committed_even_without_the_committer(
    spark: SparkSession, tmp_path: Path
) -> None:
    schema = f"id int, ts int, name string, {KAFKA_OFFSET} long"
    appended = DeltaSink(TableSpec(f"{DATABASE}.txn_append", location=str(tmp_path / "a")))
    rows = spark.createDataFrame([(1, 1, "a", 0)], schema)
    appended.prepare(spark, rows.schema)
    for _ in range(2):
        appended.append(rows, CommitInfo("p", "q", 0))
    upserted = DeltaSink(
        TableSpec(
            f"{DATABASE}.txn_upsert",
            upsert=UpsertSpec(("id",), "ts"),
            location=str(tmp_path / "u"),
        )
    )
    changes = spark.createDataFrame([(1, 1, "a", 0, False)], f"{schema}, {DELETE_FLAG} boolean")
    upserted.prepare(spark, rows.schema)
    upserted.upsert(changes, CommitInfo("p", "q", 0))
    # newer by its ordering, but the same (query, batch): Delta skips the MERGE
    upserted.upsert(changes.withColumn("ts", changes["ts"] + 1), CommitInfo("p", "q", 0))

    for sink, location in ((appended, "a"), (upserted, "u")):
        assert DeltaTable(str(tmp_path / location)).to_pyarrow_table().to_pylist() == [
            {"id": 1, "ts": 1, "name": "a", KAFKA_OFFSET: 0}
        ]
        assert sink.last_committed_batch(spark, "q") == 0
    # the commit metadata conf is scoped to the MERGE
    assert spark.conf.get(USER_METADATA_CONF, None) is None


def test_replay_dead_letters_into_a_delta_table(spark: SparkSession, tmp_path: Path) -> None:
    settings = _settings(tmp_path, "replayed")
    good, late = orders(2), orders(3, start=10)
    corrupt = encode_glue(b"\x07" * 30, LATE)
    values = _frames(good) + _frames(late, SCHEMA, LATE) + [corrupt]
    _pipeline(settings, "replayed").process(_kafka_batch(spark, values), 0, query_id="q")

    fixed = _pipeline(settings, "replayed", {LATE: SCHEMA})
    result = replay_dead_letters(spark, fixed, replay_id="r1", now=NOW)
    again = replay_dead_letters(spark, _pipeline(settings, "replayed", {LATE: SCHEMA}), now=NOW)

    assert (result.candidates, result.appended, result.marked) == (4, 3, 3)
    assert result.still_failing == {"DECODE_ERROR": 1}
    assert (again.candidates, again.appended, again.marked) == (1, 0, 0)
    assert _order_fields(_read(tmp_path / "replayed")) == _expected(good + late)
    marks = [
        (r["offset"], r["error_class"], r["replay_id"], r["replayed_at"])
        for r in _read(tmp_path / "replayed_dlq")
    ]
    assert sorted(marks) == [
        (2, "UNKNOWN_SCHEMA", "r1", NOW),
        (3, "UNKNOWN_SCHEMA", "r1", NOW),
        (4, "UNKNOWN_SCHEMA", "r1", NOW),
        # still failing: released, unmarked
        (5, "UNKNOWN_SCHEMA", None, None),
    ]


def test_partition_columns_generate_time_partitions_and_refuse_bucket() -> None:
    names, generated = partition_columns(
        (PartitionField("ts", PartitionTransform.HOUR), PartitionField("country"))
    )
    assert names == ["ts_hour", "country"]
    assert generated == [
        GeneratedColumn("ts_hour", StringType(), "DATE_FORMAT(`ts`, 'yyyy-MM-dd-HH')")
    ]
    with pytest.raises(
        SinkError,
        match=r"^expected a column or year/month/day/hour\(column\) for a delta table, "
        r"found bucket\(16, id\)$",
    ):
        partition_columns((PartitionField("id", PartitionTransform.BUCKET, 16),))


def test_schema_changes_finds_added_and_changed_columns_at_any_depth(
    spark: SparkSession,
) -> None:
    table = spark.createDataFrame(
        [], "id int, s struct<x: int>, arr array<struct<p: int>>, m map<string, float>, d date"
    ).schema
    batch = spark.createDataFrame(
        [],
        "id bigint, s struct<x: int, y: string>, arr array<struct<p: int, q: string>>, "
        "m map<string, double>, extra string",
    ).schema

    added, changed = schema_changes(table, batch)

    assert added == [
        ("`s`.`y`", "string"),
        ("`arr`.element.`q`", "string"),
        ("`extra`", "string"),
    ]
    assert changed == [("`id`", "int", "bigint"), ("`m`.value", "float", "double")]
