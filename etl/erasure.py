"""GDPR erasure: forget data subjects, delete their rows everywhere, erase them physically,
prove it, and audit the request.

``erase`` runs one request over the pipelines (one table format per run):

1. **Check** everything first: each pipeline has a ``privacy`` section, its salt can be read,
   its subject fields are columns of its table. Nothing is written before that.
2. **Forget**: the subjects' keyed hashes are appended to each pipeline's forget list (once
   per request id), so from the next micro-batch on the stream, and any replay, drops their
   records (``etl.privacy``).
3. **Delete** per table (the pipeline's table and its dead-letter table): rows whose subject
   fields (or Kafka key, ``key_is_subject``) equal a subject are found and deleted by their
   Kafka coordinates in one copy-on-write commit (``TableMaintenance.delete_rows``). Dead
   letters are decoded with the pipeline's own decoder to find the subject; those that cannot
   be decoded and have no usable key are counted (``unverifiable_dead_letters``). The delete
   commit carries each query's latest batch id forward, so the history before it can go.
4. **Purge** (``TableMaintenance.purge``): the history and metadata that still hold the rows.
5. **Verify** (``etl.verify``): every file under the table's location is read directly; a
   hit (rows that arrived from a batch already in flight, a file the purge could not reach)
   starts another delete-purge-verify round, up to ``MAX_ROUNDS``; then the table fails
   loudly, naming the files.
6. **Audit**: one record per table, in the pipeline's erasure-audit table and as one JSON line
   for the request. Raw subject values appear nowhere: not in the audit, the logs, or the
   forget list.

A request id that was done before is done again harmlessly: its delete commit is found
("already_done"), and the table is verified again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyarrow import fs
from pyspark.sql import functions as F

from etl.config import PipelineSettings, Settings
from etl.exceptions import ConfigError, ErasureError
from etl.formats import CommitInfo, TableSink, side_table, table_format
from etl.formats.base import EraseOutcome, TableMaintenance
from etl.logs import first_line
from etl.pipeline import Pipeline, build_pipeline, pipeline_tables, utc_now
from etl.privacy import ForgetList, build_forget_list, forget_query_id
from etl.verify import ScanResult, scan_location
from transforms.columns import (
    ERROR_CLASS,
    FORGOTTEN,
    KAFKA_COORDINATES,
    KAFKA_KEY,
    KAFKA_VALUE,
)
from transforms.privacy import flag_matches, subject_values
from transforms.routing import kafka_rows_from_dead_letters

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# delete-purge-verify rounds per table before the table fails
MAX_ROUNDS = 3
# a lost commit race (with the running stream) is tried this often, waiting longer each time
CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_S = 2.0
DEAD_LETTER_COORDINATES = ("topic", "partition", "offset")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DOOMED = "_etl_doomed"


class Status(enum.StrEnum):
    """How the erasure of one table ended."""

    DONE = "done"
    # the request's delete commit was there already: only verified again
    ALREADY_DONE = "already_done"
    # the table was never created (a dead-letter table nothing was dead-lettered to)
    ABSENT = "absent"
    FAILED = "failed"


@dataclass(frozen=True)
class ErasureRequest:
    """One request: its id (idempotency) and the subjects' values (never stored raw)."""

    request_id: str
    subjects: tuple[str, ...]

    @classmethod
    def of(cls, request_id: str, subjects: Sequence[str]) -> ErasureRequest:
        """A checked request.

        Raises:
            ErasureError: The id is not 1-128 letters, digits, ``.``, ``_``, ``-``, or there is
                no subject (or an empty one).
        """
        if not _REQUEST_ID.match(request_id):
            raise ErasureError(
                "--request-id: expected 1-128 letters, digits, '.', '_' or '-' (starting with "
                f"a letter or digit), found {len(request_id)} characters that are not"
            )
        values = tuple(sorted(set(subjects)))
        if not values:
            raise ErasureError("subjects: expected one or more subject values, found none")
        if any(not v.strip() for v in values):
            raise ErasureError("subjects: expected non-blank subject values, found a blank one")
        return cls(request_id, values)


