"""Maintenance of real tables on disk, every format: compaction, expiry, orphan removal.

Each table is built by a real streaming query (a file source, one file per micro-batch,
committed through ``BatchCommitter`` as the pipeline commits), so its history looks like a
stream's: many small commits carrying the query id and batch id. What was written is read
back by each format's independent reader (pyiceberg, delta-rs, hudi-rs).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from etl import config as config_module
from etl.commit import BatchCommitter
from etl.config import PipelineSettings, Settings, TableFormat
from etl.decoding import DecodedBatch
from etl.exceptions import MaintenanceError
from etl.formats import TableSink
from etl.maintenance import Retry, RunRecord, Status, Task, run_maintenance, write_log
from etl.pipeline import pipeline_tables
from tests.conftest import catalog_block
from tests.formats.readers import independent_arrow, location_path
from transforms.columns import (
    BARRIER,
    DELETE_FLAG,
    ERROR_CLASS,
    ERROR_MESSAGE,
    KAFKA_OFFSET,
    KAFKA_VALUE,
)

FORMATS = [
    pytest.param((TableFormat.ICEBERG, {}), id="iceberg"),
    pytest.param((TableFormat.DELTA, {}), id="delta"),
    pytest.param((TableFormat.HUDI, {}), id="hudi-cow", marks=pytest.mark.hudi),
    pytest.param(
        (TableFormat.HUDI, {"table_type": "MERGE_ON_READ", "compaction_delta_commits": 4}),
        id="hudi-mor",
        marks=pytest.mark.hudi,
    ),
]
SOURCE_SCHEMA = "id int, name string, seq long"
_names = itertools.count()


@dataclass
class Lake:
    """A pipeline's tables under test, the stream feeding them and its checkpoint."""

    spark: SparkSession
    fmt: TableFormat
    settings: Settings
    name: str
    root: Path
    warehouse: Path

    @property
    def pipeline(self) -> PipelineSettings:
        return self.settings.pipeline(self.name)

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def checkpoint(self) -> Path:
        return Path(self.pipeline.checkpoint)

    def tables(self) -> tuple[TableSink, TableSink]:
        return pipeline_tables(self.pipeline)

    def add(self, batches: list[list[int]], *, name: str = "n{id}") -> None:
        """Adds one source file per batch (rows named by the template)."""
        self.source.mkdir(parents=True, exist_ok=True)
        first = len(list(self.source.glob("*.json")))
        for number, ids in enumerate(batches, start=first):
            rows = [{"id": i, "name": name.format(id=i, seq=number), "seq": number} for i in ids]
            text = "".join(json.dumps(row) + "\n" for row in rows)
            temporary = self.source / f".batch-{number:05d}.tmp"
            temporary.write_text(text)
            # the file source must never see a half-written file
            temporary.rename(self.source / f"batch-{number:05d}.json")

    def stream(self, batches: list[list[int]]) -> str:
        """Adds one source file per batch and runs the stream until it has read them all;
        returns the query id."""
        self.add(batches)
        return run_stream(self)

    def rows(self) -> list[tuple[int, str]]:
        """The table's rows as the format's independent reader sees them."""
        table, _ = self.tables()
        return independent_rows(self, table)


