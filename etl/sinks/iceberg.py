"""Apache Iceberg sink: one snapshot per micro-batch, batch identity in the snapshot summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from etl.exceptions import SinkError
from etl.sinks.base import BATCH_ID_KEY, QUERY_ID_KEY, CommitInfo, TableSink
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


class IcebergSink(TableSink):
    """Appends to an Iceberg table through Spark's Iceberg catalog."""

    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Creates namespace and table if absent; every column is optional.

        Optional columns keep later schema versions (added fields, dropped optional ones)
        writable without rewriting the table.
        """
        catalog, namespace, _ = self.spec.table.split(".")
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog}.{namespace}")
        columns = to_ddl(nullable(schema))
        statement = f"CREATE TABLE IF NOT EXISTS {self.spec.table} ({columns}) USING iceberg"
        if self.spec.partition_by:
            statement += f" PARTITIONED BY ({', '.join(self.spec.partition_by)})"
        properties = dict(self.spec.properties)
        if self.spec.evolve:
            properties[EVOLVE_PROPERTY] = "true"
        if properties:
            props = ", ".join(f"'{k}'='{v}'" for k, v in sorted(properties.items()))
            statement += f" TBLPROPERTIES ({props})"
        try:
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

    def last_committed_batch(self, spark: SparkSession, query_id: str) -> int | None:
        """Reads the snapshot summaries for the highest batch id of this query."""
        if not spark.catalog.tableExists(self.spec.table):
            return None
        row = (
            spark.table(f"{self.spec.table}.snapshots")
            .where(F.col("summary").getItem(QUERY_ID_KEY) == query_id)
            .select(F.max(F.col("summary").getItem(BATCH_ID_KEY).cast("long")).alias("last"))
            .first()
        )
        return None if row is None or row["last"] is None else int(row["last"])

    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends in one snapshot whose summary carries the commit properties."""
        options = {f"snapshot-property.{k}": v for k, v in commit.properties().items()}
        evolve = WRITE_OPTIONS if self.spec.evolve else {}
        df.writeTo(self.spec.table).options(**evolve, **options).append()
