"""The Hudi sink's datasource options, per table kind (no Spark needed)."""

from __future__ import annotations

import pytest

from etl.config import MaintenanceSettings, PartitionField, PartitionTransform
from etl.exceptions import SinkError
from etl.formats import CommitInfo, TableSpec
from etl.formats.base import UpsertSpec
from etl.formats.hudi import HudiSink

COMMON = {
    "hoodie.table.name": "orders",
    "hoodie.database.name": "shop",
    "hoodie.datasource.write.hive_style_partitioning": "true",
    "hoodie.datasource.write.commitmeta.key.prefix": "etl.",
    "hoodie.write.record.merge.mode": "COMMIT_TIME_ORDERING",
}


def test_write_options_append_table_has_no_key_and_carries_the_commit() -> None:
    sink = HudiSink(
        TableSpec(
            "shop.orders",
            (PartitionField("ingested_at", PartitionTransform.DAY),),
            location="s3://lake/orders/",
        )
    )

    assert sink.write_options("insert", CommitInfo("p", "q", 3, {"etl.note": "x"})) == {
        **COMMON,
        "hoodie.datasource.write.operation": "insert",
        "hoodie.datasource.write.table.type": "COPY_ON_WRITE",
        # day(ingested_at) is written as a derived column
        "hoodie.datasource.write.partitionpath.field": "_etl_day_ingested_at",
        # no index reads the footers' bloom filters of an append table
        "hoodie.parquet.bloom.filter.enabled": "false",
        "hoodie.index.bloom.num_entries": "1000",
        "etl.pipeline": "p",
        "etl.query-id": "q",
        "etl.batch-id": "3",
        "etl.note": "x",
    }


@pytest.mark.parametrize(
    ("options", "table_type", "index"),
    [
        ({}, "COPY_ON_WRITE", "RECORD_INDEX"),
        ({"table_type": "MERGE_ON_READ"}, "MERGE_ON_READ", "RECORD_INDEX"),
        (
            {"table_type": "MERGE_ON_READ", "index": "GLOBAL_SIMPLE"},
            "MERGE_ON_READ",
            "GLOBAL_SIMPLE",
        ),
        ({"index": "GLOBAL_BLOOM"}, "COPY_ON_WRITE", "GLOBAL_BLOOM"),
    ],
)
def test_write_options_upsert_table_writes_in_commit_time_order(
    options: dict[str, str], table_type: str, index: str
) -> None:
    sink = HudiSink(
        TableSpec(
            "shop.orders",
            (PartitionField("region"),),
            upsert=UpsertSpec(("tenant", "order_id"), "updated_ts"),
            options={**options, "compaction_delta_commits": 4},
            location="s3://lake/orders",
        )
    )

    expected = {
        **COMMON,
        "hoodie.datasource.write.operation": "upsert",
        "hoodie.datasource.write.table.type": table_type,
        "hoodie.datasource.write.recordkey.field": "tenant,order_id",
        "hoodie.datasource.write.partitionpath.field": "region",
        "hoodie.index.type": index,
        "hoodie.metadata.record.index.enable": str(index == "RECORD_INDEX").lower(),
        "hoodie.write.set.null.for.missing.columns": "true",
        "hoodie.combine.before.upsert": "false",
        "hoodie.record.index.update.partition.path": "true",
        "hoodie.simple.index.update.partition.path": "true",
        "hoodie.bloom.index.update.partition.path": "true",
        # bloom filters in the Parquet footers only for the bloom indexes, which read them
        "hoodie.parquet.bloom.filter.enabled": str("BLOOM" in index).lower(),
    }
    if "BLOOM" not in index:
        expected["hoodie.index.bloom.num_entries"] = "1000"
    if table_type == "MERGE_ON_READ":
        expected |= {
            "hoodie.compact.inline": "true",
            "hoodie.compact.inline.max.delta.commits": "4",
            "hoodie.parquet.small.file.limit": "0",
        }
    assert sink.write_options("upsert") == expected


