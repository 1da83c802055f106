"""Settings: YAML parsing, ETL__ env overrides, validation errors naming dotted keys."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from etl.config import (
    AuthMode,
    PartitionField,
    PartitionTransform,
    PipelineSettings,
    Settings,
    load_settings,
)
from etl.exceptions import ConfigError
from tests.conftest import REPO

CONF = REPO / "conf"

# every KafkaAuth field at its default, as model_dump(mode="json") renders it
AUTH_DEFAULTS: dict[str, Any] = {
    "mode": "plaintext",
    "username": None,
    "password_env": None,
    "secret_id": None,
    "tls": True,
    "role_arn": None,
    "role_session_name": None,
    "sts_region": None,
    "profile": None,
    "truststore_location": None,
    "keystore_location": None,
    "keystore_password_env": None,
}
MSK_IAM_BOOTSTRAP = (
    "b-1.mycluster.abc123.c2.kafka.us-east-1.amazonaws.com:9098,"
    "b-2.mycluster.abc123.c2.kafka.us-east-1.amazonaws.com:9098"
)

# what a sink section dumps to beyond the keys the shipped files set
SINK_DEFAULTS: dict[str, Any] = {
    "location": None,
    "mode": "append",
    "key": [],
    "ordering": None,
    "deletes": None,
    "iceberg": None,
    "hudi": None,
    "delta": None,
}


def privacy(**fields: Any) -> dict[str, Any]:
    """A pipeline's privacy section as dumped: the defaults, then ``fields``."""
    return {
        "subject_fields": ["customer_id", "customer_email"],
        "key_is_subject": False,
        "salt_env": "ETL_PRIVACY_SALT",
        "salt_secret_id": None,
        "forget_table": None,
        "audit_table": None,
        **fields,
    }


