"""Replaying dead letters into the table, exactly once (batch tests, no broker needed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pyspark.sql import SparkSession

from devtools.sample_data import orders
from devtools.wire import encode_glue
from etl.exceptions import ConfigError
from etl.replay import replay_dead_letters
from tests.etl.test_pipeline import SCHEMA, _frames, _kafka_batch, _pipeline

LATE = "5a1e0000-0000-4000-8000-00000000001a"  # registered only after the records arrived
NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


def test_replay_dead_letters_appends_once_and_marks(spark: SparkSession) -> None:
    good = orders(3)
    late = orders(4, start=10)
    corrupt = encode_glue(b"\x07" * 30, LATE)
    values = _frames(good) + _frames(late, SCHEMA, LATE) + [corrupt]
    first = _pipeline("replay_me").process(_kafka_batch(spark, values), 0, query_id="q")
    assert (first.written, first.dead_lettered) == (3, 5)

    # the schema is now in the registry: a fresh processor resolves it
    fixed = _pipeline("replay_me", schemas={LATE: SCHEMA})
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


class _Crash(RuntimeError):
    """A simulated crash of the replay job."""


def test_replay_after_a_crash_before_marking_appends_nothing_twice(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = orders(2, start=20)
    _pipeline("replay_crash").process(
        _kafka_batch(spark, _frames(late, SCHEMA, LATE)), 0, query_id="q"
    )
    fixed = _pipeline("replay_crash", schemas={LATE: SCHEMA})
    dlq = fixed.committer.dead_letter
    claim = dlq.update
    calls: list[str] = []

    def dies_when_settling(spark: SparkSession, *, assignments: Any, where: str) -> None:
        calls.append(where)
        if "replayed_at" in assignments:  # the table commit has landed by now
            raise _Crash("killed before marking")
        claim(spark, assignments=assignments, where=where)

    monkeypatch.setattr(dlq, "update", dies_when_settling)
    with pytest.raises(_Crash):
        replay_dead_letters(spark, fixed, replay_id="r1", now=NOW)
    assert spark.table("local.unit.replay_crash").count() == 2
    monkeypatch.undo()

    # a restarted job (fresh pipeline) finds the unfinished claim and finishes it
    result = replay_dead_letters(
        spark, _pipeline("replay_crash", schemas={LATE: SCHEMA}), replay_id="r2", now=NOW
    )

    assert (result.replay_id, result.resumed) == ("r1", True)
    assert (result.candidates, result.appended, result.marked) == (2, 0, 2)
    assert sorted(
        r[0] for r in spark.table("local.unit.replay_crash").select("order_id").collect()
    ) == ["o-20", "o-21"]
    marks = spark.table("local.unit.replay_crash_dlq").select("replay_id", "replayed_at")
    assert [tuple(r) for r in marks.collect()] == [("r1", NOW.replace(tzinfo=None))] * 2


def test_replay_after_a_crash_before_the_table_commit_appends_once(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = orders(2, start=40)
    _pipeline("replay_early").process(
        _kafka_batch(spark, _frames(late, SCHEMA, LATE)), 0, query_id="q"
    )
    fixed = _pipeline("replay_early", schemas={LATE: SCHEMA})

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise _Crash("killed after claiming")

    monkeypatch.setattr(fixed.committer, "commit_table", dies)
    with pytest.raises(_Crash):
        replay_dead_letters(spark, fixed, replay_id="r1", now=NOW)
    assert not spark.catalog.tableExists("local.unit.replay_early")

    result = replay_dead_letters(
        spark, _pipeline("replay_early", schemas={LATE: SCHEMA}), replay_id="r2", now=NOW
    )
    assert (result.replay_id, result.resumed, result.appended, result.marked) == (
        "r1",
        True,
        2,
        2,
    )
    again = replay_dead_letters(
        spark, _pipeline("replay_early", schemas={LATE: SCHEMA}), replay_id="r3", now=NOW
    )
    assert (again.resumed, again.candidates, again.appended) == (False, 0, 0)
    assert spark.table("local.unit.replay_early").count() == 2


def test_replay_where_filter_limits_the_candidates(spark: SparkSession) -> None:
    late = orders(3, start=30)
    _pipeline("replay_where").process(
        _kafka_batch(spark, _frames(late, SCHEMA, LATE)), 0, query_id="q"
    )
    fixed = _pipeline("replay_where", schemas={LATE: SCHEMA})
    result = replay_dead_letters(spark, fixed, replay_id="r1", now=NOW, where="offset = 1")
    assert (result.candidates, result.appended, result.marked) == (1, 1, 1)
    assert [r[0] for r in spark.table("local.unit.replay_where").select("order_id").collect()] == [
        "o-31"
    ]


def test_replay_resumed_after_its_commit_marks_what_it_committed_only(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "5a1e0000-0000-4000-8000-00000000002b"  # registered only after the crash
    values = _frames(orders(2, start=50), SCHEMA, LATE) + _frames(
        orders(1, start=52), SCHEMA, other
    )
    _pipeline("replay_changed").process(_kafka_batch(spark, values), 0, query_id="q")
    first = _pipeline("replay_changed", schemas={LATE: SCHEMA})
    dlq = first.committer.dead_letter
    claim = dlq.update

    def dies_when_marking(spark: SparkSession, *, assignments: Any, where: str) -> None:
        if "replayed_at" in assignments:
            raise _Crash("killed before marking")
        claim(spark, assignments=assignments, where=where)

    monkeypatch.setattr(dlq, "update", dies_when_marking)
    with pytest.raises(_Crash):
        replay_dead_letters(spark, first, replay_id="r1", now=NOW)
    monkeypatch.undo()

    # the third record's schema arrives before the resume: it was released, not committed,
    # so the resume must not mark it
    both = {LATE: SCHEMA, other: SCHEMA}
    resumed = replay_dead_letters(spark, _pipeline("replay_changed", schemas=both), now=NOW)
    assert (resumed.replay_id, resumed.resumed, resumed.appended, resumed.marked) == (
        "r1",
        True,
        0,
        2,
    )
    later = replay_dead_letters(
        spark, _pipeline("replay_changed", schemas=both), replay_id="r2", now=NOW
    )
    assert (later.resumed, later.candidates, later.appended, later.marked) == (False, 1, 1, 1)
    ids = sorted(r[0] for r in spark.table("local.unit.replay_changed").collect() if r[0])
    assert ids == ["o-50", "o-51", "o-52"]


def test_replay_where_must_be_one_expression(spark: SparkSession) -> None:
    _pipeline("replay_inject").process(
        _kafka_batch(spark, _frames(orders(1, start=60), SCHEMA, LATE)), 0, query_id="q"
    )
    with pytest.raises(ConfigError, match=r"^--where: expected one boolean SQL expression"):
        replay_dead_letters(
            spark, _pipeline("replay_inject"), now=NOW, where="offset = 0) OR (true"
        )
