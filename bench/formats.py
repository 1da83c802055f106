"""Per-format write benchmarks: our sinks against each format's own streaming sink.

``python -m bench.formats`` runs each case in a process of its own (a Spark session hosts Hudi
or Delta, not both) and writes ``bench/formats.json``. The input is already-decoded order rows
(the columns the pipeline writes, Kafka metadata included), staged as Parquet files, one file
per micro-batch, fed one at a time to each side's stream into:

- ``append_ours``: ``foreachBatch`` -> our sink's ``append`` (one commit per batch, with the
  batch identity in its metadata): the format's write limit as the pipeline meets it;
- ``append_plain``: ``foreachBatch`` -> the format's plainest batch append (``writeTo().append()``
  or ``write.format(<format>).save``, theirs' options): what any ``foreachBatch`` sink costs
  at least, ours included (a Python call and a batch write of its own per micro-batch,
  where the native sink writes inside the micro-batch's plan);
- ``append_theirs``: ``writeStream.format(<format>)`` on the same files (Iceberg ``toTable``,
  Delta and Hudi ``start(path)``, Hudi with our sink's write options);
- ``upsert_ours``: a table of ``--keys`` keys loaded first (not timed), then batches of which
  10 % update existing keys (newer ``updated_ts``) and 90 % insert new ones, through our
  sink's ``write`` as the pipeline calls it (the winner per key, then Iceberg and Delta: one
  MERGE; Hudi: resolve against the table, then one upsert commit);
- ``upsert_theirs`` (Hudi only; Iceberg and Delta have no streaming upsert sink): Hudi's
  streaming sink with operation ``upsert`` and ``updated_ts`` as its ordering field, on a
  table loaded the same way.

The sides race batch by batch: each batch is added to every side's input and run there as one
``availableNow`` micro-batch, who goes first alternating per batch (neither side gains from a
warmer JVM or file cache). Each side's time is the sum of its micro-batches'
``triggerExecution`` (query start excluded, the same measure for both); records/s and the
per-batch latency (p50/p95) follow from it. The appends race twice, into fresh tables.
Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from bench.cases import print_result, run_in_processes
from bench.paths import await_query, percentile
from etl.config import PartitionField, PartitionTransform, Settings, TableFormat
from etl.formats import CommitInfo, TableSink, TableSpec, load_sink
from etl.formats.base import UpsertSpec
from etl.formats.hudi import HudiSink
from etl.spark import build_spark
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET, KAFKA_PARTITION

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery
    from pyspark.sql.streaming.readwriter import DataStreamWriter

REPO = Path(__file__).resolve().parents[1]
CASES: dict[str, tuple[TableFormat, dict[str, Any]]] = {
    "iceberg": (TableFormat.ICEBERG, {}),
    "delta": (TableFormat.DELTA, {}),
    "hudi-cow": (TableFormat.HUDI, {"table_type": "COPY_ON_WRITE"}),
    "hudi-mor": (TableFormat.HUDI, {"table_type": "MERGE_ON_READ", "compaction_delta_commits": 5}),
}
UPDATE_SHARE = 0.1
APPEND_TURNS = 2
# the day column Delta's own writers (plain and theirs) partition by
DELTA_DAY = "order_ts_day"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__)
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES)
    )
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys in the upsert table")
    parser.add_argument("--batch", type=int, default=100_000, help="records per micro-batch")
    parser.add_argument("--batches", type=int, default=4, help="micro-batches per stream")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--workdir", default=str(REPO / ".bench" / "formats"))
    parser.add_argument("--results", default=str(REPO / "bench" / "formats.json"))
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only these cases in an existing results file (same sizes only)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.batch, args.batches = 20_000, 5_000, 2
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {unknown}, expected some of {', '.join(CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs every case in its own process; writes and prints the results."""
    args = parse_args(argv)
    if args.one:
        print_result(run_case(args, args.one))
        return 0
    shutil.rmtree(args.workdir, ignore_errors=True)
    started = time.perf_counter()
    found = run_in_processes("bench.formats", args.cases, _passed(args))
    if found is None:
        return 1
    results: dict[str, Any] = found
    results_path = Path(args.results)
    if args.merge and results_path.exists():
        earlier = json.loads(results_path.read_text())
        sizes = (earlier["keys"], earlier["batch"], earlier["batches"])
        if sizes != (args.keys, args.batch, args.batches):
            print(f"--merge: {results_path} has other sizes {sizes}", file=sys.stderr)
            return 1
        results = {**earlier["cases"], **results}
    doc = {
        "keys": args.keys,
        "batch": args.batch,
        "batches": args.batches,
        "update_share": UPDATE_SHARE,
        "seconds": round(time.perf_counter() - started, 1),
        "cores": os.cpu_count(),
        "cases": results,
    }
    results_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    return 0


