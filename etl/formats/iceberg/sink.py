"""Apache Iceberg sink: one snapshot per micro-batch, batch identity in the snapshot summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from etl.config import PartitionField, PartitionTransform
from etl.exceptions import SinkError
from etl.formats.base import COMMITTED_AT, PROPERTIES, CommitInfo, TableSink
from transforms.schema import nullable, to_ddl

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


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
        if self.spec.evolve:
            properties[EVOLVE_PROPERTY] = "true"
        if properties:
            props = ", ".join(f"'{k}'='{v}'" for k, v in sorted(properties.items()))
            statement += f" TBLPROPERTIES ({props})"
        try:
            spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}")
            spark.sql(statement)
            current = {
                r["key"]: r["value"]
                for r in spark.sql(f"SHOW TBLPROPERTIES {self.spec.table}").collect()
            }
            if self.spec.evolve and current.get(EVOLVE_PROPERTY) != "true":  # made elsewhere
                spark.sql(
                    f"ALTER TABLE {self.spec.table} SET TBLPROPERTIES ('{EVOLVE_PROPERTY}'='true')"
                )
        except Exception as err:
            raise SinkError(f"{self.spec.table}: cannot create table: {err}") from err

    def exists(self, spark: SparkSession) -> bool:
        """Asks the catalog."""
        return bool(spark.catalog.tableExists(self.spec.table))

    def commit_history(self, spark: SparkSession) -> DataFrame:
        """The live snapshots with their summaries."""
        return spark.table(f"{self.spec.table}.snapshots").select(
            F.col("committed_at").alias(COMMITTED_AT), F.col("summary").alias(PROPERTIES)
        )

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends in one snapshot whose summary carries the commit properties."""
        options = {f"snapshot-property.{k}": v for k, v in commit.properties().items()}
        evolve = WRITE_OPTIONS if self.spec.evolve else {}
        df.writeTo(self.spec.table).options(**evolve, **options).append()
