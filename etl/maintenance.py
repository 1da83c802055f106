"""Maintenance runs: compaction, expiry and orphan removal of a pipeline's tables, recorded.

``run_maintenance`` runs the asked tasks on a pipeline's table and dead-letter table through
their format's ``TableMaintenance``, retrying a task that lost a commit race with the running
stream, and returns one ``RunRecord`` per task and table. The job prints each as a JSON line
and appends them to the pipeline's maintenance-log table.

What this module guarantees for every format:

- both tables are checked before any task runs: a missing table or one of another format
  fails the run with nothing done (a dead-letter table that was never needed is skipped);
- expiry never drops the commits the exactly-once replay check reads (the newest commit of
  each query, the newest carrying the reader schema): the format gets the oldest of them as
  ``keep_from``;
- a task that fails is recorded as failed with its error, the other tasks still run, and the
  run reports failure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from etl.config import PipelineSettings
from etl.exceptions import MaintenanceError
from etl.formats import CommitInfo, side_table, table_format
from etl.formats.base import (
    CARRIED_PREFIX,
    QUERY_ID_KEY,
    READER_SCHEMA_KEY,
    TableMaintenance,
    TableSink,
    TaskOutcome,
    format_at,
)
from etl.logs import first_line
from etl.pipeline import pipeline_tables, utc_now
from transforms.history import COMMITTED_AT, needed_commits

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


class Task(enum.StrEnum):
    """The maintenance tasks, in the order ``all`` runs them."""

    COMPACT = "compact"
    EXPIRE = "expire"
    ORPHANS = "orphans"


class Status(enum.StrEnum):
    """How a task ended."""

    DONE = "done"
    # the task does not apply to this format (its expiry covers it)
    NOT_APPLICABLE = "not_applicable"
    # `enabled: false` in the pipeline's maintenance section
    DISABLED = "disabled"
    # the dead-letter table was never created (no record was ever dead-lettered)
    ABSENT = "absent"
    FAILED = "failed"


@dataclass(frozen=True)
class RunRecord:
    """One task on one table: what it found, what it did, how long it took."""

    run_id: str
    pipeline: str
    table: str
    role: str
    format: str
    task: str
    dry_run: bool
    status: str
    started_at: dt.datetime
    seconds: float
    attempts: int = 0
    files_before: int | None = None
    bytes_before: int | None = None
    snapshots_before: int | None = None
    files_after: int | None = None
    bytes_after: int | None = None
    snapshots_after: int | None = None
    files_rewritten: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> str:
        """The record as one JSON line (times in ISO 8601, UTC)."""
        data = dataclasses.asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["details"] = dict(self.details)
        return json.dumps(data, sort_keys=False, default=str)

    def as_row(self) -> dict[str, Any]:
        """The record as a row of the maintenance-log table (details as JSON text)."""
        data = dataclasses.asdict(self)
        data["details"] = json.dumps(dict(self.details), sort_keys=True, default=str)
        return data


LOG_SCHEMA = (
    "run_id string, pipeline string, table string, role string, format string, task string, "
    "dry_run boolean, status string, started_at timestamp, seconds double, attempts int, "
    "files_before bigint, bytes_before bigint, snapshots_before bigint, files_after bigint, "
    "bytes_after bigint, snapshots_after bigint, files_rewritten bigint, "
    "snapshots_expired bigint, files_deleted bigint, details string, error string"
)


@dataclass(frozen=True)
class Retry:
    """How often a task that lost a commit race is tried again, and how long it waits."""

    attempts: int = 4
    backoff_s: float = 5.0


def run_maintenance(
    spark: SparkSession,
    pipeline: PipelineSettings,
    name: str,
    tasks: Iterable[Task],
    *,
    dry_run: bool = False,
    run_id: str | None = None,
    retry: Retry = Retry(),
    clock: Callable[[], dt.datetime] = utc_now,
) -> list[RunRecord]:
    """Runs maintenance tasks on a pipeline's table and dead-letter table.

    Args:
        spark: A session hosting the pipeline's format (and, for Hudi and Iceberg, only it:
            their CALL procedures clash, apache/hudi#12808).
        pipeline: The pipeline's settings (its ``maintenance`` section among them).
        name: The pipeline's name (for the records).
        tasks: The tasks, run in this order on each table.
        dry_run: Report what would be done; commit and delete nothing.
        run_id: Identifies the run in the records; default: a new UUID.
        retry: Attempts for a task that lost a commit race with another writer.
        clock: The current time (tests pin it).

    Returns:
        One record per task and table, failed ones included.

    Raises:
        MaintenanceError: The table is missing or of another format (nothing was done).
    """
    run_id = run_id or uuid.uuid4().hex
    support = table_format(pipeline.sink.format)
    table, dead_letter = pipeline_tables(pipeline)
    targets: list[tuple[str, TableMaintenance | None]] = []
    for role, sink in (("table", table), ("dead_letter", dead_letter)):
        maintenance = support.maintenance(sink)
        if role == "dead_letter" and not _anything_at(spark, maintenance):
            targets.append((role, None))
            continue
        maintenance.check(spark)
        # a table known by its location (Delta, Hudi) gets its name in this session's catalog
        maintenance.sink.exists(spark)
        targets.append((role, maintenance))
    records = []
    for (role, target), sink in zip(targets, (table, dead_letter), strict=True):
        for task in tasks:
            started = clock()
            base = RunRecord(
                run_id=run_id,
                pipeline=name,
                table=sink.name,
                role=role,
                format=pipeline.sink.format.value,
                task=task.value,
                dry_run=dry_run,
                status=Status.ABSENT.value,
                started_at=started,
                seconds=0.0,
            )
            if target is None:
                records.append(base)
                continue
            record = _run_task(
                spark, target, pipeline, task, base, dry_run=dry_run, retry=retry, clock=clock
            )
            log.info(
                "%s %s on %s: %s in %.1f s",
                name,
                task.value,
                sink.name,
                record.status,
                record.seconds,
            )
            records.append(record)
    return records


def _anything_at(spark: SparkSession, maintenance: TableMaintenance) -> bool:
    """Whether the table exists, of any format (asked for the dead-letter table, created on
    first use: a table of another format there is then refused by ``check``)."""
    location = maintenance.sink.spec.location
    if location is None:
        return maintenance.sink.exists(spark)
    return format_at(spark, location) is not None


def _run_task(
    spark: SparkSession,
    maintenance: TableMaintenance,
    pipeline: PipelineSettings,
    task: Task,
    base: RunRecord,
    *,
    dry_run: bool,
    retry: Retry,
    clock: Callable[[], dt.datetime],
) -> RunRecord:
    """One task on one table, retried on a commit conflict, with its stats around it."""
    settings = getattr(pipeline.maintenance, task.value)
    if task is Task.COMPACT and base.role == "dead_letter":
        # the dead-letter table has its own columns and partitioning: bin-packed only
        settings = settings.model_copy(update={"sort_by": [], "zorder": False, "where": None})
    if not settings.enabled:
        return dataclasses.replace(base, status=Status.DISABLED.value)
    started = time.monotonic()
    before = maintenance.stats(spark)
    outcome: TaskOutcome | None = None
    error: str | None = None
    attempt = 0
    for attempt in range(1, retry.attempts + 1):
        try:
            outcome = _dispatch(spark, maintenance, task, settings, dry_run=dry_run, clock=clock)
            break
        except Exception as err:
            error = first_line(err)
            if attempt < retry.attempts and maintenance.is_conflict(err):
                log.warning(
                    "%s %s lost a commit race with another writer (attempt %d of %d), retrying: %s",
                    maintenance.name,
                    task.value,
                    attempt,
                    retry.attempts,
                    error,
                )
                time.sleep(retry.backoff_s * attempt)
                continue
            log.debug("%s %s failed", maintenance.name, task.value, exc_info=True)
            break
    after = maintenance.stats(spark)
    record = dataclasses.replace(
        base,
        attempts=attempt,
        seconds=round(time.monotonic() - started, 3),
        files_before=before.files,
        bytes_before=before.bytes,
        snapshots_before=before.snapshots,
        files_after=after.files,
        bytes_after=after.bytes,
        snapshots_after=after.snapshots,
    )
    if outcome is None:
        return dataclasses.replace(record, status=Status.FAILED.value, error=error)
    return dataclasses.replace(
        record,
        status=(Status.DONE if outcome.applied else Status.NOT_APPLICABLE).value,
        files_rewritten=outcome.files_rewritten,
        snapshots_expired=outcome.snapshots_expired,
        files_deleted=outcome.files_deleted,
        details=outcome.details,
    )


def _dispatch(
    spark: SparkSession,
    maintenance: TableMaintenance,
    task: Task,
    settings: Any,
    *,
    dry_run: bool,
    clock: Callable[[], dt.datetime],
) -> TaskOutcome:
    """Calls the format's task."""
    if task is Task.COMPACT:
        columns = set(maintenance.sink.read(spark).columns)
        missing = [c for c in settings.sort_by if c not in columns]
        if missing:
            raise MaintenanceError(
                f"{maintenance.name}: maintenance.compact.sort_by: expected columns of the "
                f"table, found {', '.join(missing)} (not among {', '.join(sorted(columns))})"
            )
        return maintenance.compact(spark, settings, now=clock(), dry_run=dry_run)
    if task is Task.EXPIRE:
        return maintenance.expire(
            spark,
            settings,
            now=clock(),
            keep_from=keep_from(spark, maintenance.sink),
            dry_run=dry_run,
        )
    return maintenance.orphans(spark, settings, now=clock(), dry_run=dry_run)