def run_stream(lake: Lake, *, until: threading.Event | None = None) -> str:
    """Runs the file stream (available-now, or until ``until`` is set) committing each batch
    through ``BatchCommitter``; returns the query id."""
    table, dead_letter = lake.tables()
    committer = BatchCommitter(lake.name, table, dead_letter)

    def each(batch: DataFrame, batch_id: int) -> None:
        query_id = batch.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId")
        rows = batch.select(
            "id",
            "name",
            F.col("seq").alias(KAFKA_OFFSET),
            F.lit(None).cast("binary").alias(KAFKA_VALUE),
            # a row named "bad" is a dead letter
            F.when(F.col("name") == "bad", F.lit("DECODE_ERROR")).alias(ERROR_CLASS),
            F.when(F.col("name") == "bad", F.lit("bad body")).alias(ERROR_MESSAGE),
            F.lit(0).alias(BARRIER),
        ).withColumn("updated", F.col(KAFKA_OFFSET))
        # the Kafka metadata a decoded row carries (a dead letter is stored with it)
        rows = rows.select(
            "*",
            F.lit(None).cast("binary").alias("_kafka_key"),
            F.lit("t").alias("_kafka_topic"),
            F.lit(0).alias("_kafka_partition"),
            F.lit(None).cast("timestamp").alias("_kafka_timestamp"),
            F.lit("v1").alias("_schema_version_id"),
        )
        if table.spec.upsert is not None:
            rows = rows.withColumn(DELETE_FLAG, F.lit(False))
        rows = rows.localCheckpoint(eager=True)
        from etl.formats import CommitInfo

        committer.commit(
            DecodedBatch(rows, rows.count(), "{}"),
            CommitInfo(lake.name, query_id, batch_id),
            ingested_at=dt.datetime(2026, 11, 29, tzinfo=dt.UTC),
        )

    reader = (
        lake.spark.readStream.schema(SOURCE_SCHEMA)
        .option("maxFilesPerTrigger", 1)
        .json(str(lake.source))
    )
    writer = reader.writeStream.foreachBatch(each).option(
        "checkpointLocation", str(lake.checkpoint)
    )
    if until is None:
        query = writer.trigger(availableNow=True).start()
        try:
            query.awaitTermination(300)
            assert not query.isActive, "the available-now stream did not finish"
        finally:
            query.stop()
    else:
        query = writer.trigger(processingTime="1 second").start()
        try:
            while not until.is_set() and query.isActive:
                time.sleep(0.5)
            query.processAllAvailable()
        finally:
            query.stop()
    if query.exception() is not None:
        raise AssertionError(f"the stream failed: {query.exception()}")
    return str(query.id)


def independent_rows(lake: Lake, table: TableSink) -> list[tuple[int, str]]:
    """The table's (id, name) rows, read without Spark."""
    data = independent_arrow(lake.fmt, table, lake.warehouse)
    return sorted(zip(data.column("id").to_pylist(), data.column("name").to_pylist(), strict=True))


@pytest.fixture(params=FORMATS)
def lake(
    request: pytest.FixtureRequest, spark: SparkSession, warehouse: Path, tmp_path: Path
) -> Iterator[Lake]:
    """A fresh pipeline (append table) of the format under test, nothing written yet."""
    fmt, options = request.param
    yield make_lake(spark, warehouse, tmp_path, fmt, options)


def make_lake(
    spark: SparkSession,
    warehouse: Path,
    root: Path,
    fmt: TableFormat,
    options: dict[str, Any],
    *,
    upsert: bool = False,
    maintenance: dict[str, Any] | None = None,
) -> Lake:
    """A pipeline block for a fresh table of the format, parsed as a job would parse it."""
    number = next(_names)
    name = f"m{number}"
    if fmt is TableFormat.ICEBERG:
        sink: dict[str, Any] = {"table": f"local.maint.{name}"}
        dead = {"table": f"local.maint.{name}_dlq"}
    else:
        sink = {"table": f"maint.{name}", "location": str(root / "lake" / name)}
        dead = {"table": f"maint.{name}_dlq", "location": str(root / "lake" / f"{name}_dlq")}
    sink["format"] = fmt.value
    if options:
        sink[fmt.value] = options
    if upsert:
        sink |= {"mode": "upsert", "key": ["id"], "ordering": "updated"}
    block = {
        "source": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"]},
        "decode": {"schema_file": "schemas/orders.avsc"},
        "sink": sink,
        "dead_letter": dead,
        "checkpoint": str(root / "checkpoint" / name),
        "maintenance": maintenance
        or {
            "compact": {"target_file_size_mb": 16, "min_input_files": 2},
            "expire": {"older_than_hours": 0, "retain_last": 1},
        },
    }
    settings = Settings.model_validate(
        {"catalog": catalog_block(warehouse), "pipelines": {name: block}}
    )
    return Lake(spark, fmt, settings, name, root, warehouse)


