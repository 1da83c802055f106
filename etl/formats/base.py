"""What every table format provides: its session confs and a sink for micro-batch commits.

A format package (``etl/formats/<format>/``) subclasses ``TableFormatSupport`` and
``TableSink``; ``etl.formats`` looks them up by ``TableFormat``. The pipeline, replay and the
batch jobs only talk to these two interfaces, so a new format is an addition, not an edit.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pyspark.sql import functions as F
from pyspark.sql.types import DataType, LongType, StructType

from etl.config import (
    CompactSettings,
    ExpireSettings,
    MaintenanceSettings,
    OrphanSettings,
    PartitionField,
    Settings,
    TableFormat,
)
from etl.exceptions import MaintenanceError
from transforms.columns import DELETE_FLAG, KAFKA_OFFSET, RESET_OFFSET
from transforms.upsert import latest_per_key

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

# commit metadata keys written with every batch commit (Iceberg snapshot summary, Delta
# commit info, Hudi commit extra metadata)
PIPELINE_KEY = "etl.pipeline"
QUERY_ID_KEY = "etl.query-id"
BATCH_ID_KEY = "etl.batch-id"
# the reader schema the batch was decoded with: a restarted job evolves on from it
READER_SCHEMA_KEY = "etl.reader-schema"
# the Kafka offsets the commit holds (etl.offsets.ranges_json): which commit holds an offset
OFFSETS_KEY = "etl.kafka.offsets"
# a commit that is not a batch (a GDPR erasure) carries each query's latest batch id forward
# as ``etl.carried.<query id>``, so the history before it can be dropped without losing what
# the replay check reads
CARRIED_PREFIX = "etl.carried."

# a batch commit that conflicts with a concurrent writer (maintenance) is tried this often
CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_S = 2.0

# the shape of ``TableSink.commit_history``
COMMITTED_AT = "committed_at"
PROPERTIES = "properties"


@dataclass(frozen=True)
class UpsertSpec:
    """How an upsert table is keyed and which change wins."""

    keys: tuple[str, ...]
    # larger wins; null loses to any value; equal values: the larger Kafka offset wins
    ordering: str


@dataclass(frozen=True)
class TableSpec:
    """What a sink needs to know about its table."""

    table: str
    partition_by: tuple[PartitionField, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    # follow the evolving reader schema (add / widen columns on write); off for tables with a
    # fixed schema such as the dead-letter table, which must stay MERGE/UPDATE-able
    evolve: bool = True
    # set for upsert tables (each batch is applied with ``TableSink.upsert``)
    upsert: UpsertSpec | None = None
    # the format's own options (``SinkSettings.format_options``)
    options: Mapping[str, Any] = field(default_factory=dict)
    # where the table's files live, as a URI (Hudi, Delta); None: the catalog decides (Iceberg)
    location: str | None = None
    # the pipeline's maintenance settings: formats whose table services run inline in the
    # writer (Hudi) take their targets and retention from here
    maintenance: MaintenanceSettings | None = None


@dataclass(frozen=True)
class CommitInfo:
    """Identifies one micro-batch commit; (query_id, batch_id) makes it idempotent.

    ``query_id`` is the streaming query's id, which Spark keeps in the checkpoint, so it is
    the same across restarts of one query and differs for a new checkpoint.
    """

    pipeline: str
    query_id: str
    batch_id: int
    extra: Mapping[str, str] = field(default_factory=dict)

    def properties(self) -> dict[str, str]:
        """The key/values stored with the commit."""
        return {
            PIPELINE_KEY: self.pipeline,
            QUERY_ID_KEY: self.query_id,
            BATCH_ID_KEY: str(self.batch_id),
            **self.extra,
        }

    def with_extra(self, **extra: str) -> CommitInfo:
        """The same commit with more key/values (pass keys with dots as ``**{key: value}``)."""
        return CommitInfo(self.pipeline, self.query_id, self.batch_id, {**self.extra, **extra})


class TableSink(abc.ABC):
    """A table written by micro-batches, one atomic commit each, with commit metadata.

    Sinks do not check for replays themselves: ``etl.commit`` asks ``last_committed_batch``
    first and calls ``append`` only for a batch not committed yet, so the check lives in one
    place for every format.
    """

    # Whether ``append`` reads its input in one Spark action. Counting observes the rows
    # on the way in that case; a sink that scans its input several times (Hudi) gets cached
    # rows instead, so the decode is not repeated. Counts are exact either way.
    reads_input_once: ClassVar[bool] = True
    # Whether the table can widen column types in place (int -> long, float -> double,
    # decimal precision); if not, a schema version needing it is dead-lettered as
    # INCOMPATIBLE_SCHEMA instead of failing the commit
    widens_types: bool = True
    # text that marks a commit conflict with a concurrent writer in the format's errors
    conflict_markers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: TableSpec) -> None:
        """Binds the sink to one table."""
        self.spec = spec
        self._ready = False

    @property
    def name(self) -> str:
        """The table as Spark SQL names it."""
        return self.spec.table

    def prepare(self, spark: SparkSession, schema: StructType) -> None:
        """Creates the table on first use in this process (``ensure_table``)."""
        if not self._ready:
            self.ensure_table(spark, schema)
            self._ready = True

    @abc.abstractmethod
    def ensure_table(self, spark: SparkSession, schema: StructType) -> None:
        """Creates the table with this schema, partitioning and properties if it is absent."""

    @abc.abstractmethod
    def exists(self, spark: SparkSession) -> bool:
        """Whether the table exists."""

    @abc.abstractmethod
    def commit_history(self, spark: SparkSession) -> DataFrame:
        """One row per live commit: ``committed_at`` (timestamp) and ``properties``
        (map<string,string>, the commit metadata written by ``append``)."""

    @abc.abstractmethod
    def append(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends ``df`` in one atomic commit storing ``commit.properties()`` with it."""

    @abc.abstractmethod
    def upsert(self, df: DataFrame, commit: CommitInfo) -> None:
        """Applies one batch of changes to an upsert table in one atomic commit.

        ``df`` holds at most one row per key (``latest``): the table's columns,
        ``KAFKA_OFFSET`` among them, plus ``DELETE_FLAG`` (true: the row deletes its key)
        and ``RESET_OFFSET`` (may be absent: null), neither stored. A row
        replaces the table's row of its key, or deletes it, only if it is newer
        (``newer_condition``); a row whose key the table lacks is inserted unless it is a
        delete. So applying a batch twice changes nothing.
        The commit stores ``commit.properties()`` like ``append``.
        """

    def read(self, spark: SparkSession) -> DataFrame:
        """The table's rows with the columns the pipeline wrote (no format-internal columns)."""
        return spark.table(self.name)

    def write(self, df: DataFrame, commit: CommitInfo) -> None:
        """Appends, or upserts the winner of each key (``latest``), as the table is declared.

        A commit that lost a race with another writer of the table (a maintenance job's
        compaction rewrote files this batch's MERGE read) committed nothing: it is tried
        again on the new table state, up to ``CONFLICT_ATTEMPTS`` times.
        """
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                if self.spec.upsert is None:
                    self.append(df, commit)
                else:
                    self.upsert(self.latest(df), commit)
                return
            except Exception as err:
                if attempt == CONFLICT_ATTEMPTS or not self.is_conflict(err):
                    raise
                log.warning(
                    "%s: batch %s lost a commit race with another writer (attempt %d of %d), "
                    "retrying: %s",
                    self.name,
                    commit.batch_id,
                    attempt,
                    CONFLICT_ATTEMPTS,
                    str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__,
                )
                time.sleep(CONFLICT_BACKOFF_S * attempt)

    def is_conflict(self, err: BaseException) -> bool:
        """Whether ``err`` is a commit conflict with a concurrent writer (nothing committed)."""
        return is_conflict(err, self.conflict_markers)

    def latest(self, df: DataFrame) -> DataFrame:
        """The change that wins per key among the batch's (``transforms.upsert.latest_per_key``),
        left lazy: each sink materializes what it writes once (``upsert_source``, Hudi's
        resolution)."""
        upsert = self.spec.upsert
        assert upsert is not None, "latest() on a table declared append"
        return df.transform(latest_per_key(keys=upsert.keys, ordering=upsert.ordering))

    def last_committed_batch(self, spark: SparkSession, query_id: str) -> int | None:
        """The highest batch id committed by this query, or None (also before the table exists).

        A commit carrying the query's batch id forward (``CARRIED_PREFIX``) counts as well.
        """
        if not self.exists(spark):
            return None
        props = F.col(PROPERTIES)
        own = F.when(props.getItem(QUERY_ID_KEY) == query_id, props.getItem(BATCH_ID_KEY))
        carried = props.getItem(f"{CARRIED_PREFIX}{query_id}")
        row = (
            self.commit_history(spark)
            .select(F.max(F.greatest(own.cast("long"), carried.cast("long"))).alias("last"))
            .first()
        )
        return None if row is None or row["last"] is None else int(row["last"])

    def carried_forward(self, spark: SparkSession) -> dict[str, str]:
        """What a commit that is no batch must carry so that the history before it can go:
        each query's highest batch id (``CARRIED_PREFIX`` keys) and the newest reader schema."""
        if not self.exists(spark):
            return {}
        props = F.col(PROPERTIES)
        entries = self.commit_history(spark).select(
            F.explode(
                F.map_concat(
                    F.when(
                        props.getItem(QUERY_ID_KEY).isNotNull(),
                        F.create_map(
                            F.concat(F.lit(CARRIED_PREFIX), props.getItem(QUERY_ID_KEY)),
                            props.getItem(BATCH_ID_KEY),
                        ),
                    ).otherwise(F.create_map().cast("map<string,string>")),
                    F.map_filter(props, lambda k, _: k.startswith(CARRIED_PREFIX)),
                )
            )
        )
        carried = {
            str(r["key"]): str(r["batch"])
            for r in entries.groupBy("key")
            .agg(F.max(F.col("value").cast("long")).alias("batch"))
            .collect()
        }
        schema = self.latest_property(spark, READER_SCHEMA_KEY)
        return carried if schema is None else {**carried, READER_SCHEMA_KEY: schema}

    def latest_property(self, spark: SparkSession, key: str) -> str | None:
        """The value of ``key`` in the newest commit that carries it, or None."""
        if not self.exists(spark):
            return None
        row = (
            self.commit_history(spark)
            .where(F.col(PROPERTIES).getItem(key).isNotNull())
            .orderBy(F.col(COMMITTED_AT).desc())
            .select(F.col(PROPERTIES).getItem(key))
            .first()
        )
        return None if row is None else str(row[0])

    def update(self, spark: SparkSession, *, assignments: Mapping[str, str], where: str) -> None:
        """``UPDATE`` rows matching the SQL condition (values are SQL expressions)."""
        sets = ", ".join(f"`{column}` = {value}" for column, value in assignments.items())
        spark.sql(f"UPDATE {self.name} SET {sets} WHERE {where}")

    def update_matching(
        self,
        source: DataFrame,
        *,
        on: Sequence[str],
        assignments: Mapping[str, str],
        where: str = "true",
    ) -> None:
        """Updates the rows whose ``on`` columns equal a row of ``source`` (one MERGE).

        ``source`` is checkpointed first: a source read from this same table would otherwise
        appear twice in the MERGE plan, which Spark cannot resolve.
        """
        spark = source.sparkSession
        view = f"_etl_source_{abs(hash((self.name, tuple(on))))}"
        source.select(*on).distinct().localCheckpoint(eager=True).createOrReplaceTempView(view)
        condition = " AND ".join(f"t.`{c}` = s.`{c}`" for c in on)
        sets = ", ".join(f"t.`{column}` = {value}" for column, value in assignments.items())
        spark.sql(
            f"MERGE INTO {self.name} t USING {view} s ON {condition} AND ({where}) "
            f"WHEN MATCHED THEN UPDATE SET {sets}"
        )
        spark.catalog.dropTempView(view)


