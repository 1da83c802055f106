"""Spark Kafka source options per auth mode, redaction, and the JAAS lines in the real JVM."""

from __future__ import annotations

from typing import Any

import pytest

from etl.config import KafkaAuth, SourceSettings
from etl.exceptions import SecretError
from etl.kafka import (
    IAM_CALLBACK_HANDLER,
    IAM_LOGIN_MODULE,
    REDACTED,
    SCRAM_LOGIN_MODULE,
    kafka_source_options,
    redact,
)

BOOTSTRAP = "b-1.mycluster.abc123.c2.kafka.us-east-1.amazonaws.com:9098"
# the subscription part every source below shares
BASE = {
    "kafka.bootstrap.servers": BOOTSTRAP,
    "subscribe": "orders,payments",
    "startingOffsets": "earliest",
    "failOnDataLoss": "true",
}
# a password that needs escaping inside a JAAS quoted string
TRICKY_PASSWORD = r'p"a\n\ss w0rd'  # quote, backslash-n (two characters), backslash, space
TRICKY_JAAS = (
    "org.apache.kafka.common.security.scram.ScramLoginModule required "
    r'username="etl" password="p\"a\\n\\ss w0rd";'
)
ROLE_ARN = "arn:aws:iam::123456789012:role/msk-consumer"


def _source(auth: dict[str, Any] | None = None, **fields: Any) -> SourceSettings:
    return SourceSettings.model_validate(
        {
            "bootstrap_servers": BOOTSTRAP,
            "topics": ["orders", "payments"],
            "auth": auth or {},
            **fields,
        }
    )


class _Credentials:
    """An injected SCRAM lookup that records the auth blocks it was asked about."""

    def __init__(self, username: str = "etl", password: str = TRICKY_PASSWORD) -> None:
        self.seen: list[KafkaAuth] = []
        self._pair = (username, password)

    def __call__(self, auth: KafkaAuth) -> tuple[str, str]:
        self.seen.append(auth)
        return self._pair


def _no_scram(auth: KafkaAuth) -> tuple[str, str]:
    raise AssertionError(f"no SCRAM lookup expected for {auth.mode}")


# --- one full option dict per auth mode ----------------------------------------------------


def test_kafka_source_options_plaintext() -> None:
    options = kafka_source_options(_source(), scram_credentials=_no_scram)

    assert options == {**BASE, "kafka.security.protocol": "PLAINTEXT"}


def test_kafka_source_options_tls_without_stores() -> None:
    options = kafka_source_options(_source({"mode": "tls"}), scram_credentials=_no_scram)

    assert options == {**BASE, "kafka.security.protocol": "SSL"}


def test_kafka_source_options_mutual_tls_reads_keystore_password_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_TEST_KEYSTORE_PW", "ks-secret")
    auth = {
        "mode": "tls",
        "truststore_location": "/etc/kafka/truststore.jks",
        "keystore_location": "/etc/kafka/keystore.jks",
        "keystore_password_env": "ETL_TEST_KEYSTORE_PW",
    }

    options = kafka_source_options(_source(auth), scram_credentials=_no_scram)

    assert options == {
        **BASE,
        "kafka.security.protocol": "SSL",
        "kafka.ssl.truststore.location": "/etc/kafka/truststore.jks",
        "kafka.ssl.keystore.location": "/etc/kafka/keystore.jks",
        "kafka.ssl.keystore.password": "ks-secret",
    }


def test_kafka_source_options_keystore_without_password_env() -> None:
    auth = {"mode": "tls", "keystore_location": "/etc/kafka/keystore.jks"}

    options = kafka_source_options(_source(auth), scram_credentials=_no_scram)

    assert options == {
        **BASE,
        "kafka.security.protocol": "SSL",
        "kafka.ssl.keystore.location": "/etc/kafka/keystore.jks",
    }


def test_kafka_source_options_keystore_password_env_unset_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ETL_TEST_KEYSTORE_PW", raising=False)
    auth = {
        "mode": "tls",
        "keystore_location": "/etc/kafka/keystore.jks",
        "keystore_password_env": "ETL_TEST_KEYSTORE_PW",
    }

    with pytest.raises(
        SecretError,
        match=r"^keystore_password_env: expected env var ETL_TEST_KEYSTORE_PW to be set, "
        r"found it unset$",
    ):
        kafka_source_options(_source(auth), scram_credentials=_no_scram)


