"""One upsert scenario every format runs: Kafka batches of order events, and the table they
must leave, computed here independently of the product (a plain Python model of the rule).

The rule: per key, the record with the larger ``updated_ts`` wins (null loses to any value,
equal values: the larger Kafka offset); ``status == CANCELLED`` marks a delete, and so does a
Kafka tombstone keyed by ``order_id`` (ordered by Kafka offset alone). Covered: updates,
duplicates within a batch, late out-of-order events, a delete of an absent key, delete then
re-insert, a null ordering value, a record without its key (a dead letter).
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
    ],
]


@dataclass
class Row:
    """The model's view of a table row."""

    record: dict[str, Any]
    offset: int


@dataclass
class Model:
    """The table the batches must leave, by the rule in the module doc."""

    rows: dict[str, Row] = field(default_factory=dict)

    def apply(self, batch: list[tuple[int, Event]]) -> None:
        """Applies one batch of (offset, event)."""
        winners: dict[str, tuple[int, Event]] = {}
        for offset, event in batch:
            best = winners.get(event.key)
            if best is None or _beats(
                (offset, event), best, log_order=_log_order(batch, event.key)
            ):
                winners[event.key] = (offset, event)
        for key, (offset, event) in winners.items():
            current = self.rows.get(key)
            delete = event.record is None or event.record["status"] == "CANCELLED"
            if current is not None and not _newer(offset, event, current):
                continue
            if delete:
                self.rows.pop(key, None)
            else:
                assert event.record is not None
                self.rows[key] = Row(event.record, offset)


def _log_order(batch: list[tuple[int, Event]], key: str) -> bool:
    return any(e.key == key and e.record is None for _, e in batch)


def _ordering(event: Event) -> dt.datetime | None:
    return None if event.record is None else event.record["updated_ts"]


def _beats(a: tuple[int, Event], b: tuple[int, Event], *, log_order: bool) -> bool:
    if log_order:
        return a[0] > b[0]
    oa, ob = _ordering(a[1]), _ordering(b[1])
    if oa == ob:
        return a[0] > b[0]
    if oa is None or ob is None:
        return ob is None
    return oa > ob


def _newer(offset: int, event: Event, current: Row) -> bool:
    if event.record is None:  # a tombstone: log order
        return offset > current.offset
    new, old = event.record["updated_ts"], current.record["updated_ts"]
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
    offset = 0
    for batch in BATCHES:
        numbered = []
        for event in batch:
            numbered.append((offset, event))
            offset += 1
        model.apply(numbered)
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
