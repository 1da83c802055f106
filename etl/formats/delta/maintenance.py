"""Delta Lake maintenance: ``OPTIMIZE`` (bin-pack, or ``ZORDER BY``) and ``VACUUM``.

- compact: ``OPTIMIZE`` rewrites files below the target size into files of it (Delta's
  ``optimize.maxFileSize``), only where the filter holds (partition columns), z-ordered by the
  sort columns when there are any (Delta has no linear multi-column sort; z-order by one
  column is a sort by it);
- expire: ``VACUUM ... RETAIN n HOURS`` deletes the files no version within the retention
  reads (and any unreferenced file that old, so the retention has the file-age floor); older
  versions stay in the log but can no longer be read. The log itself is trimmed by Delta at
  checkpoints (``delta.logRetentionDuration``, 30 days by default), which the record states.
  The replay check is untouched: it reads the log, and Delta keeps each query's idempotency
  token (``txnAppId``/``txnVersion``) in the table state;
- orphans: covered by ``VACUUM``.

``OPTIMIZE`` never conflicts with the stream's blind appends; with a MERGE that rewrote one
of its files, the second to commit fails with a ``Concurrent*Exception`` and is retried.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from etl.config import CompactSettings, ExpireSettings, OrphanSettings, TableFormat
from etl.formats.base import TableMaintenance, TableStats, TaskOutcome, check_format_at
from etl.formats.delta.sink import DeltaSink, session_confs

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MAX_FILE_SIZE_CONF = "spark.databricks.delta.optimize.maxFileSize"
MIN_FILE_SIZE_CONF = "spark.databricks.delta.optimize.minFileSize"
# Delta refuses a VACUUM retention below the table's deletedFileRetentionDuration (7 days)
# unless this is off; the configuration has its own floor (FILE_AGE_FLOOR_HOURS)
RETENTION_CHECK_CONF = "spark.databricks.delta.retentionDurationCheck.enabled"
LISTING_PARALLELISM_CONF = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
DEFAULT_LOG_RETENTION = "interval 30 days"
# Delta's bin-pack rewrites files below this share of the target size (as Iceberg's does)
_MIN_FILE_SHARE = 0.75


class DeltaMaintenance(TableMaintenance):
    """OPTIMIZE and VACUUM of one Delta table, addressed by its location."""

    sink: DeltaSink

    def check(self, spark: SparkSession) -> None:
        """Fails unless a Delta table is at the location."""
        check_format_at(spark, self.name, self.sink.location, TableFormat.DELTA)

    def stats(self, spark: SparkSession) -> TableStats:
        """Files and bytes of the current version, and the versions in the log."""
        detail = spark.sql(f"DESCRIBE DETAIL {self._path}").first()
        assert detail is not None
        versions = spark.sql(f"DESCRIBE HISTORY {self._path}").count()
        return TableStats(int(detail["numFiles"]), int(detail["sizeInBytes"]), versions)

    def compact(
        self, spark: SparkSession, settings: CompactSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """``OPTIMIZE [WHERE ...] [ZORDER BY (...)]`` to the target file size."""
        target = settings.target_file_size_mb * 1024 * 1024
        if dry_run:
            stats = self.stats(spark)
            return TaskOutcome(
                details={"files": stats.files, "ideal_files": -(-stats.bytes // target)}
            )
        statement = f"OPTIMIZE {self._path}"
        if settings.where:
            statement += f" WHERE {settings.where}"
        if settings.sort_by:
            statement += " ZORDER BY (" + ", ".join(f"`{c}`" for c in settings.sort_by) + ")"
        confs = {
            MAX_FILE_SIZE_CONF: str(target),
            MIN_FILE_SIZE_CONF: str(int(target * _MIN_FILE_SHARE)),
        }
        with session_confs(spark, confs):
            row = spark.sql(statement).first()
        assert row is not None
        metrics = row["metrics"]
        removed, added = int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])
        return TaskOutcome(
            files_rewritten=removed,
            details={"files_removed": removed, "files_added": added},
        )

    def expire(
        self,
        spark: SparkSession,
        settings: ExpireSettings,
        *,
        now: dt.datetime,
        keep_from: dt.datetime | None,
        dry_run: bool,
    ) -> TaskOutcome:
        """``VACUUM ... RETAIN n HOURS`` (``keep_from`` needs nothing: the log stays)."""
        hours = settings.older_than_hours
        retain = f"RETAIN {hours:g} HOURS"
        confs = {
            RETENTION_CHECK_CONF: "false",
            # VACUUM lists the table's directories in this many tasks (10,000 by default,
            # whatever the table's size); a few per core suffice
            LISTING_PARALLELISM_CONF: str(4 * spark.sparkContext.defaultParallelism),
        }
        with session_confs(spark, confs):
            doomed = spark.sql(f"VACUUM {self._path} {retain} DRY RUN").count()
            if not dry_run:
                spark.sql(f"VACUUM {self._path} {retain}").collect()
        properties = {
            r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {self._path}").collect()
        }
        cutoff = now - dt.timedelta(hours=hours)
        return TaskOutcome(
            files_deleted=0 if dry_run else doomed,
            details={
                "retention_hours": hours,
                "files_found": doomed,
                # versions before the cutoff stay in the log, their files may be gone
                "versions_unreadable_before": cutoff.isoformat(),
                "log_retention": properties.get(LOG_RETENTION_PROPERTY, DEFAULT_LOG_RETENTION),
            },
        )

    def orphans(
        self, spark: SparkSession, settings: OrphanSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """Nothing of its own: ``VACUUM`` (expire) deletes unreferenced files."""
        return TaskOutcome(
            applied=False,
            details={"covered_by": "expire (VACUUM deletes every unreferenced file it may)"},
        )

    @property
    def _path(self) -> str:
        """The table addressed by location (no catalog needed)."""
        return "delta.`" + self.sink.location.replace("`", "``") + "`"
