"""Apache Iceberg sink: one snapshot per micro-batch, batch identity in the snapshot summary."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from pyspark.sql import functions as F
from pyspark.sql.types import (
    DataType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
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
from transforms.schema import nullable, to_ddl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


# Let each write add columns and widen types the way the evolved reader schema does
# (Iceberg's own schema merge), and leave columns absent from a batch null. Spark skips
# resolving MERGE conditions on tables that accept any schema, so tables that are MERGEd
# (the dead-letter table) do without.
EVOLVE_PROPERTY = "write.spark.accept-any-schema"
WRITE_OPTIONS = {"merge-schema": "true", "check-ordering": "false"}

_TRANSFORMS = {
    PartitionTransform.YEAR: "years",
    PartitionTransform.MONTH: "months",
    PartitionTransform.DAY: "days",
    PartitionTransform.HOUR: "hours",
}


def partition_expression(field: PartitionField) -> str:
    """A partition field as Iceberg's ``PARTITIONED BY`` clause spells it."""
    column = f"`{field.column}`"
    if field.transform is PartitionTransform.IDENTITY:
        return column
    if field.transform in (PartitionTransform.BUCKET, PartitionTransform.TRUNCATE):
        return f"{field.transform.value}({field.width}, {column})"
    return f"{_TRANSFORMS[field.transform]}({column})"


class IcebergSink(TableSink):
    """Appends to an Iceberg table through Spark's Iceberg catalog."""

    # a MERGE whose files a concurrent rewrite replaced, or the other way round; Iceberg
    # retries a mere metadata race (CommitFailedException) itself, these it cannot
    conflict_markers = (
        "Missing required files to delete",
        "Found conflicting files",
        "Found new conflicting delete files",
        "found new delete for replaced data file",
        "Cannot commit, found new position delete for replaced data file",
        # rewrite_manifests, when a commit replaced a manifest it was rewriting
        "could not be found in the latest snapshot",
        "CommitFailedException",
    )

    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Creates namespace and table if absent; every column is optional.

        Optional columns keep later schema versions (added fields, dropped optional ones)
        writable without rewriting the table.
        """
        catalog, namespace, _ = self.spec.table.split(".")
        columns = to_ddl(nullable(schema))
        statement = f"CREATE TABLE IF NOT EXISTS {self.spec.table} ({columns}) USING iceberg"
        if self.spec.partition_by:
            fields = ", ".join(partition_expression(f) for f in self.spec.partition_by)
            statement += f" PARTITIONED BY ({fields})"
        properties = dict(self.spec.properties)
        # upsert tables evolve by ALTER TABLE before each MERGE instead: MERGE conditions are
        # not resolved on tables that accept any schema
        accept_any = self.spec.evolve and self.spec.upsert is None
        if accept_any:
            properties[EVOLVE_PROPERTY] = "true"
        if self.spec.upsert is not None:
            mode = str(self.spec.options.get("write_mode", "copy-on-write"))
            for operation in ("merge", "update", "delete"):
                properties.setdefault(f"write.{operation}.mode", mode)
        if properties:
            props = ", ".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(properties.items()))
            statement += f" TBLPROPERTIES ({props})"
        try:
            spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}")
            spark.sql(statement)
            # a table made before (elsewhere, or by an older config) follows the spec: the
            # write modes and whether it accepts any schema are re-applied at each start
            current = {
                r["key"]: r["value"]
                for r in spark.sql(f"SHOW TBLPROPERTIES {self.spec.table}").collect()
            }
            changed = {k: v for k, v in properties.items() if current.get(k) != v}
            if changed:
                sets = ", ".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(changed.items()))
                spark.sql(f"ALTER TABLE {self.spec.table} SET TBLPROPERTIES ({sets})")
            if not accept_any and current.get(EVOLVE_PROPERTY) == "true":
                spark.sql(
                    f"ALTER TABLE {self.spec.table} UNSET TBLPROPERTIES ({_quote(EVOLVE_PROPERTY)})"
                )
        except Exception as err:
            raise SinkError(f"{self.spec.table}: cannot create table: {err}") from err

    def exists(self, spark: SparkSession) -> bool:
        """Asks the catalog."""
        return bool(spark.catalog.tableExists(self.spec.table))

    def commit_history(self, spark: SparkSession) -> DataFrame:
        """The live snapshots in the table's current lineage, with their summaries (a
        snapshot rolled back is not a commit of the table any more)."""
        lineage = (
            spark.table(f"{self.spec.table}.history")
            .where(F.col("is_current_ancestor"))
            .select("snapshot_id")
        )
        return (
            spark.table(f"{self.spec.table}.snapshots")
            .join(lineage, "snapshot_id")
            .select(F.col("committed_at").alias(COMMITTED_AT), F.col("summary").alias(PROPERTIES))
        )

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends in one snapshot whose summary carries the commit properties."""
        options = {f"snapshot-property.{k}": v for k, v in commit.properties().items()}
        evolve = WRITE_OPTIONS if self.spec.evolve else {}
        df.writeTo(self.spec.table).options(**evolve, **options).append()

    def upsert(self, df: DataFrame, commit: CommitInfo) -> None:
        """One MERGE (copy-on-write or merge-on-read, by ``iceberg.write_mode``) whose
        snapshot summary carries the commit properties."""
        spark = df.sparkSession
        upsert = self.spec.upsert
        assert upsert is not None, "upsert() on a table declared append"
        if self.spec.evolve:
            self._evolve_to(spark, df.drop(DELETE_FLAG, RESET_OFFSET).schema)
        target = spark.table(self.spec.table).schema

        source = upsert_source(df, target)
        view = f"_etl_upsert_{uuid.uuid4().hex}"
        source.createOrReplaceTempView(view)
        try:
            statement = merge_statement(
                self.spec.table, view, upsert=upsert, columns=target.fieldNames()
            )
            with_commit_properties(spark, commit.properties(), lambda: spark.sql(statement))
        finally:
            spark.catalog.dropTempView(view)

    def _evolve_to(self, spark: SparkSession, schema: StructType) -> None:
        """Adds the batch's new columns and widens widened ones (MERGE does not evolve)."""
        for statement in evolve_statements(
            self.spec.table, spark.table(self.spec.table).schema, schema
        ):
            spark.sql(statement)


