"""Fault injection on the real local stack: SIGKILLed jobs, a registry outage, a broker restart.

Every test ends with the table holding exactly the produced records: no loss, no duplicates.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from pyspark.errors import AnalysisException, StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery

from devtools.devstack.moto_server import MotoServer
from devtools.producer import glue_frames, register_schema
from devtools.sample_data import orders
from etl.commit import BatchResult
from etl.config import Settings, TableFormat
from etl.formats import TableSink, TableSpec, load_sink
from etl.formats.base import BATCH_ID_KEY, COMMITTED_AT, PROPERTIES, QUERY_ID_KEY
from etl.registry import read_avsc
from tests.conftest import REPO, catalog_block
from tests.integration.faults_helpers import (
    KillReport,
    TcpProxy,
    kill_process_tree,
    produce_tracked,
)
from tests.integration.streams import logged_batches, start_job, start_recording

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMA = read_avsc(REPO / "schemas" / "orders.avsc")
REGISTRY = "etl-faults"
CHECKED_COLUMNS = (
    "order_id",
    "customer_id",
    "amount",
    "order_ts",
    "_kafka_partition",
    "_kafka_offset",
)
Row = tuple[str, int, Decimal, dt.datetime, int, int]


# -- shared helpers ---------------------------------------------------------------------------


@dataclass
class Produced:
    """Records produced to one topic and where the broker put each of them."""

    records: dict[str, dict[str, Any]]
    positions: dict[str, tuple[int, int]]

    def expected_rows(self) -> set[Row]:
        """The CHECKED_COLUMNS of every produced record as Spark reads them back (UTC)."""
        rows: set[Row] = set()
        for order_id, record in self.records.items():
            partition, offset = self.positions[order_id]
            rows.add(
                (
                    order_id,
                    record["customer_id"],
                    record["amount"],
                    record["order_ts"].astimezone(dt.UTC).replace(tzinfo=None),
                    partition,
                    offset,
                )
            )
        return rows


def publish(
    stack: Any,
    topic: str,
    records: list[dict[str, Any]],
    produced: Produced,
    *,
    definition: str = SCHEMA,
    version: str | None = None,
    updates: bool = False,
) -> str:
    """Registers ``definition`` (unless ``version`` is given), produces Glue frames, tracks them.

    With ``updates`` a key may be produced again (an upsert stream): the latest one is kept.
    """
    if version is None:
        version = register_schema(
            stack.info.glue_client(),
            registry_name=REGISTRY,
            schema_name=topic,
            definition=definition,
        )
    values = glue_frames(definition, version, records, compress_every=10)
    keys = [r["order_id"].encode() for r in records]
    positions = produce_tracked(
        stack.info.bootstrap_plaintext, topic, zip(keys, values, strict=True)
    )
    for record in records:
        order_id = record["order_id"]
        assert updates or order_id not in produced.records, f"{order_id} produced twice"
        produced.records[order_id] = record
        produced.positions[order_id] = positions[order_id.encode()]
    return version


def table_rows(spark: SparkSession, table: str, sink: TableSink | None = None) -> list[Row]:
    """The CHECKED_COLUMNS of every row of the table (duplicates kept), read by ``sink`` if
    given (a fresh read of its location), else through the catalog."""
    df = sink.read(spark) if sink is not None else spark.table(table)
    return [tuple(r) for r in df.select(*CHECKED_COLUMNS).collect()]


def row_count(spark: SparkSession, table: str) -> int:
    """Rows in the table; 0 if it does not exist yet."""
    try:
        return spark.table(table).count()
    except AnalysisException:
        return 0


def snapshot_batches(
    spark: SparkSession, table: str, sink: TableSink | None = None
) -> list[tuple[str, int, int]]:
    """(query id, batch id, added records) of every snapshot, oldest first; [] if no table.

    With ``sink`` (formats other than Iceberg) the commits come from its commit history, and
    the added records read 0 (upsert tables have no such count).
    """
    if sink is not None:
        if not sink.exists(spark):
            return []
        props = F.col(PROPERTIES)
        # table services (Hudi's inline compaction) commit without a batch id
        history = (
            sink.commit_history(spark).where(props[BATCH_ID_KEY].isNotNull()).orderBy(COMMITTED_AT)
        )
        return [
            (r[0], int(r[1]), 0)
            for r in history.select(props[QUERY_ID_KEY], props[BATCH_ID_KEY]).collect()
        ]
    try:
        rows = spark.sql(
            "SELECT summary['etl.query-id'] AS q, CAST(summary['etl.batch-id'] AS BIGINT) AS b, "
            f"CAST(summary['added-records'] AS BIGINT) AS n FROM {table}.snapshots "
            "ORDER BY committed_at"
        ).collect()
    except AnalysisException:
        return []
    return [(r.q, r.b, r.n) for r in rows]


def dead_letter_rows(spark: SparkSession, table: str, pipeline: str) -> int:
    """Dead-letter rows of the pipeline; 0 if the dead-letter table was never created."""
    try:
        return spark.table(table).where(f"pipeline = '{pipeline}'").count()
    except AnalysisException:
        return 0


def assert_exactly(
    spark: SparkSession, table: str, produced: Produced, sink: TableSink | None = None
) -> None:
    """The table holds every produced record exactly once, with the right content."""
    rows = table_rows(spark, table, sink)
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated order ids"
    assert len(rows) == len(produced.records), (
        f"table has {len(rows)} rows, {len(produced.records)} produced"
    )
    expected = produced.expected_rows()
    got = set(rows)
    assert got == expected, (
        f"{len(expected - got)} produced rows missing / differing, e.g. "
        f"{sorted(expected - got)[:3]}; {len(got - expected)} unexpected, e.g. "
        f"{sorted(got - expected)[:3]}"
    )


def pipeline_block(
    *,
    bootstrap: str,
    topic: str,
    table: str,
    checkpoint: Path,
    trigger: dict[str, str],
    sink: dict[str, Any] | None = None,
    dead_letter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One pipeline of the settings, on the orders schema (``sink``, ``dead_letter``: extra
    keys, which win)."""
    return {
        "source": {
            "bootstrap_servers": bootstrap,
            "topics": [topic],
            "max_offsets_per_trigger": 300,
        },
        "decode": {"wire_format": "glue", "schema_file": str(REPO / "schemas" / "orders.avsc")},
        "sink": {
            "table": table,
            "partition_by": ["days(order_ts)"],
            "properties": {"format-version": "2"},
            **(sink or {}),
        },
        "dead_letter": {"table": f"{table}_dlq", **(dead_letter or {})},
        "checkpoint": str(checkpoint),
        "trigger": trigger,
    }


