"""EMR on EC2 (AddJobFlowSteps: spark-submit steps) and EMR Serverless (StartJobRun)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from etl.config import EmrServerlessDeploySettings, TableFormat
from etl.deploy.base import (
    ApiRequest,
    Deployment,
    Request,
    _by_format,
    _check_cluster,
    _pipelines,
    required_section,
)
from etl.deploy.release import Release
from etl.exceptions import DeployError
from etl.formats import formats_used
from etl.spark import spark_conf


def _check_subjects_file(subjects_file: str) -> None:
    """The erasure's subjects file is an ``s3://`` URI, which the cluster can read."""
    if not subjects_file.startswith("s3://"):
        raise DeployError(
            f"--subjects-file: expected an s3:// URI the cluster can read, found {subjects_file!r}"
        )


def _token(base: str, name: str) -> str:
    """A client token per job run: one rendering's runs differ, a resent request does not."""
    return hashlib.sha256(f"{base}/{name}".encode()).hexdigest()[:32]


# ---- spark-submit (EMR, EMR Serverless) ----------------------------------------------------


def _packages(release: Release, formats: Iterable[TableFormat]) -> tuple[list[str], list[str]]:
    """--packages and spark.jars.excludes for a session hosting ``formats`` (as
    ``etl.jvm.submit_flags`` computes them)."""
    packages, excludes = list(release.packages), set(release.excludes)
    if TableFormat.HUDI in formats:
        packages += release.hudi_packages
        excludes |= set(release.hudi_excludes)
    return packages, sorted(excludes)


def _job_args(*, pipelines: Sequence[str], fmt: TableFormat | None) -> list[str]:
    """The job's own command line after ``--conf``: pipelines and format."""
    args = [arg for name in pipelines for arg in ("--pipeline", name)]
    return [*args, "--format", fmt.value] if fmt is not None else args


def _spark_submit(
    deployment: Deployment, *, script: str, formats: Sequence[TableFormat], args: Sequence[str]
) -> list[str]:
    """``spark-submit`` for an EMR step: dependencies from the pom, our jar, wheel and
    settings file from S3, then the job script and its arguments."""
    packages, excludes = _packages(deployment.release, formats)
    return [
        "spark-submit",
        # the driver runs on the cluster: --files puts the settings in its working directory
        "--deploy-mode",
        "cluster",
        "--packages",
        ",".join(packages),
        "--conf",
        f"spark.jars.excludes={','.join(excludes)}",
        "--jars",
        deployment.uri("jars", deployment.release.udf_jar),
        "--py-files",
        deployment.uri(deployment.release.wheel),
        "--files",
        deployment.uri(deployment.conf_file),
        deployment.uri("jobs", f"{script}.py"),
        "--conf",
        deployment.conf_file,
        *args,
    ]


