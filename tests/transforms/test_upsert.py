from __future__ import annotations

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from transforms.upsert import latest_per_key, mark_changes

FLAT = (
    "id long, op string, _kafka_key binary, _kafka_offset long, "
    "_error_class string, _error_message string"
)
MARKED = FLAT + ", _etl_delete boolean"


def test_mark_changes_flags_marker_deletes_and_missing_keys(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (1, "u", b"1", 0, None, None),
            (2, "d", b"2", 1, None, None),
            (None, "u", b"x", 2, None, None),  # no key
            (3, None, b"3", 3, None, None),  # null marker: not a delete
            (None, None, b"4", 4, "DECODE_ERROR", "bad"),  # failed before: untouched
        ],
        FLAT,
    )
    expected = spark.createDataFrame(
        [
            (1, "u", b"1", 0, None, None, False),
            (2, "d", b"2", 1, None, None, True),
            (None, "u", b"x", 2, "MISSING_KEY", "a key field is null (key: id)", False),
            (3, None, b"3", 3, None, None, False),
            (None, None, b"4", 4, "DECODE_ERROR", "bad", False),
        ],
        MARKED,
    )
    actual = df.transform(mark_changes(keys=["id"], delete_field="op", delete_value="d"))
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_mark_changes_turns_keyed_tombstones_into_deletes(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (None, None, b"42", 0, "NULL_VALUE", "record value is null (tombstone)"),
            (None, None, None, 1, "NULL_VALUE", "record value is null (tombstone)"),
            (None, None, b"not-a-number", 2, "NULL_VALUE", "record value is null (tombstone)"),
            (7, "u", b"7", 3, None, None),
        ],
        FLAT,
    )
    expected = spark.createDataFrame(
        [
            (42, None, b"42", 0, None, None, True),
            # no Kafka key: stays a dead letter
            (None, None, None, 1, "NULL_VALUE", "record value is null (tombstone)", False),
            # a key that is no id: the delete has no key
            (None, None, b"not-a-number", 2, "MISSING_KEY", "a key field is null (key: id)", False),
            (7, "u", b"7", 3, None, None, False),
        ],
        MARKED,
    )
    actual = df.transform(mark_changes(keys=["id"], tombstones=True))
    assert_df_equality(actual, expected, ignore_nullable=True)


def test_mark_changes_tombstones_need_one_key_field() -> None:
    with pytest.raises(ValueError, match=r"one key field, found \['a', 'b'\]"):
        mark_changes(keys=["a", "b"], tombstones=True)


def test_latest_per_key_keeps_the_newest_change(spark: SparkSession) -> None:
    schema = "id long, ts long, v string, _kafka_offset long, _etl_delete boolean"
    df = spark.createDataFrame(
        [
            (1, 10, "old", 0, False),
            (1, 20, "new", 1, False),
            (1, 15, "late", 2, False),  # arrives last, older ordering: loses
            (2, None, "null-ts", 3, False),
            (2, 1, "any-value-wins", 4, False),
            (3, 5, "first", 5, False),
            (3, 5, "same-ts-later-offset", 6, False),
            (4, None, "null-a", 7, False),
            (4, None, "null-b", 8, False),
            (5, 50, "before-the-tombstone", 9, False),
            (5, None, None, 10, True),  # a tombstone: log order decides for this key
            (6, 60, "newer-ordering-but-earlier", 11, False),
            (6, None, None, 12, True),
            (6, 1, "after-the-tombstone", 13, False),
            (7, 9, None, 14, True),  # a marker delete with ordering: the ordering rule
            (7, 8, "older", 15, False),
        ],
        schema,
    )
    # keys with a tombstone carry its offset: a table row from before it is gone
    expected = spark.createDataFrame(
        [
            (1, 20, "new", 1, False, None),
            (2, 1, "any-value-wins", 4, False, None),
            (3, 5, "same-ts-later-offset", 6, False, None),
            (4, None, "null-b", 8, False, None),
            (5, None, None, 10, True, 10),
            (6, 1, "after-the-tombstone", 13, False, 12),
            (7, 9, None, 14, True, None),
        ],
        schema + ", _etl_reset_offset long",
    )
    actual = df.transform(latest_per_key(keys=["id"], ordering="ts"))
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
