"""The poison catalogue on the real stack, and secrets kept out of logs, tables and checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from pyspark.sql import SparkSession

from devtools.producer import glue_frames, produce, register_schema
from devtools.sample_data import orders
from devtools.wire import encode_glue
from etl.config import Settings
from etl.registry import read_avsc
from tests.conftest import REPO, catalog_block
from tests.integration.streams import start_recording

pytestmark = pytest.mark.integration

SCHEMA = read_avsc(REPO / "schemas" / "orders.avsc")
REGISTRY = "etl-poison"


def test_poison_catalogue_each_case_gets_its_error_class(
    spark: SparkSession, local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    name, topic = "poison", "poison"
    local_stack.broker.create_topic(topic, partitions=2)
    glue = local_stack.info.glue_client()
    version = register_schema(glue, registry_name=REGISTRY, schema_name=topic, definition=SCHEMA)
    incompatible = json.loads(SCHEMA)
    next(f for f in incompatible["fields"] if f["name"] == "quantity")["type"] = "string"
    bad_version = register_schema(
        glue,
        registry_name=REGISTRY,
        schema_name=f"{topic}-bad",
        definition=json.dumps(incompatible),
    )
    good = orders(20, start=500)
    body = glue_frames(SCHEMA, version, good[:1])[0][18:]
    header = bytes([0x03, 0x00]) + uuid.UUID(version).bytes
    cheap = {**orders(1, start=900)[0], "quantity": 1}
    big_quantity = {**orders(1, start=901)[0], "quantity": 99}  # violates the drop expectation
    incompatible_row = {**orders(1, start=902)[0], "quantity": "many"}
    cases: dict[str, bytes | None] = {
        "UNKNOWN_HEADER_VERSION": b"\x07" + header[1:] + body,
        "FRAME_TOO_SHORT": header[:10],
        "UNKNOWN_SCHEMA": encode_glue(body, uuid.uuid4()),
        "DECODE_ERROR": header + b"\x08" * 40,
        "DECODE_ERROR/truncated": header + body[: len(body) // 3],
        "NULL_VALUE": None,
        "VALUE_TOO_LARGE": header + body + b"\x00" * 5000,
        "UNKNOWN_COMPRESSION": bytes([0x03, 0x09]) + uuid.UUID(version).bytes + body,
        "DECOMPRESS_ERROR": bytes([0x03, 0x05]) + uuid.UUID(version).bytes + b"not-zlib",
        "DECOMPRESS_ERROR/cut": bytes([0x03, 0x05])
        + uuid.UUID(version).bytes
        + zlib.compress(body)[:-5],
        "INCOMPATIBLE_SCHEMA": glue_frames(
            json.dumps(incompatible), bad_version, [incompatible_row]
        )[0],
        "EXPECTATION_FAILED": glue_frames(SCHEMA, version, [big_quantity])[0],
    }
    good_values = glue_frames(SCHEMA, version, [*good, cheap], compress_every=3)
    good_ids = [r["order_id"] for r in [*good, cheap]]
    # interleave: poison between good records in the same partitions and batch
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, (case, value) in enumerate(cases.items()):
        messages.append((good_ids[i].encode(), good_values[i]))
        messages.append((case.encode(), value))
    messages += [
        (k.encode(), v)
        for k, v in zip(good_ids[len(cases) :], good_values[len(cases) :], strict=True)
    ]
    produce(local_stack.info.bootstrap_plaintext, topic, messages)
    settings = Settings.model_validate(
        {
            "catalog": catalog_block(warehouse),
            "aws": {"endpoint_url": local_stack.info.aws_endpoint},
            "registry": {"registry_name": REGISTRY},
            "pipelines": {
                name: {
                    "source": {
                        "bootstrap_servers": local_stack.info.bootstrap_plaintext,
                        "topics": [topic],
                    },
                    "decode": {
                        "schema_file": str(REPO / "schemas/orders.avsc"),
                        "max_value_bytes": 2048,
                    },
                    "sink": {"table": f"local.poison.{name}"},
                    "dead_letter": {"table": f"local.poison.{name}_dlq"},
                    "checkpoint": str(tmp_path / "checkpoint"),
                    "trigger": {"mode": "available_now"},
                    "expectations": [
                        {"name": "few_items", "expr": "quantity < 50", "action": "drop"}
                    ],
                }
            },
        }
    )
    query, results = start_recording(spark, settings, name)
    try:
        query.awaitTermination(240)
        assert not query.isActive
    finally:
        query.stop()

    read = sum(r.read for r in results)
    assert (read, sum(r.written for r in results)) == (len(messages), len(good_ids))
    landed = sorted(r[0] for r in spark.table(f"local.poison.{name}").select("order_id").collect())
    assert landed == sorted(good_ids)
    dlq = {
        bytes(r["key"]).decode(): r["error_class"]
        for r in spark.table(f"local.poison.{name}_dlq").select("key", "error_class").collect()
    }
    assert dlq == {case: case.split("/")[0] for case in cases}


def test_secrets_stay_out_of_logs_tables_and_checkpoints(
    local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    name, topic = "secrets", "secrets"
    local_stack.broker.create_topic(topic, partitions=1)
    version = register_schema(
        local_stack.info.glue_client(), registry_name=REGISTRY, schema_name=topic, definition=SCHEMA
    )
    values = glue_frames(SCHEMA, version, orders(10))
    produce(
        local_stack.info.bootstrap_plaintext,
        topic,
        [(b"k", v) for v in values] + [(b"bad", b"\x00bad")],
    )
    password = local_stack.info.scram_password
    aws_secret = f"aws-secret-{uuid.uuid4().hex}"
    checkpoint = tmp_path / "checkpoint"
    conf = {
        "spark": {
            "master": "local[2]",
            "jars_dir": str(REPO / ".jars" / "spark"),
            "ui_enabled": False,
            "shuffle_partitions": 2,
        },
        "catalog": catalog_block(warehouse),
        "aws": {"endpoint_url": local_stack.info.aws_endpoint},
        "registry": {"registry_name": REGISTRY},
        "pipelines": {
            name: {
                "source": {
                    "bootstrap_servers": local_stack.info.bootstrap_scram,
                    "topics": [topic],
                    "auth": {
                        "mode": "scram",
                        "tls": False,
                        "username": local_stack.info.scram_username,
                        "password_env": "ETL_SCRAM_PASSWORD",
                    },
                },
                "decode": {"schema_file": str(REPO / "schemas/orders.avsc")},
                "sink": {"table": f"local.secrets.{name}"},
                "dead_letter": {"table": f"local.secrets.{name}_dlq"},
                "checkpoint": str(checkpoint),
                "trigger": {"mode": "available_now"},
            }
        },
    }
    conf_path = tmp_path / "secrets.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    env = {
        **os.environ,
        "ETL_SCRAM_PASSWORD": password,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": aws_secret,
    }
    run = subprocess.run(
        [sys.executable, "-m", "jobs.ingest", "--conf", str(conf_path), "--log-level", "DEBUG"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    logs = run.stdout + run.stderr
    assert run.returncode == 0, logs[-3000:]
    assert '"written": 10, "dead_lettered": 1' in logs  # the job really ran and logged
    # the batch's end offsets went to the pipeline's consumer group over the source's own
    # SCRAM auth (the broker's SCRAM listener refuses anything else)
    assert '"consumer_group": "streaming-etl.secrets"' in logs
    consumer = Consumer(
        {**local_stack.info.kafka_config(scram=True), "group.id": f"streaming-etl.{name}"}
    )
    try:
        committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == [11]
    assert password not in logs
    assert aws_secret not in logs
    for path in [*checkpoint.rglob("*"), *(warehouse / "secrets").rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            assert password.encode() not in content, path
            assert aws_secret.encode() not in content, path