def _step(name: str, args: list[str]) -> Request:
    """An EMR step running a command (``command-runner.jar``), not stopping the cluster."""
    return {
        "Name": name,
        # a failed step leaves the cluster (and the other steps) running
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def _emr_cluster(deployment: Deployment) -> str:
    """The cluster id from ``deploy.emr``."""
    section = required_section(deployment.deploy.emr, "emr", holds="cluster_id", target="EMR")
    _check_cluster(deployment.settings, "EMR")
    return section.cluster_id


def _add_steps(cluster_id: str, resource: str, steps: list[Request]) -> ApiRequest:
    """The AddJobFlowSteps request adding ``steps`` to the cluster."""
    params = {"JobFlowId": cluster_id, "Steps": steps}
    return ApiRequest("emr", "AddJobFlowSteps", resource, params)


def emr_ingest(deployment: Deployment, *, pipelines: Sequence[str] | None = None) -> ApiRequest:
    """The EMR step that runs the ingest job for the pipelines (default all), in one session.

    Raises:
        DeployError: No ``deploy.emr`` section, or local-only settings.
        ConfigError: An unknown pipeline, or formats one session cannot host together.
    """
    cluster_id = _emr_cluster(deployment)
    settings = deployment.settings
    names = _pipelines(settings, pipelines)
    formats = formats_used(settings, names)
    spark_conf(settings, formats)  # fails on formats that cannot share a session
    args = _job_args(pipelines=names if pipelines else [], fmt=None)
    step = _step(
        deployment.name(f"ingest {', '.join(names)}"),
        _spark_submit(deployment, script="ingest", formats=formats, args=args),
    )
    return _add_steps(cluster_id, "ingest", [step])


def emr_maintain(
    deployment: Deployment, *, task: str, pipelines: Sequence[str] | None = None
) -> ApiRequest:
    """EMR steps running one maintenance task (or ``all``), one step per table format.

    Raises:
        DeployError: No ``deploy.emr`` section, or local-only settings.
    """
    cluster_id = _emr_cluster(deployment)
    steps = []
    names = _pipelines(deployment.settings, pipelines)
    for fmt, chosen in _by_format(deployment.settings, names).items():
        args = ["--task", task, *_job_args(pipelines=chosen if pipelines else [], fmt=fmt)]
        submit = _spark_submit(deployment, script="maintain", formats=[fmt], args=args)
        steps.append(_step(deployment.name(f"maintain {task} {fmt.value}"), submit))
    return _add_steps(cluster_id, f"maintain-{task}", steps)


def emr_forget(
    deployment: Deployment,
    *,
    request_id: str,
    subjects_file: str,
    pipelines: Sequence[str] | None = None,
) -> ApiRequest:
    """EMR steps running one erasure request, one step per table format.

    Raises:
        DeployError: No ``deploy.emr`` section, no pipeline with a privacy section, or a
            subjects file that is not on S3.
    """
    cluster_id = _emr_cluster(deployment)
    _check_subjects_file(subjects_file)
    steps = []
    names = _pipelines(deployment.settings, pipelines)
    for fmt, chosen in _by_format(deployment.settings, names, private=True).items():
        args = [
            "--request-id",
            request_id,
            "--subjects-file",
            subjects_file,
            *_job_args(pipelines=chosen if pipelines else [], fmt=fmt),
        ]
        submit = _spark_submit(deployment, script="forget", formats=[fmt], args=args)
        steps.append(_step(deployment.name(f"forget {request_id} {fmt.value}"), submit))
    return _add_steps(cluster_id, "forget", steps)


def _serverless(deployment: Deployment) -> EmrServerlessDeploySettings:
    """The ``deploy.emr_serverless`` section, for settings fit for a cluster."""
    section = required_section(
        deployment.deploy.emr_serverless,
        "emr_serverless",
        holds="application_id, execution_role_arn",
        target="EMR Serverless",
    )
    _check_cluster(deployment.settings, "EMR Serverless")
    return section


def _submit_parameters(deployment: Deployment, formats: Sequence[TableFormat]) -> str:
    """EMR Serverless' sparkSubmitParameters: the same dependencies as Spark properties."""
    release = deployment.release
    packages, excludes = _packages(release, formats)
    conf = {
        "spark.jars.packages": ",".join(packages),
        "spark.jars.excludes": ",".join(excludes),
        "spark.jars": deployment.uri("jars", release.udf_jar),
        "spark.submit.pyFiles": deployment.uri(release.wheel),
        "spark.files": deployment.uri(deployment.conf_file),
    }
    archive = _serverless(deployment).python_archive
    if archive is not None:
        # EMR Serverless' documented way to a Python with the job's requirements
        python = "./environment/bin/python"
        conf |= {
            "spark.archives": f"{archive}#environment",
            "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": python,
            "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": python,
            "spark.executorEnv.PYSPARK_PYTHON": python,
        }
    return " ".join(f"--conf {key}={value}" for key, value in conf.items())


def _job_run(
    deployment: Deployment,
    *,
    name: str,
    script: str,
    args: Sequence[str],
    formats: Sequence[TableFormat],
    client_token: str,
    streaming: bool,
) -> Request:
    """An EMR Serverless StartJobRun request."""
    section = _serverless(deployment)
    params: Request = {
        "applicationId": section.application_id,
        "executionRoleArn": section.execution_role_arn,
        "clientToken": client_token,
        "name": name,
        # STREAMING: no execution timeout, and EMR Serverless restarts a failed run
        "mode": "STREAMING" if streaming else "BATCH",
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": deployment.uri("jobs", f"{script}.py"),
                "entryPointArguments": ["--conf", deployment.conf_file, *args],
                "sparkSubmitParameters": _submit_parameters(deployment, formats),
            }
        },
    }
    if section.log_uri is not None:
        params["configurationOverrides"] = {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": section.log_uri}}
        }
    return params


