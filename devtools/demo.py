"""`make run`: the main job end to end on the embedded local stack, into all three formats.

Starts a real Kafka broker (KRaft) and a Glue-Schema-Registry API server (moto) on loopback,
registers schemas/orders.avsc and produces Glue-framed Avro order events (every 10th one
zlib-compressed, plus a few poison records). ``jobs.ingest`` (``available_now``) writes them
into an Iceberg append table and, keyed by ``order_id``, into a Delta and a Hudi merge-on-read
upsert table. Then a second round of events updates some orders (newer ``updated_ts``),
replays stale versions of others (older ``updated_ts``: they must lose) and deletes some with
Kafka tombstones; the jobs run again and each table is printed. Hudi and Delta each take the
session catalog, so the Hudi pipeline runs in a job (process) of its own, as it would in
production. Demo state lives in ``.demo/`` and is wiped at the start of each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from devtools.devstack.stack import LocalStack
from devtools.producer import glue_frames, produce, register_schema
from devtools.sample_data import orders
from etl import logs
from etl.config import SourceSettings, load_settings
from etl.registry import read_avsc
from transforms.columns import KAFKA_OFFSET, KAFKA_PARTITION

log = logging.getLogger("devtools.demo")
DEMO_DIR = Path(".demo")
TOPIC = "orders"
SCHEMA_NAME = "orders"
# one job hosts Iceberg and Delta, another Hudi (both formats want the session catalog)
MAIN_JOB = ("orders", "orders_delta")
HUDI_JOB = ("orders_hudi",)
UPDATES, STALE, DELETES = 300, 100, 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--records", type=int, default=5000, help="order events to produce")
    parser.add_argument("--broker-jars", default=".jars/broker")
    # internal: run one job of the demo in this process (the stack is up, env points at it)
    parser.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the first failing job's exit code, else 0."""
    args = parse_args(argv)
    logs.configure()
    if args.job:
        return _run_job(args.conf, args.job, report=args.report)
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    with LocalStack(DEMO_DIR / "stack", Path(args.broker_jars)) as stack:
        info = stack.info
        log.info(
            "local stack up: kafka %s, registry/S3 API %s",
            info.bootstrap_plaintext,
            info.aws_endpoint,
        )
        os.environ.update(_overrides(args.conf, info.aws_endpoint, info.bootstrap_plaintext))
        settings = load_settings(args.conf)
        schema_file = settings.pipeline(MAIN_JOB[0]).decode.schema_file
        assert schema_file is not None
        definition = read_avsc(schema_file)
        version = register_schema(
            info.glue_client(),
            registry_name=settings.registry.registry_name,
            schema_name=SCHEMA_NAME,
            definition=definition,
        )
        stack.broker.create_topic(TOPIC, partitions=3)
        records = orders(args.records)
        poison: list[tuple[bytes | None, bytes | None]] = [
            (b"poison", None),
            (b"poison", b"\x01not-a-glue-frame"),
            (b"poison", bytes([0x03, 0x00]) + uuid.uuid4().bytes + b"\x02"),
        ]
        sent = produce(
            info.bootstrap_plaintext, TOPIC, _keyed(definition, version, records) + poison
        )
        log.info("round 1: produced %d order events (%d poison)", sent, len(poison))
        for code in _run_round(args.conf, report=False):
            if code:
                return code

        changes = _changes(records)
        tombstones: list[tuple[bytes | None, bytes | None]] = [
            (r["order_id"].encode(), None) for r in records[-DELETES:]
        ]
        sent = produce(
            info.bootstrap_plaintext, TOPIC, _keyed(definition, version, changes) + tombstones
        )
        log.info(
            "round 2: produced %d updates, %d stale versions, %d tombstones",
            UPDATES,
            STALE,
            len(tombstones),
        )
        for code in _run_round(args.conf, report=True):
            if code:
                return code
        code = _maintain(args.conf)
        if code:
            return code
        code = _forget(args.conf)
        if code:
            return code
        print(
            f"\nExpected: the append table holds every event ({args.records} + {UPDATES + STALE}); "
            f"each upsert table {args.records - DELETES} orders, o-0..o-{UPDATES - 1} SHIPPED "
            "with a newer updated_ts, stale versions ignored, the last "
            f"{DELETES} orders deleted; tombstones are dead letters (NULL_VALUE) of the append "
            "table only."
        )
        return 0


