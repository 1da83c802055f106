"""The measured paths. Each returns the seconds of its measured action only.

Inputs the decode paths share are cached and materialized before the clock starts:
``cache_kafka`` holds the topic as Spark's Kafka source returns it (framed values plus key,
topic, partition, offset, timestamp), ``cache_native_bodies`` the same records as bare,
uncompressed v1 Avro bodies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import shutil
import time
import uuid
import zlib
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from pyspark import StorageLevel
from pyspark.sql import functions as F
from pyspark.sql.avro.functions import from_avro

from etl.commit import BatchResult
from etl.config import Settings, TableFormat
from etl.formats import CommitInfo, TableSink, TableSpec, load_sink
from etl.pipeline import Pipeline, build_pipeline, start_pipeline
from transforms.columns import COMPRESSION, SCHEMA_KEY
from transforms.framing import parse_frame
from transforms.routing import dead_letter_rows, table_rows
from transforms.wire import GLUE_COMPRESSION_ZLIB, GLUE_HEADER_LENGTH, GLUE_HEADER_VERSION

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

QUERY_TIMEOUT_S = 1800


def noop(df: DataFrame) -> None:
    """Forces every row and column of ``df`` (Spark's no-op sink)."""
    df.write.format("noop").mode("overwrite").save()


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def save_plan(df: DataFrame, path: Path | None) -> None:
    """Writes ``df.explain("formatted")`` to ``path`` (if given)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        df.explain("formatted")
    path.write_text(buffer.getvalue())


def kafka_read(spark: SparkSession, bootstrap: str, topic: str) -> DataFrame:
    """The whole topic as a batch DataFrame from Spark's Kafka source."""
    return (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("kafka.security.protocol", "PLAINTEXT")
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )


# -- kafka_noop ---------------------------------------------------------------------------


def kafka_noop(spark: SparkSession, bootstrap: str, topic: str, plan: Path | None) -> float:
    """Spark's Kafka source straight into the no-op sink (batch read of the whole topic)."""
    df = kafka_read(spark, bootstrap, topic)
    save_plan(df, plan)
    return timed(lambda: noop(df))


def kafka_noop_stream(
    spark: SparkSession, bootstrap: str, topic: str, *, max_offsets: int, checkpoint: Path
) -> tuple[float, int]:
    """The Kafka source as a streaming ``availableNow`` query into the no-op sink.

    Same micro-batch sizes as the e2e run, so e2e / this isolates our per-batch work from
    the source's. Returns (seconds, batches).
    """
    stream = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(max_offsets))
        .load()
    )
    started = time.perf_counter()
    query = (
        stream.writeStream.format("noop")
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    try:
        query.awaitTermination(QUERY_TIMEOUT_S)
        seconds = time.perf_counter() - started
        if query.isActive:
            raise RuntimeError(f"kafka_noop_stream did not finish in {QUERY_TIMEOUT_S:.0f}s")
        batches = sum(1 for p in query.recentProgress if p["numInputRows"])
    finally:
        query.stop()
    return seconds, batches


# -- cached inputs --------------------------------------------------------------------------


def cache(df: DataFrame) -> DataFrame:
    """Persists ``df`` in memory (spilling to disk only if it must) and materializes it."""
    cached = df.persist(StorageLevel.MEMORY_AND_DISK)
    cached.count()
    return cached


def cached_sizes(spark: SparkSession) -> dict[str, int]:
    """Bytes in memory and on disk of every cached RDD (to check nothing spilled)."""
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return {
        "memory_bytes": sum(int(info.memSize()) for info in infos),
        "disk_bytes": sum(int(info.diskSize()) for info in infos),
    }


def cache_kafka(spark: SparkSession, bootstrap: str, topic: str) -> DataFrame:
    """The topic as the Kafka source returns it, cached (the decode paths' shared input)."""
    return cache(kafka_read(spark, bootstrap, topic))


def cache_native_bodies(
    spark: SparkSession, bodies: list[bytes], *, records: int, partitions: int
) -> DataFrame:
    """The same ``records`` records as bare v1 Avro bodies (no header, not compressed).

    Record ``i`` of the topic is pool record ``i % len(bodies)``; here it is that record's
    v1 body. Built from the pool with a broadcast join, then cached.
    """
    pool = spark.createDataFrame(
        [(i, b) for i, b in enumerate(bodies)], "idx long, body binary"
    ).hint("broadcast")
    ids = spark.range(0, records, 1, partitions).select((F.col("id") % len(bodies)).alias("idx"))
    return cache(ids.join(pool, "idx").select("body"))


# -- native_from_avro -----------------------------------------------------------------------


def native_from_avro(bodies: DataFrame, writer_schema: str, plan: Path | None) -> float:
    """Spark's ``from_avro`` over header-less bodies of one schema version, into noop."""
    df = bodies.select(from_avro(F.col("body"), writer_schema).alias("r")).select("r.*")
    save_plan(df, plan)
    return timed(lambda: noop(df))


# -- ours_decode ----------------------------------------------------------------------------


def ours_decode(
    cached: DataFrame, pipeline: Pipeline, plan: Path | None
) -> tuple[float, dict[str, int]]:
    """The product's decode of one batch (``BatchDecoder.decode``) + routing, into no-op.

    ``decode`` frames and caches the records, scans their schema ids, resolves them in the
    registry, and builds inflate -> decode -> flatten (cached); ``table_rows`` then routes
    the good rows into the no-op sink, which is where the decoded rows are computed.
    Returns (seconds, bytes of everything cached at the end, input included).
    """
    started = time.perf_counter()
    with pipeline.decoder.decode(cached) as decoded:
        table = decoded.rows.transform(table_rows())
        save_plan(table, plan)
        noop(table)
        seconds = time.perf_counter() - started
        sizes = cached_sizes(cached.sparkSession)
    return seconds, sizes


class NoopSink(TableSink):
    """A TableSink whose append forces the rows into Spark's no-op sink."""

    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Nothing to create."""

    def exists(self, spark: SparkSession) -> bool:
        """Never: so nothing was committed before either."""
        return False

    def commit_history(self, spark: SparkSession) -> DataFrame:
        """Not asked for: the table never exists."""
        raise NotImplementedError("a no-op sink keeps no commits")

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Forces the rows."""
        noop(df)

    def upsert(self, df: DataFrame, commit: CommitInfo) -> None:
        """Forces the rows."""
        noop(df)


def ours_process(cached: DataFrame, base: Pipeline) -> tuple[float, dict[str, int]]:
    """``Pipeline.process`` (persist, id scan, counts, routing) with no-op sinks.

    Returns (seconds, the batch's read/written/dead counts).
    """
    committer = dataclasses.replace(
        base.committer,
        table=NoopSink(TableSpec("bench.noop.table")),
        dead_letter=NoopSink(TableSpec("bench.noop.dlq")),
    )
    pipeline = build_pipeline_like(base, committer=committer)
    started = time.perf_counter()
    result = pipeline.process(cached, 0, query_id=str(uuid.uuid4()))
    seconds = time.perf_counter() - started
    return seconds, {
        "read": result.read,
        "written": result.written,
        "dead_lettered": result.dead_lettered,
    }


# -- decode_breakdown -----------------------------------------------------------------------


def build_pipeline_like(base: Pipeline, **parts: Any) -> Pipeline:
    """A pipeline wired like ``base`` with some parts swapped (fresh counts)."""
    return Pipeline(
        base.name, parts.get("decoder", base.decoder), parts.get("committer", base.committer)
    )


def decode_breakdown(cached: DataFrame, pipeline: Pipeline) -> dict[str, float]:
    """Seconds of each step inside ``ours_decode``, each timed on its own over the cached input.

    ``scan_input`` reads the cached Kafka rows; ``framing`` adds the frame columns;
    ``schema_id_scan`` is the per-batch job listing schema ids; ``decode_fields_only`` is the
    decode pass keeping only the record's fields; ``decode_and_route`` the same pass with
    the Kafka metadata columns the table keeps (what ``ours_decode`` runs after its scan).
    """
    decode = pipeline.decoder.settings
    framed = cached.transform(
        parse_frame(wire_format=decode.wire_format, max_value_bytes=decode.max_value_bytes)
    )
    steps = {
        "scan_input": timed(lambda: noop(cached)),
        "framing": timed(lambda: noop(framed)),
        "schema_id_scan": timed(lambda: framed.groupBy(SCHEMA_KEY, COMPRESSION).count().collect()),
    }
    with pipeline.decoder.decode(cached) as decoded:
        table = decoded.rows.transform(table_rows())
        fields = [c for c in table.columns if not c.startswith("_")]
        steps["decode_fields_only"] = timed(lambda: noop(table.select(*fields)))
        steps["decode_and_route"] = timed(lambda: noop(table))
    return steps


# -- <format>_write_limit -------------------------------------------------------------------


def decoded_table_rows(cached: DataFrame, pipeline: Pipeline) -> DataFrame:
    """The table rows of the cached records, decoded once and cached (an input, not timed)."""
    with pipeline.decoder.decode(cached) as decoded:
        return cache(decoded.rows.transform(table_rows()))


def write_limit(rows: DataFrame, fmt: TableFormat, spec: TableSpec) -> tuple[float, TableSink]:
    """Appends already-decoded, cached rows to a fresh table through the product's sink of
    the format (same partitioning and properties as the pipeline's table): the write's own
    limit. Returns the seconds and the sink."""
    sink = load_sink(fmt, spec)
    commit = CommitInfo("bench", str(uuid.uuid4()), 0)
    sink.prepare(rows.sparkSession, rows.schema)
    return timed(lambda: sink.append(rows, commit)), sink


def drop_table(spark: SparkSession, spec: TableSpec) -> None:
    """Drops a measured table and its files."""
    if spec.location is None:  # Iceberg: the catalog owns the files
        spark.sql(f"DROP TABLE {spec.table} PURGE")
        return
    spark.sql(f"DROP TABLE IF EXISTS {spec.table}")
    shutil.rmtree(spec.location.removeprefix("file://"), ignore_errors=True)


# -- python_udf_decode ----------------------------------------------------------------------


def record_type(spark: SparkSession, reader_schema: str) -> DataType:
    """The Spark type ``from_avro`` gives the reader schema (the UDF's return type)."""
    probe = spark.range(1).select(from_avro(F.lit(None).cast("binary"), reader_schema).alias("r"))
    return probe.schema["r"].dataType


def python_udf(writers: dict[str, str], return_type: DataType) -> Any:
    """The naive decoder: a per-row ``@udf`` with fastavro (header, zlib, writer schema).

    It reads with the writer schema only: fields the record's version lacks come out null,
    which for these versions (v2 only adds an optional field) is the same result as
    resolving onto the reader schema, and 25 % faster than passing fastavro a reader schema
    (57k vs 44k records/s measured), so the baseline is not a straw man.
    """
    parsed = {k: fastavro.parse_schema(json.loads(v)) for k, v in writers.items()}

    def decode(value: bytes | None) -> dict[str, Any] | None:
        if value is None or len(value) < GLUE_HEADER_LENGTH or value[0] != GLUE_HEADER_VERSION:
            return None
        writer = parsed.get(str(uuid.UUID(bytes=bytes(value[2:GLUE_HEADER_LENGTH]))))
        if writer is None:
            return None
        body = bytes(value[GLUE_HEADER_LENGTH:])
        if value[1] == GLUE_COMPRESSION_ZLIB:
            body = zlib.decompress(body)
        record = fastavro.schemaless_reader(io.BytesIO(body), writer, None)
        return record if isinstance(record, dict) else None

    return F.udf(decode, return_type)


def python_udf_decode(
    cached: DataFrame, writers: dict[str, str], reader_schema: str, plan: Path | None
) -> float:
    """The naive Python UDF decode of the framed values, into noop."""
    udf = python_udf(writers, record_type(cached.sparkSession, reader_schema))
    # no filter on the result: Spark would push it below the projection and run the UDF twice
    df = cached.select(udf(F.col("value")).alias("r")).select("r.*")
    save_plan(df, plan)
    return timed(lambda: noop(df))


# -- e2e_<format> ---------------------------------------------------------------------------


def timed_appends(sink: TableSink) -> list[float]:
    """Times each ``append`` of the sink (Spark write job + table commit) from now on."""
    seconds: list[float] = []
    append = sink.append

    def _append(df: DataFrame, commit: CommitInfo) -> None:
        started = time.perf_counter()
        append(df, commit)
        seconds.append(time.perf_counter() - started)

    sink.append = _append  # type: ignore[method-assign]
    return seconds


@dataclass
class E2eResult:
    """One e2e run: wall time from start to the query's end, per-batch timings, progress."""

    seconds: float
    process_s: list[float]
    append_s: list[float]
    read: int
    written: int
    dead_lettered: int
    progress_ms: dict[str, int]


def e2e(spark: SparkSession, settings: Settings, name: str) -> E2eResult:
    """The real pipeline (``start_pipeline``, available_now) from Kafka into its table."""
    pipeline = build_pipeline(settings, name)
    append_s = timed_appends(pipeline.committer.table)
    results: list[BatchResult] = []
    pipeline.on_result = results.append
    started = time.perf_counter()
    query, _ = start_pipeline(spark, settings, name, pipeline)
    seconds = await_query(query, started, "e2e query")
    progress = _sum_durations(query.recentProgress)
    return E2eResult(
        seconds=seconds,
        process_s=[r.seconds for r in results],
        append_s=append_s,
        read=pipeline.totals.read,
        written=pipeline.totals.written,
        dead_lettered=pipeline.totals.dead_lettered,
        progress_ms=progress,
    )


def await_query(query: Any, started: float, what: str) -> float:
    """Waits for an available_now query to end (stopping it either way); the seconds since
    ``started``.

    Raises:
        RuntimeError: The query failed or did not end in ``QUERY_TIMEOUT_S``.
    """
    try:
        query.awaitTermination(QUERY_TIMEOUT_S)
        seconds = time.perf_counter() - started
        if query.isActive:
            raise RuntimeError(f"{what} did not finish in {QUERY_TIMEOUT_S:.0f}s")
        if query.exception() is not None:
            raise RuntimeError(f"{what} failed: {query.exception()}")
        return seconds
    finally:
        query.stop()


def _sum_durations(progress: list[dict[str, Any]]) -> dict[str, int]:
    """Sums each ``durationMs`` entry over the query's (recent) progress reports."""
    totals: dict[str, int] = {}
    for report in progress:
        for key, value in report.get("durationMs", {}).items():
            totals[key] = totals.get(key, 0) + int(value)
    totals["reports"] = len(progress)
    return totals


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def check_decode(cached: DataFrame, pipeline: Pipeline, *, expected: int) -> None:
    """Fails unless our decode turns every cached record into a table row (no dead letters)."""
    with pipeline.decoder.decode(cached, cache_rows=True) as decoded:
        good = decoded.rows.transform(table_rows()).count()
        dead = decoded.rows.transform(
            dead_letter_rows(pipeline="bench", batch_id=0, ingested_at=dt.datetime.now(dt.UTC))
        )
        bad = dead.groupBy("error_class").count().collect()
    if good != expected or bad:
        raise RuntimeError(f"decode check: {good} rows of {expected}, dead letters {bad}")
