"""Kafka offsets of a micro-batch: lineage in commit metadata, consumer-group commits, lag.

Spark's Kafka source keeps its offsets in the checkpoint and commits none to Kafka, so
standard tooling (``kafka-consumer-groups``, Burrow, MSK's CloudWatch lag metrics) sees no
consumer. After each batch's table commits, ``ConsumerGroup`` commits the batch's end
offsets to a group of the pipeline's own (never ahead of the table: a crash in between
leaves the group behind, and the next batch commits past it) and measures the lag behind
the partitions' latest offsets. It talks to the brokers through Kafka's own Admin client
in the driver's JVM, configured with the source's ``kafka.*`` options, so it uses the same
auth (IAM, SCRAM, TLS) and the same jars as the source.

Offset ranges are half-open, as Kafka's: ``start`` is the first offset a batch read, ``end``
the next one to read (what a consumer group commits).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming.query import StreamingQueryManager

log = logging.getLogger(__name__)

_KAFKA_PREFIX = "kafka."
# how long one Admin call may take before the batch's offsets are reported uncommitted
ADMIN_TIMEOUT_S = 10
# every group with an open Admin client, so an embedding process can close them all; held
# strongly: a group collected while open would leave its client running in the JVM
_OPEN: set[ConsumerGroup] = set()


@dataclass(frozen=True, order=True)
class OffsetRange:
    """The records of one topic partition a batch read: offsets ``start`` to ``end - 1``."""

    topic: str
    partition: int
    # None: a partition new to the query, read from its earliest retained offset
    start: int | None
    end: int


def ranges_json(ranges: Iterable[OffsetRange]) -> str:
    """Compact JSON of offset ranges (the form stored in commit metadata): Spark's offset
    shape with a ``[start, end]`` pair per partition, ``{"orders": {"0": [1400, 1702]}}``.

    About 17 bytes a partition: Iceberg keeps every live snapshot's summary in each metadata
    file it writes, so the size counts on tables with many partitions and many snapshots.
    """
    by_topic: dict[str, dict[str, list[int | None]]] = {}
    for r in sorted(ranges, key=_order):
        by_topic.setdefault(r.topic, {})[str(r.partition)] = [r.start, r.end]
    return json.dumps(by_topic, separators=(",", ":"))


def parse_ranges(text: str) -> tuple[OffsetRange, ...]:
    """Offset ranges from ``ranges_json``'s form, sorted.

    Raises:
        ValueError: Not that form.
    """
    try:
        by_topic = json.loads(text)
        return tuple(
            sorted(
                (
                    OffsetRange(
                        str(topic),
                        int(partition),
                        None if bounds[0] is None else int(bounds[0]),
                        int(bounds[1]),
                    )
                    for topic, partitions in by_topic.items()
                    for partition, bounds in partitions.items()
                ),
                key=_order,
            )
        )
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as err:
        raise ValueError(
            f'expected offset ranges as {{"topic": {{"partition": [start, end]}}}}, '
            f"found {text[:80]!r}"
        ) from err


def ranges_between(
    start: Mapping[str, Mapping[str, int]], end: Mapping[str, Mapping[str, int]]
) -> tuple[OffsetRange, ...]:
    """Ranges from two of Spark's Kafka offsets (``{"topic": {"partition": offset}}``)."""
    return tuple(
        sorted(
            (
                OffsetRange(topic, int(p), start.get(topic, {}).get(p), int(offset))
                for topic, partitions in end.items()
                for p, offset in partitions.items()
            ),
            key=_order,
        )
    )


def _order(r: OffsetRange) -> tuple[str, int]:
    """Sort key: topic, then partition."""
    return (r.topic, r.partition)


def planned_ranges(streams: StreamingQueryManager, query_id: str) -> tuple[OffsetRange, ...] | None:
    """The offsets Spark planned for the query's running batch, or None if unreadable.

    Read from the query's micro-batch execution while the batch runs (its end offsets are
    the available ones, its start the committed ones or, for the first batch, the source's
    initial offsets). These are Spark internals: on another Spark version, or for a query
    that is not a Kafka micro-batch query, the answer is None and callers use the offsets of
    the rows instead.
    """
    try:
        query = streams.get(query_id)
        if query is None:
            return None
        execution = query._jsq.streamingQuery()
        end = _progress_offsets(execution.availableOffsets())
        start = _progress_offsets(execution.committedOffsets())
        if not start:
            sources = execution.sources()
            if sources.size() != 1:
                return None
            start = json.loads(sources.head().initialOffset().json())
        if not end:
            return None
        return ranges_between(start, end)
    except Exception as err:  # py4j reflection on internals: degrade, never fail the batch
        log.debug("planned offsets unreadable: %s", err)
        return None