def read_subjects(path: str) -> list[str]:
    """The subject values of a subjects file: UTF-8 text, one value per line (a local path or
    an ``s3://`` URI); blank lines are skipped, lines are not trimmed otherwise.

    Raises:
        ErasureError: The file cannot be read, is not UTF-8 text, or holds no value; the
            message names the line, never a value.
    """
    try:
        uri = path if "://" in path else Path(path).absolute().as_uri()
        files, inner = fs.FileSystem.from_uri(uri)
        with files.open_input_stream(inner) as stream:
            data = stream.read()
    except (OSError, ValueError) as err:
        raise ErasureError(f"--subjects-file {path}: cannot be read ({err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ErasureError(
            f"--subjects-file {path}: expected UTF-8 text, found a byte that is not at "
            f"offset {err.start}"
        ) from None
    values = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if any(ord(c) < 32 for c in line) or line != line.strip():
            raise ErasureError(
                f"--subjects-file {path}: line {number}: expected one value per line without "
                "surrounding blanks or control characters, found some"
            )
        values.append(line)
    if not values:
        raise ErasureError(f"--subjects-file {path}: expected one value per line, found none")
    return values


@dataclass(frozen=True)
class TableAudit:
    """The audit record of one request on one table."""

    request_id: str
    pipeline: str
    table: str
    role: str
    format: str
    status: str
    subjects: int
    started_at: dt.datetime
    ended_at: dt.datetime
    rows_deleted: int = 0
    files_rewritten: int = 0
    snapshots_expired: int = 0
    files_removed: int = 0
    unverifiable_dead_letters: int = 0
    rounds: int = 0
    files_scanned: int = 0
    bytes_scanned: int = 0
    hits: int = 0
    hit_files: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (times in ISO 8601, UTC)."""
        data = dataclasses.asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat()
        data["hit_files"] = list(self.hit_files)
        return data

    def as_row(self) -> dict[str, Any]:
        """The record as a row of the audit table (hit files and details as JSON text)."""
        data = dataclasses.asdict(self)
        data["hit_files"] = json.dumps(list(self.hit_files))
        data["details"] = json.dumps(self.details, sort_keys=True, default=str)
        return data


AUDIT_SCHEMA = (
    "request_id string, pipeline string, table string, role string, format string, "
    "status string, subjects int, started_at timestamp, ended_at timestamp, "
    "rows_deleted bigint, files_rewritten bigint, snapshots_expired bigint, "
    "files_removed bigint, unverifiable_dead_letters bigint, rounds int, files_scanned bigint, "
    "bytes_scanned bigint, hits bigint, hit_files string, details string, error string"
)


@dataclass(frozen=True)
class RequestAudit:
    """The audit of one request: every table's record."""

    request_id: str
    subjects: int
    started_at: dt.datetime
    ended_at: dt.datetime
    tables: tuple[TableAudit, ...]

    @property
    def failed(self) -> bool:
        """Whether a table could not be erased or verified clean."""
        return any(t.status == Status.FAILED for t in self.tables)

    def as_json(self) -> str:
        """The request's audit as one JSON line."""
        return json.dumps(
            {
                "request_id": self.request_id,
                "status": "failed" if self.failed else "done",
                "subjects": self.subjects,
                "started_at": self.started_at.isoformat(),
                "ended_at": self.ended_at.isoformat(),
                "tables": [t.as_dict() for t in self.tables],
            },
            default=str,
        )


@dataclass
class _Target:
    """One table to erase: its sink, maintenance, how its rows are identified and found."""

    pipeline: str
    role: str
    format: str
    sink: TableSink
    maintenance: TableMaintenance
    # the columns identifying a row (its Kafka coordinates)
    on: tuple[str, ...]
    # the subject's columns (where the verification compares numbers too)
    fields: tuple[str, ...]
    # the rows of the subjects (on columns, distinct) and the dead letters that cannot be
    # checked; called for each round
    doomed: Callable[[SparkSession, DataFrame], tuple[DataFrame, int]]


