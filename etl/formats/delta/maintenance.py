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
- orphans: covered by ``VACUUM``;
- delete_rows (erasure): one copy-on-write ``MERGE ... WHEN MATCHED THEN DELETE`` against a
  view of the doomed coordinates (no deletion vector, whatever the table's setting);
- purge (erasure): ``REORG TABLE ... APPLY (PURGE)`` (rows hidden by deletion vectors),
  deletes the data files some commit removed, and cuts the log at the newest commit of the
  erasure: a checkpoint there, every older commit, checksum and checkpoint file deleted (their
  ``add`` actions carry column min/max values of removed files).

``OPTIMIZE`` never conflicts with the stream's blind appends; with a MERGE that rewrote one
of its files, the second to commit fails with a ``Concurrent*Exception`` and is retried.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from etl.config import CompactSettings, ExpireSettings, OrphanSettings, TableFormat
from etl.exceptions import MaintenanceError
from etl.formats.base import (
    BATCH_ID_KEY,
    QUERY_ID_KEY,
    CommitInfo,
    EraseOutcome,
    TableMaintenance,
    TableStats,
    TaskOutcome,
    check_format_at,
)
from etl.formats.delta.sink import (
    USER_METADATA_CONF,
    DeltaSink,
    _user_metadata,
    session_confs,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

MAX_FILE_SIZE_CONF = "spark.databricks.delta.optimize.maxFileSize"
MIN_FILE_SIZE_CONF = "spark.databricks.delta.optimize.minFileSize"
# Delta refuses a VACUUM retention below the table's deletedFileRetentionDuration (7 days)
# unless this is off; the configuration has its own floor (FILE_AGE_FLOOR_HOURS)
RETENTION_CHECK_CONF = "spark.databricks.delta.retentionDurationCheck.enabled"
LISTING_PARALLELISM_CONF = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
# the newest erasure's query id: a commit to cut the log at when the erasure deleted nothing
ERASURE_PROPERTY = "etl.erasure"
DEFAULT_LOG_RETENTION = "interval 30 days"
# Delta's bin-pack rewrites files below this share of the target size (as Iceberg's does)
_MIN_FILE_SHARE = 0.75
# off: a MERGE rewrites the files of the rows it deletes instead of adding deletion vectors
MERGE_DELETION_VECTORS_CONF = "spark.databricks.delta.merge.deletionVectors.persistent"
LOG_DIR = "_delta_log"
# a log file's version: commits, checksums, checkpoints (single, multi-part, v2) and
# log compactions (named by their first and last version: the last one counts)
_LOG_FILE = re.compile(r"^(?:\d{20}\.)?(\d{20})\.(?:json|crc|checkpoint\..*|compacted\.json)$")
# the actions of a commit (or checkpoint) naming a file that is no longer the table's
_GONE_FILES = "struct<remove: struct<path: string>, cdc: struct<path: string>>"


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

    def delete_rows(
        self,
        spark: SparkSession,
        doomed: DataFrame,
        *,
        on: Sequence[str],
        commit: CommitInfo,
        now: dt.datetime,
    ) -> EraseOutcome:
        """One ``MERGE ... WHEN MATCHED THEN DELETE`` of the rows matching ``doomed``, its
        userMetadata the commit properties (no idempotency token: it is no batch).

        Deletion vectors are off for the statement, so the files holding the rows are
        rewritten without them; the table's own setting is untouched. The doomed values stay
        in a temp view, out of the SQL text. Delta commits nothing when nothing matched.

        Args:
            spark: The session.
            doomed: Distinct rows of the ``on`` columns.
            on: Columns of the table identifying a row.
            commit: The erasure's identity (the commit's userMetadata).
            now: Unused: Delta checks the commit against concurrent ones.

        Returns:
            ``numTargetRowsDeleted`` and ``numTargetFilesRemoved`` of the MERGE's commit.

        Raises:
            Exception: The commit lost to a concurrent one (``is_conflict``: retry).
        """
        view = f"_etl_doomed_{uuid.uuid4().hex}"
        doomed.select(*on).distinct().createOrReplaceTempView(view)
        metadata = _user_metadata(commit)
        before = self._version(spark)
        condition = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
        confs = {USER_METADATA_CONF: metadata, MERGE_DELETION_VECTORS_CONF: "false"}
        try:
            with session_confs(spark, confs):
                spark.sql(
                    f"MERGE INTO {self._path} t USING {view} s ON {condition} "
                    "WHEN MATCHED THEN DELETE"
                ).collect()
        finally:
            spark.catalog.dropTempView(view)
        row = self._own_commit(spark, commit, after=before, operation="MERGE")
        if row is None:
            return EraseOutcome()
        metrics = row["operationMetrics"] or {}
        return EraseOutcome(
            rows_deleted=int(metrics.get("numTargetRowsDeleted", 0)),
            files_rewritten=int(metrics.get("numTargetFilesRemoved", 0)),
        )

    def purge(self, spark: SparkSession, *, commit: CommitInfo, now: dt.datetime) -> EraseOutcome:
        """Drops every file and log entry still holding rows deleted before.

        1. ``REORG TABLE ... APPLY (PURGE)`` rewrites the files with deletion vectors (a
           commit with the commit properties as userMetadata; none when there are none).
        2. The newest commit carrying these properties (the REORG, else the erasure's
           DELETE; an empty append with them when there is neither) is where the log is cut.
        3. Every data or change-data file that a commit's ``remove`` (``cdc``) action names
           and the current version does not read is deleted: only files a commit once
           referenced, never one a writer in flight may still commit (so no VACUUM).
        4. A checkpoint is written at the cut, and every log file before it deleted (commits,
           checksums, checkpoints): their ``add`` actions hold min/max values of removed
           files. Delta's own log cleanup would keep 30 days. The commits from the cut on
           stay in ``DESCRIBE HISTORY``.

        Args:
            spark: The session.
            commit: The erasure's identity (userMetadata of the commits this makes).
            now: Unused: the cut is the erasure's own commit.

        Returns:
            Versions dropped from the log and files deleted (data and log), with details.

        Raises:
            Exception: The REORG lost to a concurrent commit (``is_conflict``: retry).
        """
        metadata = _user_metadata(commit)
        details: dict[str, Any] = {}
        with session_confs(spark, {USER_METADATA_CONF: metadata}):
            row = spark.sql(f"REORG TABLE {self._path} APPLY (PURGE)").first()
        if row is not None:
            details["files_rewritten"] = int(row["metrics"]["numFilesRemoved"])
        # the cut must carry the commit properties: what is left of the history after it
        # is all the replay check reads (CARRIED_PREFIX)
        own = self._own_commit(spark, commit, after=-1, operation=None)
        if own is None:
            own = self._anchor(spark, commit, after=self._version(spark))
        cut = int(own["version"])
        details["log_kept_from_version"] = cut

        jvm = spark.sparkContext._jvm
        assert jvm is not None
        hadoop_path = jvm.org.apache.hadoop.fs.Path
        root = hadoop_path(self.sink.location)
        fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        log_files = self._log_files(fs, hadoop_path(root, LOG_DIR))
        # listed before the current files are read: a file removed by a commit listed here
        # and read by the current version was added again (RESTORE), and stays
        gone = self._gone_files(spark, [str(p.toString()) for _, p in log_files])
        live = {
            str(fs.makeQualified(hadoop_path(p)).toString())
            for p in spark.read.format("delta").load(self.sink.location).inputFiles()
        }
        data_removed = 0
        for name in sorted(gone):
            # a log names a file by a URI relative to the table (or an absolute one)
            path = fs.makeQualified(hadoop_path(root, hadoop_path(jvm.java.net.URI(name))))
            if str(path.toString()) not in live and fs.exists(path) and fs.delete(path, False):
                data_removed += 1
        details["data_files_removed"] = data_removed

        delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
            spark._jsparkSession, self.sink.location
        )
        none = jvm.scala.Option.empty()
        delta_log.checkpoint(delta_log.getSnapshotAt(cut, none, none), none)
        old = [(version, path) for version, path in log_files if version < cut]
        log_removed = sum(1 for _, path in old if fs.delete(path, False))
        details["log_files_removed"] = log_removed
        versions = {version for version, path in old if str(path.getName()).endswith(".json")}
        return EraseOutcome(
            snapshots_expired=len(versions),
            files_removed=data_removed + log_removed,
            details=details,
        )

    @staticmethod
    def _log_files(fs: Any, log_dir: Any) -> list[tuple[int, Any]]:
        """The log's commit, checksum and checkpoint files with their versions (py4j paths)."""
        found: list[tuple[int, Any]] = []
        for status in fs.listStatus(log_dir):
            match = _LOG_FILE.match(str(status.getPath().getName()))
            if match is not None and status.isFile():
                found.append((int(match.group(1)), status.getPath()))
        return sorted(found, key=lambda entry: entry[0])

    @staticmethod
    def _gone_files(spark: SparkSession, log_files: Sequence[str]) -> set[str]:
        """The paths that ``remove`` and ``cdc`` actions of these log files name."""
        commits = [p for p in log_files if p.endswith(".json")]
        checkpoints = [p for p in log_files if p.endswith(".parquet")]
        names: set[str] = set()
        if commits:
            actions = spark.read.text(commits).select(F.from_json("value", _GONE_FILES).alias("a"))
            for column in ("a.remove.path", "a.cdc.path"):
                names.update(
                    str(r[0])
                    for r in actions.select(column).where(F.col(column).isNotNull()).collect()
                )
        if checkpoints:
            tombstones = spark.read.parquet(*checkpoints)
            if "remove" in tombstones.columns:
                names.update(
                    str(r[0])
                    for r in tombstones.select("remove.path")
                    .where(F.col("remove.path").isNotNull())
                    .collect()
                )
        return names

    def _version(self, spark: SparkSession) -> int:
        """The table's current version."""
        from delta.tables import DeltaTable

        row = DeltaTable.forPath(spark, self.sink.location).history(1).select("version").first()
        assert row is not None
        return int(row[0])

    def _own_commit(
        self, spark: SparkSession, commit: CommitInfo, *, after: int, operation: str | None
    ) -> Row | None:
        """The newest commit after version ``after`` of the commit's query and batch (and
        operation): what it carries forward may differ between the erasure's steps."""
        from delta.tables import DeltaTable

        properties = F.from_json(F.col("userMetadata"), "map<string,string>")
        history = (
            DeltaTable.forPath(spark, self.sink.location)
            .history()
            .where(
                (F.col("version") > after)
                & (properties.getItem(QUERY_ID_KEY) == commit.query_id)
                & (properties.getItem(BATCH_ID_KEY) == str(commit.batch_id))
            )
        )
        if operation is not None:
            history = history.where(F.col("operation") == operation)
        return history.orderBy(F.col("version").desc()).first()

    def _anchor(self, spark: SparkSession, commit: CommitInfo, *, after: int) -> Row:
        """A commit carrying the commit's properties to cut the log at, when the erasure made
        none (nothing to delete now): a table property naming the erasure's query, which
        always commits (an empty append may commit nothing)."""
        with session_confs(spark, {USER_METADATA_CONF: _user_metadata(commit)}):
            spark.sql(
                f"ALTER TABLE {self._path} SET TBLPROPERTIES "
                f"('{ERASURE_PROPERTY}' = '{commit.query_id}')"
            )
        row = self._own_commit(spark, commit, after=after, operation=None)
        if row is None:
            raise MaintenanceError(
                f"{self.name}: expected a commit of {commit.query_id} after version {after} to "
                "cut the log at, found none (nothing was deleted)"
            )
        return row

    @property
    def _path(self) -> str:
        """The table addressed by location (no catalog needed)."""
        return "delta.`" + self.sink.location.replace("`", "``") + "`"
