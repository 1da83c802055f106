"""Typed settings: one YAML file per environment, overridable by ``ETL__``-prefixed env vars.

A file is parsed once into frozen pydantic models. Any key can be overridden from the
environment with ``ETL__`` and ``__`` for nesting, e.g.
``ETL__PIPELINES__ORDERS__SOURCE__BOOTSTRAP_SERVERS=b-1.msk:9098``. Secrets are never read from
YAML: the models name the environment variable or the Secrets Manager secret that holds them.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from etl.exceptions import ConfigError
from transforms.expectations import Expectation
from transforms.wire import WireFormat

ENV_PREFIX = "ETL__"
# pipeline and expectation names: they end up in table properties, metric keys and log lines
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthMode(enum.StrEnum):
    """How the Kafka client authenticates to the brokers."""

    PLAINTEXT = "plaintext"
    TLS = "tls"
    SCRAM = "scram"
    IAM = "iam"


class KafkaAuth(_Model):
    """Broker authentication; secrets are referenced, never inlined."""

    mode: AuthMode = AuthMode.PLAINTEXT
    # scram: the password comes from the env var `password_env`, else from the Secrets Manager
    # secret `secret_id` (MSK's convention: JSON {"username": ..., "password": ...}).
    username: str | None = None
    password_env: str | None = None
    secret_id: str | None = None
    # scram over TLS (MSK) or over plain TCP (the local broker)
    tls: bool = True
    # iam: optional role to assume and/or named profile
    role_arn: str | None = None
    role_session_name: str | None = None
    sts_region: str | None = None
    profile: str | None = None
    # tls: optional truststore / keystore for private CAs and mutual TLS
    truststore_location: str | None = None
    keystore_location: str | None = None
    keystore_password_env: str | None = None

    @model_validator(mode="after")
    def _check_mode_fields(self) -> KafkaAuth:
        if self.mode is AuthMode.SCRAM and not (self.password_env or self.secret_id):
            raise ValueError("scram needs `password_env` or `secret_id` (found neither)")
        if self.mode is AuthMode.SCRAM and self.password_env and not self.username:
            raise ValueError("scram with `password_env` needs `username`")
        return self


# Kafka's legal group ids are any string; MSK emits lag metrics only for ASCII ones without ':'
CONSUMER_GROUP_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
DEFAULT_GROUP_PREFIX = "streaming-etl."


class SourceSettings(_Model):
    """The Kafka source of one pipeline (Spark's Kafka source options, typed)."""

    bootstrap_servers: str
    topics: list[str] | None = None
    topic_pattern: str | None = None
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)
    min_offsets_per_trigger: int | None = Field(default=None, gt=0)
    max_trigger_delay: str | None = None
    min_partitions: int | None = Field(default=None, gt=0)
    fail_on_data_loss: bool = True
    auth: KafkaAuth = KafkaAuth()
    # extra options passed through as-is (e.g. "kafka.request.timeout.ms")
    options: dict[str, str] = Field(default_factory=dict)
    # after each committed batch its end offsets are committed to this Kafka consumer group,
    # so kafka-consumer-groups, Burrow and MSK's lag metrics see the stream (Spark's source
    # itself commits none); default: streaming-etl.<pipeline>. MSK reports lag only for
    # ASCII names without ':'
    consumer_group: str | None = Field(default=None, pattern=CONSUMER_GROUP_PATTERN)
    commit_offsets: bool = True

    def group_id(self, pipeline: str) -> str:
        """The consumer group this pipeline's offsets are committed to."""
        return self.consumer_group or f"{DEFAULT_GROUP_PREFIX}{pipeline}"

    @model_validator(mode="after")
    def _one_subscription(self) -> SourceSettings:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("exactly one of `topics` or `topic_pattern` must be set")
        return self