def erase(
    spark: SparkSession,
    settings: Settings,
    names: Sequence[str],
    request: ErasureRequest,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
    rounds: int = MAX_ROUNDS,
    filesystem: fs.FileSystem | None = None,
) -> RequestAudit:
    """Erases the request's subjects from the pipelines' tables and dead-letter tables.

    Args:
        spark: A session hosting the pipelines' one format.
        settings: Parsed settings.
        names: The pipelines (each with a ``privacy`` section).
        request: The request id and the subjects' values.
        clock: The current time (tests pin it).
        rounds: Delete-purge-verify rounds per table before it fails.
        filesystem: The file system the verification reads (default: from the location).

    Returns:
        The request's audit (also appended to each pipeline's erasure-audit table).

    Raises:
        ConfigError: A pipeline has no privacy section, or a subject field is not a column
            of its table (nothing was done).
        SecretError: A pipeline's salt cannot be read (nothing was done).
    """
    started = clock()
    prepared = [_prepare(spark, settings, name) for name in names]
    for name, forget, _ in prepared:
        recorded = forget.record(
            spark,
            name,
            request_id=request.request_id,
            requested_at=started,
            subjects=request.subjects,
        )
        log.info(
            "%s: request %s %s the forget list (%d subjects)",
            name,
            request.request_id,
            "recorded in" if recorded else "was already in",
            len(request.subjects),
        )
    subjects = spark.createDataFrame([(s,) for s in request.subjects], "value string")
    audits: list[TableAudit] = []
    for name, _, targets in prepared:
        records = [
            _erase_table(
                spark, t, request, subjects, clock=clock, rounds=rounds, filesystem=filesystem
            )
            for t in targets
        ]
        write_audit(spark, settings.pipeline(name), records)
        audits.extend(records)
    return RequestAudit(request.request_id, len(request.subjects), started, clock(), tuple(audits))


def check_privacy(settings: Settings, name: str) -> ForgetList:
    """The pipeline's forget list, checked before any Spark work: a privacy section and a
    readable salt.

    Raises:
        ConfigError: The pipeline has no privacy section.
        SecretError: Its salt cannot be read.
    """
    pipeline = settings.pipeline(name)
    if pipeline.privacy is None:
        raise ConfigError(
            f"pipelines.{name}.privacy: expected a privacy section naming the subject fields, "
            "found none (the pipeline cannot be erased)"
        )
    forget = build_forget_list(pipeline, settings.aws)
    assert forget is not None
    return forget


def _prepare(
    spark: SparkSession, settings: Settings, name: str
) -> tuple[str, ForgetList, list[_Target]]:
    """Checks one pipeline and builds its forget list and erasure targets (nothing written)."""
    forget = check_privacy(settings, name)
    pipeline = settings.pipeline(name)
    privacy = pipeline.privacy
    assert privacy is not None
    built = build_pipeline(settings, name)
    table, dead_letter = pipeline_tables(pipeline)
    support = table_format(pipeline.sink.format)
    targets = []
    if table.exists(spark):
        columns = set(table.read(spark).columns)
        missing = [f for f in privacy.subject_fields if f not in columns]
        if missing:
            raise ConfigError(
                f"pipelines.{name}.privacy.subject_fields: expected columns of "
                f"{table.name} ({', '.join(sorted(columns))}), found {', '.join(missing)}"
            )
    key = KAFKA_KEY if privacy.key_is_subject else None
    targets.append(
        _Target(
            name,
            "table",
            pipeline.sink.format.value,
            table,
            support.maintenance(table),
            KAFKA_COORDINATES,
            tuple(privacy.subject_fields),
            lambda s, subjects: _table_rows_of(s, table, privacy.subject_fields, key, subjects),
        )
    )
    targets.append(
        _Target(
            name,
            "dead_letter",
            pipeline.sink.format.value,
            dead_letter,
            support.maintenance(dead_letter),
            DEAD_LETTER_COORDINATES,
            (),
            lambda s, _: _dead_letters_of(s, dead_letter, built, key is not None),
        )
    )
    return name, forget, targets


