"""Throughput of the ingest path on the local stack: ``python -m bench.run [--quick]``.

Starts the embedded stack (Kafka broker + moto's Glue Schema Registry), registers two
versions of the orders schema, fills a multi-partition topic with Glue-framed Avro (10 %
zlib), warms the JVM up on a small topic, then measures on the same data:

- ``kafka_noop``         Spark's Kafka source into the no-op sink (the upper limit);
- ``kafka_noop_stream``  the same as an availableNow stream with the e2e batch size;
- ``native_from_avro``   ``from_avro`` over cached bare v1 bodies (the decode limit);
- ``ours_decode``        ``BatchDecoder.decode`` + ``table_rows`` over the cached framed
                         records, into no-op (framing, registry, zlib, decode, routing);
- ``ours_process``       ``Pipeline.process`` over the cached records, no-op sinks;
- ``python_udf_decode``  a naive fastavro ``@udf`` over the cached framed records;
- ``decode_breakdown``   the steps inside ``ours_decode`` timed one by one (scan, framing,
                         schema-id scan, decode with / without the Kafka metadata columns);
- ``iceberg_write_limit`` the product's Iceberg sink appending already-decoded cached rows
                         (what e2e could reach if decoding were free);
- ``e2e_iceberg``        ``start_pipeline`` (available_now) from Kafka into Iceberg.

``--format delta`` or ``--format hudi`` writes those two paths' tables in that format instead
(``delta_write_limit`` / ``e2e_delta``, ...; ``--paths write_limit,e2e`` selects them in any
format) and the results to ``bench/results-<format>.json``. Per-format sink comparisons
(upserts, each format's own streaming sink) are ``python -m bench.formats``.

A measured path runs until its runs add up to ``--min-seconds`` (20 s; at most
``--max-runs``); rates are those of the median run. Each path's CPU share used by other
processes is reported: figures measured on a busy machine are flagged.

Prints a markdown table and writes ``bench/results.json``. State lives in ``.bench/``,
wiped at the start of each run; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import paths
from bench.data import Pool, Versions, build_pool, produce_pool, register_versions
from bench.monitor import CpuShare, RssMonitor
from devtools.devstack.stack import LocalStack, StackInfo
from etl.config import Settings, TableFormat
from etl.pipeline import build_pipeline, pipeline_tables

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
REGISTRY = "etl-bench"
SCHEMA_NAME = "orders"
TOPIC = "bench-orders"
WARMUP_TOPIC = "bench-warmup"
PIPELINE = "orders"
WARMUP_PIPELINE = "orders_warmup"
MAX_VALUE_BYTES = 8 * 1024 * 1024
MB = 1_000_000
CONTENTION_WARNING = 0.1

DEFAULT_RECORDS = 4_000_000
QUICK_RECORDS = 50_000
DEFAULT_WARMUP = 100_000
QUICK_WARMUP = 5_000
MIN_SECONDS = 20.0
DEFAULT_PATHS = (
    "kafka_noop",
    "kafka_noop_stream",
    "native_from_avro",
    "ours_decode",
    "ours_process",
    "python_udf_decode",
    "decode_breakdown",
    "iceberg_write_limit",
    "e2e_iceberg",
)
ALL_PATHS = DEFAULT_PATHS
DECODE_PATHS = {
    "decode_breakdown",
    "iceberg_write_limit",
    "ours_decode",
    "ours_process",
    "python_udf_decode",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--records",
        type=int,
        help=f"records in the measured topic (default {DEFAULT_RECORDS:,}; {QUICK_RECORDS:,} "
        "with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (< 2 min)")
    parser.add_argument("--warmup-records", type=int, help="records of the warm-up topic")
    parser.add_argument("--partitions", type=int, default=4, help="topic partitions")
    parser.add_argument("--pool", type=int, default=20_000, help="distinct encoded records")
    parser.add_argument(
        "--batches", type=int, default=8, help="e2e micro-batches (sets maxOffsetsPerTrigger)"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        help=f"repeat a measured path until its runs add up to this (default {MIN_SECONDS:.0f}; "
        "0 with --quick)",
    )
    parser.add_argument("--max-runs", type=int, default=10, help="most runs of one measured path")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    parser.add_argument("--driver-memory", default="6g", help="spark.driver.memory")
    parser.add_argument(
        "--paths",
        default="default",
        help="comma-separated paths, or 'default' (the first seven below) or 'all': "
        + ", ".join(ALL_PATHS),
    )
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark conf (repeatable), e.g. for experiments",
    )
    parser.add_argument(
        "--table-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Iceberg property of the e2e table (repeatable)",
    )
    parser.add_argument(
        "--format",
        choices=[f.value for f in TableFormat],
        default=TableFormat.ICEBERG.value,
        help="table format of the write-limit and e2e tables",
    )
    parser.add_argument("--event-log", action="store_true", help="write Spark event logs")
    parser.add_argument(
        "--explain", action="store_true", help="write each path's formatted plan to the workdir"
    )
    parser.add_argument("--workdir", default=str(REPO / ".bench"), help="wiped at start")
    parser.add_argument(
        "--results",
        help="the JSON written (default bench/results.json; bench/results-<format>.json for "
        "another --format)",
    )
    parser.add_argument(
        "--broker-jars", default=str(REPO / ".jars" / "broker"), help="the broker's classpath"
    )
    parser.add_argument(
        "--spark-jars", default=str(REPO / ".jars" / "spark"), help="jars for the Spark JVM"
    )
    args = parser.parse_args(argv)
    args.records = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    args.warmup_records = args.warmup_records or (QUICK_WARMUP if args.quick else DEFAULT_WARMUP)
    if args.min_seconds is None:
        args.min_seconds = 0.0 if args.quick else MIN_SECONDS
    fmt = args.format
    args.results = args.results or str(
        REPO / "bench" / ("results.json" if fmt == "iceberg" else f"results-{fmt}.json")
    )
    groups = {"default": DEFAULT_PATHS, "all": ALL_PATHS}
    aliases = {"write_limit": "iceberg_write_limit", "e2e": "e2e_iceberg"}
    chosen = [
        aliases.get(path, path)
        for item in args.paths.split(",")
        if item.strip()
        for path in groups.get(item.strip(), (item.strip(),))
    ]
    unknown = sorted(set(chosen) - set(ALL_PATHS))
    args.paths = [format_path(path, fmt) for path in chosen]
    if unknown:
        parser.error(f"--paths: unknown {unknown}, expected some of {', '.join(ALL_PATHS)}")
    if min(args.records, args.warmup_records, args.batches, args.max_runs) < 1:
        parser.error("--records, --warmup-records, --batches and --max-runs must be positive")
    return args


def format_path(name: str, fmt: str) -> str:
    """A path's name when its table is in another format (``e2e_iceberg`` -> ``e2e_delta``)."""
    return name.replace("iceberg", fmt)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag}: expected KEY=VALUE, found {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def prepare_environment() -> None:
    """Deterministic time zone; moto's dummy credentials; no shell ETL__ overrides."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    for key in [k for k in os.environ if k.upper().startswith("ETL__")]:
        del os.environ[key]
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(key, None)
    # moto accepts any credentials; real ones must never reach it
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )


def build_settings(args: argparse.Namespace, info: StackInfo, workdir: Path) -> Settings:
    """Settings like conf/local.yaml, pointed at this stack and at ``workdir``."""
    spark_conf = {
        "spark.driver.memory": args.driver_memory,
        "spark.sql.streaming.stopTimeout": "60s",
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(workdir / "spark-local"),
        # databases of the session catalog (Hudi and Delta tables keep their own locations)
        "spark.sql.warehouse.dir": str(workdir / "catalog"),
    }
    if args.event_log:
        (workdir / "events").mkdir(parents=True, exist_ok=True)
        spark_conf["spark.eventLog.enabled"] = "true"
        spark_conf["spark.eventLog.dir"] = (workdir / "events").resolve().as_uri()
    spark_conf.update(_pairs(args.conf, "--conf"))
    table_properties = {"format-version": "2", "write.parquet.compression-codec": "zstd"}
    table_properties.update(_pairs(args.table_property, "--table-property"))

    def pipeline(topic: str, table: str, max_offsets: int) -> dict[str, Any]:
        return {
            "source": {
                "bootstrap_servers": info.bootstrap_plaintext,
                "topics": [topic],
                "starting_offsets": "earliest",
                "max_offsets_per_trigger": max_offsets,
            },
            # the reader (table) schema is the latest registry version: v2
            "decode": {"wire_format": "glue", "schema_name": SCHEMA_NAME},
            "sink": {
                "table": f"local.bench.{table}",
                "partition_by": ["days(order_ts)"],
                "properties": table_properties,
            }
            if args.format == "iceberg"
            else {
                "format": args.format,
                "table": f"bench.{table}",
                "location": str(workdir / "lake" / table),
                "partition_by": ["days(order_ts)"],
            },
            "dead_letter": {"table": f"local.bench.{table}_dlq"}
            if args.format == "iceberg"
            else {
                "table": f"bench.{table}_dlq",
                "location": str(workdir / "lake" / f"{table}_dlq"),
            },
            "checkpoint": str(workdir / "checkpoints" / table),
            "trigger": {"mode": "available_now"},
        }

    return Settings.model_validate(
        {
            "spark": {
                "app_name": "streaming-etl-bench",
                "master": args.master,
                "jars_dir": args.spark_jars,
                "shuffle_partitions": args.partitions,
                "ui_enabled": False,
                "conf": spark_conf,
            },
            "catalog": {"name": "local", "type": "hadoop", "warehouse": str(workdir / "warehouse")},
            "aws": {"endpoint_url": info.aws_endpoint, "region": "us-east-1"},
            "registry": {"registry_name": REGISTRY, "max_attempts": 4},
            "pipelines": {
                name: pipeline(topic, name, math.ceil(records / batches))
                for name, topic, records, batches in (
                    (PIPELINE, TOPIC, args.records, args.batches),
                    (WARMUP_PIPELINE, WARMUP_TOPIC, args.warmup_records, 2),
                )
            },
        }
    )


@dataclass
class Measured:
    """One measured path: ``records`` and ``input_bytes`` per run, the seconds of each run.

    Rates use the median run (the steady state: the first run of a path is often slower
    while the JIT compiles its code); all runs are kept in ``runs``.
    """

    name: str
    records: int
    input_bytes: int
    runs: list[float]
    rss_mib: dict[str, float]
    cpu: CpuShare
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def rps(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def mbps(self) -> float:
        return self.input_bytes / MB / self.seconds if self.seconds else 0.0


@dataclass
class Bench:
    """One benchmark run against a started stack and Spark session."""

    args: argparse.Namespace
    spark: SparkSession
    settings: Settings
    info: StackInfo
    versions: Versions
    pool: Pool
    monitor: RssMonitor
    workdir: Path
    results: dict[str, Measured] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def _plan(self, name: str, warm: bool) -> Path | None:
        if warm or not self.args.explain:
            return None
        return self.workdir / "plans" / f"{name}.txt"

    def _measure(
        self,
        name: str,
        records: int,
        input_bytes: int,
        run: Callable[[int], tuple[float, dict[str, Any]]],
        *,
        warm: bool,
        repeatable: bool = True,
    ) -> None:
        """Runs one path: once when warming up, else until ``--min-seconds`` are measured.

        A measured path is repeated (at most ``--max-runs`` times) until its runs add up to
        ``--min-seconds``; its throughput is all records over all seconds of those runs.
        """
        if name not in self.args.paths:
            return
        label = f"warm-up {name}" if warm else name
        runs: list[float] = []
        extra: dict[str, Any] = {}
        self.monitor.start_interval()
        while True:
            log.info("%s: run %d on %s records", label, len(runs) + 1, f"{records:,}")
            seconds, extra = run(len(runs))
            runs.append(seconds)
            log.info("%s: %.1fs, %s records/s", label, seconds, f"{records / seconds:,.0f}")
            if (
                warm
                or not repeatable
                or len(runs) >= self.args.max_runs
                or sum(runs) >= self.args.min_seconds
            ):
                break
        rss, cpu = self.monitor.end_interval()
        if warm:
            return
        if cpu.foreign > CONTENTION_WARNING:
            log.warning(
                "%s: other processes used %.0f%% of the machine's CPU: figures are skewed",
                name,
                cpu.foreign * 100,
            )
        self.results[name] = Measured(name, records, input_bytes, runs, rss, cpu, extra)

    def run_all(self, *, topic: str, pipeline: str, records: int, warm: bool) -> None:
        """Runs every selected path on one topic (the warm-up one or the measured one).

        ``pipeline`` names the settings' pipeline of the e2e run on that topic.
        """
        args = self.args
        values, _keys, bodies = self.pool.totals(records)
        bootstrap = self.info.bootstrap_plaintext

        self._measure(
            "kafka_noop",
            records,
            values,
            lambda _run: (
                paths.kafka_noop(self.spark, bootstrap, topic, self._plan("kafka_noop", warm)),
                {},
            ),
            warm=warm,
        )
        max_offsets = self.settings.pipeline(pipeline).source.max_offsets_per_trigger or records

        def stream(run: int) -> tuple[float, dict[str, Any]]:
            checkpoint = self.workdir / "checkpoints" / f"noop-{topic}-{run}"
            seconds, batches = paths.kafka_noop_stream(
                self.spark, bootstrap, topic, max_offsets=max_offsets, checkpoint=checkpoint
            )
            return seconds, {"batches": batches, "max_offsets_per_trigger": max_offsets}

        self._measure("kafka_noop_stream", records, values, stream, warm=warm)

        if {format_path(path, args.format) for path in DECODE_PATHS} & set(args.paths):
            started = time.perf_counter()
            cached = paths.cache_kafka(self.spark, bootstrap, topic)
            if not warm:
                self.notes["kafka_cache"] = {
                    "seconds": round(time.perf_counter() - started, 1),
                    **paths.cached_sizes(self.spark),
                }
            try:
                self._decode_paths(cached, pipeline, records, values, warm=warm)
            finally:
                cached.unpersist(blocking=True)

        if "native_from_avro" in args.paths:
            native_input = paths.cache_native_bodies(
                self.spark, self.pool.v1_bodies, records=records, partitions=args.partitions
            )
            if not warm:
                self.notes["native_cache"] = paths.cached_sizes(self.spark)
            try:
                self._measure(
                    "native_from_avro",
                    records,
                    bodies,
                    lambda _run: (
                        paths.native_from_avro(
                            native_input, self.versions.v1, self._plan("native_from_avro", warm)
                        ),
                        {},
                    ),
                    warm=warm,
                )
            finally:
                native_input.unpersist(blocking=True)

        self._measure(
            format_path("e2e_iceberg", args.format),
            records,
            values,
            functools.partial(self._e2e, pipeline, records),
            warm=warm,
            repeatable=False,
        )

    def _e2e(self, pipeline: str, records: int, _run: int) -> tuple[float, dict[str, Any]]:
        result = paths.e2e(self.spark, self.settings, pipeline)
        table = self.settings.pipeline(pipeline).sink.table
        # not timed: the run has finished
        landed = pipeline_tables(self.settings.pipeline(pipeline))[0].read(self.spark).count()
        if result.read != records or result.written != records or landed != records:
            raise RuntimeError(
                f"{pipeline}: read {result.read}, wrote {result.written} and {table} holds "
                f"{landed} of {records} records"
            )
        return result.seconds, {
            "batches": len(result.process_s),
            "max_offsets_per_trigger": self.settings.pipeline(
                pipeline
            ).source.max_offsets_per_trigger,
            "process_s": [round(s, 3) for s in result.process_s],
            "append_s": [round(s, 3) for s in result.append_s],
            "commit_latency_p50_s": paths.percentile(result.process_s, 0.5),
            "commit_latency_p95_s": paths.percentile(result.process_s, 0.95),
            "append_p50_s": paths.percentile(result.append_s, 0.5),
            "append_p95_s": paths.percentile(result.append_s, 0.95),
            "progress_duration_ms": result.progress_ms,
        }

    def _decode_paths(
        self, cached: DataFrame, pipeline: str, records: int, values: int, *, warm: bool
    ) -> None:
        if warm:
            paths.check_decode(cached, build_pipeline(self.settings, pipeline), expected=records)

        def measure(name: str, run: Callable[[], float]) -> None:
            self._measure(name, records, values, lambda _run: (run(), {}), warm=warm)

        def ours(_run: int) -> tuple[float, dict[str, Any]]:
            seconds, sizes = paths.ours_decode(
                cached, build_pipeline(self.settings, pipeline), self._plan("ours_decode", warm)
            )
            return seconds, {f"cached_{k}_with_input": v for k, v in sizes.items()}

        self._measure("ours_decode", records, values, ours, warm=warm)

        def process(_run: int) -> tuple[float, dict[str, Any]]:
            seconds, counts = paths.ours_process(cached, build_pipeline(self.settings, pipeline))
            if counts["written"] != records:
                raise RuntimeError(f"ours_process wrote {counts} of {records} records")
            return seconds, counts

        self._measure("ours_process", records, values, process, warm=warm)
        measure(
            "python_udf_decode",
            lambda: paths.python_udf_decode(
                cached,
                self.versions.writers(),
                self.versions.v2,
                self._plan("python_udf_decode", warm),
            ),
        )

        def breakdown(_run: int) -> tuple[float, dict[str, Any]]:
            steps = paths.decode_breakdown(cached, build_pipeline(self.settings, pipeline))
            return sum(steps.values()), {f"step_{k}_s": round(v, 3) for k, v in steps.items()}

        self._measure("decode_breakdown", records, values, breakdown, warm=warm)
        if format_path("iceberg_write_limit", self.args.format) in self.args.paths:
            self._write_limit(cached, pipeline, records, values, warm=warm)

    def _write_limit(
        self, cached: DataFrame, pipeline: str, records: int, values: int, *, warm: bool
    ) -> None:
        """An append of pre-decoded rows through the product's sink of the table's format:
        what e2e could reach with a free decode."""
        built = build_pipeline(self.settings, pipeline)
        fmt = self.settings.pipeline(pipeline).sink.format
        spec = built.committer.table.spec
        rows = paths.decoded_table_rows(cached, built)
        try:

            def write(run: int) -> tuple[float, dict[str, Any]]:
                suffix = f"_write_limit_{'warm' if warm else 'run'}_{run}"
                location = f"{spec.location}{suffix}" if spec.location else None
                table = dataclasses.replace(spec, table=spec.table + suffix, location=location)
                seconds, sink = paths.write_limit(rows, fmt, table)
                landed = sink.read(self.spark).count()  # not timed
                if landed != records:
                    raise RuntimeError(f"{table.table} holds {landed} of {records} records")
                paths.drop_table(self.spark, table)
                return seconds, {}

            self._measure(
                format_path("iceberg_write_limit", fmt.value), records, values, write, warm=warm
            )
        finally:
            rows.unpersist(blocking=True)


def machine(spark: SparkSession) -> dict[str, Any]:
    """Cores, memory and versions of what ran the benchmark."""
    import fastavro
    import pyarrow

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    jvm: Any = spark.sparkContext._jvm
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": str(jvm.java.lang.System.getProperty("java.version")),
        "java_vm": str(jvm.java.lang.System.getProperty("java.vm.name")),
        "spark": spark.version,
        "spark_master": spark.sparkContext.master,
        "pyarrow": pyarrow.__version__,
        "fastavro": fastavro.__version__,
    }


def summarize(
    bench: Bench, *, records: int, run_seconds: float, produce: dict[str, Any]
) -> dict[str, Any]:
    """The results.json document."""
    r = bench.results

    def rps(name: str) -> float | None:
        return round(r[name].rps, 1) if name in r else None

    def mbps(name: str) -> float | None:
        return round(r[name].mbps, 2) if name in r else None

    def ratio(a: str, b: str) -> float | None:
        return round(r[a].rps / r[b].rps, 3) if a in r and b in r else None

    fmt = bench.args.format
    e2e_name, limit_name = format_path("e2e_iceberg", fmt), format_path("iceberg_write_limit", fmt)
    names = [format_path(name, fmt) for name in ALL_PATHS]
    e2e = r[e2e_name].extra if e2e_name in r else {}
    overall = bench.monitor.overall.mib()
    doc: dict[str, Any] = {
        "records": records,
        "format": fmt,
        **{f"{name}_rps": rps(name) for name in names},
        **{f"{name}_mbps": mbps(name) for name in names},
        "decode_vs_native_ratio": ratio("ours_decode", "native_from_avro"),
        "decode_vs_python_udf_ratio": ratio("ours_decode", "python_udf_decode"),
        "e2e_vs_noop_ratio": ratio(e2e_name, "kafka_noop"),
        "e2e_vs_noop_stream_ratio": ratio(e2e_name, "kafka_noop_stream"),
        "process_vs_decode_ratio": ratio("ours_process", "ours_decode"),
        "write_limit_vs_noop_ratio": ratio(limit_name, "kafka_noop"),
        "e2e_vs_write_limit_ratio": ratio(e2e_name, limit_name),
        "commit_latency_p50_s": _round(e2e.get("commit_latency_p50_s")),
        "commit_latency_p95_s": _round(e2e.get("commit_latency_p95_s")),
        "commit_latency_measures": "wall time of each Pipeline.process call (one "
        "micro-batch: frame, registry, decode, counts, table write + commit)",
        f"{fmt}_append_p50_s": _round(e2e.get("append_p50_s")),
        f"{fmt}_append_p95_s": _round(e2e.get("append_p95_s")),
        "peak_rss_driver_jvm_mib": overall.get("driver_jvm"),
        "peak_rss_python_worker_mib": overall.get("python_worker_max"),
        "peak_rss_python_workers_sum_mib": overall.get("python_workers_sum"),
        "peak_rss_python_driver_mib": overall.get("python_driver"),
        "peak_rss_broker_mib": overall.get("broker"),
        "run_seconds": round(run_seconds, 1),
        "paths": {
            name: {
                "records": m.records,
                "input_bytes": m.input_bytes,
                "runs_s": [round(run, 2) for run in m.runs],
                "seconds": round(m.seconds, 2),
                "seconds_all_runs": round(sum(m.runs), 2),
                "rps": round(m.rps, 1),
                "mbps": round(m.mbps, 2),
                "peak_rss_mib": m.rss_mib,
                "cpu_share_own": m.cpu.own,
                "cpu_share_other_processes": m.cpu.foreign,
                **_rounded(m.extra),
            }
            for name, m in r.items()
        },
        "data": {
            "topic_partitions": bench.args.partitions,
            "pool_distinct_records": len(bench.pool),
            "schema_versions": {"v1": bench.versions.v1_id, "v2": bench.versions.v2_id},
            "mix": "v1/v2 alternating, 10% zlib (half per version)",
            "value_bytes": bench.pool.totals(records)[0],
            "key_bytes": bench.pool.totals(records)[1],
            "native_body_bytes": bench.pool.totals(records)[2],
            "produce": produce,
            "mb_per_s_means": "1e6 bytes of the record values a path consumes per second "
            "(framed Kafka values; bare v1 bodies for native_from_avro)",
            "rates_use": "the median run of each path (records per run / its seconds)",
        },
        "notes": bench.notes,
        "settings": {
            "driver_memory": bench.args.driver_memory,
            "shuffle_partitions": bench.settings.spark.shuffle_partitions,
            "spark_conf": dict(bench.settings.spark.conf),
            "table_properties": dict(bench.settings.pipeline(PIPELINE).sink.properties),
            "partition_by": list(bench.settings.pipeline(PIPELINE).sink.partition_by),
        },
        "machine": machine(bench.spark),
    }
    return doc


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _rounded(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: _round(v) for k, v in extra.items()}


def markdown(doc: dict[str, Any]) -> str:
    """The results as markdown tables."""
    lines = [
        f"records: {doc['records']:,} (value bytes {doc['data']['value_bytes'] / MB:,.0f} MB), "
        f"run {doc['run_seconds']:.0f}s on {doc['machine']['cores']} cores "
        f"({doc['machine']['spark_master']})",
        "",
        "| path | runs | seconds (median run) | records/s | MB/s | peak driver JVM RSS MiB | "
        "peak Python worker RSS MiB (max / sum) | CPU used by other processes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = doc.get("format", "iceberg")
    for name in [format_path(path, fmt) for path in ALL_PATHS]:
        m = doc["paths"].get(name)  # rates of the median run
        if m is None:
            continue
        rss = m["peak_rss_mib"]
        workers = (
            f"{rss.get('python_worker_max', 0):,.0f} / {rss.get('python_workers_sum', 0):,.0f}"
            if "python_worker_max" in rss
            else "-"
        )
        lines.append(
            f"| {name} | {len(m['runs_s'])} | {m['seconds']:.1f} | {m['rps']:,.0f} | "
            f"{m['mbps']:.1f} | {rss.get('driver_jvm', 0):,.0f} | {workers} | "
            f"{m['cpu_share_other_processes']:.0%} |"
        )
    steps = doc["paths"].get("decode_breakdown")
    if steps:
        lines += ["", "| decode step (one run, seconds) | value |", "|---|---:|"]
        lines += [f"| {k[5:-2]} | {v:.2f} |" for k, v in steps.items() if k.startswith("step_")]
    lines += ["", "| figure | value | target |", "|---|---:|---:|"]
    targets = {
        "decode_vs_native_ratio": ">= 0.8",
        "decode_vs_python_udf_ratio": ">= 5",
        "e2e_vs_noop_ratio": ">= 0.6",
        "e2e_vs_noop_stream_ratio": "",
        "process_vs_decode_ratio": "",
        "write_limit_vs_noop_ratio": "",
        "e2e_vs_write_limit_ratio": "",
        "commit_latency_p50_s": "",
        "commit_latency_p95_s": "",
        f"{fmt}_append_p50_s": "",
        f"{fmt}_append_p95_s": "",
        "peak_rss_driver_jvm_mib": "",
        "peak_rss_python_worker_mib": "",
        "peak_rss_python_workers_sum_mib": "",
    }
    for key, target in targets.items():
        value = doc.get(key)
        if value is None and not target:
            continue  # an optional figure of a path that did not run
        shown = "-" if value is None else f"{value:,}"
        lines.append(f"| {key} | {shown} | {target} |")
    return "\n".join(lines)


def run_bench(
    args: argparse.Namespace,
    stack: LocalStack,
    monitor: RssMonitor,
    workdir: Path,
    started: float,
) -> dict[str, Any]:
    """Registers, produces, then runs the warm-up and the measured paths; returns results."""
    info = stack.info
    versions = register_versions(
        info.glue_client(),
        registry_name=REGISTRY,
        schema_name=SCHEMA_NAME,
        v1_path=REPO / "schemas" / "orders.avsc",
    )
    pool = build_pool(versions, min(args.pool, args.records))
    produced: dict[str, Any] = {}
    for topic, count in ((TOPIC, args.records), (WARMUP_TOPIC, args.warmup_records)):
        stack.broker.create_topic(topic, partitions=args.partitions)
        seconds = produce_pool(
            info.bootstrap_plaintext, topic, pool, records=count, partitions=args.partitions
        )
        produced[topic] = {"records": count, "seconds": round(seconds, 1)}
        log.info("produced %s records to %s in %.1fs", f"{count:,}", topic, seconds)

    from etl.spark import build_spark

    settings = build_settings(args, info, workdir)
    spark = build_spark(settings)
    try:
        spark.sparkContext.setLogLevel("ERROR")
        bench = Bench(args, spark, settings, info, versions, pool, monitor, workdir)
        bench.run_all(
            topic=WARMUP_TOPIC,
            pipeline=WARMUP_PIPELINE,
            records=args.warmup_records,
            warm=True,
        )
        bench.run_all(
            topic=TOPIC,
            pipeline=PIPELINE,
            records=args.records,
            warm=False,
        )
        return summarize(
            bench, records=args.records, run_seconds=time.perf_counter() - started, produce=produced
        )
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0 on success."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "etl", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.perf_counter()
    prepare_environment()
    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    stack = LocalStack(workdir / "stack", Path(args.broker_jars))
    stack.start()
    try:
        with RssMonitor() as monitor:
            doc = run_bench(args, stack, monitor, workdir, started)
    finally:
        stack.stop()
    doc["run_seconds"] = round(time.perf_counter() - started, 1)  # including the stack's stop
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"\nwrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
