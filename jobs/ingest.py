"""Streaming ingest: Kafka -> Glue-framed Avro -> tables, one streaming query per pipeline.

Run locally:   python -m jobs.ingest --conf conf/local.yaml --pipeline orders
On EMR:        spark-submit --packages ... jobs/ingest.py --conf conf/emr.yaml
As a Glue job: the script jobs/glue_ingest.py calls main() with the job's arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys

from etl import logs
from etl.config import load_settings
from etl.exceptions import EtlError
from etl.formats import formats_used
from etl.pipeline import start_pipeline
from etl.spark import build_spark

log = logging.getLogger("jobs.ingest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.ingest",
        description="Stream Kafka topics into tables, one streaming query per pipeline.",
    )
    parser.add_argument("--conf", required=True, help="YAML settings file, e.g. conf/local.yaml")
    parser.add_argument(
        "--pipeline",
        action="append",
        dest="pipelines",
        help="pipeline to run (repeatable); default: every pipeline in the file",
    )
    parser.add_argument("--log-level", default="INFO", help="this project's log level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the ingest job.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` if None.

    Returns:
        0 when every query finished (``available_now``) or was stopped cleanly, 1 on error.
    """
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = load_settings(args.conf)
        names = args.pipelines or sorted(settings.pipelines)
        for name in names:
            settings.pipeline(name)  # fail on a typo before starting anything
        spark = build_spark(settings, formats_used(settings, names))
        spark.sparkContext.setLogLevel("WARN")
        # a query this session ran before (in-process callers, tests) must not end the wait
        spark.streams.resetTerminated()
        queries = [start_pipeline(spark, settings, name)[0] for name in names]
        try:
            # one failed pipeline stops the job (the others restart from their checkpoints)
            while any(query.isActive for query in queries):
                spark.streams.awaitAnyTermination()
                spark.streams.resetTerminated()
            # a query that failed after the last wait returned is reported too
            for query in queries:
                error = query.exception()
                if error is not None:
                    raise error
        finally:
            for query in queries:
                if query.isActive:
                    query.stop()
        log.info("pipelines finished: %s", ", ".join(names))
    except EtlError as err:
        log.error("%s", err)
        return 1
    except Exception as err:  # a failed query surfaces as StreamingQueryException
        log.error("ingest failed: %s", _first_line(err))
        log.debug("ingest failed", exc_info=True)
        return 1
    return 0


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an error, for a one-line log."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
