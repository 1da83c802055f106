"""Maintenance benchmarks: compaction of a small-file table, expiry of a long history.

``python -m bench.maintenance`` runs each format in a process of its own (as ``bench.formats``
does) and writes ``bench/maintenance.json``:

- compaction: ``--rows`` order rows written as ``--files`` small files (one plain batch write,
  unpartitioned), then our ``compact`` task (Iceberg ``rewrite_data_files`` bin-pack, Delta
  ``OPTIMIZE``, Hudi clustering) to ``--target-mb`` files. Reported: files before and after,
  the ideal count (bytes after / target size, rounded up) and the ratio to it (the target is
  <= 1.2), rows rewritten per second;
- expiry: a table with ``--snapshots`` commits, then our ``expire`` task keeping one
  (Iceberg: ``expire_snapshots`` of the snapshots of single-file appends; Delta: ``VACUUM``
  of the files of as many appends, removed by one ``OPTIMIZE``). Hudi's expiry is not timed:
  a thousand Hudi commits take about 40 minutes on this machine, and its cleaner runs inline
  after each commit anyway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cases import print_result, run_in_processes
from bench.formats import REPO, _rows, _session
from etl.config import CompactSettings, ExpireSettings, MaintenanceSettings, TableFormat
from etl.formats import TableSpec, load_sink, table_format
from etl.formats.base import TableMaintenance
from etl.formats.hudi import HudiSink

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

CASES = {"iceberg": TableFormat.ICEBERG, "delta": TableFormat.DELTA, "hudi": TableFormat.HUDI}
# Hudi's maintenance waits for a quiet table: the benchmark's clock is a day ahead
LATER = dt.timedelta(days=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.maintenance", description=__doc__)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=2_000)
    parser.add_argument("--target-mb", type=int, default=16)
    parser.add_argument("--snapshots", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--workdir", default=str(REPO / ".bench" / "maintenance"))
    parser.add_argument("--results", default=str(REPO / "bench" / "maintenance.json"))
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.files, args.snapshots, args.target_mb = 50_000, 100, 50, 1
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
    found = run_in_processes("bench.maintenance", args.cases, _passed(args))
    if found is None:
        return 1
    results: dict[str, Any] = found
    doc = {
        "rows": args.rows,
        "files": args.files,
        "target_mb": args.target_mb,
        "snapshots": args.snapshots,
        "cores": os.cpu_count(),
        "cases": results,
    }
    Path(args.results).write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    return 0


def _passed(args: argparse.Namespace) -> list[str]:
    """The sizing flags, for a child process."""
    return [
        f"--rows={args.rows}",
        f"--files={args.files}",
        f"--target-mb={args.target_mb}",
        f"--snapshots={args.snapshots}",
        f"--workdir={args.workdir}",
        f"--driver-memory={args.driver_memory}",
    ]


def run_case(args: argparse.Namespace, case: str) -> dict[str, Any]:
    """The compaction and expiry measurements of one format, in this process's session."""
    fmt = CASES[case]
    workdir = Path(args.workdir) / case
    workdir.mkdir(parents=True, exist_ok=True)
    spark = _session(args, fmt, workdir)
    result = {"compaction": _compaction(spark, args, fmt, workdir)}
    if fmt is not TableFormat.HUDI:
        result["expiry"] = _expiry(spark, args, fmt, workdir)
    spark.stop()
    return result


def _maintenance(fmt: TableFormat, workdir: Path, name: str) -> TableMaintenance:
    """The maintenance tasks of a fresh bench table (append, unpartitioned)."""
    if fmt is TableFormat.ICEBERG:
        spec = TableSpec(f"local.bench.{name}", maintenance=MaintenanceSettings())
    else:
        location = (workdir / "lake" / name).as_uri()
        spec = TableSpec(f"bench.{name}", location=location, maintenance=MaintenanceSettings())
    return table_format(fmt).maintenance(load_sink(fmt, spec))


