"""Graceful stop of streaming queries on SIGTERM / SIGINT (EMR step cancel, docker stop, Ctrl-C).

The first signal asks every query to stop between batches, so a batch is either committed
whole (table, dead letters, consumer-group offsets) or not started:

1. from then on the pipeline refuses to start a batch: its foreachBatch function raises
   ``StopRequested`` before it does anything (Spark wrote the batch's offsets to the
   checkpoint, so it runs again on restart);
2. the job waits until the running batch (if any) has returned and Spark has recorded it
   in the checkpoint's commit log (the query's progress names it), then stops the query.

A query ended by a refused batch is a clean stop, not an error. A second signal exits at once
(the table formats' commits are atomic, and a batch cut short is redone from the checkpoint).
Signals reach these handlers only in the Python driver process: under ``spark-submit`` the JVM
is the parent and takes a signal sent to it with Spark's shutdown hooks (no wait).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# how long to wait for Spark to record the last batch before stopping the query anyway
RECORD_WAIT_S = 30.0
# Spark's micro-batch loop logs a query that ended with an error under this logger
_STREAM_EXECUTION_LOGGER = "org.apache.spark.sql.execution.streaming"


class _Query(Protocol):
    """What a graceful stop needs of a streaming query."""

    @property
    def isActive(self) -> bool: ...

    @property
    def lastProgress(self) -> dict[str, Any] | None: ...

    @property
    def status(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class _Batches(Protocol):
    """What a graceful stop needs of the query's foreachBatch function."""

    name: str

    def wait_idle(self, timeout_s: float | None = None) -> bool: ...

    def last_batch_id(self) -> int | None: ...


@dataclass
class GracefulStop:
    """Installs the signal handlers and stops queries between batches when asked to."""

    # exits the process at once on a second signal (tests replace it)
    exit_now: Callable[[int], Any] = os._exit
    requested: threading.Event = field(default_factory=threading.Event)
    _previous: dict[int, Any] = field(default_factory=dict, repr=False)

    def install(self) -> None:
        """Handles SIGTERM and SIGINT from now on (call from the main thread, after the
        SparkContext exists: pyspark installs a SIGINT handler of its own)."""
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Puts back the handlers that were there before ``install``."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        """First signal: ask for a stop; second: exit now."""
        name = signal.Signals(signum).name
        if self.requested.is_set():
            log.warning("%s again: exiting now; the running batch is redone on restart", name)
            self.exit_now(128 + signum)
            return
        self.requested.set()
        log.warning(
            "%s: stopping after the running batch commits (send it again to stop at once)", name
        )

    def stop(self, running: Iterable[tuple[_Query, _Batches]]) -> None:
        """Stops each query between batches: once its running batch (if any) has finished and
        is recorded, and no trigger is active (a batch about to start is refused by the
        pipeline and ends the query by itself)."""
        for query, batches in running:
            if query.isActive:
                while not batches.wait_idle(5.0):
                    log.info("%s: waiting for the running batch to commit", batches.name)
                self._await_record(query, batches.last_batch_id())
                # stop() interrupts the query's thread: between triggers that cuts a sleep; in
                # a trigger it would cut Spark's own checkpoint writes (harmless, but noisy)
                while query.isActive and query.status.get("isTriggerActive", False):
                    time.sleep(0.05)
                if query.isActive:
                    query.stop()
            log.info("%s: stopped between batches", batches.name)

    @staticmethod
    def _await_record(query: _Query, last: int | None) -> None:
        """Waits (bounded) until Spark's progress names the last batch this process ran:
        Spark reports it after writing its commit-log entry, and a query stopped before that
        would replay the batch on restart (skipped by the replay check, but needless)."""
        deadline = time.monotonic() + RECORD_WAIT_S
        while last is not None and query.isActive and time.monotonic() < deadline:
            progress = query.lastProgress
            if progress is not None and int(progress["batchId"]) >= last:
                return
            time.sleep(0.05)


def quiet_stream_errors(spark: SparkSession) -> None:
    """Turns off the error logs of a failing foreachBatch function (py4j's and the stream
    execution's): a query ended by a graceful stop (a batch refused with ``StopRequested``) is
    not an error, and both would log it as one with a stack trace."""
    logging.getLogger("py4j.clientserver").setLevel(logging.CRITICAL)
    jvm = spark.sparkContext._jvm
    if jvm is None:
        return
    try:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            _STREAM_EXECUTION_LOGGER, jvm.org.apache.logging.log4j.Level.OFF
        )
    except Exception as err:  # another logging backend: the error stays in Spark's log
        log.debug("could not quiet %s: %s", _STREAM_EXECUTION_LOGGER, err)
