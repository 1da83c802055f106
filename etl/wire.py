"""Wire formats of Kafka record values: the AWS Glue Schema Registry and Confluent frames.

Glue (awslabs/aws-glue-schema-registry ``AWSSchemaRegistryConstants``):
    byte 0      header version, 0x03
    byte 1      compression, 0x00 none | 0x05 zlib (java.util.zip.Deflater defaults = zlib stream)
    bytes 2..17 schema version id, a UUID as two big-endian longs
    bytes 18..  the Avro binary body (compressed when byte 1 is 0x05)
Confluent:
    byte 0      magic 0x00
    bytes 1..4  schema id, big-endian int32
    bytes 5..   the Avro binary body

Decoding happens in Spark column expressions (``transforms.framing``); this module holds the
constants both sides share and the encoders producers (demo, tests, benchmarks) use.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from typing import Any

import fastavro

GLUE_HEADER_VERSION = 0x03
GLUE_COMPRESSION_NONE = 0x00
GLUE_COMPRESSION_ZLIB = 0x05
GLUE_HEADER_LENGTH = 18
CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER_LENGTH = 5


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