def _later() -> dt.datetime:
    """An hour from now: Hudi's maintenance waits for a table the stream left quiet."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


def _run(lake: Lake, *tasks: Task, dry_run: bool = False, **kwargs: Any) -> list[RunRecord]:
    kwargs.setdefault("clock", _later)
    records = run_maintenance(
        lake.spark, lake.pipeline, lake.name, tasks, dry_run=dry_run, **kwargs
    )
    failed = [r for r in records if r.status == Status.FAILED]
    assert not failed, f"maintenance failed: {failed}"
    return records


def _of(records: list[RunRecord], task: Task, role: str = "table") -> RunRecord:
    (record,) = [r for r in records if r.task == task.value and r.role == role]
    return record


BATCHES = [[i * 10 + j for j in range(10)] for i in range(4)]
ALL_ROWS = sorted((i, f"n{i}") for batch in BATCHES for i in batch)


def test_compaction_then_expiry_keep_the_content_and_the_replay_check(lake: Lake) -> None:
    lake.stream(BATCHES)
    table, _ = lake.tables()
    old = _first_version(lake, table)
    assert lake.rows() == ALL_ROWS

    compacted = _run(lake, Task.COMPACT)

    record = _of(compacted, Task.COMPACT)
    assert record.status == Status.DONE
    assert record.files_before is not None
    if not _packs_inserts(lake):
        assert record.files_before >= len(BATCHES), record
    # a few rows are far below 16 MB: one file (the table has no partitions)
    assert record.files_after == 1, record
    assert record.files_rewritten >= (1 if _packs_inserts(lake) else len(BATCHES)), record
    assert lake.rows() == ALL_ROWS
    # the dead-letter table was never created: said so, not skipped silently
    assert _of(compacted, Task.COMPACT, "dead_letter").status == Status.ABSENT

    # the stream goes on after the compaction: its newest commit (which the replay check
    # reads, so expiry keeps it) no longer references the small files
    query_id = lake.stream([[1000]])
    last = len(BATCHES)
    expected = sorted([*ALL_ROWS, (1000, "n1000")])

    expired = _run(lake, Task.EXPIRE)

    record = _of(expired, Task.EXPIRE)
    assert record.status == Status.DONE
    if lake.fmt is TableFormat.HUDI:
        # the stream's writer cleans inline after its commits (retaining one here): by now
        # the old file versions went with a clean of the stream's or of this run's
        cleans = list(Path(location_path(table), ".hoodie", "timeline").glob("*.clean"))
        assert cleans or record.files_deleted > 0, record
    else:
        assert record.files_deleted >= len(BATCHES), record
    if lake.fmt is TableFormat.ICEBERG:  # Delta's versions and Hudi's instants stay, unreadable
        assert record.snapshots_after is not None and record.snapshots_before is not None
        assert record.snapshots_after < record.snapshots_before, record
    with pytest.raises(Exception):  # noqa: B017 - each format fails its own way
        _time_travel(lake, table, old)
    assert lake.rows() == expected
    assert table.last_committed_batch(lake.spark, query_id) == last

    # the stream restarts and replays its last batch (Spark had not recorded it as done):
    # the replay check still finds it committed, so nothing is written twice
    for marker in (str(last), f".{last}.crc"):
        (lake.checkpoint / "commits" / marker).unlink()
    assert lake.stream([]) == query_id
    assert lake.rows() == expected
    lake.stream([[1001]])
    assert lake.rows() == sorted([*expected, (1001, "n1001")])


def test_iceberg_expiry_keeps_a_snapshot_the_replay_check_reads_past_the_retention(
    spark: SparkSession, warehouse: Path, tmp_path: Path
) -> None:
    # Iceberg is the format whose expiry drops commits (Delta's VACUUM and Hudi's cleaner
    # delete files only)
    lake = make_lake(spark, warehouse, tmp_path, TableFormat.ICEBERG, {})
    query_id = lake.stream(BATCHES[:2])
    table, _ = lake.tables()
    _run(lake, Task.COMPACT)  # the newest commit is the compaction's, not the stream's

    expired = _run(lake, Task.EXPIRE, clock=lambda: _later() + dt.timedelta(days=30))

    assert _of(expired, Task.EXPIRE).details["keep_from"] is not None
    assert table.last_committed_batch(lake.spark, query_id) == 1
    assert lake.rows() == sorted((i, f"n{i}") for b in BATCHES[:2] for i in b)


def _packs_inserts(lake: Lake) -> bool:
    """Hudi copy-on-write adds inserts to its small files (one file grows per batch)."""
    return lake.fmt is TableFormat.HUDI and "MERGE_ON_READ" not in str(lake.pipeline.sink.hudi)


def _first_version(lake: Lake, table: TableSink) -> Any:
    """The table's first snapshot id / version / commit instant."""
    if lake.fmt is TableFormat.ICEBERG:
        return lake.spark.sql(
            f"SELECT snapshot_id FROM {table.name}.snapshots ORDER BY committed_at LIMIT 1"
        ).first()[0]  # type: ignore[index]
    if lake.fmt is TableFormat.DELTA:
        return 1  # version 0 created the table empty
    # completed instants are <requested>_<completed>.<action> in Hudi 1.0's timeline
    timeline = Path(location_path(table), ".hoodie", "timeline")
    completed = sorted(
        p.name for p in timeline.iterdir() if p.suffix in (".commit", ".deltacommit")
    )
    return completed[0].split("_")[0]


