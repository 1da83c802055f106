"""One pipeline: Kafka source -> decode -> table + dead-letter commits, one batch at a time.

``Pipeline`` is the ``foreachBatch`` function. Per batch it reads as extract -> transform ->
load: ``BatchDecoder.decode`` (frame, resolve, decode, check; ``etl.decoding``) and
``BatchCommitter.commit`` (idempotent table and dead-letter commits with exact counts;
``etl.commit``). Sinks come from ``etl.formats`` by the pipeline's table format.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from etl.commit import BatchCommitter, BatchResult
from etl.config import PartitionField, PartitionTransform, PipelineSettings, Settings, WriteMode
from etl.decoding import BatchDecoder
from etl.formats import TableSink, TableSpec, load_sink
from etl.formats.base import READER_SCHEMA_KEY, CommitInfo, UpsertSpec
from etl.kafka import kafka_source_options
from etl.paths import local_uri
from etl.privacy import build_forget_list, check_subject_fields
from etl.registry import build_resolver
from etl.secrets import scram_credentials
from transforms.schema_evolution import ReaderSchema
from transforms.upsert import mark_changes

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

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


@dataclass
class Pipeline:
    """The foreachBatch function of one pipeline."""

    name: str
    decoder: BatchDecoder
    committer: BatchCommitter
    clock: Callable[[], dt.datetime] = utc_now
    # called with each batch's result (the benchmarks time batches through it)
    on_result: Callable[[BatchResult], None] | None = None
    last: BatchResult | None = None
    totals: Totals = field(default_factory=Totals)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Processes one micro-batch (called by Spark's foreachBatch)."""
        query_id = batch.sparkSession.sparkContext.getLocalProperty(_QUERY_ID_PROPERTY)
        if not query_id:
            raise RuntimeError(f"{self.name}: batch {batch_id} runs outside a streaming query")
        try:
            self.process(batch, batch_id, query_id=query_id)
        except Exception as err:
            # Spark wraps this in a StreamingQueryException whose first lines are py4j's; say
            # the cause plainly here, where it is known
            log.error("%s: batch %d failed, nothing committed: %s", self.name, batch_id, err)
            raise

    def process(self, batch: DataFrame, batch_id: int, *, query_id: str) -> BatchResult:
        """Decodes one batch of Kafka records and commits it exactly once.

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
            result = self.committer.commit(decoded, commit, ingested_at=self.clock())
        result = BatchResult(**{**result.__dict__, "seconds": time.monotonic() - started})
        self.last = result
        self.totals.add(result)
        log.info("batch %s", json.dumps({"pipeline": self.name, **result.__dict__}))
        if self.on_result is not None:
            self.on_result(result)
        return result


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
        commit).
    """
    source = settings.pipeline(name)
    pipeline = pipeline or build_pipeline(settings, name)
    options = kafka_source_options(
        source.source,
        scram_credentials=functools.partial(
            scram_credentials, endpoint_url=settings.aws.endpoint_url, region=settings.aws.region
        ),
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
