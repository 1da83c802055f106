"""A Glue-Schema-Registry-aware Avro producer for the demo, the tests and the benchmarks.

It does what the AWS Glue SR serializer does on the producer side: register the schema
(or find its version), then frame each Avro body with the 18-byte Glue header, optionally
zlib-compressed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import fastavro
from botocore.exceptions import ClientError

from devtools.wire import avro_body, encode_glue

if TYPE_CHECKING:
    from mypy_boto3_glue import GlueClient


def register_schema(
    glue: GlueClient, *, registry_name: str, schema_name: str, definition: str
) -> str:
    """Registers an Avro schema version (creating registry and schema if absent).

    Args:
        glue: A boto3 Glue client.
        registry_name: The registry.
        schema_name: The schema within it.
        definition: The Avro schema JSON.

    Returns:
        The schema version id (a UUID string).
    """
    try:
        glue.create_registry(RegistryName=registry_name)
    except ClientError as err:
        if err.response["Error"]["Code"] != "AlreadyExistsException":
            raise
    try:
        created = glue.create_schema(
            RegistryId={"RegistryName": registry_name},
            SchemaName=schema_name,
            DataFormat="AVRO",
            Compatibility="BACKWARD",
            SchemaDefinition=definition,
        )
        return str(created["SchemaVersionId"])
    except ClientError as err:
        if err.response["Error"]["Code"] != "AlreadyExistsException":
            raise
    registered = glue.register_schema_version(
        SchemaId={"RegistryName": registry_name, "SchemaName": schema_name},
        SchemaDefinition=definition,
    )
    return str(registered["SchemaVersionId"])


def glue_frames(
    definition: str,
    version_id: str,
    records: Iterable[Mapping[str, Any]],
    *,
    compress_every: int = 0,
) -> list[bytes]:
    """Serializes records as Glue-framed Avro values.

    Args:
        definition: The writer schema JSON.
        version_id: Its registry version id.
        records: The records.
        compress_every: Compress every n-th record with zlib (0: none).

    Returns:
        One Kafka value per record.
    """
    parsed = fastavro.parse_schema(json.loads(definition))
    return [
        encode_glue(
            avro_body(parsed, dict(record)),
            version_id,
            compress=bool(compress_every) and i % compress_every == 0,
        )
        for i, record in enumerate(records)
    ]


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    *,
    client_config: Mapping[str, str] | None = None,
) -> int:
    """Sends (key, value) pairs and waits until every one is acknowledged.

    Args:
        bootstrap: Broker list.
        topic: Target topic.
        messages: (key, value) pairs; a None value is a tombstone.
        client_config: Extra librdkafka settings (e.g. SASL).

    Returns:
        How many messages were acknowledged.

    Raises:
        RuntimeError: A message was not delivered.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "enable.idempotence": True,
            **(client_config or {}),
        }
    )
    errors: list[str] = []
    delivered = 0

    def _on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=_on_delivery)
                break
            except BufferError:
                producer.poll(0.5)  # local queue full: let deliveries drain
        producer.poll(0)
    producer.flush(60)
    if errors:
        raise RuntimeError(f"{len(errors)} messages not delivered, first: {errors[0]}")
    return delivered
