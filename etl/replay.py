"""Re-ingest dead-lettered records (e.g. after a schema was fixed in the registry).

Exactly once without a checkpoint: the records to replay are the dead letters of the
pipeline not yet marked ``replayed_at``. Those that now decode are appended to the table
*minus* any whose Kafka coordinates (topic, partition, offset) the table already holds —
one atomic Iceberg append — and then marked in the dead-letter table with one MERGE. A
crash between the two steps is repaired by the next run: the anti-join finds the rows
already appended, and the MERGE marks them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from etl.sinks import CommitInfo
from transforms.routing import kafka_rows_from_dead_letters, table_rows

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from etl.pipeline import BatchProcessor

log = logging.getLogger(__name__)

KEYS = ("topic", "partition", "offset")
TABLE_KEYS = ("_kafka_topic", "_kafka_partition", "_kafka_offset")
REPLAY_ID_KEY = "etl.replay-id"


@dataclass(frozen=True)
class ReplayResult:
    """What one replay run did."""

    replay_id: str
    candidates: int
    appended: int
    marked: int
    still_failing: dict[str, int] = field(default_factory=dict)


def replay_dead_letters(
    spark: SparkSession,
    processor: BatchProcessor,
    *,
    replay_id: str,
    now: dt.datetime,
    where: str | None = None,
) -> ReplayResult:
    """Replays a pipeline's unreplayed dead letters into its table, exactly once.

    Args:
        spark: The session.
        processor: The pipeline's processor (resolver, reader schema, expectations, sinks).
        replay_id: Identifies this run (stored on the snapshot and on the marked rows).
        now: When the run happened (stored as ``replayed_at``).
        where: Optional extra SQL filter on the dead-letter table's columns.

    Returns:
        Counts of the run.
    """
    dlq_table = processor.dead_letter.spec.table
    target = processor.sink.spec.table
    pending = spark.table(dlq_table).where(
        (F.col("pipeline") == processor.name)
        & F.col("replayed_at").isNull()
        & F.col("value").isNotNull()
    )
    if where:
        pending = pending.where(F.expr(where))
    # several dead letters of one record (a replay that failed again is not re-appended)
    pending = pending.dropDuplicates(list(KEYS))
    with processor.decoded(
        pending.transform(kafka_rows_from_dead_letters()), cache_rows=True
    ) as decoded:
        good = decoded.rows.transform(table_rows())
        still = {
            r["_error_class"]: int(r["count"])
            for r in decoded.rows.where(F.col("_error_class").isNotNull())
            .groupBy("_error_class")
            .count()
            .collect()
        }
        existing = (
            spark.table(target).select(*TABLE_KEYS) if spark.catalog.tableExists(target) else None
        )
        fresh = good.join(existing, list(TABLE_KEYS), "left_anti") if existing is not None else good
        fresh = fresh.persist()
        appended = fresh.count()
        if appended:
            processor.sink.ensure_table(spark, fresh.schema)
            processor.sink.append(
                fresh,
                CommitInfo(
                    processor.name,
                    query_id=f"replay-{replay_id}",
                    batch_id=0,
                    extra={REPLAY_ID_KEY: replay_id},
                ),
            )
        fresh.unpersist()
        # a local checkpoint cuts the lineage back to the dead-letter table, which MERGE
        # would otherwise see twice (as target and inside the source) and fail to resolve
        replayed = (
            good.select(*[F.col(t).alias(k) for t, k in zip(TABLE_KEYS, KEYS, strict=True)])
            .distinct()
            .localCheckpoint(eager=True)
        )
        replayed.createOrReplaceTempView("_etl_replayed")
        before = _unmarked(spark, dlq_table, processor.name)
        spark.sql(
            f"""
            MERGE INTO {dlq_table} d
            USING _etl_replayed r
            ON d.pipeline = '{processor.name}' AND d.topic = r.topic
               AND d.partition = r.partition AND d.offset = r.offset AND d.replayed_at IS NULL
            WHEN MATCHED THEN UPDATE SET
              d.replayed_at = TIMESTAMP '{now.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")}',
              d.replay_id = '{replay_id}'
            """
        )
        marked = before - _unmarked(spark, dlq_table, processor.name)
        candidates = decoded.read
    result = ReplayResult(replay_id, candidates, appended, marked, still)
    log.info("replay %s: %s", processor.name, result)
    return result


def _unmarked(spark: SparkSession, table: str, pipeline: str) -> int:
    """How many dead letters of the pipeline are not marked replayed."""
    return (
        spark.table(table)
        .where((F.col("pipeline") == pipeline) & F.col("replayed_at").isNull())
        .count()
    )
