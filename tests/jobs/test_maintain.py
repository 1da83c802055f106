"""The maintenance job's command line: which pipelines one run takes, its JSON lines, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession

from etl.config import TableFormat, load_settings
from etl.exceptions import ConfigError
from jobs import maintain
from jobs.maintain import select_pipelines
from tests.conftest import REPO, catalog_block
from tests.formats.test_maintenance import make_lake

LOCAL = REPO / "conf" / "local.yaml"


def test_select_pipelines_takes_those_of_the_format() -> None:
    settings = load_settings(LOCAL, env={})

    assert select_pipelines(settings, None, "hudi") == (TableFormat.HUDI, ["orders_hudi"])
    assert select_pipelines(settings, ["orders"], None) == (TableFormat.ICEBERG, ["orders"])


def test_select_pipelines_refuses_several_formats_in_one_run_and_says_which_runs_to_make() -> None:
    settings = load_settings(LOCAL, env={})

    with pytest.raises(ConfigError) as info:
        select_pipelines(settings, None, None)

    assert str(info.value) == (
        "--pipeline: one run maintains tables of one format (each in a session hosting only "
        "it), found several: run once per format: --format delta (orders_delta); "
        "--format hudi (orders_hudi); --format iceberg (orders)"
    )


def test_select_pipelines_refuses_a_pipeline_of_another_format_or_an_unknown_one() -> None:
    settings = load_settings(LOCAL, env={})

    with pytest.raises(ConfigError, match=r"expected pipelines writing delta, found orders \("):
        select_pipelines(settings, ["orders"], "delta")
    with pytest.raises(ConfigError, match=r"pipelines\.nope: no such pipeline"):
        select_pipelines(settings, ["nope"], None)


def _conf(tmp_path: Path, warehouse: Path, table: str) -> Path:
    config: dict[str, Any] = {
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "ui_enabled": False},
        "catalog": catalog_block(warehouse),
        "pipelines": {
            "kept": {
                "source": {"bootstrap_servers": "unused:9092", "topics": ["t"]},
                "decode": {"schema_file": str(REPO / "schemas" / "orders.avsc")},
                "sink": {"table": table},
                "dead_letter": {"table": f"{table}_dlq"},
                "checkpoint": str(tmp_path / "checkpoint"),
                "maintenance": {"compact": {"min_input_files": 2}},
            }
        },
    }
    path = tmp_path / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_main_prints_one_json_line_per_task_and_table_and_a_dry_run_changes_nothing(
    spark: SparkSession,
    warehouse: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = make_lake(spark, warehouse, tmp_path, TableFormat.ICEBERG, {})
    lake.stream([[1, 2], [3], [4]])
    table, _ = lake.tables()
    conf = _conf(tmp_path, warehouse, table.name)
    snapshots = spark.table(f"{table.name}.snapshots").count()

    assert maintain.main(["--conf", str(conf), "--task", "all", "--dry-run"]) == 0
    dry = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [(r["role"], r["task"], r["status"], r["dry_run"]) for r in dry] == [
        ("table", "compact", "done", True),
        ("table", "expire", "done", True),
        ("table", "orphans", "done", True),
        ("dead_letter", "compact", "absent", True),
        ("dead_letter", "expire", "absent", True),
        ("dead_letter", "orphans", "absent", True),
    ]
    assert dry[0]["details"] == {"files_below_target": 3}
    assert spark.table(f"{table.name}.snapshots").count() == snapshots
    assert lake.rows() == [(i, f"n{i}") for i in (1, 2, 3, 4)]

    assert maintain.main(["--conf", str(conf), "--task", "compact"]) == 0
    (done,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()][:1]

    assert (done["files_before"], done["files_after"], done["files_rewritten"]) == (3, 1, 3)
    assert lake.rows() == [(i, f"n{i}") for i in (1, 2, 3, 4)]
    # both runs are in the log table
    logged = spark.table(f"{table.name}_maintenance_log").groupBy("dry_run").count().collect()
    assert sorted((r["dry_run"], r["count"]) for r in logged) == [(False, 2), (True, 6)]


def test_main_on_a_table_that_does_not_exist_fails_with_nothing_done(
    warehouse: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = _conf(tmp_path, warehouse, "local.jobs.never_written")

    assert maintain.main(["--conf", str(conf), "--task", "expire"]) == 1

    assert "local.jobs.never_written: expected an iceberg table in the catalog, found none" in (
        caplog.text
    )


def test_glue_script_maps_our_job_parameters_to_the_maintenance_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.glue_maintain import maintain_argv

    monkeypatch.chdir(tmp_path)
    (tmp_path / "glue.yaml").write_text("{}")
    glue = ["--JOB_NAME", "maintain", "--conf", "spark.x=1", "--enable-metrics"]

    argv = maintain_argv(
        [
            *glue,
            "--etl-config",
            "glue.yaml",
            "--etl-task",
            "all",
            "--etl-format=delta",
            "--etl-dry-run",
            "true",
            "--etl-pipeline",
            "a,b",
        ]
    )

    assert argv == [
        "--conf",
        "glue.yaml",
        "--pipeline",
        "a",
        "--pipeline",
        "b",
        "--task",
        "all",
        "--format",
        "delta",
        "--dry-run",
    ]


@pytest.mark.parametrize(
    ("ours", "error"),
    [
        (["--etl-config", "glue.yaml"], "--etl-task: required job parameter missing"),
        (
            ["--etl-config", "glue.yaml", "--etl-task", "all", "--etl-dry-run", "yes"],
            "--etl-dry-run: expected true or false, found 'yes'",
        ),
        (["--etl-config", "glue.yaml", "--etl-tasks", "all"], "--etl-tasks: unknown job parameter"),
    ],
)
def test_glue_script_refuses_wrong_parameters_with_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ours: list[str],
    error: str,
) -> None:
    from jobs import glue_maintain

    monkeypatch.chdir(tmp_path)
    (tmp_path / "glue.yaml").write_text("{}")

    assert glue_maintain.main(["--JOB_NAME", "m", *ours]) == 2

    assert error in capsys.readouterr().err
