"""spark_conf: session defaults, jars on the JVM classpath, Iceberg catalog wiring, overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etl.config import Settings, TableFormat, load_settings
from etl.exceptions import ConfigError
from etl.formats import check_one_session, formats_used
from etl.paths import local_uri
from etl.spark import spark_conf
from tests.conftest import REPO

# what every session gets, whatever the catalog
DEFAULTS = {
    "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.streaming.minBatchesToRetain": "20",
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}


def _settings(catalog: dict[str, Any], **spark: Any) -> Settings:
    name = catalog.get("name", "local")
    return Settings.model_validate(
        {
            "spark": spark,
            "catalog": catalog,
            "aws": {"region": "eu-west-1"},
            "pipelines": {
                "orders": {
                    "source": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["orders"]},
                    "decode": {"schema_file": "schemas/orders.avsc"},
                    "sink": {"table": f"{name}.shop.orders"},
                    "dead_letter": {"table": f"{name}.shop.orders_dlq"},
                    "checkpoint": "/tmp/checkpoints/orders",
                }
            },
        }
    )


def test_spark_conf_jdbc_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _settings(
        {
            "name": "local",
            "type": "jdbc",
            "uri": "jdbc:postgresql://db:5432/catalog",
            "warehouse": ".warehouse/data",
            "properties": {"jdbc.schema-version": "V1"},
        }
    )

    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.catalog.local": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.local.cache-enabled": "false",
        "spark.sql.catalog.local.type": "jdbc",
        # the JDBC uri is passed as written; the warehouse becomes an absolute file URI
        "spark.sql.catalog.local.uri": "jdbc:postgresql://db:5432/catalog",
        "spark.sql.catalog.local.warehouse": f"file://{tmp_path.resolve()}/.warehouse/data",
        "spark.sql.catalog.local.jdbc.schema-version": "V1",
    }
    assert list(tmp_path.iterdir()) == []  # computing the conf creates nothing


def test_spark_conf_glue_catalog() -> None:
    settings = _settings(
        {
            "name": "lake",
            "type": "glue",
            "warehouse": "s3://my-lake/warehouse",
            "properties": {"glue.skip-archive": "true"},
        }
    )

    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.cache-enabled": "false",
        "spark.sql.catalog.lake.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        "spark.sql.catalog.lake.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.lake.warehouse": "s3://my-lake/warehouse",
        "spark.sql.catalog.lake.client.region": "eu-west-1",
        "spark.sql.catalog.lake.glue.skip-archive": "true",
    }


def test_spark_conf_hadoop_catalog_relative_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = _settings({"name": "local", "type": "hadoop", "warehouse": ".warehouse"})

    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.catalog.local": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.local.cache-enabled": "false",
        "spark.sql.catalog.local.type": "hadoop",
        "spark.sql.catalog.local.warehouse": f"file://{tmp_path.resolve()}/.warehouse",
    }


@pytest.mark.parametrize(
    "warehouse",
    ["hdfs://nn:8020/warehouse", "file:/data/warehouse", "file:///data/warehouse"],
)
def test_spark_conf_hadoop_catalog_keeps_warehouse_uris(warehouse: str) -> None:
    settings = _settings({"name": "local", "type": "hadoop", "warehouse": warehouse})

    assert spark_conf(settings)["spark.sql.catalog.local.warehouse"] == warehouse


def test_spark_conf_jars_dir_puts_jars_on_both_classpaths(tmp_path: Path) -> None:
    jars = tmp_path / "jars"
    jars.mkdir()
    for name in ("kafka-clients-3.4.1.jar", "aws-msk-iam-auth-2.3.2.jar", "README.txt"):
        (jars / name).write_text("")
    settings = _settings(
        {"type": "glue", "warehouse": "s3://my-lake/warehouse"},
        app_name="t",
        master="local[2]",
        jars_dir=str(jars),
        shuffle_partitions=2,
        ui_enabled=False,
    )

    classpath = (
        f"{jars.resolve()}/aws-msk-iam-auth-2.3.2.jar:{jars.resolve()}/kafka-clients-3.4.1.jar"
    )
    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.shuffle.partitions": "2",
        "spark.ui.enabled": "false",
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.sql.catalog.local": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.local.cache-enabled": "false",
        "spark.sql.catalog.local.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        "spark.sql.catalog.local.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.local.warehouse": "s3://my-lake/warehouse",
        "spark.sql.catalog.local.client.region": "eu-west-1",
    }


@pytest.mark.parametrize("create", [True, False], ids=["empty-dir", "missing-dir"])
def test_spark_conf_jars_dir_without_jars_raises(tmp_path: Path, create: bool) -> None:
    jars = tmp_path / "jars"
    if create:
        jars.mkdir()
        (jars / "README.txt").write_text("run make jars")
    settings = _settings({"type": "hadoop", "warehouse": "/wh"}, jars_dir=str(jars))

    with pytest.raises(ConfigError) as info:
        spark_conf(settings)

    assert str(info.value) == (
        f"spark.jars_dir: expected the Maven-resolved jars in {jars}, found none (run `make jars`)"
    )


def test_spark_conf_settings_conf_overrides_win() -> None:
    settings = _settings(
        {"name": "lake", "type": "glue", "warehouse": "s3://my-lake/warehouse"},
        conf={
            "spark.sql.shuffle.partitions": "200",
            "spark.sql.catalog.lake.cache-enabled": "true",
            "spark.sql.catalog.lake.warehouse": "s3://other-lake/warehouse",
            "spark.sql.adaptive.enabled": "false",
        },
    )

    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.shuffle.partitions": "200",
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.cache-enabled": "true",
        "spark.sql.catalog.lake.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        "spark.sql.catalog.lake.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.lake.warehouse": "s3://other-lake/warehouse",
        "spark.sql.catalog.lake.client.region": "eu-west-1",
        "spark.sql.adaptive.enabled": "false",
    }


def test_spark_conf_emr_yaml() -> None:
    settings = load_settings(REPO / "conf" / "emr.yaml", env={})

    # its Hudi pipeline joins the Iceberg catalog in one session (EMR ships the Hudi bundle)
    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.shuffle.partitions": "64",
        "spark.sql.extensions": "org.apache.spark.sql.hudi.HoodieSparkSessionExtension,"
        "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.kryo.registrator": "org.apache.spark.HoodieSparkKryoRegistrar",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.hudi.catalog.HoodieCatalog",
        "spark.sql.streaming.metricsEnabled": "true",
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.cache-enabled": "false",
        "spark.sql.catalog.lake.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        "spark.sql.catalog.lake.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.lake.warehouse": "s3://my-lake/warehouse",
        "spark.sql.catalog.lake.client.region": "us-east-1",
    }


def test_spark_conf_glue_yaml_hosts_delta_beside_the_iceberg_catalog() -> None:
    settings = load_settings(REPO / "conf" / "glue.yaml", env={})

    assert spark_conf(settings) == {
        **DEFAULTS,
        "spark.sql.shuffle.partitions": "32",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension,"
        "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.databricks.delta.snapshotPartitions": "32",
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.cache-enabled": "false",
        "spark.sql.catalog.lake.catalog-impl": "org.apache.iceberg.aws.glue.GlueCatalog",
        "spark.sql.catalog.lake.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.lake.warehouse": "s3://my-lake/warehouse",
        "spark.sql.catalog.lake.client.region": "us-east-1",
    }


def test_emr_yaml_hudi_pipeline_renders_glue_sync_write_options() -> None:
    from etl.pipeline import pipeline_tables

    settings = load_settings(REPO / "conf" / "emr.yaml", env={})
    table, _ = pipeline_tables(settings.pipeline("customers"))

    options = table.write_options("upsert")  # type: ignore[attr-defined]

    assert {k: options[k] for k in sorted(options) if "sync" in k or "table.type" in k} == {
        "hoodie.datasource.hive_sync.database": "crm",
        "hoodie.datasource.hive_sync.partition_extractor_class": (
            "org.apache.hudi.hive.NonPartitionedExtractor"
        ),
        "hoodie.datasource.hive_sync.partition_fields": "",
        "hoodie.datasource.hive_sync.table": "customers",
        "hoodie.datasource.meta.sync.enable": "true",
        "hoodie.datasource.write.table.type": "MERGE_ON_READ",
        "hoodie.meta.sync.client.tool.class": "org.apache.hudi.aws.sync.AwsGlueCatalogSyncTool",
    }
    assert (options["hoodie.datasource.write.recordkey.field"], table.spec.location) == (
        "customer_id",
        "s3://my-lake/hudi/crm/customers",
    )


def test_local_uri_makes_relative_paths_absolute_file_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert [local_uri(p) for p in ("wh", "/abs/wh", "s3://b/wh", "file:/x")] == [
        f"file://{tmp_path.resolve()}/wh",
        "file:///abs/wh",
        "s3://b/wh",
        "file:/x",
    ]


def test_spark_conf_delta_beside_iceberg_puts_delta_extension_first() -> None:
    settings = _settings({"name": "local", "type": "hadoop", "warehouse": "file:///data/warehouse"})

    conf = spark_conf(settings, formats=[TableFormat.ICEBERG, TableFormat.DELTA])

    # Iceberg 1.10's row-lineage rule breaks UPDATE on Delta tables unless Delta's rule runs
    # first (apache/iceberg#15040)
    assert conf["spark.sql.extensions"] == (
        "io.delta.sql.DeltaSparkSessionExtension,"
        "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    )
    assert conf["spark.sql.catalog.spark_catalog"] == (
        "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    )
    assert conf["spark.sql.catalog.local"] == "org.apache.iceberg.spark.SparkCatalog"


def _hudi_settings(jars_dir: Path | None = None, **pipelines: str) -> Settings:
    """Settings whose pipelines write the given formats, with an Iceberg catalog."""
    blocks = {
        name: {
            "source": {"bootstrap_servers": "127.0.0.1:9092", "topics": [name]},
            "decode": {"schema_file": "schemas/orders.avsc"},
            "sink": {"format": fmt, "table": f"shop.{name}", "location": f"/lake/{name}"},
            "dead_letter": {"table": f"shop.{name}_dlq", "location": f"/lake/{name}_dlq"},
            "checkpoint": f"/tmp/checkpoints/{name}",
        }
        for name, fmt in pipelines.items()
    }
    spark = {"jars_dir": str(jars_dir)} if jars_dir else {}
    return Settings.model_validate(
        {
            "spark": spark,
            "catalog": {"name": "local", "type": "hadoop", "warehouse": "/wh"},
            "pipelines": blocks,
        }
    )


def test_spark_conf_hudi_beside_the_iceberg_catalog(tmp_path: Path) -> None:
    for directory, name in (("spark", "kafka-clients-3.4.1.jar"), ("hudi", "hudi-bundle.jar")):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / name).write_text("")

    conf = spark_conf(_hudi_settings(tmp_path / "spark", orders="hudi"))

    classpath = (
        f"{(tmp_path / 'spark').resolve()}/kafka-clients-3.4.1.jar:"
        f"{(tmp_path / 'hudi').resolve()}/hudi-bundle.jar"
    )
    assert conf == {
        **DEFAULTS,
        # Iceberg's extension last: its parser then handles CALL (Iceberg's procedures)
        "spark.sql.extensions": "org.apache.spark.sql.hudi.HoodieSparkSessionExtension,"
        "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.kryo.registrator": "org.apache.spark.HoodieSparkKryoRegistrar",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.hudi.catalog.HoodieCatalog",
        # the Hudi bundle after the shared jars, only in sessions hosting Hudi
        "spark.driver.extraClassPath": classpath,
        "spark.executor.extraClassPath": classpath,
        "spark.sql.catalog.local": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.local.cache-enabled": "false",
        "spark.sql.catalog.local.type": "hadoop",
        "spark.sql.catalog.local.warehouse": "file:///wh",
    }


def test_spark_conf_hudi_without_its_jars_raises(tmp_path: Path) -> None:
    (tmp_path / "spark").mkdir()
    (tmp_path / "spark" / "kafka-clients-3.4.1.jar").write_text("")

    with pytest.raises(ConfigError) as info:
        spark_conf(_hudi_settings(tmp_path / "spark", orders="hudi"))

    assert str(info.value) == (
        f"spark.jars_dir: expected the Maven-resolved hudi jars in {tmp_path / 'hudi'} "
        "(beside it), found none (run `make jars`)"
    )


def test_spark_conf_refuses_hudi_and_delta_in_one_session() -> None:
    settings = _hudi_settings(orders="hudi", payments="delta", refunds="hudi")

    with pytest.raises(ConfigError) as info:
        spark_conf(settings)

    assert str(info.value) == (
        "pipelines.orders.sink.format (hudi), pipelines.payments.sink.format (delta), "
        "pipelines.refunds.sink.format (hudi): one Spark session cannot host delta and hudi "
        "tables (both replace the session catalog, spark.sql.catalog.spark_catalog); run "
        "these pipelines as separate jobs"
    )
    # the same pipelines as two jobs are fine as far as this rule goes
    check_one_session(settings, formats_used(settings, ["orders", "refunds"]))
