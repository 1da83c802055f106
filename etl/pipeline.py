"""One pipeline: Kafka source -> decode -> table + dead-letter commits, one batch at a time.

``Pipeline`` is the ``foreachBatch`` function. Per batch it reads as extract -> transform ->
load: ``BatchDecoder.decode`` (frame, resolve, decode, check; ``etl.decoding``) and
``BatchCommitter.commit`` (idempotent table and dead-letter commits with exact counts;
``etl.commit``). Sinks come from ``etl.formats`` by the pipeline's table format.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etl import logs
from etl.commit import BatchCommitter, BatchResult
from etl.config import PartitionField, PartitionTransform, PipelineSettings, Settings, WriteMode
from etl.decoding import BatchDecoder
from etl.exceptions import StopRequested
from etl.formats import TableSink, TableSpec, load_sink
from etl.formats.base import READER_SCHEMA_KEY, CommitInfo, UpsertSpec
from etl.kafka import kafka_source_options
from etl.logs import first_line
from etl.offsets import ConsumerGroup, OffsetRange, admin_config, planned_ranges
from etl.paths import local_uri
from etl.privacy import build_forget_list, check_subject_fields
from etl.registry import build_resolver
from etl.secrets import scram_credentials
from etl.shutdown import quiet_stream_errors
from transforms.schema_evolution import ReaderSchema
from transforms.upsert import mark_changes

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery, StreamingQueryManager

log = logging.getLogger(__name__)

# Spark sets it on the thread that runs a micro-batch (StreamExecution.QUERY_ID_KEY); the
# foreachBatch callback runs on that thread, so the id needs no binding after start()
_QUERY_ID_PROPERTY = "sql.streaming.queryId"
DEAD_LETTER_PARTITIONING = (PartitionField("ingested_at", PartitionTransform.DAY),)


def utc_now() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass
class Totals:
    """Running counts of a pipeline's batches in this process (bounded state)."""

    batches: int = 0
    read: int = 0
    written: int = 0
    dead_lettered: int = 0
    forgotten: int = 0

    def add(self, result: BatchResult) -> None:
        """Adds one batch's counts."""
        self.batches += 1
        self.read += result.read
        self.written += result.written if result.committed else 0
        self.dead_lettered += result.dead_lettered if result.committed else 0
        self.forgotten += result.forgotten


def _set_event() -> threading.Event:
    """An event that starts set."""
    event = threading.Event()
    event.set()
    return event


@dataclass(frozen=True)
class BatchProgress:
    """What one batch did: the JSON progress line the ingest job logs per batch."""

    pipeline: str
    query_id: str
    result: BatchResult
    # Spark's planned offsets of the batch (or, if unreadable, those of its rows)
    offsets: tuple[OffsetRange, ...]
    # the consumer group the end offsets went to; None when not committed (disabled, failed)
    group: str | None
    # records behind each partition's latest offset after this batch; None if not measured
    lag: Mapping[str, int] | None
    decode_s: float
    write_s: float
    offsets_s: float

    def fields(self) -> dict[str, Any]:
        """The progress as one flat JSON-able mapping."""
        result = self.result
        return {
            "pipeline": self.pipeline,
            "query_id": self.query_id,
            "batch_id": result.batch_id,
            "committed": result.committed,
            "read": result.read,
            "written": result.written,
            "dead_lettered": result.dead_lettered,
            "forgotten": result.forgotten,
            "violations": dict(result.violations),
            "offsets": [dataclasses.asdict(r) for r in self.offsets],
            "consumer_group": self.group,
            "lag": None if self.lag is None else sum(self.lag.values()),
            "lag_by_partition": None if self.lag is None else dict(self.lag),
            "decode_s": round(self.decode_s, 3),
            "write_s": round(self.write_s, 3),
            "offsets_s": round(self.offsets_s, 3),
            "seconds": round(result.seconds, 3),
        }


