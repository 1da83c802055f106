"""Apache Hudi 1.0.2: tables at a location, registered in the session catalog as database.table.

Hudi 1.0 writes table version 8, which Hudi 0.x readers cannot read. The session needs
Kryo with Hudi's registrator, Hudi's SQL extension and Hudi's session catalog; the last
means Hudi and Delta cannot share a session (``etl.formats.check_one_session``).
"""

from __future__ import annotations

from etl.config import Settings, TableFormat
from etl.formats.base import TableFormatSupport, TableMaintenance, TableSink, TableSpec
from etl.formats.hudi.maintenance import HudiMaintenance
from etl.formats.hudi.sink import HudiSink

__all__ = ["HudiFormat", "HudiMaintenance", "HudiSink"]

EXTENSIONS = "org.apache.spark.sql.hudi.HoodieSparkSessionExtension"
SESSION_CONF = {
    # Hudi refuses to write with Java serialization; the registrator is its quick start's
    "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
    "spark.kryo.registrator": "org.apache.spark.HoodieSparkKryoRegistrar",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.hudi.catalog.HoodieCatalog",
}


class HudiFormat(TableFormatSupport):
    """Hudi's session extension, catalog and serializer, and its sink."""

    format = TableFormat.HUDI
    extensions = (EXTENSIONS,)
    own_jars = True

    def session_conf(self, settings: Settings) -> dict[str, str]:
        """Kryo, and Hudi's catalog as the session catalog."""
        return dict(SESSION_CONF)

    def sink(self, spec: TableSpec) -> TableSink:
        """A Hudi sink for the table."""
        return HudiSink(spec)

    def maintenance(self, sink: TableSink) -> TableMaintenance:
        """Compaction, clustering and cleaning of the sink's table."""
        assert isinstance(sink, HudiSink), f"a hudi sink, found {type(sink).__name__}"
        return HudiMaintenance(sink)