def _table_rows_of(
    spark: SparkSession,
    table: TableSink,
    fields: Sequence[str],
    key: str | None,
    subjects: DataFrame,
) -> tuple[DataFrame, int]:
    """The Kafka coordinates of the table's rows of the subjects (compared as text)."""
    rows = table.read(spark)
    expressions = subject_values(fields=fields, key_column=key if key in rows.columns else None)
    doomed = (
        rows.transform(flag_matches(expressions=expressions, values=subjects, flag=_DOOMED))
        .where(F.col(_DOOMED))
        .select(*KAFKA_COORDINATES)
        .distinct()
        .localCheckpoint(eager=True)
    )
    return doomed, 0


def _dead_letters_of(
    spark: SparkSession, dead_letter: TableSink, pipeline: Pipeline, keyed: bool
) -> tuple[DataFrame, int]:
    """The coordinates of the dead letters of forgotten subjects, decoded with the pipeline's
    decoder (which flags them by the forget list), and how many cannot be checked."""
    letters = dead_letter.read(spark).where(F.col("value").isNotNull() | F.col("key").isNotNull())
    with pipeline.decoder.decode(
        letters.transform(kafka_rows_from_dead_letters()), cache_rows=True
    ) as decoded:
        rows = decoded.rows
        doomed = (
            rows.where(F.col(FORGOTTEN))
            .select(
                *[
                    F.col(k).alias(c)
                    for k, c in zip(KAFKA_COORDINATES, DEAD_LETTER_COORDINATES, strict=True)
                ]
            )
            .distinct()
            .localCheckpoint(eager=True)
        )
        # a value that did not decode may be anyone's; a tombstone (no value) holds only its
        # key, which names a subject only with key_is_subject (and was then checked)
        unchecked = (
            F.col(ERROR_CLASS).isNotNull() & ~F.col(FORGOTTEN) & F.col(KAFKA_VALUE).isNotNull()
        )
        if keyed:
            unchecked &= F.col(KAFKA_KEY).isNull()
        unverifiable = rows.where(unchecked).count()
    return doomed, int(unverifiable)


def _erase_table(
    spark: SparkSession,
    target: _Target,
    request: ErasureRequest,
    subjects: DataFrame,
    *,
    clock: Callable[[], dt.datetime],
    rounds: int,
    filesystem: fs.FileSystem | None,
) -> TableAudit:
    """Deletes, purges and verifies one table, round after round until it is clean."""
    sink = target.sink
    started = clock()
    record = TableAudit(
        request.request_id,
        target.pipeline,
        sink.name,
        target.role,
        target.format,
        Status.ABSENT.value,
        len(request.subjects),
        started,
        started,
    )
    if not sink.exists(spark):
        return dataclasses.replace(record, ended_at=clock())
    query = forget_query_id(request.request_id)
    already = sink.last_committed_batch(spark, query) is not None
    totals = EraseOutcome()
    scan = ScanResult()
    unverifiable = 0
    done = 0
    try:
        target.maintenance.check(spark)
        location = table_location(spark, sink)
        for done in range(1, rounds + 1):
            if done > 1 or not already:
                doomed, unverifiable = target.doomed(spark, subjects)
                if not doomed.isEmpty():
                    last = sink.last_committed_batch(spark, query)
                    commit = CommitInfo(
                        target.pipeline,
                        query,
                        0 if last is None else last + 1,
                        sink.carried_forward(spark),
                    )
                    totals = _add(
                        totals,
                        _retry(
                            target.maintenance,
                            functools.partial(
                                target.maintenance.delete_rows,
                                spark,
                                doomed,
                                on=target.on,
                                commit=commit,
                            ),
                            clock,
                        ),
                    )
            if done > 1 or not already:
                # also without a delete of its own: older versions may hold rows deleted
                # before (a CDC delete, a hand-written DELETE)
                last = sink.last_committed_batch(spark, query)
                commit = CommitInfo(target.pipeline, query, last or 0, sink.carried_forward(spark))
                totals = _add(
                    totals,
                    _retry(
                        target.maintenance,
                        functools.partial(target.maintenance.purge, spark, commit=commit),
                        clock,
                    ),
                )
            scan = scan_location(
                location, request.subjects, fields=target.fields, filesystem=filesystem
            )
            if not scan.hits:
                break
            log.warning(
                "%s: request %s: %d files still hold a subject after round %d of %d",
                sink.name,
                request.request_id,
                len(scan.hits),
                done,
                rounds,
            )
    except Exception as err:
        log.error("%s: request %s failed: %s", sink.name, request.request_id, first_line(err))
        return dataclasses.replace(
            record,
            status=Status.FAILED.value,
            ended_at=clock(),
            rounds=done,
            error=first_line(err),
            **_counts(totals),
        )
    status = Status.ALREADY_DONE if already and done == 1 else Status.DONE
    error = None
    if scan.hits:
        status = Status.FAILED
        error = (
            f"{len(scan.hits)} files still hold a subject's value after {done} rounds: "
            + ", ".join(scan.hits[:20])
        )
        log.error("%s: request %s: %s", sink.name, request.request_id, error)
    return dataclasses.replace(
        record,
        status=status.value,
        ended_at=clock(),
        rounds=done,
        unverifiable_dead_letters=unverifiable,
        files_scanned=scan.files,
        bytes_scanned=scan.bytes,
        hits=len(scan.hits),
        hit_files=scan.hits,
        error=error,
        details={
            **totals.details,
            **({"unparsed_files": list(scan.unparsed[:20])} if scan.unparsed else {}),
        },
        **_counts(totals),
    )


