"""Split decoded Kafka records into table rows and dead-letter rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from transforms.columns import (
    BARRIER,
    ERROR_CLASS,
    ERROR_COLUMNS,
    ERROR_MESSAGE,
    FORGOTTEN,
    KAFKA_KEY,
    KAFKA_OFFSET,
    KAFKA_PARTITION,
    KAFKA_TIMESTAMP,
    KAFKA_TOPIC,
    KAFKA_VALUE,
    RECORD,
    SCHEMA_ID,
    SCHEMA_VERSION_ID,
)
from transforms.decode import record_fields

DEAD_LETTER_SCHEMA = StructType(
    [
        StructField("pipeline", StringType()),
        StructField("batch_id", LongType()),
        StructField("ingested_at", TimestampType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("kafka_timestamp", TimestampType()),
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("schema_version_id", StringType()),
        StructField("error_class", StringType()),
        StructField("error_message", StringType()),
        # set by jobs.replay_dlq once the record made it into the table
        StructField("replayed_at", TimestampType()),
        StructField("replay_id", StringType()),
    ]
)


def _decoded_once() -> Column:
    """Always true; referencing ``_barrier`` keeps the filter above the decode (see decode)."""
    return F.col(BARRIER) >= 0


def _kept(df: DataFrame) -> Column:
    """Rows that go anywhere: decoded once, and not of a forgotten subject (when flagged)."""
    if FORGOTTEN in df.columns:
        return _decoded_once() & ~F.col(FORGOTTEN)
    return _decoded_once()


def flatten_decoded() -> Callable[[DataFrame], DataFrame]:
    """Returns a transform lifting the decoded record's fields to top-level columns.

    Kafka's own columns are renamed first (``_kafka_*``) so a payload field named ``key``,
    ``value`` or ``topic`` cannot clash with them; expectations then read payload fields by
    their plain names. ``_barrier`` (from ``decode_avro``) is kept for the routing filters.
    """

    def _transform(df: DataFrame) -> DataFrame:
        record = F.col(RECORD)
        return df.select(
            *[record[name].alias(name) for name in record_fields(df)],
            F.col("key").alias(KAFKA_KEY),
            F.col("topic").alias(KAFKA_TOPIC),
            F.col("partition").alias(KAFKA_PARTITION),
            F.col("offset").alias(KAFKA_OFFSET),
            F.col("timestamp").alias(KAFKA_TIMESTAMP),
            F.col(SCHEMA_ID).alias(SCHEMA_VERSION_ID),
            F.col("value").alias(KAFKA_VALUE),
            *ERROR_COLUMNS,
            BARRIER,
        )

    return _transform


def kafka_rows_from_dead_letters() -> Callable[[DataFrame], DataFrame]:
    """Returns a transform turning dead-letter rows back into Kafka-source-shaped rows."""

    def _transform(df: DataFrame) -> DataFrame:
        return df.select(
            F.col("key"),
            F.col("value"),
            F.col("topic"),
            F.col("partition"),
            F.col("offset"),
            F.col("kafka_timestamp").alias("timestamp"),
            F.lit(0).alias("timestampType"),
        )

    return _transform


def table_rows() -> Callable[[DataFrame], DataFrame]:
    """Returns a transform keeping good rows of a flattened frame: fields, then Kafka metadata.

    Rows flagged ``FORGOTTEN`` (a forgotten subject's) are dropped, here and from dead letters.
    """

    def _transform(df: DataFrame) -> DataFrame:
        return df.where(_kept(df) & F.col(ERROR_CLASS).isNull()).drop(
            KAFKA_VALUE, *ERROR_COLUMNS, BARRIER, FORGOTTEN
        )

    return _transform


def dead_letter_rows(
    *, pipeline: str, batch_id: int, ingested_at: dt.datetime
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform keeping failed rows in the dead-letter shape.

    Args:
        pipeline: The pipeline name, stored on every row.
        batch_id: The micro-batch id, stored on every row.
        ingested_at: When the batch ran (passed in: transforms read no clock).

    Returns:
        A function for ``df.transform(...)`` over a ``flatten_decoded`` frame, yielding
        ``DEAD_LETTER_SCHEMA`` columns.
    """

    def _transform(df: DataFrame) -> DataFrame:
        return df.where(_kept(df) & F.col(ERROR_CLASS).isNotNull()).select(
            F.lit(pipeline).alias("pipeline"),
            F.lit(batch_id).cast("long").alias("batch_id"),
            F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
            F.col(KAFKA_TOPIC).alias("topic"),
            F.col(KAFKA_PARTITION).cast("int").alias("partition"),
            F.col(KAFKA_OFFSET).cast("long").alias("offset"),
            F.col(KAFKA_TIMESTAMP).alias("kafka_timestamp"),
            F.col(KAFKA_KEY).alias("key"),
            F.col(KAFKA_VALUE).alias("value"),
            F.col(SCHEMA_VERSION_ID).alias("schema_version_id"),
            F.col(ERROR_CLASS).alias("error_class"),
            F.col(ERROR_MESSAGE).alias("error_message"),
            F.lit(None).cast("timestamp").alias("replayed_at"),
            F.lit(None).cast("string").alias("replay_id"),
        )

    return _transform
