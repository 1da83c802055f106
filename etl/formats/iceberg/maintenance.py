"""Apache Iceberg maintenance through the catalog's stored procedures (``CALL <catalog>.system``).

- compact: ``rewrite_data_files`` (bin-pack, or sort / z-order by the configured columns,
  optionally only where a filter holds, with partial progress so a long rewrite commits in
  parts), then ``rewrite_position_delete_files`` when merge-on-read upserts left delete files,
  then ``rewrite_manifests``;
- expire: ``expire_snapshots`` older than the retention, keeping ``retain_last`` and every
  snapshot from ``keep_from`` on (the commits the replay check reads);
- orphans: ``remove_orphan_files`` older than the configured age, never younger than the
  file-age floor;
- delete_rows (erasure): one copy-on-write ``DELETE ... WHERE EXISTS`` against a view of the
  doomed coordinates, the table's merge-on-read delete mode switched off around it;
- purge (erasure): rewrites data files that delete files mask rows of, rewrites the manifests
  (no DELETED entry, with its column bounds, stays), and expires every snapshot before that.

A rewrite races the stream's commits: appends never conflict with it (Iceberg validates only
deletes of the rewritten files), a copy-on-write MERGE that replaced one of them does; the
loser commits nothing and is retried (the sink's ``write``, ``etl.maintenance``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pyspark.sql import functions as F

from etl.config import FILE_AGE_FLOOR_HOURS, CompactSettings, ExpireSettings, OrphanSettings
from etl.exceptions import MaintenanceError
from etl.formats.base import (
    BATCH_ID_KEY,
    QUERY_ID_KEY,
    CommitInfo,
    EraseOutcome,
    TableMaintenance,
    TableStats,
    TaskOutcome,
)
from etl.formats.iceberg.sink import with_commit_properties

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

# how many orphan paths a record lists (all are counted)
LISTED_PATHS = 20
# Iceberg's bin-pack rewrites files below this share of the target size
_MIN_FILE_SHARE = 0.75
DELETE_MODE_PROPERTY = "write.delete.mode"
MERGE_ON_READ = "merge-on-read"
COPY_ON_WRITE = "copy-on-write"


class IcebergMaintenance(TableMaintenance):
    """Compaction, snapshot expiry and orphan removal of one Iceberg table."""

    def check(self, spark: SparkSession) -> None:
        """Fails unless the catalog has the table."""
        if not spark.catalog.tableExists(self.name):
            raise MaintenanceError(
                f"{self.name}: expected an iceberg table in the catalog, found none "
                "(nothing to maintain; has the pipeline run?)"
            )

    def stats(self, spark: SparkSession) -> TableStats:
        """Data and delete files of the current snapshot, and the live snapshots."""
        row = spark.sql(
            f"SELECT count(*) AS files, coalesce(sum(file_size_in_bytes), 0) AS bytes "
            f"FROM {self.name}.files"
        ).first()
        snapshots = spark.table(f"{self.name}.snapshots").count()
        assert row is not None
        return TableStats(int(row["files"]), int(row["bytes"]), snapshots)

    def compact(
        self, spark: SparkSession, settings: CompactSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """``rewrite_data_files``, ``rewrite_position_delete_files``, ``rewrite_manifests``."""
        target = settings.target_file_size_mb * 1024 * 1024
        if dry_run:
            row = spark.sql(
                f"SELECT count(*) AS small FROM {self.name}.data_files "
                f"WHERE file_size_in_bytes < {int(target * _MIN_FILE_SHARE)}"
            ).first()
            assert row is not None
            return TaskOutcome(details={"files_below_target": int(row["small"])})
        options = {
            "target-file-size-bytes": str(target),
            "min-input-files": str(settings.min_input_files),
            # a long rewrite commits file groups as it goes: a conflict with the stream then
            # costs one group, not the whole run
            "partial-progress.enabled": "true",
            "partial-progress.max-commits": "10",
        }
        args = [f"table => {_literal(self._identifier)}", f"options => {_map(options)}"]
        if settings.sort_by:
            args.append("strategy => 'sort'")
            args.append(f"sort_order => {_literal(_sort_order(settings))}")
        if settings.where:
            args.append(f"where => {_literal(settings.where)}")
        data = self._call(spark, "rewrite_data_files", args)
        details: dict[str, int] = {
            "data_files_rewritten": int(data["rewritten_data_files_count"]),
            "data_files_added": int(data["added_data_files_count"]),
            "bytes_rewritten": int(data["rewritten_bytes_count"]),
            "data_files_failed": int(data["failed_data_files_count"]),
        }
        if self._has_delete_files(spark):
            deletes = self._call(
                spark,
                "rewrite_position_delete_files",
                [f"table => {_literal(self._identifier)}", "options => map('rewrite-all', 'true')"],
            )
            details["delete_files_rewritten"] = int(deletes["rewritten_delete_files_count"])
            details["delete_files_added"] = int(deletes["added_delete_files_count"])
        manifests = self._call(
            spark, "rewrite_manifests", [f"table => {_literal(self._identifier)}"]
        )
        details["manifests_rewritten"] = int(manifests["rewritten_manifests_count"])
        details["manifests_added"] = int(manifests["added_manifests_count"])
        return TaskOutcome(
            files_rewritten=details["data_files_rewritten"]
            + details.get("delete_files_rewritten", 0),
            details=details,
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
        """``expire_snapshots`` before the cutoff: the older of the retention and
        ``keep_from``, keeping ``retain_last`` snapshots."""
        cutoff = now - dt.timedelta(hours=settings.older_than_hours)
        if keep_from is not None and keep_from < cutoff:
            cutoff = keep_from
        details = {"cutoff": cutoff.isoformat(), "retain_last": settings.retain_last}
        if keep_from is not None:
            details["keep_from"] = keep_from.isoformat()
        before = spark.table(f"{self.name}.snapshots").count()
        if dry_run:
            doomed = spark.sql(
                f"SELECT count(*) FROM (SELECT committed_at, row_number() OVER "
                f"(ORDER BY committed_at DESC) AS newest FROM {self.name}.snapshots) "
                f"WHERE committed_at < {_timestamp(cutoff)} AND newest > {settings.retain_last}"
            ).first()
            assert doomed is not None
            return TaskOutcome(snapshots_expired=int(doomed[0]), details=details)
        result = self._call(
            spark,
            "expire_snapshots",
            [
                f"table => {_literal(self._identifier)}",
                f"older_than => {_timestamp(cutoff)}",
                f"retain_last => {settings.retain_last}",
            ],
        )
        after = spark.table(f"{self.name}.snapshots").count()
        deleted = sum(
            int(result[column])
            for column in (
                "deleted_data_files_count",
                "deleted_position_delete_files_count",
                "deleted_equality_delete_files_count",
                "deleted_manifest_files_count",
                "deleted_manifest_lists_count",
            )
        )
        return TaskOutcome(snapshots_expired=before - after, files_deleted=deleted, details=details)

    def orphans(
        self, spark: SparkSession, settings: OrphanSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """``remove_orphan_files`` older than the configured age (at least the floor)."""
        hours = max(settings.older_than_hours, FILE_AGE_FLOOR_HOURS)
        cutoff = now - dt.timedelta(hours=hours)
        rows = spark.sql(
            f"CALL {self._catalog}.system.remove_orphan_files("
            f"table => {_literal(self._identifier)}, older_than => {_timestamp(cutoff)}, "
            f"dry_run => {str(dry_run).lower()})"
        ).collect()
        paths = sorted(str(r["orphan_file_location"]) for r in rows)
        return TaskOutcome(
            files_deleted=0 if dry_run else len(paths),
            details={
                "cutoff": cutoff.isoformat(),
                "orphans_found": len(paths),
                "orphans": paths[:LISTED_PATHS],
            },
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
        """One copy-on-write ``DELETE`` of the rows matching ``doomed``, its snapshot summary
        carrying the commit properties.

        A ``DELETE ... WHERE EXISTS`` rather than a MERGE: Spark leaves a MERGE unresolved on
        tables that accept any schema (the append tables). The doomed values stay in a temp
        view, out of the SQL text. A merge-on-read table is switched to copy-on-write for the
        statement (``write.delete.mode``) and back: a position delete would leave the row in
        its data file.

        Args:
            spark: The session.
            doomed: Distinct rows of the ``on`` columns.
            on: Columns of the table identifying a row.
            commit: The erasure's identity (stored in the snapshot summary).
            now: Unused: Iceberg validates the commit against concurrent ones.

        Returns:
            From the snapshot summary: ``deleted-records`` less ``added-records`` (the
            rewritten files' surviving rows), and ``deleted-data-files`` (zeros, and no
            snapshot, when nothing matched).

        Raises:
            Exception: The commit lost to a concurrent one (``is_conflict``: retry).
        """
        view = f"_etl_doomed_{uuid.uuid4().hex}"
        doomed.select(*on).distinct().createOrReplaceTempView(view)
        try:
            matched = spark.table(self.name).join(
                F.broadcast(spark.table(view)), list(on), "left_semi"
            )
            # Iceberg commits an empty snapshot for a DELETE that matched nothing
            if matched.limit(1).count() == 0:
                return EraseOutcome()
            before = self._newest_commit_ms(spark)
            condition = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
            statement = (
                f"DELETE FROM {self.name} t WHERE EXISTS (SELECT 1 FROM {view} s WHERE {condition})"
            )
            with self._copy_on_write(spark):
                with_commit_properties(spark, commit.properties(), lambda: spark.sql(statement))
        finally:
            spark.catalog.dropTempView(view)
        summary = self._own_snapshot(spark, commit, since_ms=before)
        if summary is None:
            return EraseOutcome()
        # a copy-on-write snapshot counts the records of the files it replaced as deleted and
        # their surviving rows as added
        return EraseOutcome(
            rows_deleted=int(summary.get("deleted-records", 0))
            - int(summary.get("added-records", 0)),
            files_rewritten=int(summary.get("deleted-data-files", 0)),
        )

    def purge(self, spark: SparkSession, *, commit: CommitInfo, now: dt.datetime) -> EraseOutcome:
        """Drops every file and manifest entry still holding rows deleted before.

        1. Data files with delete files (merge-on-read upserts mask old versions of rows) are
           rewritten without the masked rows.
        2. The manifests are rewritten (a snapshot carrying the commit properties, always
           made): a DELETED entry keeps the removed file's column bounds.
        3. Every snapshot before that one is expired (no retention floor: an explicit
           erasure), deleting the files, manifests and manifest lists only they reference.

        Args:
            spark: The session.
            commit: The erasure's identity (stored in the snapshots this makes).
            now: Unused: the cut is the rewrite's own snapshot.

        Returns:
            Snapshots expired, files deleted, and what each step did.

        Raises:
            Exception: A commit lost to a concurrent one (``is_conflict``: retry).
        """
        properties = commit.properties()
        details: dict[str, Any] = {}
        if self._has_delete_files(spark):
            rewrite = self._actions(spark).rewriteDataFiles(self._table(spark))
            for key, value in _MASKED_ROWS_REWRITE.items():
                rewrite = rewrite.option(key, value)
            for key, value in properties.items():
                rewrite = rewrite.snapshotProperty(key, value)
            result = rewrite.execute()
            details["data_files_rewritten"] = int(result.rewrittenDataFilesCount())
            details["delete_files_removed"] = int(result.removedDeleteFilesCount())
        before_ms = self._newest_commit_ms(spark)
        details.update(self._rewrite_manifests(spark, properties))
        anchor = self._own_snapshot_row(spark, commit, since_ms=before_ms)
        if anchor is None:
            raise MaintenanceError(
                f"{self.name}: expected the manifest rewrite's snapshot, found none (nothing "
                "was expired)"
            )
        anchor_id, anchor_at = int(anchor["snapshot_id"]), anchor["committed_at"]
        older = [
            int(r["snapshot_id"])
            for r in spark.table(f"{self.name}.snapshots")
            .where(
                (F.col("committed_at") <= F.lit(anchor_at)) & (F.col("snapshot_id") != anchor_id)
            )
            .select("snapshot_id")
            .collect()
        ]
        details["kept_from_snapshot"] = anchor_id
        if not older:
            return EraseOutcome(details=details)
        before = spark.table(f"{self.name}.snapshots").count()
        ids = ", ".join(f"{i}L" for i in older)
        result = self._call(
            spark,
            "expire_snapshots",
            [
                f"table => {_literal(self._identifier)}",
                f"older_than => {_timestamp(anchor_at)}",
                "retain_last => 1",
                f"snapshot_ids => array({ids})",
            ],
        )
        after = spark.table(f"{self.name}.snapshots").count()
        deleted = {column: int(result[column]) for column in _EXPIRE_COUNTS}
        details.update(deleted)
        return EraseOutcome(
            snapshots_expired=before - after, files_removed=sum(deleted.values()), details=details
        )

    def _rewrite_manifests(self, spark: SparkSession, properties: dict[str, str]) -> dict[str, int]:
        """Rewrites all data manifests in one snapshot carrying ``properties``."""
        table = self._table(spark)
        action = self._actions(spark).rewriteManifests(table)
        for key, value in properties.items():
            action = action.snapshotProperty(key, value)
        result = action.execute()
        rewritten = sum(1 for _ in result.rewrittenManifests())
        if rewritten:
            return {
                "manifests_rewritten": rewritten,
                "manifests_added": sum(1 for _ in result.addedManifests()),
            }
        # the action skips a table of one small manifest, which may be the one holding the
        # DELETED entries: the core API rewrites it anyway (one cluster: one manifest per
        # target size)
        from pyspark.java_gateway import ensure_callback_server_started

        gateway = spark.sparkContext._gateway
        assert gateway is not None
        ensure_callback_server_started(gateway)  # type: ignore[no-untyped-call]
        table.refresh()
        update = table.rewriteManifests().clusterBy(_OneCluster())
        for key, value in properties.items():
            update = update.set(key, value)
        update.commit()
        return {"manifests_rewritten": 1, "manifests_added": 1}

    @contextlib.contextmanager
    def _copy_on_write(self, spark: SparkSession) -> Iterator[None]:
        """Makes the table's deletes copy-on-write for the block, as they were after it."""
        current = {
            r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {self.name}").collect()
        }.get(DELETE_MODE_PROPERTY)
        if current != MERGE_ON_READ:
            yield
            return
        key = _literal(DELETE_MODE_PROPERTY)
        spark.sql(f"ALTER TABLE {self.name} SET TBLPROPERTIES ({key}={_literal(COPY_ON_WRITE)})")
        try:
            yield
        finally:
            # the sink's ensure_table re-applies the mode too, should this not run
            spark.sql(f"ALTER TABLE {self.name} SET TBLPROPERTIES ({key}={_literal(current)})")

    def _newest_commit_ms(self, spark: SparkSession) -> Any:
        """When the newest snapshot was committed (None: no snapshot)."""
        row = spark.table(f"{self.name}.snapshots").select(F.max("committed_at")).first()
        return None if row is None else row[0]

    def _own_snapshot_row(
        self, spark: SparkSession, commit: CommitInfo, *, since_ms: Any
    ) -> Row | None:
        """The newest snapshot at or after ``since_ms`` carrying the commit's identity."""
        summary = F.col("summary")
        snapshots = spark.table(f"{self.name}.snapshots").where(
            (summary.getItem(QUERY_ID_KEY) == commit.query_id)
            & (summary.getItem(BATCH_ID_KEY) == str(commit.batch_id))
        )
        if since_ms is not None:
            snapshots = snapshots.where(F.col("committed_at") >= F.lit(since_ms))
        return snapshots.orderBy(F.col("committed_at").desc()).first()

    def _own_snapshot(
        self, spark: SparkSession, commit: CommitInfo, *, since_ms: Any
    ) -> dict[str, str] | None:
        """The summary of ``_own_snapshot_row``."""
        row = self._own_snapshot_row(spark, commit, since_ms=since_ms)
        return None if row is None else dict(row["summary"])

    def _table(self, spark: SparkSession) -> Any:
        """The table as Iceberg's Java API has it (py4j)."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        return jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(
            spark._jsparkSession, self.name
        )

    def _actions(self, spark: SparkSession) -> Any:
        """Iceberg's Spark actions (py4j): the procedures take no snapshot properties."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        return jvm.org.apache.iceberg.spark.actions.SparkActions.get(spark._jsparkSession)

    @property
    def _catalog(self) -> str:
        return self.name.split(".")[0]

    @property
    def _identifier(self) -> str:
        """The table as the procedures take it: namespace.table within the catalog."""
        return ".".join(self.name.split(".")[1:])

    def _call(self, spark: SparkSession, procedure: str, args: list[str]) -> Row:
        """Runs a procedure of the table's catalog; its one result row."""
        row = spark.sql(f"CALL {self._catalog}.system.{procedure}({', '.join(args)})").first()
        assert row is not None, f"{procedure} returned no row"
        return row

    def _has_delete_files(self, spark: SparkSession) -> bool:
        """Whether the current snapshot has delete files (merge-on-read upserts write them)."""
        return spark.table(f"{self.name}.delete_files").limit(1).count() > 0


