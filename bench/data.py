"""Benchmark data: two registered schema versions, a pool of pre-encoded frames, bulk produce.

Every distinct record is Avro-encoded and Glue-framed once; the topic is filled by cycling
through that pool with ``Producer.produce_batch``, so producing millions of records costs
seconds, not minutes. Record ``j`` of the pool is written with schema v2 when ``j`` is odd
(else v1) and zlib-compressed when ``(j // 2) % 10 == 0`` (10 %, half of them per version).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from devtools.producer import register_schema
from devtools.sample_data import orders
from devtools.wire import avro_body, encode_glue
from etl.registry import read_avsc

log = logging.getLogger("bench.data")

V2_FIELD = "loyalty_tier"
_TIERS = ("bronze", "silver", "gold", None)
PRODUCE_TIMEOUT_S = 600.0


def v2_schema(v1: str) -> str:
    """Schema v2: v1 plus one optional field (a backward-compatible evolution)."""
    schema = json.loads(v1)
    schema["doc"] = "An order event (v2: adds the optional loyalty tier)."
    schema["fields"].append({"name": V2_FIELD, "type": ["null", "string"], "default": None})
    return json.dumps(schema)


@dataclass(frozen=True)
class Versions:
    """The registered schema versions (definition JSON and registry version id)."""

    v1: str
    v1_id: str
    v2: str
    v2_id: str

    def writers(self) -> dict[str, str]:
        """Version id -> writer schema JSON."""
        return {self.v1_id: self.v1, self.v2_id: self.v2}


def register_versions(
    glue: Any, *, registry_name: str, schema_name: str, v1_path: Path
) -> Versions:
    """Registers v1 (the .avsc) and v2 under one schema name; returns both version ids."""
    v1 = read_avsc(v1_path)
    v2 = v2_schema(v1)
    v1_id = register_schema(
        glue, registry_name=registry_name, schema_name=schema_name, definition=v1
    )
    v2_id = register_schema(
        glue, registry_name=registry_name, schema_name=schema_name, definition=v2
    )
    if v1_id == v2_id:
        raise RuntimeError("the registry returned one version id for two schema versions")
    return Versions(v1, v1_id, v2, v2_id)


@dataclass(frozen=True)
class Pool:
    """Pre-encoded Kafka messages, cycled to fill a topic.

    ``messages[j]`` is the ``produce_batch`` dict of pool record ``j``; ``v1_bodies[j]`` is the
    same record as an uncompressed, header-less v1 Avro body (the native decoder's input).
    """

    messages: list[dict[str, bytes]]
    v1_bodies: list[bytes]
    value_bytes: list[int]
    key_bytes: list[int]

    def __len__(self) -> int:
        return len(self.messages)

    def totals(self, records: int) -> tuple[int, int, int]:
        """(value, key, native body) bytes of ``records`` records cycled from the pool."""
        size = len(self)
        full, rest = divmod(records, size)

        def total(sizes: Sequence[int]) -> int:
            return full * sum(sizes) + sum(sizes[:rest])

        return (
            total(self.value_bytes),
            total(self.key_bytes),
            total([len(b) for b in self.v1_bodies]),
        )


def build_pool(versions: Versions, size: int) -> Pool:
    """Encodes ``size`` distinct order records once (v1/v2 alternating, 10 % zlib)."""
    parsed_v1 = fastavro.parse_schema(json.loads(versions.v1))
    parsed_v2 = fastavro.parse_schema(json.loads(versions.v2))
    messages: list[dict[str, bytes]] = []
    v1_bodies: list[bytes] = []
    for j, record in enumerate(orders(size, seed=11)):
        body_v1 = avro_body(parsed_v1, record)
        if j % 2:
            body = avro_body(parsed_v2, {**record, V2_FIELD: _TIERS[(j // 2) % len(_TIERS)]})
            version_id = versions.v2_id
        else:
            body, version_id = body_v1, versions.v1_id
        value = encode_glue(body, version_id, compress=(j // 2) % 10 == 0)
        messages.append({"key": str(record["order_id"]).encode(), "value": value})
        v1_bodies.append(body_v1)
    return Pool(
        messages=messages,
        v1_bodies=v1_bodies,
        value_bytes=[len(m["value"]) for m in messages],
        key_bytes=[len(m["key"]) for m in messages],
    )


def produce_pool(bootstrap: str, topic: str, pool: Pool, *, records: int, partitions: int) -> float:
    """Fills ``topic`` with ``records`` messages cycled from the pool; returns seconds taken.

    Chunk ``c`` (one pass over the pool, or the last partial one) goes to partition
    ``c % partitions``, so the partitions hold near-equal numbers of records.

    Raises:
        RuntimeError: A message was refused or not delivered, or the topic's end offsets do
            not add up to ``records``.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    started = time.perf_counter()
    queue_limit = 500_000
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": queue_limit + len(pool),
            "queue.buffering.max.kbytes": 1_048_576,
            "compression.type": "none",
            "acks": "1",
            "enable.idempotence": False,
            # only failures call back: a Python callback per message would dominate the cost
            "delivery.report.only.error": True,
        }
    )
    failures: list[str] = []

    def _on_error(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    deadline = time.monotonic() + PRODUCE_TIMEOUT_S
    sent = 0
    chunk = 0
    while sent < records:
        batch = pool.messages[: min(len(pool), records - sent)]
        while len(producer) > queue_limit:  # let the queue drain (bounded by the deadline)
            producer.poll(0.05)
            if time.monotonic() > deadline:
                raise RuntimeError(f"producing to {topic} timed out after {sent} records")
        queued = producer.produce_batch(
            topic, batch, partition=chunk % partitions, on_delivery=_on_error
        )
        if queued != len(batch):
            errors = [m.get("_error") for m in batch if "_error" in m]
            raise RuntimeError(f"{len(batch) - queued} messages refused, first: {errors[:1]}")
        producer.poll(0)
        sent += len(batch)
        chunk += 1
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    if remaining or failures:
        raise RuntimeError(
            f"{remaining} messages unsent, {len(failures)} failed (first: {failures[:1]})"
        )
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check"})
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()
    if sum(ends) != records:
        raise RuntimeError(f"{topic} holds {sum(ends)} records, expected {records}")
    return time.perf_counter() - started
