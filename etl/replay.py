"""Re-ingest dead-lettered records (e.g. after a schema was fixed in the registry).

Exactly once without a checkpoint, for every table format, through the same decode and
commit path as the stream:

1. **Claim**: the pipeline's dead letters not yet replayed get this run's ``replay_id``
   (one ``UPDATE``). A run that finds an unfinished claim (a crash) resumes it instead.
2. **Commit**: the claimed records are decoded; those that now decode are committed to the
   table as batch 0 of the query ``replay-<replay_id>`` — idempotent like any batch, so a
   resumed claim whose commit landed is not appended twice.
3. **Settle**: records that still fail are released (their claim cleared with one MERGE:
   they stay as they were, ready for a later replay); the rest are marked ``replayed_at``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from etl.formats.base import CommitInfo
from transforms.columns import ERROR_CLASS, KAFKA_COORDINATES
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
    mine = f"pipeline = '{pipeline.name}' AND replayed_at IS NULL"
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
        dlq.update(
            spark,
            assignments={"replay_id": _sql_string(replay_id)},
            where=f"{condition} AND ({where})" if where else condition,
        )
    claimed = f"{mine} AND replay_id = {_sql_string(replay_id)}"
    # several dead letters of one record (a new checkpoint re-read the topic) replay once
    rows = spark.table(dlq.name).where(F.expr(claimed)).dropDuplicates(list(COORDINATES))
    commit = CommitInfo(pipeline.name, f"replay-{replay_id}", 0, {REPLAY_ID_KEY: replay_id})
    with pipeline.decoder.decode(
        rows.transform(kafka_rows_from_dead_letters()), cache_rows=True
    ) as decoded:
        counts, committed = pipeline.committer.commit_table(decoded, commit)
        failed = decoded.rows.where(F.col(ERROR_CLASS).isNotNull())
        still = {r[0]: int(r[1]) for r in failed.groupBy(ERROR_CLASS).count().collect()}
        if counts.dead:
            dlq.update_matching(
                failed.select(
                    *[
                        F.col(k).alias(c)
                        for k, c in zip(KAFKA_COORDINATES, COORDINATES, strict=True)
                    ]
                ),
                on=COORDINATES,
                assignments={"replay_id": "NULL"},
                where=f"t.pipeline = '{pipeline.name}' AND t.replay_id = {_sql_string(replay_id)}",
            )
        marked = spark.table(dlq.name).where(F.expr(claimed)).count()
        dlq.update(spark, assignments={"replayed_at": _sql_timestamp(now)}, where=claimed)
        result = ReplayResult(
            replay_id,
            decoded.read,
            decoded.read - counts.dead if committed else 0,
            marked,
            still,
            resumed,
        )
    log.info("replay %s: %s", pipeline.name, result)
    return result


def _sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_timestamp(moment: dt.datetime) -> str:
    """A SQL timestamp literal in UTC (the session time zone)."""
    return f"TIMESTAMP '{moment.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"
