"""Operations on the real local stack: consumer-group offsets and lag, offset lineage, and a
graceful stop on SIGTERM with an exact restart.

The group's offsets are read back by Kafka's own ``kafka-consumer-groups`` tool (from the
broker's jars) and by an independent client (confluent-kafka); the table's commit metadata by
pyiceberg.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from pyspark.sql import SparkSession

from devtools.sample_data import orders
from devtools.tables import hadoop_iceberg_table
from etl.config import Settings
from etl.formats.base import BATCH_ID_KEY, OFFSETS_KEY, QUERY_ID_KEY
from etl.offsets import OffsetRange, parse_ranges
from etl.pipeline import Pipeline, build_pipeline, start_pipeline
from tests.conftest import REPO, catalog_block
from tests.integration.streams import log_events, logged_batches, start_job
from tests.integration.test_faults import (
    Produced,
    assert_exactly,
    pipeline_block,
    publish,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3


class _Stream(NamedTuple):
    """A pipeline under test: its name, its topic of produced orders, its consumer group."""

    name: str
    topic: str
    group: str
    produced: Produced


def _stream(stack: Any, kind: str, records: int) -> _Stream:
    """A new topic of ``records`` Glue-framed orders, and the names of a pipeline reading it."""
    name = f"ops_{kind}_{uuid.uuid4().hex[:6]}"
    topic = f"ops-{kind}-{uuid.uuid4().hex[:8]}"
    stack.broker.create_topic(topic, partitions=PARTITIONS)
    produced = Produced({}, {})
    publish(stack, topic, orders(records, start=0), produced)
    return _Stream(name, topic, f"etl-test.{name}", produced)


def _settings(
    stack: Any, warehouse: Path, tmp_path: Path, stream: _Stream, **trigger: str
) -> dict[str, Any]:
    block = pipeline_block(
        bootstrap=stack.info.bootstrap_plaintext,
        topic=stream.topic,
        table=f"local.ops.{stream.name}",
        checkpoint=tmp_path / "checkpoint",
        trigger=trigger,
    )
    block["source"]["consumer_group"] = stream.group
    return {
        "spark": {
            "app_name": "ops",
            "master": "local[2]",
            "jars_dir": str((REPO / ".jars" / "spark").resolve()),
            "ui_enabled": False,
            "shuffle_partitions": 2,
        },
        "catalog": catalog_block(warehouse),
        "aws": {"region": "us-east-1", "endpoint_url": stack.info.aws_endpoint},
        "registry": {"registry_name": "etl-faults", "max_attempts": 3},
        "pipelines": {stream.name: block},
    }


def _group_tool(stack: Any, group: str) -> dict[int, tuple[int, int]]:
    """partition -> (committed offset, lag) as Kafka's own kafka-consumer-groups describes it."""
    out = subprocess.run(
        [
            "java",
            "-cp",
            str(REPO / ".jars" / "broker" / "*"),
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            stack.info.bootstrap_plaintext,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == group and fields[2].isdigit():
            found[int(fields[2])] = (int(fields[3]), int(fields[5]))
    return found


def _group_offsets(stack: Any, group: str, topic: str) -> dict[int, int]:
    """partition -> committed offset, read by an independent client (librdkafka)."""
    consumer = Consumer({"bootstrap.servers": stack.info.bootstrap_plaintext, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=30)}
    finally:
        consumer.close()


def _snapshot_lineage(warehouse: Path, name: str) -> list[tuple[str, int, list[OffsetRange]]]:
    """(query id, batch id, offset ranges) of each table commit, oldest first, by pyiceberg."""
    table = hadoop_iceberg_table(warehouse, f"ops.{name}")
    found = []
    for snapshot in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        assert snapshot.summary is not None
        props = snapshot.summary.additional_properties
        if OFFSETS_KEY in props:
            found.append(
                (
                    props[QUERY_ID_KEY],
                    int(props[BATCH_ID_KEY]),
                    list(parse_ranges(props[OFFSETS_KEY])),
                )
            )
    return found


def _rows_offsets(spark: SparkSession, name: str) -> set[tuple[int, int]]:
    rows = spark.table(f"local.ops.{name}").select("_kafka_partition", "_kafka_offset").collect()
    return {(r[0], r[1]) for r in rows}


def _at(ts: str) -> float:
    """Seconds since the epoch of a JSON log record's time."""
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _run_to_end(spark: SparkSession, settings: Settings, name: str, pipeline: Pipeline) -> None:
    """Runs an ``available_now`` pipeline to its end, then closes its group's Admin client."""
    query, _ = start_pipeline(spark, settings, name, pipeline)
    try:
        query.awaitTermination(300)
    finally:
        query.stop()
        assert pipeline.group is not None
        pipeline.group.close()
    assert query.exception() is None


def test_group_offsets_lag_and_lineage_follow_each_batch(
    spark: SparkSession, local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    stream = _stream(local_stack, "lag", 900)
    name, topic, group, produced = stream
    settings = Settings.model_validate(
        _settings(local_stack, warehouse, tmp_path, stream, mode="available_now")
    )
    seen: list[tuple[dict[str, Any], dict[int, int]]] = []
    pipeline = build_pipeline(settings, name)

    def after_batch(_: Any) -> None:
        # called after the batch's table commit and group commit, before the next batch
        assert pipeline.last_progress is not None
        seen.append((pipeline.last_progress.fields(), _group_offsets(local_stack, group, topic)))

    pipeline.on_result = after_batch
    _run_to_end(spark, settings, name, pipeline)

    assert len(seen) >= 3, "max_offsets_per_trigger 300 over 900 records: three batches or more"
    for fields, committed in seen:
        # the group holds exactly the end offsets of the batch that just committed
        ends = {r["partition"]: r["end"] for r in fields["offsets"]}
        assert committed == ends, fields["batch_id"]
        assert fields["consumer_group"] == group
        assert fields["lag"] == 900 - sum(ends.values())
    assert seen[0][0]["lag"] > 0, "records were waiting after the first batch"
    assert seen[-1][0]["lag"] == 0
    assert_exactly(spark, f"local.ops.{name}", produced)

    # Kafka's own tooling sees the group, at the table's last batch, with no lag
    lineage = _snapshot_lineage(warehouse, name)
    assert [b for _, b, _ in lineage] == list(range(len(seen)))
    last_ends: dict[int, int] = {}
    for _, _, ranges in lineage:
        for r in ranges:
            last_ends[r.partition] = max(last_ends.get(r.partition, 0), r.end)
    assert _group_tool(local_stack, group) == {p: (end, 0) for p, end in last_ends.items()}
    # lineage: the commits' ranges are disjoint and cover exactly the offsets of the rows
    covered = [
        (r.partition, offset)
        for _, _, ranges in lineage
        for r in ranges
        for offset in range(r.start or 0, r.end)
    ]
    assert len(covered) == len(set(covered))
    assert set(covered) == _rows_offsets(spark, name)


def test_sigterm_mid_batch_stops_after_the_commit_and_restarts_exactly(
    spark: SparkSession, local_stack: Any, warehouse: Path, tmp_path: Path
) -> None:
    stream = _stream(local_stack, "stop", 3000)
    name, topic, group, produced = stream
    conf = tmp_path / "ingest.yaml"
    settings = _settings(
        local_stack, warehouse, tmp_path, stream, mode="processing_time", interval="1 second"
    )
    conf.write_text(yaml.safe_dump(settings, sort_keys=False))
    log = tmp_path / "run1.log"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ETL__")}
    proc = start_job(conf, log, {**env, "PYSPARK_PYTHON": sys.executable, "TZ": "UTC"})
    try:
        wait_for(
            "the first batch", lambda: bool(logged_batches(log)) or proc.poll() is not None, 240
        )
        assert proc.poll() is None, log.read_text()
        # the backlog (300 records a batch) starts the next batch at once: let it get going
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    events = log_events(log)
    messages = [e.get("message", "") for e in events]
    asked = next(i for i, m in enumerate(messages) if "stopping after the running batch" in m)
    # a batch running when the signal came (started before it, by its end time less its
    # duration) finished and committed; one starting after it was refused (no line)
    signalled = _at(events[asked]["ts"])
    in_flight = [
        e
        for e in events[asked:]
        if e.get("event") == "batch" and _at(e["ts"]) - e["seconds"] < signalled
    ]
    assert in_flight, "no batch was running at the signal: the test missed its moment"
    assert all(e["committed"] for e in in_flight)
    assert any("stopped between batches" in m for m in messages[asked:])
    assert not any(e["level"] == "ERROR" for e in events), [
        e for e in events if e["level"] == "ERROR"
    ]
    logged = logged_batches(log)
    assert 1 <= len(logged) < 10, "stopped before the backlog was drained"
    # no half batch: every batch the run logged is a commit of the table, and nothing more
    lineage = _snapshot_lineage(warehouse, name)
    assert [b for _, b, _ in lineage] == [e["batch_id"] for e in logged]
    # the group stands at the last committed batch, lag visible to Kafka's tooling
    ends = {r["partition"]: r["end"] for r in logged[-1]["offsets"]}
    described = _group_tool(local_stack, group)
    assert {p: offset for p, (offset, _) in described.items()} == ends
    assert sum(lag for _, lag in described.values()) == 3000 - sum(ends.values())

    # restart (in this process: the same checkpoint, so the same query): the rest, exactly once
    settings["pipelines"][name]["trigger"] = {"mode": "available_now"}
    restarted = Settings.model_validate(settings)
    pipeline = build_pipeline(restarted, name)
    _run_to_end(spark, restarted, name, pipeline)
    assert_exactly(spark, f"local.ops.{name}", produced)
    batches = [b for _, b, _ in _snapshot_lineage(warehouse, name)]
    assert batches == list(range(len(batches)))
    assert pipeline.last_progress is not None and pipeline.last_progress.lag == {
        f"{topic}/{p}": 0 for p in range(PARTITIONS)
    }