class TableFormatSupport(abc.ABC):
    """A table format: the Spark session confs it needs and its sink."""

    format: ClassVar[TableFormat]
    # Spark SQL extensions the format needs (joined into spark.sql.extensions)
    extensions: ClassVar[tuple[str, ...]] = ()
    # Whether the format's JVM artifacts come from its own pom (etl/formats/<format>/pom.xml),
    # which `make jars` resolves into .jars/<format>/ beside spark.jars_dir; only sessions
    # hosting the format get them on their classpath
    own_jars: ClassVar[bool] = False

    @abc.abstractmethod
    def session_conf(self, settings: Settings) -> dict[str, str]:
        """Spark confs (catalogs, serializers) besides the extensions."""

    @abc.abstractmethod
    def sink(self, spec: TableSpec) -> TableSink:
        """A sink writing the table ``spec`` describes."""

    @abc.abstractmethod
    def maintenance(self, sink: TableSink) -> TableMaintenance:
        """The maintenance tasks of the sink's table."""


@dataclass(frozen=True)
class TableStats:
    """The size of a table's current state and how much history it keeps."""

    # data files (and delete / log files) the current snapshot reads, and their bytes
    files: int
    bytes: int
    # live snapshots (Iceberg), versions in the log (Delta), completed commits in the active
    # timeline (Hudi)
    snapshots: int


