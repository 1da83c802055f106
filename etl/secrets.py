"""Secret lookups: env vars first, then AWS Secrets Manager. Values are never logged."""

from __future__ import annotations

import json
import os

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from etl.config import KafkaAuth, PrivacySettings
from etl.exceptions import SecretError


def scram_credentials(
    auth: KafkaAuth, *, endpoint_url: str | None = None, region: str | None = None
) -> tuple[str, str]:
    """Returns (username, password) for a SCRAM auth block.

    The env var named by ``password_env`` wins; otherwise the Secrets Manager secret
    ``secret_id`` is read (MSK's format: ``{"username": ..., "password": ...}``).

    Raises:
        SecretError: Neither source yields both a username and a password.
    """
    if auth.password_env:
        password = os.environ.get(auth.password_env)
        if password is not None:
            if not auth.username:
                raise SecretError("scram: expected `username` with `password_env`, found none")
            return auth.username, password
        if not auth.secret_id:
            raise SecretError(
                f"scram: expected env var {auth.password_env} to hold the password, found it unset"
            )
    assert auth.secret_id is not None  # enforced by KafkaAuth
    secret = _secret_json(auth.secret_id, endpoint_url=endpoint_url, region=region)
    username = secret.get("username") or auth.username
    password = secret.get("password")
    if not username or not password:
        raise SecretError(
            f"scram: expected secret {auth.secret_id} to hold username and password, "
            f"found keys {sorted(secret)}"
        )
    return str(username), str(password)


# a shorter key makes the forget list's hashes of short identifiers easy to brute-force
MIN_SALT_BYTES = 16


def privacy_salt(
    privacy: PrivacySettings, *, endpoint_url: str | None = None, region: str | None = None
) -> bytes:
    """The secret key of the forget list's subject hashes.

    The env var ``salt_env`` wins; otherwise the Secrets Manager secret ``salt_secret_id``
    (its string, or the ``salt`` key of a JSON object).

    Raises:
        SecretError: Neither source yields a key, or it is shorter than ``MIN_SALT_BYTES``.
    """
    value = os.environ.get(privacy.salt_env)
    source = f"env var {privacy.salt_env}"
    if value is None and privacy.salt_secret_id:
        source = f"secret {privacy.salt_secret_id}"
        value = _secret_string(privacy.salt_secret_id, endpoint_url=endpoint_url, region=region)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            if not isinstance(parsed.get("salt"), str):
                raise SecretError(
                    f"{source}: expected a string or a JSON object with a `salt` string, "
                    f"found keys {sorted(parsed)}"
                )
            value = parsed["salt"]
    if value is None:
        where = f"env var {privacy.salt_env}" + (
            f" or secret {privacy.salt_secret_id}" if privacy.salt_secret_id else ""
        )
        raise SecretError(
            f"privacy salt: expected {where} to hold the forget list's hash key, found it unset"
        )
    salt = value.encode()
    if len(salt) < MIN_SALT_BYTES:
        raise SecretError(
            f"privacy salt: expected at least {MIN_SALT_BYTES} bytes in {source}, found {len(salt)}"
        )
    return salt


def _secret_string(secret_id: str, *, endpoint_url: str | None, region: str | None) -> str:
    """Reads a secret's string from Secrets Manager."""
    client = boto3.client("secretsmanager", endpoint_url=endpoint_url, region_name=region)
    try:
        return str(client.get_secret_value(SecretId=secret_id)["SecretString"])
    except (ClientError, BotoCoreError) as err:
        # the error names the secret and the failure, never a value
        raise SecretError(f"secret {secret_id}: cannot be read ({type(err).__name__})") from None


def _secret_json(secret_id: str, *, endpoint_url: str | None, region: str | None) -> dict[str, str]:
    """Reads a JSON secret string from Secrets Manager."""
    raw = _secret_string(secret_id, endpoint_url=endpoint_url, region=region)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise SecretError(f"secret {secret_id}: expected a JSON object, found other text") from None
    if not isinstance(value, dict):
        raise SecretError(
            f"secret {secret_id}: expected a JSON object, found {type(value).__name__}"
        )
    return value