def _passed(args: argparse.Namespace) -> list[str]:
    """The sizing flags, for a child process."""
    return [
        f"--keys={args.keys}",
        f"--batch={args.batch}",
        f"--batches={args.batches}",
        f"--workdir={args.workdir}",
        f"--driver-memory={args.driver_memory}",
    ]


def run_case(args: argparse.Namespace, case: str) -> dict[str, Any]:
    """Every measurement of one format case, in this process's own session."""
    fmt, options = CASES[case]
    workdir = Path(args.workdir) / case
    workdir.mkdir(parents=True, exist_ok=True)
    spark = _session(args, fmt, workdir)
    inputs = workdir / "input"
    appends = _stage(
        spark, inputs / "append", start=args.keys, batches=args.batches, size=args.batch
    )
    upserts = _stage(
        spark,
        inputs / "upsert",
        start=args.keys,
        batches=args.batches,
        size=args.batch,
        updates_of=args.keys,
    )
    bench = _Case(spark, fmt, options, workdir)
    # warm-up (not reported): both write paths once on small batches, so neither measured
    # path pays for the cold JVM
    warm = _stage(spark, inputs / "warm", start=0, batches=2, size=min(args.batch, 5_000))
    bench.race("warm", warm, bench.append_sides("warm"))
    result: dict[str, Any] = {}
    # appends: twice over, into new tables, the sides alternating who goes first
    append_runs: dict[str, list[float]] = {"ours": [], "plain": [], "theirs": []}
    for turn in range(APPEND_TURNS):
        sides = bench.append_sides(f"append_{turn}")
        for side, latencies in bench.race(f"append_{turn}", appends, sides, flip=turn).items():
            append_runs[side] += latencies
    for side, latencies in append_runs.items():
        result[f"append_{side}"] = _summary(args.batch, latencies)
    bench.load(_rows(spark, 0, args.keys), name="upsert_ours")
    sides = {"ours": bench.ours("upsert_ours", upsert=True)}
    if fmt is TableFormat.HUDI:
        bench.load_theirs(_rows(spark, 0, args.keys), name="upsert_theirs")
        sides["theirs"] = bench.theirs_upsert("upsert_theirs")
    for side, latencies in bench.race("upsert", upserts, sides).items():
        result[f"upsert_{side}"] = _summary(args.batch, latencies)
    spark.stop()
    return result


