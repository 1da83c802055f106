"""The replay job's command line, end to end on tables on disk (no broker needed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml
from pyspark.sql import SparkSession

from devtools.sample_data import orders
from devtools.wire import avro_body, encode_confluent
from etl.config import load_settings
from etl.pipeline import build_pipeline
from etl.privacy import build_forget_list
from jobs import replay_dlq
from tests.conftest import REPO, catalog_block
from tests.etl.test_pipeline import SCHEMA, _kafka_batch

AVSC = str(REPO / "schemas" / "orders.avsc")


def _conf(
    tmp_path: Path,
    warehouse: Path,
    ids: list[int],
    privacy: dict[str, Any] | None = None,
    name: str = "replay_cli",
) -> Path:
    """A settings file whose Confluent id map knows ``ids``."""
    config: dict[str, Any] = {
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "ui_enabled": False},
        "catalog": catalog_block(warehouse),
        "pipelines": {
            name: {
                "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
                "decode": {
                    "wire_format": "confluent",
                    "schema_file": AVSC,
                    "confluent_schemas": {i: AVSC for i in ids},
                },
                "sink": {"table": f"local.jobs.{name}"},
                "dead_letter": {"table": f"local.jobs.{name}_dlq"},
                "checkpoint": str(tmp_path / "checkpoint"),
                **({"privacy": privacy} if privacy else {}),
            }
        },
    }
    path = tmp_path / f"settings-{'-'.join(map(str, ids))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_main_replays_dead_letters_once_the_schema_is_known(
    spark: SparkSession, warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    records = orders(3, start=70)
    values = [
        encode_confluent(avro_body(parsed, r), 7 if i == 0 else 9) for i, r in enumerate(records)
    ]
    before = build_pipeline(load_settings(_conf(tmp_path, warehouse, [7]), env={}), "replay_cli")
    assert before.process(_kafka_batch(spark, values), 0, query_id="q").dead_lettered == 2

    # id 9 is now mapped: the job replays the two dead letters
    conf = _conf(tmp_path, warehouse, [7, 9])
    assert replay_dlq.main(["--conf", str(conf), "--pipeline", "replay_cli"]) == 0
    out = capsys.readouterr().out
    assert "2 dead letters considered, 2 appended, 2 marked replayed, still failing: none" in out
    ids = sorted(r[0] for r in spark.table("local.jobs.replay_cli").select("order_id").collect())
    assert ids == ["o-70", "o-71", "o-72"]

    # a second run finds nothing left to replay
    assert replay_dlq.main(["--conf", str(conf), "--pipeline", "replay_cli"]) == 0
    assert "0 dead letters considered, 0 appended" in capsys.readouterr().out


def test_main_unknown_pipeline_returns_one(
    warehouse: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = _conf(tmp_path, warehouse, [7])
    assert replay_dlq.main(["--conf", str(conf), "--pipeline", "nope"]) == 1
    assert "pipelines.nope: no such pipeline (known: replay_cli)" in caplog.text


def test_main_never_appends_a_forgotten_subject_s_dead_letter(
    spark: SparkSession,
    warehouse: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_PRIVACY_SALT", "a-salt-for-the-replay-test")
    privacy = {"subject_fields": ["customer_email"]}
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    records = [r | {"customer_email": f"who-{i}@example.org"} for i, r in enumerate(orders(2))]
    values = [encode_confluent(avro_body(parsed, r), 9) for r in records]
    conf = _conf(tmp_path, warehouse, [7], privacy, "forgets")
    before = build_pipeline(load_settings(conf, env={}), "forgets")
    before.process(_kafka_batch(spark, values), 0, query_id="q")
    settings = load_settings(_conf(tmp_path, warehouse, [7, 9], privacy, "forgets"), env={})
    forget = build_forget_list(settings.pipeline("forgets"), settings.aws)
    assert forget is not None
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    forget.record(
        spark, "forgets", request_id="r1", requested_at=now, subjects=["who-0@example.org"]
    )

    conf = _conf(tmp_path, warehouse, [7, 9], privacy, "forgets")
    assert replay_dlq.main(["--conf", str(conf), "--pipeline", "forgets"]) == 0

    out = capsys.readouterr().out
    assert "2 dead letters considered, 1 appended, 2 marked replayed" in out
    assert "of forgotten subjects (not appended): 1" in out
    emails = [r[0] for r in spark.table("local.jobs.forgets").select("customer_email").collect()]
    assert emails == ["who-1@example.org"]
