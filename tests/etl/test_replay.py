"""Replaying dead letters into the table, exactly once (batch tests, no broker needed)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession

from etl.replay import replay_dead_letters
from etl.sample_data import orders
from etl.wire import encode_glue
from tests.etl.test_pipeline import SCHEMA, _frames, _kafka_batch, _processor

LATE = "5a1e0000-0000-4000-8000-00000000001a"  # registered only after the records arrived
NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


def test_replay_dead_letters_appends_once_and_marks(spark: SparkSession) -> None:
    good = orders(3)
    late = orders(4, start=10)
    corrupt = encode_glue(b"\x07" * 30, LATE)
    values = _frames(good) + _frames(late, SCHEMA, LATE) + [corrupt]
    first = _processor("replay_me").process(_kafka_batch(spark, values), 0, query_id="q")
    assert (first.written, first.dead_lettered) == (3, 5)

    # the schema is now in the registry: a fresh processor resolves it
    fixed = _processor("replay_me", schemas={LATE: SCHEMA})
    result = replay_dead_letters(spark, fixed, replay_id="r1", now=NOW)

    assert (result.candidates, result.appended, result.marked) == (5, 4, 4)
    assert result.still_failing == {"DECODE_ERROR": 1}
    ids = sorted(r[0] for r in spark.table("local.unit.replay_me").select("order_id").collect())
    assert ids == sorted(r["order_id"] for r in good + late)
    marks = spark.sql(
        "SELECT offset, error_class, replay_id, replayed_at FROM local.unit.replay_me_dlq "
        "ORDER BY offset"
    ).collect()
    assert [tuple(r) for r in marks] == [
        (3, "UNKNOWN_SCHEMA", "r1", NOW.replace(tzinfo=None)),
        (4, "UNKNOWN_SCHEMA", "r1", NOW.replace(tzinfo=None)),
        (5, "UNKNOWN_SCHEMA", "r1", NOW.replace(tzinfo=None)),
        (6, "UNKNOWN_SCHEMA", "r1", NOW.replace(tzinfo=None)),
        # still failing: it stays unmarked (with the error it had when it was dead-lettered)
        (7, "UNKNOWN_SCHEMA", None, None),
    ]

    again = replay_dead_letters(spark, fixed, replay_id="r2", now=NOW)
    assert (again.candidates, again.appended, again.marked) == (1, 0, 0)
    assert spark.table("local.unit.replay_me").count() == 7


def test_replay_after_a_crash_before_marking_appends_nothing_twice(spark: SparkSession) -> None:
    late = orders(2, start=20)
    _processor("replay_crash").process(
        _kafka_batch(spark, _frames(late, SCHEMA, LATE)), 0, query_id="q"
    )
    fixed = _processor("replay_crash", schemas={LATE: SCHEMA})
    replay_dead_letters(spark, fixed, replay_id="r1", now=NOW)
    # as if the run had died after its append, before its MERGE marked the rows
    spark.sql("UPDATE local.unit.replay_crash_dlq SET replayed_at = NULL, replay_id = NULL")

    result = replay_dead_letters(spark, fixed, replay_id="r2", now=NOW)

    assert (result.candidates, result.appended, result.marked) == (2, 0, 2)
    assert spark.table("local.unit.replay_crash").count() == 2
    assert {
        r[0] for r in spark.table("local.unit.replay_crash_dlq").select("replay_id").collect()
    } == {"r2"}


def test_replay_where_filter_limits_the_candidates(spark: SparkSession) -> None:
    late = orders(3, start=30)
    _processor("replay_where").process(
        _kafka_batch(spark, _frames(late, SCHEMA, LATE)), 0, query_id="q"
    )
    fixed = _processor("replay_where", schemas={LATE: SCHEMA})
    result = replay_dead_letters(spark, fixed, replay_id="r1", now=NOW, where="offset = 1")
    assert (result.candidates, result.appended, result.marked) == (1, 1, 1)
    assert [r[0] for r in spark.table("local.unit.replay_where").select("order_id").collect()] == [
        "o-31"
    ]
