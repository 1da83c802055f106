"""Domain exceptions: every error the product raises on purpose is one of these."""

from __future__ import annotations


class EtlError(Exception):
    """Base class of every error raised on purpose by this project."""


class ConfigError(EtlError, ValueError):
    """The configuration file or an environment override is invalid."""


class LocalStackError(EtlError):
    """The embedded local stack (broker, registry API server) failed to start or stop."""


class FrameError(EtlError, ValueError):
    """A Kafka record value is not a valid Glue or Confluent wire frame."""


class SchemaRegistryError(EtlError):
    """The schema registry answered with an error other than 'not found'."""


class SchemaNotFoundError(SchemaRegistryError, LookupError):
    """The registry does not know the requested schema version."""


class RegistryUnavailableError(SchemaRegistryError):
    """The registry could not be reached after the configured retries."""


class SchemaError(EtlError, ValueError):
    """An Avro schema is invalid or cannot be used as asked."""


class IncompatibleSchemaError(SchemaError):
    """A writer schema version cannot be read into the table's schema."""


class ExpectationFailedError(EtlError):
    """An expectation with action `fail` was violated; the batch was not committed."""


class SinkError(EtlError):
    """A table sink could not create, evolve or commit to its table."""


class SecretError(EtlError):
    """A secret (SCRAM password, credentials) could not be found or read."""


class MaintenanceError(EtlError):
    """A maintenance task cannot run on a table, or failed (the table is left as it was)."""


class ErasureError(EtlError):
    """An erasure request is invalid, or a table could not be erased or verified clean."""


class DeployError(ConfigError):
    """A deployment target cannot be rendered from the settings: its ``deploy`` section is
    missing, or a setting does not fit the target (the message names the key)."""


class StopRequested(EtlError):
    """A graceful stop was asked for before a micro-batch started: it was not run (nothing of
    it is committed) and runs again on restart."""

    # recognisable in the StreamingQueryException Spark wraps it in
    MARKER = "graceful stop requested"
