"""The forget list: which data subjects are erased, as keyed hashes, applied at ingest.

One table per pipeline (the pipeline's format, ``PipelineSettings.forget_list``), one row per
subject and erasure request: ``request_id``, ``requested_at``, ``subject_hash`` (HMAC-SHA256
of the subject's value under the secret salt; the raw value is never stored). The streaming
ingest and ``jobs.replay_dlq`` read it once per batch and drop the records of listed subjects
before any write (counted ``forgotten``), so a replay of Kafka cannot bring them back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from etl.config import AwsSettings, PipelineSettings, PrivacySettings
from etl.exceptions import ConfigError
from etl.formats import CommitInfo, TableSink, side_table
from etl.secrets import privacy_salt
from transforms.columns import FORGOTTEN, KAFKA_KEY
from transforms.privacy import SUBJECT_HASH, keyed_hash, mark_forgotten, subject_hash

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

FORGET_SCHEMA = "request_id string, requested_at timestamp, subject_hash string"


def forget_query_id(request_id: str) -> str:
    """The query id of a request's commits (its forget-list append, its deletes)."""
    return f"forget-{request_id}"


@dataclass
class ForgetList:
    """A pipeline's forget list: recording requests, flagging forgotten subjects' records."""

    sink: TableSink
    privacy: PrivacySettings
    salt: bytes

    def hashes(self, spark: SparkSession) -> DataFrame | None:
        """The listed hashes as a small local frame (one read: every pass over a batch sees
        the same list), or None when nobody is listed."""
        if not self.sink.exists(spark):
            return None
        listed = sorted(
            {str(r[0]) for r in self.sink.read(spark).select(SUBJECT_HASH).distinct().collect()}
        )
        if not listed:
            return None
        return spark.createDataFrame([(h,) for h in listed], f"{SUBJECT_HASH} string")

    def marker(self, spark: SparkSession) -> Callable[[DataFrame], DataFrame]:
        """A transform flagging (``FORGOTTEN``) the flattened records of listed subjects."""
        return mark_forgotten(
            fields=self.privacy.subject_fields,
            key_column=KAFKA_KEY if self.privacy.key_is_subject else None,
            forgotten=self.hashes(spark),
            hash_value=keyed_hash(salt=self.salt),
            flag=FORGOTTEN,
        )

    def record(
        self,
        spark: SparkSession,
        pipeline: str,
        *,
        request_id: str,
        requested_at: dt.datetime,
        subjects: Sequence[str],
    ) -> bool:
        """Appends a request's subjects (hashed) in one commit, once; True if it did now."""
        commit = CommitInfo(pipeline, forget_query_id(request_id), 0)
        last = self.sink.last_committed_batch(spark, commit.query_id)
        if last is not None:
            return False
        rows = spark.createDataFrame(
            [(request_id, requested_at, subject_hash(self.salt, s)) for s in sorted(set(subjects))],
            FORGET_SCHEMA,
        )
        self.sink.prepare(spark, rows.schema)
        self.sink.append(rows, commit)
        return True


def build_forget_list(pipeline: PipelineSettings, aws: AwsSettings) -> ForgetList | None:
    """The pipeline's forget list, or None without a ``privacy`` section.

    Raises:
        SecretError: The salt is missing or too short.
    """
    privacy = pipeline.privacy
    if privacy is None:
        return None
    forget = pipeline.forget_list
    salt = privacy_salt(privacy, endpoint_url=aws.endpoint_url, region=aws.region)
    return ForgetList(side_table(pipeline.sink.format, forget), privacy, salt)


def check_subject_fields(pipeline: PipelineSettings, name: str, reader_schema: str) -> None:
    """Fails unless every subject field is a top-level field of the reader schema.

    Raises:
        ConfigError: A subject field is unknown (the message names the key and the fields).
    """
    privacy = pipeline.privacy
    if privacy is None:
        return
    fields = {f["name"] for f in json.loads(reader_schema).get("fields", [])}
    missing = [f for f in privacy.subject_fields if f not in fields]
    if missing:
        raise ConfigError(
            f"pipelines.{name}.privacy.subject_fields: expected fields of the reader schema "
            f"({', '.join(sorted(fields))}), found {', '.join(missing)}"
        )
