"""Per-format write benchmarks: our sinks against each format's own streaming sink.

``python -m bench.formats`` runs each case in a process of its own (a Spark session hosts Hudi
or Delta, not both) and writes ``bench/formats.json``. The input is already-decoded order rows
(the columns the pipeline writes, Kafka metadata included), staged as Parquet files, one file
per micro-batch, and streamed with ``maxFilesPerTrigger=1`` into:

- ``append_ours``: ``foreachBatch`` -> our sink's ``append`` (one commit per batch, with the
  batch identity in its metadata): the format's write limit as the pipeline meets it;
- ``append_theirs``: ``writeStream.format(<format>)`` on the same files (Iceberg ``toTable``,
  Delta and Hudi ``start(path)``, Hudi with our sink's write options);
- ``upsert_ours``: a table of ``--keys`` keys loaded first (not timed), then batches of which
  10 % update existing keys (newer ``updated_ts``) and 90 % insert new ones, through our
  sink's ``upsert`` (Iceberg and Delta: one MERGE; Hudi: resolve, then one upsert commit);
- ``upsert_theirs`` (Hudi only; Iceberg and Delta have no streaming upsert sink): Hudi's
  streaming sink with operation ``upsert`` and ``updated_ts`` as its ordering field, on a
  table loaded the same way.

Each case reports records/s and the per-batch commit latency (p50/p95): ours from the sink
call, theirs from the query progress (``triggerExecution``). The appends run twice, taking
turns, and the faster run of each counts. Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from bench.paths import await_query, percentile
from etl.config import PartitionField, PartitionTransform, Settings, TableFormat
from etl.formats import CommitInfo, TableSink, TableSpec, load_sink
from etl.formats.base import UpsertSpec
from etl.formats.hudi import HudiSink
from etl.spark import build_spark
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET, KAFKA_PARTITION

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

REPO = Path(__file__).resolve().parents[1]
CASES: dict[str, tuple[TableFormat, dict[str, Any]]] = {
    "iceberg": (TableFormat.ICEBERG, {}),
    "delta": (TableFormat.DELTA, {}),
    "hudi-cow": (TableFormat.HUDI, {"table_type": "COPY_ON_WRITE"}),
    "hudi-mor": (TableFormat.HUDI, {"table_type": "MERGE_ON_READ", "compaction_delta_commits": 5}),
}
UPDATE_SHARE = 0.1
APPEND_TURNS = 2


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
        result = run_case(args, args.one)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    shutil.rmtree(args.workdir, ignore_errors=True)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for case in args.cases:
        command = [sys.executable, "-m", "bench.formats", *_passed(args), "--one", case]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            print(f"case {case} failed (exit {done.returncode})", file=sys.stderr)
            return 1
        results[case] = json.loads(lines[-1].removeprefix("RESULT "))
        print(f"{case}: {json.dumps(results[case])}", flush=True)
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
    append_dir = _stage(
        spark, inputs / "append", start=args.keys, batches=args.batches, size=args.batch
    )
    upsert_dir = _stage(
        spark,
        inputs / "upsert",
        start=args.keys,
        batches=args.batches,
        size=args.batch,
        updates_of=args.keys,
    )
    records = args.batch * args.batches
    result: dict[str, Any] = {}
    bench = _Case(spark, fmt, options, workdir)
    # warm-up (not reported): both write paths once on small batches, so neither measured
    # path pays for the cold JVM
    warm = _stage(spark, inputs / "warm", start=0, batches=2, size=min(args.batch, 5_000))
    bench.ours(warm, 0, upsert=False, name="warm_ours")
    bench.theirs_append(warm, 0, name="warm_theirs")
    # appends: ours and theirs taking turns, twice, the faster run of each reported (the
    # JIT and the file cache favour whichever runs later)
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for turn in range(APPEND_TURNS):
        ours.append(bench.ours(append_dir, records, upsert=False, name=f"append_ours_{turn}"))
        theirs.append(bench.theirs_append(append_dir, records, name=f"append_theirs_{turn}"))
    result["append_ours"] = min(ours, key=lambda r: r["seconds"])
    result["append_theirs"] = min(theirs, key=lambda r: r["seconds"])
    bench.load(_rows(spark, 0, args.keys), upsert=True, name="upsert_ours")
    result["upsert_ours"] = bench.ours(upsert_dir, records, upsert=True, name="upsert_ours")
    if fmt is TableFormat.HUDI:
        bench.load_theirs(_rows(spark, 0, args.keys), name="upsert_theirs")
        result["upsert_theirs"] = bench.theirs_upsert(upsert_dir, records, name="upsert_theirs")
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
) -> Path:
    """Writes ``batches`` Parquet files of ``size`` rows each (one per micro-batch)."""
    for n in range(batches):
        rows = _rows(spark, start + n * size, size, updates_of=updates_of)
        rows.coalesce(1).write.mode("append").parquet(str(path))
    return path


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

    def _stream(self, source: Path) -> DataFrame:
        return (
            self.spark.readStream.schema(self.schema)
            .option("maxFilesPerTrigger", 1)
            .parquet(str(source))
        )

    def load(self, rows: DataFrame, *, upsert: bool, name: str) -> None:
        """Creates and fills a table through our sink (not timed)."""
        sink = load_sink(self.fmt, self.spec(name, upsert=upsert))
        sink.prepare(self.spark, rows.schema)
        _write(sink, rows, CommitInfo("bench", "load", 0))

    def ours(
        self, source: Path, records: int, *, upsert: bool, name: str = "append_ours"
    ) -> dict[str, Any]:
        """foreachBatch into our sink; the seconds of each sink call."""
        sink = load_sink(self.fmt, self.spec(name, upsert=upsert))
        sink.prepare(self.spark, self.schema)
        query_id = str(uuid.uuid4())
        latencies: list[float] = []

        def write(df: DataFrame, batch_id: int) -> None:
            started = time.perf_counter()
            _write(sink, df, CommitInfo("bench", query_id, batch_id))
            latencies.append(time.perf_counter() - started)

        writer = self._stream(source).writeStream.foreachBatch(write)
        seconds = _run(writer, self.workdir / "checkpoints" / name)
        return _summary(records, seconds, latencies)

    def theirs_append(
        self, source: Path, records: int, *, name: str = "append_theirs"
    ) -> dict[str, Any]:
        """The format's own streaming sink, appending the same files."""
        spec = self.spec(name, upsert=False)
        writer = self._stream(source).writeStream
        if self.fmt is TableFormat.ICEBERG:
            load_sink(self.fmt, spec).prepare(self.spark, self.schema)  # toTable needs it
            # unsorted input into a partitioned table, as our sink writes it
            writer = writer.format("iceberg").option("fanout-enabled", "true")
            return self._theirs(writer, name, records, table=spec.table)
        if self.fmt is TableFormat.DELTA:
            with_day = self._stream(source).withColumn("order_ts_day", F.to_date("order_ts"))
            writer = with_day.writeStream.format("delta").partitionBy("order_ts_day")
            return self._theirs(writer, name, records, path=spec.location)
        sink = HudiSink(spec)
        writer = (
            sink.with_partition_columns(self._stream(source))
            .writeStream.format("hudi")
            .options(**sink.write_options("insert"))
        )
        return self._theirs(writer, name, records, path=spec.location)

    def load_theirs(self, rows: DataFrame, *, name: str) -> None:
        """Hudi's own writer loads the table the way its streaming upsert sink expects."""
        sink, options = self._hudi_upsert(name)
        (
            sink.with_partition_columns(rows)
            .write.format("hudi")
            .options(**options)
            .mode("append")
            .save(sink.location)
        )

    def theirs_upsert(self, source: Path, records: int, *, name: str) -> dict[str, Any]:
        """Hudi's streaming sink upserting the same batches (its own event-time ordering)."""
        sink, options = self._hudi_upsert(name)
        writer = (
            sink.with_partition_columns(self._stream(source))
            .writeStream.format("hudi")
            .options(**options)
        )
        return self._theirs(writer, name, records, path=sink.location)

    def _hudi_upsert(self, name: str) -> tuple[HudiSink, dict[str, str]]:
        """Our sink of the table, and its options with Hudi's own ordering instead of ours."""
        sink = HudiSink(self.spec(name, upsert=True))
        options = sink.write_options("upsert")
        options |= {
            "hoodie.datasource.write.precombine.field": "updated_ts",
            "hoodie.write.record.merge.mode": "EVENT_TIME_ORDERING",
        }
        return sink, options

    def _theirs(
        self,
        writer: Any,
        name: str,
        records: int,
        *,
        table: str | None = None,
        path: str | None = None,
    ) -> dict[str, Any]:
        checkpoint = self.workdir / "checkpoints" / name
        writer = writer.option("checkpointLocation", str(checkpoint)).trigger(availableNow=True)
        started = time.perf_counter()
        query = writer.toTable(table) if table else writer.start(path)
        seconds = await_query(query, started, "the query")
        latencies = [
            p["durationMs"]["triggerExecution"] / 1000
            for p in query.recentProgress
            if p.get("numInputRows")
        ]
        return _summary(records, seconds, latencies)


