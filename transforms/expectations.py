"""Expectations: named SQL boolean expressions over decoded rows.

A row *violates* an expectation when the expression is false **or null** (a check on a
missing value fails; write ``col IS NULL OR ...`` to allow nulls). Actions:
``warn`` counts and logs, ``drop`` sends the row to the dead-letter table, ``fail`` stops the
query before anything of the batch is committed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms.columns import ERROR_CLASS, ERROR_MESSAGE
from transforms.errors import ErrorClass


class Action(enum.StrEnum):
    """What a violation does."""

    WARN = "warn"
    DROP = "drop"
    FAIL = "fail"


@dataclass(frozen=True)
class Expectation:
    """One named check (also the config model of ``pipelines.<name>.expectations``)."""

    name: str
    expr: str
    action: Action = Action.WARN


def _violates(expectation: Expectation) -> Column:
    """True when the row fails the check (false or null)."""
    return ~F.coalesce(F.expr(expectation.expr).cast("boolean"), F.lit(False))


def _checked_rows(exempt: str | None) -> Column:
    """Rows the expectations apply to: decoded ones, minus those ``exempt`` marks."""
    decoded = F.col(ERROR_CLASS).isNull() | (
        F.col(ERROR_CLASS) == ErrorClass.EXPECTATION_FAILED.value
    )
    if exempt is None:
        return decoded
    return decoded & ~F.coalesce(F.col(exempt), F.lit(False))


def flag_dropped(
    *, expectations: Sequence[Expectation], exempt: str | None = None
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform marking rows that violate a ``drop`` expectation as dead letters.

    The first violated ``drop`` expectation (in declaration order) names the error; rows that
    already failed earlier keep their error. Rows whose boolean column ``exempt`` is true are
    not checked (upsert deletes: a tombstone has no fields to check).
    """
    drops = [e for e in expectations if e.action is Action.DROP]

    def _transform(df: DataFrame) -> DataFrame:
        if not drops:
            return df
        message: Column = F.lit(None).cast("string")
        for expectation in reversed(drops):
            message = F.when(
                _violates(expectation),
                F.lit(f"expectation '{expectation.name}' failed: {expectation.expr}"),
            ).otherwise(message)
        ok = F.col(ERROR_CLASS).isNull() & _checked_rows(exempt)
        return df.withColumn("_expectation_message", F.when(ok, message)).select(
            *[c for c in df.columns if c not in (ERROR_CLASS, ERROR_MESSAGE)],
            F.when(
                F.col("_expectation_message").isNotNull(),
                F.lit(ErrorClass.EXPECTATION_FAILED.value),
            )
            .otherwise(F.col(ERROR_CLASS))
            .alias(ERROR_CLASS),
            F.coalesce(F.col("_expectation_message"), F.col(ERROR_MESSAGE)).alias(ERROR_MESSAGE),
        )

    return _transform


def violation_key(expectation: Expectation) -> str:
    """The name of an expectation's count in ``violation_counts`` / ``count_violations``."""
    return expectation.name


def violation_counts(
    *, expectations: Sequence[Expectation], exempt: str | None = None
) -> list[Column]:
    """Aggregate columns counting, per expectation, the decoded rows that violate it.

    For ``DataFrame.agg`` or ``DataFrame.observe``; each is a long named by
    ``violation_key``. Rows that failed before the expectations (framing, decoding), and rows
    whose boolean column ``exempt`` is true, are not counted.
    """
    checked = _checked_rows(exempt)
    return [
        F.count(F.when(checked & _violates(e), 1)).alias(violation_key(e)) for e in expectations
    ]


def count_violations(
    *, expectations: Sequence[Expectation], exempt: str | None = None
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform aggregating ``violation_counts`` into one row."""

    def _transform(df: DataFrame) -> DataFrame:
        return df.agg(*violation_counts(expectations=expectations, exempt=exempt))

    return _transform