def _progress_offsets(progress: Any) -> dict[str, dict[str, int]]:
    """The Kafka offsets in a StreamProgress (a map of one source to its offset)."""
    merged: dict[str, dict[str, int]] = {}
    entries = progress.iterator()
    while entries.hasNext():
        offset = json.loads(entries.next()._2().json())
        for topic, partitions in offset.items():
            merged.setdefault(topic, {}).update({p: int(o) for p, o in partitions.items()})
    return merged


def admin_config(source_options: Mapping[str, str], *, client_id: str) -> dict[str, str]:
    """Kafka client configs from the source's options (its ``kafka.*`` ones, unprefixed)."""
    config = {
        k.removeprefix(_KAFKA_PREFIX): v
        for k, v in source_options.items()
        if k.startswith(_KAFKA_PREFIX)
    }
    config["client.id"] = client_id
    return config


@dataclass(eq=False)
class ConsumerGroup:
    """Commits a pipeline's batch end offsets to its consumer group and measures the lag.

    The Admin client is created on first use in the driver's JVM and reused; ``close``
    releases it. Secrets in the config (SCRAM's JAAS line) never reach a log.
    """

    group: str
    config: Mapping[str, str] = field(repr=False)
    commit_enabled: bool = True
    _admin: Any = field(default=None, repr=False)
    _jvm: Any = field(default=None, repr=False)

    def commit(self, spark: SparkSession, ranges: Iterable[OffsetRange], *, note: str) -> None:
        """Commits each range's end offset to the group (``note`` becomes the metadata).

        Raises:
            Exception: From Kafka's Admin client (unreachable broker, missing permission).
        """
        admin, jvm = self._client(spark)
        offsets = jvm.java.util.HashMap()
        for r in ranges:
            offsets.put(
                jvm.org.apache.kafka.common.TopicPartition(r.topic, r.partition),
                jvm.org.apache.kafka.clients.consumer.OffsetAndMetadata(r.end, note),
            )
        if offsets.isEmpty():
            return
        seconds = jvm.java.util.concurrent.TimeUnit.SECONDS
        admin.alterConsumerGroupOffsets(self.group, offsets).all().get(ADMIN_TIMEOUT_S, seconds)

    def lag(self, spark: SparkSession, ranges: Iterable[OffsetRange]) -> dict[str, int]:
        """Records behind each partition's latest offset after the ranges' ends.

        Returns:
            ``"topic/partition"`` -> latest offset minus the range's end (never below 0).
        """
        admin, jvm = self._client(spark)
        latest = jvm.org.apache.kafka.clients.admin.OffsetSpec.latest()
        wanted = jvm.java.util.HashMap()
        ends: dict[str, tuple[Any, int]] = {}
        for r in ranges:
            tp = jvm.org.apache.kafka.common.TopicPartition(r.topic, r.partition)
            wanted.put(tp, latest)
            ends[f"{r.topic}/{r.partition}"] = (tp, r.end)
        if wanted.isEmpty():
            return {}
        seconds = jvm.java.util.concurrent.TimeUnit.SECONDS
        found = admin.listOffsets(wanted).all().get(ADMIN_TIMEOUT_S, seconds)
        return {name: max(0, found.get(tp).offset() - end) for name, (tp, end) in ends.items()}

    def close(self) -> None:
        """Closes the Admin client (if one was made)."""
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception as err:  # the JVM may be gone at shutdown
                log.debug("closing the admin client: %s", err)
            self._admin = None
            _OPEN.discard(self)

    def _client(self, spark: SparkSession) -> tuple[Any, Any]:
        """The Admin client and the JVM view, made once."""
        if self._admin is None:
            jvm = spark.sparkContext._jvm
            assert jvm is not None, "a live SparkContext has a JVM"
            props = jvm.java.util.Properties()
            for key, value in self.config.items():
                props.setProperty(key, value)
            self._admin = jvm.org.apache.kafka.clients.admin.Admin.create(props)
            self._jvm = jvm
            _OPEN.add(self)
        return self._admin, self._jvm


def close_all() -> None:
    """Closes every open Admin client (for callers that started queries without closing
    their groups, e.g. a test session before its broker goes away)."""
    for group in list(_OPEN):
        group.close()
