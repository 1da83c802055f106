"""Delta Lake: tables in Spark's session catalog (``database.table``), registered by location."""

from __future__ import annotations

from etl.config import Settings, TableFormat
from etl.formats.base import TableFormatSupport, TableMaintenance, TableSink, TableSpec
from etl.formats.delta.maintenance import DeltaMaintenance
from etl.formats.delta.sink import DeltaSink

__all__ = ["DeltaFormat", "DeltaMaintenance", "DeltaSink"]

EXTENSIONS = "io.delta.sql.DeltaSparkSessionExtension"
CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


class DeltaFormat(TableFormatSupport):
    """Delta's session extension and session catalog, and its sink."""

    format = TableFormat.DELTA
    extensions = (EXTENSIONS,)

    def session_conf(self, settings: Settings) -> dict[str, str]:
        """Makes Spark's session catalog Delta's (Iceberg keeps its own named catalog)."""
        return {
            "spark.sql.catalog.spark_catalog": CATALOG,
            # Delta rebuilds a table's state (log replay) in 50 tasks by default, whatever its
            # size; a streaming table's log is small and replayed every batch: size it like
            # the job's shuffles (spark.conf can still set it)
            "spark.databricks.delta.snapshotPartitions": str(settings.spark.shuffle_partitions),
        }

    def sink(self, spec: TableSpec) -> TableSink:
        """A Delta sink for the table."""
        return DeltaSink(spec)

    def maintenance(self, sink: TableSink) -> TableMaintenance:
        """OPTIMIZE and VACUUM of the sink's table."""
        assert isinstance(sink, DeltaSink), f"a delta sink, found {type(sink).__name__}"
        return DeltaMaintenance(sink)
