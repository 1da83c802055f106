"""Decode framed Avro bodies with Spark's native ``from_avro``, one writer schema per version.

The reader schema (the table's) is passed in ``from_avro``'s ``avroSchema`` option and the
writer schema of each version as its second argument, so Avro schema resolution maps every
version onto the table's shape. All versions present in a batch go into one ``CASE`` on the
schema id: one projection, no union, no extra scan.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro
from pyspark.sql.types import StructType

from transforms.columns import (
    BARRIER,
    COMPRESSION,
    ERROR_CLASS,
    ERROR_MESSAGE,
    PAYLOAD,
    RECORD,
    SCHEMA_ID,
    SCHEMA_KEY,
)
from transforms.errors import ErrorClass
from transforms.framing import schema_id_column, schema_key
from transforms.wire import WireFormat

# Appended to the reader schema with a default of true: the writer never has it, so schema
# resolution fills it in on success, while PERMISSIVE mode nulls every field on failure. This
# tells a failed decode apart from a record whose fields are all legitimately null.
DECODED_MARKER = "_etl_decoded"
# the JVM inflater (jvm/udf), registered under this name by etl.spark.build_spark
INFLATE_ZLIB_FUNCTION = "etl_inflate_zlib"
INFLATE_ZLIB_CLASS = "etl.udf.InflateZlib"
INFLATE_ZLIB_RESULT = "struct<body:binary,error_class:string,error_message:string>"
_INFLATED = "_inflated"


def with_decoded_marker(reader_schema: str) -> str:
    """Returns the reader schema (JSON) with the success-marker field appended."""
    schema = json.loads(reader_schema)
    if schema.get("type") != "record":
        raise ValueError(
            f"reader schema: expected an Avro record, found type {schema.get('type')!r}"
        )
    fields = [f for f in schema["fields"] if f["name"] != DECODED_MARKER]
    fields.append({"name": DECODED_MARKER, "type": "boolean", "default": True})
    return json.dumps({**schema, "fields": fields})


def decode_avro(
    *,
    wire_format: WireFormat,
    writer_schemas: Mapping[str, str],
    reader_schema: str,
    rejected: Mapping[str, str] | None = None,
    payload_col: str = PAYLOAD,
    key_col: str = SCHEMA_KEY,
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform decoding ``payload_col`` into a struct column ``_record``.

    Adds ``_schema_id`` (the registry id as a string), ``_record`` (the reader schema's
    record plus the success marker ``_etl_decoded``, which ``flatten_decoded`` leaves out)
    and ``_barrier`` (see below), and drops ``key_col`` and ``payload_col``. Rows whose
    frame already failed keep their error. Rows of a ``rejected`` version get
    ``INCOMPATIBLE_SCHEMA``; rows whose schema id is not in ``writer_schemas`` get
    ``UNKNOWN_SCHEMA``; bodies that do not decode get ``DECODE_ERROR``; ``_record`` is null
    for every failed row.

    Each row is decoded once. The decode projection holds ``_barrier``
    (``spark_partition_id()``): a non-deterministic column stops Spark from pushing a later
    filter on the error columns below the decode, where it would inline ``from_avro`` into
    the filter and decode every row twice. The routing filters reference it so it is kept.

    Args:
        wire_format: How ``key_col`` encodes schema ids.
        writer_schemas: Schema id -> writer schema JSON, for the ids the registry resolved.
        reader_schema: The table's Avro schema JSON (all versions are resolved onto it).
        rejected: Schema id -> why that version cannot be read into the reader schema.
        payload_col: Binary column with the uncompressed Avro body.
        key_col: Binary column with the framed schema id (``transforms.framing``).

    Returns:
        A function for ``df.transform(...)``.
    """
    reader = with_decoded_marker(reader_schema)
    options = {"avroSchema": reader, "mode": "PERMISSIVE"}
    rejected = dict(rejected or {})
    accepted = {k: v for k, v in writer_schemas.items() if k not in rejected}
    known = sorted({*writer_schemas, *rejected})
    payload = F.col(payload_col)
    key = F.col(key_col)

    def matches(version_id: str) -> Column:
        # compare the raw framed bytes with a literal: no per-row formatting of the id
        return key == F.lit(schema_key(wire_format, version_id))

    def _transform(df: DataFrame) -> DataFrame:
        # the fallback branch gives the CASE its struct type when no version matches
        record: Column = from_avro(F.lit(None).cast("binary"), reader, options)
        for version_id, writer in sorted(accepted.items()):
            record = F.when(matches(version_id), from_avro(payload, writer, options)).otherwise(
                record
            )
        schema_id: Column = schema_id_column(wire_format, key)  # only unknown ids get here
        for version_id in known:
            schema_id = F.when(matches(version_id), F.lit(version_id)).otherwise(schema_id)
        incompatible: Column = F.lit(None).cast("string")
        for version_id, reason in sorted(rejected.items()):
            incompatible = F.when(
                matches(version_id),
                F.lit(
                    f"schema version {version_id} is incompatible with the table schema: {reason}"
                ),
            ).otherwise(incompatible)
        framed_ok = F.col(ERROR_CLASS).isNull()
        kept = [c for c in df.columns if c not in (key_col, payload_col, RECORD, BARRIER)]
        decoded = df.select(
            *kept,
            schema_id.alias(SCHEMA_ID),
            incompatible.alias("_incompatible"),
            F.when(framed_ok & payload.isNotNull(), record).alias(RECORD),
            F.spark_partition_id().alias(BARRIER),
        )
        # classified in a projection of its own, reading the decoded struct (not re-decoding)
        rec = F.col(RECORD)
        is_incompatible = framed_ok & F.col("_incompatible").isNotNull()
        unknown = framed_ok & ~is_incompatible & rec.isNull()
        corrupt = framed_ok & rec.isNotNull() & rec[DECODED_MARKER].isNull()
        schema = F.col(SCHEMA_ID)
        error_class = (
            F.when(is_incompatible, F.lit(ErrorClass.INCOMPATIBLE_SCHEMA.value))
            .when(unknown, F.lit(ErrorClass.UNKNOWN_SCHEMA.value))
            .when(corrupt, F.lit(ErrorClass.DECODE_ERROR.value))
            .otherwise(F.col(ERROR_CLASS))
        )
        error_message = (
            F.when(is_incompatible, F.col("_incompatible"))
            .when(
                unknown,
                F.concat(F.lit("schema version "), schema, F.lit(" is not in the registry")),
            )
            .when(
                corrupt,
                F.concat(F.lit("Avro body does not decode with writer schema version "), schema),
            )
            .otherwise(F.col(ERROR_MESSAGE))
        )
        others = [c for c in decoded.columns if c not in (ERROR_CLASS, ERROR_MESSAGE)]
        classified = decoded.select(
            *others, error_class.alias(ERROR_CLASS), error_message.alias(ERROR_MESSAGE)
        )
        return classified.select(
            *[c for c in classified.columns if c not in ("_incompatible", RECORD)],
            F.when(F.col(ERROR_CLASS).isNull(), rec).alias(RECORD),
        )

    return _transform