def keep_from(spark: SparkSession, sink: TableSink) -> dt.datetime | None:
    """The time of the oldest commit the replay check reads (``needed_commits``), or None."""
    row = (
        sink.commit_history(spark)
        .transform(
            needed_commits(
                query_key=QUERY_ID_KEY, schema_key=READER_SCHEMA_KEY, carried_prefix=CARRIED_PREFIX
            )
        )
        .agg(F.min(COMMITTED_AT))
        .first()
    )
    if row is None or row[0] is None:
        return None
    found: dt.datetime = row[0]
    # Spark hands timestamps back as naive local times, which astimezone reads as such
    return found.astimezone(dt.UTC)


def write_log(
    spark: SparkSession, pipeline: PipelineSettings, name: str, records: list[RunRecord]
) -> None:
    """Appends the records to the pipeline's maintenance-log table (in the pipeline's format).

    Raises:
        MaintenanceError: The log table cannot be written.
    """
    if not records:
        return
    log_table = pipeline.maintenance_log
    sink = side_table(pipeline.sink.format, log_table)
    rows = spark.createDataFrame([r.as_row() for r in records], LOG_SCHEMA)
    try:
        sink.prepare(spark, rows.schema)
        sink.append(rows, CommitInfo(name, f"maintenance-{records[0].run_id}", 0))
    except Exception as err:
        raise MaintenanceError(
            f"{log_table.table}: cannot record the maintenance run: {first_line(err)}"
        ) from err
