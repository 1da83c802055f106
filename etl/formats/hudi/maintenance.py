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
- orphans: covered by the cleaner;
- delete_rows (a GDPR erasure): one delete commit of the matched rows, written as Hudi's SQL
  DELETE writes it (the rows' meta columns locate them: no key generator, so append tables
  with auto-generated keys work too); a merge-on-read table is then compacted, so no base
  file under a delete block keeps the rows;
- purge: compaction of what log files remain, the cleaner keeping one file version, and the
  metadata table rebuilt from the files that remain (its column statistics hold each file's
  min/max values, which the deleted rows may be, in HFiles and log blocks the metadata table
  cleans only lazily).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from etl.config import (
    CompactSettings,
    ExpireSettings,
    HudiTableType,
    OrphanSettings,
    TableFormat,
)
from etl.exceptions import MaintenanceError
from etl.formats.base import (
    QUERY_ID_KEY,
    CommitInfo,
    EraseOutcome,
    TableMaintenance,
    TableStats,
    TaskOutcome,
    check_format_at,
)
from etl.formats.hudi.services import cleaner_options, clustering_options
from etl.formats.hudi.sink import HudiSink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

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
# Hudi's meta columns that locate a stored row (Hudi's SQL DELETE writes these, "prepped"):
# the delete needs no key generator, which a table with auto-generated keys lacks
_LOCATING_COLUMNS = (
    "_hoodie_commit_time",
    "_hoodie_commit_seqno",
    "_hoodie_record_key",
    "_hoodie_partition_path",
    "_hoodie_file_name",
)
# Hudi's datasource option (DataSourceWriteOptions.SPARK_SQL_WRITES_PREPPED_KEY) that its SQL
# DELETE sets: the rows carry their meta columns, no key generator or index lookup runs
_SQL_PREPPED = "_hoodie.spark.sql.writes.prepped"
# the erasure's delete commit runs no inline table service: it stays the newest commit, and
# what follows it (compaction) is run here, carrying the erasure's commit metadata
_NO_INLINE_SERVICES = {
    "hoodie.compact.inline": "false",
    "hoodie.clustering.inline": "false",
    "hoodie.clean.automatic": "false",
    "hoodie.archive.automatic": "false",
}
# compact every file slice with a log file now (the trigger otherwise waits for N delta
# commits), and commit here, with the erasure's commit metadata
_COMPACT_NOW = {
    "hoodie.compact.inline.max.delta.commits": "1",
    "hoodie.compact.inline.trigger.strategy": "NUM_COMMITS",
    "hoodie.auto.commit": "false",
}
# the cleaner keeps only the newest version of each file group (and none of a replaced one)
_KEEP_ONE_VERSION = {
    "hoodie.cleaner.policy": "KEEP_LATEST_FILE_VERSIONS",
    "hoodie.cleaner.fileversions.retained": "1",
    # every partition, not only those written since the last clean
    "hoodie.cleaner.incremental.mode": "false",
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

    def delete_rows(
        self,
        spark: SparkSession,
        doomed: DataFrame,
        *,
        on: Sequence[str],
        commit: CommitInfo,
        now: dt.datetime,
    ) -> EraseOutcome:
        """Deletes the rows whose ``on`` columns equal a row of ``doomed`` in one commit.

        The matched rows are located by their meta columns and written as a prepped delete
        (what Hudi's SQL DELETE does), with the sink's write options and ``commit``'s
        metadata and no inline table service. On merge-on-read the delete lands in log files
        (delete blocks) over base files that still hold the rows, so the table is compacted
        right after, in a commit carrying the same metadata.

        Args:
            spark: The session.
            doomed: Distinct rows of the ``on`` columns (small: broadcast), checkpointed.
            on: Columns of the table identifying a row (its Kafka coordinates).
            commit: The erasure's identity and what it carries forward.
            now: The current time: a commit or a write in flight within ``QUIET_MINUTES``
                refuses (the table keeps a single writer).

        Returns:
            Rows deleted and files rewritten (0 and 0 when nothing matched: no commit).

        Raises:
            MaintenanceError: The table was written to within ``QUIET_MINUTES``.
        """
        self._require_quiet(spark, now, own_query=commit.query_id)
        # the doomed values stay in a DataFrame (a broadcast semi-join): never in SQL text
        matched = (
            spark.read.format("hudi")
            .load(self.sink.location)
            .join(F.broadcast(doomed.select(*on).distinct()), list(on), "left_semi")
            .select(*_LOCATING_COLUMNS)
            # Hudi scans its input several times: find the rows once, before the delete
            .localCheckpoint(eager=True)
        )
        if matched.isEmpty():
            return EraseOutcome()
        options = {
            **self.sink.write_options("delete", commit),
            **_NO_INLINE_SERVICES,
            # the key and file group of each row come from its meta columns, as in Hudi's SQL
            # DELETE (delete_prepped alone still runs the key generator on tables without
            # a record key, which fails: no key to generate for a stored row)
            _SQL_PREPPED: "true",
        }
        matched.write.format("hudi").options(**options).mode("append").save(self.sink.location)
        instant = self._newest_commit(spark)
        stats = self._write_stats(spark, instant)
        deleted = sum(int(s.getNumDeletes()) for s in stats)
        rewritten = len(stats)
        details: dict[str, Any] = {
            "instant": str(instant.requestedTime()),
            "files_written": rewritten,
        }
        if self.sink.options.table_type is HudiTableType.MERGE_ON_READ:
            # the delete blocks went to log files: rewrite the base files without the rows
            rewritten = self._compact_now(spark, commit)
            details["compacted_file_slices"] = rewritten
        log.info("%s: deleted %d rows in %d files (%s)", self.name, deleted, rewritten, details)
        return EraseOutcome(rows_deleted=deleted, files_rewritten=rewritten, details=details)

    def purge(self, spark: SparkSession, *, commit: CommitInfo, now: dt.datetime) -> EraseOutcome:
        """Leaves only the newest version of each file group and a metadata table rebuilt
        from them.

        In order: merge-on-read compaction of the log files left (a commit carrying
        ``commit.properties()``); the cleaner keeping one file version (older file slices,
        replaced file groups, the log files compacted); then the metadata table deleted and
        rebuilt from the remaining files. The metadata table's column statistics hold each
        file's min/max values, which deleted rows may be, and the record index holds record
        keys: in log blocks and HFiles that its own cleaner removes only three instants after
        its next compaction, with the cleaner retention of its data table's
        (hoodie.metadata.compact.max.delta.commits alone does not get them out). The timeline
        keeps write statistics (file names and counts), no values.

        Args:
            spark: The session.
            commit: The erasure's identity, stored by the compaction commit.
            now: The current time: another writer's commit or a write in flight within
                ``QUIET_MINUTES`` refuses.

        Returns:
            Commits whose file versions are gone, files deleted (data and metadata table)
            and what each step did.

        Raises:
            MaintenanceError: The table was written to within ``QUIET_MINUTES``.
        """
        self._require_quiet(spark, now, own_query=commit.query_id)
        details: dict[str, Any] = {}
        compacted = 0
        if self.sink.options.table_type is HudiTableType.MERGE_ON_READ:
            compacted = self._compact_now(spark, commit)
        details["compacted_file_slices"] = compacted
        client = self._client(spark, _KEEP_ONE_VERSION)
        try:
            cleaned = client.clean()
        finally:
            client.close()
        data_files = 0 if cleaned is None else int(cleaned.getTotalFilesDeleted())
        details["data_files_deleted"] = data_files
        commits = self.sink._meta_client(spark).getActiveTimeline().getCommitsTimeline()
        # every commit before the newest: time travel to it finds no file version any more
        expired = max(int(commits.filterCompletedInstants().countInstants()) - 1, 0)
        metadata_files = self._rebuild_metadata_table(spark)
        details["metadata_table_files_deleted"] = metadata_files
        log.info("%s: purged %d commits' file versions (%s)", self.name, expired, details)
        return EraseOutcome(
            snapshots_expired=expired,
            files_rewritten=compacted,
            files_removed=data_files + metadata_files,
            details=details,
        )

    def _compact_now(self, spark: SparkSession, commit: CommitInfo) -> int:
        """Compacts every merge-on-read file slice with log files; the file slices compacted."""
        client = self._client(spark, _COMPACT_NOW)
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        none = jvm.org.apache.hudi.common.util.Option.empty()
        try:
            instant = client.scheduleCompaction(none)
            if not instant.isPresent():
                return 0
            result = client.compact(instant.get())
            metadata = result.getCommitMetadata().get()
            if not self._completed(spark, instant.get()):
                extra = jvm.java.util.HashMap()
                for key, value in commit.properties().items():
                    extra.put(key, value)
                client.commitCompaction(
                    instant.get(), metadata, jvm.org.apache.hudi.common.util.Option.of(extra)
                )
            return int(metadata.getWriteStats().size())
        finally:
            client.close()

    def _rebuild_metadata_table(self, spark: SparkSession) -> int:
        """Deletes the metadata table and builds it anew from the table's files; the files
        the old one had (0 without a metadata table)."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        meta = self.sink._meta_client(spark)
        if not meta.getTableConfig().isMetadataTableAvailable():
            return 0
        path = jvm.org.apache.hadoop.fs.Path(f"{self.sink.location}/.hoodie/metadata")
        fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        files = 0
        listing = fs.listFiles(path, True)
        while listing.hasNext():
            listing.next()
            files += 1
        client = self._client(spark, {})
        try:
            context = client.getEngineContext()
            jvm.org.apache.hudi.metadata.HoodieTableMetadataUtil.deleteMetadataTable(
                meta, context, False
            )
            # building the writer bootstraps the enabled partitions from the latest file
            # slices (files, column stats, the record index of an upsert table)
            writer = jvm.org.apache.hudi.metadata.SparkHoodieBackedTableMetadataWriter.create(
                context.getStorageConf(), client.getConfig(), context
            )
            writer.close()
        finally:
            client.close()
        return files

    def _newest_commit(self, spark: SparkSession) -> Any:
        """The newest completed instant of the commits timeline."""
        timeline = self.sink._meta_client(spark).getActiveTimeline().getCommitsTimeline()
        return timeline.filterCompletedInstants().lastInstant().get()

    def _write_stats(self, spark: SparkSession, instant: Any) -> list[Any]:
        """The write statistics of a completed instant (one per file written)."""
        timeline = self.sink._meta_client(spark).getActiveTimeline()
        return list(timeline.readCommitMetadata(instant).getWriteStats())

    def _require_quiet(
        self, spark: SparkSession, now: dt.datetime, *, own_query: str | None = None
    ) -> None:
        """Fails while a writer looks active: a commit or a write in flight too recent
        (a commit of the query ``own_query``, an erasure's own, does not count).

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

        completed = timeline.getCommitsTimeline().filterCompletedInstants()

        def foreign(instant: Any) -> bool:
            """Whether another query than ``own_query`` made the completed instant."""
            if own_query is None:
                return True
            extra = dict(completed.readCommitMetadata(instant).getExtraMetadata())
            return extra.get(QUERY_ID_KEY) != own_query

        quiet_since = now - dt.timedelta(minutes=QUIET_MINUTES)
        # only the recent commits' metadata is read: an older one is quiet whoever made it
        moments = [
            moment
            for i in completed.getInstants()
            if (moment := at(i.getCompletionTime())) < quiet_since or foreign(i)
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