def _session(args: argparse.Namespace, fmt: TableFormat, workdir: Path) -> SparkSession:
    """A local[2] session hosting Iceberg and ``fmt``."""
    dummy: dict[str, Any] = {
        "source": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"]},
        "decode": {"schema_file": str(REPO / "schemas" / "orders.avsc")},
        "sink": {"table": "local.db.t"},
        "dead_letter": {"table": "local.db.t_dlq"},
        "checkpoint": str(workdir / "unused"),
    }
    settings = Settings.model_validate(
        {
            "spark": {
                "app_name": "streaming-etl-bench-formats",
                "master": "local[2]",
                "jars_dir": str(REPO / ".jars" / "spark"),
                "shuffle_partitions": 4,
                "ui_enabled": False,
                "conf": {
                    "spark.driver.memory": args.driver_memory,
                    "spark.ui.showConsoleProgress": "false",
                    "spark.sql.warehouse.dir": str(workdir / "catalog"),
                    "spark.local.dir": str(workdir / "spark-local"),
                },
            },
            "catalog": {"name": "local", "type": "hadoop", "warehouse": str(workdir / "warehouse")},
            "pipelines": {"unused": dummy},
        }
    )
    spark = build_spark(settings, formats=sorted({TableFormat.ICEBERG, fmt}))
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _rows(spark: SparkSession, start: int, count: int, *, updates_of: int = 0) -> DataFrame:
    """Decoded order rows with ids ``start`` .. ``start + count - 1``; with ``updates_of``, a
    tenth of them instead update keys below it (newer ``updated_ts``)."""
    ids = spark.range(start, start + count)
    key = F.col("id")
    if updates_of:
        # every tenth record of the batch updates an existing key, spread over all of them
        key = F.when(
            F.col("id") % round(1 / UPDATE_SHARE) == 0,
            (F.col("id") * F.lit(7919)) % F.lit(updates_of),
        ).otherwise(F.col("id"))
    ts = F.timestamp_seconds(F.lit(1_790_000_000) + (F.col("id") % 2_000_000))
    return ids.select(
        F.concat(F.lit("o-"), key.cast("string")).alias("order_id"),
        (F.col("id") % 50_000).alias("customer_id"),
        F.element_at(
            F.array(*[F.lit(s) for s in ("CREATED", "PAID", "SHIPPED", "CANCELLED")]),
            (F.col("id") % 4 + 1).cast("int"),
        ).alias("status"),
        (F.col("id") % 9 + 1).cast("int").alias("quantity"),
        ((F.col("id") % 50_000) / 100).cast("decimal(12,2)").alias("amount"),
        F.lit("EUR").alias("currency"),
        ts.alias("order_ts"),
        # later records (larger ids) are newer: an update wins against the loaded row
        F.timestamp_seconds(F.lit(1_790_000_000) + F.col("id")).alias("updated_ts"),
        F.to_date(ts).alias("order_date"),
        F.lit("orders").alias("_kafka_topic"),
        (F.col("id") % 4).cast("int").alias(KAFKA_PARTITION),
        F.col("id").alias(KAFKA_OFFSET),
    )


def _stage(
    spark: SparkSession, path: Path, *, start: int, batches: int, size: int, updates_of: int = 0
) -> list[Path]:
    """Writes ``batches`` Parquet files of ``size`` rows each (one per micro-batch)."""
    files: list[Path] = []
    for n in range(batches):
        rows = _rows(spark, start + n * size, size, updates_of=updates_of)
        rows.coalesce(1).write.mode("overwrite").parquet(str(path / f"batch-{n}"))
        files += sorted((path / f"batch-{n}").glob("*.parquet"))
    return files


# a side of a race: starts its streaming query on the stream, from a checkpoint
Start = Callable[["DataFrame", Path], "StreamingQuery"]


