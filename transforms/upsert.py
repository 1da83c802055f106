"""Upsert batches: which rows delete their key, which lack one, and which one wins per key.

``mark_changes`` runs on decoded, flattened rows (before routing): it adds ``DELETE_FLAG``,
turns Kafka tombstones into deletes when asked, and dead-letters good rows without a key as
``MISSING_KEY``. ``latest_per_key`` runs on the table rows of a batch and keeps one row per
key, by the same rule the sinks apply against the table (``etl.formats.base.newer_condition``):
the larger ordering value wins, null loses to any value, equal values go to the larger Kafka
offset. A delete without an ordering value (every Kafka tombstone) is ordered by the Kafka
log instead: within a batch, a key with such a delete keeps its record of the largest offset,
and carries the tombstone's offset (``RESET_OFFSET``): a table row written from a smaller
offset is gone, so the kept record replaces it (or, being the tombstone, deletes it) whatever
its ordering value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from transforms.columns import (
    DELETE_FLAG,
    ERROR_CLASS,
    ERROR_MESSAGE,
    KAFKA_KEY,
    KAFKA_OFFSET,
    RESET_OFFSET,
)
from transforms.errors import ErrorClass

_ROW = "_etl_row"
_LOG_ORDER = "_etl_log_order"


def mark_changes(
    *,
    keys: Sequence[str],
    delete_field: str | None = None,
    delete_value: str | None = None,
    tombstones: bool = False,
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform marking deletes and key-less rows of an upsert batch.

    Args:
        keys: The record key fields.
        delete_field: A field whose value (as text) ``delete_value`` marks a delete.
        delete_value: See ``delete_field``.
        tombstones: Kafka tombstones (``NULL_VALUE`` rows) with a Kafka key become deletes of
            that key (the key bytes read as UTF-8 and cast to the single key field's type).

    Returns:
        A function for ``df.transform(...)`` over a ``flatten_decoded`` frame.

    Raises:
        ValueError: ``tombstones`` with more than one key field.
    """
    if tombstones and len(keys) != 1:
        raise ValueError(f"tombstones as deletes need one key field, found {list(keys)}")

    def _transform(df: DataFrame) -> DataFrame:
        good = F.col(ERROR_CLASS).isNull()
        marked: Column = F.lit(False)
        if delete_field is not None:
            marked = F.coalesce(F.col(delete_field).cast("string") == F.lit(delete_value), marked)
        columns = {c: F.col(c) for c in df.columns}
        if tombstones:
            key = keys[0]
            # null-safe: good rows have no error class, and must read false, not null
            tombstone = (
                F.col(ERROR_CLASS).eqNullSafe(ErrorClass.NULL_VALUE.value)
                & F.col(KAFKA_KEY).isNotNull()
            )
            key_type = df.schema[key].dataType
            columns[key] = F.when(
                tombstone, F.decode(F.col(KAFKA_KEY), "UTF-8").cast(key_type)
            ).otherwise(F.col(key))
            columns[ERROR_CLASS] = F.when(tombstone, F.lit(None)).otherwise(F.col(ERROR_CLASS))
            columns[ERROR_MESSAGE] = F.when(tombstone, F.lit(None)).otherwise(F.col(ERROR_MESSAGE))
            marked = marked | tombstone
            good = good | tombstone
        missing = (
            [F.col(k).isNull() for k in keys] if not tombstones else [columns[keys[0]].isNull()]
        )
        no_key = good & _any(missing)
        columns[ERROR_CLASS] = F.when(no_key, F.lit(ErrorClass.MISSING_KEY.value)).otherwise(
            columns[ERROR_CLASS]
        )
        columns[ERROR_MESSAGE] = F.when(
            no_key, F.lit(f"a key field is null (key: {', '.join(keys)})")
        ).otherwise(columns[ERROR_MESSAGE])
        return df.select(
            *[columns[c].alias(c) for c in df.columns],
            (good & ~no_key & marked).alias(DELETE_FLAG),
        )

    return _transform


def latest_per_key(*, keys: Sequence[str], ordering: str) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform keeping, per key, the row that wins (see the module doc)."""

    def _transform(df: DataFrame) -> DataFrame:
        by_key = Window.partitionBy(*keys)
        unordered_delete = F.col(DELETE_FLAG) & F.col(ordering).isNull()
        window = by_key.orderBy(
            # keys with an unordered delete: Kafka log order alone
            F.when(F.col(_LOG_ORDER), F.col(KAFKA_OFFSET)).desc_nulls_last(),
            F.col(ordering).desc_nulls_last(),
            F.col(KAFKA_OFFSET).desc(),
        )
        return (
            df.withColumn(_LOG_ORDER, F.max(unordered_delete).over(by_key))
            .withColumn(
                RESET_OFFSET, F.max(F.when(unordered_delete, F.col(KAFKA_OFFSET))).over(by_key)
            )
            .withColumn(_ROW, F.row_number().over(window))
            .where(F.col(_ROW) == 1)
            .drop(_ROW, _LOG_ORDER)
        )

    return _transform


def _any(conditions: list[Column]) -> Column:
    """True when any condition holds."""
    result = conditions[0]
    for condition in conditions[1:]:
        result = result | condition
    return result
