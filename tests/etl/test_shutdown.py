from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from etl.shutdown import GracefulStop


@dataclass
class FakeQuery:
    active: bool = True
    stopped_at: list[float] = field(default_factory=list)
    # the batch id Spark's progress names (recorded in the commit log), and when it did
    recorded: int | None = None
    recorded_at: list[float] = field(default_factory=list)
    # a trigger running (the next batch being planned or refused)
    triggering: bool = False

    @property
    def isActive(self) -> bool:
        return self.active

    @property
    def lastProgress(self) -> dict[str, Any] | None:
        return None if self.recorded is None else {"batchId": self.recorded}

    @property
    def status(self) -> dict[str, Any]:
        return {"isTriggerActive": self.triggering}

    def end_by_itself(self) -> None:
        self.triggering = False
        self.active = False

    def record(self, batch_id: int) -> None:
        self.recorded_at.append(time.monotonic())
        self.recorded = batch_id

    def stop(self) -> None:
        self.stopped_at.append(time.monotonic())
        self.active = False


@dataclass
class FakeBatches:
    name: str = "orders"
    idle: threading.Event = field(default_factory=threading.Event)
    idle_at: list[float] = field(default_factory=list)
    last: int | None = 4

    def last_batch_id(self) -> int | None:
        return self.last

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        return self.idle.wait(timeout_s)

    def finish(self) -> None:
        self.idle_at.append(time.monotonic())
        self.idle.set()


def test_stop_waits_for_the_running_batch_and_its_record_then_stops_the_query() -> None:
    query, batches = FakeQuery(recorded=3), FakeBatches()
    threading.Timer(0.2, batches.finish).start()
    # Spark records batch 4 in its commit log a little after the function returned
    threading.Timer(0.4, query.record, args=(4,)).start()
    GracefulStop().stop([(query, batches)])
    assert batches.idle_at and query.recorded_at and query.stopped_at
    assert query.stopped_at[0] >= query.recorded_at[0] >= batches.idle_at[0]
    assert not query.active


def test_a_query_whose_next_batch_is_refused_ends_by_itself_without_a_stop() -> None:
    query, batches = FakeQuery(recorded=4, triggering=True), FakeBatches()
    batches.finish()
    threading.Timer(0.3, query.end_by_itself).start()
    GracefulStop().stop([(query, batches)])
    assert not query.active and query.stopped_at == []


def test_stop_of_an_idle_query_that_ran_nothing_is_immediate() -> None:
    query, batches = FakeQuery(), FakeBatches(last=None)
    batches.finish()
    started = time.monotonic()
    GracefulStop().stop([(query, batches), (FakeQuery(active=False), FakeBatches())])
    assert query.stopped_at and query.stopped_at[0] - started < 1.0


def test_first_signal_asks_a_stop_second_exits_at_once(caplog: pytest.LogCaptureFixture) -> None:
    exits: list[int] = []
    stop = GracefulStop(exit_now=exits.append)
    before = signal.getsignal(signal.SIGTERM)
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
    assert signal.getsignal(signal.SIGTERM) == before
    assert "stopping after the running batch commits" in caplog.text
