"""Decoding one batch of Kafka rows: frame, resolve schema ids, inflate, decode, check.

``BatchDecoder.decode`` is the one decode path: the streaming ingest, the dead-letter
replay and the benchmarks all call it. Everything it computes is a pure transform from
``transforms/``; its IO is the schema lookup (one small Spark job for the distinct schema ids,
then the registry).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import functions as F

from etl.config import DecodeSettings
from etl.exceptions import ConfigError
from etl.offsets import OffsetRange
from etl.registry import SchemaResolver
from transforms.columns import COMPRESSION, DELETE_FLAG, SCHEMA_KEY
from transforms.decode import INFLATE_ZLIB_FUNCTION, decode_avro, inflate_zlib
from transforms.expectations import Expectation, count_violations, flag_dropped
from transforms.framing import parse_frame, schema_id_of_key
from transforms.routing import flatten_decoded
from transforms.schema_evolution import ReaderSchema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedBatch:
    """A decoded batch: flattened rows (good and failed, lazy unless cached), the number of
    records read, and the reader schema they were decoded with."""

    rows: DataFrame
    read: int
    reader_schema: str
    # the offsets of the records read, per topic partition (lowest, highest + 1)
    offsets: tuple[OffsetRange, ...] = ()


@dataclass
class BatchDecoder:
    """How one pipeline decodes Kafka rows; holds the pipeline's evolving reader schema."""

    pipeline: str
    settings: DecodeSettings
    resolver: SchemaResolver
    reader: ReaderSchema
    expectations: tuple[Expectation, ...] = ()
    # upsert tables: marks deletes and key-less rows (transforms.upsert.mark_changes) before
    # the expectations, which then skip deletes (a tombstone has no fields to check)
    changes: Callable[[DataFrame], DataFrame] | None = None
    # the reader schema the table last recorded (None: a new table); read once, before the
    # first decode, so a restarted job (or a replay) decides schema versions as before
    stored_schema: Callable[[SparkSession], str | None] | None = None
    # per batch, a transform flagging forgotten subjects' records (``etl.privacy``): called
    # once per decode, so a request recorded while the stream runs applies from the next batch
    forgetting: Callable[[SparkSession], Callable[[DataFrame], DataFrame]] | None = None
    _seeded: bool = field(default=False, repr=False)
    # whether build_spark registered the JVM inflater, looked up once
    _jvm_inflater: bool | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def decode(self, batch: DataFrame, *, cache_rows: bool = False) -> Iterator[DecodedBatch]:
        """Frames, resolves, decodes and checks Kafka-shaped rows.

        The input is cached while in the block (the schema-id scan and the decode both read
        it); the decoded rows only with ``cache_rows`` (for callers running several actions
        on them).

        Args:
            batch: Rows with Kafka's columns (key, value, topic, partition, offset, timestamp).
            cache_rows: Cache the decoded rows too.

        Yields:
            The flattened rows (see ``transforms.routing``), the count read, the reader schema.

        Raises:
            RegistryUnavailableError: The registry stayed unreachable.
            ConfigError: An expectation does not compile against the decoded columns.
        """
        decode = self.settings
        self._seed(batch.sparkSession)
        owned = not batch.storageLevel.useMemory and not batch.storageLevel.useDisk
        source = batch.persist(StorageLevel.MEMORY_AND_DISK) if owned else batch
        rows: DataFrame | None = None
        try:
            framed = source.transform(
                parse_frame(wire_format=decode.wire_format, max_value_bytes=decode.max_value_bytes)
            )
            # one small job: the distinct schema ids (bad frames have none), whether any body
            # is compressed, the total, and the offsets read per topic partition
            per_key = (
                framed.groupBy(SCHEMA_KEY, COMPRESSION, "topic", "partition")
                .agg(
                    F.count(F.lit(1)).alias("count"),
                    F.min("offset").alias("first"),
                    F.max("offset").alias("last"),
                )
                .collect()
            )
            read = sum(int(row["count"]) for row in per_key)
            offsets = _offsets_read(per_key)
            keys = {bytes(row[0]) for row in per_key if row[0] is not None}
            writers = self.resolver.resolve(
                schema_id_of_key(decode.wire_format, key) for key in sorted(keys)
            )
            admission = self.reader.admit(writers)
            for change in admission.changes:
                log.info("%s: reader schema evolved: %s", self.pipeline, change)
            for version_id, reason in admission.rejected.items():
                log.warning("%s: schema version %s rejected: %s", self.pipeline, version_id, reason)
            if any(row[1] == "zlib" for row in per_key):
                engine = "jvm" if self._has_jvm_inflater(source) else "python"
                framed = framed.transform(
                    inflate_zlib(max_bytes=decode.max_value_bytes, engine=engine)
                )
            reader_schema = self.reader.json()
            rows = framed.transform(
                decode_avro(
                    wire_format=decode.wire_format,
                    writer_schemas={w.version_id: w.definition for w in writers},
                    reader_schema=reader_schema,
                    rejected=admission.rejected,
                )
            ).transform(flatten_decoded())
            if self.forgetting is not None:
                rows = rows.transform(self.forgetting(batch.sparkSession))
            if self.changes is not None:
                rows = rows.transform(self.changes)
            exempt = self.exempt
            rows = rows.transform(
                self._checked(flag_dropped(expectations=self.expectations, exempt=exempt))
            )
            if self.expectations:
                # analysed now (no job runs), so a bad expression names its config key
                rows.transform(
                    self._checked(count_violations(expectations=self.expectations, exempt=exempt))
                )
            if cache_rows:
                rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
            yield DecodedBatch(rows, read, reader_schema, offsets)
        finally:
            if rows is not None and cache_rows:
                rows.unpersist()
            if owned:
                source.unpersist()

    @property
    def exempt(self) -> str | None:
        """The column marking rows the expectations skip (upsert deletes), if any."""
        return DELETE_FLAG if self.changes is not None else None

    def _seed(self, spark: SparkSession) -> None:
        """Once: evolve on from the reader schema the table last recorded."""
        if self._seeded or self.stored_schema is None:
            return
        reader, merged = ReaderSchema.seeded(
            self.reader.json(), self.stored_schema(spark), widen=self.reader.widen
        )
        if merged.incompatible is not None:
            raise ConfigError(
                f"pipelines.{self.pipeline}.decode: the configured reader schema cannot be "
                f"read into the schema the table was written with: {merged.incompatible}"
            )
        for change in merged.changes:
            log.info("%s: configured reader schema widened the table's: %s", self.pipeline, change)
        self.reader = reader
        self._seeded = True

    def _has_jvm_inflater(self, df: DataFrame) -> bool:
        """Whether build_spark registered the JVM inflater (the function registry is shared
        by the job's session and the streaming query's clone of it)."""
        if self._jvm_inflater is None:
            self._jvm_inflater = bool(df.sparkSession.catalog.functionExists(INFLATE_ZLIB_FUNCTION))
        return self._jvm_inflater

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
                    f"pipelines.{self.pipeline}.expectations: an expression does not compile "
                    f"against the decoded columns: {str(err).splitlines()[0]}"
                ) from err

        return _run


def _offsets_read(per_key: list[Row]) -> tuple[OffsetRange, ...]:
    """Per topic partition, the lowest offset read and the highest + 1."""
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    for row in per_key:
        key = (str(row["topic"]), int(row["partition"]))
        first, last = int(row["first"]), int(row["last"])
        low, high = bounds.get(key, (first, last))
        bounds[key] = (min(low, first), max(high, last))
    return tuple(OffsetRange(t, p, low, high + 1) for (t, p), (low, high) in sorted(bounds.items()))