# rewrite_data_files selecting only the data files that delete files apply to (any size)
_MASKED_ROWS_REWRITE = {
    "delete-file-threshold": "1",
    "min-file-size-bytes": "0",
    "max-file-size-bytes": str(2**62),
    "rewrite-job-order": "none",
    "partial-progress.enabled": "false",
    "remove-dangling-deletes": "true",
}
_EXPIRE_COUNTS = (
    "deleted_data_files_count",
    "deleted_position_delete_files_count",
    "deleted_equality_delete_files_count",
    "deleted_manifest_files_count",
    "deleted_manifest_lists_count",
)


class _OneCluster:
    """A ``java.util.function.Function`` putting every data file in one manifest cluster."""

    def apply(self, _file: object) -> str:
        """The one cluster key."""
        return "all"

    class Java:
        implements: ClassVar[list[str]] = ["java.util.function.Function"]


def _sort_order(settings: CompactSettings) -> str:
    """The rewrite's sort order: ``zorder(a,b)`` or ``a ASC NULLS LAST, ...``."""
    if settings.zorder:
        return f"zorder({','.join(settings.sort_by)})"
    return ", ".join(f"{column} ASC NULLS LAST" for column in settings.sort_by)


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _map(options: dict[str, str]) -> str:
    """A SQL ``map(...)`` of string options."""
    return "map(" + ", ".join(f"{_literal(k)}, {_literal(v)}" for k, v in options.items()) + ")"


def _timestamp(moment: dt.datetime) -> str:
    """A SQL timestamp literal of an instant (with its offset, so the session zone is moot)."""
    utc = moment.astimezone(dt.UTC)
    return f"TIMESTAMP '{utc.strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00'"
