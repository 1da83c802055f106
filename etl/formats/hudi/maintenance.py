"""Apache Hudi maintenance: compaction, clustering and cleaning of one table.

Beside a running stream these services run **inline in the stream's writer**
(``etl.formats.hudi.services``): the table keeps a single writer, so no lock provider is
needed and nothing races. That is a choice, made on evidence: with a second writer (this job)
under optimistic concurrency and a file-system lock, Hudi 1.0.2 clustering concurrent with the
stream's upserts completed without an error and left 60 of 320 keys with an older value (a
delta commit requested before the clustering plan and finished before it; apache/hudi#13255,
HUDI-9371, fixed after 1.0.2), and the record index raced the second writer. A lock provider
on S3 would also need DynamoDB and the hudi-aws bundle.

This job runs the same services from a separate session (Hudi's write client) for a table
whose stream is stopped: to catch up after a backlog, apply new settings at once, or clean
aggressively. It refuses while the table looks written to: a write in flight or a commit
within ``QUIET_MINUTES``.

- compact: merge-on-read compaction (schedule + run), then clustering (schedule + run) of
  small files into the target size, sorted by ``sort_by``;
- expire: the cleaner keeps the file versions of the last ``retain_last`` commits; older
  instants cannot be read any more (time travel to them fails);
- orphans: covered by the cleaner.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from etl.config import (
    CompactSettings,
    ExpireSettings,
    HudiTableType,
    OrphanSettings,
    TableFormat,
)
from etl.exceptions import MaintenanceError
from etl.formats.base import TableMaintenance, TableStats, TaskOutcome, check_format_at
from etl.formats.hudi.services import cleaner_options, clustering_options
from etl.formats.hudi.sink import HudiSink

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# a commit this recent, or a write in flight started this recently, means a writer is at work
QUIET_MINUTES = 10.0
# the separate client runs only what it is asked: no inline services, no archiving (the
# stream's writer archives; its newest commits, which the replay check reads, stay)
_OFFLINE = {
    "hoodie.compact.inline": "false",
    "hoodie.clustering.inline": "false",
    "hoodie.clean.automatic": "false",
    "hoodie.archive.automatic": "false",
}


class HudiMaintenance(TableMaintenance):
    """Compaction, clustering and cleaning of one Hudi table, through Hudi's write client."""

    sink: HudiSink

    def check(self, spark: SparkSession) -> None:
        """Fails unless a Hudi table is at the location."""
        check_format_at(spark, self.name, self.sink.location, TableFormat.HUDI)

    def stats(self, spark: SparkSession) -> TableStats:
        """Base and log files of the latest file slices, and the completed commits."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        meta = self.sink._meta_client(spark)
        commits = meta.getActiveTimeline().getCommitsTimeline().filterCompletedInstants()
        storage = meta.getStorageConf()
        context = jvm.org.apache.hudi.common.engine.HoodieLocalEngineContext(storage)
        metadata = (
            jvm.org.apache.hudi.common.config.HoodieMetadataConfig.newBuilder().enable(True).build()
        )
        views = jvm.org.apache.hudi.common.table.view.FileSystemViewManager
        view = views.createInMemoryFileSystemView(context, meta, metadata)
        files = size = 0
        try:
            partitions = jvm.org.apache.hudi.metadata.HoodieTableMetadata.create(
                context, meta.getStorage(), metadata, self.sink.location
            ).getAllPartitionPaths()
            for partition in partitions:
                for file_slice in view.getLatestFileSlices(partition).iterator():
                    base = file_slice.getBaseFile()
                    if base.isPresent():
                        files += 1
                        size += int(base.get().getFileSize())
                    for log_file in file_slice.getLogFiles().iterator():
                        files += 1
                        size += int(log_file.getFileSize())
        finally:
            view.close()
        return TableStats(files, size, int(commits.countInstants()))

    def compact(
        self, spark: SparkSession, settings: CompactSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """Merge-on-read compaction, then clustering, each scheduled and run to completion."""
        self._require_quiet(spark, now)
        details: dict[str, Any] = {}
        if dry_run:
            return TaskOutcome(details={"note": "hudi plans a compaction only by scheduling it"})
        client = self._client(spark, clustering_options(settings))
        none = spark.sparkContext._jvm.org.apache.hudi.common.util.Option.empty()  # type: ignore[union-attr]
        rewritten = 0
        try:
            if self.sink.options.table_type is HudiTableType.MERGE_ON_READ:
                instant = client.scheduleCompaction(none)
                if instant.isPresent():
                    result = client.compact(instant.get())
                    if not self._completed(spark, instant.get()):
                        client.commitCompaction(
                            instant.get(), result.getCommitMetadata().get(), none
                        )
                    slices = int(result.getCommitMetadata().get().getWriteStats().size())
                    details["compaction"] = {"instant": instant.get(), "file_slices": slices}
                    rewritten += slices
            instant = client.scheduleClustering(none)
            if instant.isPresent():
                result = client.cluster(instant.get(), True)
                replaced = result.getPartitionToReplaceFileIds()
                groups = sum(int(ids.size()) for ids in replaced.values())
                details["clustering"] = {"instant": instant.get(), "file_groups": groups}
                rewritten += groups
        finally:
            client.close()
        return TaskOutcome(files_rewritten=rewritten, details=details)

    def expire(
        self,
        spark: SparkSession,
        settings: ExpireSettings,
        *,
        now: dt.datetime,
        keep_from: dt.datetime | None,
        dry_run: bool,
    ) -> TaskOutcome:
        """The cleaner, keeping the file versions of the last ``retain_last`` commits
        (``keep_from`` needs nothing: cleaning removes files, not instants)."""
        self._require_quiet(spark, now)
        details: dict[str, Any] = {"retain_commits": settings.retain_last}
        if dry_run:
            return TaskOutcome(details={**details, "note": "hudi plans a clean only by running it"})
        client = self._client(spark, cleaner_options(settings))
        try:
            cleaned = client.clean()
        finally:
            client.close()
        if cleaned is None:
            return TaskOutcome(details={**details, "cleaned": False})
        earliest = str(cleaned.getEarliestCommitToRetain() or "")
        older = 0
        if earliest:
            timeline = self.sink._meta_client(spark).getActiveTimeline().getCommitsTimeline()
            older = int(
                timeline.filterCompletedInstants().findInstantsBefore(earliest).countInstants()
            )
        return TaskOutcome(
            snapshots_expired=older,
            files_deleted=int(cleaned.getTotalFilesDeleted()),
            details={**details, "earliest_commit_retained": earliest},
        )

    def orphans(
        self, spark: SparkSession, settings: OrphanSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """Nothing of its own: the cleaner (expire) deletes file versions no commit needs."""
        return TaskOutcome(
            applied=False,
            details={"covered_by": "expire (the cleaner deletes file versions no commit needs)"},
        )

    def _require_quiet(self, spark: SparkSession, now: dt.datetime) -> None:
        """Fails while a writer looks active: a commit or a write in flight too recent.

        Raises:
            MaintenanceError: The table was written to within ``QUIET_MINUTES``.
        """
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        parse = jvm.org.apache.hudi.common.table.timeline.HoodieInstantTimeGenerator
        timeline = self.sink._meta_client(spark).getActiveTimeline()

        def at(instant_time: str) -> dt.datetime:
            millis = parse.parseDateFromInstantTime(instant_time).getTime()
            return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)

        moments = [
            at(i.getCompletionTime())
            for i in timeline.getCommitsTimeline().filterCompletedInstants().getInstants()
        ]
        moments += [
            at(i.requestedTime())
            for i in timeline.getCommitsTimeline().filterInflightsAndRequested().getInstants()
        ]
        latest = max(moments, default=None)
        if latest is not None and now - latest < dt.timedelta(minutes=QUIET_MINUTES):
            raise MaintenanceError(
                f"{self.name}: expected no write for {QUIET_MINUTES:g} minutes, found one at "
                f"{latest.isoformat()}: the stream looks to be running. Beside a running "
                "stream, Hudi's table services run inline in its writer (maintenance "
                "section); this job runs them on a stopped table only"
            )

    def _client(self, spark: SparkSession, extra: dict[str, str]) -> Any:
        """Hudi's write client for the table: the sink's write options, ``extra``, offline."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        meta = self.sink._meta_client(spark)
        schema = (
            jvm.org.apache.hudi.common.table.TableSchemaResolver(meta)
            .getTableAvroSchema(False)
            .toString()
        )
        operation = "upsert" if self.sink.spec.upsert is not None else "insert"
        params = jvm.java.util.HashMap()
        for key, value in {**self.sink.write_options(operation), **extra, **_OFFLINE}.items():
            params.put(key, value)
        return jvm.org.apache.hudi.DataSourceUtils.createHoodieClient(
            spark.sparkContext._jsc,
            schema,
            self.sink.location,
            str(meta.getTableConfig().getTableName()),
            params,
        )

    def _completed(self, spark: SparkSession, instant: str) -> bool:
        """Whether an instant completed (the client may leave committing to the caller)."""
        timeline = self.sink._meta_client(spark).getActiveTimeline().filterCompletedInstants()
        return bool(timeline.containsInstant(instant))