def maintenance(**sections: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's maintenance section as dumped: the defaults, then ``sections``' keys."""
    dumped: dict[str, Any] = {
        "compact": {
            "enabled": True,
            "schedule": "0 */6 * * *",
            "target_file_size_mb": 128,
            "min_input_files": 5,
            "sort_by": [],
            "zorder": False,
            "where": None,
        },
        "expire": {
            "enabled": True,
            "schedule": "30 2 * * *",
            "older_than_hours": 168.0,
            "retain_last": 10,
        },
        "orphans": {"enabled": True, "schedule": "0 4 * * 0", "older_than_hours": 72.0},
        "log_table": None,
    }
    for name, keys in sections.items():
        dumped[name] = {**dumped[name], **keys}
    return dumped


LOCAL_ORDERS: dict[str, Any] = {
    "source": {
        "bootstrap_servers": "127.0.0.1:9092",
        "topics": ["orders"],
        "topic_pattern": None,
        "starting_offsets": "earliest",
        "max_offsets_per_trigger": 50000,
        "min_offsets_per_trigger": None,
        "max_trigger_delay": None,
        "min_partitions": None,
        "fail_on_data_loss": True,
        "consumer_group": None,
        "commit_offsets": True,
        "auth": AUTH_DEFAULTS,
        "options": {},
    },
    "decode": {
        "wire_format": "glue",
        "schema_file": "schemas/orders.avsc",
        "schema_name": None,
        "confluent_schemas": {},
        "max_value_bytes": 8 * 1024 * 1024,
    },
    "sink": {
        **SINK_DEFAULTS,
        "format": "iceberg",
        "table": "local.shop.orders",
        "partition_by": ["days(order_ts)"],
        "properties": {"format-version": "2", "write.parquet.compression-codec": "zstd"},
    },
    "dead_letter": {"table": "local.shop.orders_dlq", "location": None},
    "checkpoint": ".checkpoints/orders",
    "trigger": {"mode": "available_now", "interval": "30 seconds"},
    "expectations": [],
    "maintenance": maintenance(compact={"sort_by": ["customer_id"]}),
    "privacy": privacy(),
}


def _minimal() -> dict[str, Any]:
    """A small valid config (one pipeline) that tests mutate before writing."""
    return {
        "catalog": {"type": "hadoop", "warehouse": "wh"},
        "pipelines": {
            "orders": {
                "source": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["orders"]},
                "decode": {"schema_file": "schemas/orders.avsc"},
                "sink": {"table": "local.shop.orders"},
                "dead_letter": {"table": "local.shop.orders_dlq"},
                "checkpoint": "/tmp/checkpoints/orders",
            }
        },
    }


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _orders(config: dict[str, Any]) -> dict[str, Any]:
    pipeline: dict[str, Any] = config["pipelines"]["orders"]
    return pipeline


def _delta(config: dict[str, Any], **sink: Any) -> dict[str, Any]:
    """Turns the orders pipeline into a valid Delta one, then applies ``sink`` keys."""
    pipeline = _orders(config)
    pipeline["sink"].update(format="delta", table="shop.orders", location="/lake/orders")
    pipeline["dead_letter"].update(table="shop.orders_dlq", location="/lake/orders_dlq")
    pipeline["sink"].update(sink)
    return pipeline


# --- parsing the shipped files -------------------------------------------------------------


def test_load_settings_local_yaml_parses_every_value() -> None:
    settings = load_settings(CONF / "local.yaml", env={})
    dumped = settings.model_dump(mode="json")
    # the demo's upsert tables of the same events: the append pipeline's, in another format
    for name, fmt in (("orders_hudi", "hudi"), ("orders_delta", "delta")):
        upsert = dumped["pipelines"].pop(name)
        assert upsert["source"] == LOCAL_ORDERS["source"]
        assert upsert["decode"] == LOCAL_ORDERS["decode"]
        assert {k: upsert["sink"][k] for k in ("format", "mode", "key", "ordering", "deletes")} == {
            "format": fmt,
            "mode": "upsert",
            "key": ["order_id"],
            "ordering": "updated_ts",
            "deletes": {"field": None, "equals": None, "tombstones": True},
        }
        assert (upsert["sink"]["location"], upsert["checkpoint"]) == (
            f".lake/{fmt}/orders",
            f".checkpoints/{name}",
        )

    assert dumped.pop("deploy") is None
    assert dumped == {
        "spark": {
            "app_name": "streaming-etl-local",
            "master": "local[2]",
            "jars_dir": ".jars/spark",
            "shuffle_partitions": 4,
            "ui_enabled": False,
            "conf": {},
        },
        "catalog": {
            "name": "local",
            "type": "hadoop",
            "uri": None,
            "warehouse": ".warehouse",
            "properties": {},
        },
        "aws": {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:5000", "profile": None},
        "registry": {
            "registry_name": "etl-local",
            "max_attempts": 4,
            "connect_timeout_s": 5.0,
            "read_timeout_s": 10.0,
        },
        "pipelines": {"orders": LOCAL_ORDERS},
    }


def test_load_settings_local_yaml_gives_typed_values() -> None:
    pipeline = load_settings(CONF / "local.yaml", env={}).pipeline("orders")

    assert (pipeline.source.auth.mode, pipeline.decode.schema_file) == (
        AuthMode.PLAINTEXT,
        Path("schemas/orders.avsc"),
    )


def test_load_settings_emr_yaml_two_msk_iam_pipelines_on_glue_catalog() -> None:
    settings = load_settings(CONF / "emr.yaml", env={})
    dumped = settings.model_dump(mode="json")
    customers = dumped["pipelines"].pop("customers")  # the Hudi pipeline: its own test

    assert customers["sink"] == {
        **SINK_DEFAULTS,
        "format": "hudi",
        "table": "crm.customers",
        "location": "s3://my-lake/hudi/crm/customers",
        "partition_by": [],
        "properties": {},
        "mode": "upsert",
        "key": ["customer_id"],
        "ordering": "updated_at",
        "deletes": {"field": "op", "equals": "d", "tombstones": True},
        "hudi": {
            "table_type": "MERGE_ON_READ",
            "compaction_delta_commits": 5,
            "index": "RECORD_INDEX",
            "glue_sync": True,
            "clustering_commits": 10,
        },
    }
    assert dumped.pop("deploy") == {
        "artifacts": "s3://my-artifacts/streaming-etl/0.1.0",
        "name_prefix": "",
        "emr": {"cluster_id": "j-2AXXXXXXGAPLF"},
        "emr_serverless": {
            "application_id": "00fabcdexample0x",
            "execution_role_arn": "arn:aws:iam::123456789012:role/streaming-etl-emr-serverless",
            "python_archive": "s3://my-artifacts/streaming-etl/0.1.0/pyspark_venv.tar.gz",
            "log_uri": "s3://my-lake/logs/emr-serverless",
        },
        "glue": None,
        "scheduler": {
            "role_arn": "arn:aws:iam::123456789012:role/streaming-etl-scheduler",
            "group_name": "streaming-etl",
        },
    }
    assert dumped == {
        "spark": {
            "app_name": "streaming-etl",
            "master": None,
            "jars_dir": None,
            "shuffle_partitions": 64,
            "ui_enabled": True,
            "conf": {"spark.sql.streaming.metricsEnabled": "true"},
        },
        "catalog": {
            "name": "lake",
            "type": "glue",
            "uri": None,
            "warehouse": "s3://my-lake/warehouse",
            "properties": {},
        },
        "aws": {"region": "us-east-1", "endpoint_url": None, "profile": None},
        "registry": {
            "registry_name": "streaming-etl",
            "max_attempts": 5,
            "connect_timeout_s": 5.0,
            "read_timeout_s": 10.0,
        },
        "pipelines": {
            "orders": {
                "source": {
                    "bootstrap_servers": MSK_IAM_BOOTSTRAP,
                    "topics": ["orders"],
                    "topic_pattern": None,
                    "starting_offsets": "earliest",
                    "max_offsets_per_trigger": 500000,
                    "min_offsets_per_trigger": None,
                    "max_trigger_delay": None,
                    "min_partitions": None,
                    "fail_on_data_loss": True,
                    "consumer_group": None,
                    "commit_offsets": True,
                    "auth": {**AUTH_DEFAULTS, "mode": "iam"},
                    "options": {"kafka.request.timeout.ms": "60000"},
                },
                "decode": {
                    "wire_format": "glue",
                    "schema_file": None,
                    "schema_name": "orders",
                    "confluent_schemas": {},
                    "max_value_bytes": 8 * 1024 * 1024,
                },
                "sink": {
                    **SINK_DEFAULTS,
                    "format": "iceberg",
                    "table": "lake.shop.orders",
                    "partition_by": ["days(order_ts)"],
                    "properties": {
                        "format-version": "2",
                        "write.parquet.compression-codec": "zstd",
                    },
                },
                "dead_letter": {"table": "lake.shop.orders_dlq", "location": None},
                "checkpoint": "s3://my-lake/checkpoints/orders",
                "trigger": {"mode": "processing_time", "interval": "1 minute"},
                "expectations": [],
                "maintenance": maintenance(
                    compact={
                        "schedule": "15 */4 * * *",
                        "where": "order_ts < current_date()",
                        "sort_by": ["customer_id"],
                    },
                    expire={"schedule": "45 1 * * *", "older_than_hours": 72.0, "retain_last": 20},
                ),
                "privacy": privacy(salt_secret_id="etl/privacy-salt"),
            },
            "payments": {
                "source": {
                    "bootstrap_servers": MSK_IAM_BOOTSTRAP,
                    "topics": None,
                    "topic_pattern": r"^payments\.(card|bank)$",
                    "starting_offsets": "earliest",
                    "max_offsets_per_trigger": 200000,
                    "min_offsets_per_trigger": 10000,
                    "max_trigger_delay": "5m",
                    "min_partitions": None,
                    "fail_on_data_loss": True,
                    "consumer_group": None,
                    "commit_offsets": True,
                    "auth": {
                        **AUTH_DEFAULTS,
                        "mode": "iam",
                        "role_arn": "arn:aws:iam::123456789012:role/msk-payments-consumer",
                        "role_session_name": "streaming-etl-payments",
                        "sts_region": "us-east-1",
                    },
                    "options": {},
                },
                "decode": {
                    "wire_format": "glue",
                    "schema_file": None,
                    "schema_name": "payments",
                    "confluent_schemas": {},
                    "max_value_bytes": 8 * 1024 * 1024,
                },
                "sink": {
                    **SINK_DEFAULTS,
                    "format": "iceberg",
                    "table": "lake.finance.payments",
                    "partition_by": ["days(paid_at)"],
                    "properties": {"format-version": "2"},
                },
                "dead_letter": {"table": "lake.finance.payments_dlq", "location": None},
                "checkpoint": "s3://my-lake/checkpoints/payments",
                "trigger": {"mode": "processing_time", "interval": "5 minutes"},
                "expectations": [],
                "maintenance": maintenance(),
                "privacy": None,
            },
        },
    }


def test_load_settings_glue_yaml_msk_iam_pipeline_on_glue_catalog() -> None:
    settings = load_settings(CONF / "glue.yaml", env={})
    dumped = settings.model_dump(mode="json")
    customers = dumped["pipelines"].pop("customers")  # the Delta pipeline: its own test

    assert (customers["sink"]["format"], customers["sink"]["mode"], customers["sink"]["key"]) == (
        "delta",
        "upsert",
        ["customer_id"],
    )
    assert customers["dead_letter"] == {
        "table": "crm.customers_dlq",
        "location": "s3://my-lake/delta/crm/customers_dlq",
    }
    assert dumped.pop("deploy") == {
        "artifacts": "s3://my-artifacts/streaming-etl/0.1.0",
        "name_prefix": "",
        "emr": None,
        "emr_serverless": None,
        "glue": {
            "role": "streaming-etl-glue",
            "glue_version": "5.0",
            "worker_type": "G.1X",
            "number_of_workers": 4,
            "connections": ["msk-vpc"],
            "max_concurrent_runs": 1,
        },
        "scheduler": None,
    }
    assert dumped == {
        "spark": {
            "app_name": "streaming-etl-glue",
            "master": None,
            "jars_dir": None,
            "shuffle_partitions": 32,
            "ui_enabled": True,
            "conf": {},
        },
        "catalog": {
            "name": "lake",
            "type": "glue",
            "uri": None,
            "warehouse": "s3://my-lake/warehouse",
            "properties": {},
        },
        "aws": {"region": "us-east-1", "endpoint_url": None, "profile": None},
        "registry": {
            "registry_name": "streaming-etl",
            "max_attempts": 5,
            "connect_timeout_s": 5.0,
            "read_timeout_s": 10.0,
        },
        "pipelines": {
            "orders": {
                "source": {
                    "bootstrap_servers": MSK_IAM_BOOTSTRAP,
                    "topics": ["orders", "orders_backfill"],
                    "topic_pattern": None,
                    "starting_offsets": "earliest",
                    "max_offsets_per_trigger": 500000,
                    "min_offsets_per_trigger": None,
                    "max_trigger_delay": None,
                    "min_partitions": 96,
                    "fail_on_data_loss": True,
                    "consumer_group": None,
                    "commit_offsets": True,
                    "auth": {**AUTH_DEFAULTS, "mode": "iam"},
                    "options": {},
                },
                "decode": {
                    "wire_format": "glue",
                    "schema_file": None,
                    "schema_name": "orders",
                    "confluent_schemas": {},
                    "max_value_bytes": 8 * 1024 * 1024,
                },
                "sink": {
                    **SINK_DEFAULTS,
                    "format": "iceberg",
                    "table": "lake.shop.orders",
                    "partition_by": ["days(order_ts)"],
                    "properties": {
                        "format-version": "2",
                        "write.parquet.compression-codec": "zstd",
                    },
                },
                "dead_letter": {"table": "lake.shop.orders_dlq", "location": None},
                "checkpoint": "s3://my-lake/checkpoints/orders",
                "trigger": {"mode": "processing_time", "interval": "1 minute"},
                "expectations": [],
                "maintenance": maintenance(),
                "privacy": privacy(salt_secret_id="etl/privacy-salt"),
            }
        },
    }


# --- ETL__ env overrides -------------------------------------------------------------------


def test_load_settings_env_overrides_nested_pipeline_key() -> None:
    settings = load_settings(
        CONF / "local.yaml",
        env={"ETL__PIPELINES__ORDERS__SOURCE__BOOTSTRAP_SERVERS": "b-1.msk:9098"},
    )

    # only that key changes: the rest of the pipeline still comes from the file
    expected = copy.deepcopy(LOCAL_ORDERS)
    expected["source"]["bootstrap_servers"] = "b-1.msk:9098"
    assert settings.pipeline("orders").model_dump(mode="json") == expected


def test_load_settings_env_overrides_nested_auth_block() -> None:
    settings = load_settings(
        CONF / "local.yaml",
        env={
            "ETL__PIPELINES__ORDERS__SOURCE__AUTH__MODE": "scram",
            "ETL__PIPELINES__ORDERS__SOURCE__AUTH__SECRET_ID": "AmazonMSK_etl",
            "ETL__PIPELINES__ORDERS__SOURCE__FAIL_ON_DATA_LOSS": "false",
            "ETL__PIPELINES__ORDERS__SOURCE__MAX_OFFSETS_PER_TRIGGER": "10",
        },
    )

    source = settings.pipeline("orders").source
    assert source.model_dump(mode="json") == {
        **LOCAL_ORDERS["source"],
        "max_offsets_per_trigger": 10,
        "fail_on_data_loss": False,
        "consumer_group": None,
        "commit_offsets": True,
        "auth": {**AUTH_DEFAULTS, "mode": "scram", "secret_id": "AmazonMSK_etl"},
    }


def test_load_settings_env_overrides_top_level_section_key() -> None:
    settings = load_settings(
        CONF / "local.yaml",
        env={
            "ETL__AWS__ENDPOINT_URL": "http://127.0.0.1:45678",
            "ETL__REGISTRY__MAX_ATTEMPTS": "9",
        },
    )

    assert (settings.aws.model_dump(), settings.registry.model_dump()) == (
        {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:45678", "profile": None},
        {
            "registry_name": "etl-local",
            "max_attempts": 9,
            "connect_timeout_s": 5.0,
            "read_timeout_s": 10.0,
        },
    )


def test_load_settings_env_top_level_json_object_merges_into_file_section() -> None:
    settings = load_settings(CONF / "local.yaml", env={"ETL__AWS": '{"region": "eu-west-1"}'})

    # deep-merged with the file's aws block, not replacing it
    assert settings.aws.model_dump() == {
        "region": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:5000",
        "profile": None,
    }


def test_load_settings_env_keys_are_case_insensitive() -> None:
    settings = load_settings(CONF / "local.yaml", env={"etl__aws__region": "eu-central-1"})

    assert settings.aws.region == "eu-central-1"


def test_load_settings_env_list_given_as_json_array() -> None:
    settings = load_settings(
        CONF / "local.yaml",
        env={"ETL__PIPELINES__ORDERS__SOURCE__TOPICS": '["orders", "orders_retry"]'},
    )

    assert settings.pipeline("orders").source.topics == ["orders", "orders_retry"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("orders,orders_retry", id="comma-separated"),
        pytest.param("[orders, orders_retry]", id="yaml-flow-list"),
        pytest.param('"orders"', id="json-string"),
    ],
)
def test_load_settings_env_list_not_a_json_array_is_rejected(value: str) -> None:
    # pydantic-settings JSON-decodes env values of complex fields; for `list[str] | None` a
    # decoding failure keeps the raw string, which then fails list validation
    path = CONF / "local.yaml"

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"ETL__PIPELINES__ORDERS__SOURCE__TOPICS": value})

    assert str(info.value) == (
        f"config file {path} is invalid:\n"
        "  pipelines.orders.source.topics: Input should be a valid list"
    )


def test_load_settings_env_json_null_clears_a_list_key() -> None:
    settings = load_settings(
        CONF / "local.yaml",
        env={
            "ETL__PIPELINES__ORDERS__SOURCE__TOPICS": "null",
            "ETL__PIPELINES__ORDERS__SOURCE__TOPIC_PATTERN": "orders.*",
        },
    )

    source = settings.pipeline("orders").source
    assert (source.topics, source.topic_pattern) == (None, "orders.*")


def test_load_settings_env_null_clears_an_optional_scalar_key() -> None:
    settings = load_settings(CONF / "local.yaml", env={"ETL__AWS__ENDPOINT_URL": "null"})

    assert settings.aws.endpoint_url is None


def test_load_settings_env_invalid_value_names_the_dotted_key() -> None:
    path = CONF / "local.yaml"

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"ETL__REGISTRY__MAX_ATTEMPTS": "0"})

    assert str(info.value) == (
        f"config file {path} is invalid:\n"
        "  registry.max_attempts: Input should be greater than or equal to 1"
    )


def test_load_settings_env_unknown_nested_key_is_rejected() -> None:
    path = CONF / "local.yaml"

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={"ETL__PIPELINES__ORDERS__SOURCE__BOOTSTRAP_SERVER": "x:9092"})

    assert str(info.value) == (
        f"config file {path} is invalid:\n"
        "  pipelines.orders.source.bootstrap_server: Extra inputs are not permitted"
    )


def test_load_settings_env_non_json_list_error_names_the_dotted_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            CONF / "local.yaml", env={"ETL__PIPELINES__ORDERS__SINK__PARTITION_BY": "a,b"}
        )

    assert "pipelines.orders.sink.partition_by" in str(info.value)


def test_load_settings_without_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL__PIPELINES__ORDERS__CHECKPOINT", "s3://bucket/checkpoints/orders")

    settings = load_settings(CONF / "local.yaml")

    assert settings.pipeline("orders").checkpoint == "s3://bucket/checkpoints/orders"


def test_load_settings_env_mapping_ignores_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL__PIPELINES__ORDERS__CHECKPOINT", "s3://bucket/checkpoints/orders")

    settings = load_settings(CONF / "local.yaml", env={})

    assert settings.pipeline("orders").checkpoint == ".checkpoints/orders"


# --- validation errors name the dotted key -------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]

INVALID: list[Any] = [
    pytest.param(
        lambda c: _orders(c)["sink"].pop("table"),
        ["pipelines.orders.sink.table: Field required"],
        id="missing-required-key",
    ),
    pytest.param(
        lambda c: c.pop("catalog"),
        ["catalog: pipelines.orders writes iceberg, which needs a `catalog` section (found none)"],
        id="iceberg-without-catalog",
    ),
    pytest.param(
        lambda c: c.pop("pipelines"),
        ["pipelines: Field required"],
        id="missing-top-level-section",
    ),
    pytest.param(
        lambda c: c["catalog"].pop("type"),
        ["catalog.type: Field required"],
        id="catalog-type-has-no-default",
    ),
    pytest.param(
        lambda c: c["catalog"].update(type="jdbc", uri="jdbc:sqlite:catalog.db"),
        [
            "catalog: Value error, catalog type jdbc on SQLite is not supported (Iceberg's "
            "JDBC catalog locks it); use type hadoop for a local warehouse, or a "
            "PostgreSQL/MySQL uri"
        ],
        id="jdbc-catalog-on-sqlite",
    ),
    pytest.param(
        lambda c: c["catalog"].update(warehouse="s3://lake/wh"),
        [
            "catalog: Value error, catalog type hadoop needs atomic renames, which S3 lacks: "
            "use type glue for an s3 warehouse (found 's3://lake/wh')"
        ],
        id="hadoop-catalog-on-s3",
    ),
    pytest.param(
        lambda c: _orders(c)["dead_letter"].update(table="local.shop.orders"),
        [
            "pipelines.orders.dead_letter.table: expected its own table, found the one of "
            "pipelines.orders.sink.table"
        ],
        id="dead-letters-in-the-sink-table",
    ),
    pytest.param(
        lambda c: c["pipelines"].update(
            refunds={
                **_orders(c),
                "sink": {"table": "local.shop.refunds"},
                "dead_letter": {"table": "local.shop.refunds_dlq"},
                "checkpoint": "/tmp/refunds",
                "source": {**_orders(c)["source"], "consumer_group": "streaming-etl.orders"},
            }
        ),
        [
            "pipelines.refunds.source.consumer_group: expected its own consumer_group, found "
            "the one of pipelines.orders.source.consumer_group"
        ],
        id="two-pipelines-one-consumer-group",
    ),
    pytest.param(
        lambda c: _orders(c).update(
            sink={"format": "hudi", "table": "shop.orders", "location": "/lake/orders"},
            dead_letter={"table": "shop.orders_dlq"},
        ),
        ["pipelines.orders.dead_letter.location: a hudi table needs a location (found none)"],
        id="hudi-table-without-location",
    ),
    pytest.param(
        lambda c: _orders(c).update(
            sink={
                "format": "hudi",
                "table": "shop.orders",
                "location": "/lake/orders",
                "partition_by": ["order_date", "bucket(16, customer_id)"],
            },
            dead_letter={"table": "shop.orders_dlq", "location": "/lake/orders_dlq"},
        ),
        [
            "pipelines.orders.sink.partition_by: Value error, expected a column or "
            "year/month/day/hour(column) for a hudi table, found 'bucket(16, customer_id)'"
        ],
        id="hudi-partition-transform-it-cannot-express",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(mode="upsert", key=["order_id"]),
        [
            "pipelines.orders.sink: Value error, mode upsert needs `key` (one or more fields) "
            "and `ordering`"
        ],
        id="upsert-without-ordering",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(key=["order_id"]),
        [
            "pipelines.orders.sink: Value error, `key`, `ordering` and `deletes` apply to "
            "mode upsert only"
        ],
        id="key-on-an-append-table",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(
            mode="upsert", key=["a", "b"], ordering="ts", deletes={"tombstones": True}
        ),
        [
            "pipelines.orders.sink: Value error, deletes.tombstones needs a single key "
            "field, found 2"
        ],
        id="tombstones-with-a-composite-key",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(
            mode="upsert", key=["a"], ordering="ts", deletes={"field": "op"}
        ),
        [
            "pipelines.orders.sink.deletes: Value error, `field` and `equals` go together "
            "(found only one)"
        ],
        id="delete-marker-without-value",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(hudi={"table_type": "MERGE_ON_READ"}),
        [
            "pipelines.orders.sink: Value error, `hudi` options apply to format hudi, found "
            "format iceberg"
        ],
        id="options-of-another-format",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(iceberg={"write_mode": "merge-on-read", "x": 1}),
        ["pipelines.orders.sink.iceberg.x: Extra inputs are not permitted"],
        id="unknown-format-option",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(partition_by=["days(order_ts, 3)"]),
        [
            "pipelines.orders.sink.partition_by: Value error, expected a column or "
            "transform(column), e.g. days(order_ts), found 'days(order_ts, 3)'"
        ],
        id="malformed-partition",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(partition_by=["weeks(order_ts)"]),
        [
            "pipelines.orders.sink.partition_by: Value error, expected a transform among "
            "bucket, day, days, hour, hours, month, months, truncate, year, years, found 'weeks'"
        ],
        id="unknown-partition-transform",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(partition_by=["bucket(customer_id)"]),
        [
            "pipelines.orders.sink.partition_by: Value error, expected bucket(N, column), "
            "found 'bucket(customer_id)'"
        ],
        id="bucket-without-count",
    ),
    pytest.param(
        lambda c: _delta(c, partition_by=["days(order_ts)", "bucket(16, customer_id)"]),
        [
            "pipelines.orders.sink.partition_by: Value error, expected a column or "
            "year/month/day/hour(column) for a delta table, found 'bucket(16, customer_id)'"
        ],
        id="delta-bucket-partition",
    ),
    pytest.param(
        lambda c: _delta(c, partition_by=["truncate(4, order_id)"]),
        [
            "pipelines.orders.sink.partition_by: Value error, expected a column or "
            "year/month/day/hour(column) for a delta table, found 'truncate(4, order_id)'"
        ],
        id="delta-truncate-partition",
    ),
    pytest.param(
        lambda c: _delta(c, location=None),
        ["pipelines.orders.sink.location: a delta table needs a location (found none)"],
        id="delta-without-location",
    ),
    pytest.param(
        lambda c: _delta(c, table="local.shop.orders"),
        [
            "pipelines.orders.sink.table: expected `database.table` for a delta table, "
            "found 'local.shop.orders'"
        ],
        id="delta-table-in-a-catalog",
    ),
    pytest.param(
        lambda c: _orders(c).update(expectations=[{"name": "Bad-Name", "expr": "x > 0"}]),
        [
            "pipelines.orders.expectations: Value error, expectation names are "
            "lower_snake_case, found 'Bad-Name'"
        ],
        id="expectation-name",
    ),
    pytest.param(
        lambda c: _orders(c).update(
            expectations=[{"name": "ok", "expr": "x > 0", "action": "drop", "level": 1}]
        ),
        ["pipelines.orders.expectations.0.level: Unexpected keyword argument"],
        id="expectation-unknown-key",
    ),
    pytest.param(
        lambda c: c.update(sparks={"master": "local[2]"}),
        ["sparks: Extra inputs are not permitted"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(partitions=["day"]),
        ["pipelines.orders.sink.partitions: Extra inputs are not permitted"],
        id="unknown-nested-key",
    ),
    pytest.param(
        # extra="forbid" is what keeps secrets out of YAML: there is no `password` key
        lambda c: _orders(c)["source"].update(
            auth={"mode": "scram", "username": "etl", "password": "hunter2"}
        ),
        ["pipelines.orders.source.auth.password: Extra inputs are not permitted"],
        id="inline-password",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(
            auth={"mode": "tls", "keystore_location": "/k.jks", "keystore_password": "hunter2"}
        ),
        ["pipelines.orders.source.auth.keystore_password: Extra inputs are not permitted"],
        id="inline-keystore-password",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(topic_pattern="orders.*"),
        [
            "pipelines.orders.source: Value error, exactly one of `topics` or `topic_pattern` "
            "must be set"
        ],
        id="both-topics-and-pattern",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].pop("topics"),
        [
            "pipelines.orders.source: Value error, exactly one of `topics` or `topic_pattern` "
            "must be set"
        ],
        id="neither-topics-nor-pattern",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(topics=[]),
        [
            "pipelines.orders.source: Value error, exactly one of `topics` or `topic_pattern` "
            "must be set"
        ],
        id="empty-topics",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(auth={"mode": "scram", "username": "etl"}),
        [
            "pipelines.orders.source.auth: Value error, scram needs `password_env` or "
            "`secret_id` (found neither)"
        ],
        id="scram-without-password-source",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(auth={"mode": "scram", "password_env": "PW"}),
        ["pipelines.orders.source.auth: Value error, scram with `password_env` needs `username`"],
        id="scram-password-env-without-username",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(auth={"mode": "kerberos"}),
        ["pipelines.orders.source.auth.mode: Input should be 'plaintext', 'tls', 'scram' or 'iam'"],
        id="unknown-auth-mode",
    ),
    pytest.param(
        lambda c: _orders(c)["source"].update(max_offsets_per_trigger=0),
        ["pipelines.orders.source.max_offsets_per_trigger: Input should be greater than 0"],
        id="non-positive-limit",
    ),
    pytest.param(
        lambda c: c["catalog"].update(type="jdbc"),
        ["catalog: Value error, catalog type jdbc needs `uri`"],
        id="jdbc-catalog-without-uri",
    ),
    pytest.param(
        lambda c: c["pipelines"].update(Orders=c["pipelines"].pop("orders")),
        ["pipelines: Value error, pipeline names are lower_snake_case, found 'Orders'"],
        id="upper-case-pipeline-name",
    ),
    pytest.param(
        lambda c: c["pipelines"].update({"order-events": c["pipelines"].pop("orders")}),
        ["pipelines: Value error, pipeline names are lower_snake_case, found 'order-events'"],
        id="dashed-pipeline-name",
    ),
    pytest.param(
        lambda c: c.update(pipelines={}),
        ["pipelines: Dictionary should have at least 1 item after validation, not 0"],
        id="no-pipelines",
    ),
    pytest.param(
        lambda c: _orders(c)["decode"].pop("schema_file"),
        [
            "pipelines.orders.decode: Value error, exactly one of `schema_file` or "
            "`schema_name` must be set"
        ],
        id="decode-neither-schema-file-nor-name",
    ),
    pytest.param(
        lambda c: _orders(c)["decode"].update(schema_name="orders"),
        [
            "pipelines.orders.decode: Value error, exactly one of `schema_file` or "
            "`schema_name` must be set"
        ],
        id="decode-both-schema-file-and-name",
    ),
    pytest.param(
        lambda c: _orders(c).update(decode={"wire_format": "confluent", "schema_name": "o"}),
        [
            "pipelines.orders.decode: Value error, wire_format confluent needs `schema_file` "
            "(no Confluent registry client)"
        ],
        id="confluent-without-schema-file",
    ),
    pytest.param(
        lambda c: _orders(c)["decode"].update(confluent_schemas={"seven": "v7.avsc"}),
        [
            "pipelines.orders.decode.confluent_schemas.seven.[key]: Input should be a valid "
            "integer, unable to parse string as an integer"
        ],
        id="confluent-id-not-an-integer",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(table="orders"),
        [
            "pipelines.orders.sink.table: expected `local.namespace.table` (the catalog's "
            "name first), found 'orders'"
        ],
        id="unqualified-sink-table",
    ),
    pytest.param(
        lambda c: _orders(c)["dead_letter"].update(table="shop.orders_dlq"),
        [
            "pipelines.orders.dead_letter.table: expected `local.namespace.table` (the "
            "catalog's name first), found 'shop.orders_dlq'"
        ],
        id="unqualified-dead-letter-table",
    ),
    pytest.param(
        lambda c: _orders(c)["sink"].update(table="other.shop.orders"),
        [
            "pipelines.orders.sink.table: expected `local.namespace.table` (the catalog's "
            "name first), found 'other.shop.orders'"
        ],
        id="table-in-another-catalog",
    ),
    pytest.param(
        # table property values are strings; YAML `2` is an int and is not coerced
        lambda c: _orders(c)["sink"].update(properties={"format-version": 2}),
        ["pipelines.orders.sink.properties.format-version: Input should be a valid string"],
        id="unquoted-number-in-string-map",
    ),
    pytest.param(
        lambda c: _orders(c).update(trigger={"mode": "once"}),
        ["pipelines.orders.trigger.mode: Input should be 'available_now' or 'processing_time'"],
        id="unknown-trigger-mode",
    ),
    pytest.param(
        lambda c: (_orders(c)["sink"].pop("table"), c["catalog"].update(type="jdbc")),
        [
            "catalog: Value error, catalog type jdbc needs `uri`",
            "pipelines.orders.sink.table: Field required",
        ],
        id="every-error-is-listed",
    ),
    pytest.param(
        lambda c: _orders(c).update(maintenance={"compact": {"schedule": "0 25 * * *"}}),
        [
            "pipelines.orders.maintenance.compact.schedule: Value error, expected a cron "
            "expression of five fields (minute hour day-of-month month day-of-week, e.g. "
            "'0 3 * * *') or one of @annually, @daily, @hourly, @monthly, @weekly, @yearly, "
            "found '0 25 * * *'"
        ],
        id="cron-hour-out-of-range",
    ),
    pytest.param(
        lambda c: _orders(c).update(maintenance={"expire": {"schedule": "0 0 3 * * *"}}),
        [
            "pipelines.orders.maintenance.expire.schedule: Value error, expected a cron "
            "expression of five fields (minute hour day-of-month month day-of-week, e.g. "
            "'0 3 * * *') or one of @annually, @daily, @hourly, @monthly, @weekly, @yearly, "
            "found '0 0 3 * * *'"
        ],
        id="cron-with-seconds",
    ),
    pytest.param(
        lambda c: _orders(c).update(maintenance={"orphans": {"older_than_hours": 2}}),
        [
            "pipelines.orders.maintenance.orphans.older_than_hours: Value error, expected at "
            "least 24 hours, found 2: a younger file may belong to a commit still in flight "
            "(a running micro-batch or compaction), and deleting it would corrupt that commit"
        ],
        id="orphan-age-below-the-floor",
    ),
    pytest.param(
        lambda c: _delta(c) and _orders(c).update(maintenance={"expire": {"older_than_hours": 1}}),
        [
            "pipelines.orders: Value error, maintenance.expire.older_than_hours: expected at "
            "least 24 hours for a delta table, found 1: VACUUM also deletes unreferenced files "
            "this old, and a younger one may belong to a commit still in flight"
        ],
        id="delta-vacuum-below-the-floor",
    ),
    pytest.param(
        lambda c: _orders(c).update(
            maintenance={"compact": {"zorder": True, "sort_by": ["customer_id"]}}
        ),
        [
            "pipelines.orders.maintenance.compact: Value error, zorder needs two or more "
            "`sort_by` columns, found 1"
        ],
        id="zorder-of-one-column",
    ),
    pytest.param(
        lambda c: _orders(c).update(maintenance={"expire": {"retain_last": 0}}),
        [
            "pipelines.orders.maintenance.expire.retain_last: Input should be greater than or "
            "equal to 1"
        ],
        id="retain-no-snapshot",
    ),
    pytest.param(
        lambda c: _orders(c).update(privacy={}),
        [
            "pipelines.orders.privacy: Value error, expected `subject_fields` (one or more) "
            "and/or `key_is_subject: true`, found neither"
        ],
        id="privacy-without-a-subject",
    ),
    pytest.param(
        lambda c: _orders(c).update(privacy={"subject_fields": ["customer.email"]}),
        [
            "pipelines.orders.privacy.subject_fields: Value error, expected top-level field "
            "names, found 'customer.email'"
        ],
        id="privacy-nested-subject-field",
    ),
    pytest.param(
        lambda c: _orders(c).update(privacy={"subject_fields": ["customer_id"], "salt": "x"}),
        ["pipelines.orders.privacy.salt: Extra inputs are not permitted"],
        id="privacy-salt-in-yaml",
    ),
]


@pytest.mark.parametrize(("mutate", "lines"), INVALID)
def test_load_settings_invalid_config_names_dotted_keys(
    tmp_path: Path, mutate: Mutation, lines: list[str]
) -> None:
    config = _minimal()
    mutate(config)
    path = _write(tmp_path, config)

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    assert str(info.value) == "\n".join(
        [f"config file {path} is invalid:", *(f"  {line}" for line in lines)]
    )
    assert isinstance(info.value.__cause__, ValidationError)


def test_load_settings_minimal_config_fills_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, _minimal()), env={})

    assert settings.pipeline("orders") == PipelineSettings.model_validate(
        {
            "source": {
                "bootstrap_servers": "127.0.0.1:9092",
                "topics": ["orders"],
                "starting_offsets": "earliest",
                "fail_on_data_loss": True,
                "auth": {"mode": "plaintext", "tls": True},
                "options": {},
            },
            "decode": {
                "wire_format": "glue",
                "schema_file": "schemas/orders.avsc",
                "max_value_bytes": 8388608,
            },
            "sink": {"format": "iceberg", "table": "local.shop.orders", "partition_by": []},
            "dead_letter": {"table": "local.shop.orders_dlq"},
            "checkpoint": "/tmp/checkpoints/orders",
            "trigger": {"mode": "processing_time", "interval": "30 seconds"},
            "expectations": [],
        }
    )


def test_load_settings_delta_pipeline_with_time_partitions(tmp_path: Path) -> None:
    config = _minimal()
    _delta(config, partition_by=["days(order_ts)", "currency"], delta={"deletion_vectors": True})

    sink = load_settings(_write(tmp_path, config), env={}).pipeline("orders").sink

    assert (sink.format, sink.table, sink.location) == ("delta", "shop.orders", "/lake/orders")
    assert sink.partition_fields == (
        PartitionField("order_ts", PartitionTransform.DAY),
        PartitionField("currency"),
    )
    assert sink.format_options == {"deletion_vectors": True}


@pytest.mark.parametrize("table", ["local..orders", "local.shop.", ".shop.orders"])
def test_load_settings_table_with_empty_part_is_rejected(tmp_path: Path, table: str) -> None:
    config = _minimal()
    _orders(config)["sink"]["table"] = table
    path = _write(tmp_path, config)

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    assert str(info.value) == (
        f"config file {path} is invalid:\n"
        f"  pipelines.orders.sink.table: Value error, expected dot-separated names such as "
        f"db.table, found {table!r}"
    )


# --- files that are missing or not YAML ----------------------------------------------------


def test_load_settings_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    assert str(info.value) == (
        f"config file: expected an existing YAML file, found nothing at {path}"
    )


def test_load_settings_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("spark:\n  conf: [unclosed\n")

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    assert str(info.value) == (
        f"config file {path}: cannot be parsed: while parsing a flow sequence\n"
        f'  in "{path}", line 2, column 9\n'
        "expected ',' or ']', but got '<stream end>'\n"
        f'  in "{path}", line 3, column 1'
    )
    assert isinstance(info.value.__cause__, yaml.YAMLError)


def test_load_settings_empty_file_lists_required_sections(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("# nothing yet\n")

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    assert str(info.value) == (f"config file {path} is invalid:\n  pipelines: Field required")


@pytest.mark.parametrize("text", ["- orders\n- payments\n", "just text\n"])
def test_load_settings_top_level_not_a_mapping_says_so(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    assert "dictionary update sequence" not in str(info.value)


# --- Settings behaviour --------------------------------------------------------------------


def test_settings_pipeline_returns_the_named_pipeline() -> None:
    settings = load_settings(CONF / "emr.yaml", env={})

    assert settings.pipeline("payments") is settings.pipelines["payments"]


def test_settings_pipeline_unknown_name_lists_known_pipelines() -> None:
    settings = load_settings(CONF / "emr.yaml", env={})

    with pytest.raises(
        ConfigError,
        match=r"^pipelines\.nope: no such pipeline \(known: customers, orders, payments\)$",
    ) as info:
        settings.pipeline("nope")

    assert (info.value.__cause__, info.value.__suppress_context__) == (None, True)


def test_settings_top_level_assignment_raises() -> None:
    settings = load_settings(CONF / "local.yaml", env={})

    with pytest.raises(ValidationError) as info:
        settings.registry = settings.registry  # type: ignore[misc]

    assert info.value.errors(include_url=False) == [
        {
            "type": "frozen_instance",
            "loc": ("registry",),
            "msg": "Instance is frozen",
            "input": settings.registry,
        }
    ]


def test_settings_nested_assignment_raises() -> None:
    source = load_settings(CONF / "local.yaml", env={}).pipeline("orders").source

    with pytest.raises(ValidationError) as info:
        source.bootstrap_servers = "elsewhere:9092"  # type: ignore[misc]

    assert info.value.errors(include_url=False) == [
        {
            "type": "frozen_instance",
            "loc": ("bootstrap_servers",),
            "msg": "Instance is frozen",
            "input": "elsewhere:9092",
        }
    ]
    assert source.bootstrap_servers == "127.0.0.1:9092"


@pytest.mark.xfail(
    strict=True,
    reason=(
        "etl/config.py: frozen=True freezes attributes only; dict/list fields (pipelines, "
        "options, properties, topics, spark.conf) stay mutable after parsing"
    ),
)
def test_settings_pipelines_mapping_is_immutable() -> None:
    settings = load_settings(CONF / "local.yaml", env={})

    with pytest.raises(TypeError):
        settings.pipelines["extra"] = settings.pipeline("orders")


def test_settings_model_validate_applies_the_same_rules() -> None:
    # the spark fixture builds Settings directly, without a file: same validation
    config = _minimal()
    _orders(config)["sink"]["table"] = "orders"

    with pytest.raises(ValidationError) as info:
        Settings.model_validate(config)

    assert [(e["loc"], e["msg"]) for e in info.value.errors()] == [
        (
            (),
            "Value error, pipelines.orders.sink.table: expected `local.namespace.table` (the "
            "catalog's name first), found 'orders'",
        )
    ]


def test_load_settings_maintenance_section_with_schedules_and_log_table(tmp_path: Path) -> None:
    config = _minimal()
    _delta(config)
    _orders(config)["maintenance"] = {
        "compact": {"schedule": "15  */4 * * *", "sort_by": ["customer_id", "order_ts"]},
        "expire": {"schedule": "@daily", "older_than_hours": 48, "retain_last": 3},
        "orphans": {"enabled": False},
    }

    pipeline = load_settings(_write(tmp_path, config), env={}).pipeline("orders")

    maintenance = pipeline.maintenance
    assert maintenance.compact.schedule == "15 */4 * * *"
    assert maintenance.compact.sort_by == ["customer_id", "order_ts"]
    assert maintenance.compact.target_file_size_mb == 128
    assert (maintenance.expire.schedule, maintenance.expire.older_than_hours) == ("@daily", 48)
    assert not maintenance.orphans.enabled
    # the log table defaults to a sibling of the table, in its format
    assert pipeline.maintenance_log.table == "shop.orders_maintenance_log"
    assert pipeline.maintenance_log.location == "/lake/orders_maintenance_log"


def test_load_settings_maintenance_where_is_refused_for_hudi(tmp_path: Path) -> None:
    config = _minimal()
    _delta(config)
    _orders(config)["sink"]["format"] = "hudi"
    _orders(config)["maintenance"] = {"compact": {"where": "day = '2026-11-29'"}}

    with pytest.raises(ConfigError, match=r"maintenance\.compact\.where: applies to iceberg and"):
        load_settings(_write(tmp_path, config), env={})
