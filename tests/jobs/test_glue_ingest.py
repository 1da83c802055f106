from __future__ import annotations

from pathlib import Path

import pyspark

from etl.jvm import maven_dependencies, udf_jar
from jobs.glue_ingest import ingest_argv


def test_ingest_argv_keeps_only_our_flags() -> None:
    argv = [
        "--JOB_NAME", "orders-stream", "--conf", "glue.yaml", "--TempDir", "s3://t/",
        "--pipeline=orders", "--job-bookmark-option", "job-bookmark-disable",
        "--log-level", "DEBUG",
    ]  # fmt: skip
    assert ingest_argv(argv) == ["--conf", "glue.yaml", "--pipeline=orders", "--log-level", "DEBUG"]


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