def test_kafka_source_options_scram_over_tls_quotes_the_password() -> None:
    credentials = _Credentials()
    source = _source(
        {"mode": "scram", "secret_id": "AmazonMSK_etl", "truststore_location": "/t.jks"}
    )

    options = kafka_source_options(source, scram_credentials=credentials)

    assert options == {
        **BASE,
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": TRICKY_JAAS,
        "kafka.ssl.truststore.location": "/t.jks",
    }
    assert credentials.seen == [source.auth]


def test_kafka_source_options_scram_without_tls_ignores_stores() -> None:
    credentials = _Credentials()
    source = _source(
        {
            "mode": "scram",
            "username": "etl",
            "password_env": "ETL_TEST_SCRAM_PW",
            "tls": False,
            "truststore_location": "/t.jks",
        }
    )

    options = kafka_source_options(source, scram_credentials=credentials)

    assert options == {
        **BASE,
        "kafka.security.protocol": "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": TRICKY_JAAS,
    }
    assert credentials.seen == [source.auth]


def test_kafka_source_options_iam_without_extras() -> None:
    options = kafka_source_options(_source({"mode": "iam"}), scram_credentials=_no_scram)

    assert options == {
        **BASE,
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "AWS_MSK_IAM",
        "kafka.sasl.jaas.config": "software.amazon.msk.auth.iam.IAMLoginModule required;",
        "kafka.sasl.client.callback.handler.class": (
            "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
        ),
    }


def test_kafka_source_options_iam_with_role_profile_and_truststore() -> None:
    auth = {
        "mode": "iam",
        "role_arn": ROLE_ARN,
        "role_session_name": "etl-orders",
        "sts_region": "eu-west-1",
        "profile": "data-platform",
        "truststore_location": "/etc/pki/java/cacerts",
    }

    options = kafka_source_options(_source(auth), scram_credentials=_no_scram)

    assert options == {
        **BASE,
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "AWS_MSK_IAM",
        "kafka.sasl.jaas.config": (
            "software.amazon.msk.auth.iam.IAMLoginModule required "
            f'awsRoleArn="{ROLE_ARN}" awsRoleSessionName="etl-orders" '
            'awsStsRegion="eu-west-1" awsProfileName="data-platform";'
        ),
        "kafka.sasl.client.callback.handler.class": (
            "software.amazon.msk.auth.iam.IAMClientCallbackHandler"
        ),
        "kafka.ssl.truststore.location": "/etc/pki/java/cacerts",
    }


# --- subscription, limits, pass-through ----------------------------------------------------


def test_kafka_source_options_topic_pattern() -> None:
    source = SourceSettings(bootstrap_servers=BOOTSTRAP, topic_pattern=r"^orders\..*$")

    options = kafka_source_options(source, scram_credentials=_no_scram)

    assert options == {
        "kafka.bootstrap.servers": BOOTSTRAP,
        "subscribePattern": r"^orders\..*$",
        "startingOffsets": "earliest",
        "failOnDataLoss": "true",
        "kafka.security.protocol": "PLAINTEXT",
    }


def test_kafka_source_options_every_limit() -> None:
    source = _source(
        starting_offsets="latest",
        max_offsets_per_trigger=500_000,
        min_offsets_per_trigger=10_000,
        max_trigger_delay="5m",
        min_partitions=96,
        fail_on_data_loss=False,
    )

    options = kafka_source_options(source, scram_credentials=_no_scram)

    assert options == {
        "kafka.bootstrap.servers": BOOTSTRAP,
        "subscribe": "orders,payments",
        "startingOffsets": "latest",
        "failOnDataLoss": "false",
        "maxOffsetsPerTrigger": "500000",
        "minOffsetsPerTrigger": "10000",
        "maxTriggerDelay": "5m",
        "minPartitions": "96",
        "kafka.security.protocol": "PLAINTEXT",
    }


def test_kafka_source_options_pass_through_options_win() -> None:
    source = _source(
        options={
            "kafka.request.timeout.ms": "60000",
            "kafka.security.protocol": "SSL",
            "startingOffsets": '{"orders": {"0": 42}}',
            "includeHeaders": "true",
        }
    )

    options = kafka_source_options(source, scram_credentials=_no_scram)

    assert options == {
        "kafka.bootstrap.servers": BOOTSTRAP,
        "subscribe": "orders,payments",
        "startingOffsets": '{"orders": {"0": 42}}',
        "failOnDataLoss": "true",
        "kafka.security.protocol": "SSL",
        "kafka.request.timeout.ms": "60000",
        "includeHeaders": "true",
    }