def _overrides(conf: str, aws_endpoint: str, bootstrap: str) -> dict[str, str]:
    """Points every demo pipeline at this stack and at fresh state, the documented way: env."""
    overrides = {
        "ETL__AWS__ENDPOINT_URL": aws_endpoint,
        "ETL__CATALOG__WAREHOUSE": str(DEMO_DIR / "warehouse"),
        # databases of the session catalog (Hudi and Delta tables keep their own locations)
        "ETL__SPARK__CONF": json.dumps(
            {
                "spark.sql.warehouse.dir": str(DEMO_DIR / "catalog"),
                # the printed tables are the output; stage progress bars would bury them
                "spark.ui.showConsoleProgress": "false",
            }
        ),
        # the forget list's hash key: a fixed local one (a real one comes from Secrets Manager)
        "ETL_PRIVACY_SALT": os.environ.get("ETL_PRIVACY_SALT", "local-demo-salt-not-secret"),
        # moto accepts any credentials; real ones must never reach it
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
    settings = load_settings(conf, env={})
    for name in (*MAIN_JOB, *HUDI_JOB):
        pipeline = settings.pipeline(name)
        prefix = f"ETL__PIPELINES__{name.upper()}"
        overrides[f"{prefix}__SOURCE__BOOTSTRAP_SERVERS"] = bootstrap
        overrides[f"{prefix}__CHECKPOINT"] = str(DEMO_DIR / "checkpoints" / name)
        if pipeline.sink.location:
            overrides[f"{prefix}__SINK__LOCATION"] = str(DEMO_DIR / "lake" / name)
            overrides[f"{prefix}__DEAD_LETTER__LOCATION"] = str(DEMO_DIR / "lake" / f"{name}_dlq")
    return overrides


def _keyed(definition: str, version: str, records: list[dict[str, Any]]) -> list[Any]:
    """(order id, Glue frame) pairs."""
    values = glue_frames(definition, version, records, compress_every=10)
    return [(r["order_id"].encode(), v) for r, v in zip(records, values, strict=True)]


def _changes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newer versions of the first orders, then stale (older) versions of the next ones."""
    day = dt.timedelta(days=1)
    newer = [
        {**r, "status": "SHIPPED", "updated_ts": (r["updated_ts"] or r["order_ts"]) + day}
        for r in records[:UPDATES]
    ]
    # only orders that have an updated_ts: a null one loses to any value, stale or not
    dated = [r for r in records[UPDATES:-DELETES] if r["updated_ts"] is not None][:STALE]
    stale = [{**r, "status": "CANCELLED", "updated_ts": r["updated_ts"] - day} for r in dated]
    return newer + stale


def _run_round(conf: str, *, report: bool) -> list[int]:
    """Runs the Iceberg + Delta job here, then the Hudi job in a process of its own."""
    main_code = _run_job(conf, list(MAIN_JOB), report=report)
    command = [sys.executable, "-m", "devtools.demo", "--conf", conf, "--job", *HUDI_JOB]
    hudi = subprocess.run([*command, *(["--report"] if report else [])], check=False)
    return [main_code, hudi.returncode]


def _maintain(conf: str) -> int:
    """Runs every maintenance task on the Iceberg and Delta tables, one job per format (each
    in a session hosting only it); Hudi's ran inline in its stream's writer."""
    for fmt in ("iceberg", "delta"):
        print(f"\n== maintenance of the {fmt} tables (one JSON line per task and table)")
        command = [sys.executable, "-m", "jobs.maintain", "--conf", conf, "--format", fmt]
        done = subprocess.run([*command, "--task", "all"], check=False)
        if done.returncode:
            return done.returncode
    print(
        "\n== the hudi tables compacted and cleaned inline, in the stream's writer (a job "
        "beside it would race it; `jobs.maintain --format hudi` runs on a stopped table)"
    )
    return 0


def _forget(conf: str) -> int:
    """Erases one customer (GDPR) from the pipelines with a privacy section (the Iceberg one)."""
    print(
        "\n== GDPR erasure of one customer (one JSON line: rows deleted, history purged, every "
        "file scanned)"
    )
    command = [sys.executable, "-m", "jobs.forget", "--conf", conf, "--format", "iceberg"]
    command += ["--request-id", f"demo-{int(time.time())}", "--subject", "c1@example.com"]
    return subprocess.run(command, check=False).returncode


def _run_job(conf: str, names: list[str], *, report: bool) -> int:
    """Runs ``jobs.ingest`` for the pipelines, then prints their tables if asked."""
    from jobs import ingest

    argv = ["--conf", conf]
    for name in names:
        argv += ["--pipeline", name]
    code = ingest.main(argv)
    if code == 0 and report:
        for name in names:
            _report(conf, name)
    return code


def _report(conf: str, name: str) -> None:
    """Prints what landed in a pipeline's tables, read back through its sinks."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from etl.pipeline import pipeline_tables

    spark = SparkSession.getActiveSession()
    assert spark is not None
    pipeline = load_settings(conf).pipeline(name)
    table, dead_letter = pipeline_tables(pipeline)
    sink = pipeline.sink
    rows = table.read(spark)
    kind = f"{sink.format.value} {sink.mode.value}"
    print(f"\n== {name}: {kind} table {sink.table}: {rows.count()} rows")
    props = F.col("properties")
    table.commit_history(spark).select(
        "committed_at",
        props["etl.batch-id"].alias("batch_id"),
        props["etl.records-read"].alias("records_read"),
        props["etl.kafka.offsets"].alias("kafka_offsets"),
    ).where(F.col("batch_id").isNotNull()).orderBy("committed_at").show(truncate=False)
    _report_group(pipeline.source, name)
    ids = ["o-0", "o-1", f"o-{UPDATES}", f"o-{UPDATES + 1}"]
    rows.where(F.col("order_id").isin(ids)).select(
        "order_id", "status", "updated_ts", "amount", KAFKA_PARTITION, KAFKA_OFFSET
    ).orderBy("order_id", KAFKA_OFFSET).show(truncate=False)
    print(f"== {name}: dead-letter table {pipeline.dead_letter.table}")
    dead_letter.read(spark).groupBy("error_class").agg(F.count("*").alias("records")).orderBy(
        "error_class"
    ).show(truncate=False)


def _report_group(source: SourceSettings, name: str) -> None:
    """Prints the pipeline's consumer group as Kafka sees it: committed offsets and lag."""
    from confluent_kafka import Consumer, TopicPartition

    group = source.group_id(name)
    consumer = Consumer({"bootstrap.servers": source.bootstrap_servers, "group.id": group})
    try:
        partitions = consumer.list_topics(TOPIC, timeout=30).topics[TOPIC].partitions
        committed = consumer.committed([TopicPartition(TOPIC, p) for p in partitions], timeout=30)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=30)
            lag += high - max(tp.offset, 0)
    finally:
        consumer.close()
    offsets = {tp.partition: tp.offset for tp in committed}
    print(f"== {name}: consumer group {group}: committed offsets {offsets}, lag {lag}")


if __name__ == "__main__":
    sys.exit(main())
