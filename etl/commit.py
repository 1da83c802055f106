"""Committing one decoded batch: the table rows, the dead letters, and the counts.

``BatchCommitter`` is the one place that decides whether a batch landed before (idempotency
per (query id, batch id), asked of each table once per process), and the one place that
counts. Counting is exact for any sink by construction:

- a sink that reads its input in one action (``TableSink.reads_input_once``) gets the rows
  with an ``observe`` on them, and the counts are taken only if the observed total equals the
  records read (a writer that ran a partial job first, or never ran the plan, would otherwise
  report too few); if it does not, or nothing was observed within ``observe_timeout_s``, the
  rows are counted again with an aggregate;
- any other sink gets the decoded rows cached and counted before it writes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.observation import Observation

from etl.decoding import DecodedBatch
from etl.exceptions import ExpectationFailedError
from etl.formats.base import OFFSETS_KEY, READER_SCHEMA_KEY, CommitInfo, TableSink
from etl.offsets import ranges_json
from transforms.columns import DELETE_FLAG, ERROR_CLASS, FORGOTTEN, RESET_OFFSET
from transforms.expectations import Action, Expectation, violation_counts, violation_key
from transforms.routing import dead_letter_rows, table_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

RECORDS_READ_KEY = "etl.records-read"
RECORDS_WRITTEN_KEY = "etl.records-written"
RECORDS_DEAD_KEY = "etl.records-dead-lettered"
RECORDS_FORGOTTEN_KEY = "etl.records-forgotten"
_DEAD = "etl.dead"
_FORGOTTEN = "etl.forgotten"
_TOTAL = "etl.total"


@dataclass(frozen=True)
class BatchResult:
    """Counts of one micro-batch; read == written + dead_lettered + forgotten always holds."""

    batch_id: int
    read: int
    written: int
    dead_lettered: int
    # whether this run committed anything (False for a batch that had landed before)
    committed: bool
    violations: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # records of subjects in the forget list: dropped before any write
    forgotten: int = 0


@dataclass(frozen=True)
class Counts:
    """What a pass over a batch's decoded rows counted."""

    total: int
    dead: int
    violations: dict[str, int]
    forgotten: int = 0


