"""Delta Lake sink: one Delta commit per micro-batch, batch identity in the commit's userMetadata.

Tables live in Spark's session catalog as ``database.table`` at a location. The catalog only
points at the files (locally it is in memory and forgotten by a restart), so the sink answers
"does the table exist" from the location and (re-)registers the name when it is missing.

Every commit stores ``CommitInfo.properties()`` as a JSON object in Delta's ``userMetadata``
(``DESCRIBE HISTORY`` shows it) and, belt and braces, Delta's own idempotency token: the
query id as ``txnAppId`` and the batch id as ``txnVersion``, so Delta itself drops a batch of
a query that it committed before, even if the committer's check were bypassed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DateType,
    IntegerType,
    MapType,
    StringType,
    StructType,
)

from etl.config import PartitionField, PartitionTransform
from etl.exceptions import SinkError
from etl.formats.base import (
    COMMITTED_AT,
    PROPERTIES,
    CommitInfo,
    TableSink,
    merge_statement,
    upsert_source,
)
from transforms.columns import DELETE_FLAG, RESET_OFFSET
from transforms.schema import nullable

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from etl.formats.base import TableSpec

log = logging.getLogger(__name__)

# SQL statements (MERGE) take no write options: Delta reads these session confs instead
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
DELETION_VECTORS_PROPERTY = "delta.enableDeletionVectors"
# where Delta keeps a generated column's expression (in the schema read by path)
GENERATION_EXPRESSION = "delta.generationExpression"

# Delta has no hidden partitioning: a time transform becomes a generated column (named like
# Iceberg's partition field) that the table is partitioned by. Delta derives partition
# filters from filters on the source column for these expressions.
_GENERATED: dict[PartitionTransform, tuple[str, str, DataType]] = {
    PartitionTransform.YEAR: ("year", "YEAR(`{}`)", IntegerType()),
    PartitionTransform.MONTH: ("month", "DATE_FORMAT(`{}`, 'yyyy-MM')", StringType()),
    PartitionTransform.DAY: ("day", "CAST(`{}` AS DATE)", DateType()),
    PartitionTransform.HOUR: ("hour", "DATE_FORMAT(`{}`, 'yyyy-MM-dd-HH')", StringType()),
}


@dataclass(frozen=True)
class GeneratedColumn:
    """A column Delta computes from another one (a time partition)."""

    name: str
    data_type: DataType
    expression: str


def partition_columns(
    fields: tuple[PartitionField, ...],
) -> tuple[list[str], list[GeneratedColumn]]:
    """The partition columns of a Delta table, and the generated columns among them.

    Raises:
        SinkError: A transform Delta cannot partition by (bucket, truncate).
    """
    names: list[str] = []
    generated: list[GeneratedColumn] = []
    for field in fields:
        if field.transform is PartitionTransform.IDENTITY:
            names.append(field.column)
            continue
        if field.transform not in _GENERATED:
            raise SinkError(
                "expected a column or year/month/day/hour(column) for a delta table, found "
                f"{field.transform.value}({field.width}, {field.column})"
            )
        suffix, expression, data_type = _GENERATED[field.transform]
        column = GeneratedColumn(
            f"{field.column}_{suffix}", data_type, expression.format(field.column)
        )
        names.append(column.name)
        generated.append(column)
    return names, generated


class DeltaSink(TableSink):
    """Appends to (or MERGEs into) a Delta table at its location."""

    # Delta 3.3 on Spark 3.5 widens only byte/short -> int (type widening preview); Avro's
    # int -> long, float -> double and decimal precision need Delta 4 on Spark 4
    widens_types = False
    # the second of two commits that touched the same files (a MERGE and an OPTIMIZE)
    conflict_markers = (
        "ConcurrentDeleteReadException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentAppendException",
        "ConcurrentTransactionException",
        "ConcurrentWriteException",
    )

    def __init__(self, spec: TableSpec) -> None:
        """Binds the sink to one table; Delta tables need ``database.table`` and a location.

        Raises:
            SinkError: The name is not ``database.table``, or there is no location.
        """
        super().__init__(spec)
        if len(spec.table.split(".")) != 2:
            raise SinkError(f"delta table: expected `database.table`, found {spec.table!r}")
        if spec.location is None:
            raise SinkError(f"{spec.table}: a delta table needs a location (found none)")
        self.location: str = spec.location
        self._registered = False
        self._fitting: StructType | None = None  # a batch schema known to fit the table

    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Creates the table at its location if no Delta table is there, and registers it.

        Every column is optional (later schema versions may drop optional fields); time
        partitions are generated columns; deletion vectors are off unless the
        ``deletion_vectors`` option turns them on (with them a DELETE or MERGE leaves the old
        row in its Parquet file until ``REORG TABLE ... APPLY (PURGE)``). A table already at
        the location is only registered: its schema and properties are left as they are.

        Raises:
            SinkError: The table cannot be created, or its name points elsewhere.
        """
        from delta.tables import DeltaTable

        partitions, generated = partition_columns(self.spec.partition_by)
        clashes = sorted({c.name for c in generated} & set(schema.fieldNames()))
        if clashes:
            raise SinkError(
                f"{self.name}: expected no batch column named {', '.join(clashes)} (Delta "
                "generates it for a time partition), found one"
            )
        try:
            if not DeltaTable.isDeltaTable(spark, self.location):
                self._create(spark, schema, partitions, generated)
            self._register(spark)
        except SinkError:
            raise
        except Exception as err:
            raise SinkError(f"{self.name}: cannot create table at {self.location}: {err}") from err
        self._warn_on_deletion_vectors(spark)

    def _create(
        self,
        spark: SparkSession,
        schema: StructType,
        partitions: list[str],
        generated: list[GeneratedColumn],
    ) -> None:
        """Creates and registers the table (the builder API: Delta 3.3's SQL has no
        GENERATED ALWAYS AS for the session catalog)."""
        from delta.tables import DeltaTable

        database = self.name.split(".")[0]
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
        columns = nullable(schema)
        assert isinstance(columns, StructType)
        builder = (
            DeltaTable.createIfNotExists(spark)
            .tableName(self.name)
            .location(self.location)
            .addColumns(columns)
        )
        for column in generated:
            builder = builder.addColumn(
                column.name, column.data_type, generatedAlwaysAs=column.expression
            )
        if partitions:
            builder = builder.partitionedBy(*partitions)
        for key, value in sorted(self._properties().items()):
            builder = builder.property(key, value)
        builder.execute()

    def _properties(self) -> dict[str, str]:
        """The table properties at creation; the deletion-vector option wins over them."""
        deletion_vectors = bool(self.spec.options.get("deletion_vectors", False))
        return {
            **self.spec.properties,
            DELETION_VECTORS_PROPERTY: str(deletion_vectors).lower(),
        }

    def _register(self, spark: SparkSession) -> None:
        """Registers the name at the location unless it is; fails if it names other files."""
        if self._registered:
            return
        database = self.name.split(".")[0]
        if not spark.catalog.tableExists(self.name):
            spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
            spark.sql(
                f"CREATE TABLE IF NOT EXISTS {self.name} USING delta "
                f"LOCATION {_sql_string(self.location)}"
            )
        row = spark.sql(f"DESCRIBE DETAIL {self.name}").select("location").first()
        registered = None if row is None else str(row[0])
        if registered is None or not same_location(registered, self.location):
            raise SinkError(
                f"{self.name}: expected the catalog to point at {self.location}, found {registered}"
            )
        self._registered = True

    def _warn_on_deletion_vectors(self, spark: SparkSession) -> None:
        """Says so when an existing table's deletion vectors differ from the option."""
        wanted = self._properties()[DELETION_VECTORS_PROPERTY]
        current = {
            r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {self.name}").collect()
        }.get(DELETION_VECTORS_PROPERTY, "false")
        if current != wanted:
            log.warning(
                "%s: %s is %s on the existing table, the sink options ask for %s (left as it is)",
                self.name,
                DELETION_VECTORS_PROPERTY,
                current,
                wanted,
            )

    def exists(self, spark: SparkSession) -> bool:
        """Asks the location (the catalog may have forgotten it), registering the name."""
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark, self.location):
            return False
        self._register(spark)
        return True

    def commit_history(self, spark: SparkSession) -> DataFrame:
        """The commits with userMetadata in the log's retention (``DESCRIBE HISTORY``).

        Commits without it (Delta's CREATE TABLE and ALTER TABLE commits, replay's UPDATEs)
        carry no commit metadata and are left out; userMetadata that is not a JSON object
        gives an empty map. Delta makes the timestamps strictly increase with the version.
        """
        from delta.tables import DeltaTable

        map_type = MapType(StringType(), StringType())
        properties = F.from_json(F.col("userMetadata"), map_type.simpleString())
        return (
            DeltaTable.forPath(spark, self.location)
            .history()
            .where(F.col("userMetadata").isNotNull())
            .select(
                F.col("timestamp").alias(COMMITTED_AT),
                F.coalesce(properties, F.create_map().cast(map_type)).alias(PROPERTIES),
            )
        )

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends in one commit carrying the commit properties and the idempotency token.

        Raises:
            SinkError: The batch changes the type of a column (see ``schema_changes``), or
                adds columns to a table that does not evolve.
        """
        self._check_fits(df.sparkSession, df.schema)
        writer = (
            df.write.format("delta")
            .mode("append")
            .option("userMetadata", _user_metadata(commit))
            .option("txnAppId", commit.query_id)
            .option("txnVersion", str(commit.batch_id))
        )
        if self.spec.evolve:
            writer = writer.option("mergeSchema", "true")
        writer.save(self.location)

    def upsert(self, df: DataFrame, commit: CommitInfo) -> None:
        """One MERGE carrying the commit properties and the idempotency token.

        New columns are added first (``ALTER TABLE ... ADD COLUMNS``, a commit of its own);
        generated columns are left to Delta.

        Raises:
            SinkError: The batch changes the type of a column, or adds columns to a table
                that does not evolve.
        """
        spark = df.sparkSession
        upsert = self.spec.upsert
        assert upsert is not None, "upsert() on a table declared append"
        added = self._check_fits(spark, df.drop(DELETE_FLAG, RESET_OFFSET).schema)
        if added:
            columns = ", ".join(f"{path} {data_type}" for path, data_type in added)
            spark.sql(f"ALTER TABLE {self.name} ADD COLUMNS ({columns})")
        target = [
            f for f in self._schema(spark).fields if GENERATION_EXPRESSION not in (f.metadata or {})
        ]
        source = upsert_source(df, StructType(target))
        view = f"_etl_upsert_{uuid.uuid4().hex}"
        source.createOrReplaceTempView(view)
        statement = merge_statement(
            self.name, view, upsert=upsert, columns=[f.name for f in target]
        )
        confs = {
            USER_METADATA_CONF: _user_metadata(commit),
            TXN_APP_ID_CONF: commit.query_id,
            TXN_VERSION_CONF: str(commit.batch_id),
        }
        try:
            with session_confs(spark, confs):
                spark.sql(statement)
        finally:
            spark.catalog.dropTempView(view)

    def _schema(self, spark: SparkSession) -> StructType:
        """The table's schema as its log has it (with generation expressions)."""
        return spark.read.format("delta").load(self.location).schema

    def _check_fits(self, spark: SparkSession, batch: StructType) -> list[tuple[str, str]]:
        """The columns the batch adds (path, SQL type); raises if it cannot be written.

        Raises:
            SinkError: A column's type differs from the table's (Delta 3.3 on Spark 3.5
                cannot widen int, float or decimal columns), or the batch adds columns to a
                table that does not evolve.
        """
        if batch == self._fitting:
            return []
        added, changed = schema_changes(self._schema(spark), batch)
        if not added and not changed:
            # the next batches of this schema need no read of the table's log (this sink is
            # the table's only writer; a schema that grows is checked again)
            self._fitting = batch
        if changed:
            raise SinkError(
                f"{self.name}: the batch cannot be written: "
                + "; ".join(
                    f"column {path} is {old} in the table, {new} in the batch"
                    for path, old, new in changed
                )
                + " (Delta 3.3 on Spark 3.5 cannot change a column's type in place; its "
                "type widening covers byte/short -> int only)"
            )
        if added and not self.spec.evolve:
            raise SinkError(
                f"{self.name}: expected the table's columns, found new ones in the batch: "
                + ", ".join(path for path, _ in added)
            )
        return added


