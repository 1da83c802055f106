"""Schema resolution: Glue Schema Registry on moto, retries when unreachable, .avsc files."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.stub import Stubber

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
from transforms.schema_evolution import WriterVersion

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

    assert _defs(registry.resolve([version_id, UNKNOWN_ID])) == {version_id: V1}
    assert registry.calls == 2


@pytest.mark.integration
def test_glue_schema_registry_resolve_caches_versions(glue: Any, registry_name: str) -> None:
    version_id = register_schema(
        glue, registry_name=registry_name, schema_name="orders", definition=V1
    )
    registry = GlueSchemaRegistry(glue, registry_name=registry_name)
    first = _defs(registry.resolve([version_id, version_id]))
    calls = registry.calls

    second = _defs(registry.resolve([version_id]))

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

    assert (latest, _defs(resolved), registry.calls) == ((v2, V2), {v2: V2}, 1)
    # the registration order travels with each version (reader schemas admit in that order)
    assert [v.number for v in resolved] == [2]


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
    assert (reader, _defs(resolver.resolve([v2, UNKNOWN_ID]))) == (V2, {v2: V2})


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

    assert (reader, _defs(resolver.resolve(["plain"]))) == (V2, {"plain": V2})


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
        _defs(registry.resolve([UNKNOWN_ID]))

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


# --- Glue API errors: what _call makes of each final answer (botocore Stubber) --------------
#
# The Stubber answers in botocore's before-call hook, ahead of the HTTP layer where the
# standard retry mode runs, so a stubbed error is never retried: it is the call's final
# answer. These tests pin the mapping of each final error code; the retries themselves are
# exercised further down, with canned HTTP responses that do pass through the retry handler.

VERSION_A = "11111111-1111-4111-8111-111111111111"
VERSION_B = "22222222-2222-4222-8222-222222222222"


def _schema_version(version_id: str, definition: str = V1, data_format: str = "AVRO") -> Any:
    """A GetSchemaVersion response as the Glue service model defines it."""
    return {
        "SchemaVersionId": version_id,
        "SchemaDefinition": definition,
        "DataFormat": data_format,
        "SchemaArn": f"arn:aws:glue:{REGION}:123456789012:schema/etl-test/orders",
        "VersionNumber": 1,
        "Status": "AVAILABLE",
        "CreatedTime": "2026-01-01T00:00:00.000Z",
    }


def _add_error(stubber: Stubber, code: str, status: int, version_id: str) -> None:
    stubber.add_client_error(
        "get_schema_version",
        service_error_code=code,
        service_message=f"{code} from the stub",
        http_status_code=status,
        expected_params={"SchemaVersionId": version_id},
    )


def _add_version(stubber: Stubber, version_id: str, **fields: str) -> None:
    stubber.add_response(
        "get_schema_version",
        _schema_version(version_id, **fields),
        expected_params={"SchemaVersionId": version_id},
    )


@pytest.fixture
def stubbed() -> Iterator[tuple[GlueSchemaRegistry, Stubber]]:
    """A registry on a real boto3 Glue client built by ``glue_client``, its API stubbed."""
    client = glue_client(
        AwsSettings(endpoint_url="http://127.0.0.1:1", region=REGION),
        RegistrySettings(registry_name="etl-test", max_attempts=3),
    )
    with Stubber(client) as stubber:
        yield GlueSchemaRegistry(client, registry_name="etl-test"), stubber
        stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status"), [("ThrottlingException", 400), ("InternalServiceException", 500)]
)
def test_glue_schema_registry_schema_version_final_transient_error_raises_unavailable(
    stubbed: tuple[GlueSchemaRegistry, Stubber], code: str, status: int
) -> None:
    registry, stubber = stubbed
    _add_error(stubber, code, status, VERSION_A)

    with pytest.raises(RegistryUnavailableError) as info:
        registry.schema_version(VERSION_A)

    assert str(info.value) == (
        f"schema version {VERSION_A}: registry still answering {code} after retries"
    )


def test_glue_schema_registry_schema_version_answers_after_a_throttled_call(
    stubbed: tuple[GlueSchemaRegistry, Stubber],
) -> None:
    registry, stubber = stubbed
    _add_error(stubber, "ThrottlingException", 400, VERSION_A)
    _add_version(stubber, VERSION_A)

    with pytest.raises(RegistryUnavailableError):
        registry.schema_version(VERSION_A)
    # the next batch asks again (nothing of the failure is cached) and gets the schema
    first = registry.schema_version(VERSION_A).definition
    second = registry.schema_version(VERSION_A).definition

    assert (first, second, registry.calls) == (V1, V1, 2)


def test_glue_schema_registry_resolve_propagates_unavailable(
    stubbed: tuple[GlueSchemaRegistry, Stubber],
) -> None:
    registry, stubber = stubbed
    _add_version(stubber, VERSION_A)
    _add_error(stubber, "InternalServiceException", 500, VERSION_B)

    # an unreachable registry fails the batch; it must not look like "id unknown"
    with pytest.raises(RegistryUnavailableError, match="InternalServiceException"):
        _defs(registry.resolve([VERSION_B, VERSION_A]))


def test_glue_schema_registry_schema_version_access_denied_raises_registry_error(
    stubbed: tuple[GlueSchemaRegistry, Stubber],
) -> None:
    registry, stubber = stubbed
    _add_error(stubber, "AccessDeniedException", 400, VERSION_A)

    with pytest.raises(SchemaRegistryError) as info:
        registry.schema_version(VERSION_A)

    # a refusal, not an outage (not retried by the caller) and not a missing id
    assert type(info.value) is SchemaRegistryError
    assert str(info.value) == (
        f"schema version {VERSION_A}: registry refused with AccessDeniedException"
    )


def test_glue_schema_registry_schema_version_entity_not_found_raises_not_found(
    stubbed: tuple[GlueSchemaRegistry, Stubber],
) -> None:
    registry, stubber = stubbed
    _add_error(stubber, "EntityNotFoundException", 400, VERSION_A)

    with pytest.raises(SchemaNotFoundError) as info:
        registry.schema_version(VERSION_A)

    assert str(info.value) == f"schema version {VERSION_A}: not found in the registry"


def test_glue_schema_registry_resolve_omits_ids_the_registry_does_not_know(
    stubbed: tuple[GlueSchemaRegistry, Stubber],
) -> None:
    registry, stubber = stubbed
    # resolve() asks in sorted id order: A (unknown), then B
    _add_error(stubber, "EntityNotFoundException", 400, VERSION_A)
    _add_version(stubber, VERSION_B, definition=V2)

    assert _defs(registry.resolve([VERSION_B, VERSION_A, VERSION_B])) == {VERSION_B: V2}
    assert registry.calls == 2


@pytest.mark.parametrize("data_format", ["JSON", "PROTOBUF"])
def test_glue_schema_registry_schema_version_non_avro_raises_registry_error(
    stubbed: tuple[GlueSchemaRegistry, Stubber], data_format: str
) -> None:
    registry, stubber = stubbed
    _add_version(stubber, VERSION_A, definition='{"type": "object"}', data_format=data_format)

    with pytest.raises(SchemaRegistryError) as info:
        _defs(registry.resolve([VERSION_A]))

    assert type(info.value) is SchemaRegistryError
    assert str(info.value) == (
        f"schema version {VERSION_A}: expected data format AVRO, found {data_format}"
    )


# --- Glue API errors through botocore's standard retry mode (canned HTTP responses) ----------


class _Body:
    """The raw body of a canned HTTP response (what ``AWSResponse.content`` reads)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _http(status: int, body: dict[str, Any]) -> AWSResponse:
    headers = HTTPHeaders.from_dict({"Content-Type": "application/x-amz-json-1.1"})
    return AWSResponse("http://127.0.0.1:1/", status, headers, _Body(json.dumps(body).encode()))


