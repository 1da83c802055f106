"""Schema resolution: AWS Glue Schema Registry (boto3) and schemas kept as files.

Schema versions are immutable, so every resolved version is cached for the life of the
process. Transient failures (throttling, 5xx, connection errors, timeouts) are retried by
botocore's own ``standard`` retry mode with exponential backoff; when the attempts run out the
caller gets ``RegistryUnavailableError`` and the micro-batch is not committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from etl.config import AwsSettings, DecodeSettings, RegistrySettings
from etl.exceptions import (
    RegistryUnavailableError,
    SchemaError,
    SchemaNotFoundError,
    SchemaRegistryError,
)
from transforms.framing import PLAIN_AVRO_SCHEMA_ID
from transforms.schema_evolution import WriterVersion
from transforms.wire import WireFormat

if TYPE_CHECKING:
    from mypy_boto3_glue import GlueClient

log = logging.getLogger(__name__)

# errors that mean "the registry is there but will not tell us", as opposed to not found
_NOT_FOUND = {"EntityNotFoundException"}


class SchemaResolver(Protocol):
    """Maps schema ids found in frames to writer schema versions."""

    def resolve(self, schema_ids: Iterable[str]) -> list[WriterVersion]:
        """Returns the versions it knows among the ids; unknown ids are left out."""
        ...


class GlueSchemaRegistry:
    """Reads schema versions from the AWS Glue Schema Registry, cached by version id."""

    def __init__(self, client: GlueClient, *, registry_name: str) -> None:
        """Wraps a boto3 Glue client.

        Args:
            client: A boto3 ``glue`` client (see ``glue_client``).
            registry_name: Registry used for schema-name lookups.
        """
        self._client = client
        self._registry_name = registry_name
        # no negative cache: a version registered after a miss must be found on the next batch
        self._cache: dict[str, WriterVersion] = {}
        self.calls = 0

    def resolve(self, schema_ids: Iterable[str]) -> list[WriterVersion]:
        """Returns the versions with their definitions; ids the registry does not know are omitted.

        Raises:
            RegistryUnavailableError: The registry stayed unreachable through every retry.
            SchemaRegistryError: The registry refused (e.g. access denied).
        """
        found: list[WriterVersion] = []
        for schema_id in sorted(set(schema_ids)):
            try:
                found.append(self.schema_version(schema_id))
            except SchemaNotFoundError:
                log.warning("schema version %s is not in the registry", schema_id)
        return found

    def schema_version(self, version_id: str) -> WriterVersion:
        """Returns one schema version: its Avro definition and registration number.

        Raises:
            SchemaNotFoundError: No such version.
            RegistryUnavailableError: The registry stayed unreachable through every retry.
            SchemaRegistryError: Any other refusal, or a non-Avro schema.
        """
        if version_id in self._cache:
            return self._cache[version_id]
        response = self._call(
            f"schema version {version_id}",
            self._client.get_schema_version,
            SchemaVersionId=version_id,
        )
        version = self._version(response, f"schema version {version_id}")
        self._cache[version_id] = version
        return version

    def latest(self, schema_name: str) -> tuple[str, str]:
        """Returns (version id, definition) of a schema's latest version (never cached)."""
        response = self._call(
            f"latest version of schema {schema_name!r}",
            self._client.get_schema_version,
            SchemaId={"RegistryName": self._registry_name, "SchemaName": schema_name},
            SchemaVersionNumber={"LatestVersion": True},
        )
        version = self._version(response, f"schema {schema_name!r}")
        self._cache[version.version_id] = version
        return version.version_id, version.definition

    def _call(self, what: str, method: Any, **kwargs: Any) -> Any:
        """Calls the registry, turning botocore errors into domain errors."""
        self.calls += 1
        try:
            return method(**kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in _NOT_FOUND:
                raise SchemaNotFoundError(f"{what}: not found in the registry") from err
            if code in {"ThrottlingException", "InternalServiceException", "ServiceUnavailable"}:
                raise RegistryUnavailableError(
                    f"{what}: registry still answering {code} after retries"
                ) from err
            raise SchemaRegistryError(f"{what}: registry refused with {code}") from err
        except NoCredentialsError as err:
            raise SchemaRegistryError(
                f"{what}: no AWS credentials found to sign the request"
            ) from err
        except BotoCoreError as err:
            raise RegistryUnavailableError(
                f"{what}: schema registry unreachable after retries ({type(err).__name__})"
            ) from err

    @staticmethod
    def _version(response: Any, what: str) -> WriterVersion:
        """Checks the data format is Avro and returns the version."""
        data_format = response.get("DataFormat")
        if data_format and data_format != "AVRO":
            raise SchemaRegistryError(f"{what}: expected data format AVRO, found {data_format}")
        return WriterVersion(
            str(response["SchemaVersionId"]),
            str(response["SchemaDefinition"]),
            int(response.get("VersionNumber", 0)),
        )


class FileSchemas:
    """Resolves a fixed id -> .avsc mapping (plain Avro, or Confluent ids mapped in config).

    The mapping's order is the registration order (Confluent ids are handed out in
    ascending order, and the config lists them so).
    """

    def __init__(self, schemas: dict[str, str]) -> None:
        """Holds id -> schema JSON, in registration order."""
        self._versions = {
            i: WriterVersion(i, definition, number)
            for number, (i, definition) in enumerate(schemas.items(), start=1)
        }

    def resolve(self, schema_ids: Iterable[str]) -> list[WriterVersion]:
        """Returns the known versions among ``schema_ids``."""
        return [self._versions[i] for i in sorted(set(schema_ids)) if i in self._versions]


def read_avsc(path: str | Path) -> str:
    """Reads and checks an .avsc file, returning its JSON text (compact)."""
    try:
        return json.dumps(json.loads(Path(path).read_text()))
    except FileNotFoundError as err:
        raise SchemaError(f"schema file: expected an .avsc at {path}, found nothing") from err
    except json.JSONDecodeError as err:
        raise SchemaError(f"schema file {path}: expected JSON, found an error: {err}") from err


def glue_client(aws: AwsSettings, registry: RegistrySettings) -> GlueClient:
    """Builds a boto3 Glue client with bounded, backed-off retries."""
    session = boto3.Session(profile_name=aws.profile) if aws.profile else boto3.Session()
    config = Config(
        region_name=aws.region,
        # total_max_attempts counts the first try too (botocore's max_attempts does not)
        retries={"mode": "standard", "total_max_attempts": registry.max_attempts},
        connect_timeout=registry.connect_timeout_s,
        read_timeout=registry.read_timeout_s,
    )
    return session.client("glue", endpoint_url=aws.endpoint_url, config=config)


def build_resolver(
    decode: DecodeSettings, aws: AwsSettings, registry: RegistrySettings
) -> tuple[SchemaResolver, str]:
    """Returns the pipeline's resolver and its reader schema (the table's Avro schema).

    Args:
        decode: The pipeline's decode settings.
        aws: AWS client settings (endpoint override for a local registry).
        registry: Registry name and retry limits.

    Returns:
        (resolver, reader schema JSON).
    """
    if decode.wire_format is WireFormat.CONFLUENT:
        assert decode.schema_file is not None  # enforced by DecodeSettings
        mapped = {str(k): read_avsc(v) for k, v in sorted(decode.confluent_schemas.items())}
        return FileSchemas(mapped), read_avsc(decode.schema_file)
    if decode.schema_file is not None:
        reader = read_avsc(decode.schema_file)
        if decode.wire_format is WireFormat.PLAIN_AVRO:
            return FileSchemas({PLAIN_AVRO_SCHEMA_ID: reader}), reader
        return _glue(aws, registry), reader
    assert decode.schema_name is not None  # enforced by DecodeSettings
    glue = _glue(aws, registry)
    _, reader = glue.latest(decode.schema_name)
    if decode.wire_format is WireFormat.PLAIN_AVRO:
        # assumed schema: every record was written with the registry's latest version
        return FileSchemas({PLAIN_AVRO_SCHEMA_ID: reader}), reader
    return glue, reader


def _glue(aws: AwsSettings, registry: RegistrySettings) -> GlueSchemaRegistry:
    """The Glue registry client for the settings."""
    return GlueSchemaRegistry(glue_client(aws, registry), registry_name=registry.registry_name)
