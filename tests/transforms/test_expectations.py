from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from transforms.expectations import Action, Expectation, count_violations, flag_dropped

SCHEMA = "id long, amount double, _error_class string, _error_message string"
ROW_SCHEMA = StructType(
    [
        StructField("id", LongType()),
        StructField("amount", DoubleType()),
        StructField("_error_class", StringType()),
        StructField("_error_message", StringType()),
    ]
)
CHECKS = [
    Expectation("positive_amount", "amount > 0", Action.DROP),
    Expectation("small_id", "id < 100", Action.WARN),
    Expectation("id_present", "id IS NOT NULL", Action.DROP),
]


def test_flag_dropped_marks_first_failed_drop_expectation(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (1, 5.0, None, None),
            (2, -1.0, None, None),
            (None, None, None, None),
            (500, 1.0, None, None),
            (3, -2.0, "DECODE_ERROR", "bad body"),
        ],
        SCHEMA,
    )
    expected = spark.createDataFrame(
        [
            (1, 5.0, None, None),
            (2, -1.0, "EXPECTATION_FAILED", "expectation 'positive_amount' failed: amount > 0"),
            # null amount: the check is null, which counts as failed
            (None, None, "EXPECTATION_FAILED", "expectation 'positive_amount' failed: amount > 0"),
            (500, 1.0, None, None),  # warn-only expectations never drop
            (3, -2.0, "DECODE_ERROR", "bad body"),
        ],
        SCHEMA,
    )
    actual = df.transform(flag_dropped(expectations=CHECKS)).drop("_expectation_message")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_flag_dropped_without_drop_expectations_is_identity(spark: SparkSession) -> None:
    # rows 1 and 2 fail "amount > 0" (negative, null): a drop with that expression flags them
    df = spark.createDataFrame(
        [
            (1, -5.0, None, None),
            (2, None, None, None),
            (3, 5.0, None, None),
            (4, -1.0, "DECODE_ERROR", "bad body"),
        ],
        ROW_SCHEMA,
    )
    warn_only = [Expectation("w", "amount > 0", Action.WARN)]
    expected = spark.createDataFrame(
        [
            (1, -5.0, None, None),
            (2, None, None, None),
            (3, 5.0, None, None),
            (4, -1.0, "DECODE_ERROR", "bad body"),
        ],
        ROW_SCHEMA,
    )
    actual = df.transform(flag_dropped(expectations=warn_only))
    assert_df_equality(actual, expected)


def test_count_violations_counts_decoded_rows_per_expectation(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (1, 5.0, None, None),
            (500, -1.0, "EXPECTATION_FAILED", "x"),
            (None, 2.0, None, None),
            (900, -9.0, "DECODE_ERROR", "not decoded: not counted"),
        ],
        SCHEMA,
    )
    actual = df.transform(count_violations(expectations=CHECKS))
    expected = spark.createDataFrame(
        [(1, 2, 1)], "positive_amount long, small_id long, id_present long"
    )
    assert_df_equality(actual, expected, ignore_nullable=True)
