"""GDPR erasure benchmark: 1,000 subjects out of a 10M-row table, ours against a plain DELETE.

``python -m bench.erasure`` runs each format in a process of its own and writes
``bench/erasure.json``. Per format and layout (``scattered``: rows in random order, every file
holds every kind of customer; ``sorted``: the table written sorted by the subject column, as
a compaction with ``sort_by`` leaves it):

- **ours**: ``etl.erasure.erase`` end to end (forget list, find the rows, one copy-on-write
  delete, purge of the history and metadata, verification scan of every file);
- **plain**: ``DELETE FROM t WHERE customer_email IN ('...', ...)`` followed by the same
  expiry a hand-written job would run (Iceberg ``expire_snapshots`` keeping one snapshot,
  Delta ``VACUUM RETAIN 0 HOURS``); then our verification scan of its files, to show what a
  plain delete leaves behind.

Reported: seconds, files rewritten against the files that held a subject before (the target
is <= 2x), rows deleted, and the files where the scan still finds a subject; then ours for
ten other subjects on the plain table (where a sorted layout pays). Hudi is not
timed here: its purge rebuilds the metadata table, measured by the tests only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from bench.cases import print_result, run_in_processes
from bench.formats import REPO, _rows, _session
from etl.config import Settings, TableFormat
from etl.erasure import ErasureRequest, erase, table_location
from etl.verify import scan_location

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

CASES = {"iceberg": TableFormat.ICEBERG, "delta": TableFormat.DELTA}
LAYOUTS = ("scattered", "sorted")
SUBJECT = "customer_email"
CUSTOMERS = 50_000  # bench.formats._rows: customer_id = id % 50,000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.erasure", description=__doc__)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--subjects", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--workdir", default=str(REPO / ".bench" / "erasure"))
    parser.add_argument("--results", default=str(REPO / "bench" / "erasure.json"))
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case here
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.files, args.subjects = 200_000, 10, 50
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {unknown}, expected some of {', '.join(CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs every case in its own process; writes and prints the results."""
    args = parse_args(argv)
    os.environ.setdefault("ETL_PRIVACY_SALT", "bench-salt-not-a-secret")
    if args.one:
        print_result(run_case(args, args.one))
        return 0
    shutil.rmtree(args.workdir, ignore_errors=True)
    passed = [
        f"--rows={args.rows}",
        f"--files={args.files}",
        f"--subjects={args.subjects}",
        f"--workdir={args.workdir}",
        f"--driver-memory={args.driver_memory}",
    ]
    found = run_in_processes("bench.erasure", args.cases, passed)
    if found is None:
        return 1
    doc = {
        "rows": args.rows,
        "files": args.files,
        "subjects": args.subjects,
        "cores": os.cpu_count(),
        "cases": found,
    }
    Path(args.results).write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    return 0