@dataclass(frozen=True)
class TaskOutcome:
    """What one maintenance task did (the stats before and after are taken around it)."""

    files_rewritten: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0
    # false: the task does not apply to this table (e.g. orphans on Delta: VACUUM covers it)
    applied: bool = True
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EraseOutcome:
    """What one step of an erasure did to a table (``delete_rows`` or ``purge``)."""

    rows_deleted: int = 0
    files_rewritten: int = 0
    snapshots_expired: int = 0
    files_removed: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)


class TableMaintenance(abc.ABC):
    """A table's maintenance: compaction, expiry of old history, removal of orphan files.

    Every task is one or more commits of its own that a streaming writer may race; a task
    that loses (``is_conflict``) committed nothing and is retried by ``etl.maintenance``.
    """

    def __init__(self, sink: TableSink) -> None:
        """Binds the tasks to the sink's table."""
        self.sink = sink

    @property
    def name(self) -> str:
        """The table as Spark SQL names it."""
        return self.sink.name

    @abc.abstractmethod
    def check(self, spark: SparkSession) -> None:
        """Fails unless a table of this format is where the configuration says.

        Raises:
            MaintenanceError: No table there, or one of another format.
        """

    @abc.abstractmethod
    def stats(self, spark: SparkSession) -> TableStats:
        """The table's files, bytes and retained history now."""

    @abc.abstractmethod
    def compact(
        self, spark: SparkSession, settings: CompactSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """Rewrites small files into files of the target size, sorted if configured."""

    @abc.abstractmethod
    def expire(
        self,
        spark: SparkSession,
        settings: ExpireSettings,
        *,
        now: dt.datetime,
        keep_from: dt.datetime | None,
        dry_run: bool,
    ) -> TaskOutcome:
        """Drops history older than the settings allow, never a commit at or after
        ``keep_from`` (the oldest commit the exactly-once replay check still reads)."""

    @abc.abstractmethod
    def orphans(
        self, spark: SparkSession, settings: OrphanSettings, *, now: dt.datetime, dry_run: bool
    ) -> TaskOutcome:
        """Deletes files no snapshot references that are older than the settings' age."""

    @abc.abstractmethod
    def delete_rows(
        self,
        spark: SparkSession,
        doomed: DataFrame,
        *,
        on: Sequence[str],
        commit: CommitInfo,
        now: dt.datetime,
    ) -> EraseOutcome:
        """Deletes the rows whose ``on`` columns equal a row of ``doomed``, in one commit that
        stores ``commit.properties()`` and rewrites the files that held them (copy-on-write,
        whatever the table's write mode: no delete file or deletion vector keeps them).

        Args:
            spark: The session.
            doomed: Distinct rows of the ``on`` columns (small: broadcast), checkpointed.
            on: Columns of the table identifying a row (its Kafka coordinates).
            commit: The erasure's identity and what it carries forward (``CARRIED_PREFIX``).
            now: The current time (a format that cannot delete beside a running writer
                refuses while the table was written to recently).

        Returns:
            Rows deleted and files rewritten (0 and 0 when nothing matched: no commit).
        """

    @abc.abstractmethod
    def purge(self, spark: SparkSession, *, commit: CommitInfo, now: dt.datetime) -> EraseOutcome:
        """Removes every file and every piece of metadata that still holds rows deleted before
        ``now``: the history older than the newest commit (snapshots, versions, file slices,
        log entries with column statistics), so nothing can read the rows back. A commit this
        makes stores ``commit.properties()``. Never deletes a file a concurrent writer may still
        commit (only files some commit of the table once referenced)."""

    def is_conflict(self, err: BaseException) -> bool:
        """Whether ``err`` is a commit conflict with a concurrent writer (nothing committed)."""
        return self.sink.is_conflict(err)


def newer_condition(ordering: str, *, source: str = "s", target: str = "t") -> str:
    """SQL: the source row is newer than the target row of its key.

    The larger ordering value wins; null loses to any value; equal values (nulls alike) are
    decided by the larger Kafka offset (one key's records share a partition). A tombstone
    (a delete without an ordering value) is ordered by the Kafka offset alone, and one in the
    batch after the table's row (``RESET_OFFSET``) makes any change of its key win.
    """
    s_ord, t_ord = f"{source}.`{ordering}`", f"{target}.`{ordering}`"
    s_off, t_off = f"{source}.`{KAFKA_OFFSET}`", f"{target}.`{KAFKA_OFFSET}`"
    reset = f"{source}.`{RESET_OFFSET}`"
    return (
        f"CASE WHEN {reset} > {t_off} THEN true "
        f"WHEN {source}.`{DELETE_FLAG}` AND {s_ord} IS NULL THEN {s_off} > {t_off} "
        f"WHEN {s_ord} <=> {t_ord} THEN {s_off} > {t_off} "
        f"WHEN {s_ord} IS NULL THEN false WHEN {t_ord} IS NULL THEN true "
        f"ELSE {s_ord} > {t_ord} END"
    )


def upsert_source(df: DataFrame, target: StructType) -> DataFrame:
    """An upsert batch shaped as ``merge_statement``'s source: the target table's columns (null
    where the batch has none), ``DELETE_FLAG`` and ``RESET_OFFSET`` (null when absent).

    Checkpointed: a MERGE refuses a source whose plan holds the decode's non-deterministic
    barrier column, and reads its source more than once.
    """

    def column(name: str, data_type: DataType) -> Column:
        return F.col(name) if name in df.columns else F.lit(None).cast(data_type).alias(name)

    return df.select(
        *[column(f.name, f.dataType) for f in target.fields],
        DELETE_FLAG,
        column(RESET_OFFSET, LongType()),
    ).localCheckpoint(eager=True)


def merge_statement(
    table: str, source_view: str, *, upsert: UpsertSpec, columns: Sequence[str]
) -> str:
    """The SQL MERGE that applies an upsert batch (see ``TableSink.upsert``).

    Args:
        table: The target table as Spark SQL names it.
        source_view: A view of the batch: ``columns``, ``DELETE_FLAG`` and ``RESET_OFFSET``.
        upsert: Keys and ordering field.
        columns: The target table's columns (a column the batch lacks is set null).
    """
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in upsert.keys)
    newer = newer_condition(upsert.ordering)
    sets = ", ".join(f"t.`{c}` = s.`{c}`" for c in columns)
    names = ", ".join(f"`{c}`" for c in columns)
    values = ", ".join(f"s.`{c}`" for c in columns)
    return (
        f"MERGE INTO {table} t USING {source_view} s ON {on} "
        f"WHEN MATCHED AND s.`{DELETE_FLAG}` AND ({newer}) THEN DELETE "
        f"WHEN MATCHED AND NOT s.`{DELETE_FLAG}` AND ({newer}) THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED AND NOT s.`{DELETE_FLAG}` THEN INSERT ({names}) VALUES ({values})"
    )


