"""The wheel on its own: built from the sources, installed into a fresh venv outside the
repository, its jobs run from a directory that is not the repository.

The fresh venv gets the wheel alone (``--no-deps``); the third-party packages come from this
project's venv through a ``.pth`` file naming its site-packages directory. Such a plain path
line is appended to ``sys.path``, but the ``.pth`` files inside that directory are not
processed, so the editable install of this repository (a finder hooked in by a ``.pth`` there)
stays out: ``etl`` can only come from the wheel, which ``test_packages_come_from_the_wheel``
asserts.

Also checks that the container files load: ``conf/docker.yaml`` and ``docker/compose.yaml``
(the image itself is built and run by ``make docker-test``).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.sample_data import orders
from etl.config import TableFormat, load_settings
from tests.conftest import REPO, catalog_block

# every job's command line
MODULES = [
    "jobs.ingest",
    "jobs.maintain",
    "jobs.forget",
    "jobs.replay_dlq",
    "jobs.deploy",
    "etl.jvm",
]
# the caller's settings must not reach the installed jobs: Spark and Python would otherwise
# run this repository's interpreter (PYSPARK_PYTHON, set by a test session) or sources
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME")


@dataclass(frozen=True)
class Installed:
    """The fresh venv holding the wheel, and a working directory outside the repository."""

    venv: Path
    workdir: Path

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.venv / "bin" / "python"

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Runs the venv's interpreter with ``args`` in ``cwd`` (default: the workdir)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _DROPPED_ENV and not k.upper().startswith("ETL__")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        return subprocess.run(
            [str(self.python), *args],
            cwd=cwd or self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def build_wheel(out: Path, scratch: Path) -> Path:
    """Builds the wheel as ``make dist`` does, from a copy of the packaged sources.

    setuptools writes ``build/`` and ``*.egg-info`` beside the sources it builds; building a
    copy keeps them (and any stale ``build/lib``) out of the repository.
    """
    pyproject = REPO / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    scratch.mkdir(parents=True)
    shutil.copy2(pyproject, scratch)
    for top in sorted(REPO.iterdir()):
        is_package = top.is_dir() and (top / "__init__.py").is_file()
        if is_package and any(fnmatch.fnmatch(top.name, p) for p in patterns):
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(top, scratch / top.name, ignore=ignore)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]
    done = subprocess.run([*command, str(scratch)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("streaming_etl-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, installed alone into a fresh venv outside the repository."""
    root = tmp_path_factory.mktemp("dist")
    assert not root.resolve().is_relative_to(REPO), f"{root} must be outside {REPO}"
    wheel = build_wheel(root / "dist", root / "src")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the third-party packages of this venv, without processing its .pth files (see above)
    (Path(purelib) / "project_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    workdir = root / "work"
    workdir.mkdir()
    return Installed(env_dir, workdir)


def test_packages_come_from_the_wheel(installed: Installed) -> None:
    code = "import etl, jobs, transforms, pyspark; print(etl.__file__, jobs.__file__, "
    code += "transforms.__file__, pyspark.__file__, sep='\\n')"
    done = installed.run("-c", code)
    assert done.returncode == 0, done.stderr
    *ours, pyspark = (Path(line).resolve() for line in done.stdout.split())
    for path in ours:
        assert path.is_relative_to(installed.venv.resolve()), path
        assert not path.is_relative_to(REPO), path
    assert pyspark.is_relative_to(Path(sysconfig.get_path("purelib")).resolve())


@pytest.mark.parametrize("module", MODULES)
def test_each_job_prints_its_usage(installed: Installed, module: str) -> None:
    done = installed.run("-m", module, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}"), done.stdout


def test_jvm_flags_come_from_the_packaged_poms(installed: Installed) -> None:
    done = installed.run("-m", "etl.jvm", "--format", "hudi")
    assert done.returncode == 0, done.stderr
    assert "--packages org.apache.spark:spark-sql-kafka-0-10_2.12:" in done.stdout
    assert "org.apache.hudi:hudi-spark3.5-bundle_2.12:" in done.stdout


@pytest.mark.integration
def test_tiny_ingest_from_the_wheel(installed: Installed, local_stack: Any) -> None:
    """A few Glue-framed records on the real broker -> ``jobs.ingest`` from the wheel (cwd
    outside the repository, paths in its config relative to it) -> an Iceberg table on local
    disk, read back with pyiceberg."""
    # helpers of the end-to-end test: the same registry, producer and reader
    from tests.integration.test_ingest_e2e import REGISTRY, _publish, _pyiceberg_table

    name, topic = "dist_orders", "orders-dist"
    local_stack.broker.create_topic(topic, partitions=1)
    records = orders(20, start=9000)
    _publish(local_stack, topic, records, [b"\x01not-a-glue-frame"])
    work = installed.workdir / "ingest"
    work.mkdir()
    shutil.copy2(REPO / "schemas" / "orders.avsc", work / "orders.avsc")
    conf = {
        "spark": {
            "app_name": "dist-test",
            "master": "local[2]",
            "jars_dir": str(REPO / ".jars" / "spark"),  # prepared outside, as in the image
            "shuffle_partitions": 2,
            "ui_enabled": False,
        },
        "catalog": catalog_block(work / "warehouse"),
        "aws": {"endpoint_url": local_stack.info.aws_endpoint, "region": "us-east-1"},
        "registry": {"registry_name": REGISTRY, "max_attempts": 2},
        "pipelines": {
            name: {
                "source": {
                    "bootstrap_servers": local_stack.info.bootstrap_plaintext,
                    "topics": [topic],
                },
                "decode": {"wire_format": "glue", "schema_file": "orders.avsc"},
                "sink": {"table": f"local.e2e.{name}"},
                "dead_letter": {"table": f"local.e2e.{name}_dlq"},
                "checkpoint": "checkpoints/orders",
                "trigger": {"mode": "available_now"},
            }
        },
    }
    (work / "conf.yaml").write_text(yaml.safe_dump(conf))

    done = installed.run("-m", "jobs.ingest", "--conf", "conf.yaml", cwd=work, timeout=600)

    assert done.returncode == 0, done.stderr[-4000:]
    table = _pyiceberg_table(work / "warehouse", name).scan().to_arrow()
    assert sorted(table["order_id"].to_pylist()) == sorted(r["order_id"] for r in records)
    dead = _pyiceberg_table(work / "warehouse", f"{name}_dlq").scan().to_arrow()
    assert dead.num_rows == 1


def test_docker_conf_loads_and_writes_under_the_working_directory() -> None:
    settings = load_settings(REPO / "conf" / "docker.yaml", env={})
    assert settings.spark.jars_dir == Path("/opt/etl/jars/spark")
    assert settings.catalog is not None and not Path(settings.catalog.warehouse).is_absolute()
    formats = {p.sink.format for p in settings.pipelines.values()}
    assert formats == {TableFormat.ICEBERG, TableFormat.DELTA}
    for pipeline in settings.pipelines.values():
        # tables and checkpoints land in the container's working directory (the data volume)
        assert not Path(pipeline.checkpoint).is_absolute()
        assert pipeline.decode.schema_file == Path("/opt/etl/schemas/orders.avsc")


def test_compose_file_loads_and_wires_the_job_to_its_services() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "registry", "ingest"} <= set(services)
    ingest = services["ingest"]
    assert ingest["build"]["dockerfile"].endswith("Dockerfile")
    assert set(ingest["depends_on"]) >= {"kafka", "registry"}
    env = ingest["environment"]
    assert env["ETL__AWS__ENDPOINT_URL"] == "http://registry:5000"
    assert any(v.startswith("kafka:") for k, v in env.items() if k.endswith("BOOTSTRAP_SERVERS"))
    assert any(volume.endswith(":/data") for volume in ingest["volumes"])
    assert ingest["working_dir"] == "/data"
