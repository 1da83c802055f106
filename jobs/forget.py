"""GDPR erasure: forget data subjects, delete their rows everywhere, erase and verify.

    python -m jobs.forget --conf conf/local.yaml --request-id REQ-2026-0042 \\
        --subjects-file subjects.txt [--pipeline orders ...] [--format iceberg]

The subjects file holds one value per line (UTF-8; a local path or an s3:// URI); ``--subject
V`` (repeatable) works too but leaves the values in the shell's history and the process list.
Each pipeline with a ``privacy`` section (default: all of them, of one table format per run)
gets the subjects in its forget list (keyed hashes), their rows deleted from its table and
dead-letter table, older history and metadata holding them purged, every file verified, and
the request audited (one JSON line on stdout, a row per table in its erasure-audit table).
Exit code 0 when every table is verified clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

from etl import logs
from etl.config import Settings, TableFormat, load_settings
from etl.erasure import ErasureRequest, check_privacy, erase, read_subjects
from etl.exceptions import ConfigError, EtlError
from etl.spark import build_spark
from jobs.maintain import select_pipelines

log = logging.getLogger("jobs.forget")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.forget",
        description="Erase data subjects from the pipelines' tables (GDPR right to erasure).",
    )
    parser.add_argument("--conf", required=True, help="YAML settings file, e.g. conf/local.yaml")
    parser.add_argument(
        "--request-id", required=True, help="the request's id (a rerun of it is harmless)"
    )
    subjects = parser.add_mutually_exclusive_group(required=True)
    subjects.add_argument("--subjects-file", help="one subject value per line (path or s3:// URI)")
    subjects.add_argument(
        "--subject", action="append", dest="subjects", help="a subject value (repeatable)"
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        dest="pipelines",
        help="pipeline to erase from (repeatable); default: every pipeline with a privacy "
        "section (of --format, when they write several formats)",
    )
    parser.add_argument(
        "--format", choices=[f.value for f in TableFormat], help="erase from pipelines of it"
    )
    parser.add_argument("--log-level", default="INFO", help="this project's log level")
    return parser.parse_args(argv)


def with_privacy(settings: Settings, names: list[str] | None, fmt: str | None) -> list[str]:
    """The named pipelines, or (none named) every pipeline with a privacy section (of the
    format, if given).

    Raises:
        ConfigError: No pipeline has a privacy section.
    """
    if names:
        return names
    private = sorted(
        n
        for n, p in settings.pipelines.items()
        if p.privacy is not None and (fmt is None or p.sink.format.value == fmt)
    )
    if not private:
        of = f" writing {fmt}" if fmt else ""
        raise ConfigError(
            f"pipelines.*.privacy: expected a pipeline{of} with a privacy section, found none"
        )
    return private


def main(argv: list[str] | None = None) -> int:
    """Runs one erasure request.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` if None.

    Returns:
        0 when every table was erased and verified clean, 1 otherwise.
    """
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = load_settings(args.conf)
        subjects = read_subjects(args.subjects_file) if args.subjects_file else args.subjects
        request = ErasureRequest.of(args.request_id, subjects)
        fmt, names = select_pipelines(
            settings, with_privacy(settings, args.pipelines, args.format), args.format
        )
        for name in names:
            # a missing section or salt fails here, before a Spark session starts
            check_privacy(settings, name)
        spark = build_spark(settings, [fmt])
        spark.sparkContext.setLogLevel("WARN")
        audit = erase(spark, settings, names, request)
    except EtlError as err:
        log.error("%s", err)
        return 1
    print(audit.as_json(), flush=True)
    if audit.failed:
        log.error("request %s: a table was not erased or not verified clean", request.request_id)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