class DecodeSettings(_Model):
    """How record values are framed and which Avro schema the table follows."""

    wire_format: WireFormat = WireFormat.GLUE
    # the reader schema (the table's schema): an .avsc file, or a registry schema name whose
    # latest version is used. For plain_avro (no header: the "assumed schema" mode) it is also
    # the writer schema.
    schema_file: Path | None = None
    schema_name: str | None = None
    # confluent ids resolved from files, since the product ships no Confluent registry client
    confluent_schemas: dict[int, Path] = Field(default_factory=dict)
    max_value_bytes: int = Field(default=8 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _one_reader_schema(self) -> DecodeSettings:
        if bool(self.schema_file) == bool(self.schema_name):
            raise ValueError("exactly one of `schema_file` or `schema_name` must be set")
        if self.wire_format is WireFormat.CONFLUENT and not self.schema_file:
            raise ValueError(
                "wire_format confluent needs `schema_file` (no Confluent registry client)"
            )
        return self


class TableFormat(enum.StrEnum):
    """Table formats a sink can write."""

    ICEBERG = "iceberg"
    HUDI = "hudi"
    DELTA = "delta"


class PartitionTransform(enum.StrEnum):
    """How a partition value is derived from a column (Iceberg's transform names)."""

    IDENTITY = "identity"
    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    HOUR = "hour"
    BUCKET = "bucket"
    TRUNCATE = "truncate"


# what a format cannot partition by: Delta and Hudi have no hidden partitioning (time
# transforms become generated or derived columns, see etl.formats.delta / .hudi) and nothing
# for bucket or truncate
_COLUMNS_AND_TIME_ONLY = frozenset({PartitionTransform.BUCKET, PartitionTransform.TRUNCATE})
_UNSUPPORTED_TRANSFORMS = {
    TableFormat.DELTA: _COLUMNS_AND_TIME_ONLY,
    TableFormat.HUDI: _COLUMNS_AND_TIME_ONLY,
}

_TRANSFORM_SPELLINGS = {
    "years": PartitionTransform.YEAR,
    "months": PartitionTransform.MONTH,
    "days": PartitionTransform.DAY,
    "hours": PartitionTransform.HOUR,
    "bucket": PartitionTransform.BUCKET,
    "truncate": PartitionTransform.TRUNCATE,
    **{t.value: t for t in PartitionTransform},
}
_PARTITION_SPEC = re.compile(
    r"^\s*(?:(?P<fn>[a-z]+)\s*\(\s*(?:(?P<n>\d+)\s*,\s*)?(?P<arg>[A-Za-z_][A-Za-z0-9_]*)\s*\)"
    r"|(?P<col>[A-Za-z_][A-Za-z0-9_]*))\s*$"
)


@dataclass(frozen=True)
class PartitionField:
    """One partition field, format-neutral: a column and how its value is bucketed."""

    column: str
    transform: PartitionTransform = PartitionTransform.IDENTITY
    # the bucket count or truncation width
    width: int | None = None

    @classmethod
    def parse(cls, text: str) -> PartitionField:
        """Parses ``order_date``, ``days(order_ts)``, ``bucket(16, customer_id)`` ...

        Raises:
            ValueError: Not one of those shapes, or an unknown transform.
        """
        match = _PARTITION_SPEC.match(text)
        if match is None:
            raise ValueError(
                f"expected a column or transform(column), e.g. days(order_ts), found {text!r}"
            )
        if match["col"]:
            return cls(match["col"])
        transform = _TRANSFORM_SPELLINGS.get(match["fn"])
        if transform is None or transform is PartitionTransform.IDENTITY:
            known = ", ".join(sorted(k for k in _TRANSFORM_SPELLINGS if k != "identity"))
            raise ValueError(f"expected a transform among {known}, found {match['fn']!r}")
        needs_width = transform in (PartitionTransform.BUCKET, PartitionTransform.TRUNCATE)
        if needs_width != (match["n"] is not None):
            shape = f"{match['fn']}(N, column)" if needs_width else f"{match['fn']}(column)"
            raise ValueError(f"expected {shape}, found {text!r}")
        return cls(match["arg"], transform, int(match["n"]) if match["n"] else None)


class TableSettings(_Model):
    """A table a pipeline writes: its name, and for the pipeline's target its layout."""

    table: str
    # where the table's files live (local path or s3:// URI); Hudi and Delta tables need it
    # (they are registered by location), Iceberg tables live where their catalog puts them
    location: str | None = None

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        parts = value.split(".")
        if not all(_SQL_NAME.match(part) for part in parts):
            raise ValueError(f"expected dot-separated names such as db.table, found {value!r}")
        return value


class WriteMode(enum.StrEnum):
    """How a pipeline's batches change its table."""

    # every good record becomes a new row
    APPEND = "append"
    # one row per key: the record with the larger ordering value wins (ties: Kafka offset)
    UPSERT = "upsert"


class DeleteSettings(_Model):
    """Which records delete their key (CDC deletes), for upsert tables."""

    # a decoded field and the value (compared as text) that marks a delete, e.g. op = d
    field: str | None = None
    equals: str | None = None
    # a Kafka tombstone (null value) whose Kafka key is the record key deletes it, instead of
    # being a dead letter; needs a single key field (the key bytes are read as UTF-8 text)
    tombstones: bool = False

    @model_validator(mode="after")
    def _something_deletes(self) -> DeleteSettings:
        if (self.field is None) != (self.equals is None):
            raise ValueError("`field` and `equals` go together (found only one)")
        if self.field is None and not self.tombstones:
            raise ValueError("expected `field` + `equals` and/or `tombstones: true`, found neither")
        return self


class IcebergOptions(_Model):
    """Iceberg-only sink options."""

    # how upserts (MERGE) rewrite data: copy-on-write rewrites the files it touches (no delete
    # files left behind); merge-on-read writes position-delete files (cheaper writes, reads
    # merge them, the old rows stay in the data files until compaction)
    write_mode: Literal["copy-on-write", "merge-on-read"] = "copy-on-write"


class HudiTableType(enum.StrEnum):
    """Hudi's two table types."""

    COPY_ON_WRITE = "COPY_ON_WRITE"
    MERGE_ON_READ = "MERGE_ON_READ"


class HudiOptions(_Model):
    """Hudi-only sink options."""

    table_type: HudiTableType = HudiTableType.COPY_ON_WRITE
    # merge-on-read: compact inline after this many delta commits (Hudi's async compaction
    # does not run inside foreachBatch, apache/hudi#2043)
    compaction_delta_commits: int = Field(default=5, ge=1)
    # Cluster (rewrite small files into files of maintenance.compact's target size, sorted by
    # its sort_by) inline after this many commits, while maintenance.compact is enabled. Hudi's
    # table services run inside the stream's writer: see etl/formats/hudi/maintenance.py
    clustering_commits: int = Field(default=10, ge=1)
    # How an upsert finds the file group that holds a key. RECORD_INDEX (the record-level
    # index in Hudi's metadata table) looks up the batch's keys only, so a micro-batch costs in
    # proportion to its own size, not the table's (SIMPLE and GLOBAL_SIMPLE join the batch
    # with every key of the partitions, or of the table, each time); and it is global, so a
    # key keeps one row even when its partition value changes (the newer change moves it, an
    # older one is ignored), as the upsert rule requires. SIMPLE, BLOOM and BUCKET are per
    # partition: a key whose partition value changes then gets a second row (and GLOBAL_SIMPLE
    # on merge-on-read lost array values in tests/formats/test_hudi.py). On merge-on-read,
    # Hudi 1.0.2 fails the commit that writes a widened column (int -> long) to a log file
    # while it updates the record index ("Found long, expecting union").
    index: Literal["SIMPLE", "BLOOM", "GLOBAL_SIMPLE", "GLOBAL_BLOOM", "BUCKET", "RECORD_INDEX"] = (
        "RECORD_INDEX"
    )
    # After each commit, sync the table and its partitions to the AWS Glue Data Catalog with
    # Hudi's AwsGlueCatalogSyncTool (in the hudi-aws bundle that EMR and Glue's
    # `--datalake-formats hudi` provide), so Athena and Redshift Spectrum see new partitions.
    # Without it the table is still registered by location in the session catalog (Glue's,
    # when the cluster uses the Glue Data Catalog as its metastore), partitions unlisted.
    glue_sync: bool = False


class DeltaOptions(_Model):
    """Delta-only sink options."""

    # off by default: with deletion vectors a DELETE/MERGE leaves the old row inside the
    # Parquet file (marked deleted) until REORG ... APPLY (PURGE) rewrites it
    deletion_vectors: bool = False


_FORMAT_OPTIONS = {
    TableFormat.ICEBERG: "iceberg",
    TableFormat.HUDI: "hudi",
    TableFormat.DELTA: "delta",
}


class SinkSettings(TableSettings):
    """The target table of one pipeline."""

    format: TableFormat = TableFormat.ICEBERG
    # as written in YAML (`order_date`, `days(order_ts)`, `bucket(16, customer_id)`); checked
    # here, typed by `partition_fields`
    partition_by: list[str] = Field(default_factory=list)
    properties: dict[str, str] = Field(default_factory=dict)
    mode: WriteMode = WriteMode.APPEND
    # upsert: the record key field(s) and the ordering field (larger wins; null loses to any
    # value; equal values: the larger Kafka offset wins)
    key: list[str] = Field(default_factory=list)
    ordering: str | None = None
    deletes: DeleteSettings | None = None
    # format-specific options; only the section of `format` may be set
    iceberg: IcebergOptions | None = None
    hudi: HudiOptions | None = None
    delta: DeltaOptions | None = None

    @model_validator(mode="after")
    def _mode_and_options_fit(self) -> SinkSettings:
        for fmt, section in _FORMAT_OPTIONS.items():
            if fmt is not self.format and getattr(self, section) is not None:
                raise ValueError(
                    f"`{section}` options apply to format {fmt.value}, found format "
                    f"{self.format.value}"
                )
        if self.mode is WriteMode.UPSERT:
            if not self.key or self.ordering is None:
                raise ValueError("mode upsert needs `key` (one or more fields) and `ordering`")
            if self.deletes and self.deletes.tombstones and len(self.key) != 1:
                raise ValueError(
                    f"deletes.tombstones needs a single key field, found {len(self.key)}"
                )
        elif self.key or self.ordering or self.deletes:
            raise ValueError("`key`, `ordering` and `deletes` apply to mode upsert only")
        return self

    @property
    def format_options(self) -> dict[str, Any]:
        """The options of the sink's format, defaults filled in."""
        defaults = {"iceberg": IcebergOptions, "hudi": HudiOptions, "delta": DeltaOptions}
        section = _FORMAT_OPTIONS[self.format]
        chosen = getattr(self, section) or defaults[section]()
        options: dict[str, Any] = chosen.model_dump()
        return options

    @field_validator("partition_by")
    @classmethod
    def _parse_partitions(cls, value: list[str], info: ValidationInfo) -> list[str]:
        fmt = info.data.get("format")  # absent when the format itself was invalid
        unsupported = _UNSUPPORTED_TRANSFORMS.get(fmt, frozenset()) if fmt else frozenset()
        for text in value:
            if PartitionField.parse(text).transform in unsupported:
                raise ValueError(
                    f"expected a column or year/month/day/hour(column) for a {fmt} table, "
                    f"found {text!r}"
                )
        return value

    @property
    def partition_fields(self) -> tuple[PartitionField, ...]:
        """The partition fields, format-neutral."""
        return tuple(PartitionField.parse(text) for text in self.partition_by)


class DeadLetterSettings(TableSettings):
    """Where records that cannot be framed, resolved or decoded are kept (the sink's format)."""


class TriggerSettings(_Model):
    """When micro-batches run."""

    mode: Literal["available_now", "processing_time"] = "processing_time"
    interval: str = "30 seconds"


# Files younger than this are never deleted by orphan removal or VACUUM, whatever the
# configuration says: a commit in flight (a micro-batch, a compaction rewriting for an hour)
# has written files no snapshot references yet. Iceberg's own procedure warns below 24 hours.
FILE_AGE_FLOOR_HOURS = 24.0
_CRON_FIELDS = 5
_CRON_MACROS = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"})


def check_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week) or a macro.

    Raises:
        ValueError: Not one, or a field out of range.
    """
    from croniter import croniter

    text = " ".join(expression.split())
    if text in _CRON_MACROS:
        return text
    if len(text.split()) != _CRON_FIELDS or not croniter.is_valid(text):
        raise ValueError(
            "expected a cron expression of five fields (minute hour day-of-month month "
            f"day-of-week, e.g. '0 3 * * *') or one of {', '.join(sorted(_CRON_MACROS))}, "
            f"found {expression!r}"
        )
    return text


class _Task(_Model):
    """What every maintenance task has: whether it runs and when."""

    enabled: bool = True
    # cron, in UTC; the deployment renders it as EMR steps, Glue triggers or crontab lines
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)


class CompactSettings(_Task):
    """Rewriting small files into fewer, larger ones (Iceberg rewrite_data_files, Hudi
    compaction + clustering, Delta OPTIMIZE)."""

    schedule: str | None = "0 */6 * * *"
    target_file_size_mb: int = Field(default=128, ge=1)
    # a file group or partition is rewritten once it has this many files (Iceberg, Hudi)
    min_input_files: int = Field(default=5, ge=2)
    # sort the rewritten rows by these columns (e.g. the GDPR subject key, so an erasure
    # rewrites few files); empty: bin-pack only
    sort_by: list[str] = Field(default_factory=list)
    # interleave the sort columns (z-order) instead of sorting by them in turn
    zorder: bool = False
    # SQL filter on partition columns: rewrite only this part of the table (Iceberg, Delta)
    where: str | None = None

    @model_validator(mode="after")
    def _zorder_needs_columns(self) -> CompactSettings:
        if self.zorder and len(self.sort_by) < 2:
            raise ValueError(
                f"zorder needs two or more `sort_by` columns, found {len(self.sort_by)}"
            )
        return self


class ExpireSettings(_Task):
    """Dropping old snapshots / versions / file versions (Iceberg expire_snapshots, Hudi
    cleaner, Delta VACUUM). The commits exactly-once needs are kept whatever this says."""

    schedule: str | None = "30 2 * * *"
    # snapshots / versions / file versions older than this go (Delta: VACUUM's retention,
    # which also deletes unreferenced files this old, so it has the file-age floor)
    older_than_hours: float = Field(default=168.0, ge=0)
    # keep at least this many snapshots (Iceberg) / commits (Hudi cleaner)
    retain_last: int = Field(default=10, ge=1)


class OrphanSettings(_Task):
    """Deleting files no snapshot references (Iceberg remove_orphan_files; Hudi's cleaner and
    Delta's VACUUM cover it for theirs)."""

    schedule: str | None = "0 4 * * 0"
    older_than_hours: float = 72.0

    @field_validator("older_than_hours")
    @classmethod
    def _floor(cls, value: float) -> float:
        if value < FILE_AGE_FLOOR_HOURS:
            raise ValueError(
                f"expected at least {FILE_AGE_FLOOR_HOURS:g} hours, found {value:g}: a younger "
                "file may belong to a commit still in flight (a running micro-batch or "
                "compaction), and deleting it would corrupt that commit"
            )
        return value


class MaintenanceSettings(_Model):
    """The maintenance jobs of one pipeline's table and dead-letter table (``jobs.maintain``)."""

    compact: CompactSettings = CompactSettings()
    expire: ExpireSettings = ExpireSettings()
    orphans: OrphanSettings = OrphanSettings()
    # where each run's record goes (the pipeline's format); default: beside the table,
    # named <table>_maintenance_log
    log_table: TableSettings | None = None


class PrivacySettings(_Model):
    """Who a record is about, for GDPR erasure (``jobs.forget``) and the forget list applied at
    ingest and replay."""

    # decoded top-level fields holding a data subject's identifier (e.g. customer_id); a
    # record is the subject's when any of them equals a forgotten value (compared as text)
    subject_fields: list[str] = Field(default_factory=list)
    # the Kafka key (UTF-8) is a subject's identifier too: finds dead letters whose value
    # cannot be decoded, and drops such records at ingest
    key_is_subject: bool = False
    # the secret key of the subjects' keyed hashes (HMAC-SHA256) in the forget list: the
    # env var `salt_env` wins, else the Secrets Manager secret `salt_secret_id` (its string,
    # or the `salt` key of a JSON object). Never in YAML.
    salt_env: str = "ETL_PRIVACY_SALT"
    salt_secret_id: str | None = None
    # the forgotten subjects' hashes, one row per subject and request (the pipeline's format);
    # default: beside the table, named <table>_forget
    forget_table: TableSettings | None = None
    # one row per erasure request and table; default: beside the table, <table>_erasure_audit
    audit_table: TableSettings | None = None

    @field_validator("subject_fields")
    @classmethod
    def _field_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _SQL_NAME.match(name):
                raise ValueError(f"expected top-level field names, found {name!r}")
        return value

    @model_validator(mode="after")
    def _some_subject(self) -> PrivacySettings:
        if not self.subject_fields and not self.key_is_subject:
            raise ValueError(
                "expected `subject_fields` (one or more) and/or `key_is_subject: true`, "
                "found neither"
            )
        return self


class PipelineSettings(_Model):
    """One Kafka topic set -> one table, with its own checkpoint."""

    source: SourceSettings
    decode: DecodeSettings
    sink: SinkSettings
    dead_letter: DeadLetterSettings
    checkpoint: str
    trigger: TriggerSettings = TriggerSettings()
    # named SQL checks on decoded rows (false or null = violated), see transforms.expectations
    expectations: list[Expectation] = Field(default_factory=list)
    maintenance: MaintenanceSettings = MaintenanceSettings()
    # GDPR erasure and the forget list; None: the pipeline holds no personal data to erase
    privacy: PrivacySettings | None = None

    @model_validator(mode="after")
    def _maintenance_fits_the_format(self) -> PipelineSettings:
        expire = self.maintenance.expire
        if self.sink.format is TableFormat.DELTA and expire.older_than_hours < FILE_AGE_FLOOR_HOURS:
            raise ValueError(
                f"maintenance.expire.older_than_hours: expected at least "
                f"{FILE_AGE_FLOOR_HOURS:g} hours for a delta table, found "
                f"{expire.older_than_hours:g}: VACUUM also deletes unreferenced files this old, "
                "and a younger one may belong to a commit still in flight"
            )
        if self.maintenance.compact.where and self.sink.format is TableFormat.HUDI:
            raise ValueError(
                "maintenance.compact.where: applies to iceberg and delta tables, found format "
                "hudi (its compaction and clustering plan by file group)"
            )
        return self

    @property
    def maintenance_log(self) -> TableSettings:
        """The table each maintenance run is recorded in (configured, or beside the table)."""
        if self.maintenance.log_table is not None:
            return self.maintenance.log_table
        return self._beside_table("_maintenance_log")

    @property
    def forget_list(self) -> TableSettings:
        """The table of forgotten subjects' hashes (configured, or beside the table)."""
        configured = self.privacy.forget_table if self.privacy else None
        return configured or self._beside_table("_forget")

    @property
    def erasure_audit(self) -> TableSettings:
        """The table each erasure request is audited in (configured, or beside the table)."""
        configured = self.privacy.audit_table if self.privacy else None
        return configured or self._beside_table("_erasure_audit")

    def _beside_table(self, suffix: str) -> TableSettings:
        """A table named and placed like the pipeline's table, with a suffix."""
        location = self.sink.location
        return TableSettings(
            table=f"{self.sink.table}{suffix}",
            location=None if location is None else location.rstrip("/") + suffix,
        )

    @field_validator("expectations")
    @classmethod
    def _named(cls, value: list[Expectation]) -> list[Expectation]:
        for expectation in value:
            if not _IDENTIFIER.match(expectation.name):
                raise ValueError(
                    f"expectation names are lower_snake_case, found {expectation.name!r}"
                )
            if not expectation.expr.strip():
                raise ValueError(f"expectation {expectation.name!r}: expected an expression")
        names = [e.name for e in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"expectation names must be unique, found {duplicates} twice")
        return value


# AWS's pattern for an IAM role ARN (the one EMR Serverless and EventBridge Scheduler check)
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?$")


def _s3_uri(value: str) -> str:
    """An ``s3://bucket[/key]`` URI, without a trailing slash."""
    if not _S3_URI.match(value):
        raise ValueError(f"expected an s3://bucket/prefix URI, found {value!r}")
    return value.rstrip("/")


class EmrDeploySettings(_Model):
    """EMR on EC2: the running cluster the job's steps are added to."""

    # Steps run one at a time unless the cluster's StepConcurrencyLevel is raised: with the
    # default of 1 a step queued behind the ingest step (which never ends) never starts.
    cluster_id: str = Field(pattern=r"^j-[0-9A-Z]+$")


class EmrServerlessDeploySettings(_Model):
    """EMR Serverless: the Spark application job runs start in, and the role they run as."""

    application_id: str = Field(pattern=r"^[0-9a-z]{1,64}$")
    execution_role_arn: str = Field(pattern=_ROLE_ARN)
    # a packed virtualenv (venv-pack, Python 3.11 on Amazon Linux) holding the project's
    # Python requirements, which EMR Serverless's own Python lacks; null: a custom image has them
    python_archive: str | None = None
    # where Spark's driver and executor logs go (null: EMR Serverless keeps them itself)
    log_uri: str | None = None

    @field_validator("python_archive", "log_uri")
    @classmethod
    def _uris(cls, value: str | None) -> str | None:
        return None if value is None else _s3_uri(value)


class GlueDeploySettings(_Model):
    """AWS Glue: the jobs' role, version, capacity and network."""

    # a role name or ARN; it needs the Glue service policy, the MSK, S3, Glue Data Catalog,
    # Schema Registry and Secrets Manager permissions the jobs use
    role: str = Field(min_length=1)
    # the Glue version whose bundled Iceberg/Delta/Hudi the pipelines write with
    glue_version: str = Field(default="5.0", pattern=r"^[0-9]+\.[0-9]+$")
    # G.025X is for streaming jobs only: the batch jobs then get G.1X
    worker_type: Literal["G.025X", "G.1X", "G.2X", "G.4X", "G.8X"] = "G.1X"
    number_of_workers: int = Field(default=2, ge=2)
    # Glue connections (e.g. a NETWORK connection in the MSK cluster's VPC), on every job
    connections: list[str] = Field(default_factory=list)
    # concurrent runs of a batch job (maintenance, erasure); further runs queue. The ingest
    # jobs always allow one run: two would write through one checkpoint.
    max_concurrent_runs: int = Field(default=1, ge=1)


class SchedulerDeploySettings(_Model):
    """EventBridge Scheduler: the schedules that start EMR Serverless maintenance job runs."""

    # assumed by the scheduler: needs emr-serverless:StartJobRun on the application and
    # iam:PassRole on its execution role
    role_arn: str = Field(pattern=_ROLE_ARN)
    # null: the account's `default` group
    group_name: str | None = Field(default=None, pattern=r"^[0-9A-Za-z._-]{1,64}$")


class DeploySettings(_Model):
    """Where the built artefacts are uploaded and how each target is reached
    (``python -m jobs.deploy``); a target whose section is missing is not rendered."""

    # the S3 prefix the wheel, the settings file, the job scripts and the jars are uploaded to
    artifacts: str
    # put before every job, trigger and schedule name (one account, several environments)
    name_prefix: str = Field(default="", max_length=24, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    emr: EmrDeploySettings | None = None
    emr_serverless: EmrServerlessDeploySettings | None = None
    glue: GlueDeploySettings | None = None
    scheduler: SchedulerDeploySettings | None = None

    @field_validator("artifacts")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _s3_uri(value)

    @model_validator(mode="after")
    def _scheduler_has_a_target(self) -> DeploySettings:
        if self.scheduler is not None and self.emr_serverless is None:
            raise ValueError(
                "`scheduler` schedules EMR Serverless job runs: it needs an `emr_serverless` "
                "section (found none)"
            )
        return self


class SparkSettings(_Model):
    """Spark session settings; the platform's own (EMR, Glue) win where it sets them."""

    app_name: str = "streaming-etl"
    master: str | None = None
    # local runs put the Maven-resolved jars on spark.jars; on EMR/Glue leave it null
    jars_dir: Path | None = None
    shuffle_partitions: int = Field(default=8, gt=0)
    ui_enabled: bool = True
    conf: dict[str, str] = Field(default_factory=dict)


class CatalogType(enum.StrEnum):
    """Iceberg catalog implementations the session can be wired to."""

    JDBC = "jdbc"
    HADOOP = "hadoop"
    GLUE = "glue"


class CatalogSettings(_Model):
    """The Iceberg catalog that holds the Iceberg pipelines' tables."""

    name: str = Field(default="local", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # no default: the right one depends on where the warehouse is (hadoop: local disk only)
    type: CatalogType
    uri: str | None = None
    warehouse: str
    properties: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _usable(self) -> CatalogSettings:
        if self.type is CatalogType.JDBC and not self.uri:
            raise ValueError("catalog type jdbc needs `uri`")
        if self.type is CatalogType.JDBC and (self.uri or "").startswith("jdbc:sqlite:"):
            # Iceberg 1.10's JdbcCatalog keeps a read transaction open on SQLite: writers get
            # SQLITE_BUSY (or stale metadata in WAL mode)
            raise ValueError(
                "catalog type jdbc on SQLite is not supported (Iceberg's JDBC catalog locks "
                "it); use type hadoop for a local warehouse, or a PostgreSQL/MySQL uri"
            )
        if self.type is CatalogType.HADOOP and self.warehouse.startswith(("s3:", "s3a:")):
            raise ValueError(
                "catalog type hadoop needs atomic renames, which S3 lacks: use type glue "
                f"for an s3 warehouse (found {self.warehouse!r})"
            )
        return self


class AwsSettings(_Model):
    """AWS client settings shared by the registry, Secrets Manager and S3 clients."""

    region: str = "us-east-1"
    # set only for a local API server (moto); null means the real AWS endpoints
    endpoint_url: str | None = None
    profile: str | None = None


class RegistrySettings(_Model):
    """The AWS Glue Schema Registry."""

    registry_name: str = "default-registry"
    max_attempts: int = Field(default=5, ge=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)


class Settings(BaseSettings):
    """Everything a job needs, parsed once from YAML + ``ETL__`` env overrides."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="null",
        case_sensitive=False,
    )

    spark: SparkSettings = SparkSettings()
    # the Iceberg catalog; needed only when a pipeline writes Iceberg
    catalog: CatalogSettings | None = None
    aws: AwsSettings = AwsSettings()
    registry: RegistrySettings = RegistrySettings()
    pipelines: Annotated[dict[str, PipelineSettings], Field(min_length=1)]
    # how the jobs are deployed (python -m jobs.deploy); the jobs themselves never read it
    deploy: DeploySettings | None = None

    @field_validator("pipelines")
    @classmethod
    def _pipeline_names(cls, value: dict[str, PipelineSettings]) -> dict[str, PipelineSettings]:
        for name in value:
            if not _IDENTIFIER.match(name):
                raise ValueError(f"pipeline names are lower_snake_case, found {name!r}")
        return value

    @model_validator(mode="after")
    def _tables_in_their_catalog(self) -> Settings:
        _check_distinct_places(self.pipelines)
        for name, pipeline in self.pipelines.items():
            if pipeline.sink.format is not TableFormat.ICEBERG:
                _check_path_tables(name, pipeline)
                continue
            if self.catalog is None:
                raise ValueError(
                    f"catalog: pipelines.{name} writes iceberg, which needs a `catalog` "
                    "section (found none)"
                )
            for key, table in (("sink", pipeline.sink), ("dead_letter", pipeline.dead_letter)):
                parts = table.table.split(".")
                if len(parts) != 3 or parts[0] != self.catalog.name:
                    raise ValueError(
                        f"pipelines.{name}.{key}.table: expected "
                        f"`{self.catalog.name}.namespace.table` (the catalog's name first), "
                        f"found {table.table!r}"
                    )
        return self

    def pipeline(self, name: str) -> PipelineSettings:
        """Returns the named pipeline or raises ConfigError listing the known ones."""
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines))
            raise ConfigError(f"pipelines.{name}: no such pipeline (known: {known})") from None


def _check_distinct_places(pipelines: Mapping[str, PipelineSettings]) -> None:
    """No two writers share a table, a checkpoint or a consumer group (their commits would mix
    up the batch bookkeeping: a dead-letter append taken for a replay of the table's, for one;
    the group's offsets and lag would flip between the pipelines)."""
    seen: dict[str, str] = {}
    for name, pipeline in pipelines.items():
        places = {
            f"pipelines.{name}.sink.table": f"table {pipeline.sink.table}",
            f"pipelines.{name}.dead_letter.table": f"table {pipeline.dead_letter.table}",
            f"pipelines.{name}.checkpoint": f"checkpoint {pipeline.checkpoint}",
            # two pipelines committing to one group would overwrite each other's offsets
            f"pipelines.{name}.source.consumer_group": (
                f"consumer_group {pipeline.source.group_id(name)}"
            ),
        }
        for key, place in places.items():
            if place in seen:
                raise ValueError(
                    f"{key}: expected its own {place.split()[0]}, found the one of {seen[place]}"
                )
            seen[place] = key


def _check_path_tables(name: str, pipeline: PipelineSettings) -> None:
    """Hudi and Delta tables: ``database.table`` in the session catalog, with a location."""
    fmt = pipeline.sink.format.value
    for key, table in (("sink", pipeline.sink), ("dead_letter", pipeline.dead_letter)):
        if len(table.table.split(".")) != 2:
            raise ValueError(
                f"pipelines.{name}.{key}.table: expected `database.table` for a {fmt} table, "
                f"found {table.table!r}"
            )
        if not table.location:
            raise ValueError(
                f"pipelines.{name}.{key}.location: a {fmt} table needs a location (found none)"
            )


def load_settings(path: str | Path, *, env: dict[str, str] | None = None) -> Settings:
    """Parses a YAML config file, applying ``ETL__`` env overrides.

    Args:
        path: The YAML file, e.g. ``conf/local.yaml``.
        env: Overrides to use instead of ``os.environ`` (for tests).

    Returns:
        The frozen settings.

    Raises:
        ConfigError: The file is missing or not YAML, or a key is invalid; the message names
            every offending key as a dotted path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file: expected an existing YAML file, found nothing at {path}")
    _check_top_level(path)

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=path)
            environ = dict(os.environ) if env is None else env
            return (_MappingEnvSource(settings_cls, environ), yaml_source)

    try:
        parsed = _FromFile()
    except ValidationError as err:
        raise ConfigError(_describe(err, path)) from err
    except SettingsError as err:  # an ETL__ value that is not valid JSON for a list/dict key
        keys = _unparsable_env_keys(os.environ if env is None else env)
        named = ", ".join(keys) or "an ETL__ environment override"
        raise ConfigError(
            f"{named}: expected a JSON list/object in the environment override, found other text"
        ) from err
    return parsed


def _check_top_level(path: Path) -> None:
    """Fails clearly when the file is not YAML or not a mapping at the top."""
    try:
        with path.open() as stream:
            data = yaml.safe_load(stream)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path}: cannot be parsed: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping of settings at the top level, "
            f"found a {type(data).__name__}"
        )


def _unparsable_env_keys(env: Mapping[str, str]) -> list[str]:
    """Dotted keys of ETL__ overrides whose field is a list/dict but whose value is not JSON."""
    keys = []
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if _is_container(Settings, path):
            try:
                json.loads(value)
            except json.JSONDecodeError:
                keys.append(".".join(path))
    return sorted(keys)


def _is_container(model: type[BaseModel], path: list[str]) -> bool:
    """Whether the field at ``path`` under ``model`` is a list or dict (walks nested models)."""
    annotation: Any = model
    for i, part in enumerate(path):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return False
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]  # a free key such as a pipeline name
        else:
            return False
        while get_origin(annotation) in (Union, UnionType):  # X | None
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        if i == len(path) - 1:
            return get_origin(annotation) in (list, dict)
    return False


def _nulls(value: Any) -> Any:
    """Turns the string ``null`` into None at any depth (an override can clear a key)."""
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    return None if value == "null" else value


class _MappingEnvSource(PydanticBaseSettingsSource):
    """The ETL__ env source over a given mapping (os.environ, or a test's dict)."""

    def __init__(self, settings_cls: type[BaseSettings], env: dict[str, str]) -> None:
        super().__init__(settings_cls)
        from pydantic_settings import EnvSettingsSource

        self._inner = EnvSettingsSource(
            settings_cls,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="__",
            env_parse_none_str="null",
            case_sensitive=False,
        )
        self._inner.env_vars = {k.lower(): v for k, v in env.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        result: dict[str, Any] = _nulls(self._inner())
        return result


def _describe(err: ValidationError, path: Path) -> str:
    """Renders pydantic errors as 'dotted.key: message' lines."""
    lines = [f"config file {path} is invalid:"]
    for item in err.errors():
        if item["loc"]:
            lines.append(f"  {'.'.join(str(part) for part in item['loc'])}: {item['msg']}")
        else:  # a check across sections: the message starts with the key it is about
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