class _Case:
    """One format's tables and streams in one session."""

    def __init__(
        self, spark: SparkSession, fmt: TableFormat, options: dict[str, Any], workdir: Path
    ) -> None:
        self.spark, self.fmt, self.options, self.workdir = spark, fmt, options, workdir
        self.schema = _rows(spark, 0, 1).schema

    def spec(self, name: str, *, upsert: bool) -> TableSpec:
        """The table of one measurement, partitioned by day as the pipeline's."""
        table = f"local.bench.{name}" if self.fmt is TableFormat.ICEBERG else f"bench.{name}"
        location = None if self.fmt is TableFormat.ICEBERG else (self.workdir / name).as_uri()
        return TableSpec(
            table,
            (PartitionField("order_ts", PartitionTransform.DAY),),
            {"format-version": "2", "write.parquet.compression-codec": "zstd"}
            if self.fmt is TableFormat.ICEBERG
            else {},
            upsert=UpsertSpec(("order_id",), "updated_ts") if upsert else None,
            options=self.options,
            location=location,
        )

    def race(
        self, name: str, batches: list[Path], sides: dict[str, Start], *, flip: int = 0
    ) -> dict[str, list[float]]:
        """Feeds the staged batches to each side's stream one at a time, the sides taking
        turns (who goes first alternates per batch, so neither gains from a warmer JVM or
        file cache); each batch is one ``availableNow`` run from the side's checkpoint.

        Returns:
            Per side, the seconds of each batch: Spark's ``triggerExecution`` of the
            micro-batch, the same measure for ours and theirs (query start excluded).
        """
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        for n, batch in enumerate(batches):
            order = list(sides) if (n + flip) % 2 == 0 else list(reversed(sides))
            for side in order:
                feed = self.workdir / "feeds" / f"{name}_{side}"
                feed.mkdir(parents=True, exist_ok=True)
                os.link(batch, feed / f"batch-{n:04d}.parquet")
                stream = (
                    self.spark.readStream.schema(self.schema)
                    .option("maxFilesPerTrigger", 1)
                    .parquet(str(feed))
                )
                query = sides[side](stream, self.workdir / "checkpoints" / f"{name}_{side}")
                await_query(query, time.perf_counter(), f"{name} {side}")
                seconds[side] += [
                    p["durationMs"]["triggerExecution"] / 1000
                    for p in query.recentProgress
                    if p.get("numInputRows")
                ]
        return seconds

    def load(self, rows: DataFrame, *, name: str) -> None:
        """Creates and fills an upsert table through our sink (not timed)."""
        sink = load_sink(self.fmt, self.spec(name, upsert=True))
        sink.prepare(self.spark, rows.schema)
        _write(sink, rows, CommitInfo("bench", "load", 0))

    def append_sides(self, name: str) -> dict[str, Start]:
        """Ours, the plain ``foreachBatch`` write, and theirs, each into a new table."""
        return {
            "ours": self.ours(f"{name}_ours"),
            "plain": self.plain(f"{name}_plain"),
            "theirs": self.theirs(f"{name}_theirs"),
        }

    def ours(self, name: str, *, upsert: bool = False) -> Start:
        """foreachBatch into our sink, one commit per batch with its identity."""
        sink = load_sink(self.fmt, self.spec(name, upsert=upsert))
        sink.prepare(self.spark, self.schema)
        query_id = str(uuid.uuid4())

        def write(df: DataFrame, batch_id: int) -> None:
            _write(sink, df, CommitInfo("bench", query_id, batch_id))

        return _foreach_batch(write)

    def plain(self, name: str) -> Start:
        """``foreachBatch`` with the format's plainest batch append and the options theirs
        uses: the floor of any ``foreachBatch`` sink, ours included."""
        spec = self.spec(name, upsert=False)
        sink = load_sink(self.fmt, spec)
        if self.fmt is TableFormat.ICEBERG:
            sink.prepare(self.spark, self.schema)  # writeTo needs it; the others create it

        def write(df: DataFrame, batch_id: int) -> None:
            if self.fmt is TableFormat.ICEBERG:
                df.writeTo(spec.table).append()
            elif self.fmt is TableFormat.DELTA:
                _with_day(df).write.format("delta").partitionBy(DELTA_DAY).mode("append").save(
                    spec.location
                )
            else:
                assert isinstance(sink, HudiSink)
                _hudi_append(sink, df, sink.write_options("insert"))

        return _foreach_batch(write)

    def theirs(self, name: str) -> Start:
        """The format's own streaming sink, appending."""
        spec = self.spec(name, upsert=False)
        if self.fmt is TableFormat.ICEBERG:
            load_sink(self.fmt, spec).prepare(self.spark, self.schema)  # toTable needs it

            def iceberg(stream: DataFrame, checkpoint: Path) -> StreamingQuery:
                # unsorted input into a partitioned table, as our sink writes it
                writer = stream.writeStream.format("iceberg").option("fanout-enabled", "true")
                return _available_now(writer, checkpoint).toTable(spec.table)

            return iceberg
        assert spec.location is not None
        location = spec.location
        if self.fmt is TableFormat.DELTA:

            def delta(stream: DataFrame, checkpoint: Path) -> StreamingQuery:
                writer = _with_day(stream).writeStream.format("delta").partitionBy(DELTA_DAY)
                return _available_now(writer, checkpoint).start(location)

            return delta
        sink = HudiSink(spec)

        def hudi(stream: DataFrame, checkpoint: Path) -> StreamingQuery:
            writer = (
                sink.with_partition_columns(stream)
                .writeStream.format("hudi")
                .options(**sink.write_options("insert"))
            )
            return _available_now(writer, checkpoint).start(location)

        return hudi

    def load_theirs(self, rows: DataFrame, *, name: str) -> None:
        """Hudi's own writer loads the table the way its streaming upsert sink expects."""
        sink, options = self._hudi_upsert(name)
        _hudi_append(sink, rows, options)

    def theirs_upsert(self, name: str) -> Start:
        """Hudi's streaming sink upserting (its own event-time ordering)."""
        sink, options = self._hudi_upsert(name)

        def start(stream: DataFrame, checkpoint: Path) -> StreamingQuery:
            writer = sink.with_partition_columns(stream).writeStream.format("hudi")
            return _available_now(writer.options(**options), checkpoint).start(sink.location)

        return start

    def _hudi_upsert(self, name: str) -> tuple[HudiSink, dict[str, str]]:
        """Our sink of the table, and its options with Hudi's own ordering instead of ours."""
        sink = HudiSink(self.spec(name, upsert=True))
        options = sink.write_options("upsert")
        options |= {
            "hoodie.datasource.write.precombine.field": "updated_ts",
            "hoodie.write.record.merge.mode": "EVENT_TIME_ORDERING",
            # Hudi's default: its sink cannot assume a batch holds one row per key
            "hoodie.combine.before.upsert": "true",
        }
        return sink, options


