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
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import functions as F
from pyspark.sql.observation import Observation

from etl.config import PipelineSettings, Settings, TableFormat
from etl.exceptions import ConfigError, ExpectationFailedError
from etl.kafka import kafka_source_options
from etl.registry import SchemaResolver, build_resolver
from etl.schema_evolution import ReaderSchema
from etl.secrets import scram_credentials
from etl.sinks import CommitInfo, TableSink, TableSpec, load_sink
from transforms.decode import INFLATE_ZLIB_FUNCTION, decode_avro, inflate_zlib
from transforms.expectations import (
    Action,
    Expectation,
    count_violations,
    flag_dropped,
    violation_counts,
    violation_key,
)
from transforms.framing import parse_frame, schema_id_of_key
from transforms.routing import dead_letter_rows, flatten_decoded, table_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

log = logging.getLogger(__name__)

RECORDS_READ_KEY = "etl.records-read"
RECORDS_WRITTEN_KEY = "etl.records-written"
RECORDS_DEAD_KEY = "etl.records-dead-lettered"
_DEAD = "etl.dead"


def _inflate_engine(df: DataFrame) -> str:
    """``jvm`` when build_spark registered the JVM inflater, else ``python``."""
    return "jvm" if df.sparkSession.catalog.functionExists(INFLATE_ZLIB_FUNCTION) else "python"


def _first(df: DataFrame) -> dict[str, Any]:
    """The single row of an aggregate as a dict."""
    row = df.first()
    assert row is not None, "an aggregate without grouping returns one row"
    return row.asDict()


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
    """A decoded batch: flattened rows (lazy unless asked to cache) and the records read."""

    rows: DataFrame
    read: int


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

        One decode pass feeds the table write; the dead-letter and violation counts are
        observed during it (``DataFrame.observe``), and dead-letter rows are decoded again
        only when there are some. So the table snapshot carries the records read, and the
        dead-letter snapshot (and the batch log line) the full counts. A ``fail``
        expectation costs one more decode pass, before anything is committed.

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
        expectations = self.expectations
        metrics = [
            F.count(F.when(F.col("_error_class").isNotNull(), 1)).alias(_DEAD),
            *violation_counts(expectations=expectations),
        ]
        with self.decoded(batch) as decoded:
            rows, read = decoded.rows, decoded.read
            if any(e.action is Action.FAIL for e in expectations):
                self._violations(_first(rows.agg(*metrics)), fail=True)
            commit = CommitInfo(self.name, query_id, batch_id, extra={RECORDS_READ_KEY: str(read)})
            table = rows.transform(table_rows())
            committed = False
            # An all-failed batch skips the table commit: its write would be empty, and Spark
            # drops a plan that runs empty (with its observed metrics) before they are
            # reported, so the observation would never complete. Decoding up to the first
            # good row is a small job.
            observation = Observation(f"etl-{self.name}-{batch_id}-{uuid.uuid4()}")
            # checked first: an observed plan that never runs would leave its listener behind
            replayed = self.sink.committed_before(rows.sparkSession, commit)
            if not replayed and table.take(1):
                committed = self.sink.write_batch(
                    rows.observe(observation, *metrics).transform(table_rows()), commit
                )
            # a replayed or all-failed batch observed nothing: count instead
            counted = observation.get if committed else _first(rows.agg(*metrics))
            dead = int(counted[_DEAD])
            violations = self._violations(counted, fail=False)
            if dead:
                counts = {
                    RECORDS_READ_KEY: str(read),
                    RECORDS_WRITTEN_KEY: str(read - dead),
                    RECORDS_DEAD_KEY: str(dead),
                    **{f"etl.expectation.{k}.violations": str(v) for k, v in violations.items()},
                }
                committed |= self.dead_letter.write_batch(
                    rows.transform(
                        dead_letter_rows(
                            pipeline=self.name, batch_id=batch_id, ingested_at=ingested_at
                        )
                    ),
                    CommitInfo(self.name, query_id, batch_id, extra=counts),
                )
        result = BatchResult(batch_id, read, read - dead, dead, committed, violations)
        log.info("batch %s", json.dumps({"pipeline": self.name, **result.__dict__}))
        return result

    @contextlib.contextmanager
    def decoded(self, batch: DataFrame, *, cache_rows: bool = False) -> Iterator[DecodedBatch]:
        """Frames, resolves, decodes and checks Kafka-shaped rows.

        The input is cached while in the block (the schema-id scan and the decode both read
        it); the decoded rows only with ``cache_rows`` (for callers running several actions
        on them).

        Args:
            batch: Rows with Kafka's columns (key, value, topic, partition, offset, timestamp).
            cache_rows: Cache the decoded rows too.

        Yields:
            The flattened rows (good and failed, see ``transforms.routing``) and the count read.

        Raises:
            RegistryUnavailableError: The registry stayed unreachable.
        """
        decode = self.settings.decode
        wire_format = decode.wire_format.value
        owned = not batch.storageLevel.useMemory and not batch.storageLevel.useDisk
        source = batch.persist(StorageLevel.MEMORY_AND_DISK) if owned else batch
        rows: DataFrame | None = None
        try:
            framed = source.transform(
                parse_frame(wire_format=wire_format, max_value_bytes=decode.max_value_bytes)
            )
            # one small job: the distinct schema ids (bad frames have none), whether any body
            # is compressed, and the total
            per_key = framed.groupBy("_schema_key", "_compression").count().collect()
            read = sum(int(row["count"]) for row in per_key)
            keys = {bytes(row[0]) for row in per_key if row[0] is not None}
            ids = [schema_id_of_key(wire_format, key) for key in sorted(keys)]
            compressed = any(row[1] == "zlib" for row in per_key)
            writers = self.resolver.resolve(ids)
            rejected = self.reader.admit(writers)
            for change in self.reader.changes:
                log.info("%s: reader schema evolved: %s", self.name, change)
            self.reader.changes.clear()
            for version_id, reason in rejected.items():
                log.warning("%s: schema version %s rejected: %s", self.name, version_id, reason)
            if compressed:
                framed = framed.transform(
                    inflate_zlib(max_bytes=decode.max_value_bytes, engine=_inflate_engine(source))
                )
            rows = (
                framed.transform(
                    decode_avro(
                        wire_format=wire_format,
                        writer_schemas=writers,
                        reader_schema=self.reader.json(),
                        rejected=rejected,
                    )
                )
                .transform(flatten_decoded())
                .transform(self._checked(flag_dropped(expectations=self.expectations)))
            )
            if self.expectations:
                # analysed now (no job runs), so a bad expression names its config key
                rows.transform(self._checked(count_violations(expectations=self.expectations)))
            if cache_rows:
                rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
            yield DecodedBatch(rows, read)
        finally:
            if rows is not None and cache_rows:
                rows.unpersist()
            if owned:
                source.unpersist()

    def _violations(self, counted: Mapping[str, Any], *, fail: bool) -> dict[str, int]:
        """Violations per expectation from observed counts; raises for ``fail`` ones when
        ``fail``, else logs ``warn`` ones."""
        violations = {e.name: int(counted[violation_key(e)]) for e in self.expectations}
        for e in self.expectations:
            if not violations[e.name]:
                continue
            if fail and e.action is Action.FAIL:
                raise ExpectationFailedError(
                    f"pipeline {self.name}: expectation '{e.name}' ({e.expr}) failed for "
                    f"{violations[e.name]} rows; batch not committed"
                )
            if not fail and e.action is Action.WARN:
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
