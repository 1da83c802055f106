"""Apache Iceberg maintenance through the catalog's stored procedures (``CALL <catalog>.system``).

- compact: ``rewrite_data_files`` (bin-pack, or sort / z-order by the configured columns,
  optionally only where a filter holds, with partial progress so a long rewrite commits in
  parts), then ``rewrite_position_delete_files`` when merge-on-read upserts left delete files,
  then ``rewrite_manifests``;
- expire: ``expire_snapshots`` older than the retention, keeping ``retain_last`` and every
  snapshot from ``keep_from`` on (the commits the replay check reads);
- orphans: ``remove_orphan_files`` older than the configured age, never younger than the
  file-age floor.

A rewrite races the stream's commits: appends never conflict with it (Iceberg validates only
deletes of the rewritten files), a copy-on-write MERGE that replaced one of them does; the
loser commits nothing and is retried (the sink's ``write``, ``etl.maintenance``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from etl.config import FILE_AGE_FLOOR_HOURS, CompactSettings, ExpireSettings, OrphanSettings
from etl.exceptions import MaintenanceError
from etl.formats.base import TableMaintenance, TableStats, TaskOutcome

if TYPE_CHECKING:
    from pyspark.sql import Row, SparkSession

# how many orphan paths a record lists (all are counted)
LISTED_PATHS = 20
# Iceberg's bin-pack rewrites files below this share of the target size
_MIN_FILE_SHARE = 0.75


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
