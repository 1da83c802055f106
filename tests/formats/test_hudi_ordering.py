"""The Hudi sink's derived ordering text sorts exactly as the upsert rule orders changes.

Pure Spark expressions: this runs in the main test session (no Hudi needed).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from etl.exceptions import SinkError
from etl.formats.base import newer_condition
from etl.formats.hudi.sink import ORDERING, ordering_column
from transforms.columns import KAFKA_OFFSET

T = dt.datetime(2026, 11, 28, 12, 0)
CASES: dict[str, tuple[str, list[Any]]] = {
    "int": ("int", [None, -(2**31), -1, 0, 1, 7, 2**31 - 1]),
    "long": ("bigint", [None, -(2**63), -(2**40), 0, 2**40, 2**63 - 1]),
    "timestamp": ("timestamp", [None, dt.datetime(1969, 12, 31, 23, 59), T, T.replace(second=1)]),
    "date": ("date", [None, dt.date(1960, 1, 1), dt.date(2026, 11, 28), dt.date(2026, 11, 29)]),
    "string": ("string", [None, "", "a", "ab", "b", "é", "z" * 20]),
    "boolean": ("boolean", [None, False, True]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ordering_column_sorts_as_newer_condition(spark: SparkSession, case: str) -> None:
    type_, values = CASES[case]
    # every value at two offsets, so equal values are decided by the offset
    rows = [(i, v, offset) for i, v in enumerate(values) for offset in (3, 2**40)]
    df = spark.createDataFrame(rows, f"id int, ts {type_}, {KAFKA_OFFSET} bigint")
    df = df.withColumn(ORDERING, ordering_column(df, "ts"))
    pairs = df.alias("s").crossJoin(df.alias("t"))
    keys = [
        F.col(f"{side}.{c}").alias(f"{side}_{c}") for side in "st" for c in ("id", KAFKA_OFFSET)
    ]

    by_text = pairs.select(*keys, (F.col(f"s.{ORDERING}") > F.col(f"t.{ORDERING}")).alias("newer"))
    by_rule = pairs.select(*keys, F.expr(newer_condition("ts")).alias("newer"))

    assert_df_equality(by_text, by_rule, ignore_row_order=True, ignore_nullable=True)
    assert by_rule.where("newer").count() == len(rows) * (len(rows) - 1) // 2  # a total order


def test_ordering_column_refuses_a_type_it_cannot_spell(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1.5, 0)], f"ts double, {KAFKA_OFFSET} bigint")

    with pytest.raises(SinkError, match=r"ordering field ts: .* found double"):
        ordering_column(df, "ts")
