"""Spark Kafka source options from typed settings: subscription, limits, and broker auth.

Auth modes map onto what Amazon MSK offers:

- ``iam``: SASL_SSL + ``AWS_MSK_IAM`` with the aws-msk-iam-auth login module and callback
  handler (optionally assuming a role or using a named profile);
- ``scram``: SCRAM-SHA-512 (MSK keeps these credentials in Secrets Manager);
- ``tls``: SSL, optionally mutual TLS with a keystore;
- ``plaintext``: no auth (local broker, private dev clusters).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from etl.config import AuthMode, KafkaAuth, SourceSettings
from etl.exceptions import SecretError

IAM_LOGIN_MODULE = "software.amazon.msk.auth.iam.IAMLoginModule"
IAM_CALLBACK_HANDLER = "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
SCRAM_MECHANISM = "SCRAM-SHA-512"
REDACTED = "*********(redacted)"
_SECRET_KEY = re.compile(r"(?i)password|secret|jaas|token|access[._-]?key")

# (username, password) for a SCRAM auth block; injectable so tests need no AWS
ScramCredentials = Callable[[KafkaAuth], tuple[str, str]]


def kafka_source_options(
    source: SourceSettings, *, scram_credentials: ScramCredentials | None = None
) -> dict[str, str]:
    """Returns the options for ``spark.readStream.format("kafka")``.

    Args:
        source: The pipeline's source settings.
        scram_credentials: Looks up SCRAM credentials; defaults to env var, then Secrets
            Manager (see ``etl.secrets.scram_credentials``).

    Returns:
        Option name -> value. Contains secrets for ``scram``: log it only via ``redact``.
    """
    options: dict[str, str] = {"kafka.bootstrap.servers": source.bootstrap_servers}
    if source.topics:
        options["subscribe"] = ",".join(source.topics)
    else:
        assert source.topic_pattern is not None  # enforced by SourceSettings
        options["subscribePattern"] = source.topic_pattern
    options["startingOffsets"] = source.starting_offsets
    options["failOnDataLoss"] = str(source.fail_on_data_loss).lower()
    optional = {
        "maxOffsetsPerTrigger": source.max_offsets_per_trigger,
        "minOffsetsPerTrigger": source.min_offsets_per_trigger,
        "maxTriggerDelay": source.max_trigger_delay,
        "minPartitions": source.min_partitions,
    }
    options.update({k: str(v) for k, v in optional.items() if v is not None})
    options.update(auth_options(source.auth, scram_credentials=scram_credentials))
    options.update(source.options)
    return options


def auth_options(
    auth: KafkaAuth, *, scram_credentials: ScramCredentials | None = None
) -> dict[str, str]:
    """Returns the ``kafka.``-prefixed client options for one auth mode."""
    if auth.mode is AuthMode.PLAINTEXT:
        return {"kafka.security.protocol": "PLAINTEXT"}
    if auth.mode is AuthMode.TLS:
        return {"kafka.security.protocol": "SSL", **_tls_stores(auth)}
    if auth.mode is AuthMode.IAM:
        return {
            "kafka.security.protocol": "SASL_SSL",
            "kafka.sasl.mechanism": "AWS_MSK_IAM",
            "kafka.sasl.jaas.config": _jaas(
                IAM_LOGIN_MODULE,
                {
                    "awsRoleArn": auth.role_arn,
                    "awsRoleSessionName": auth.role_session_name,
                    "awsStsRegion": auth.sts_region,
                    "awsProfileName": auth.profile,
                },
            ),
            "kafka.sasl.client.callback.handler.class": IAM_CALLBACK_HANDLER,
            **_tls_stores(auth),
        }
    if scram_credentials is None:
        from etl.secrets import scram_credentials as default_lookup

        scram_credentials = default_lookup
    username, password = scram_credentials(auth)
    options = {
        "kafka.security.protocol": "SASL_SSL" if auth.tls else "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": SCRAM_MECHANISM,
        "kafka.sasl.jaas.config": _jaas(
            SCRAM_LOGIN_MODULE, {"username": username, "password": password}
        ),
    }
    if auth.tls:
        options.update(_tls_stores(auth))
    return options


def _tls_stores(auth: KafkaAuth) -> dict[str, str]:
    """Truststore / keystore options when configured (MSK's public CAs need none)."""
    options: dict[str, str] = {}
    if auth.truststore_location:
        options["kafka.ssl.truststore.location"] = auth.truststore_location
    if auth.keystore_location:
        options["kafka.ssl.keystore.location"] = auth.keystore_location
        if auth.keystore_password_env:
            password = os.environ.get(auth.keystore_password_env)
            if password is None:
                raise SecretError(
                    f"keystore_password_env: expected env var {auth.keystore_password_env} "
                    "to be set, found it unset"
                )
            options["kafka.ssl.keystore.password"] = password
    return options


def _jaas(module: str, values: Mapping[str, str | None]) -> str:
    """Renders a JAAS line, quoting values the way Kafka's JaasConfig tokenizer reads them."""
    parts = [module, "required"]
    for key, value in values.items():
        if value is not None:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{key}="{escaped}"')
    return " ".join(parts) + ";"


def redact(options: Mapping[str, str]) -> dict[str, str]:
    """Returns a copy safe to log: values of secret-looking keys are masked."""
    return {k: (REDACTED if _SECRET_KEY.search(k) else v) for k, v in options.items()}
