"""The sink interface: create the table if absent, then commit each micro-batch exactly once."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

# snapshot / commit metadata keys written with every batch commit
PIPELINE_KEY = "etl.pipeline"
QUERY_ID_KEY = "etl.query-id"
BATCH_ID_KEY = "etl.batch-id"


@dataclass(frozen=True)
class TableSpec:
    """What a sink needs to know about its table."""

    table: str
    partition_by: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    # follow the evolving reader schema (add / widen columns on write); off for tables with a
    # fixed schema such as the dead-letter table, which must stay MERGE/UPDATE-able
    evolve: bool = True


@dataclass(frozen=True)
class CommitInfo:
    """Identifies one micro-batch commit; (query_id, batch_id) makes it idempotent.

    ``query_id`` is the streaming query's id, which Spark keeps in the checkpoint, so it is
    the same across restarts of one query and differs for a new checkpoint.
    """

    pipeline: str
    query_id: str
    batch_id: int
    extra: dict[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        """The key/values stored with the commit."""
        return {
            PIPELINE_KEY: self.pipeline,
            QUERY_ID_KEY: self.query_id,
            BATCH_ID_KEY: str(self.batch_id),
            **self.extra,
        }


class TableSink(abc.ABC):
    """A table written by micro-batches, each committed at most once per (query, batch)."""

    def __init__(self, spec: TableSpec) -> None:
        """Binds the sink to one table."""
        self.spec = spec
        self._ready = False
        # last batch id committed per query id, read from the table once per process
        self._committed: dict[str, int | None] = {}

    def write_batch(self, df: DataFrame, commit: CommitInfo) -> bool:
        """Creates the table if needed and commits ``df`` unless this batch already landed.

        Args:
            df: The rows of this micro-batch.
            commit: Which batch this is.

        Returns:
            True if rows were committed now, False if the batch had been committed before
            (a replay after a crash between the table commit and the checkpoint commit).
        """
        spark = df.sparkSession
        if not self._ready:
            self.ensure_table(spark, df.schema)
            self._ready = True
        if self.committed_before(spark, commit):
            log.info(
                "%s: batch %d already committed, skipping replay", self.spec.table, commit.batch_id
            )
            return False
        self.append(df, commit)
        self._committed[commit.query_id] = commit.batch_id
        return True

    def committed_before(self, spark: SparkSession, commit: CommitInfo) -> bool:
        """Whether this batch (or a later one) of the query already landed in the table.

        Reads the table once per query id and process.
        """
        if commit.query_id not in self._committed:
            self._committed[commit.query_id] = self.last_committed_batch(spark, commit.query_id)
        last = self._committed[commit.query_id]
        return last is not None and commit.batch_id <= last

    @abc.abstractmethod
    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Creates the table with this schema, partitioning and properties if it is absent."""

    @abc.abstractmethod
    def last_committed_batch(self, spark: SparkSession, query_id: str) -> int | None:
        """The highest batch id committed by this query, or None (also before the table exists)."""

    @abc.abstractmethod
    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends ``df`` atomically, storing ``commit.properties()`` with the commit.

        Must run ``df``'s plan as one Spark action: the pipeline reads counts observed on
        ``df`` (``DataFrame.observe``) once it returns.
        """