def wait_for(what: str, predicate: Any, timeout: float, interval: float = 0.5) -> None:
    """Polls ``predicate`` until true; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- 1. exactly once under SIGKILL --------------------------------------------------------------

KILL_SEED = 20261125
# where each run's kill is anchored: "start" = 3-12 s after the process started or as soon
# as its first batch is logged, whichever comes first (start-up, first batch); "commit" =
# 0-8 s after the run logged its first batch (mid-stream: during a later batch, a table
# commit or a checkpoint write); the order is shuffled by the seed
KILL_ANCHORS = ("start", "commit", "commit")
INITIAL_RECORDS = 6000
RECORDS_BETWEEN_KILLS = 250
FIRST_BATCH_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Kill:
    """One SIGKILL of the job."""

    anchor: str
    after_s: float  # seconds after the process started
    committed: list[int]  # etl.batch-id of every snapshot when it was killed
    committed_in_run: int  # batches this run committed before it was killed
    logged: int  # batch lines the run had logged when it was killed
    logged_commits: int  # of those, batches logged as committed (replays are not)
    report: KillReport

    def describe(self) -> str:
        jvm = "JVM killed" if self.report.jvm_pids else "no JVM yet"
        last = self.committed[-1] if self.committed else "none"
        return (
            f"{self.anchor} {self.after_s:.1f}s after launch: {len(self.committed)} batches "
            f"committed (last id {last}; {self.committed_in_run} in this run), "
            f"{self.logged} batches logged ({self.logged_commits} committed), {jvm}"
        )

    def misplaced(self) -> str | None:
        """Why the kill did not land in the state its anchor names, from what the run left."""
        # the sink commits to the table, then the batch is logged: a kill between the two
        # leaves one snapshot more than logged commits, never fewer and never two more
        if self.committed_in_run - self.logged_commits not in (0, 1):
            return (
                f"the table got {self.committed_in_run} snapshots from the run, its log "
                f"says {self.logged_commits}"
            )
        if self.anchor == "start" and self.logged > 1:
            return "killed after the run had logged its second batch, not in start-up or its first"
        if self.anchor == "commit" and not self.logged:
            return "killed before the run had logged any batch, not mid-stream"
        return None


def _log_tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _await_kill_moment(
    proc: subprocess.Popen[bytes], log: Path, anchor: str, rng: random.Random
) -> None:
    """Sleeps until the run's random kill moment; fails if the job exits before it."""
    if anchor == "start":
        deadline = time.monotonic() + rng.uniform(3.0, 12.0)
        # a fast machine can finish its first batch before the drawn moment: kill as soon as
        # the first batch is logged (its checkpoint commit may still be pending), so the kill
        # stays in start-up or the first batch whatever the machine's speed
        while time.monotonic() < deadline and proc.poll() is None:
            if logged_batches(log):
                break
            time.sleep(0.05)
        deadline = time.monotonic()
    else:
        give_up = time.monotonic() + FIRST_BATCH_TIMEOUT_S
        # a first batch that replays the previous run's last one commits nothing: wait for
        # one that commits, so the kill lands mid-stream
        while not any(b["committed"] for b in logged_batches(log)):
            if proc.poll() is not None or time.monotonic() > give_up:
                break
            time.sleep(0.1)
        deadline = time.monotonic() + rng.uniform(0.0, 8.0)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, (
        f"the job exited with {proc.returncode} before it was killed:\n" + _log_tail(log)
    )


