"""The embedded local stack: Kafka broker (PLAINTEXT + SCRAM), moto, and the devstack CLI.

Needs java and the broker jars (``make jars``); ETL_BROKER_JARS overrides their location.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from devtools.devstack import KafkaBroker, MotoServer, load_state
from devtools.devstack.ports import pid_alive, port_open, terminate_pid
from devtools.devstack.stack import read_state, stop_from_state

if TYPE_CHECKING:
    from mypy_boto3_glue.type_defs import SchemaIdTypeDef

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BROKER_JARS = Path(os.environ.get("ETL_BROKER_JARS", REPO / ".jars" / "broker"))
REGION = "us-east-1"
DUMMY_KEY = "testing"  # moto accepts any credentials; boto3 needs some to sign
# librdkafka prints connection errors to stderr unless given a logger
CLIENT_LOG = logging.getLogger("tests.devstack.rdkafka")


@pytest.fixture(scope="module")
def broker_jars() -> Path:
    """The broker classpath; fail (not skip) when missing so CI cannot pass vacuously."""
    if not any(BROKER_JARS.glob("kafka_2.13-*.jar")):
        pytest.fail(f"no Kafka broker jars in {BROKER_JARS}: run `make jars` first")
    return BROKER_JARS


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, broker_jars: Path) -> Iterator[KafkaBroker]:
    """One broker for the module (starting one takes a few seconds)."""
    kafka = KafkaBroker(
        tmp_path_factory.mktemp("broker"),
        broker_jars,
        scram_username="etl-test",
        scram_password=secrets.token_urlsafe(16),
    )
    with kafka:
        yield kafka


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the module."""
    with MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def _produce(conf: dict[str, Any], topic: str, value: bytes) -> None:
    """Produce one record and assert it was acknowledged."""
    delivered: list[KafkaError | None] = []
    producer = Producer({**conf, "logger": CLIENT_LOG})
    producer.produce(topic, value=value, on_delivery=lambda err, _msg: delivered.append(err))
    assert producer.flush(20) == 0, "record still queued after 20 s"
    assert delivered == [None]


