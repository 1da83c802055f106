from __future__ import annotations

import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from transforms.history import needed_commits

HISTORY = "committed_at timestamp, properties map<string,string>"
NEEDED = "needed_for string, committed_at timestamp"
T = dt.datetime(2026, 11, 29, 8, 0)


def _at(minutes: int) -> dt.datetime:
    return T + dt.timedelta(minutes=minutes)


def test_needed_commits_are_the_newest_of_each_query_and_the_newest_reader_schema(
    spark: SparkSession,
) -> None:
    history = spark.createDataFrame(
        [
            (_at(0), {"q": "a", "b": "0", "s": "{v1}"}),
            (_at(1), {"q": "a", "b": "1"}),
            (_at(2), {"q": "b", "b": "0", "s": "{v2}"}),
            (_at(3), {"q": "a", "b": "2"}),
            (_at(4), {}),  # a compaction: no query, no schema
            (_at(5), {"q": "b", "b": "1"}),
        ],
        HISTORY,
    )
    expected = spark.createDataFrame(
        [("query a", _at(3)), ("query b", _at(5)), ("reader schema", _at(2))], NEEDED
    )

    actual = history.transform(needed_commits(query_key="q", schema_key="s", carried_prefix="c."))

    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_needed_commits_of_a_history_without_batches_is_empty(spark: SparkSession) -> None:
    history = spark.createDataFrame([(_at(0), {}), (_at(1), {"other": "x"})], HISTORY)
    expected = spark.createDataFrame([], NEEDED)

    actual = history.transform(needed_commits(query_key="q", schema_key="s", carried_prefix="c."))

    assert_df_equality(actual, expected, ignore_nullable=True)


def test_needed_commits_count_a_batch_id_carried_forward_as_the_query_s_commit(
    spark: SparkSession,
) -> None:
    history = spark.createDataFrame(
        [
            (_at(0), {"q": "a", "b": "3", "s": "{v1}"}),
            (_at(1), {"q": "forget-r", "b": "0", "c.a": "3", "c.b": "7", "s": "{v1}"}),
            (_at(2), {"q": "b", "b": "8"}),
        ],
        HISTORY,
    )
    expected = spark.createDataFrame(
        [
            ("query a", _at(1)),
            ("query b", _at(2)),
            ("query forget-r", _at(1)),
            ("reader schema", _at(1)),
        ],
        NEEDED,
    )

    actual = history.transform(needed_commits(query_key="q", schema_key="s", carried_prefix="c."))

    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
