"""`make run`: the main job end to end on the embedded local stack.

Starts a real Kafka broker (KRaft) and a Glue-Schema-Registry API server (moto) on loopback,
registers schemas/orders.avsc, produces Glue-framed Avro order events (every 10th one
zlib-compressed, plus a few poison records), runs ``jobs.ingest`` with ``available_now``, and
prints what landed. Demo state lives in ``.demo/`` and is wiped at the start of each run.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path

import boto3

from devtools.devstack.stack import LocalStack
from devtools.producer import glue_frames, produce, register_schema
from devtools.sample_data import orders
from etl import logs
from etl.config import load_settings
from etl.registry import read_avsc
from transforms.columns import KAFKA_OFFSET, KAFKA_PARTITION

log = logging.getLogger("devtools.demo")
DEMO_DIR = Path(".demo")
PIPELINE = "orders"
TOPIC = "orders"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--records", type=int, default=5000, help="order events to produce")
    parser.add_argument("--broker-jars", default=".jars/broker")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the ingest job's exit code."""
    args = parse_args(argv)
    logs.configure()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir()
    with LocalStack(DEMO_DIR / "stack", Path(args.broker_jars)) as stack:
        info = stack.info
        log.info(
            "local stack up: kafka %s, registry/S3 API %s",
            info.bootstrap_plaintext,
            info.aws_endpoint,
        )
        # point the pipeline at this stack and at fresh demo state, the documented way: env
        prefix = f"ETL__PIPELINES__{PIPELINE.upper()}"
        overrides = {
            "ETL__AWS__ENDPOINT_URL": info.aws_endpoint,
            f"{prefix}__SOURCE__BOOTSTRAP_SERVERS": info.bootstrap_plaintext,
            f"{prefix}__CHECKPOINT": str(DEMO_DIR / "checkpoints" / PIPELINE),
            "ETL__CATALOG__WAREHOUSE": str(DEMO_DIR / "warehouse"),
            # moto accepts any credentials; real ones must never reach it
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
        }
        os.environ.update(overrides)
        settings = load_settings(args.conf)
        pipeline = settings.pipeline(PIPELINE)
        assert pipeline.decode.schema_file is not None
        aws = info.boto3_kwargs()
        glue = boto3.client(
            "glue",
            endpoint_url=aws["endpoint_url"],
            region_name=aws["region_name"],
            aws_access_key_id=aws["aws_access_key_id"],
            aws_secret_access_key=aws["aws_secret_access_key"],
        )
        definition = read_avsc(pipeline.decode.schema_file)
        version = register_schema(
            glue,
            registry_name=settings.registry.registry_name,
            schema_name=PIPELINE,
            definition=definition,
        )
        stack.broker.create_topic(TOPIC, partitions=3)
        records = orders(args.records)
        values = glue_frames(definition, version, records, compress_every=10)
        poison: list[bytes | None] = [
            None,
            b"\x01not-a-glue-frame",
            bytes([0x03, 0x00]) + uuid.uuid4().bytes + b"\x02",
        ]
        sent = produce(
            info.bootstrap_plaintext,
            TOPIC,
            [(r["order_id"].encode(), v) for r, v in zip(records, values, strict=True)]
            + [(b"poison", p) for p in poison],
        )
        log.info(
            "produced %d records (schema version %s), %d of them poison", sent, version, len(poison)
        )

        from jobs import ingest

        code = ingest.main(["--conf", args.conf, "--pipeline", PIPELINE])
        if code == 0:
            _report(
                settings.pipeline(PIPELINE).sink.table,
                pipeline.dead_letter.table,
                pipeline.checkpoint,
            )
        return code


def _report(table: str, dead_letter: str, checkpoint: str) -> None:
    """Prints what landed, read back through Spark."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    assert spark is not None
    print(f"\n== table {table}: {spark.table(table).count()} rows")
    spark.sql(
        f"SELECT snapshot_id, operation, summary['etl.batch-id'] AS batch_id, "
        f"summary['etl.records-read'] AS records_read, summary['added-records'] AS added_records "
        f"FROM {table}.snapshots ORDER BY committed_at"
    ).show(truncate=False)
    spark.table(table).select(
        "order_id",
        "status",
        "amount",
        "order_ts",
        "shipping_address.city",
        KAFKA_PARTITION,
        KAFKA_OFFSET,
    ).orderBy(KAFKA_PARTITION, KAFKA_OFFSET).show(5, truncate=False)
    print(f"== dead-letter table {dead_letter}")
    spark.sql(
        f"SELECT error_class, count(*) AS records, first(error_message) AS example "
        f"FROM {dead_letter} GROUP BY error_class ORDER BY error_class"
    ).show(truncate=False)
    print(f"== checkpoint: {Path(checkpoint).resolve()}")
    spark.stop()


if __name__ == "__main__":
    sys.exit(main())