@dataclass
class BatchCommitter:
    """Commits decoded batches of one pipeline to its table and dead-letter table."""

    pipeline: str
    table: TableSink
    dead_letter: TableSink
    expectations: tuple[Expectation, ...] = ()
    # how long to wait for observed counts after the write returned (they arrive through
    # Spark's listener bus, a little after the job); past it the rows are counted again
    observe_timeout_s: float = 30.0
    # highest batch id per (table, query id) known to have landed, read once per process
    _landed: dict[tuple[str, str], int | None] = field(default_factory=dict, repr=False)
    # the reader schema this process last recorded in a table commit
    _stored_schema: str | None = field(default=None, repr=False)

    def commit(
        self, decoded: DecodedBatch, commit: CommitInfo, *, ingested_at: dt.datetime
    ) -> BatchResult:
        """Commits the good rows to the table and the failed ones to the dead-letter table.

        A ``fail`` expectation is checked first (one more pass) so nothing is committed
        when it is violated. Both commits carry the Kafka offsets read (lineage); the table
        commit the records read and the reader schema; the dead-letter commit of the same
        batch every count.

        Raises:
            ExpectationFailedError: A ``fail`` expectation was violated (nothing committed).
        """
        if decoded.offsets:
            commit = commit.with_extra(**{OFFSETS_KEY: ranges_json(decoded.offsets)})
        counts, committed = self.commit_table(decoded, commit)
        written = decoded.read - counts.dead - counts.forgotten
        if counts.dead:
            extra = {
                RECORDS_READ_KEY: str(decoded.read),
                RECORDS_WRITTEN_KEY: str(written),
                RECORDS_DEAD_KEY: str(counts.dead),
                RECORDS_FORGOTTEN_KEY: str(counts.forgotten),
                **{f"etl.expectation.{k}.violations": str(v) for k, v in counts.violations.items()},
            }
            rows = decoded.rows.transform(
                dead_letter_rows(
                    pipeline=self.pipeline, batch_id=commit.batch_id, ingested_at=ingested_at
                )
            )
            committed |= self._append(self.dead_letter, rows, commit.with_extra(**extra))
        return BatchResult(
            commit.batch_id,
            decoded.read,
            written,
            counts.dead,
            committed,
            counts.violations,
            forgotten=counts.forgotten,
        )

    def commit_table(self, decoded: DecodedBatch, commit: CommitInfo) -> tuple[Counts, bool]:
        """Commits only the good rows (unless this batch landed before) and counts the batch.

        ``fail`` expectations are checked first (one more pass), ``warn`` ones logged after.

        Returns:
            The counts and whether a table commit was made now.

        Raises:
            ExpectationFailedError: A ``fail`` expectation was violated (nothing committed).
        """
        if any(e.action is Action.FAIL for e in self.expectations):
            self._raise_failed(self._aggregate(decoded.rows))
        counts, committed = self._commit_good_rows(decoded, commit)
        self._warn(counts)
        return counts, committed

    def _commit_good_rows(self, decoded: DecodedBatch, commit: CommitInfo) -> tuple[Counts, bool]:
        """The table commit, counting the batch on the way (see the module doc)."""
        rows = decoded.rows
        extra = {RECORDS_READ_KEY: str(decoded.read)}
        if decoded.reader_schema != self._stored_schema:
            # recorded when it changed (and once per process): a restart reads the newest
            # commit carrying it, and every snapshot summary need not repeat it
            extra[READER_SCHEMA_KEY] = decoded.reader_schema
        commit = commit.with_extra(**extra)
        # an all-failed batch skips the table commit (it would be empty); finding the first
        # good row is a small job
        if self.landed(self.table, rows.sparkSession, commit) or not rows.transform(
            table_rows()
        ).take(1):
            return self._aggregate(rows), False
        upsert = self.table.spec.upsert
        if upsert is not None or not self.table.reads_input_once:
            # an upsert reads the batch more than once (the winner per key, then the MERGE);
            # rows a caller cached already (replay) stay cached for it
            owned = not rows.storageLevel.useMemory and not rows.storageLevel.useDisk
            cached = rows.persist(StorageLevel.MEMORY_AND_DISK) if owned else rows
            try:
                counts = self._aggregate(cached)
                good = cached.transform(table_rows())
                self._append(self.table, good, commit)
            finally:
                if owned:
                    cached.unpersist()
            return counts, True
        observation = Observation(f"etl-{self.pipeline}-{commit.batch_id}-{uuid.uuid4()}")
        observed = rows.observe(observation, *self._metrics(rows))
        try:
            self._append(self.table, observed.transform(table_rows()), commit)
        except Exception:
            _unregister(getattr(observation, "_jo", None))
            raise
        counted = _observed(observation, timeout_s=self.observe_timeout_s)
        if counted is not None and int(counted[_TOTAL]) == decoded.read:
            return self._counts(counted), True
        log.warning(
            "%s: batch %d: the sink did not report complete observed counts; counting again",
            self.pipeline,
            commit.batch_id,
        )
        return self._aggregate(rows), True

    def landed(self, sink: TableSink, spark: SparkSession, commit: CommitInfo) -> bool:
        """Whether this batch (or a later one) of the query already landed in the sink's table."""
        key = (sink.name, commit.query_id)
        if key not in self._landed:
            self._landed[key] = sink.last_committed_batch(spark, commit.query_id)
        last = self._landed[key]
        return last is not None and commit.batch_id <= last

    def _append(self, sink: TableSink, rows: DataFrame, commit: CommitInfo) -> bool:
        """Writes unless the batch landed before; True if it committed now."""
        if self.landed(sink, rows.sparkSession, commit):
            log.info("%s: batch %d already committed, skipping replay", sink.name, commit.batch_id)
            return False
        sink.prepare(rows.sparkSession, rows.drop(DELETE_FLAG, RESET_OFFSET).schema)
        key = (sink.name, commit.query_id)
        try:
            sink.write(rows, commit)
        except Exception:
            # the commit may have landed before the error (commit state unknown): ask the
            # table again next time instead of trusting what this process knew
            self._landed.pop(key, None)
            raise
        self._landed[key] = commit.batch_id
        if sink is self.table and READER_SCHEMA_KEY in commit.extra:
            self._stored_schema = commit.extra[READER_SCHEMA_KEY]
        return True

    def _metrics(self, rows: DataFrame) -> list[Column]:
        """The batch's counts as aggregate columns (for ``agg`` or ``observe``)."""
        forgotten = F.col(FORGOTTEN) if FORGOTTEN in rows.columns else F.lit(False)
        return [
            F.count(F.lit(1)).alias(_TOTAL),
            F.count(F.when(F.col(ERROR_CLASS).isNotNull() & ~forgotten, 1)).alias(_DEAD),
            F.count(F.when(forgotten, 1)).alias(_FORGOTTEN),
            *violation_counts(
                expectations=self.expectations,
                exempt=DELETE_FLAG if self.table.spec.upsert is not None else None,
            ),
        ]

    def _aggregate(self, rows: DataFrame) -> Counts:
        """Counts with one aggregate job."""
        row = rows.agg(*self._metrics(rows)).first()
        assert row is not None, "an aggregate without grouping returns one row"
        return self._counts(row.asDict())

    def _counts(self, counted: Mapping[str, Any]) -> Counts:
        """Counts from an aggregate's or an observation's values."""
        return Counts(
            int(counted[_TOTAL]),
            int(counted[_DEAD]),
            {e.name: int(counted[violation_key(e)]) for e in self.expectations},
            int(counted[_FORGOTTEN]),
        )

    def _raise_failed(self, counts: Counts) -> None:
        """Raises for the first violated ``fail`` expectation."""
        for e in self._violated(counts, Action.FAIL):
            raise ExpectationFailedError(
                f"pipeline {self.pipeline}: expectation '{e.name}' ({e.expr}) failed for "
                f"{counts.violations[e.name]} rows; batch not committed"
            )

    def _warn(self, counts: Counts) -> None:
        """Logs each violated ``warn`` expectation."""
        for e in self._violated(counts, Action.WARN):
            log.warning(
                "%s: expectation '%s' (%s) failed for %d rows (warn)",
                self.pipeline,
                e.name,
                e.expr,
                counts.violations[e.name],
            )

    def _violated(self, counts: Counts, action: Action) -> Sequence[Expectation]:
        """The expectations with this action that some rows violated."""
        return [e for e in self.expectations if e.action is action and counts.violations[e.name]]


def _observed(observation: Observation, *, timeout_s: float) -> dict[str, Any] | None:
    """The observation's values once they arrived, or None if none did within the timeout.

    ``Observation.get`` blocks for good when the observed plan never ran to completion in a
    Dataset action, so this polls the JVM object's ``metrics`` field instead; if that field
    cannot be read (another Spark version), it answers None and the caller counts again.
    """
    jo = getattr(observation, "_jo", None)
    if jo is None:
        return None
    try:
        metrics = jo.getClass().getDeclaredField("metrics")
        metrics.setAccessible(True)
        deadline = time.monotonic() + timeout_s
        while metrics.get(jo).isEmpty():
            if time.monotonic() > deadline:
                _unregister(jo)
                return None
            time.sleep(0.01)
    except Exception as err:  # py4j reflection errors: fall back to counting
        log.debug("observed metrics unreadable: %s", err)
        return None
    return dict(observation.get)


def _unregister(jo: Any) -> None:
    """Removes an observation's listener that will never fire (best effort)."""
    if jo is None:
        return
    try:
        method = jo.getClass().getDeclaredMethod("unregister", None)
        method.setAccessible(True)
        method.invoke(jo, None)
    except Exception as err:
        log.debug("could not unregister observation listener: %s", err)
