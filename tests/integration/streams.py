"""Starting a pipeline's streaming query in a test, with every batch result kept; or the
ingest job as a process of its own, with its JSON log lines read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl.commit import BatchResult
from etl.pipeline import build_pipeline, start_pipeline
from tests.conftest import REPO

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

    from etl.config import Settings


def start_recording(
    spark: SparkSession, settings: Settings, name: str
) -> tuple[StreamingQuery, list[BatchResult]]:
    """Starts the pipeline; the returned list fills with each batch's result as it commits."""
    results: list[BatchResult] = []
    pipeline = build_pipeline(settings, name)
    pipeline.on_result = results.append
    query, _ = start_pipeline(spark, settings, name, pipeline)
    return query, results


def start_job(conf: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Starts ``jobs.ingest`` in a process (group) of its own, JSON log lines into ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.ingest", "--conf", str(conf), "--log-format", "json"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the driver and its JVM
        )


def log_events(log: Path) -> list[dict[str, Any]]:
    """The JSON log records of a job's log, in order (complete lines only: a SIGKILL can cut
    the last one; the JVM's own lines are skipped)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def logged_batches(log: Path) -> list[dict[str, Any]]:
    """The batch progress lines of a job's log."""
    return [e for e in log_events(log) if e.get("event") == "batch"]
