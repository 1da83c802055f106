"""A prototype of the product changes the benchmark analysis recommends (not product code).

It exists so the expected gains are measured, not guessed (``--paths proposed_decode,
proposed_e2e``). It keeps the product's behaviour for well-formed data and the same error
classes for bad data, and changes how the work is expressed to Spark:

1. **Binary framing.** Header and compression bytes are compared as 1-byte binaries and the
   schema version id is kept as its 16 raw bytes; the product's ``parse_frame`` turns each
   byte into a hex string and back (``conv(hex(substring(...)))``) and formats the UUID
   string of every row, expressions Spark then repeats inside nested ``CASE`` chains.
2. **Version ids matched as binary literals.** The ``from_avro`` ``CASE`` compares the raw
   16 bytes with each known version's bytes; the UUID string of the table column is a
   literal per known version (formatted per row only for unknown ids).
3. **One decode per row, no struct rebuild.** Error classification reads the decoded struct
   in a projection of its own, the record's fields are selected by name (no ``dropFields``
   rebuild), and a non-deterministic column (``spark_partition_id()``, referenced by the
   routing filters) stops Spark from pushing the ``_error_class IS NULL`` filter below the
   decode, which would inline ``from_avro`` into the filter once per reference.
4. **One pass per batch** (``ProposedProcessor``). Only the framed Kafka rows are cached (the
   schema-id scan needs them); the decoded rows are not. Counts come from
   ``DataFrame.observe`` during the table write, and the dead-letter rows are computed (a
   second decode pass) only when the observed dead count is not zero. Trade-off: the table
   snapshot then carries ``etl.records-read`` (Iceberg's ``added-records`` is the written
   count); the dead count is known only after that commit (it goes to the log and the
   dead-letter snapshot).

Not covered by the prototype: expectations (the benchmark configures none) and the other
wire formats (Glue only).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro
from pyspark.sql.observation import Observation

from etl.pipeline import RECORDS_READ_KEY, BatchProcessor, BatchResult
from etl.sinks import CommitInfo
from etl.wire import (
    GLUE_COMPRESSION_NONE,
    GLUE_COMPRESSION_ZLIB,
    GLUE_HEADER_LENGTH,
    GLUE_HEADER_VERSION,
)
from transforms.decode import DECODED_MARKER, inflate_zlib, with_decoded_marker
from transforms.errors import ErrorClass
from transforms.routing import dead_letter_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BARRIER = "_barrier"
MAX_INT = 2**31 - 1
_ZLIB = bytes([GLUE_COMPRESSION_ZLIB])
_NONE = bytes([GLUE_COMPRESSION_NONE])


def parse_frame_binary(*, max_value_bytes: int) -> Callable[[DataFrame], DataFrame]:
    """Glue framing with binary comparisons: ``_schema_bin`` holds the 16 id bytes.

    Adds ``_error_class``, ``_error_message``, ``_schema_bin``, ``_compression`` (``none`` /
    ``zlib``) and ``_payload``, like ``transforms.framing.parse_frame`` (which adds the id as
    a UUID string, ``_schema_id``).
    """

    def _transform(df: DataFrame) -> DataFrame:
        value = F.col("value")
        size = F.length(value)
        header = F.substring(value, 1, 1)
        compression = F.substring(value, 2, 1)
        checks: list[tuple[Column, ErrorClass, Column]] = [
            (value.isNull(), ErrorClass.NULL_VALUE, F.lit("record value is null (tombstone)")),
            (
                size > max_value_bytes,
                ErrorClass.VALUE_TOO_LARGE,
                F.format_string(f"value is %d bytes, over the limit of {max_value_bytes}", size),
            ),
            (size == 0, ErrorClass.FRAME_TOO_SHORT, F.lit("value is empty, expected a Glue frame")),
            (
                header != F.lit(bytes([GLUE_HEADER_VERSION])),
                ErrorClass.UNKNOWN_HEADER_VERSION,
                F.concat(F.lit("unexpected Glue header version byte 0x"), F.lower(F.hex(header))),
            ),
            (
                size < GLUE_HEADER_LENGTH,
                ErrorClass.FRAME_TOO_SHORT,
                F.format_string(
                    f"expected a Glue header of {GLUE_HEADER_LENGTH} bytes, value has %d", size
                ),
            ),
            (
                ~compression.isin(F.lit(_NONE), F.lit(_ZLIB)),
                ErrorClass.UNKNOWN_COMPRESSION,
                F.concat(F.lit("unknown compression byte 0x"), F.lower(F.hex(compression))),
            ),
        ]
        error_class: Column = F.lit(None).cast("string")
        error_message: Column = F.lit(None).cast("string")
        for condition, error, message in reversed(checks):  # flat CASE: first match wins
            error_class = F.when(condition, F.lit(error.value)).otherwise(error_class)
            error_message = F.when(condition, message).otherwise(error_message)
        good = F.col("_error_class").isNull()
        return (
            df.withColumn("_error_class", error_class)
            .withColumn("_error_message", error_message)
            .withColumn("_schema_bin", F.when(good, F.substring(value, 3, 16)))
            .withColumn(
                "_compression",
                F.when(
                    good,
                    F.when(compression == F.lit(_ZLIB), F.lit("zlib")).otherwise(F.lit("none")),
                ),
            )
            .withColumn(
                "_payload", F.when(good, F.substring(value, GLUE_HEADER_LENGTH + 1, MAX_INT))
            )
        )

    return _transform


def _uuid_string(raw16: Column) -> Column:
    digits = F.lower(F.hex(raw16))
    parts = [(1, 8), (9, 4), (13, 4), (17, 4), (21, 12)]
    return F.concat_ws("-", *[digits.substr(start, length) for start, length in parts])


def decode_binary_ids(
    *,
    writer_schemas: Mapping[str, str],
    reader_schema: str,
    rejected: Mapping[str, str],
) -> Callable[[DataFrame], DataFrame]:
    """Decodes ``_payload`` per version and flattens, in the shape of ``flatten_decoded``.

    Output: the reader schema's fields, ``_kafka_*`` columns, ``_schema_version_id``,
    ``_kafka_value``, ``_error_class``, ``_error_message`` and ``BARRIER``.
    """
    reader = with_decoded_marker(reader_schema)
    options = {"avroSchema": reader, "mode": "PERMISSIVE"}
    fields = [f["name"] for f in json.loads(reader)["fields"] if f["name"] != DECODED_MARKER]
    schema_bin = F.col("_schema_bin")
    payload = F.col("_payload")

    def key(version_id: str) -> Column:
        return schema_bin == F.lit(uuid.UUID(version_id).bytes)

    def _transform(df: DataFrame) -> DataFrame:
        record: Column = from_avro(F.lit(None).cast("binary"), reader, options)
        version: Column = _uuid_string(schema_bin)  # only rows of unknown versions get here
        incompatible: Column = F.lit(None).cast("string")
        for version_id in sorted({*writer_schemas, *rejected}):
            version = F.when(key(version_id), F.lit(version_id)).otherwise(version)
        for version_id, writer in sorted(writer_schemas.items()):
            if version_id not in rejected:
                decoded = from_avro(payload, writer, options)
                record = F.when(key(version_id), decoded).otherwise(record)
        for version_id, reason in sorted(rejected.items()):
            message = f"schema version {version_id} is incompatible with the table schema: {reason}"
            incompatible = F.when(key(version_id), F.lit(message)).otherwise(incompatible)
        framed_ok = F.col("_error_class").isNull()
        decoded_rows = df.select(
            "key",
            "value",
            "topic",
            "partition",
            "offset",
            "timestamp",
            "_error_class",
            "_error_message",
            version.alias("_schema_id"),
            incompatible.alias("_incompatible"),
            F.when(framed_ok & payload.isNotNull(), record).alias("_record"),
            # non-deterministic: no filter is pushed below this projection (see module doc)
            F.spark_partition_id().alias(BARRIER),
        )
        rec = F.col("_record")
        is_incompatible = framed_ok & F.col("_incompatible").isNotNull()
        unknown = framed_ok & ~is_incompatible & rec.isNull()
        corrupt = framed_ok & rec.isNotNull() & rec[DECODED_MARKER].isNull()
        schema_id = F.col("_schema_id")
        error_class = (
            F.when(is_incompatible, F.lit(ErrorClass.INCOMPATIBLE_SCHEMA.value))
            .when(unknown, F.lit(ErrorClass.UNKNOWN_SCHEMA.value))
            .when(corrupt, F.lit(ErrorClass.DECODE_ERROR.value))
            .otherwise(F.col("_error_class"))
        )
        error_message = (
            F.when(is_incompatible, F.col("_incompatible"))
            .when(
                unknown,
                F.concat(F.lit("schema version "), schema_id, F.lit(" is not in the registry")),
            )
            .when(
                corrupt,
                F.concat(F.lit("Avro body does not decode with writer schema version "), schema_id),
            )
            .otherwise(F.col("_error_message"))
        )
        return decoded_rows.select(
            *[rec[name].alias(name) for name in fields],
            F.col("key").alias("_kafka_key"),
            F.col("topic").alias("_kafka_topic"),
            F.col("partition").alias("_kafka_partition"),
            F.col("offset").alias("_kafka_offset"),
            F.col("timestamp").alias("_kafka_timestamp"),
            schema_id.alias("_schema_version_id"),
            F.col("value").alias("_kafka_value"),
            error_class.alias("_error_class"),
            error_message.alias("_error_message"),
            F.col(BARRIER),
        )

    return _transform


def good_rows(df: DataFrame) -> DataFrame:
    """Table rows of a ``decode_binary_ids`` frame (the filter stays above the decode)."""
    return df.where(F.col("_error_class").isNull() & (F.col(BARRIER) >= 0)).drop(
        "_kafka_value", "_error_class", "_error_message", BARRIER
    )


def resolve_binary_ids(framed: DataFrame) -> list[str]:
    """The distinct schema version ids of the good frames, as UUID strings (one Spark job)."""
    rows = framed.where("_error_class IS NULL").select("_schema_bin").distinct().collect()
    return [str(uuid.UUID(bytes=bytes(row[0]))) for row in rows]


class ProposedProcessor(BatchProcessor):
    """``BatchProcessor`` with one decode pass per batch (see the module doc, point 4)."""

    def process(self, batch: DataFrame, batch_id: int, *, query_id: str) -> BatchResult:
        """Frames (cached), resolves, then decodes and writes in one pass, counting on the way."""
        max_bytes = self.settings.decode.max_value_bytes
        framed = batch.transform(parse_frame_binary(max_value_bytes=max_bytes)).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        try:
            writers = self.resolver.resolve(resolve_binary_ids(framed))
            rejected = self.reader.admit(writers)
            self.reader.changes.clear()
            read = framed.count()
            rows = framed.transform(inflate_zlib(max_bytes=max_bytes)).transform(
                decode_binary_ids(
                    writer_schemas=writers, reader_schema=self.reader.json(), rejected=rejected
                )
            )
            counts = Observation(f"etl-counts-{self.name}-{batch_id}-{time.monotonic_ns()}")
            observed = rows.observe(
                counts,
                F.count(F.when(F.col("_error_class").isNotNull(), 1)).alias("dead"),
            )
            commit = CommitInfo(self.name, query_id, batch_id, extra={RECORDS_READ_KEY: str(read)})
            committed = self.sink.write_batch(good_rows(observed), commit)
            if committed:
                dead = int(counts.get["dead"])
            else:  # a replayed batch: nothing was written, so nothing was observed
                dead = rows.where(F.col(BARRIER) >= 0).where("_error_class IS NOT NULL").count()
            if dead:
                dead_rows = rows.where(F.col(BARRIER) >= 0).transform(
                    dead_letter_rows(
                        pipeline=self.name, batch_id=batch_id, ingested_at=self.clock()
                    )
                )
                self.dead_letter.write_batch(dead_rows, commit)
        finally:
            framed.unpersist()
        return BatchResult(batch_id, read, read - dead, dead, committed)
