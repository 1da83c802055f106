"""Starting a pipeline's streaming query in a test, with every batch result kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etl.commit import BatchResult
from etl.pipeline import build_pipeline, start_pipeline

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
