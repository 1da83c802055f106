"""Apache Iceberg: tables in a named Spark catalog (Hadoop on local disk, JDBC, or AWS Glue)."""

from __future__ import annotations

from etl.config import CatalogSettings, CatalogType, Settings, TableFormat
from etl.formats.base import TableFormatSupport, TableMaintenance, TableSink, TableSpec
from etl.formats.iceberg.maintenance import IcebergMaintenance
from etl.formats.iceberg.sink import IcebergSink
from etl.paths import local_uri

__all__ = ["IcebergFormat", "IcebergMaintenance", "IcebergSink", "catalog_conf"]

EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"


class IcebergFormat(TableFormatSupport):
    """Iceberg's session extensions and catalog, and its sink."""

    format = TableFormat.ICEBERG
    extensions = (EXTENSIONS,)

    def session_conf(self, settings: Settings) -> dict[str, str]:
        """Registers the configured Iceberg catalog (config requires one for Iceberg)."""
        if settings.catalog is None:
            return {}
        return catalog_conf(settings.catalog, region=settings.aws.region)

    def sink(self, spec: TableSpec) -> TableSink:
        """An Iceberg sink for the table."""
        return IcebergSink(spec)

    def maintenance(self, sink: TableSink) -> TableMaintenance:
        """Iceberg's procedures on the sink's table."""
        return IcebergMaintenance(sink)


def catalog_conf(catalog: CatalogSettings, *, region: str) -> dict[str, str]:
    """Spark confs registering the Iceberg catalog under ``catalog.name``."""
    prefix = f"spark.sql.catalog.{catalog.name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        # a streaming query runs in a cloned session with its own catalog instance: with
        # caching on, the job's session (and maintenance in it) would read stale snapshots
        f"{prefix}.cache-enabled": "false",
    }
    if catalog.type is CatalogType.JDBC:
        assert catalog.uri is not None  # enforced by CatalogSettings
        conf[f"{prefix}.type"] = "jdbc"
        conf[f"{prefix}.uri"] = catalog.uri
        conf[f"{prefix}.warehouse"] = local_uri(catalog.warehouse)
    elif catalog.type is CatalogType.HADOOP:
        conf[f"{prefix}.type"] = "hadoop"
        conf[f"{prefix}.warehouse"] = local_uri(catalog.warehouse)
    else:
        conf[f"{prefix}.catalog-impl"] = "org.apache.iceberg.aws.glue.GlueCatalog"
        conf[f"{prefix}.io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        conf[f"{prefix}.warehouse"] = catalog.warehouse
        conf[f"{prefix}.client.region"] = region
    for key, value in catalog.properties.items():
        conf[f"{prefix}.{key}"] = value
    return conf