def record_fields(df: DataFrame) -> list[str]:
    """The decoded record's field names (without the success marker), in schema order."""
    record = df.schema[RECORD].dataType
    assert isinstance(record, StructType), f"{RECORD} must be a struct, found {record}"
    return [f.name for f in record.fields if f.name != DECODED_MARKER]


def inflate_zlib(
    *,
    max_bytes: int,
    engine: str = "python",
    payload_col: str = PAYLOAD,
    compression_col: str = COMPRESSION,
) -> Callable[[DataFrame], DataFrame]:
    """Returns a transform that inflates zlib-compressed payloads.

    A stream that does not inflate gets ``DECOMPRESS_ERROR``; one that inflates past
    ``max_bytes`` (a zip bomb or an oversized record) gets ``VALUE_TOO_LARGE``.

    Args:
        max_bytes: Largest inflated body accepted.
        engine: ``jvm`` calls the ``INFLATE_ZLIB_FUNCTION`` UDF (``jvm/udf``, registered by
            ``etl.spark.build_spark``) in one projection; ``python`` sends only the zlib
            rows to Python in Arrow batches (no jar needed, but a second scan and a union).
        payload_col: Binary column with the compressed body.
        compression_col: String column, ``zlib`` for compressed rows.

    Returns:
        A function for ``df.transform(...)``; afterwards ``compression_col`` reads ``none``
        for every row with a good payload.

    Raises:
        ValueError: ``engine`` is neither ``jvm`` nor ``python``.
    """
    if engine not in ("jvm", "python"):
        raise ValueError(f"inflate engine: expected jvm or python, found {engine!r}")
    is_zlib = F.coalesce(F.col(compression_col) == "zlib", F.lit(False))

    def _python(df: DataFrame) -> DataFrame:
        names = df.columns
        inflated = df.where(is_zlib).mapInArrow(
            _inflater(names, payload_col, compression_col, max_bytes), df.schema
        )
        return df.where(~is_zlib).unionByName(inflated)

    def _jvm(df: DataFrame) -> DataFrame:
        result = F.col(_INFLATED)
        failed = is_zlib & result["error_class"].isNotNull()
        with_result = df.withColumn(
            _INFLATED,
            F.when(
                is_zlib, F.call_udf(INFLATE_ZLIB_FUNCTION, F.col(payload_col), F.lit(max_bytes))
            ),
        )
        replaced = {
            payload_col: F.when(is_zlib, result["body"]).otherwise(F.col(payload_col)),
            compression_col: F.when(is_zlib, F.when(~failed, F.lit("none"))).otherwise(
                F.col(compression_col)
            ),
            ERROR_CLASS: F.when(failed, result["error_class"]).otherwise(F.col(ERROR_CLASS)),
            ERROR_MESSAGE: F.when(failed, result["error_message"]).otherwise(F.col(ERROR_MESSAGE)),
        }
        return with_result.select(
            *[replaced[c].alias(c) if c in replaced else F.col(c) for c in df.columns]
        )

    return _jvm if engine == "jvm" else _python


