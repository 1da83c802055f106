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

from transforms.decode import BARRIER_COL, RECORD_COL, record_fields

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


ERROR_COLUMNS = ("_error_class", "_error_message")


def _decoded_once() -> Column:
    """Always true; referencing ``_barrier`` keeps the filter above the decode (see decode)."""
    return F.col(BARRIER_COL) >= 0


def flatten_decoded() -> Callable[[DataFrame], DataFrame]:
    """Returns a transform lifting the decoded record's fields to top-level columns.

    Kafka's own columns are renamed first (``_kafka_*``) so a payload field named ``key``,
    ``value`` or ``topic`` cannot clash with them; expectations then read payload fields by
    their plain names. ``_barrier`` (from ``decode_avro``) is kept for the routing filters.
    """

    def _transform(df: DataFrame) -> DataFrame:
        record = F.col(RECORD_COL)
        return df.select(
            *[record[name].alias(name) for name in record_fields(df)],
            F.col("key").alias("_kafka_key"),
            F.col("topic").alias("_kafka_topic"),
            F.col("partition").alias("_kafka_partition"),
            F.col("offset").alias("_kafka_offset"),
            F.col("timestamp").alias("_kafka_timestamp"),
            F.col("_schema_id").alias("_schema_version_id"),
            F.col("value").alias("_kafka_value"),
            *ERROR_COLUMNS,
            BARRIER_COL,
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
    """Returns a transform keeping good rows of a flattened frame: fields, then Kafka metadata."""

    def _transform(df: DataFrame) -> DataFrame:
        return df.where(_decoded_once() & F.col("_error_class").isNull()).drop(
            "_kafka_value", *ERROR_COLUMNS, BARRIER_COL
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
        return df.where(_decoded_once() & F.col("_error_class").isNotNull()).select(
            F.lit(pipeline).alias("pipeline"),
            F.lit(batch_id).cast("long").alias("batch_id"),
            F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
            F.col("_kafka_topic").alias("topic"),
            F.col("_kafka_partition").cast("int").alias("partition"),
            F.col("_kafka_offset").cast("long").alias("offset"),
            F.col("_kafka_timestamp").alias("kafka_timestamp"),
            F.col("_kafka_key").alias("key"),
            F.col("_kafka_value").alias("value"),
            F.col("_schema_version_id").alias("schema_version_id"),
            F.col("_error_class").alias("error_class"),
            F.col("_error_message").alias("error_message"),
            F.lit(None).cast("timestamp").alias("replayed_at"),
            F.lit(None).cast("string").alias("replay_id"),
        )

    return _transform
