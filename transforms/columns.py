"""Names of the internal columns the transforms hand to each other, defined once.

Framing adds the frame columns, decoding replaces the schema key and payload with the decoded
record, and ``flatten_decoded`` lifts the record's fields beside the Kafka metadata (renamed
``_kafka_*`` so a payload field named ``key`` or ``topic`` cannot clash). The error columns
travel through every step: a row is good while ``ERROR_CLASS`` is null.
"""

from __future__ import annotations

ERROR_CLASS = "_error_class"
ERROR_MESSAGE = "_error_message"
ERROR_COLUMNS = (ERROR_CLASS, ERROR_MESSAGE)

# framing (transforms.framing)
SCHEMA_KEY = "_schema_key"
COMPRESSION = "_compression"
PAYLOAD = "_payload"

# decoding (transforms.decode)
SCHEMA_ID = "_schema_id"
RECORD = "_record"
BARRIER = "_barrier"

# flattened rows (transforms.routing): Kafka metadata kept in the table
KAFKA_KEY = "_kafka_key"
KAFKA_VALUE = "_kafka_value"
KAFKA_TOPIC = "_kafka_topic"
KAFKA_PARTITION = "_kafka_partition"
KAFKA_OFFSET = "_kafka_offset"
KAFKA_TIMESTAMP = "_kafka_timestamp"
SCHEMA_VERSION_ID = "_schema_version_id"
# where a row came from in Kafka: unique per record, so it identifies a row across commits
KAFKA_COORDINATES = (KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET)

# upsert batches: true when the row deletes its key (a CDC delete or a Kafka tombstone)
DELETE_FLAG = "_etl_delete"
# upsert batches: the largest Kafka offset of the key's deletes without an ordering value
# (tombstones) in the batch; a table row from an earlier offset is gone, whatever its ordering
RESET_OFFSET = "_etl_reset_offset"

# privacy: true when the record is about a subject in the forget list (never written anywhere)
FORGOTTEN = "_etl_forgotten"