def test_hudi_sink_refuses_what_hudi_cannot_express() -> None:
    with pytest.raises(SinkError, match=r"shop\.orders: a hudi table .* has a location"):
        HudiSink(TableSpec("shop.orders"))
    with pytest.raises(SinkError, match=r"bucket\(customer_id\): Hudi partitions by columns"):
        HudiSink(
            TableSpec(
                "shop.orders",
                (PartitionField("customer_id", PartitionTransform.BUCKET, 16),),
                location="/lake/orders",
            )
        )
    sink = HudiSink(TableSpec("shop.orders", location="/lake/orders"))
    with pytest.raises(SinkError, match=r"must start with 'etl\.' .* found \['note'\]"):
        sink.write_options("insert", CommitInfo("p", "q", 0, {"note": "x"}))


@pytest.mark.parametrize(
    ("table_type", "upsert", "widens"),
    [
        ("COPY_ON_WRITE", True, True),
        ("MERGE_ON_READ", False, True),
        ("MERGE_ON_READ", True, False),
    ],
)
def test_hudi_sink_widens_types_except_merge_on_read_upserts(
    table_type: str, upsert: bool, widens: bool
) -> None:
    # a schema version that widens a column is then dead-lettered, not a failed commit
    sink = HudiSink(
        TableSpec(
            "shop.orders",
            upsert=UpsertSpec(("order_id",), "updated_ts") if upsert else None,
            options={"table_type": table_type},
            location="/lake/orders",
        )
    )

    assert sink.widens_types is widens


def test_write_options_glue_sync_registers_table_and_partitions() -> None:
    sink = HudiSink(
        TableSpec(
            "shop.customers",
            (PartitionField("region"), PartitionField("signup_ts", PartitionTransform.MONTH)),
            options={"glue_sync": True},
            location="s3://lake/customers",
        )
    )

    options = sink.write_options("insert")

    assert {k: v for k, v in options.items() if "sync" in k} == {
        "hoodie.datasource.meta.sync.enable": "true",
        "hoodie.meta.sync.client.tool.class": "org.apache.hudi.aws.sync.AwsGlueCatalogSyncTool",
        "hoodie.datasource.hive_sync.database": "shop",
        "hoodie.datasource.hive_sync.table": "customers",
        "hoodie.datasource.hive_sync.partition_fields": "region,_etl_month_signup_ts",
        "hoodie.datasource.hive_sync.partition_extractor_class": (
            "org.apache.hudi.hive.MultiPartKeysValueExtractor"
        ),
    }
    # off by default: nothing to sync to outside AWS
    assert not any(
        "sync" in k for k in HudiSink(TableSpec("a.b", location="/x")).write_options("insert")
    )


def test_write_options_run_the_table_services_the_maintenance_section_asks_for() -> None:
    maintenance = MaintenanceSettings.model_validate(
        {
            "compact": {"target_file_size_mb": 64, "sort_by": ["customer_id"]},
            "expire": {"retain_last": 25},
        }
    )
    sink = HudiSink(
        TableSpec(
            "shop.orders",
            options={"clustering_commits": 6},
            location="/lake/orders",
            maintenance=maintenance,
        )
    )

    options = sink.write_options("insert")

    assert {k: v for k, v in options.items() if "clean" in k or "keep" in k or "layout" in k} | {
        k: v for k, v in options.items() if k.startswith("hoodie.clustering")
    } == {
        "hoodie.clean.automatic": "true",
        "hoodie.cleaner.policy": "KEEP_LATEST_COMMITS",
        "hoodie.cleaner.commits.retained": "25",
        # the timeline keeps more instants than the cleaner retains commits
        "hoodie.keep.min.commits": "26",
        "hoodie.keep.max.commits": "36",
        "hoodie.clustering.inline": "true",
        "hoodie.clustering.inline.max.commits": "6",
        "hoodie.clustering.plan.strategy.target.file.max.bytes": str(64 * 1024 * 1024),
        "hoodie.clustering.plan.strategy.small.file.limit": str(48 * 1024 * 1024),
        "hoodie.clustering.plan.strategy.sort.columns": "customer_id",
        "hoodie.layout.optimize.strategy": "linear",
    }
    disabled = MaintenanceSettings.model_validate(
        {"compact": {"enabled": False}, "expire": {"enabled": False}}
    )
    off = HudiSink(TableSpec("shop.orders", location="/lake/orders", maintenance=disabled))
    assert off.write_options("insert")["hoodie.clean.automatic"] == "false"
    assert "hoodie.clustering.inline" not in off.write_options("insert")
