"""Re-ingest dead-lettered records (e.g. after a schema was fixed in the registry).

Exactly once without a checkpoint, for every table format, through the same decode and
commit path as the stream:

1. **Claim**: the pipeline's dead letters not yet replayed get this run's ``replay_id``
   (one ``UPDATE``). A run that finds an unfinished claim (a crash) resumes it instead.
2. **Release**: the claimed records are decoded; those that still fail are released (their
   claim cleared with one MERGE: they stay as they were, ready for a later replay). So from
   here on the claim holds exactly the records that go into the table.
3. **Commit**: those records are committed to the table as batch 0 of the query
   ``replay-<replay_id>``, idempotent like any batch.
4. **Mark**: every record still claimed is marked ``replayed_at``.

A resumed claim whose table commit landed goes straight to 4 without decoding again (a
schema registered, or an expectation changed, since the crash cannot change what it marks).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from etl.exceptions import ConfigError
from etl.formats.base import CommitInfo, TableSink
from transforms.columns import ERROR_CLASS, FORGOTTEN, KAFKA_COORDINATES
from transforms.routing import kafka_rows_from_dead_letters

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from etl.pipeline import Pipeline

log = logging.getLogger(__name__)

COORDINATES = ("topic", "partition", "offset")
REPLAY_ID_KEY = "etl.replay-id"


@dataclass(frozen=True)
class ReplayResult:
    """What one replay run did."""

    replay_id: str
    candidates: int
    appended: int
    marked: int
    still_failing: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    # records of forgotten subjects: marked replayed, never appended
    forgotten: int = 0


def replay_dead_letters(
    spark: SparkSession,
    pipeline: Pipeline,
    *,
    now: dt.datetime,
    where: str | None = None,
    replay_id: str | None = None,
) -> ReplayResult:
    """Replays a pipeline's unreplayed dead letters into its table, exactly once.

    Args:
        spark: The session.
        pipeline: The pipeline (decoder and committer with its table and dead-letter sinks).
        now: When the run happened (stored as ``replayed_at``).
        where: Optional extra SQL filter on the dead-letter table's columns (new claims only).
        replay_id: This run's id (default: a new UUID); an unfinished claim's id wins.

    Returns:
        Counts of the run.
    """
    dlq = pipeline.committer.dead_letter
    if not dlq.exists(spark):
        return ReplayResult(replay_id or "", 0, 0, 0)
    mine = f"pipeline = {_sql_string(pipeline.name)} AND replayed_at IS NULL"
    unfinished = [
        r[0]
        for r in spark.table(dlq.name)
        .where(F.expr(mine) & F.col("replay_id").isNotNull())
        .select("replay_id")
        .distinct()
        .collect()
    ]
    resumed = bool(unfinished)
    if resumed:
        replay_id = sorted(unfinished)[0]
        log.info("replay %s: resuming an unfinished claim", replay_id)
    else:
        replay_id = replay_id or str(uuid.uuid4())
        condition = f"{mine} AND replay_id IS NULL AND value IS NOT NULL"
        if where:
            _check_filter(spark, dlq, where)
            condition = f"{condition} AND ({where})"
        dlq.update(spark, assignments={"replay_id": _sql_string(replay_id)}, where=condition)
    claimed = f"{mine} AND replay_id = {_sql_string(replay_id)}"
    commit = CommitInfo(pipeline.name, f"replay-{replay_id}", 0, {REPLAY_ID_KEY: replay_id})
    if resumed and pipeline.committer.landed(pipeline.committer.table, spark, commit):
        marked = _mark(spark, dlq, claimed, now)
        result = ReplayResult(replay_id, marked, 0, marked, {}, resumed)
        log.info("replay %s: %s (its table commit had landed)", pipeline.name, result)
        return result
    # several dead letters of one record (a new checkpoint re-read the topic) replay once
    rows = spark.table(dlq.name).where(F.expr(claimed)).dropDuplicates(list(COORDINATES))
    with pipeline.decoder.decode(rows.transform(kafka_rows_from_dead_letters())) as decoding:
        # checkpointed: the release below rewrites the dead-letter table these rows are read
        # from, which would invalidate a cache of them and change what they hold
        decoded = dataclasses.replace(decoding, rows=decoding.rows.localCheckpoint(eager=True))
        forgotten = F.col(FORGOTTEN) if FORGOTTEN in decoded.rows.columns else F.lit(False)
        # a forgotten subject's dead letter is not released: the erasure deletes it
        failed = decoded.rows.where(F.col(ERROR_CLASS).isNotNull() & ~forgotten)
        still = {r[0]: int(r[1]) for r in failed.groupBy(ERROR_CLASS).count().collect()}
        if still:
            dlq.update_matching(
                failed.select(
                    *[
                        F.col(k).alias(c)
                        for k, c in zip(KAFKA_COORDINATES, COORDINATES, strict=True)
                    ]
                ),
                on=COORDINATES,
                assignments={"replay_id": "NULL"},
                where=f"t.pipeline = {_sql_string(pipeline.name)} "
                f"AND t.replay_id = {_sql_string(replay_id)}",
            )
        counts, committed = pipeline.committer.commit_table(decoded, commit)
        marked = _mark(spark, dlq, claimed, now)
        result = ReplayResult(
            replay_id,
            decoded.read,
            decoded.read - counts.dead - counts.forgotten if committed else 0,
            marked,
            still,
            resumed,
            counts.forgotten,
        )
    log.info("replay %s: %s", pipeline.name, result)
    return result


def _check_filter(spark: SparkSession, dlq: TableSink, where: str) -> None:
    """Refuses a ``--where`` that is not one boolean expression over the dead-letter columns.

    It is pasted into SQL, so ``x) OR (true`` would otherwise widen the claim to other
    pipelines' rows; parsing it alone as an expression rejects that.
    """
    try:
        spark.table(dlq.name).where(F.expr(where))
    except Exception as err:
        if type(err).__name__ not in ("ParseException", "AnalysisException"):
            raise
        raise ConfigError(
            f"--where: expected one boolean SQL expression over the dead-letter table's "
            f"columns, found {where!r} ({str(err).splitlines()[0]})"
        ) from err


def _mark(spark: SparkSession, dlq: TableSink, claimed: str, now: dt.datetime) -> int:
    """Marks the claimed dead letters replayed; returns how many."""
    marked = spark.table(dlq.name).where(F.expr(claimed)).count()
    dlq.update(spark, assignments={"replayed_at": _sql_timestamp(now)}, where=claimed)
    return int(marked)


def _sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_timestamp(moment: dt.datetime) -> str:
    """A SQL timestamp literal of the instant (with its UTC offset: any session time zone)."""
    return f"TIMESTAMP '{moment.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00'"
