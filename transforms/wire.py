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
Plain Avro ("assumed schema"): no header, the body only.
"""

from __future__ import annotations

import enum


class WireFormat(enum.StrEnum):
    """How producers framed the Avro bodies in Kafka record values."""

    GLUE = "glue"
    CONFLUENT = "confluent"
    PLAIN_AVRO = "plain_avro"


GLUE_HEADER_VERSION = 0x03
GLUE_COMPRESSION_NONE = 0x00
GLUE_COMPRESSION_ZLIB = 0x05
GLUE_HEADER_LENGTH = 18
CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER_LENGTH = 5
