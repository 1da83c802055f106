from __future__ import annotations

from pathlib import Path

import pyspark
import pytest

from etl.jvm import maven_dependencies, udf_jar
from jobs import glue_ingest, ingest

# Glue's own arguments as the script gets them: with values, one bare flag (--enable-metrics, its
# value empty) and Spark settings in --conf the way AWS's Iceberg guide sets them
GLUE_ARGS = [
    "--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1",
    "--job-bookmark-option", "job-bookmark-disable", "--TempDir", "s3://b/tmp",
    "--enable-metrics",
    "--conf",
    "spark.sql.extensions=org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    "--conf", "spark.sql.catalog.glue_catalog=org.apache.iceberg.spark.SparkCatalog",
    "--JOB_NAME", "orders-stream",
]  # fmt: skip
KNOWN = "(known: --etl-config, --etl-pipeline, --etl-log-level)"


@pytest.fixture
def ingest_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of each ``jobs.ingest.main`` call, run from a working directory holding
    ``glue.yaml`` as ``--extra-files`` leaves it."""
    (tmp_path / "glue.yaml").write_text("pipelines: {}\n")
    monkeypatch.chdir(tmp_path)
    calls: list[list[str]] = []

    def fake_main(argv: list[str] | None = None) -> int:
        calls.append(list(argv or []))
        return 0

    monkeypatch.setattr(ingest, "main", fake_main)
    return calls


@pytest.mark.parametrize(
    ("config", "pipeline", "log_level"),
    [
        (["--etl-config", "glue.yaml"], ["--etl-pipeline", "orders,payments"],
         ["--etl-log-level", "DEBUG"]),
        (["--etl-config=glue.yaml"], ["--etl-pipeline=orders,payments"],
         ["--etl-log-level=DEBUG"]),
        (["--etl-config=glue.yaml"], ["--etl-pipeline", "orders,payments"],
         ["--etl-log-level=DEBUG"]),
    ],
    ids=["key-value", "key=value", "mixed"],
)  # fmt: skip
def test_main_hands_ingest_our_parameters_and_drops_glues(
    ingest_calls: list[list[str]], config: list[str], pipeline: list[str], log_level: list[str]
) -> None:
    # ours first, right after Glue's bare flag, and last
    argv = [*config, *GLUE_ARGS[:9], *pipeline, *GLUE_ARGS[9:], *log_level]
    assert glue_ingest.main(argv) == 0
    assert ingest_calls == [
        ["--conf", "glue.yaml", "--pipeline", "orders", "--pipeline", "payments",
         "--log-level", "DEBUG"],
    ]  # fmt: skip


@pytest.mark.parametrize("glue_key", ["--python-modules-installer-option", "--TempDir"])
def test_a_glue_value_that_looks_like_ours_stays_glues(
    ingest_calls: list[list[str]], glue_key: str
) -> None:
    argv = [*GLUE_ARGS, glue_key, "--etl-pipeline=payments", "--etl-config", "glue.yaml"]
    assert glue_ingest.main(argv) == 0
    assert ingest_calls == [["--conf", "glue.yaml"]]


def test_missing_config_names_the_parameter(
    ingest_calls: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    # the old way, the YAML in Glue's --conf, is not ours either
    argv = [*GLUE_ARGS, "--etl-pipeline", "orders"]
    argv[argv.index("--conf") + 1] = "glue.yaml"
    assert glue_ingest.main(argv) == 2
    assert ingest_calls == []
    assert capsys.readouterr().err == (
        "glue_ingest: error: --etl-config: required job parameter missing (the settings YAML "
        "shipped with --extra-files, by file name, e.g. glue.yaml)\n"
    )


@pytest.mark.parametrize(
    ("ours", "message"),
    [
        (["--etl-config", "glue.yaml", "--etl-conf", "glue.yaml"],
         f"--etl-conf: unknown job parameter {KNOWN}"),
        (["--etl-configs=glue.yaml"], f"--etl-configs: unknown job parameter {KNOWN}"),
        (["--etl-config", "s3://b/conf/glue.yaml"],
         "--etl-config: s3://b/conf/glue.yaml is a URI, but the settings are read from a local "
         "file: ship it with --extra-files s3://b/conf/glue.yaml and set --etl-config glue.yaml"),
        (["--etl-config", "emr.yaml"], "--etl-config: no file emr.yaml in the working directory"),
        (["--etl-config", "--etl-pipeline", "orders"],
         "--etl-config: job parameter without a value"),
        (["--etl-config=glue.yaml", "--etl-log-level"],
         "--etl-log-level: job parameter without a value"),
        (["--etl-config="], "--etl-config: job parameter without a value"),
        (["--etl-config=glue.yaml", "--etl-config", "emr.yaml"],
         "--etl-config: given 2 times: glue.yaml, emr.yaml"),
        (["--etl-config=glue.yaml", "--etl-pipeline", "orders,"],
         "--etl-pipeline: empty pipeline name in 'orders,'"),
    ],
)  # fmt: skip
def test_wrong_parameters_are_named(
    ingest_calls: list[list[str]],
    capsys: pytest.CaptureFixture[str],
    ours: list[str],
    message: str,
) -> None:
    assert glue_ingest.main([*GLUE_ARGS, *ours]) == 2
    assert ingest_calls == []
    assert capsys.readouterr().err.startswith(f"glue_ingest: error: {message}")


def test_maven_dependencies_match_pyspark_and_carry_exclusions() -> None:
    packages, excludes = maven_dependencies()
    spark_side = [p for p in packages if p.startswith("org.apache.spark:")]
    # spark-sql-kafka and spark-avro must equal the pyspark version, or the JVM side breaks
    assert spark_side == [
        f"org.apache.spark:spark-sql-kafka-0-10_2.12:{pyspark.__version__}",
        f"org.apache.spark:spark-avro_2.12:{pyspark.__version__}",
    ]
    assert "software.amazon.msk:aws-msk-iam-auth:2.3.2" in packages
    assert {"software.amazon.awssdk:*", "com.fasterxml.jackson.core:*"} <= set(excludes)


def test_udf_jar_is_found_once_built(tmp_path: Path) -> None:
    assert udf_jar(tmp_path) is None
    (tmp_path / "etl-udf-1.0.0.jar").write_bytes(b"")
    assert udf_jar(tmp_path) == tmp_path / "etl-udf-1.0.0.jar"
