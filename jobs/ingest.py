"""Streaming ingest: Kafka -> Glue-framed Avro -> tables, one streaming query per pipeline.

Run locally:   python -m jobs.ingest --conf conf/local.yaml --pipeline orders
On EMR:        spark-submit --packages ... jobs/ingest.py --conf conf/emr.yaml
As a Glue job: the script jobs/glue_ingest.py calls main() with the job's arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import TYPE_CHECKING

from pyspark.errors import StreamingQueryException

from etl import logs
from etl.config import load_settings
from etl.exceptions import EtlError, StopRequested
from etl.formats import formats_used
from etl.pipeline import Pipeline, build_pipeline, start_pipeline
from etl.shutdown import GracefulStop
from etl.spark import build_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

log = logging.getLogger("jobs.ingest")

# how often the main thread looks up from waiting (a stop request is acted on this quickly)
_POLL_S = 1


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
    parser.add_argument(
        "--log-format",
        choices=[f.value for f in logs.LogFormat],
        default=logs.LogFormat.AUTO.value,
        help="text, json (one object per line; a progress line per batch), or auto: text on "
        "a terminal, json otherwise (default)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the ingest job.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` if None.

    Returns:
        0 when every query finished (``available_now``) or was stopped by SIGTERM / SIGINT
        between batches, 1 on error; a second signal exits at once with 128 + its number.
    """
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    stop = GracefulStop()
    try:
        settings = load_settings(args.conf)
        names = args.pipelines or sorted(settings.pipelines)
        for name in names:
            settings.pipeline(name)  # fail on a typo before starting anything
        spark = build_spark(settings, formats_used(settings, names))
        spark.sparkContext.setLogLevel("WARN")
        # a query this session ran before (in-process callers, tests) must not end the wait
        spark.streams.resetTerminated()
        if threading.current_thread() is threading.main_thread():
            stop.install()
        running = []
        for name in names:
            pipeline = build_pipeline(settings, name)
            pipeline.stopping = stop.requested
            running.append(start_pipeline(spark, settings, name, pipeline))
        try:
            _await(spark, running, stop)
        finally:
            for query, pipeline in running:
                if query.isActive:
                    query.stop()
                if pipeline.group is not None:
                    pipeline.group.close()
        if stop.requested.is_set():
            log.info("pipelines stopped on request: %s", ", ".join(names))
        else:
            log.info("pipelines finished: %s", ", ".join(names))
    except EtlError as err:
        log.error("%s", err)
        return 1
    except Exception as err:  # a failed query surfaces as StreamingQueryException
        log.error("ingest failed: %s", logs.first_line(err))
        log.debug("ingest failed", exc_info=True)
        return 1
    finally:
        stop.restore()
    return 0


def _await(
    spark: SparkSession, running: list[tuple[StreamingQuery, Pipeline]], stop: GracefulStop
) -> None:
    """Waits until every query finished or a stop was asked for (then stops them between
    batches); raises the error of a failed query (one failed pipeline stops the job, the
    others restart from their checkpoints)."""
    queries = [query for query, _ in running]
    while any(query.isActive for query in queries) and not stop.requested.is_set():
        _raise_failed(queries, stopping=False)
        # short waits: the signal handler runs in this thread between them
        try:
            spark.streams.awaitAnyTermination(_POLL_S)
        except StreamingQueryException:
            pass  # reported below, from the query itself
    if stop.requested.is_set():
        # also when a query already ended by refusing its next batch
        stop.stop(running)
    _raise_failed(queries, stopping=stop.requested.is_set())


def _raise_failed(queries: list[StreamingQuery], *, stopping: bool) -> None:
    """Raises the error of a query that failed; one that refused a batch because a graceful
    stop was asked for did not fail."""
    for query in queries:
        error = None if query.isActive else query.exception()
        if error is None or (stopping and StopRequested.MARKER in str(error)):
            continue
        raise error


if __name__ == "__main__":
    sys.exit(main())
