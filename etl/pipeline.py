"""One pipeline: Kafka source -> frame -> resolve -> decode -> table + dead-letter sinks.

``BatchProcessor`` is the ``foreachBatch`` function. Everything it computes is a pure
transform from ``transforms/``; the IO is the schema lookup and the two sink commits, both
idempotent per (query id, batch id), so a batch replayed after a crash never lands twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark import StorageLevel

from etl.config import PipelineSettings, Settings, TableFormat
from etl.exceptions import ConfigError, ExpectationFailedError
from etl.kafka import kafka_source_options
from etl.registry import SchemaResolver, build_resolver
from etl.schema_evolution import ReaderSchema
from etl.secrets import scram_credentials
from etl.sinks import CommitInfo, TableSink, TableSpec, load_sink
from transforms.decode import decode_avro, inflate_zlib
from transforms.expectations import Action, Expectation, count_violations, flag_dropped
from transforms.framing import parse_frame
from transforms.routing import dead_letter_rows, flatten_decoded, table_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

log = logging.getLogger(__name__)

RECORDS_READ_KEY = "etl.records-read"
RECORDS_WRITTEN_KEY = "etl.records-written"
RECORDS_DEAD_KEY = "etl.records-dead-lettered"


@dataclass
class BatchResult:
    """Counts of one micro-batch; read == written + dead_lettered always holds."""

    batch_id: int
    read: int
    written: int
    dead_lettered: int
    committed: bool
    violations: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodedBatch:
    """A decoded batch: flattened rows (cached) and what was counted on the way."""

    rows: DataFrame
    read: int
    violations: dict[str, int]


@dataclass
class BatchProcessor:
    """The foreachBatch function of one pipeline."""

    name: str
    settings: PipelineSettings
    resolver: SchemaResolver
    reader: ReaderSchema
    sink: TableSink
    dead_letter: TableSink
    clock: functools.partial[dt.datetime] = field(
        default_factory=lambda: functools.partial(dt.datetime.now, dt.UTC)
    )
    results: list[BatchResult] = field(default_factory=list)
    _query_id: str | None = None
    _started: threading.Event = field(default_factory=threading.Event)

    def bind(self, query_id: str) -> None:
        """Sets the streaming query id (known only once the query has started)."""
        self._query_id = query_id
        self._started.set()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        """Processes one micro-batch (called by Spark's foreachBatch)."""
        # the first batch can start before start() returned the query id to bind()
        if not self._started.wait(timeout=120):
            raise RuntimeError("streaming query id was never bound to the batch processor")
        assert self._query_id is not None
        try:
            self.results.append(self.process(batch, batch_id, query_id=self._query_id))
        except Exception as err:
            # Spark wraps this in a StreamingQueryException whose first lines are py4j's; say
            # the cause plainly here, where it is known
            log.error("%s: batch %d failed, nothing committed: %s", self.name, batch_id, err)
            raise

    @property
    def expectations(self) -> list[Expectation]:
        """The pipeline's expectations, typed for the transforms."""
        return [Expectation(e.name, e.expr, Action(e.action)) for e in self.settings.expectations]

    def process(self, batch: DataFrame, batch_id: int, *, query_id: str) -> BatchResult:
        """Frames, decodes, checks and commits one batch of Kafka records.

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
        ingested_at = self.clock()
        with self.decoded(batch) as decoded:
            dead = decoded.rows.transform(
                dead_letter_rows(pipeline=self.name, batch_id=batch_id, ingested_at=ingested_at)
            )
            dead_count = dead.count()
            read, violations = decoded.read, decoded.violations
            counts = {
                RECORDS_READ_KEY: str(read),
                RECORDS_WRITTEN_KEY: str(read - dead_count),
                RECORDS_DEAD_KEY: str(dead_count),
                **{f"etl.expectation.{k}.violations": str(v) for k, v in violations.items()},
            }
            commit = CommitInfo(self.name, query_id, batch_id, extra=counts)
            committed = self.sink.write_batch(decoded.rows.transform(table_rows()), commit)
            if dead_count:
                self.dead_letter.write_batch(dead, commit)
        result = BatchResult(batch_id, read, read - dead_count, dead_count, committed, violations)
        log.info("batch %s", json.dumps({"pipeline": self.name, **result.__dict__}))
        return result

    @contextlib.contextmanager
    def decoded(self, batch: DataFrame) -> Iterator[DecodedBatch]:
        """Frames, resolves, decodes and checks Kafka-shaped rows; cached while in the block.

        Args:
            batch: Rows with Kafka's columns (key, value, topic, partition, offset, timestamp).

        Yields:
            The flattened rows (good and failed, see ``transforms.routing``) and counts.

        Raises:
            ExpectationFailedError: A ``fail`` expectation was violated.
            RegistryUnavailableError: The registry stayed unreachable.
        """
        decode = self.settings.decode
        framed = batch.transform(
            parse_frame(
                wire_format=decode.wire_format.value, max_value_bytes=decode.max_value_bytes
            )
        ).persist(StorageLevel.MEMORY_AND_DISK)
        rows: DataFrame | None = None
        try:
            ids = [
                row[0]
                for row in framed.where("_error_class IS NULL")
                .select("_schema_id")
                .distinct()
                .collect()
            ]
            writers = self.resolver.resolve(ids)
            rejected = self.reader.admit(writers)
            for change in self.reader.changes:
                log.info("%s: reader schema evolved: %s", self.name, change)
            self.reader.changes.clear()
            for version_id, reason in rejected.items():
                log.warning("%s: schema version %s rejected: %s", self.name, version_id, reason)
            rows = (
                framed.transform(inflate_zlib(max_bytes=decode.max_value_bytes))
                .transform(
                    decode_avro(
                        writer_schemas=writers,
                        reader_schema=self.reader.json(),
                        rejected=rejected,
                    )
                )
                .transform(flatten_decoded())
                .transform(self._checked(flag_dropped(expectations=self.expectations)))
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
            read = framed.count()
            yield DecodedBatch(rows, read, self._violations(rows))
        finally:
            if rows is not None:
                rows.unpersist()
            framed.unpersist()

    def _violations(self, rows: DataFrame) -> dict[str, int]:
        """Counts violations per expectation; raises for ``fail`` ones, logs ``warn`` ones."""
        expectations = self.expectations
        if not expectations:
            return {}
        counted = rows.transform(self._checked(count_violations(expectations=expectations))).first()
        assert counted is not None
        violations = {e.name: int(counted[e.name]) for e in expectations}
        for e in expectations:
            if not violations[e.name]:
                continue
            if e.action is Action.FAIL:
                raise ExpectationFailedError(
                    f"pipeline {self.name}: expectation '{e.name}' ({e.expr}) failed for "
                    f"{violations[e.name]} rows; batch not committed"
                )
            if e.action is Action.WARN:
                log.warning(
                    "%s: expectation '%s' (%s) failed for %d rows (warn)",
                    self.name,
                    e.name,
                    e.expr,
                    violations[e.name],
                )
        return violations

    def _checked(
        self, transform: Callable[[DataFrame], DataFrame]
    ) -> Callable[[DataFrame], DataFrame]:
        """Wraps an expectation transform so a bad SQL expression names its config key."""

        def _run(df: DataFrame) -> DataFrame:
            try:
                return transform(df)
            except Exception as err:
                if type(err).__name__ not in ("AnalysisException", "ParseException"):
                    raise
                raise ConfigError(
                    f"pipelines.{self.name}.expectations: an expression does not compile "
                    f"against the decoded columns: {str(err).splitlines()[0]}"
                ) from err

        return _run


def build_processor(settings: Settings, name: str) -> BatchProcessor:
    """Wires a pipeline's resolver and sinks from settings (no Spark work yet)."""
    pipeline = settings.pipeline(name)
    resolver, reader_schema = build_resolver(pipeline.decode, settings.aws, settings.registry)
    sink = load_sink(
        pipeline.sink.format,
        TableSpec(
            pipeline.sink.table,
            tuple(pipeline.sink.partition_by),
            dict(pipeline.sink.properties),
        ),
    )
    dead_letter = load_sink(
        TableFormat.ICEBERG,
        TableSpec(
            pipeline.dead_letter.table,
            ("days(ingested_at)",),
            {"format-version": "2"},
            evolve=False,
        ),
    )
    return BatchProcessor(
        name, pipeline, resolver, ReaderSchema.from_json(reader_schema), sink, dead_letter
    )


def start_pipeline(
    spark: SparkSession, settings: Settings, name: str, processor: BatchProcessor | None = None
) -> tuple[StreamingQuery, BatchProcessor]:
    """Starts one pipeline's streaming query.

    Args:
        spark: The session from ``build_spark``.
        settings: Parsed settings.
        name: The pipeline to start.
        processor: A prepared processor (tests inject one); built from settings if None.

    Returns:
        The running query and its processor (whose ``results`` fill as batches commit).
    """
    pipeline = settings.pipeline(name)
    processor = processor or build_processor(settings, name)
    options = kafka_source_options(
        pipeline.source,
        scram_credentials=functools.partial(
            scram_credentials, endpoint_url=settings.aws.endpoint_url, region=settings.aws.region
        ),
    )
    stream = spark.readStream.format("kafka").options(**options).load()
    writer = (
        stream.writeStream.queryName(name)
        .option("checkpointLocation", pipeline.checkpoint)
        .foreachBatch(processor)
    )
    if pipeline.trigger.mode == "available_now":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=pipeline.trigger.interval)
    query = writer.start()
    processor.bind(str(query.id))
    return query, processor