def _inflater(
    names: list[str], payload_col: str, compression_col: str, max_bytes: int
) -> Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]:
    """Builds the mapInArrow function (a closure, so only plain values are pickled)."""
    payload_at = names.index(payload_col)
    compression_at = names.index(compression_col)
    error_at = names.index(ERROR_CLASS)
    message_at = names.index(ERROR_MESSAGE)

    def _inflate(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            bodies: list[bytes | None] = []
            errors: list[str | None] = batch.column(error_at).to_pylist()
            messages: list[str | None] = batch.column(message_at).to_pylist()
            for row, compressed in enumerate(batch.column(payload_at).to_pylist()):
                body, error, message = _inflate_one(compressed, max_bytes)
                bodies.append(body)
                if error is not None:
                    errors[row], messages[row] = error, message
            columns: list[Any] = list(batch.columns)
            columns[payload_at] = pa.array(bodies, type=pa.binary())
            columns[compression_at] = pa.array(
                ["none" if body is not None else None for body in bodies], type=pa.string()
            )
            columns[error_at] = pa.array(errors, type=pa.string())
            columns[message_at] = pa.array(messages, type=pa.string())
            yield pa.RecordBatch.from_arrays(columns, schema=batch.schema)

    return _inflate


def _inflate_one(
    compressed: bytes | None, max_bytes: int
) -> tuple[bytes | None, str | None, str | None]:
    """Inflates one body: (body, None, None) or (None, error class, message)."""
    if compressed is None:
        return None, None, None
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(compressed, max_bytes)
    except zlib.error as err:
        # "Error -3 while decompressing data: incorrect header check" -> zlib's own reason,
        # the message the JVM inflater gives too
        reason = str(err).split(": ", 1)[-1]
        return None, ErrorClass.DECOMPRESS_ERROR.value, f"zlib stream does not inflate: {reason}"
    if inflater.unconsumed_tail:
        return (
            None,
            ErrorClass.VALUE_TOO_LARGE.value,
            f"zlib body inflates past the limit of {max_bytes} bytes",
        )
    if not inflater.eof:
        return None, ErrorClass.DECOMPRESS_ERROR.value, "zlib stream is truncated"
    return body, None, None
