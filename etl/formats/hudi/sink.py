"""Apache Hudi sink: one Hudi commit (or delta commit) per micro-batch, written through the
datasource, the batch identity in the commit's extra metadata.

- Append tables are written with ``insert`` and Hudi's auto-generated record keys; Hudi
  1.0's SQL UPDATE works on such tables (it rewrites the matched rows under their stored
  keys), so the dead-letter table, which replay updates, needs no key either.
- Upsert tables are written with ``upsert``, keyed on the configured key fields, in
  ``COMMIT_TIME_ORDERING`` (the last write wins): the batch is first resolved against the
  table's rows of its keys by the rule every format shares (``etl.formats.base.
  newer_condition``: ordering field, Kafka offset, tombstone resets), and only the rows that win
  are written; deletes travel in the same commit as ``_hoodie_is_deleted``. Hudi 1.0.2 takes a
  single ordering field and no tie-breaker, so its own event-time ordering cannot express
  the rule; resolving first also makes a replayed batch change nothing.
- Hudi partitions by columns; year/month/day/hour transforms are written as a derived
  column (``_etl_day_ts`` ...), formatted in the session time zone (UTC).
- Merge-on-read tables compact inline (async compaction does not run inside foreachBatch).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from etl.config import HudiOptions, HudiTableType, PartitionField, PartitionTransform
from etl.exceptions import SinkError
from etl.formats.base import (
    COMMITTED_AT,
    PROPERTIES,
    CommitInfo,
    TableSink,
    TableSpec,
    newer_condition,
)
from etl.formats.hudi.services import inline_service_options
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET, RESET_OFFSET

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# Hudi's own delete marker
IS_DELETED = "_hoodie_is_deleted"
# marks the stored rows in the join that resolves an upsert batch against the table
_STORED = "_etl_stored"
# Hudi's meta columns (_hoodie_commit_time ...) all start with it, and so does IS_DELETED
META_PREFIX = "_hoodie_"
# Hudi stores the write options whose keys start with this in the commit's extra metadata
COMMIT_META_PREFIX = "etl."

_TIME_FORMATS = {
    PartitionTransform.YEAR: "yyyy",
    PartitionTransform.MONTH: "yyyy-MM",
    PartitionTransform.DAY: "yyyy-MM-dd",
    PartitionTransform.HOUR: "yyyy-MM-dd-HH",
}
# the bloom filter's initial size where no index reads it (Hudi's default: 60,000 entries)
_SMALL_BLOOM_ENTRIES = 1_000
_GLOBAL_INDEXES = {"RECORD_INDEX", "GLOBAL_SIMPLE", "GLOBAL_BLOOM"}
_PROPERTIES_FILE = ".hoodie/hoodie.properties"


def partition_column(field: PartitionField) -> str:
    """The column a partition field is written as: the column, or a derived one."""
    if field.transform is PartitionTransform.IDENTITY:
        return field.column
    if field.transform not in _TIME_FORMATS:
        raise SinkError(
            f"partition field {field.transform.value}({field.column}): Hudi partitions by "
            "columns or year/month/day/hour(column) only"
        )
    return f"_etl_{field.transform.value}_{field.column}"


class HudiSink(TableSink):
    """Writes a Hudi table at ``spec.location`` and registers it as ``spec.table``."""

    # Hudi's writer scans its input several times (apache/hudi#11741)
    reads_input_once = False
    # a write that raced another writer of the table (only possible with a lock provider and
    # a second writer, which this project does not configure)
    conflict_markers = ("HoodieWriteConflictException",)

    def __init__(self, spec: TableSpec) -> None:
        """Binds the sink to one table.

        Raises:
            SinkError: The spec has no location or its name is not ``database.table``.
        """
        super().__init__(spec)
        parts = spec.table.split(".")
        if spec.location is None or len(parts) != 2:
            raise SinkError(
                f"{spec.table}: a hudi table is named database.table and has a location "
                f"(found location {spec.location!r})"
            )
        self._database, self._table = parts
        self.location: str = spec.location.rstrip("/")
        self.options = HudiOptions.model_validate(dict(spec.options))
        self._partitions = tuple(partition_column(f) for f in spec.partition_by)
        self._registered = False
        # Hudi 1.0.2 fails the commit that writes a widened column (int -> long) to a
        # merge-on-read log file while it updates the record index: it reads the log with
        # the old schema (AvroTypeException); copy-on-write and appends widen fine
        self.widens_types = not (
            self.options.table_type is HudiTableType.MERGE_ON_READ and spec.upsert is not None
        )

    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Checks an existing table against the configuration and registers it.

        A new table is created by its first commit (the datasource write creates it from
        the batch's schema and the write options), and registered then.

        Raises:
            SinkError: The table at the location has another record key, table type,
                partitioning or ordering field than configured; nothing was written.
        """
        found = self._table_config(spark)
        if found is None:
            return
        wanted = self._table_properties()
        differs = [
            f"{key} is {found.get(key) or 'unset'}, configured {value or 'unset'}"
            for key, value in wanted.items()
            if (found.get(key) or "") != value
        ]
        if differs:
            raise SinkError(
                f"{self.spec.table}: the hudi table at {self.location} does not match the "
                f"configuration: {'; '.join(differs)}. Nothing was written; write to a new "
                "location or change the configuration back"
            )
        self._register(spark)

    def exists(self, spark: SparkSession) -> bool:
        """Whether a Hudi table is at the location; one that is gets registered.

        Registering here lets SQL on ``name`` (replay's reads and UPDATEs) work in a process
        that has not written the table, since the session catalog lives in memory.
        """
        if not self._on_storage(spark):
            return False
        self._register(spark)
        return True

    def commit_history(self, spark: SparkSession) -> DataFrame:
        """The completed commits, delta commits and replace commits of the active timeline
        (compactions complete as commits), with their completion times and extra metadata."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        rows: list[tuple[dt.datetime, dict[str, str]]] = []
        if self._on_storage(spark):
            timeline = (
                self._meta_client(spark)
                .getActiveTimeline()
                .getCommitsTimeline()
                .filterCompletedInstants()
            )
            parse = jvm.org.apache.hudi.common.table.timeline.HoodieInstantTimeGenerator
            for instant in timeline.getInstants():
                metadata = timeline.readCommitMetadata(instant)
                # instant times are in the timeline's zone; the parsed Date is an instant
                millis = parse.parseDateFromInstantTime(instant.getCompletionTime()).getTime()
                rows.append(
                    (
                        dt.datetime.fromtimestamp(millis / 1000, dt.UTC),
                        dict(metadata.getExtraMetadata()),
                    )
                )
        return spark.createDataFrame(
            rows, f"{COMMITTED_AT} timestamp, {PROPERTIES} map<string,string>"
        )

    def read(self, spark: SparkSession) -> DataFrame:
        """A fresh snapshot read of the location, without Hudi's meta columns and ours."""
        df = spark.read.format("hudi").load(self.location)
        helpers = set(self._partitions) - {f.column for f in self.spec.partition_by}
        return df.drop(*[c for c in df.columns if c.startswith(META_PREFIX) or c in helpers])

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Inserts the rows in one commit (auto-generated record keys)."""
        self._write(df, "insert", commit)

    def upsert(self, df: DataFrame, commit: CommitInfo) -> None:
        """Upserts and deletes in one commit: the batch's rows that are newer than the
        table's row of their key (``newer_condition``), or whose key it lacks."""
        upsert = self.spec.upsert
        assert upsert is not None, "upsert() on a table declared append"
        spark = df.sparkSession
        source = df.withColumn(DELETE_FLAG, F.coalesce(F.col(DELETE_FLAG), F.lit(False)))
        if RESET_OFFSET not in source.columns:
            source = source.withColumn(RESET_OFFSET, F.lit(None).cast("long"))
        if self.exists(spark):
            # only the stored rows of the batch's keys take part in the join: a broadcast
            # filter of the scan instead of shuffling every key of the table
            stored = (
                self.read(spark)
                .select(*upsert.keys, upsert.ordering, KAFKA_OFFSET, F.lit(True).alias(_STORED))
                .join(F.broadcast(df.select(*upsert.keys)), list(upsert.keys), "left_semi")
            )
            on = " AND ".join(f"s.`{k}` = t.`{k}`" for k in upsert.keys)
            joined = source.alias("s").join(stored.alias("t"), F.expr(on), "left")
            wins = F.when(F.col(f"t.{_STORED}").isNull(), ~F.col(f"s.{DELETE_FLAG}")).otherwise(
                F.expr(newer_condition(upsert.ordering))
            )
            winners = joined.where(wins).select("s.*")
        else:
            winners = source.where(~F.col(DELETE_FLAG))
        rows = winners.select(
            *[F.col(c) for c in df.columns if c not in (DELETE_FLAG, RESET_OFFSET)],
            F.col(DELETE_FLAG).alias(IS_DELETED),
        )
        # Hudi scans its input several times: resolve against the table once, before the
        # commit changes it
        self._write(rows.localCheckpoint(eager=True), "upsert", commit)

    def update(self, spark: SparkSession, *, assignments: Mapping[str, str], where: str) -> None:
        """Hudi's SQL ``UPDATE`` (also on tables without a record key)."""
        self._register(spark)
        super().update(spark, assignments=assignments, where=where)

    def update_matching(
        self,
        source: DataFrame,
        *,
        on: Sequence[str],
        assignments: Mapping[str, str],
        where: str = "true",
    ) -> None:
        """Updates the rows whose ``on`` columns equal a row of ``source``, as one SQL
        ``UPDATE ... WHERE EXISTS``.

        Not Hudi's MERGE: on a merge-on-read table without a record key, Hudi 1.0.2's MERGE
        writes a partial-update log block that no reader can merge (``Partial merging logic
        is not implemented``), or with partial updates off replaces the row by one holding
        only the assigned columns. ``source`` has only the ``on`` columns, which equal the
        target's, so the assignments lose nothing by not seeing it.
        """
        spark = source.sparkSession
        self._register(spark)
        view = f"_etl_source_{uuid.uuid4().hex}"
        # checkpointed: a source read from this same table would otherwise be in the plan
        source.select(*on).distinct().localCheckpoint(eager=True).createOrReplaceTempView(view)
        matches = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
        sets = ", ".join(f"`{column}` = {value}" for column, value in assignments.items())
        try:
            spark.sql(
                f"UPDATE {self.name} t SET {sets} "
                f"WHERE EXISTS (SELECT 1 FROM {view} s WHERE {matches}) AND ({where})"
            )
        finally:
            spark.catalog.dropTempView(view)

    def write_options(self, operation: str, commit: CommitInfo | None = None) -> dict[str, str]:
        """The datasource options of one write (``operation``: insert or upsert)."""
        options = {
            "hoodie.table.name": self._table,
            "hoodie.database.name": self._database,
            "hoodie.datasource.write.operation": operation,
            "hoodie.datasource.write.hive_style_partitioning": "true",
            "hoodie.datasource.write.commitmeta.key.prefix": COMMIT_META_PREFIX,
            **self._table_properties_as_write_options(),
        }
        upsert = self.spec.upsert
        # A bloom filter in each Parquet footer (Hudi's default, ~400 KB at its default size)
        # serves only the BLOOM indexes: elsewhere it is dead weight that dominates a
        # micro-batch's small files, and it made clustering plan 55 files where 4 would do
        # (Hudi sizes the output by the input's bytes; bench/maintenance.py)
        bloom = upsert is not None and self.options.index in ("BLOOM", "GLOBAL_BLOOM")
        options["hoodie.parquet.bloom.filter.enabled"] = str(bloom).lower()
        if not bloom:
            # Hudi's row writer (bulk insert, clustering) writes the filter anyway: a small one
            # (it grows with the file's records)
            options["hoodie.index.bloom.num_entries"] = str(_SMALL_BLOOM_ENTRIES)
        if upsert is not None:
            index = self.options.index
            options |= {
                "hoodie.index.type": index,
                "hoodie.metadata.record.index.enable": str(index == "RECORD_INDEX").lower(),
                # a column the batch lacks (an older reader schema) is written null
                "hoodie.write.set.null.for.missing.columns": "true",
                # the batch holds one row per key already (``latest_per_key``, then resolved
                # against the table): Hudi's own per-key reduce would be a shuffle for nothing
                "hoodie.combine.before.upsert": "false",
            }
            if index in _GLOBAL_INDEXES:
                # a key whose partition value changes moves (if the change is newer)
                for kind in ("record", "simple", "bloom"):
                    options[f"hoodie.{kind}.index.update.partition.path"] = "true"
        if self.options.table_type is HudiTableType.MERGE_ON_READ:
            # async compaction does not run inside foreachBatch (apache/hudi#2043)
            options["hoodie.compact.inline"] = "true"
            # Inserts start new file groups instead of rewriting a small base file: Hudi
            # 1.0.2 rewrites it through its Avro path, which reads the array columns of a
            # base file written by compaction (Spark's legacy list layout) as null, and so
            # loses them (tests/formats/test_hudi.py shows it)
            options["hoodie.parquet.small.file.limit"] = "0"
            options["hoodie.compact.inline.max.delta.commits"] = str(
                self.options.compaction_delta_commits
            )
        if self.spec.maintenance is not None:
            options |= inline_service_options(self.spec.maintenance, self.options)
        if self.options.glue_sync:
            options |= self._glue_sync_options()
        if commit is not None:
            properties = commit.properties()
            unprefixed = sorted(k for k in properties if not k.startswith(COMMIT_META_PREFIX))
            if unprefixed:
                raise SinkError(
                    f"{self.spec.table}: commit metadata keys must start with "
                    f"{COMMIT_META_PREFIX!r} to reach a hudi commit, found {unprefixed}"
                )
            options |= properties
        return options

    def _glue_sync_options(self) -> dict[str, str]:
        """Hudi's meta sync to the AWS Glue Data Catalog, run after each commit."""
        extractor = (
            "org.apache.hudi.hive.MultiPartKeysValueExtractor"
            if self._partitions
            else "org.apache.hudi.hive.NonPartitionedExtractor"
        )
        return {
            "hoodie.datasource.meta.sync.enable": "true",
            "hoodie.meta.sync.client.tool.class": "org.apache.hudi.aws.sync.AwsGlueCatalogSyncTool",
            "hoodie.datasource.hive_sync.database": self._database,
            "hoodie.datasource.hive_sync.table": self._table,
            "hoodie.datasource.hive_sync.partition_fields": ",".join(self._partitions),
            "hoodie.datasource.hive_sync.partition_extractor_class": extractor,
        }

    def with_partition_columns(self, df: DataFrame) -> DataFrame:
        """``df`` plus the derived partition columns (``_etl_day_<col>`` ...) Hudi writes."""
        derived = [
            F.date_format(F.col(f.column), _TIME_FORMATS[f.transform]).alias(name)
            for f, name in zip(self.spec.partition_by, self._partitions, strict=True)
            if f.transform is not PartitionTransform.IDENTITY
        ]
        return df.select("*", *derived) if derived else df

    def _write(self, df: DataFrame, operation: str, commit: CommitInfo) -> None:
        """One datasource write (one commit), then the table is registered."""
        (
            self.with_partition_columns(df)
            .write.format("hudi")
            .options(**self.write_options(operation, commit))
            .mode("append")
            .save(self.location)
        )
        self._register(df.sparkSession)

    def _table_properties(self) -> dict[str, str]:
        """The table configs (hoodie.properties) this sink's configuration implies."""
        upsert = self.spec.upsert
        return {
            "hoodie.table.type": self.options.table_type.value,
            "hoodie.table.recordkey.fields": ",".join(upsert.keys) if upsert else "",
            # an upsert batch was resolved against the table first: what is written wins
            # (Hudi's default too for tables without an ordering field, as append tables are)
            "hoodie.record.merge.mode": "COMMIT_TIME_ORDERING",
            "hoodie.table.partition.fields": ",".join(self._partitions),
        }

    def _table_properties_as_write_options(self) -> dict[str, str]:
        """The same configs as datasource write options (unset ones left out)."""
        names = {
            "hoodie.table.type": "hoodie.datasource.write.table.type",
            "hoodie.table.recordkey.fields": "hoodie.datasource.write.recordkey.field",
            "hoodie.record.merge.mode": "hoodie.write.record.merge.mode",
            "hoodie.table.partition.fields": "hoodie.datasource.write.partitionpath.field",
        }
        return {names[k]: v for k, v in self._table_properties().items() if v}

    def _on_storage(self, spark: SparkSession) -> bool:
        """Whether the location holds a Hudi table (its ``.hoodie/hoodie.properties``)."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        path = jvm.org.apache.hadoop.fs.Path(f"{self.location}/{_PROPERTIES_FILE}")
        return bool(path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(path))

    def _table_config(self, spark: SparkSession) -> dict[str, str] | None:
        """The table's hoodie.properties, or None when no Hudi table is at the location."""
        if not self._on_storage(spark):
            return None
        props = self._meta_client(spark).getTableConfig().getProps()
        return {str(k): str(props.getProperty(k)) for k in props.stringPropertyNames()}

    def _meta_client(self, spark: SparkSession) -> Any:
        """Hudi's HoodieTableMetaClient of the table (through py4j)."""
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        storage = jvm.org.apache.hudi.storage.hadoop.HadoopStorageConfiguration(
            spark.sparkContext._jsc.hadoopConfiguration()
        )
        return (
            jvm.org.apache.hudi.common.table.HoodieTableMetaClient.builder()
            .setConf(storage)
            .setBasePath(self.location)
            .build()
        )

    def _register(self, spark: SparkSession) -> None:
        """Registers the table in the session catalog if it is not there yet (asked once per
        sink, not at every commit)."""
        if self._registered:
            return
        if spark.catalog.tableExists(self.spec.table):
            self._registered = True
            return
        location = self.location.replace("'", "\\'")
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self._database}`")
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS `{self._database}`.`{self._table}` "
            f"USING hudi LOCATION '{location}'"
        )
        self._registered = True