@dataclass
class Pipeline:
    """The foreachBatch function of one pipeline."""

    name: str
    decoder: BatchDecoder
    committer: BatchCommitter
    clock: Callable[[], dt.datetime] = utc_now
    # called with each batch's result (the benchmarks time batches through it)
    on_result: Callable[[BatchResult], None] | None = None
    # commits each batch's end offsets to the pipeline's consumer group and measures the lag
    # (None: neither, e.g. a pipeline driven batch by batch in tests)
    group: ConsumerGroup | None = None
    # the query manager of the session that started the query: Spark's planned offsets of
    # the running batch are read through it (the batch's own session is a clone without it)
    streams: StreamingQueryManager | None = None
    # set when a graceful stop was asked for: a batch starting after it is refused before it
    # does anything (see etl.shutdown)
    stopping: threading.Event | None = None
    last_progress: BatchProgress | None = None
    totals: Totals = field(default_factory=Totals)
    # set while no batch of this pipeline runs (a graceful stop waits for it)
    _idle: threading.Event = field(default_factory=_set_event, repr=False)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Processes one micro-batch (called by Spark's foreachBatch)."""
        query_id = batch.sparkSession.sparkContext.getLocalProperty(_QUERY_ID_PROPERTY)
        if not query_id:
            raise RuntimeError(f"{self.name}: batch {batch_id} runs outside a streaming query")
        if self.stopping is not None and self.stopping.is_set():
            quiet_stream_errors(batch.sparkSession)
            raise StopRequested(f"{StopRequested.MARKER}: batch {batch_id} of {self.name} not run")
        self._idle.clear()
        try:
            self.process(batch, batch_id, query_id=query_id)
        except Exception as err:
            # Spark wraps this in a StreamingQueryException whose first lines are py4j's; say
            # the cause plainly here, where it is known
            log.error("%s: batch %d failed, nothing committed: %s", self.name, batch_id, err)
            raise
        finally:
            self._idle.set()

    @property
    def last(self) -> BatchResult | None:
        """The counts of the last batch this process ran, or None."""
        return None if self.last_progress is None else self.last_progress.result

    def last_batch_id(self) -> int | None:
        """The id of the last batch this process ran, or None."""
        return None if self.last is None else self.last.batch_id

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Waits until no batch of this pipeline runs; False if the timeout passed first."""
        return self._idle.wait(timeout_s)

    def process(self, batch: DataFrame, batch_id: int, *, query_id: str) -> BatchResult:
        """Decodes one batch of Kafka records and commits it exactly once.

        After the table commits, the batch's end offsets go to the consumer group (never
        before: the group may lag the table, never lead it) and one progress line is logged.

        Args:
            batch: Rows from Spark's Kafka source.
            batch_id: The micro-batch id.
            query_id: The streaming query id (stable across restarts from one checkpoint).

        Returns:
            The batch's counts.

        Raises:
            ExpectationFailedError: A ``fail`` expectation was violated (nothing committed).
            RegistryUnavailableError: The registry stayed unreachable (nothing committed).
        """
        started = time.monotonic()
        commit = CommitInfo(self.name, query_id, batch_id)
        with self.decoder.decode(batch) as decoded:
            decoded_at = time.monotonic()
            result = self.committer.commit(decoded, commit, ingested_at=self.clock())
            rows_offsets = decoded.offsets
        written_at = time.monotonic()
        planned = planned_ranges(self.streams, query_id) if self.streams is not None else None
        offsets = planned or rows_offsets
        group, lag = self._report_offsets(batch.sparkSession, offsets, commit)
        done = time.monotonic()
        result = dataclasses.replace(result, seconds=done - started)
        progress = BatchProgress(
            self.name,
            query_id,
            result,
            offsets,
            group,
            lag,
            decode_s=decoded_at - started,
            write_s=written_at - decoded_at,
            offsets_s=done - written_at,
        )
        self.last_progress = progress
        self.totals.add(result)
        fields = progress.fields()
        log.info("batch %s", json.dumps(fields), extra={logs.EVENT: "batch", logs.FIELDS: fields})
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _report_offsets(
        self, spark: SparkSession, offsets: tuple[OffsetRange, ...], commit: CommitInfo
    ) -> tuple[str | None, dict[str, int] | None]:
        """Commits the end offsets to the group and measures the lag (failures only logged:
        the table commit stands, and the next batch commits newer offsets)."""
        if self.group is None or not offsets:
            return None, None
        committed: str | None = None
        if self.group.commit_enabled:
            try:
                self.group.commit(spark, offsets, note=f"{commit.query_id}/{commit.batch_id}")
                committed = self.group.group
            except Exception as err:
                log.warning(
                    "%s: batch %d: offsets not committed to group %s: %s",
                    self.name,
                    commit.batch_id,
                    self.group.group,
                    first_line(err),
                )
                # the broker did not take the commit: asking it for the lag would add a
                # second wait to the batch
                return None, None
        try:
            return committed, self.group.lag(spark, offsets)
        except Exception as err:
            log.warning(
                "%s: batch %d: lag not measured: %s", self.name, commit.batch_id, first_line(err)
            )
            return committed, None


def stored_reader_schema(table: TableSink, spark: SparkSession) -> str | None:
    """The reader schema the table's newest commit recorded."""
    return table.latest_property(spark, READER_SCHEMA_KEY)