def _error(code: str, status: int) -> AWSResponse:
    return _http(status, {"__type": code, "Message": f"{code} from the test"})


def _canned(
    monkeypatch: pytest.MonkeyPatch, responses: list[AWSResponse], max_attempts: int = 3
) -> tuple[GlueSchemaRegistry, list[int], list[float]]:
    """A registry whose HTTP requests get ``responses`` in turn (the retry handler still runs).

    Returns the registry, the list of attempts sent and the backoff delays botocore chose
    (recorded instead of slept).
    """
    client = glue_client(
        AwsSettings(endpoint_url="http://127.0.0.1:1", region=REGION),
        RegistrySettings(registry_name="etl-test", max_attempts=max_attempts),
    )
    attempts: list[int] = []
    queue = list(responses)

    def answer(**_: Any) -> Any:  # the response replaces the HTTP send
        attempts.append(1)
        return queue.pop(0)

    client.meta.events.register("before-send.glue.GetSchemaVersion", answer)
    sleeps: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=sleeps.append))
    return GlueSchemaRegistry(client, registry_name="etl-test"), attempts, sleeps


def test_glue_schema_registry_schema_version_retries_throttling_then_returns_the_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, attempts, sleeps = _canned(
        monkeypatch, [_error("ThrottlingException", 400), _http(200, _schema_version(VERSION_A))]
    )

    assert registry.schema_version(VERSION_A).definition == V1
    # one call of ours; botocore backed off once and sent it again
    assert (registry.calls, len(attempts), len(sleeps)) == (1, 2, 1)


@pytest.mark.parametrize(
    ("code", "status"), [("ThrottlingException", 400), ("InternalServiceException", 500)]
)
def test_glue_schema_registry_schema_version_gives_up_after_max_attempts(
    monkeypatch: pytest.MonkeyPatch, code: str, status: int
) -> None:
    registry, attempts, sleeps = _canned(monkeypatch, [_error(code, status)] * 3, max_attempts=3)

    with pytest.raises(RegistryUnavailableError) as info:
        registry.schema_version(VERSION_A)

    assert str(info.value) == (
        f"schema version {VERSION_A}: registry still answering {code} after retries"
    )
    assert (registry.calls, len(attempts), len(sleeps)) == (1, 3, 2)


def test_glue_schema_registry_schema_version_access_denied_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, attempts, sleeps = _canned(
        monkeypatch, [_error("AccessDeniedException", 400), _http(200, _schema_version(VERSION_A))]
    )

    with pytest.raises(SchemaRegistryError) as info:
        registry.schema_version(VERSION_A)

    assert type(info.value) is SchemaRegistryError
    assert (len(attempts), sleeps) == (1, [])


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
    assert (reader, _defs(resolver.resolve([PLAIN_AVRO_SCHEMA_ID, "7"]))) == (
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
    assert (reader, _defs(resolver.resolve(["7", "8", "9", PLAIN_AVRO_SCHEMA_ID]))) == (
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

    assert _defs(schemas.resolve(["2", "3", "2"])) == {"2": V2}


def _defs(versions: list[WriterVersion]) -> dict[str, str]:
    """Resolved versions as id -> definition."""
    return {v.version_id: v.definition for v in versions}
