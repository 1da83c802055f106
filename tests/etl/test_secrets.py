"""SCRAM credentials: env var first, then Secrets Manager (moto); values never in errors."""

from __future__ import annotations

import json
import traceback
import uuid
from typing import Any

import boto3
import pytest

import etl.secrets
from etl.config import KafkaAuth, PrivacySettings
from etl.exceptions import SecretError
from etl.secrets import privacy_salt, scram_credentials

PASSWORD_ENV = "ETL_TEST_SCRAM_PASSWORD"
REGION = "us-east-1"
# a distinctive value, so a leak into any message is unmistakable
SECRET_VALUE = "s3cr3t-Value-4f9d"


def _scram(**fields: Any) -> KafkaAuth:
    return KafkaAuth.model_validate({"mode": "scram", **fields})


def _chain_text(err: BaseException) -> str:
    """Everything an exception shows: str, the repr of each chained exception, the traceback."""
    parts = [str(err), "".join(traceback.format_exception(err))]
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(repr(current))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


# --- env var -------------------------------------------------------------------------------


def test_scram_credentials_env_password_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")

    def no_secrets_manager(secret_id: str, **_: Any) -> dict[str, str]:
        raise AssertionError(f"Secrets Manager read for {secret_id} although the env var is set")

    monkeypatch.setattr(etl.secrets, "_secret_json", no_secrets_manager)
    auth = _scram(username="etl", password_env=PASSWORD_ENV, secret_id="AmazonMSK_etl")

    assert scram_credentials(auth) == ("etl", "from-env")


def test_scram_credentials_env_unset_without_secret_id_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    auth = _scram(username="etl", password_env=PASSWORD_ENV)

    with pytest.raises(
        SecretError,
        match=rf"^scram: expected env var {PASSWORD_ENV} to hold the password, found it unset$",
    ):
        scram_credentials(auth)


# --- Secrets Manager on the local moto server ----------------------------------------------


def _create_secret(stack: Any, value: str) -> str:
    """Stores a secret string under a fresh name (the server lives for the whole session)."""
    name = f"AmazonMSK_etl-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("secretsmanager", **stack.info.boto3_kwargs())
    client.create_secret(Name=name, SecretString=value)
    return name


@pytest.mark.integration
def test_scram_credentials_reads_secrets_manager(local_stack: Any) -> None:
    secret_id = _create_secret(
        local_stack, json.dumps({"username": "etl-msk", "password": SECRET_VALUE})
    )

    credentials = scram_credentials(
        _scram(secret_id=secret_id), endpoint_url=local_stack.info.aws_endpoint, region=REGION
    )

    assert credentials == ("etl-msk", SECRET_VALUE)