def evolve_statements(table: str, current: StructType, wanted: StructType) -> list[str]:
    """``ALTER TABLE`` statements giving ``current`` the new and widened columns of ``wanted``.

    New columns (also inside structs) are added as optional; int -> bigint, float -> double
    and a larger decimal precision widen. Other differences are left for the write to reject.
    """
    statements: list[str] = []

    def walk(path: str, have: StructType, want: StructType) -> None:
        existing = {f.name: f for f in have.fields}
        for field in want.fields:
            name = f"{path}`{field.name}`"
            old = existing.get(field.name)
            if old is None:
                added = nullable(field.dataType).simpleString()
                statements.append(f"ALTER TABLE {table} ADD COLUMN {name} {added}")
            elif isinstance(old.dataType, StructType) and isinstance(field.dataType, StructType):
                walk(f"{name}.", old.dataType, field.dataType)
            elif _widens(old.dataType, field.dataType):
                statements.append(
                    f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {field.dataType.simpleString()}"
                )

    walk("", current, wanted)
    return statements


def _widens(old: DataType, new: DataType) -> bool:
    """Whether Iceberg can widen ``old`` to ``new`` in place."""
    if isinstance(old, IntegerType) and isinstance(new, LongType):
        return True
    if isinstance(old, FloatType) and isinstance(new, DoubleType):
        return True
    return (
        isinstance(old, DecimalType)
        and isinstance(new, DecimalType)
        and old.scale == new.scale
        and new.precision > old.precision
    )


def with_commit_properties(
    spark: SparkSession, properties: dict[str, str], action: Callable[[], object]
) -> None:
    """Runs a SQL action whose Iceberg commit stores ``properties`` in its snapshot summary.

    SQL statements (MERGE, UPDATE) take no write options, so this goes through Iceberg's
    ``CommitMetadata.withCommitProperties``: a thread-local read at commit time. py4j runs
    the Python callback, and the SQL it issues, on the JVM thread that set it.
    """
    from pyspark.java_gateway import ensure_callback_server_started

    gateway = spark.sparkContext._gateway
    assert gateway is not None
    ensure_callback_server_started(gateway)  # type: ignore[no-untyped-call]
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    java_properties = jvm.java.util.HashMap()
    for key, value in properties.items():
        java_properties.put(key, value)
    jvm.org.apache.iceberg.spark.CommitMetadata.withCommitProperties(
        java_properties,
        _JavaCallable(action),
        jvm.java.lang.Class.forName("java.lang.RuntimeException"),
    )


class _JavaCallable:
    """A ``java.util.concurrent.Callable`` implemented in Python (a py4j callback)."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action = action

    def call(self) -> None:
        """Runs the action."""
        self._action()

    class Java:
        implements: ClassVar[list[str]] = ["java.util.concurrent.Callable"]


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
