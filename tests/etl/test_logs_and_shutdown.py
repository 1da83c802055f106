from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest

from etl.commit import BatchResult
from etl.logs import EVENT, FIELDS, JsonFormatter
from etl.offsets import OffsetRange
from etl.pipeline import BatchProgress
from etl.shutdown import GracefulStop


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("etl.pipeline", logging.INFO, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_puts_an_events_fields_in_the_line() -> None:
    progress = BatchProgress(
        "orders",
        "q1",
        BatchResult(7, read=10, written=8, dead_lettered=1, committed=True, forgotten=1),
        (OffsetRange("orders", 0, 100, 110),),
        "streaming-etl.orders",
        {"orders/0": 5},
        decode_s=0.25,
        write_s=1.5,
        offsets_s=0.0125,
    )
    fields = progress.fields()
    line = JsonFormatter().format(_record("batch %s", **{EVENT: "batch", FIELDS: fields}))
    entry = json.loads(line)
    assert entry.pop("ts").endswith("Z")
    assert entry == {
        "level": "INFO",
        "logger": "etl.pipeline",
        "event": "batch",
        "pipeline": "orders",
        "query_id": "q1",
        "batch_id": 7,
        "committed": True,
        "read": 10,
        "written": 8,
        "dead_lettered": 1,
        "forgotten": 1,
        "violations": {},
        "offsets": [{"topic": "orders", "partition": 0, "start": 100, "end": 110}],
        "consumer_group": "streaming-etl.orders",
        "lag": 5,
        "lag_by_partition": {"orders/0": 5},
        "decode_s": 0.25,
        "write_s": 1.5,
        "offsets_s": 0.013,
        "seconds": 0.0,
    }


def test_json_formatter_keeps_plain_messages_and_errors_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        record = _record("it failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "it failed"
    assert "ValueError: bad" in entry["error"]


@dataclass
class FakeQuery:
    active: bool = True
    stopped_at: list[float] = field(default_factory=list)

    @property
    def isActive(self) -> bool:
        return self.active

    def stop(self) -> None:
        self.stopped_at.append(time.monotonic())
        self.active = False


@dataclass
class FakeBatches:
    name: str = "orders"
    idle: threading.Event = field(default_factory=threading.Event)
    idle_at: list[float] = field(default_factory=list)

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        return self.idle.wait(timeout_s)

    def finish(self) -> None:
        self.idle_at.append(time.monotonic())
        self.idle.set()


def test_stop_waits_for_the_running_batch_then_stops_the_query() -> None:
    query, batches = FakeQuery(), FakeBatches()
    finisher = threading.Timer(0.3, batches.finish)
    finisher.start()
    GracefulStop().stop([(query, batches)])
    assert batches.idle_at and query.stopped_at
    assert query.stopped_at[0] >= batches.idle_at[0]
    assert not query.active


def test_first_signal_asks_a_stop_second_exits_at_once(caplog: pytest.LogCaptureFixture) -> None:
    exits: list[int] = []
    stop = GracefulStop(exit_now=exits.append)
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes
        assert stop.requested.is_set() and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert exits == [128 + signal.SIGINT]
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle
    assert "stopping after the running batch commits" in caplog.text
