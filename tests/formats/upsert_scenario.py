"""One upsert scenario every format runs: Kafka batches of order events, and the table they
must leave, computed here independently of the product (a plain Python model of the rule).

The rule: per key, the record with the larger ``updated_ts`` wins (null loses to any value,
equal values: the larger Kafka offset); ``status == CANCELLED`` marks a delete, and so does a
Kafka tombstone keyed by ``order_id`` (ordered by Kafka offset alone). The model applies
the events one at a time, in Kafka order, so it does not share the product's per-batch
algorithm (winner per key, then one MERGE). Covered: updates, duplicates within a batch, late
out-of-order events, a delete of an absent key, delete then re-insert (also a tombstone and
an older re-insert in one batch), a null ordering value.

Not covered, by design (README "Write modes"): deletes are hard, so a late record older than
an ordered delete brings its key back when it arrives in a later batch.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import fastavro

from devtools.sample_data import orders
from devtools.wire import avro_body

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def at(minutes: int | None) -> dt.datetime | None:
    """An ordering value: ``minutes`` after T0 (None: no value)."""
    return None if minutes is None else T0 + dt.timedelta(minutes=minutes)


@dataclass
class Event:
    """One Kafka record: an order version, or a tombstone (``record`` None) for ``key``."""

    key: str
    record: dict[str, Any] | None


def order(key: str, minutes: int | None, status: str = "PAID", amount: str = "1.00") -> Event:
    """An order event with the given ordering value and status."""
    base = orders(1, start=int(key.split("-")[1]))[0]
    record = {**base, "order_id": key, "updated_ts": at(minutes), "status": status}
    record["amount"] = Decimal(amount)
    return Event(key, record)


def tombstone(key: str) -> Event:
    """A Kafka tombstone for ``key``."""
    return Event(key, None)


# each inner list is one micro-batch
BATCHES: list[list[Event]] = [
    [
        order("o-1", 10),
        order("o-2", 10),
        order("o-3", 10),
        order("o-2", 20, amount="2.00"),  # duplicate within the batch: the newer wins
        order("o-4", None),  # no ordering value
        order("o-5", 10),
    ],
    [
        order("o-1", 5, amount="9.99"),  # late, older: ignored
        order("o-3", 30, status="CANCELLED"),  # delete
        order("o-9", 30, status="CANCELLED"),  # delete of an absent key: nothing
        order("o-4", 1, amount="4.00"),  # any value beats null
        tombstone("o-5"),  # tombstone: deletes the row written from an earlier offset
    ],
    [
        order("o-3", 40, amount="3.00"),  # re-insert after the delete
        order("o-6", 10),
        tombstone("o-6"),  # insert then tombstone in one batch: log order, gone
        order("o-1", 10, amount="1.50"),  # same ordering value, later offset: wins
        tombstone("o-2"),  # the table's o-2@20 is gone ...
        order("o-2", 5, amount="5.00"),  # ... so this older version comes back in
    ],
]


@dataclass
class Row:
    """The model's view of a table row."""

    record: dict[str, Any]
    offset: int


@dataclass
class Model:
    """The table the events must leave, applied one at a time in Kafka order."""

    rows: dict[str, Row] = field(default_factory=dict)

    def apply(self, offset: int, event: Event) -> None:
        """Applies one event."""
        current = self.rows.get(event.key)
        if event.record is None:  # a tombstone: Kafka log order
            if current is not None and offset > current.offset:
                del self.rows[event.key]
            return
        if current is not None and not _newer(offset, event.record, current):
            return
        if event.record["status"] == "CANCELLED":
            self.rows.pop(event.key, None)
        else:
            self.rows[event.key] = Row(event.record, offset)


def _newer(offset: int, record: dict[str, Any], current: Row) -> bool:
    new, old = record["updated_ts"], current.record["updated_ts"]
    if new == old:
        return offset > current.offset
    if new is None or old is None:
        return old is None
    return bool(new > old)


def kafka_batches(
    schema: str, frame: Callable[[bytes], bytes]
) -> list[list[tuple[bytes, bytes | None, int]]]:
    """The batches as Kafka (key, value, offset) triples, bodies framed by ``frame``."""
    parsed = fastavro.parse_schema(json.loads(schema))
    offset = 0
    out = []
    for batch in BATCHES:
        framed = []
        for event in batch:
            value = None if event.record is None else frame(avro_body(parsed, event.record))
            framed.append((event.key.encode(), value, offset))
            offset += 1
        out.append(framed)
    return out


def expected_rows() -> dict[str, Row]:
    """The model's table after every batch."""
    model = Model()
    events = [event for batch in BATCHES for event in batch]
    for offset, event in enumerate(events):
        model.apply(offset, event)
    return model.rows


def settings_block(name: str, table: str, dead_letter: str, **tables: Any) -> dict[str, Any]:
    """A pipeline block (Confluent frames, id 7 = orders.avsc) writing an upsert table."""
    from tests.conftest import REPO

    avsc = str(REPO / "schemas" / "orders.avsc")
    return {
        "source": {"bootstrap_servers": "unused:9092", "topics": [name]},
        "decode": {"wire_format": "confluent", "schema_file": avsc, "confluent_schemas": {7: avsc}},
        "sink": {
            "table": table,
            "mode": "upsert",
            "key": ["order_id"],
            "ordering": "updated_ts",
            "deletes": {"field": "status", "equals": "CANCELLED", "tombstones": True},
            **tables.get("sink", {}),
        },
        "dead_letter": {"table": dead_letter, **tables.get("dead_letter", {})},
        "checkpoint": "/unused",
    }