def _write(sink: TableSink, df: DataFrame, commit: CommitInfo) -> None:
    """Appends, or upserts the rows as changes that delete nothing, as the table is declared."""
    sink.write(df.withColumn(DELETE_FLAG, F.lit(False)) if sink.spec.upsert else df, commit)


def _run(writer: Any, checkpoint: Path) -> float:
    """Runs a foreachBatch writer to the end of its input; its seconds."""
    started = time.perf_counter()
    query = writer.option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start()
    return await_query(query, started, "the query")


def _summary(records: int, seconds: float, latencies: list[float]) -> dict[str, Any]:
    return {
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds) if seconds else None,
        "batches": len(latencies),
        "commit_p50_s": round(percentile(latencies, 0.5), 2),
        "commit_p95_s": round(percentile(latencies, 0.95), 2),
    }


def markdown(doc: dict[str, Any]) -> str:
    """The README table of one run."""
    lines = [
        f"{doc['batches']} micro-batches of {doc['batch']:,} records; upserts into "
        f"{doc['keys']:,} keys, {doc['update_share']:.0%} of each batch updates",
        "",
        "| format | append ours rec/s | append theirs rec/s | ours / theirs | upsert ours rec/s "
        "| upsert theirs rec/s | ours / theirs | commit p50 / p95 s (append, upsert ours) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case, r in doc["cases"].items():
        ao, at, uo = r["append_ours"], r["append_theirs"], r["upsert_ours"]
        ut = r.get("upsert_theirs")
        theirs_upsert = f"{ut['records_per_s']:,}" if ut else "n/a"
        lines.append(
            f"| {case} | {ao['records_per_s']:,} | {at['records_per_s']:,} | {_ratio(ao, at)} "
            f"| {uo['records_per_s']:,} | {theirs_upsert} | {_ratio(uo, ut)} "
            f"| {ao['commit_p50_s']} / {ao['commit_p95_s']}, "
            f"{uo['commit_p50_s']} / {uo['commit_p95_s']} |"
        )
    return "\n".join(lines)


def _ratio(ours: dict[str, Any], theirs: dict[str, Any] | None) -> str:
    if not theirs or not theirs["records_per_s"]:
        return "n/a"
    return f"{ours['records_per_s'] / theirs['records_per_s']:.2f}"


if __name__ == "__main__":
    sys.exit(main())
