"""Glue: CreateJob requests (streaming ingest, maintenance, erasure) and CreateTrigger
requests starting the maintenance jobs on the tasks' schedules."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from etl.config import GlueDeploySettings, Settings, TableFormat
from etl.deploy.base import (
    ApiRequest,
    Deployment,
    Request,
    _by_format,
    _check_cluster,
    _pipelines,
    required_section,
)
from etl.deploy.schedules import _aws_schedule, maintenance_schedules
from etl.exceptions import DeployError
from etl.formats import formats_used
from etl.spark import spark_conf

# Spark confs Glue sets itself; the rest of etl.spark.spark_conf goes into --conf
_GLUE_OWNED_CONF = frozenset(
    {
        "spark.master",
        "spark.app.name",
        # Glue's Spark UI is its --enable-spark-ui parameter
        "spark.ui.enabled",
        # Glue builds the classpath from --extra-jars and --datalake-formats
        "spark.jars",
        "spark.driver.extraClassPath",
        "spark.executor.extraClassPath",
    }
)
# formats whose tables Glue's Data Catalog must be the session catalog for (registered by
# location in the session catalog); Iceberg uses its own named catalog
_SESSION_CATALOG_FORMATS = frozenset({TableFormat.DELTA, TableFormat.HUDI})
# Hudi 1.0 writes table version 8, which Hudi 0.x cannot read; Glue ships Hudi 1.0 from 5.1
# (assumption: Glue 5.0 ships Hudi 0.15, see etl/formats/hudi/pom.xml)
_GLUE_HUDI_1 = (5, 1)


def _glue(deployment: Deployment) -> GlueDeploySettings:
    """The ``deploy.glue`` section, for settings fit for a cluster."""
    section = required_section(deployment.deploy.glue, "glue", holds="role, ...", target="Glue")
    _check_cluster(deployment.settings, "Glue")
    return section


def glue_job_name(deployment: Deployment, *, kind: str, fmt: TableFormat) -> str:
    """The name of the batch job of a kind (``maintain``, ``forget``) for a table format."""
    return deployment.name(f"{kind}-{fmt.value}")


def glue_jobs(
    deployment: Deployment, *, pipelines: Sequence[str] | None = None
) -> list[ApiRequest]:
    """Glue CreateJob requests: a streaming ingest job per pipeline, a maintenance job per
    table format, an erasure job per table format with a privacy section.

    Raises:
        DeployError: No ``deploy.glue`` section, local-only settings, a Spark conf Glue's
            ``--conf`` cannot carry, or Hudi on a Glue version with Hudi 0.x.
        ConfigError: An unknown pipeline, or formats one session cannot host together.
    """
    settings = deployment.settings
    names = _pipelines(settings, pipelines)
    _check_glue_hudi(deployment, names)
    jobs = []
    for name in names:
        job = deployment.name(f"{name}-ingest")
        params = _glue_job(
            deployment,
            name=job,
            description=f"Streaming ingest of pipeline {name} ({deployment.conf_file})",
            script="glue_ingest",
            formats=formats_used(settings, [name]),
            arguments={"--etl-pipeline": name},
        )
        jobs.append(ApiRequest("glue", "CreateJob", job, params))
    groups = {"maintain": _by_format(settings, names)}
    if any(settings.pipeline(name).privacy is not None for name in names):
        groups["forget"] = _by_format(settings, names, private=True)
    for kind, by_format in groups.items():
        for fmt in by_format:
            job = glue_job_name(deployment, kind=kind, fmt=fmt)
            what = "Maintenance" if kind == "maintain" else "GDPR erasure"
            params = _glue_job(
                deployment,
                name=job,
                description=f"{what} of the {fmt.value} tables ({deployment.conf_file})",
                script=f"glue_{kind}",
                formats=[fmt],
                arguments={"--etl-format": fmt.value},
            )
            jobs.append(ApiRequest("glue", "CreateJob", job, params))
    return jobs


def _check_glue_hudi(deployment: Deployment, names: Sequence[str]) -> None:
    """Pipelines writing Hudi need a Glue version shipping Hudi 1.0."""
    glue = _glue(deployment)
    major, minor = (int(part) for part in glue.glue_version.split("."))
    for name in names:
        if deployment.settings.pipeline(name).sink.format is TableFormat.HUDI:
            if (major, minor) < _GLUE_HUDI_1:
                raise DeployError(
                    f"deploy.glue.glue_version: pipelines.{name} writes Hudi 1.0 tables "
                    f"(table version 8), which Glue {glue.glue_version}'s Hudi 0.x cannot "
                    f"read; expected {'.'.join(map(str, _GLUE_HUDI_1))} or later"
                )


def _glue_job(
    deployment: Deployment,
    *,
    name: str,
    description: str,
    script: str,
    formats: Sequence[TableFormat],
    arguments: Mapping[str, str],
) -> Request:
    """A Glue CreateJob request running one of the ``jobs/glue_*.py`` scripts."""
    glue = _glue(deployment)
    streaming = script == "glue_ingest"
    params: Request = {
        "Name": name,
        "Description": description,
        "Role": glue.role,
        "Command": {
            "Name": "gluestreaming" if streaming else "glueetl",
            "ScriptLocation": deployment.uri("jobs", f"{script}.py"),
            "PythonVersion": "3",
        },
        "GlueVersion": glue.glue_version,
        "WorkerType": "G.1X"
        if glue.worker_type == "G.025X" and not streaming
        else glue.worker_type,
        "NumberOfWorkers": glue.number_of_workers,
        # one run of an ingest job at most: a second would write through the same checkpoint
        "ExecutionProperty": {"MaxConcurrentRuns": 1 if streaming else glue.max_concurrent_runs},
        "DefaultArguments": {**_glue_arguments(deployment, formats), **arguments},
    }
    if not streaming:
        # a trigger firing while the job runs queues its run instead of failing it
        params["JobRunQueuingEnabled"] = True
    if glue.connections:
        params["Connections"] = {"Connections": list(glue.connections)}
    return params


def _glue_arguments(deployment: Deployment, formats: Sequence[TableFormat]) -> dict[str, str]:
    """The job parameters every Glue job of this project takes (see ``jobs.glue_ingest``)."""
    release = deployment.release
    jars = [release.udf_jar, *release.glue_jars]
    arguments = {
        "--etl-config": deployment.conf_file,
        # Glue copies these into the script's working directory before it starts
        "--extra-files": deployment.uri(deployment.conf_file),
        # pip installs the wheel and the pinned requirements Glue lacks on every node;
        # --no-deps keeps pip from fetching the wheel's own pins of what Glue provides
        # (pyspark, pyarrow, ...) over Glue's
        "--additional-python-modules": ",".join(
            [deployment.uri(release.wheel), *release.glue_python_modules]
        ),
        "--python-modules-installer-option": "--no-deps",
        "--datalake-formats": ",".join(fmt.value for fmt in formats),
        "--extra-jars": ",".join(deployment.uri("jars", jar) for jar in jars),
        "--conf": _glue_conf(deployment.settings, formats),
    }
    if _SESSION_CATALOG_FORMATS & set(formats):
        # the session catalog (where Delta and Hudi tables are registered) is Glue's
        arguments["--enable-glue-datacatalog"] = "true"
    return arguments


def _glue_conf(settings: Settings, formats: Sequence[TableFormat]) -> str:
    """The Spark confs the session needs that Glue does not set, as Glue's one ``--conf``
    value: ``k=v --conf k2=v2 ...`` (Glue takes a single ``--conf`` parameter).

    The job sets the same confs when it builds its session; the job parameter has them
    in place if Glue started the context first (static confs such as the serializer).
    """
    pairs = []
    for key, value in spark_conf(settings, formats).items():
        if key in _GLUE_OWNED_CONF:
            continue
        if re.search(r"\s", key + value):
            raise DeployError(
                f"spark.conf.{key}: Glue's --conf carries `key=value` pairs separated by "
                f"spaces, found whitespace in {key}={value!r}"
            )
        pairs.append(f"{key}={value}")
    return " --conf ".join(pairs)


def glue_triggers(
    deployment: Deployment, *, pipelines: Sequence[str] | None = None
) -> list[ApiRequest]:
    """Glue CreateTrigger requests: a scheduled trigger per pipeline and maintenance task,
    starting the format's maintenance job with the task and pipeline as arguments.

    Raises:
        DeployError: No ``deploy.glue`` section, or a schedule AWS cron cannot express.
    """
    _glue(deployment)
    triggers = []
    for item in maintenance_schedules(deployment.settings, pipelines=pipelines)[0]:
        name = deployment.name(f"{item.pipeline}-{item.task.value}")
        params = {
            "Name": name,
            "Description": f"{item.key}: {item.cron} (UTC)",
            "Type": "SCHEDULED",
            "Schedule": _aws_schedule(item),
            "Actions": [
                {
                    "JobName": glue_job_name(deployment, kind="maintain", fmt=item.format),
                    "Arguments": {"--etl-task": item.task.value, "--etl-pipeline": item.pipeline},
                }
            ],
            "StartOnCreation": True,
        }
        triggers.append(ApiRequest("glue", "CreateTrigger", name, params))
    return triggers
