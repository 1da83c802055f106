"""Schema resolution: Glue Schema Registry on moto, retries when unreachable, .avsc files."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.producer import register_schema
from etl.config import AwsSettings, DecodeSettings, RegistrySettings
from etl.exceptions import (
    RegistryUnavailableError,
    SchemaError,
    SchemaNotFoundError,
    SchemaRegistryError,
)
from etl.registry import FileSchemas, GlueSchemaRegistry, build_resolver, glue_client, read_avsc
from tests.conftest import REPO
from transforms.framing import PLAIN_AVRO_SCHEMA_ID

REGION = "us-east-1"
UNKNOWN_ID = "99999999-9999-4999-8999-999999999999"
V1 = json.dumps(
    {"type": "record", "name": "Order", "fields": [{"name": "order_id", "type": "string"}]}
)
V2 = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "order_id", "type": "string"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
)
ORDERS_AVSC = REPO / "schemas" / "orders.avsc"
ORDERS = json.dumps(json.loads(ORDERS_AVSC.read_text()))


# --- against the Glue Schema Registry API on the local moto server -------------------------


@pytest.fixture
def registry_name() -> str:
    """A registry of its own per test: the moto server lives for the whole session."""
    return f"etl-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def glue(local_stack: Any, registry_name: str) -> Any:
    """A Glue client built the product's way, pointed at moto."""
    return glue_client(
        AwsSettings(endpoint_url=local_stack.info.aws_endpoint, region=REGION),
        RegistrySettings(registry_name=registry_name),
    )


@pytest.mark.integration
def test_glue_schema_registry_resolve_returns_known_ids_only(glue: Any, registry_name: str) -> None:
    version_id = register_schema(
        glue, registry_name=registry_name, schema_name="orders", definition=V1
    )
    registry = GlueSchemaRegistry(glue, registry_name=registry_name)

    assert registry.resolve([version_id, UNKNOWN_ID]) == {version_id: V1}
    assert registry.calls == 2


@pytest.mark.integration
def test_glue_schema_registry_resolve_caches_versions(glue: Any, registry_name: str) -> None:
    version_id = register_schema(
        glue, registry_name=registry_name, schema_name="orders", definition=V1
    )
    registry = GlueSchemaRegistry(glue, registry_name=registry_name)
    first = registry.resolve([version_id, version_id])
    calls = registry.calls

    second = registry.resolve([version_id])

    assert (first, second, calls, registry.calls) == ({version_id: V1}, {version_id: V1}, 1, 1)


@pytest.mark.integration
def test_glue_schema_registry_schema_version_unknown_raises_not_found(
    glue: Any, registry_name: str
) -> None:
    registry = GlueSchemaRegistry(glue, registry_name=registry_name)

    with pytest.raises(
        SchemaNotFoundError, match=rf"^schema version {UNKNOWN_ID}: not found in the registry$"
    ):
        registry.schema_version(UNKNOWN_ID)


@pytest.mark.integration
def test_glue_schema_registry_latest_returns_newest_version(glue: Any, registry_name: str) -> None:
    register_schema(glue, registry_name=registry_name, schema_name="orders", definition=V1)
    v2 = register_schema(glue, registry_name=registry_name, schema_name="orders", definition=V2)
    registry = GlueSchemaRegistry(glue, registry_name=registry_name)

    latest = registry.latest("orders")
    # latest() fills the version cache: resolving that id costs no further call
    resolved = registry.resolve([v2])

    assert (latest, resolved, registry.calls) == ((v2, V2), {v2: V2}, 1)


@pytest.mark.integration
def test_glue_schema_registry_latest_unknown_schema_raises_not_found(
    glue: Any, registry_name: str
) -> None:
    register_schema(glue, registry_name=registry_name, schema_name="orders", definition=V1)
    registry = GlueSchemaRegistry(glue, registry_name=registry_name)

    with pytest.raises(
        SchemaNotFoundError,
        match=r"^latest version of schema 'payments': not found in the registry$",
    ):
        registry.latest("payments")


@pytest.mark.integration
def test_build_resolver_glue_schema_name_reads_latest_as_reader(
    local_stack: Any, glue: Any, registry_name: str
) -> None:
    register_schema(glue, registry_name=registry_name, schema_name="orders", definition=V1)
    v2 = register_schema(glue, registry_name=registry_name, schema_name="orders", definition=V2)

    resolver, reader = build_resolver(
        DecodeSettings(wire_format="glue", schema_name="orders"),
        AwsSettings(endpoint_url=local_stack.info.aws_endpoint, region=REGION),
        RegistrySettings(registry_name=registry_name),
    )

    assert isinstance(resolver, GlueSchemaRegistry)
    assert (reader, resolver.resolve([v2, UNKNOWN_ID])) == (V2, {v2: V2})


@pytest.mark.integration
def test_build_resolver_plain_avro_assumes_the_latest_registry_version(
    local_stack: Any, glue: Any, registry_name: str
) -> None:
    register_schema(glue, registry_name=registry_name, schema_name="assumed", definition=V1)
    register_schema(glue, registry_name=registry_name, schema_name="assumed", definition=V2)

    resolver, reader = build_resolver(
        DecodeSettings(wire_format="plain_avro", schema_name="assumed"),
        AwsSettings(endpoint_url=local_stack.info.aws_endpoint, region=REGION),
        RegistrySettings(registry_name=registry_name),
    )

    assert (reader, resolver.resolve(["plain"])) == (V2, {"plain": V2})


