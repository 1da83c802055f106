"""Apache Hudi sink: one Hudi commit (or delta commit) per micro-batch, written through the
datasource, the batch identity in the commit's extra metadata.

- Append tables are written with ``insert`` and Hudi's auto-generated record keys; Hudi
  1.0's SQL UPDATE works on such tables (it rewrites the matched rows under their stored
  keys), so the dead-letter table, which replay updates, needs no key either.
- Upsert tables are written with ``upsert``, keyed on the configured key fields, with
  ``EVENT_TIME_ORDERING`` on one derived column, ``_etl_ordering``: Hudi 1.0.2 (table version
  8) takes a single ordering field, and the upsert rule orders by the ordering field (null
  lowest), then the Kafka offset. ``_etl_ordering`` spells that pair as text that sorts the same
  way (see ``ordering_column``). Deletes travel in the same commit as ``_hoodie_is_deleted``,
  and go through the same ordering check, so a late delete cannot remove a newer row.
- Hudi partitions by columns; year/month/day/hour transforms are written as a derived
  column (``_etl_day_ts`` ...), formatted in the session time zone (UTC).
- Merge-on-read tables compact inline (async compaction does not run inside foreachBatch).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    ByteType,
    DateType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    TimestampNTZType,
    TimestampType,
)

from etl.config import HudiOptions, HudiTableType, PartitionField, PartitionTransform
from etl.exceptions import SinkError
from etl.formats.base import COMMITTED_AT, PROPERTIES, CommitInfo, TableSink, TableSpec
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# the derived ordering column of upsert tables, and Hudi's own delete marker
ORDERING = "_etl_ordering"
IS_DELETED = "_hoodie_is_deleted"
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
_GLOBAL_INDEXES = {"RECORD_INDEX", "GLOBAL_SIMPLE", "GLOBAL_BLOOM"}
_SIGN_BIT = -(2**63)
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


def _sortable_long(column: Column) -> Column:
    """A long as 16 hex digits that sort as the numbers do (sign bit flipped)."""
    return F.lpad(F.hex(column.cast("long").bitwiseXOR(F.lit(_SIGN_BIT))), 16, "0")


def ordering_column(df: DataFrame, ordering: str) -> Column:
    """The upsert rule's order of a row as one text that Hudi compares.

    ``"0"`` for a null ordering value, else ``"1"`` and the value in an order-preserving
    spelling (fixed-width hex for integers, dates and timestamps; hex UTF-8 bytes ended by
    ``!``, which sorts before every hex digit, for text and bytes), then the Kafka offset as
    fixed-width hex. So a larger value wins, null loses to any value, and equal values (nulls
    alike) go to the larger offset: ``etl.formats.base.newer_condition``.

    Raises:
        SinkError: The ordering field's type has no such spelling here.
    """
    data_type = df.schema[ordering].dataType
    value = F.col(ordering)
    if isinstance(data_type, ByteType | ShortType | IntegerType | LongType):
        spelled = _sortable_long(value)
    elif isinstance(data_type, DateType):
        spelled = _sortable_long(F.unix_date(value))
    elif isinstance(data_type, TimestampType):
        spelled = _sortable_long(F.unix_micros(value))
    elif isinstance(data_type, TimestampNTZType):
        # the session time zone is UTC (etl.spark), where this cast keeps the order
        spelled = _sortable_long(F.unix_micros(value.cast("timestamp")))
    elif isinstance(data_type, BooleanType):
        spelled = value.cast("int").cast("string")
    elif isinstance(data_type, StringType):
        spelled = F.concat(F.hex(F.encode(value, "UTF-8")), F.lit("!"))
    elif isinstance(data_type, BinaryType):
        spelled = F.concat(F.hex(value), F.lit("!"))
    else:
        raise SinkError(
            f"ordering field {ordering}: a hudi upsert table orders by an integer, date, "
            f"timestamp, boolean, string or binary field, found {data_type.simpleString()}"
        )
    rank = F.when(value.isNull(), F.lit("0")).otherwise(F.concat(F.lit("1"), spelled))
    return F.concat(rank, _sortable_long(F.col(KAFKA_OFFSET)))


class HudiSink(TableSink):
    """Writes a Hudi table at ``spec.location`` and registers it as ``spec.table``."""

    # Hudi's writer scans its input several times (apache/hudi#11741)
    reads_input_once = False

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
        helpers = {ORDERING, *self._partitions} - {f.column for f in self.spec.partition_by}
        return df.drop(*[c for c in df.columns if c.startswith(META_PREFIX) or c in helpers])

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Inserts the rows in one commit (auto-generated record keys)."""
        self._write(df, "insert", commit)

    def upsert(self, df: DataFrame, commit: CommitInfo) -> None:
        """Upserts and deletes in one commit; Hudi keeps, per key, the row whose
        ``_etl_ordering`` is larger, against the table's rows too."""
        upsert = self.spec.upsert
        assert upsert is not None, "upsert() on a table declared append"
        rows = df.withColumn(ORDERING, ordering_column(df, upsert.ordering)).select(
            *[F.col(c) for c in df.columns if c != DELETE_FLAG],
            ORDERING,
            F.coalesce(F.col(DELETE_FLAG), F.lit(False)).alias(IS_DELETED),
        )
        self._write(rows, "upsert", commit)

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
        if upsert is not None:
            index = self.options.index
            options |= {
                "hoodie.write.record.merge.mode": "EVENT_TIME_ORDERING",
                "hoodie.index.type": index,
                "hoodie.metadata.record.index.enable": str(index == "RECORD_INDEX").lower(),
                # a column the batch lacks (an older reader schema) is written null
                "hoodie.write.set.null.for.missing.columns": "true",
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

    def _write(self, df: DataFrame, operation: str, commit: CommitInfo) -> None:
        """One datasource write (one commit), then the table is registered."""
        derived = [
            F.date_format(F.col(f.column), _TIME_FORMATS[f.transform]).alias(name)
            for f, name in zip(self.spec.partition_by, self._partitions, strict=True)
            if f.transform is not PartitionTransform.IDENTITY
        ]
        rows = df.select("*", *derived) if derived else df
        (
            rows.write.format("hudi")
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
            "hoodie.table.precombine.field": ORDERING if upsert else "",
            "hoodie.table.partition.fields": ",".join(self._partitions),
        }

    def _table_properties_as_write_options(self) -> dict[str, str]:
        """The same configs as datasource write options (unset ones left out)."""
        names = {
            "hoodie.table.type": "hoodie.datasource.write.table.type",
            "hoodie.table.recordkey.fields": "hoodie.datasource.write.recordkey.field",
            "hoodie.table.precombine.field": "hoodie.datasource.write.precombine.field",
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
        """Registers the table in the session catalog if it is not there yet."""
        if spark.catalog.tableExists(self.spec.table):
            return
        location = self.location.replace("'", "\\'")
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self._database}`")
        spark.sql(
            f"CREATE TABLE IF NOT EXISTS `{self._database}`.`{self._table}` "
            f"USING hudi LOCATION '{location}'"
        )