def _write(sink: TableSink, df: DataFrame, commit: CommitInfo) -> None:
    """Appends, or upserts the rows as changes that delete nothing, as the table is declared
    (``TableSink.write``: the winner per key first, as in the pipeline)."""
    sink.write(df.withColumn(DELETE_FLAG, F.lit(False)) if sink.spec.upsert else df, commit)


def _foreach_batch(write: Callable[[DataFrame, int], None]) -> Start:
    """A side that hands each micro-batch to ``write``."""

    def start(stream: DataFrame, checkpoint: Path) -> StreamingQuery:
        return _available_now(stream.writeStream.foreachBatch(write), checkpoint).start()

    return start


def _with_day(df: DataFrame) -> DataFrame:
    """``df`` plus the day column Delta's own writers partition by."""
    return df.withColumn(DELTA_DAY, F.to_date("order_ts"))


def _hudi_append(sink: HudiSink, df: DataFrame, options: dict[str, str]) -> None:
    """One batch write through Hudi's datasource with ``options`` (no sink logic)."""
    (
        sink.with_partition_columns(df)
        .write.format("hudi")
        .options(**options)
        .mode("append")
        .save(sink.location)
    )


def _available_now(writer: DataStreamWriter, checkpoint: Path) -> DataStreamWriter:
    """The writer reading what is there now, from its checkpoint."""
    return writer.option("checkpointLocation", str(checkpoint)).trigger(availableNow=True)


def _summary(batch: int, seconds: list[float]) -> dict[str, Any]:
    """Records/s over the batches' seconds, and their p50/p95."""
    total = sum(seconds)
    records = batch * len(seconds)
    return {
        "records": records,
        "seconds": round(total, 2),
        "records_per_s": round(records / total) if total else None,
        "batches": len(seconds),
        "commit_p50_s": round(percentile(seconds, 0.5), 2),
        "commit_p95_s": round(percentile(seconds, 0.95), 2),
    }


def markdown(doc: dict[str, Any]) -> str:
    """The README table of one run."""
    lines = [
        f"{doc['batches']} micro-batches of {doc['batch']:,} records; upserts into "
        f"{doc['keys']:,} keys, {doc['update_share']:.0%} of each batch updates",
        "",
        "| format | append: ours / plain foreachBatch / theirs rec/s | ours / theirs "
        "| plain / theirs | upsert: ours / theirs rec/s | ours / theirs "
        "| batch p50 / p95 s (append ours, theirs; upsert ours) |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for case, r in doc["cases"].items():
        ao, ap, at, uo = r["append_ours"], r["append_plain"], r["append_theirs"], r["upsert_ours"]
        ut = r.get("upsert_theirs")
        theirs_upsert = f"{ut['records_per_s']:,}" if ut else "n/a"
        lines.append(
            f"| {case} | {ao['records_per_s']:,} / {ap['records_per_s']:,} / "
            f"{at['records_per_s']:,} | {_ratio(ao, at)} | {_ratio(ap, at)} "
            f"| {uo['records_per_s']:,} / {theirs_upsert} | {_ratio(uo, ut)} "
            f"| {ao['commit_p50_s']} / {ao['commit_p95_s']}, "
            f"{at['commit_p50_s']} / {at['commit_p95_s']}; "
            f"{uo['commit_p50_s']} / {uo['commit_p95_s']} |"
        )
    return "\n".join(lines)


def _ratio(ours: dict[str, Any], theirs: dict[str, Any] | None) -> str:
    if not theirs or not theirs["records_per_s"]:
        return "n/a"
    return f"{ours['records_per_s'] / theirs['records_per_s']:.2f}"


if __name__ == "__main__":
    sys.exit(main())