# --- an unreachable registry: bounded retries, then RegistryUnavailableError ---------------


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else gets it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _unreachable(port: int, max_attempts: int) -> tuple[GlueSchemaRegistry, list[int]]:
    """A registry client on a dead port, and a list counting the HTTP attempts botocore made."""
    client = glue_client(
        AwsSettings(endpoint_url=f"http://127.0.0.1:{port}", region=REGION),
        RegistrySettings(
            registry_name="etl-test",
            max_attempts=max_attempts,
            connect_timeout_s=0.2,
            read_timeout_s=0.2,
        ),
    )
    attempts: list[int] = []
    client.meta.events.register("before-send.glue.GetSchemaVersion", lambda **_: attempts.append(1))
    return GlueSchemaRegistry(client, registry_name="etl-test"), attempts


def test_glue_schema_registry_unreachable_raises_unavailable_after_retrying(
    dead_port: int,
) -> None:
    registry, attempts = _unreachable(dead_port, max_attempts=3)

    with pytest.raises(RegistryUnavailableError) as info:
        registry.resolve([UNKNOWN_ID])

    assert str(info.value) == (
        f"schema version {UNKNOWN_ID}: schema registry unreachable after retries "
        "(EndpointConnectionError)"
    )
    # one call from our side; botocore retried it (with backoff) underneath — the exact
    # attempt count is test_glue_client_makes_exactly_max_attempts
    assert registry.calls == 1
    assert len(attempts) >= 2


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_glue_client_makes_exactly_max_attempts(dead_port: int, max_attempts: int) -> None:
    registry, attempts = _unreachable(dead_port, max_attempts=max_attempts)

    with pytest.raises(RegistryUnavailableError):
        registry.schema_version(UNKNOWN_ID)

    assert len(attempts) == max_attempts


def test_glue_schema_registry_missing_credentials_is_not_unreachable(
    dead_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    registry, attempts = _unreachable(dead_port, max_attempts=3)

    with pytest.raises(SchemaRegistryError) as info:
        registry.schema_version(UNKNOWN_ID)

    assert attempts == []  # nothing was sent: the registry was never tried
    assert not isinstance(info.value, RegistryUnavailableError)


# --- schemas kept as files -----------------------------------------------------------------


def test_read_avsc_returns_compact_json() -> None:
    assert read_avsc(ORDERS_AVSC) == ORDERS


def test_read_avsc_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.avsc"

    with pytest.raises(SchemaError) as info:
        read_avsc(path)

    assert str(info.value) == f"schema file: expected an .avsc at {path}, found nothing"


def test_read_avsc_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.avsc"
    path.write_text('{"type": "record",\n "name": }')

    with pytest.raises(SchemaError) as info:
        read_avsc(path)

    assert str(info.value) == (
        f"schema file {path}: expected JSON, found an error: "
        "Expecting value: line 2 column 10 (char 28)"
    )


def test_build_resolver_plain_avro_maps_the_fixed_id(tmp_path: Path) -> None:
    # no registry is contacted for plain Avro: an unreachable endpoint must not matter
    resolver, reader = build_resolver(
        DecodeSettings(wire_format="plain_avro", schema_file=ORDERS_AVSC),
        AwsSettings(endpoint_url="http://127.0.0.1:1"),
        RegistrySettings(),
    )

    assert isinstance(resolver, FileSchemas)
    assert (reader, resolver.resolve([PLAIN_AVRO_SCHEMA_ID, "7"])) == (
        ORDERS,
        {PLAIN_AVRO_SCHEMA_ID: ORDERS},
    )


def test_build_resolver_confluent_maps_configured_ids(tmp_path: Path) -> None:
    v1_file = tmp_path / "order-v1.avsc"
    v1_file.write_text(V1)
    v2_file = tmp_path / "order-v2.avsc"
    v2_file.write_text(V2)

    resolver, reader = build_resolver(
        DecodeSettings(
            wire_format="confluent",
            schema_file=v2_file,
            confluent_schemas={7: v1_file, 8: v2_file},
        ),
        AwsSettings(endpoint_url="http://127.0.0.1:1"),
        RegistrySettings(),
    )

    assert isinstance(resolver, FileSchemas)
    assert (reader, resolver.resolve(["7", "8", "9", PLAIN_AVRO_SCHEMA_ID])) == (
        V2,
        {"7": V1, "8": V2},
    )


def test_build_resolver_confluent_mapped_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "order-v9.avsc"

    with pytest.raises(SchemaError) as info:
        build_resolver(
            DecodeSettings(
                wire_format="confluent", schema_file=ORDERS_AVSC, confluent_schemas={9: missing}
            ),
            AwsSettings(),
            RegistrySettings(),
        )

    assert str(info.value) == f"schema file: expected an .avsc at {missing}, found nothing"


def test_file_schemas_resolve_ignores_unknown_ids() -> None:
    schemas = FileSchemas({"1": V1, "2": V2})

    assert schemas.resolve(["2", "3", "2"]) == {"2": V2}
