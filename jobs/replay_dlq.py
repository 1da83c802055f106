"""Replay a pipeline's dead-lettered records into its table, exactly once.

    python -m jobs.replay_dlq --conf conf/local.yaml --pipeline orders \\
        [--where "error_class = 'UNKNOWN_SCHEMA'"]

Records that now decode (a schema was registered, an expectation relaxed) are appended and
marked ``replayed_at`` / ``replay_id`` in the dead-letter table; the others stay as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys

from etl import logs
from etl.config import load_settings
from etl.exceptions import EtlError
from etl.formats import formats_used
from etl.pipeline import build_pipeline
from etl.replay import replay_dead_letters
from etl.spark import build_spark

log = logging.getLogger("jobs.replay_dlq")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m jobs.replay_dlq", description=__doc__)
    parser.add_argument("--conf", required=True, help="YAML settings file")
    parser.add_argument(
        "--pipeline", required=True, help="the pipeline whose dead letters to replay"
    )
    parser.add_argument("--where", help="extra SQL filter on the dead-letter table's columns")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs one replay; returns 0 on success, 1 on error."""
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = load_settings(args.conf)
        pipeline = build_pipeline(settings, args.pipeline)
        spark = build_spark(settings, formats_used(settings, [args.pipeline]))
        spark.sparkContext.setLogLevel("WARN")
        result = replay_dead_letters(spark, pipeline, now=dt.datetime.now(dt.UTC), where=args.where)
    except EtlError as err:
        log.error("%s", err)
        return 1
    resumed = " (resumed an unfinished run)" if result.resumed else ""
    print(
        f"replay {result.replay_id}{resumed}: {result.candidates} dead letters considered, "
        f"{result.appended} appended, {result.marked} marked replayed, "
        f"still failing: {result.still_failing or 'none'}, "
        f"of forgotten subjects (not appended): {result.forgotten}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