# --- redaction ------------------------------------------------------------------------------


def test_redact_masks_jaas_and_passwords_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_TEST_KEYSTORE_PW", "ks-secret")
    source = _source(
        {
            "mode": "scram",
            "secret_id": "AmazonMSK_etl",
            "keystore_location": "/k.jks",
            "keystore_password_env": "ETL_TEST_KEYSTORE_PW",
        }
    )
    options = kafka_source_options(source, scram_credentials=_Credentials())

    assert redact(options) == {
        **BASE,
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": REDACTED,
        "kafka.ssl.keystore.location": "/k.jks",
        "kafka.ssl.keystore.password": REDACTED,
    }


def test_redact_masks_other_secret_looking_keys() -> None:
    options = {
        "kafka.ssl.key.password": "a",
        "kafka.ssl.truststore.password": "b",
        "kafka.sasl.oauthbearer.token.endpoint.url": "c",
        "kafka.aws.secret.name": "d",
        "fs.s3a.access.key": "e",
        "kafka.ssl.truststore.location": "/t.jks",
        "subscribe": "orders",
    }

    assert redact(options) == {
        "kafka.ssl.key.password": REDACTED,
        "kafka.ssl.truststore.password": REDACTED,
        "kafka.sasl.oauthbearer.token.endpoint.url": REDACTED,
        "kafka.aws.secret.name": REDACTED,
        "fs.s3a.access.key": REDACTED,
        "kafka.ssl.truststore.location": "/t.jks",
        "subscribe": "orders",
    }


def test_redact_returns_a_copy() -> None:
    options = {"kafka.sasl.jaas.config": "x required;"}

    redact(options)

    assert options == {"kafka.sasl.jaas.config": "x required;"}


# --- the real JVM: classes load, JAAS lines parse -----------------------------------------


def _jaas_entry(spark: Any, jaas_line: str) -> tuple[str, dict[str, str]]:
    """Parses a JAAS line with Kafka's own JaasConfig; returns (login module, options)."""
    jvm = spark.sparkContext._jvm
    config = jvm.org.apache.kafka.common.security.JaasConfig("KafkaClient", jaas_line)
    entries = config.getAppConfigurationEntry("KafkaClient")
    assert len(entries) == 1
    entry = entries[0]
    options = entry.getOptions()
    return str(entry.getLoginModuleName()), {str(k): str(options[k]) for k in options.keySet()}


def test_auth_classes_load_and_jaas_lines_parse_in_the_jvm(spark: Any) -> None:
    jvm = spark.sparkContext._jvm
    loaded = [
        jvm.java.lang.Class.forName(name).getName()
        for name in (IAM_LOGIN_MODULE, IAM_CALLBACK_HANDLER, SCRAM_LOGIN_MODULE)
    ]
    assert loaded == [
        "software.amazon.msk.auth.iam.IAMLoginModule",
        "software.amazon.msk.auth.iam.IAMClientCallbackHandler",
        "org.apache.kafka.common.security.scram.ScramLoginModule",
    ]

    iam = kafka_source_options(
        _source(
            {
                "mode": "iam",
                "role_arn": ROLE_ARN,
                "role_session_name": "etl-orders",
                "sts_region": "eu-west-1",
                "profile": "data-platform",
            }
        ),
        scram_credentials=_no_scram,
    )
    assert _jaas_entry(spark, iam["kafka.sasl.jaas.config"]) == (
        IAM_LOGIN_MODULE,
        {
            "awsRoleArn": ROLE_ARN,
            "awsRoleSessionName": "etl-orders",
            "awsStsRegion": "eu-west-1",
            "awsProfileName": "data-platform",
        },
    )

    bare_iam = kafka_source_options(_source({"mode": "iam"}), scram_credentials=_no_scram)
    assert _jaas_entry(spark, bare_iam["kafka.sasl.jaas.config"]) == (IAM_LOGIN_MODULE, {})

    scram = kafka_source_options(
        _source({"mode": "scram", "secret_id": "AmazonMSK_etl"}),
        scram_credentials=_Credentials(password=TRICKY_PASSWORD),
    )
    # the quote, the backslash and the space survive Kafka's JAAS tokenizer unchanged
    assert _jaas_entry(spark, scram["kafka.sasl.jaas.config"]) == (
        SCRAM_LOGIN_MODULE,
        {"username": "etl", "password": TRICKY_PASSWORD},
    )