def run_case(args: argparse.Namespace, case: str) -> dict[str, Any]:
    """Both layouts of one format, ours and plain, in this process's session."""
    fmt = CASES[case]
    workdir = Path(args.workdir) / case
    workdir.mkdir(parents=True, exist_ok=True)
    spark = _session(args, fmt, workdir)
    picked = random.Random(7).sample(range(CUSTOMERS), args.subjects)
    subjects = [f"c{n}@example.org" for n in picked]
    result: dict[str, Any] = {}
    for layout in LAYOUTS:
        ours_table = _write(spark, args, fmt, workdir, f"ours_{layout}", layout)
        settings = _settings(fmt, workdir, ours_table)
        held = _files_holding(spark, fmt, settings, subjects)
        started = time.monotonic()
        audit = erase(spark, settings, ["bench"], ErasureRequest.of(f"bench-{layout}", subjects))
        ours_seconds = time.monotonic() - started
        (record,) = [t for t in audit.tables if t.role == "table"]
        verify_started = time.monotonic()
        location = _location(spark, fmt, settings)
        rescan = scan_location(location, subjects, fields=[SUBJECT])
        verify_seconds = time.monotonic() - verify_started

        plain_table = _write(spark, args, fmt, workdir, f"plain_{layout}", layout)
        plain_settings = _settings(fmt, workdir, plain_table)
        started = time.monotonic()
        plain = _plain_delete(spark, fmt, plain_settings, subjects)
        plain_seconds = time.monotonic() - started
        plain_scan = scan_location(
            _location(spark, fmt, plain_settings), subjects, fields=[SUBJECT]
        )
        # a small request on the same layout: here sorting by the subject pays
        others = sorted(set(range(CUSTOMERS)) - set(picked))
        few = [f"c{n}@example.org" for n in random.Random(11).sample(others, 10)]
        few_held = _files_holding(spark, fmt, plain_settings, few)
        started = time.monotonic()
        small = erase(spark, plain_settings, ["bench"], ErasureRequest.of(f"few-{layout}", few))
        small_seconds = time.monotonic() - started
        (small_record,) = [t for t in small.tables if t.role == "table"]
        result[layout] = {
            "files_holding_subjects": held,
            "ours": {
                "seconds": round(ours_seconds, 1),
                "status": record.status,
                "rows_deleted": record.rows_deleted,
                "files_rewritten": record.files_rewritten,
                "rewritten_per_holding": round(record.files_rewritten / max(held, 1), 2),
                "files_removed": record.files_removed,
                "files_scanned": record.files_scanned,
                "bytes_scanned": record.bytes_scanned,
                "verification_seconds": round(verify_seconds, 1),
                "hits": record.hits,
                "hits_on_a_second_scan": len(rescan.hits),
            },
            "plain": {
                "seconds": round(plain_seconds, 1),
                **plain,
                "rewritten_per_holding": round(plain["files_rewritten"] / max(held, 1), 2),
                "files_still_holding_a_subject": len(plain_scan.hits),
                "kinds_still_holding": sorted({_kind(h) for h in plain_scan.hits}),
            },
            "ours_over_plain": round(ours_seconds / max(plain_seconds, 0.001), 2),
            "ten_subjects": {
                "files_holding_subjects": few_held,
                "files_rewritten": small_record.files_rewritten,
                "seconds": round(small_seconds, 1),
                "status": small_record.status,
            },
        }
        print(f"{case} {layout}: {json.dumps(result[layout])}", flush=True)
    spark.stop()
    return result


def _table_rows(spark: SparkSession, args: argparse.Namespace) -> DataFrame:
    """Order rows with a subject column (``c<customer id>@example.org``)."""
    return _rows(spark, 0, args.rows).withColumn(
        SUBJECT, F.concat(F.lit("c"), F.col("customer_id").cast("string"), F.lit("@example.org"))
    )


def _write(
    spark: SparkSession,
    args: argparse.Namespace,
    fmt: TableFormat,
    workdir: Path,
    name: str,
    layout: str,
) -> str:
    """Writes the table in ``--files`` files of the layout; returns its name or location."""
    rows = _table_rows(spark, args)
    if layout == "sorted":
        rows = rows.repartitionByRange(args.files, SUBJECT).sortWithinPartitions(SUBJECT)
    else:
        rows = rows.repartition(args.files)
    if fmt is TableFormat.ICEBERG:
        spark.sql("CREATE NAMESPACE IF NOT EXISTS local.bench")
        table = f"local.bench.{name}"
        rows.writeTo(table).using("iceberg").tableProperty("format-version", "2").create()
        return table
    location = (workdir / "lake" / name).as_uri()
    rows.write.format("delta").save(location)
    return location


def _settings(fmt: TableFormat, workdir: Path, table: str) -> Settings:
    """A pipeline whose table is the bench table, with a privacy section."""
    if fmt is TableFormat.ICEBERG:
        sink: dict[str, Any] = {"table": table}
        dead: dict[str, Any] = {"table": f"{table}_dlq"}
    else:
        name = table.rstrip("/").rsplit("/", 1)[-1]
        sink = {"table": f"bench.{name}", "location": table, "format": "delta"}
        dead = {"table": f"bench.{name}_dlq", "location": f"{table}_dlq"}
    block = {
        "source": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"]},
        "decode": {"wire_format": "plain_avro", "schema_file": str(REPO / "schemas/orders.avsc")},
        "sink": sink,
        "dead_letter": dead,
        "checkpoint": str(workdir / "checkpoint"),
        "privacy": {"subject_fields": [SUBJECT]},
    }
    catalog = {"name": "local", "type": "hadoop", "warehouse": str(workdir / "warehouse")}
    return Settings.model_validate({"catalog": catalog, "pipelines": {"bench": block}})


def _location(spark: SparkSession, fmt: TableFormat, settings: Settings) -> str:
    """Where the bench table's files are."""
    from etl.pipeline import pipeline_tables

    table, _ = pipeline_tables(settings.pipeline("bench"))
    table.exists(spark)
    return table_location(spark, table)