def serverless_ingest(
    deployment: Deployment, *, client_token: str, pipelines: Sequence[str] | None = None
) -> list[ApiRequest]:
    """One streaming EMR Serverless job run per pipeline.

    Args:
        deployment: The settings, their file name and the release.
        client_token: Makes each run's idempotency token (with the run's name).
        pipelines: The pipelines (default all).

    Raises:
        DeployError: No ``deploy.emr_serverless`` section, or local-only settings.
    """
    _serverless(deployment)
    requests = []
    for name in _pipelines(deployment.settings, pipelines):
        run = deployment.name(f"{name}-ingest")
        params = _job_run(
            deployment,
            name=run,
            script="ingest",
            args=["--pipeline", name],
            formats=formats_used(deployment.settings, [name]),
            client_token=_token(client_token, run),
            streaming=True,
        )
        requests.append(ApiRequest("emr-serverless", "StartJobRun", run, params))
    return requests


def serverless_maintain(
    deployment: Deployment,
    *,
    task: str,
    client_token: str,
    pipelines: Sequence[str] | None = None,
) -> list[ApiRequest]:
    """EMR Serverless job runs of one maintenance task (or ``all``), one per table format.

    Raises:
        DeployError: No ``deploy.emr_serverless`` section, or local-only settings.
    """
    _serverless(deployment)
    requests = []
    names = _pipelines(deployment.settings, pipelines)
    for fmt, chosen in _by_format(deployment.settings, names).items():
        run = deployment.name(f"maintain-{task}-{fmt.value}")
        params = _job_run(
            deployment,
            name=run,
            script="maintain",
            args=["--task", task, *_job_args(pipelines=chosen if pipelines else [], fmt=fmt)],
            formats=[fmt],
            client_token=_token(client_token, run),
            streaming=False,
        )
        requests.append(ApiRequest("emr-serverless", "StartJobRun", run, params))
    return requests


def serverless_forget(
    deployment: Deployment,
    *,
    request_id: str,
    subjects_file: str,
    client_token: str,
    pipelines: Sequence[str] | None = None,
) -> list[ApiRequest]:
    """EMR Serverless job runs of one erasure request, one per table format.

    Raises:
        DeployError: No ``deploy.emr_serverless`` section, no pipeline with a privacy
            section, or a subjects file that is not on S3.
    """
    _serverless(deployment)
    _check_subjects_file(subjects_file)
    requests = []
    names = _pipelines(deployment.settings, pipelines)
    for fmt, chosen in _by_format(deployment.settings, names, private=True).items():
        run = deployment.name(f"forget-{fmt.value}")
        args = ["--request-id", request_id, "--subjects-file", subjects_file]
        params = _job_run(
            deployment,
            name=f"{run} {request_id}",
            script="forget",
            args=[*args, *_job_args(pipelines=chosen if pipelines else [], fmt=fmt)],
            formats=[fmt],
            client_token=_token(client_token, run),
            streaming=False,
        )
        requests.append(ApiRequest("emr-serverless", "StartJobRun", run, params))
    return requests