def is_conflict(err: BaseException, markers: Sequence[str]) -> bool:
    """Whether an error (or one it was raised from) names one of the conflict markers."""
    seen: BaseException | None = err
    while seen is not None:
        text = f"{type(seen).__name__}: {seen}"
        if any(marker in text for marker in markers):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# what marks a table of each format at its location
_FORMAT_MARKERS = {
    TableFormat.DELTA: "_delta_log",
    TableFormat.HUDI: ".hoodie/hoodie.properties",
    TableFormat.ICEBERG: "metadata",
}


def format_at(spark: SparkSession, location: str) -> TableFormat | None:
    """The table format whose files are at a location, or None when there is no table."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for fmt, marker in _FORMAT_MARKERS.items():
        path = jvm.org.apache.hadoop.fs.Path(f"{location.rstrip('/')}/{marker}")
        if path.getFileSystem(conf).exists(path):
            return fmt
    return None


def check_format_at(spark: SparkSession, table: str, location: str, fmt: TableFormat) -> None:
    """Fails unless a table of ``fmt`` is at the location.

    Raises:
        MaintenanceError: No table there, or one of another format.
    """
    found = format_at(spark, location)
    if found is not fmt:
        what = "nothing" if found is None else f"a {found.value} table"
        raise MaintenanceError(
            f"{table}: expected a {fmt.value} table at {location}, found {what} (nothing was done)"
        )
