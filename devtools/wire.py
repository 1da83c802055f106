"""Encoders producers (demo, tests, benchmarks) use to frame Avro bodies the way real
serializers do; the formats are described in ``transforms.wire``."""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from typing import Any

import fastavro

from transforms.wire import (
    CONFLUENT_MAGIC,
    GLUE_COMPRESSION_NONE,
    GLUE_COMPRESSION_ZLIB,
    GLUE_HEADER_VERSION,
)


def encode_glue(
    body: bytes, schema_version_id: str | uuid.UUID, *, compress: bool = False
) -> bytes:
    """Frames an Avro body the way the Glue Schema Registry serializer does.

    Args:
        body: The Avro binary encoding of one datum.
        schema_version_id: The registry's schema version id.
        compress: Deflate the body with zlib (compression byte 0x05).

    Returns:
        The Kafka record value.
    """
    version = uuid.UUID(str(schema_version_id))
    if compress:
        return (
            bytes((GLUE_HEADER_VERSION, GLUE_COMPRESSION_ZLIB))
            + version.bytes
            + zlib.compress(body)
        )
    return bytes((GLUE_HEADER_VERSION, GLUE_COMPRESSION_NONE)) + version.bytes + body


def encode_confluent(body: bytes, schema_id: int) -> bytes:
    """Frames an Avro body the way Confluent's serializer does."""
    return struct.pack(">bI", CONFLUENT_MAGIC, schema_id) + body


def avro_body(parsed_schema: Any, record: dict[str, Any]) -> bytes:
    """Encodes one record as Avro binary (no container, no header)."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed_schema, record)
    return buffer.getvalue()