@pytest.fixture
def job_env() -> dict[str, str]:
    """The environment of the job processes: dummy AWS credentials, no ETL__ overrides."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ETL__")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYSPARK_PYTHON": sys.executable,
            "TZ": "UTC",
        }
    )
    return env


UPSERT_KEYS = 400
UPSERT_SINK = {"mode": "upsert", "key": ["order_id"], "ordering": "updated_ts"}


def _upserts(count: int, *, start: int) -> list[dict[str, Any]]:
    """Order versions over UPSERT_KEYS keys, each newer (``updated_ts``) than all before it."""
    return [
        {
            **record,
            "order_id": f"o-{n % UPSERT_KEYS}",
            "updated_ts": dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
        }
        for n, record in enumerate(orders(count, start=start), start=start)
    ]


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        # Iceberg's MERGE path is idempotent by the same rule as Delta's (the contract suite
        # re-applies batches). The Iceberg case needs no Delta, so it runs in the Hudi run
        # (whose session hosts Iceberg too), which evens out the two runs' lengths
        pytest.param("iceberg", "append", marks=pytest.mark.hudi),
        ("delta", "upsert"),
        # merge-on-read, compacting every other commit
        pytest.param("hudi", "upsert", marks=pytest.mark.hudi),
    ],
)
def test_exactly_once_when_the_job_is_sigkilled_repeatedly(
    spark: SparkSession,
    local_stack: Any,
    warehouse: Path,
    tmp_path: Path,
    job_env: dict[str, str],
    fmt: str,
    mode: str,
) -> None:
    upsert = mode == "upsert"
    name = f"faults_kill_{fmt}_{mode}"
    records = _upserts if upsert else orders
    sent = 0
    topic = f"faults-kill-{fmt}-{mode}-{uuid.uuid4().hex[:8]}"
    sink_keys: dict[str, Any] = dict(UPSERT_SINK) if upsert else {}
    dlq_keys: dict[str, Any] = {}
    sink = dlq = None
    if fmt != "iceberg":
        table = f"faults_{fmt}.{name}"
        sink_keys.update(format=fmt, location=str(tmp_path / name), properties={})
        if fmt == "hudi":
            sink_keys["hudi"] = {"table_type": "MERGE_ON_READ", "compaction_delta_commits": 2}
            # Unpartitioned, in fewer and larger batches: a Hudi commit costs seconds, and every
            # day partition of every batch would add a file group (partitioned upserts:
            # tests/formats/test_hudi.py)
            sink_keys["partition_by"] = []
        dlq_keys["location"] = str(tmp_path / f"{name}_dlq")
        sink = load_sink(TableFormat(fmt), TableSpec(table, location=(tmp_path / name).as_uri()))
        dlq = load_sink(
            TableFormat(fmt),
            TableSpec(f"{table}_dlq", location=(tmp_path / f"{name}_dlq").as_uri()),
        )
    else:
        table = f"local.faults.{name}"
    local_stack.broker.create_topic(topic, partitions=4)
    conf = tmp_path / "ingest.yaml"
    settings = {
        "spark": {
            "app_name": "faults-kill",
            "master": "local[2]",
            "jars_dir": str((REPO / ".jars" / "spark").resolve()),
            "ui_enabled": False,
            "shuffle_partitions": 2,
            # a short-lived JVM: C1 only starts faster (measured ~1/3 off the first batch)
            "conf": {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"},
        },
        "catalog": catalog_block(warehouse),
        "aws": {"region": "us-east-1", "endpoint_url": local_stack.info.aws_endpoint},
        "registry": {"registry_name": REGISTRY, "max_attempts": 3},
        "pipelines": {
            name: pipeline_block(
                bootstrap=local_stack.info.bootstrap_plaintext,
                topic=topic,
                table=table,
                checkpoint=tmp_path / "checkpoint",
                trigger={"mode": "processing_time", "interval": "1 second"},
                sink=sink_keys,
                dead_letter=dlq_keys,
            )
        },
    }
    if fmt == "hudi":
        settings["pipelines"][name]["source"]["max_offsets_per_trigger"] = 1000
    conf.write_text(yaml.safe_dump(settings, sort_keys=False))
    produced = Produced({}, {})
    version = publish(
        local_stack, topic, records(INITIAL_RECORDS, start=0), produced, updates=upsert
    )
    sent = INITIAL_RECORDS

    rng = random.Random(KILL_SEED)
    anchors = list(KILL_ANCHORS)
    rng.shuffle(anchors)
    kills: list[Kill] = []
    procs: list[subprocess.Popen[bytes]] = []
    started_at = time.monotonic()
    try:
        for run, anchor in enumerate(anchors):
            before = len(snapshot_batches(spark, table, sink))
            log = tmp_path / f"job-{run}.log"
            proc = start_job(conf, log, job_env)
            procs.append(proc)
            launched = time.monotonic()
            _await_kill_moment(proc, log, anchor, rng)
            after_s = time.monotonic() - launched
            report = kill_process_tree(proc)
            batches = [b for _, b, _ in snapshot_batches(spark, table, sink)]
            # the whole tree is dead: the log holds exactly what the run logged before the kill
            logged = logged_batches(log)
            kills.append(
                Kill(
                    anchor,
                    after_s,
                    batches,
                    len(batches) - before,
                    len(logged),
                    sum(bool(b["committed"]) for b in logged),
                    report,
                )
            )
            # more records between kills: later runs see new offsets as well as old ones
            publish(
                local_stack,
                topic,
                records(RECORDS_BETWEEN_KILLS, start=sent),
                produced,
                version=version,
                updates=upsert,
            )
            sent += RECORDS_BETWEEN_KILLS

        final_log = tmp_path / "job-final.log"
        final_env = {
            **job_env,
            f"ETL__PIPELINES__{name.upper()}__TRIGGER__MODE": "available_now",
            # drain the rest in fewer, larger batches (a pending batch keeps its logged range)
            f"ETL__PIPELINES__{name.upper()}__SOURCE__MAX_OFFSETS_PER_TRIGGER": "3000",
        }
        proc = start_job(conf, final_log, final_env)
        procs.append(proc)
        # beside the other pytest run on 2 cores, Hudi's drain once took over 3 minutes
        timeout = 420 if fmt == "hudi" else 180
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the available_now run did not finish in {timeout}s:\n" + _log_tail(final_log)
            )
        assert code == 0, f"the available_now run exited {code}:\n" + _log_tail(final_log)
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_process_tree(proc)
    elapsed = time.monotonic() - started_at

    summary = "\n  ".join(f"#{i + 1} {k.describe()}" for i, k in enumerate(kills))
    snapshots = snapshot_batches(spark, table, sink)
    batch_ids = [b for _, b, _ in snapshots]
    # a kill between the Iceberg commit and Spark's checkpoint commit makes the next run
    # replay that batch, which the sink must skip (informational: the timing is random)
    skipped = sum(
        log.read_text(errors="replace").count("skipping replay")
        for log in sorted(tmp_path.glob("job-*.log"))
    )
    print(
        f"\n[faults] {len(kills)} SIGKILLs survived in {elapsed:.0f}s:\n  {summary}\n"
        f"[faults] produced {len(produced.records)}, {len(snapshots)} batches committed, "
        f"{sum(n for _, _, n in snapshots)} rows added, {skipped} replayed batches skipped"
    )
    mid_stream = [k for k in kills if k.committed_in_run > 0]
    # each kill landed where its anchor says: "start" by the run's first batch, "commit"
    # after it had (a "commit" run whose first batch never came in time was killed anyway)
    misplaced = [f"#{i + 1} {k.misplaced()}" for i, k in enumerate(kills) if k.misplaced()]
    assert not misplaced, f"{misplaced}\n  {summary}"
    # the tree kill was not vacuous: the Spark JVM was up (and then gone) in most runs
    assert sum(bool(k.report.jvm_pids) for k in kills) >= len(kills) - 1, summary
    assert all(k.report.jvm_pids for k in kills if k.anchor == "commit"), summary
    assert len(mid_stream) >= 2, f"only {len(mid_stream)} kills landed after a commit: {summary}"
    assert len({q for q, _, _ in snapshots}) == 1, "one query id across every restart"
    # every batch id once, none missing: a replayed batch was skipped, not committed again
    assert batch_ids == list(range(len(batch_ids))), f"batch ids committed: {batch_ids}"
    if not upsert:
        assert sum(n for _, _, n in snapshots) == len(produced.records)
    # upserts: one row per key, each the key's last version (every version is newer than the
    # ones before it, so a batch applied twice or skipped would show here)
    assert_exactly(spark, table, produced, sink)
    if dlq is not None:
        dlq.exists(spark)  # registers the table in this session, if the job made one
    assert dead_letter_rows(spark, f"{table}_dlq", name) == 0


# -- 2. registry outage -------------------------------------------------------------------------

# writer schema B: orders.avsc plus an optional field; the reader schema stays orders.avsc
SCHEMA_B = json.dumps(
    {
        **json.loads(SCHEMA),
        "fields": [
            *json.loads(SCHEMA)["fields"],
            {"name": "channel", "type": ["null", "string"], "default": None},
        ],
    }
)


@pytest.fixture
def registry_behind_proxy(tmp_path: Path) -> Iterator[tuple[MotoServer, TcpProxy]]:
    """A dedicated moto server (its own port and state) reached through a stoppable proxy."""
    moto = MotoServer(log_path=tmp_path / "moto.log")
    proxy = TcpProxy(moto.port)
    moto.start()
    try:
        proxy.start()
        yield moto, proxy
    finally:
        try:
            proxy.stop()
        finally:
            moto.stop()


def _registry_settings(
    warehouse: Path, stack: Any, endpoint: str, *, name: str, topic: str, ckpt: Path, mode: str
) -> Settings:
    return Settings.model_validate(
        {
            "catalog": catalog_block(warehouse),
            "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
            "registry": {
                "registry_name": REGISTRY,
                "max_attempts": 2,
                "connect_timeout_s": 1,
                "read_timeout_s": 2,
            },
            "pipelines": {
                name: pipeline_block(
                    bootstrap=stack.info.bootstrap_plaintext,
                    topic=topic,
                    table=f"local.faults.{name}",
                    checkpoint=ckpt,
                    trigger={"mode": mode, "interval": "1 second"},
                )
            },
        }
    )


def _written(results: list[BatchResult]) -> int:
    return sum(r.written for r in results if r.committed)


def _wait_written(
    query: StreamingQuery, results: list[BatchResult], rows: int, timeout: float
) -> None:
    """Waits until the in-process query has committed ``rows`` rows; fails if it dies."""

    def done() -> bool:
        if not query.isActive:
            pytest.fail(f"the query stopped early: {query.exception()}")
        return _written(results) >= rows

    wait_for(f"{rows} rows committed by {query.name}", done, timeout)


def test_registry_outage_fails_the_batch_without_a_commit_then_resumes(
    spark: SparkSession,
    local_stack: Any,
    warehouse: Path,
    tmp_path: Path,
    registry_behind_proxy: tuple[MotoServer, TcpProxy],
) -> None:
    moto, proxy = registry_behind_proxy
    name = "faults_registry"
    topic = f"faults-registry-{uuid.uuid4().hex[:8]}"
    table = f"local.faults.{name}"
    local_stack.broker.create_topic(topic, partitions=2)
    glue = boto3.client(
        "glue", **{**local_stack.info.boto3_kwargs(), "endpoint_url": moto.endpoint}
    )
    version_a = register_schema(glue, registry_name=REGISTRY, schema_name=topic, definition=SCHEMA)
    produced = Produced({}, {})
    publish(local_stack, topic, orders(300, start=0), produced, version=version_a)
    checkpoint = tmp_path / "checkpoint"

    settings_for = functools.partial(
        _registry_settings,
        warehouse,
        local_stack,
        proxy.endpoint,
        name=name,
        topic=topic,
        ckpt=checkpoint,
    )

    # phase 1: the registry answers (through the proxy); version A is resolved and cached
    query, results = start_recording(spark, settings_for(mode="processing_time"), name)
    try:
        _wait_written(query, results, 300, timeout=120)
        assert proxy.accepted > 0, "the job did not reach the registry through the proxy"
        rows_before = row_count(spark, table)
        snapshots_before = snapshot_batches(spark, table)
        results_before = len(results)
        assert rows_before == 300

        # phase 2: version B is registered, then the registry goes away; B's records come in
        version_b = register_schema(
            glue, registry_name=REGISTRY, schema_name=topic, definition=SCHEMA_B
        )
        assert version_b != version_a
        proxy.stop()
        records_b = orders(200, start=300)
        for record in records_b:
            record["channel"] = "app"
        publish(local_stack, topic, records_b, produced, definition=SCHEMA_B, version=version_b)
        failed_at = time.monotonic()
        with pytest.raises(StreamingQueryException) as failure:
            if not query.awaitTermination(120):
                pytest.fail("the query kept running through the registry outage")
        failed_after = time.monotonic() - failed_at
    finally:
        query.stop()
    assert "schema registry unreachable" in str(failure.value), str(failure.value)[:2000]
    assert len(results) == results_before, "the failed batch reported a result"
    assert row_count(spark, table) == rows_before, "rows were committed by the failed batch"
    assert snapshot_batches(spark, table) == snapshots_before
    failed_batch = snapshots_before[-1][1] + 1

    # phase 3: the registry is back on the same address; the same checkpoint resumes
    accepted = proxy.accepted
    proxy.start()
    query, results = start_recording(spark, settings_for(mode="available_now"), name)
    try:
        finished = query.awaitTermination(120)
    finally:
        query.stop()
    assert finished, "the available_now query did not finish in 120s"
    assert query.exception() is None
    assert proxy.accepted > accepted, "the restarted job did not go through the proxy"
    # the failed batch is replayed first (its offset range was logged before it ran)
    assert results, "the restarted query ran no batch"
    assert (results[0].batch_id, results[0].committed) == (failed_batch, True)
    assert sum(r.written for r in results) == 200, results
    assert_exactly(spark, table, produced)
    by_version = {
        r[0]: r[1] for r in spark.table(table).groupBy("_schema_version_id").count().collect()
    }
    assert by_version == {version_a: 300, version_b: 200}
    assert dead_letter_rows(spark, f"{table}_dlq", name) == 0
    print(
        f"\n[faults] registry outage: batch {failed_batch} failed {failed_after:.1f}s after "
        f"B's records were produced, {rows_before} rows kept; after the restart "
        f"{len(produced.records)} rows, exactly once"
    )


# -- 3. broker restart mid-stream ---------------------------------------------------------------

# how long a trigger must be seen waiting on the stopped broker before it is started again
OFFSETS_WAIT_S = 5.0


def _waiting_for_offsets(query: StreamingQuery, hold_s: float) -> Callable[[], bool]:
    """A predicate: the query's trigger has been getting source offsets for ``hold_s`` on end.

    A healthy broker answers within milliseconds, so a trigger seen in that state for
    seconds is waiting on the broker. Fails the test if the query stops.
    """
    since: list[float] = []

    def waiting() -> bool:
        if not query.isActive:
            pytest.fail(f"the query stopped while the broker was down: {query.exception()}")
        status = query.status
        if status["isTriggerActive"] and status["message"].startswith("Getting offsets from"):
            since[:] = since or [time.monotonic()]
            return time.monotonic() - since[0] >= hold_s
        since.clear()
        return False

    return waiting


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    spark: SparkSession, local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    name = "faults_broker"
    topic = f"faults-broker-{uuid.uuid4().hex[:8]}"
    table = f"local.faults.{name}"
    broker = local_stack.broker
    broker.create_topic(topic, partitions=2)
    produced = Produced({}, {})
    version = publish(local_stack, topic, orders(600, start=0), produced)
    checkpoint = tmp_path / "checkpoint"

    def settings(mode: str) -> Settings:
        return Settings.model_validate(
            {
                "catalog": catalog_block(warehouse),
                "aws": {"endpoint_url": local_stack.info.aws_endpoint, "region": "us-east-1"},
                "registry": {"registry_name": REGISTRY, "max_attempts": 3},
                "pipelines": {
                    name: pipeline_block(
                        bootstrap=local_stack.info.bootstrap_plaintext,
                        topic=topic,
                        table=table,
                        checkpoint=checkpoint,
                        trigger={"mode": mode, "interval": "1 second"},
                    )
                },
            }
        )

    query, results = start_recording(spark, settings("processing_time"), name)
    try:
        # everything produced so far is committed: no batch is in flight when the broker stops
        _wait_written(query, results, len(produced.records), timeout=120)
        snapshots_before = snapshot_batches(spark, table)
        results_before = len(results)
        stopped_at = time.monotonic()
        broker.stop()
        # the next trigger asks the stopped broker for the latest offsets and waits there (the
        # Kafka client keeps retrying up to its API timeout, 60 s by default): the query
        # neither fails nor plans a batch while the broker is down
        wait_for(
            f"a trigger to wait {OFFSETS_WAIT_S:.0f}s on the stopped broker",
            _waiting_for_offsets(query, OFFSETS_WAIT_S),
            timeout=60,
            interval=0.2,
        )
        assert query.exception() is None
        assert len(results) == results_before, (
            f"batches ran while the broker was down: {results[results_before:]}"
        )
        assert snapshot_batches(spark, table) == snapshots_before, "committed without a broker"
        broker.start()
        outage = time.monotonic() - stopped_at
        publish(local_stack, topic, orders(400, start=600), produced, version=version)
        # the same query, never restarted, takes the new records once the broker is back
        _wait_written(query, results, len(produced.records), timeout=120)
        assert query.isActive and query.exception() is None
    finally:
        query.stop()
        if not broker.running:
            broker.start()  # other tests share the broker

    last_before = results[results_before - 1].batch_id
    after = results[results_before:]
    # the batches after the outage follow on from the last one before it, each committed once
    assert [r.batch_id for r in after] == list(
        range(last_before + 1, last_before + 1 + len(after))
    ), after
    assert all(r.committed for r in after), after
    assert (sum(r.written for r in after), sum(r.dead_lettered for r in after)) == (400, 0)
    snapshots = snapshot_batches(spark, table)
    batch_ids = [b for _, b, _ in snapshots]
    assert batch_ids == list(range(len(batch_ids))), f"batch ids committed: {batch_ids}"
    assert snapshots[: len(snapshots_before)] == snapshots_before
    assert_exactly(spark, table, produced)
    assert dead_letter_rows(spark, f"{table}_dlq", name) == 0
    print(
        f"\n[faults] broker restart ({outage:.1f}s outage): the query waited for offsets and "
        f"recovered by itself; {len(produced.records)} rows in {len(snapshots)} batches, "
        f"{len(after)} after the outage, exactly once"
    )
