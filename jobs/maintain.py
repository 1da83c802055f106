"""Maintenance of the pipelines' tables: compaction, expiry of old history, orphan removal.

    python -m jobs.maintain --conf conf/local.yaml --task all [--pipeline orders ...]
        [--format iceberg] [--dry-run]

Each task runs on the pipeline's table and on its dead-letter table, beside the running
stream, and prints one JSON line per task and table (also appended to the pipeline's
maintenance-log table). One run maintains tables of one format: each format's maintenance
runs in a session hosting only it (Hudi's and Iceberg's CALL procedures clash,
apache/hudi#12808), so a file with pipelines of several formats is maintained by one run
per format (``--format``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid

from etl import logs
from etl.config import Settings, TableFormat, load_settings
from etl.exceptions import ConfigError, EtlError
from etl.maintenance import Status, Task, run_maintenance, write_log
from etl.spark import build_spark

log = logging.getLogger("jobs.maintain")

ALL = "all"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.maintain",
        description="Compact, expire and remove orphan files of the pipelines' tables.",
    )
    parser.add_argument("--conf", required=True, help="YAML settings file, e.g. conf/local.yaml")
    parser.add_argument(
        "--task",
        required=True,
        choices=[*(t.value for t in Task), ALL],
        help="what to run; all = compact, expire, orphans in that order",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        dest="pipelines",
        help="pipeline whose tables to maintain (repeatable); default: every pipeline of "
        "--format, or every pipeline when all write one format",
    )
    parser.add_argument(
        "--format",
        choices=[f.value for f in TableFormat],
        help="maintain the pipelines writing this format",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be done; change nothing"
    )
    parser.add_argument("--log-level", default="INFO", help="this project's log level")
    return parser.parse_args(argv)


def select_pipelines(
    settings: Settings, names: list[str] | None, fmt: str | None
) -> tuple[TableFormat, list[str]]:
    """The pipelines to maintain and their one format.

    Raises:
        ConfigError: An unknown pipeline, none of the format, or pipelines of several
            formats (the message says which run to make for each).
    """
    chosen = names or sorted(
        name
        for name, pipeline in settings.pipelines.items()
        if fmt is None or pipeline.sink.format.value == fmt
    )
    if not chosen:
        raise ConfigError(f"--format {fmt}: no pipeline writes {fmt}")
    by_format: dict[TableFormat, list[str]] = {}
    for name in chosen:
        by_format.setdefault(settings.pipeline(name).sink.format, []).append(name)
    if fmt is not None and set(by_format) != {TableFormat(fmt)}:
        others = ", ".join(
            f"{n} ({f.value})" for f, ns in by_format.items() if f.value != fmt for n in ns
        )
        raise ConfigError(f"--format {fmt}: expected pipelines writing {fmt}, found {others}")
    if len(by_format) > 1:
        runs = "; ".join(
            f"--format {f.value} ({', '.join(ns)})" for f, ns in sorted(by_format.items())
        )
        raise ConfigError(
            "--pipeline: one run maintains tables of one format (each in a session hosting "
            f"only it), found several: run once per format: {runs}"
        )
    (only,) = by_format
    return only, chosen


def main(argv: list[str] | None = None) -> int:
    """Runs the maintenance job.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` if None.

    Returns:
        0 when every task ran (or did not apply), 1 when one failed or nothing could start.
    """
    args = parse_args(argv)
    logs.configure(args.log_level)
    tasks = list(Task) if args.task == ALL else [Task(args.task)]
    run_id = uuid.uuid4().hex
    failed = False
    try:
        settings = load_settings(args.conf)
        fmt, names = select_pipelines(settings, args.pipelines, args.format)
        spark = build_spark(settings, [fmt])
        spark.sparkContext.setLogLevel("WARN")
        for name in names:
            pipeline = settings.pipeline(name)
            records = run_maintenance(
                spark, pipeline, name, tasks, dry_run=args.dry_run, run_id=run_id
            )
            for record in records:
                print(record.as_json(), flush=True)
            write_log(spark, pipeline, name, records)
            failed |= any(r.status == Status.FAILED for r in records)
    except EtlError as err:
        log.error("%s", err)
        return 1
    if failed:
        log.error("maintenance run %s: a task failed (see its record's `error`)", run_id)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