def pipeline_tables(pipeline: PipelineSettings) -> tuple[TableSink, TableSink]:
    """The sinks of a pipeline's table and of its dead-letter table (no Spark work yet)."""
    sink = pipeline.sink
    upsert = (
        UpsertSpec(tuple(sink.key), str(sink.ordering)) if sink.mode is WriteMode.UPSERT else None
    )
    table = load_sink(
        sink.format,
        TableSpec(
            sink.table,
            sink.partition_fields,
            dict(sink.properties),
            upsert=upsert,
            options=sink.format_options,
            location=local_uri(sink.location) if sink.location else None,
            maintenance=pipeline.maintenance,
        ),
    )
    dead_letter = load_sink(
        sink.format,
        TableSpec(
            pipeline.dead_letter.table,
            DEAD_LETTER_PARTITIONING,
            evolve=False,
            location=local_uri(pipeline.dead_letter.location)
            if pipeline.dead_letter.location
            else None,
            maintenance=pipeline.maintenance,
        ),
    )
    return table, dead_letter


def build_pipeline(settings: Settings, name: str) -> Pipeline:
    """Wires a pipeline's resolver, decoder and sinks from settings (no Spark work yet)."""
    pipeline = settings.pipeline(name)
    resolver, reader_schema = build_resolver(pipeline.decode, settings.aws, settings.registry)
    check_subject_fields(pipeline, name, reader_schema)
    forget_list = build_forget_list(pipeline, settings.aws)
    table, dead_letter = pipeline_tables(pipeline)
    changes = None
    upsert = table.spec.upsert
    if upsert is not None:
        deletes = pipeline.sink.deletes
        changes = mark_changes(
            keys=upsert.keys,
            delete_field=deletes.field if deletes else None,
            delete_value=deletes.equals if deletes else None,
            tombstones=bool(deletes and deletes.tombstones),
        )
    expectations = tuple(pipeline.expectations)
    return Pipeline(
        name,
        BatchDecoder(
            name,
            pipeline.decode,
            resolver,
            ReaderSchema.from_json(reader_schema, widen=table.widens_types),
            expectations,
            changes,
            functools.partial(stored_reader_schema, table),
            forget_list.marker if forget_list is not None else None,
        ),
        BatchCommitter(name, table, dead_letter, expectations),
    )


def start_pipeline(
    spark: SparkSession, settings: Settings, name: str, pipeline: Pipeline | None = None
) -> tuple[StreamingQuery, Pipeline]:
    """Starts one pipeline's streaming query.

    Args:
        spark: The session from ``build_spark``.
        settings: Parsed settings.
        name: The pipeline to start.
        pipeline: A prepared pipeline (tests and benchmarks inject one); built if None.

    Returns:
        The running query and its pipeline (whose ``last`` / ``totals`` fill as batches
        commit; its ``group`` commits the offsets, close it when the query has stopped).
    """
    source = settings.pipeline(name)
    pipeline = pipeline or build_pipeline(settings, name)
    options = kafka_source_options(
        source.source,
        scram_credentials=functools.partial(
            scram_credentials, endpoint_url=settings.aws.endpoint_url, region=settings.aws.region
        ),
    )
    pipeline.streams = spark.streams
    if pipeline.group is None:
        pipeline.group = ConsumerGroup(
            source.source.group_id(name),
            admin_config(options, client_id=f"{settings.spark.app_name}-{name}-offsets"),
            commit_enabled=source.source.commit_offsets,
        )
    stream = spark.readStream.format("kafka").options(**options).load()
    writer = (
        stream.writeStream.queryName(name)
        .option("checkpointLocation", source.checkpoint)
        .foreachBatch(pipeline)
    )
    if source.trigger.mode == "available_now":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=source.trigger.interval)
    return writer.start(), pipeline