def _consume_one(conf: dict[str, Any], topic: str, timeout: float = 30.0) -> bytes:
    """Join a fresh consumer group, read the topic from the start and return the first value."""
    consumer = Consumer(
        {
            **conf,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": CLIENT_LOG,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert isinstance(value, bytes)
            return value
    finally:
        consumer.close()
    pytest.fail(f"no record from {topic!r} within {timeout:.0f}s")


def test_broker_starts_on_loopback(broker: KafkaBroker) -> None:
    assert broker.running and broker.pid is not None and pid_alive(broker.pid)
    for bootstrap in (broker.bootstrap_plaintext, broker.bootstrap_scram):
        host, port = bootstrap.split(":")
        assert host == "127.0.0.1"
        assert port_open(int(port))
    assert broker.bootstrap_plaintext != broker.bootstrap_scram
    assert "Kafka Server started" in broker.server_log.read_text()


@pytest.mark.parametrize("scram", [False, True], ids=["plaintext", "scram"])
def test_produce_and_consume(broker: KafkaBroker, scram: bool) -> None:
    topic = f"roundtrip-{'scram' if scram else 'plain'}"
    broker.create_topic(topic, partitions=2)
    broker.create_topic(topic, partitions=2)  # idempotent
    value = f"hello over {topic} {uuid.uuid4()}".encode()

    _produce(broker.client_config(scram=scram), topic, value)

    assert _consume_one(broker.client_config(scram=scram), topic) == value


def test_scram_rejects_wrong_password(broker: KafkaBroker) -> None:
    errors: list[KafkaError] = []
    conf = broker.client_config(scram=True, password="not-the-password")
    producer = Producer({**conf, "error_cb": errors.append, "logger": CLIENT_LOG})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not errors:
        producer.poll(0.2)

    auth_errors = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth_errors, f"expected an authentication error, got {errors}"
    assert "invalid credentials" in auth_errors[0].str()


def test_restart_keeps_records_and_ports(broker: KafkaBroker) -> None:
    topic = "survives-restart"
    broker.create_topic(topic)
    value = f"before restart {uuid.uuid4()}".encode()
    _produce(broker.client_config(), topic, value)
    bootstraps = (broker.bootstrap_plaintext, broker.bootstrap_scram)
    old_pid = broker.pid
    assert old_pid is not None

    broker.stop()
    assert not broker.running
    assert not pid_alive(old_pid)
    assert not port_open(broker.ports.plaintext)
    broker.start()

    assert broker.pid not in (None, old_pid)
    assert (broker.bootstrap_plaintext, broker.bootstrap_scram) == bootstraps
    assert _consume_one(broker.client_config(scram=True), topic) == value


def test_moto_glue_schema_registry(moto_server: MotoServer) -> None:
    glue = boto3.client(
        "glue",
        endpoint_url=moto_server.endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )
    v1 = json.dumps({"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]})
    v2 = json.dumps(
        {
            "type": "record",
            "name": "Order",
            "fields": [
                {"name": "id", "type": "long"},
                {"name": "note", "type": ["null", "string"], "default": None},
            ],
        }
    )
    glue.create_registry(RegistryName="etl-test")
    schema_id: SchemaIdTypeDef = {"RegistryName": "etl-test", "SchemaName": "orders-value"}
    created = glue.create_schema(
        RegistryId={"RegistryName": "etl-test"},
        SchemaName="orders-value",
        DataFormat="AVRO",
        Compatibility="BACKWARD",
        SchemaDefinition=v1,
    )
    registered = glue.register_schema_version(SchemaId=schema_id, SchemaDefinition=v2)

    assert registered["VersionNumber"] == 2
    latest = glue.get_schema_version(
        SchemaId=schema_id, SchemaVersionNumber={"LatestVersion": True}
    )
    assert latest["SchemaDefinition"] == v2
    assert latest["SchemaVersionId"] == registered["SchemaVersionId"]
    by_id = glue.get_schema_version(SchemaVersionId=created["SchemaVersionId"])
    assert by_id["SchemaDefinition"] == v1
    assert by_id["VersionNumber"] == 1
    by_definition = glue.get_schema_by_definition(SchemaId=schema_id, SchemaDefinition=v1)
    assert by_definition["SchemaVersionId"] == created["SchemaVersionId"]


def test_moto_serves_s3_and_secrets_on_the_same_endpoint(moto_server: MotoServer) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )
    s3.create_bucket(Bucket="etl-devstack-test")
    s3.put_object(Bucket="etl-devstack-test", Key="a/b.txt", Body=b"payload")
    secrets_client = boto3.client(
        "secretsmanager",
        endpoint_url=moto_server.endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )
    secrets_client.create_secret(Name="etl/scram", SecretString='{"password": "p"}')

    body = s3.get_object(Bucket="etl-devstack-test", Key="a/b.txt")["Body"].read()
    assert body == b"payload"
    secret = secrets_client.get_secret_value(SecretId="etl/scram")["SecretString"]
    assert json.loads(secret) == {"password": "p"}


def _cli(*args: str, workdir: Path, broker_jars: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m devtools.devstack`` with the given arguments."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "devtools.devstack", *args),
            *("--workdir", str(workdir), "--broker-jars", str(broker_jars)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_up_status_down(tmp_path: Path, broker_jars: Path) -> None:
    workdir = tmp_path / "stack"
    pids: list[int] = []
    try:
        up = _cli("up", workdir=workdir, broker_jars=broker_jars)
        assert up.returncode == 0, up.stderr
        state = read_state(workdir)
        assert state is not None
        pids = [state["broker"]["pid"], state["moto"]["pid"]]
        assert all(pid_alive(pid) for pid in pids), "up must leave both processes running"
        assert state["broker"]["bootstrap_scram"] in up.stdout
        assert state["moto"]["endpoint"] in up.stdout
        assert state["scram_password"] not in up.stdout + up.stderr
        assert stat.S_IMODE((workdir / "state.json").stat().st_mode) == 0o600

        info = load_state(workdir)
        assert info.scram_password == state["scram_password"]
        assert info.scram_password not in repr(info)
        # the detached broker accepts the credentials recorded in the state file
        conf: dict[str, Any] = {**info.kafka_config(scram=True), "logger": CLIENT_LOG}
        admin = AdminClient(conf)
        assert admin.list_topics(timeout=10).brokers

        again = _cli("up", workdir=workdir, broker_jars=broker_jars)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stdout
        assert read_state(workdir) == state

        status = _cli("status", workdir=workdir, broker_jars=broker_jars)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" running") == 2

        down = _cli("down", workdir=workdir, broker_jars=broker_jars)
        assert down.returncode == 0, down.stderr
        assert not (workdir / "state.json").exists()
        assert not any(pid_alive(pid) for pid in pids)

        after = _cli("status", workdir=workdir, broker_jars=broker_jars)
        assert after.returncode == 1
        assert "down" in after.stdout
    finally:
        leftover = read_state(workdir)
        if leftover is not None:
            stop_from_state(leftover)
        for pid in pids:
            terminate_pid(pid, timeout=10)