def schema_changes(
    table: StructType, batch: StructType
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """How a batch's schema differs from the table's.

    Returns:
        (columns the batch adds: quoted path and SQL type; columns whose type differs: quoted
        path, table type, batch type). New fields inside structs count as added; table
        columns the batch lacks are fine (they are written null).
    """
    added: list[tuple[str, str]] = []
    changed: list[tuple[str, str, str]] = []

    def walk(prefix: str, have: StructType, want: StructType) -> None:
        existing = {f.name: f for f in have.fields}
        for field in want.fields:
            path = f"{prefix}`{field.name}`"
            old = existing.get(field.name)
            if old is None:
                added.append((path, nullable(field.dataType).simpleString()))
            else:
                compare(path, old.dataType, field.dataType)

    def compare(path: str, have: DataType, want: DataType) -> None:
        if isinstance(have, StructType) and isinstance(want, StructType):
            walk(f"{path}.", have, want)
        elif isinstance(have, ArrayType) and isinstance(want, ArrayType):
            compare(f"{path}.element", have.elementType, want.elementType)
        elif isinstance(have, MapType) and isinstance(want, MapType):
            compare(f"{path}.key", have.keyType, want.keyType)
            compare(f"{path}.value", have.valueType, want.valueType)
        elif have.simpleString() != want.simpleString():
            changed.append((path, have.simpleString(), want.simpleString()))

    walk("", table, batch)
    return added, changed


def same_location(a: str, b: str) -> bool:
    """Whether two URIs name the same place (``file:/x`` and ``file:///x`` alike)."""
    left, right = urlparse(a), urlparse(b)
    return (left.scheme or "file", left.netloc, left.path.rstrip("/")) == (
        right.scheme or "file",
        right.netloc,
        right.path.rstrip("/"),
    )


@contextlib.contextmanager
def session_confs(spark: SparkSession, confs: Mapping[str, str]) -> Iterator[None]:
    """Sets session confs for the block and restores what was there before.

    A streaming query's foreachBatch runs in the query's own session, so these do not leak
    into another pipeline's statements.
    """
    before = {key: spark.conf.get(key, None) for key in confs}
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, previous in before.items():
            if previous is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, previous)


def _user_metadata(commit: CommitInfo) -> str:
    """The commit properties as Delta's userMetadata (a JSON object of strings)."""
    return json.dumps(commit.properties(), sort_keys=True, separators=(",", ":"))


def _sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
