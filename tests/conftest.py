"""Test fixtures: one Spark session for the whole run, isolated from local config."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# before any JVM or Python worker starts: deterministic time zone, Spark's test mode
os.environ["TZ"] = "UTC"
time.tzset()
os.environ["SPARK_TESTING"] = "1"
for _key in [k for k in os.environ if k.upper().startswith("ETL__")]:
    del os.environ[_key]  # a developer's shell overrides must not leak into tests

REPO = Path(__file__).resolve().parents[1]


# Tests that need a session hosting Hudi are marked `hudi` and run in a pytest run of their
# own (`make test` runs `-m "not hudi"` and `-m hudi` side by side): Hudi's session catalog and
# Kryo serializer are fixed when the JVM starts, and Delta (in the main run) wants the same
# catalog. That session hosts Iceberg too, so a slow Iceberg-only test may be marked `hudi` to
# even out the two runs.
HUDI = "hudi"
_FAMILY = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after `-m` has deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Picks the session family from the selected tests; one run cannot mix families."""
    hudi = [item for item in items if item.get_closest_marker(HUDI) is not None]
    if hudi and len(hudi) != len(items):
        raise pytest.UsageError(
            f"{len(hudi)} selected tests need a Hudi session and {len(items) - len(hudi)} "
            "need the main one; run them apart: pytest -m 'not hudi', then pytest -m hudi"
        )
    config.stash[_FAMILY] = HUDI if hudi else "main"


def session_family(config: pytest.Config) -> str:
    """``hudi`` in the Hudi run, ``main`` otherwise."""
    return config.stash.get(_FAMILY, "main")


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Iceberg warehouse (Hadoop catalog: metadata and data files) for the session."""
    return tmp_path_factory.mktemp("warehouse")


@pytest.fixture(scope="session")
def spark(
    request: pytest.FixtureRequest, warehouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """The one SparkSession: local[2], 2 shuffle partitions, UI off, Maven-resolved jars.

    In the Hudi run it hosts Hudi and the Iceberg catalog (one ingest session can), else
    Iceberg (the ``local`` catalog) and Delta (the session catalog), as a job writing both does.
    """
    from etl.config import Settings, TableFormat
    from etl.spark import build_spark

    pipelines = {"unused": _dummy_pipeline()}
    conf = {
        "spark.sql.streaming.stopTimeout": "30s",
        "spark.default.parallelism": "2",
        "spark.driver.memory": "2g",
        # databases of the session catalog (Hudi and Delta tables keep their own locations)
        "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("spark-catalog")),
    }
    formats = [TableFormat.ICEBERG, TableFormat.DELTA]
    if session_family(request.config) == HUDI:
        pipelines["unused_hudi"] = _dummy_hudi_pipeline()
        formats = [TableFormat.ICEBERG, TableFormat.HUDI]
    settings = Settings.model_validate(
        {
            "spark": {
                "app_name": "streaming-etl-tests",
                "master": "local[2]",
                "jars_dir": str(REPO / ".jars" / "spark"),
                "shuffle_partitions": 2,
                "ui_enabled": False,
                "conf": conf,
            },
            "catalog": catalog_block(warehouse),
            "pipelines": pipelines,
        }
    )
    session = build_spark(settings, formats=formats)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def catalog_block(warehouse: Path) -> dict[str, str]:
    """The Iceberg catalog every test shares (the session's catalog is fixed at start)."""
    return {"name": "local", "type": "hadoop", "warehouse": str(warehouse)}


def _dummy_pipeline() -> dict[str, object]:
    """A minimal valid pipeline block (the session fixture needs none of it)."""
    return {
        "source": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"]},
        "decode": {"schema_file": "schemas/orders.avsc"},
        "sink": {"table": "local.db.t"},
        "dead_letter": {"table": "local.db.t_dlq"},
        "checkpoint": "/tmp/unused",
    }


def _dummy_hudi_pipeline() -> dict[str, object]:
    """A minimal valid pipeline block writing Hudi (makes the session host Hudi)."""
    return {
        **_dummy_pipeline(),
        "sink": {"format": "hudi", "table": "db.t", "location": "/tmp/unused"},
        "dead_letter": {"table": "db.t_dlq", "location": "/tmp/unused_dlq"},
        "checkpoint": "/tmp/unused_hudi",
    }


# moto accepts any credentials; set dummies so no test can reach a real AWS account
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
for _key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_key, None)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real local stack for the session: Kafka broker (KRaft) + moto server.

    Yields the ``LocalStack`` (``.info`` has endpoints, ``.broker`` creates topics).
    """
    from devtools.devstack.stack import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("stack"), REPO / ".jars" / "broker")
    stack.start()
    try:
        yield stack
    finally:
        # Admin clients of pipelines the tests started would retry the gone broker noisily
        from etl.offsets import close_all

        close_all()
        stack.stop()