@pytest.mark.integration
def test_scram_credentials_env_unset_falls_back_to_secret(
    local_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    # MSK secrets may hold only the password: the username then comes from the auth block
    secret_id = _create_secret(local_stack, json.dumps({"password": SECRET_VALUE}))
    auth = _scram(username="etl-from-yaml", password_env=PASSWORD_ENV, secret_id=secret_id)

    credentials = scram_credentials(auth, endpoint_url=local_stack.info.aws_endpoint, region=REGION)

    assert credentials == ("etl-from-yaml", SECRET_VALUE)


@pytest.mark.integration
def test_scram_credentials_secret_not_json_hides_the_value(local_stack: Any) -> None:
    secret_id = _create_secret(local_stack, f"password={SECRET_VALUE}")

    with pytest.raises(SecretError) as info:
        scram_credentials(
            _scram(secret_id=secret_id), endpoint_url=local_stack.info.aws_endpoint, region=REGION
        )

    assert str(info.value) == f"secret {secret_id}: expected a JSON object, found other text"
    assert info.value.__cause__ is None
    assert SECRET_VALUE not in _chain_text(info.value)


@pytest.mark.integration
def test_scram_credentials_secret_json_not_an_object_hides_the_value(local_stack: Any) -> None:
    secret_id = _create_secret(local_stack, json.dumps(["etl", SECRET_VALUE]))

    with pytest.raises(SecretError) as info:
        scram_credentials(
            _scram(secret_id=secret_id), endpoint_url=local_stack.info.aws_endpoint, region=REGION
        )

    assert str(info.value) == f"secret {secret_id}: expected a JSON object, found list"
    assert SECRET_VALUE not in _chain_text(info.value)


@pytest.mark.integration
def test_scram_credentials_secret_without_password_names_keys_not_values(
    local_stack: Any,
) -> None:
    secret_id = _create_secret(
        local_stack, json.dumps({"username": "etl-msk", "passwd": SECRET_VALUE})
    )

    with pytest.raises(SecretError) as info:
        scram_credentials(
            _scram(secret_id=secret_id), endpoint_url=local_stack.info.aws_endpoint, region=REGION
        )

    assert str(info.value) == (
        f"scram: expected secret {secret_id} to hold username and password, "
        "found keys ['passwd', 'username']"
    )
    assert SECRET_VALUE not in _chain_text(info.value)


@pytest.mark.integration
def test_scram_credentials_missing_secret_raises_without_chaining(local_stack: Any) -> None:
    secret_id = f"AmazonMSK_etl-test-missing-{uuid.uuid4().hex[:12]}"

    with pytest.raises(SecretError) as info:
        scram_credentials(
            _scram(secret_id=secret_id), endpoint_url=local_stack.info.aws_endpoint, region=REGION
        )

    # boto3's modelled error class (a ClientError subclass) names the failure
    assert str(info.value) == f"secret {secret_id}: cannot be read (ResourceNotFoundException)"
    # `from None`: the ClientError (request ids, ARNs) is neither the cause nor shown
    assert (info.value.__cause__, info.value.__suppress_context__) == (None, True)
    assert "An error occurred" not in "".join(traceback.format_exception(info.value))


# --- the privacy salt ----------------------------------------------------------------------

SALT_ENV = "ETL_TEST_PRIVACY_SALT"


def _privacy(**fields: Any) -> PrivacySettings:
    return PrivacySettings.model_validate(
        {"subject_fields": ["customer_id"], "salt_env": SALT_ENV, **fields}
    )


def test_privacy_salt_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SALT_ENV, SECRET_VALUE + "-long-enough")

    assert (
        privacy_salt(_privacy(salt_secret_id="unused")) == (SECRET_VALUE + "-long-enough").encode()
    )


def test_privacy_salt_missing_names_where_it_was_looked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)

    with pytest.raises(
        SecretError,
        match=rf"^privacy salt: expected env var {SALT_ENV} to hold the forget list's hash key, "
        "found it unset$",
    ):
        privacy_salt(_privacy())


def test_privacy_salt_too_short_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SALT_ENV, "short-s3cr3t")

    with pytest.raises(SecretError) as info:
        privacy_salt(_privacy())

    assert str(info.value) == (
        f"privacy salt: expected at least 16 bytes in env var {SALT_ENV}, found 12"
    )
    assert "short-s3cr3t" not in _chain_text(info.value)


@pytest.mark.integration
def test_privacy_salt_reads_a_secret_string_or_its_salt_key(
    local_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    plain = _create_secret(local_stack, SECRET_VALUE + "-plain-salt")
    keyed = _create_secret(local_stack, json.dumps({"salt": SECRET_VALUE + "-json-salt"}))
    wrong = _create_secret(local_stack, json.dumps({"pepper": SECRET_VALUE + "-json-salt"}))
    endpoint = {"endpoint_url": local_stack.info.aws_endpoint, "region": REGION}

    assert (
        privacy_salt(_privacy(salt_secret_id=plain), **endpoint)
        == (SECRET_VALUE + "-plain-salt").encode()
    )
    assert (
        privacy_salt(_privacy(salt_secret_id=keyed), **endpoint)
        == (SECRET_VALUE + "-json-salt").encode()
    )
    with pytest.raises(SecretError) as info:
        privacy_salt(_privacy(salt_secret_id=wrong), **endpoint)
    assert "found keys ['pepper']" in str(info.value)
    assert SECRET_VALUE not in _chain_text(info.value)