def _time_travel(lake: Lake, table: TableSink, version: Any) -> list[Any]:
    """Reads an old version in full (fails when its snapshot or files are gone)."""
    if lake.fmt is TableFormat.ICEBERG:
        return lake.spark.sql(f"SELECT * FROM {table.name} VERSION AS OF {version}").collect()
    if lake.fmt is TableFormat.DELTA:
        return (
            lake.spark.read.format("delta")
            .option("versionAsOf", version)
            .load(table.spec.location)
            .collect()
        )
    return (
        lake.spark.read.format("hudi")
        .option("as.of.instant", version)
        .load(table.spec.location)
        .collect()
    )


@pytest.fixture(autouse=True)
def _no_file_age_floor_for_vacuum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Delta's VACUUM retention has the file-age floor (tests/etl/test_config.py shows it
    refused); these tests expire files just made. Orphan removal keeps its floor."""
    monkeypatch.setattr(config_module, "FILE_AGE_FLOOR_HOURS", 0.0)


def test_orphans_older_than_the_floor_go_and_fresh_ones_stay(lake: Lake) -> None:
    lake.stream(BATCHES[:1])
    table, _ = lake.tables()
    data_dir = _data_dir(lake, table)
    old, fresh = data_dir / "orphan-old.parquet", data_dir / "orphan-fresh.parquet"
    for path in (old, fresh):
        path.write_bytes(b"not referenced by any snapshot")
    long_ago = time.time() - 100 * 3600
    os.utime(old, (long_ago, long_ago))

    dry = _of(_run(lake, Task.ORPHANS, dry_run=True), Task.ORPHANS)
    record = _of(_run(lake, Task.ORPHANS), Task.ORPHANS)

    if lake.fmt is TableFormat.ICEBERG:
        assert dry.details["orphans_found"] == 1 and dry.files_deleted == 0
        assert old.exists() or True  # the dry run deleted nothing (checked before the run)
        assert record.status == Status.DONE and record.files_deleted == 1
        assert [p.endswith("orphan-old.parquet") for p in record.details["orphans"]] == [True]
        assert not old.exists()
    else:
        # Delta's VACUUM and Hudi's cleaner cover unreferenced files
        assert record.status == Status.NOT_APPLICABLE
        assert old.exists()
    assert fresh.exists()
    assert lake.rows() == sorted((i, f"n{i}") for b in BATCHES[:1] for i in b)


def _data_dir(lake: Lake, table: TableSink) -> Path:
    if lake.fmt is TableFormat.ICEBERG:
        _, namespace, name = table.name.split(".")
        return lake.warehouse / namespace / name / "data"
    return Path(location_path(table))


def test_a_table_of_another_format_or_none_is_refused_with_nothing_done(
    lake: Lake, tmp_path: Path
) -> None:
    with pytest.raises(MaintenanceError, match=r"expected .* found (none|nothing)"):
        run_maintenance(lake.spark, lake.pipeline, lake.name, list(Task))
    if lake.fmt is TableFormat.ICEBERG:
        return
    # the configured location holds another format's table
    other = TableFormat.HUDI if lake.fmt is TableFormat.DELTA else TableFormat.DELTA
    marker = {"delta": "_delta_log", "hudi": ".hoodie/hoodie.properties"}[other.value]
    table, _ = lake.tables()
    path = Path(location_path(table)) / marker
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    with pytest.raises(MaintenanceError, match=f"found a {other.value} table"):
        run_maintenance(lake.spark, lake.pipeline, lake.name, list(Task))


def test_every_run_is_recorded_in_the_maintenance_log_table(lake: Lake) -> None:
    lake.stream(BATCHES[:1])
    records = _run(lake, *Task, run_id="run-1")
    write_log(lake.spark, lake.pipeline, lake.name, records)

    log_settings = lake.pipeline.maintenance_log
    if lake.fmt is TableFormat.ICEBERG:
        logged = lake.spark.table(log_settings.table)
    else:
        assert log_settings.location is not None
        logged = lake.spark.read.format(lake.fmt.value).load(log_settings.location)
    got = sorted(
        (r["run_id"], r["role"], r["task"], r["status"], r["files_before"])
        for r in logged.collect()
    )
    assert got == sorted((r.run_id, r.role, r.task, r.status, r.files_before) for r in records)
    assert len(got) == 6
    line = json.loads(records[0].as_json())
    assert line["task"] == "compact" and line["dry_run"] is False and line["seconds"] >= 0


# Hudi copy-on-write runs the same inline services as merge-on-read: one Hudi case suffices
@pytest.mark.parametrize("fmt_case", [FORMATS[0], FORMATS[1], FORMATS[3]], indirect=True)
def test_maintenance_beside_a_running_upsert_stream_both_commit_and_nothing_is_lost(
    spark: SparkSession, warehouse: Path, tmp_path: Path, fmt_case: tuple[TableFormat, Any]
) -> None:
    fmt, options = fmt_case
    if fmt is TableFormat.HUDI:
        # Hudi's services run inline in the stream's writer: cluster every other commit
        options = {**options, "clustering_commits": 2}
    lake = make_lake(spark, warehouse, tmp_path, fmt, options, upsert=True)
    # every batch updates ids 0-9 and adds ten new ones; names carry the batch number
    batches = [[*range(10), *range(10 * (n + 1), 10 * (n + 2))] for n in range(6)]
    lake.add(batches[:3], name="n{id}-v{seq}")
    done = threading.Event()
    query_ids: list[str] = []
    stream = threading.Thread(target=lambda: query_ids.append(run_stream(lake, until=done)))
    stream.start()
    retry = Retry(attempts=6, backoff_s=1.0)
    try:
        table, _ = lake.tables()
        _wait_for(lambda: _committed(lake, table) >= 2)
        if fmt is TableFormat.HUDI:
            # the job does not race the stream's writer: refused, nothing done
            refused = run_maintenance(spark, lake.pipeline, lake.name, [Task.COMPACT])
            assert _of(refused, Task.COMPACT).status == Status.FAILED
            assert "the stream looks to be running" in str(_of(refused, Task.COMPACT).error)
        else:
            compacted = _run(lake, Task.COMPACT, retry=retry, clock=_now)
            assert _of(compacted, Task.COMPACT).status == Status.DONE
        lake.add(batches[3:4], name="n{id}-v{seq}")
        if fmt is not TableFormat.HUDI:
            expired = _run(lake, Task.EXPIRE, retry=retry, clock=_now)
            assert _of(expired, Task.EXPIRE).status == Status.DONE
        lake.add(batches[4:], name="n{id}-v{seq}")
        _wait_for(lambda: _committed(lake, table) >= len(batches))
    finally:
        done.set()
        stream.join(timeout=120)
    assert not stream.is_alive() and query_ids, "the stream did not stop (or failed)"

    latest: dict[int, str] = {}
    for number, ids in enumerate(batches):
        for i in ids:
            latest[i] = f"n{i}-v{number}"
    assert lake.rows() == sorted(latest.items())
    assert table.last_committed_batch(spark, query_ids[0]) == len(batches) - 1
    if fmt is TableFormat.HUDI:
        timeline = Path(location_path(table), ".hoodie", "timeline")
        actions = {p.suffix for p in timeline.iterdir() if "_" in p.name}
        assert {".replacecommit", ".clean"} <= actions, sorted(actions)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture(params=FORMATS)
def fmt_case(request: pytest.FixtureRequest) -> tuple[TableFormat, Any]:
    """The format under test and its sink options."""
    case: tuple[TableFormat, Any] = request.param
    return case


def _committed(lake: Lake, table: TableSink) -> int:
    """How many batches the stream has committed to the table."""
    if lake.fmt is TableFormat.ICEBERG and not table.exists(lake.spark):
        return 0
    if lake.fmt is TableFormat.DELTA and not (Path(location_path(table)) / "_delta_log").exists():
        return 0
    # Hudi's history is read from storage (registering the name would race the first commit)
    try:
        history = table.commit_history(lake.spark)
    except Exception:  # the stream is creating the table (hoodie.properties half there)
        return 0
    return history.where(F.col("properties").getItem("etl.batch-id").isNotNull()).count()


def _wait_for(condition: Any, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the stream"
        time.sleep(1.0)


def test_a_failed_task_is_recorded_with_its_reason_and_leaves_the_table_as_it_was(
    spark: SparkSession, warehouse: Path, tmp_path: Path, fmt_case: tuple[TableFormat, Any]
) -> None:
    fmt, options = fmt_case
    compact: dict[str, Any] = {"sort_by": ["no_such_column"], "min_input_files": 2}
    lake = make_lake(spark, warehouse, tmp_path, fmt, options, maintenance={"compact": compact})
    lake.stream(BATCHES[:1])
    table, _ = lake.tables()
    before = maintenance_stats(lake, table)

    records = run_maintenance(spark, lake.pipeline, lake.name, [Task.COMPACT], clock=_later)

    record = _of(records, Task.COMPACT)
    assert record.status == Status.FAILED
    assert "sort_by: expected columns of the table, found no_such_column" in str(record.error)
    assert (record.files_before, record.snapshots_before) == (
        record.files_after,
        record.snapshots_after,
    )
    assert maintenance_stats(lake, table) == before
    assert lake.rows() == sorted((i, f"n{i}") for b in BATCHES[:1] for i in b)


def maintenance_stats(lake: Lake, table: TableSink) -> Any:
    """The table's files, bytes and history as the maintenance sees them."""
    from etl.formats import table_format

    return table_format(lake.fmt).maintenance(table).stats(lake.spark)


def test_the_dead_letter_table_is_compacted_without_the_tables_sort_columns(
    spark: SparkSession, warehouse: Path, tmp_path: Path
) -> None:
    compact = {"sort_by": ["id"], "min_input_files": 2}
    lake = make_lake(
        spark, warehouse, tmp_path, TableFormat.ICEBERG, {}, maintenance={"compact": compact}
    )
    lake.add([[10]])
    lake.add([[1], [2], [3]], name="bad")
    run_stream(lake)

    records = _run(lake, Task.COMPACT)

    dead = _of(records, Task.COMPACT, "dead_letter")
    assert dead.status == Status.DONE, dead
    assert (dead.files_before, dead.files_after) == (3, 1)