def _files_holding(
    spark: SparkSession, fmt: TableFormat, settings: Settings, subjects: list[str]
) -> int:
    """How many data files hold a row of a subject."""
    from etl.pipeline import pipeline_tables

    table, _ = pipeline_tables(settings.pipeline("bench"))
    table.exists(spark)
    values = spark.createDataFrame([(s,) for s in subjects], "value string")
    rows = table.read(spark).join(F.broadcast(values), F.col(SUBJECT) == F.col("value"), "semi")
    return int(rows.select(F.input_file_name()).distinct().count())


def _plain_delete(
    spark: SparkSession, fmt: TableFormat, settings: Settings, subjects: list[str]
) -> dict[str, Any]:
    """DELETE ... WHERE subject IN (...), then the expiry a hand-written job runs."""
    # what a hand-written job runs: the values inline (Delta's DELETE takes no subquery)
    condition = f"{SUBJECT} IN ({', '.join(repr(s) for s in subjects)})"
    if fmt is TableFormat.ICEBERG:
        table = settings.pipeline("bench").sink.table
        spark.sql(f"DELETE FROM {table} WHERE {condition}")
        summary = spark.sql(
            f"SELECT summary FROM {table}.snapshots ORDER BY committed_at DESC LIMIT 1"
        ).first()
        assert summary is not None
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        spark.sql(
            f"CALL local.system.expire_snapshots(table => '{table.split('.', 1)[1]}', "
            f"older_than => TIMESTAMP '{now}+00:00', retain_last => 1)"
        ).collect()
        # a copy-on-write delete counts the rows of the files it rewrote as deleted
        deleted = int(summary[0].get("deleted-records", 0)) - int(
            summary[0].get("added-records", 0)
        )
        return {
            "rows_deleted": deleted,
            "files_rewritten": int(summary[0].get("deleted-data-files", 0)),
        }
    location = settings.pipeline("bench").sink.location
    path = f"delta.`{location}`"
    spark.sql(f"DELETE FROM {path} WHERE {condition}")
    metrics = spark.sql(f"DESCRIBE HISTORY {path} LIMIT 1").first()
    assert metrics is not None
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    # as ours does: VACUUM lists the table in 10,000 tasks by default, whatever its size
    spark.conf.set(
        "spark.sql.sources.parallelPartitionDiscovery.parallelism",
        str(4 * spark.sparkContext.defaultParallelism),
    )
    spark.sql(f"VACUUM {path} RETAIN 0 HOURS").collect()
    operation = metrics["operationMetrics"]
    return {
        "rows_deleted": int(operation.get("numDeletedRows", 0)),
        "files_rewritten": int(operation.get("numRemovedFiles", 0)),
    }


def _kind(path: str) -> str:
    """What kind of file a path is (for the report)."""
    name = path.rsplit("/", 1)[-1]
    if "_delta_log" in path:
        return "delta log" if name.endswith(".json") else "delta checkpoint"
    if "/metadata/" in path:
        return "iceberg manifest" if name.endswith(".avro") else "iceberg metadata"
    return "data file"


def markdown(doc: dict[str, Any]) -> str:
    """The results as the README's table."""
    lines = [
        f"{doc['subjects']:,} subjects out of {doc['rows']:,} rows in {doc['files']} files "
        f"({doc['cores']} cores, local[2])",
        "",
        "| format | layout | files holding | ours s | ours rewritten (x holding) | scan s "
        "| plain s | plain rewritten | files plain leaves holding a subject | ours / plain "
        "| 10 subjects: files holding → rewritten, s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for case, layouts in doc["cases"].items():
        for layout, r in layouts.items():
            ours, plain, few = r["ours"], r["plain"], r["ten_subjects"]
            left = plain["files_still_holding_a_subject"]
            kinds = ", ".join(plain["kinds_still_holding"])
            lines.append(
                f"| {case} | {layout} | {r['files_holding_subjects']} | {ours['seconds']} "
                f"| {ours['files_rewritten']} ({ours['rewritten_per_holding']}x) "
                f"| {ours['verification_seconds']} | {plain['seconds']} "
                f"| {plain['files_rewritten']} | {left}{f' ({kinds})' if left else ''} "
                f"| {r['ours_over_plain']} "
                f"| {few['files_holding_subjects']} → {few['files_rewritten']}, {few['seconds']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