def _compaction(
    spark: SparkSession, args: argparse.Namespace, fmt: TableFormat, workdir: Path
) -> dict[str, Any]:
    """Small files written in one batch, then our compact task."""
    maintenance = _maintenance(fmt, workdir, "small_files")
    sink = maintenance.sink
    rows = _rows(spark, 0, args.rows).repartition(args.files)
    if fmt is TableFormat.ICEBERG:
        spark.sql("CREATE NAMESPACE IF NOT EXISTS local.bench")
        rows.writeTo(sink.name).using("iceberg").create()
    elif fmt is TableFormat.DELTA:
        rows.write.format("delta").save(sink.spec.location)
    else:
        assert isinstance(sink, HudiSink)
        options = {
            **sink.write_options("bulk_insert"),
            # one file per input partition: the small files to compact
            "hoodie.bulkinsert.sort.mode": "NONE",
            "hoodie.clean.automatic": "false",
            "hoodie.clustering.inline": "false",
        }
        rows.write.format("hudi").options(**options).mode("append").save(sink.spec.location)
    before = maintenance.stats(spark)
    settings = CompactSettings(target_file_size_mb=args.target_mb, min_input_files=2)
    started = time.perf_counter()
    outcome = maintenance.compact(
        spark, settings, now=dt.datetime.now(dt.UTC) + LATER, dry_run=False
    )
    seconds = time.perf_counter() - started
    after = maintenance.stats(spark)
    ideal = max(1, math.ceil(after.bytes / (args.target_mb * 1024 * 1024)))
    return {
        "files_before": before.files,
        "bytes_before": before.bytes,
        "files_after": after.files,
        "bytes_after": after.bytes,
        "ideal_files": ideal,
        "files_to_ideal": round(after.files / ideal, 2),
        "files_rewritten": outcome.files_rewritten,
        "seconds": round(seconds, 1),
        "rows_per_s": round(args.rows / seconds),
    }


def _expiry(
    spark: SparkSession, args: argparse.Namespace, fmt: TableFormat, workdir: Path
) -> dict[str, Any]:
    """A history of ``--snapshots`` commits, then our expire task keeping one."""
    maintenance = _maintenance(fmt, workdir, "long_history")
    sink = maintenance.sink
    one = _rows(spark, 0, 1).coalesce(1)
    started = time.perf_counter()
    if fmt is TableFormat.ICEBERG:
        one.writeTo(sink.name).using("iceberg").create()
        _iceberg_appends(spark, sink.name, args.snapshots - 1)
    else:
        _delta_appends(spark, str(sink.spec.location), args.snapshots)
    built = time.perf_counter() - started
    before = maintenance.stats(spark)
    settings = ExpireSettings(older_than_hours=0, retain_last=1)
    started = time.perf_counter()
    outcome = maintenance.expire(
        spark, settings, now=dt.datetime.now(dt.UTC) + LATER, keep_from=None, dry_run=False
    )
    seconds = time.perf_counter() - started
    after = maintenance.stats(spark)
    return {
        "snapshots_before": before.snapshots,
        "snapshots_after": after.snapshots,
        "files_deleted": outcome.files_deleted,
        "seconds": round(seconds, 1),
        "history_built_s": round(built, 1),
    }


def _iceberg_appends(spark: SparkSession, table: str, count: int) -> None:
    """``count`` more snapshots, each appending the table's one data file again (metadata
    only, through Iceberg's Java API: a SQL insert each would take minutes)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    iceberg = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, table)
    data_file = iceberg.currentSnapshot().addedDataFiles(iceberg.io()).iterator().next()
    for _ in range(count):
        iceberg.newFastAppend().appendFile(data_file).commit()


def _delta_appends(spark: SparkSession, location: str, count: int) -> None:
    """``count`` single-file appends (delta-rs: no Spark job each), then one ``OPTIMIZE`` that
    removes their files (VACUUM's work)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    path = location.removeprefix("file://")
    table = pa.table({"order_id": ["o-1"], "amount": [1.5]})
    for _ in range(count):
        write_deltalake(path, table, mode="append")
    spark.sql(f"OPTIMIZE delta.`{path}`").collect()


def markdown(doc: dict[str, Any]) -> str:
    """The README table of one run."""
    lines = [
        f"Compaction: {doc['rows']:,} rows in {doc['files']:,} files, target "
        f"{doc['target_mb']} MB; expiry: {doc['snapshots']:,} commits, keeping one",
        "",
        "| format | files before -> after (ideal) | after / ideal | compaction s | rows/s "
        "| expiry: snapshots before -> after, files deleted | expiry s |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for case, r in doc["cases"].items():
        c = r["compaction"]
        e = r.get("expiry")
        expiry = (
            f"{e['snapshots_before']:,} -> {e['snapshots_after']:,}, {e['files_deleted']:,}"
            if e
            else "not timed (inline cleaner)"
        )
        lines.append(
            f"| {case} | {c['files_before']:,} -> {c['files_after']:,} ({c['ideal_files']}) "
            f"| {c['files_to_ideal']} | {c['seconds']} | {c['rows_per_s']:,} | {expiry} "
            f"| {e['seconds'] if e else 'n/a'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