def _add(totals: EraseOutcome, outcome: EraseOutcome) -> EraseOutcome:
    """A table's totals with one more step's counts (details merged, the step's win)."""
    return EraseOutcome(
        totals.rows_deleted + outcome.rows_deleted,
        totals.files_rewritten + outcome.files_rewritten,
        totals.snapshots_expired + outcome.snapshots_expired,
        totals.files_removed + outcome.files_removed,
        {**totals.details, **outcome.details},
    )


def _counts(totals: EraseOutcome) -> dict[str, Any]:
    """The totals as the audit's fields."""
    return {
        "rows_deleted": totals.rows_deleted,
        "files_rewritten": totals.files_rewritten,
        "snapshots_expired": totals.snapshots_expired,
        "files_removed": totals.files_removed,
    }


def _retry(
    maintenance: TableMaintenance,
    step: Callable[..., EraseOutcome],
    clock: Callable[[], dt.datetime],
) -> EraseOutcome:
    """Runs a step (given ``now``), again after a lost commit race (the stream committed
    first)."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return step(now=clock())
        except Exception as err:
            if attempt == CONFLICT_ATTEMPTS or not maintenance.is_conflict(err):
                raise
            log.warning(
                "%s: erasure lost a commit race (attempt %d of %d), retrying: %s",
                maintenance.name,
                attempt,
                CONFLICT_ATTEMPTS,
                first_line(err),
            )
            time.sleep(CONFLICT_BACKOFF_S * attempt)
    raise AssertionError("unreachable")


def table_location(spark: SparkSession, sink: TableSink) -> str:
    """Where the table's files are: its configured location, or where its catalog put it."""
    if sink.spec.location is not None:
        return sink.spec.location
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {sink.name}").collect()
    for row in rows:
        if str(row["col_name"]).strip() == "Location":
            return str(row["data_type"])
    raise ErasureError(f"{sink.name}: expected a Location in DESCRIBE TABLE EXTENDED, found none")


def write_audit(spark: SparkSession, pipeline: PipelineSettings, records: list[TableAudit]) -> None:
    """Appends the records to the pipeline's erasure-audit table (the pipeline's format).

    Raises:
        ErasureError: The audit table cannot be written.
    """
    if not records:
        return
    audit = pipeline.erasure_audit
    sink = side_table(pipeline.sink.format, audit)
    rows = spark.createDataFrame([r.as_row() for r in records], AUDIT_SCHEMA)
    first = records[0]
    try:
        sink.prepare(spark, rows.schema)
        # one commit per run and pipeline: a rerun of the request is audited again
        sink.append(
            rows,
            CommitInfo(first.pipeline, f"audit-{first.request_id}-{first.ended_at.timestamp()}", 0),
        )
    except Exception as err:
        raise ErasureError(
            f"{audit.table}: cannot record the erasure audit: {first_line(err)}"
        ) from err
