"""Deployment artefacts rendered from the settings: AWS API requests and crontab lines.

Every request is a dict of the API's own parameters, named as the API (and botocore) names
them, so it can be sent as is (``aws glue create-job --cli-input-json file://...``, or
``boto3.client(service).<operation>(**request)``). Nothing here talks to AWS or reads files,
except ``read_release``, which collects what the requests refer to besides the settings (the
project's version, the jar names ``make jars`` produced, the Maven coordinates and the pinned
Python requirements) into a ``Release``.

Layout under ``deploy.artifacts`` (``uploads`` renders the copy commands)::

    <artifacts>/streaming_etl-<version>-py3-none-any.whl
    <artifacts>/<settings file name>          e.g. emr.yaml
    <artifacts>/jobs/<script>.py              ingest, maintain, forget and their glue_ wrappers
    <artifacts>/jars/<jar>                    the etl-udf jar; for Glue the Kafka/Avro/MSK jars

Units of deployment:

* EMR on EC2: one ingest step running the chosen pipelines (default all) in one application:
  a cluster runs one step at a time by default, and an ingest step never ends. Maintenance
  and erasure steps are rendered on demand, one per table format (one format per session).
* EMR Serverless and Glue: one streaming ingest job (run) per pipeline, so a pipeline fails,
  restarts and is sized on its own, and formats that cannot share a session never meet.
  Glue batch jobs: one maintenance and one erasure job per table format (their session hosts
  that format only, ``--datalake-formats`` included); the task and pipeline are arguments,
  given by the trigger or at start.
* Schedules: one per pipeline and enabled maintenance task with a ``schedule`` (Glue trigger,
  EventBridge Scheduler schedule, or crontab line). Not scheduled: Hudi tables (their
  services run inline in the stream, and ``jobs.maintain`` refuses beside a running stream)
  and Delta's ``orphans`` (VACUUM, the ``expire`` task, covers it).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from etl.config import (
    DeploySettings,
    EmrServerlessDeploySettings,
    GlueDeploySettings,
    SchedulerDeploySettings,
    Settings,
    TableFormat,
    check_cron,
)
from etl.exceptions import DeployError
from etl.formats import formats_used
from etl.jvm import JARS_DIR, format_pom, maven_dependencies, udf_jar
from etl.maintenance import Task
from etl.spark import spark_conf

Request = dict[str, Any]

DIST = "streaming-etl"
WHEEL = "streaming_etl-{version}-py3-none-any.whl"
SCRIPTS = ("ingest", "maintain", "forget", "glue_ingest", "glue_maintain", "glue_forget")
# EventBridge Scheduler's universal target for EMR Serverless' StartJobRun
START_JOB_RUN_TARGET = "arn:aws:scheduler:::aws-sdk:emrserverless:startJobRun"
# replaced by EventBridge Scheduler with the id of each invocation (the same id on its
# retries): each scheduled run is a new job run, a retried invocation is not a second one
SCHEDULER_EXECUTION_ID = "<aws.scheduler.execution-id>"

# Python distributions a Glue 5 job already has (assumption from AWS's list of provided
# modules: Glue's own PySpark, the AWS SDK, the pandas/Arrow stack, PyYAML and their
# dependencies). Everything else the project needs is installed with pip --no-deps, pinned to
# the versions resolved here: the wheel's own requirement pyspark==3.5.7 would otherwise make
# pip fetch PySpark over Glue's.
GLUE_PYTHON_PROVIDED = frozenset(
    {
        "pyspark",
        "py4j",
        "pyarrow",
        "pandas",
        "numpy",
        "boto3",
        "botocore",
        "s3transfer",
        "jmespath",
        "urllib3",
        "pyyaml",
        "python-dateutil",
        "pytz",
        "tzdata",
        "six",
    }
)
# jars Glue provides itself (--datalake-formats): not shipped in --extra-jars
_GLUE_FORMAT_JARS = ("iceberg-", "delta-", "hudi-")
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
# maintenance tasks another task of the format covers: scheduling them runs a job that
# records `not_applicable` (README "Maintenance")
_COVERED_TASKS = {TableFormat.DELTA: frozenset({Task.ORPHANS})}


@dataclass(frozen=True)
class Release:
    """What the requests refer to besides the settings, read once by ``read_release``."""

    version: str
    # file name of the project's UDF jar (``make jars``)
    udf_jar: str
    # spark-submit's --packages and spark.jars.excludes from etl/jvm/pom.xml; Hudi's own
    # pom apart, for sessions hosting Hudi only
    packages: tuple[str, ...]
    excludes: tuple[str, ...]
    hudi_packages: tuple[str, ...]
    hudi_excludes: tuple[str, ...]
    # file names of the jars Glue lacks (Kafka source, Avro, MSK IAM and their dependencies)
    glue_jars: tuple[str, ...]
    # pinned requirements Glue lacks (``name==version``), dependencies included
    glue_python_modules: tuple[str, ...]

    @property
    def wheel(self) -> str:
        """The wheel's file name (``pip wheel --no-deps -w dist .`` builds it)."""
        return WHEEL.format(version=self.version)


@dataclass(frozen=True)
class Deployment:
    """One settings file as it is deployed."""

    settings: Settings
    # the settings file's name as shipped beside the job (``--files``, ``--extra-files``)
    conf_file: str
    release: Release

    @property
    def deploy(self) -> DeploySettings:
        """The ``deploy`` section.

        Raises:
            DeployError: There is none.
        """
        if self.settings.deploy is None:
            raise DeployError(
                "deploy: expected a `deploy` section (artifacts, and emr / emr_serverless / "
                "glue / scheduler) to render deployment requests, found none"
            )
        return self.settings.deploy

    def uri(self, *parts: str) -> str:
        """An object under ``deploy.artifacts``."""
        return "/".join((self.deploy.artifacts, *parts))

    def name(self, text: str) -> str:
        """A job, trigger or schedule name, with ``deploy.name_prefix``."""
        return f"{self.deploy.name_prefix}{text}"


@dataclass(frozen=True)
class ApiRequest:
    """One AWS API request: botocore's service and operation names and the parameters."""

    service: str
    operation: str
    # what it creates or starts, for the file name
    resource: str
    params: Request = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        """``<service>-<operation>-<resource>.json``: ``glue-create-job-orders-ingest.json``."""
        return f"{self.service}-{_kebab(self.operation)}-{self.resource}.json"

    def command(self, path: str) -> str:
        """The command that sends the request saved at ``path``."""
        if self.service == "emr":
            # `aws emr add-steps` takes its own arguments, not AddJobFlowSteps' parameters
            method = _kebab(self.operation).replace("-", "_")
            code = (
                "import boto3, json, sys; "
                f"print(boto3.client('emr').{method}(**json.load(open(sys.argv[1]))))"
            )
            return f'python -c "{code}" {shlex.quote(path)}'
        return f"aws {self.service} {_kebab(self.operation)} --cli-input-json file://{path}"


@dataclass(frozen=True)
class Scheduled:
    """One maintenance task of one pipeline, on its cron schedule."""

    pipeline: str
    task: Task
    format: TableFormat
    cron: str

    @property
    def key(self) -> str:
        """The setting the schedule comes from."""
        return f"pipelines.{self.pipeline}.maintenance.{self.task.value}.schedule"


def read_release(*, jars_dir: Path = JARS_DIR) -> Release:
    """Collects what the requests refer to: the installed project's version, the jars
    ``make jars`` left in ``jars_dir``, the poms' coordinates, the pinned Python requirements.

    Raises:
        DeployError: The project is not installed, or ``make jars`` has not run.
    """
    try:
        version = metadata.version(DIST)
    except metadata.PackageNotFoundError:
        raise DeployError(f"{DIST} is not installed: run `pip install -e .`") from None
    jar = udf_jar(jars_dir)
    if jar is None:
        raise DeployError(f"no etl-udf-*.jar in {jars_dir}: run `make jars`")
    packages, excludes = maven_dependencies()
    hudi_packages, hudi_excludes = maven_dependencies(format_pom(TableFormat.HUDI.value))
    glue_jars = sorted(
        path.name
        for path in jars_dir.glob("*.jar")
        if path != jar and not path.name.startswith(_GLUE_FORMAT_JARS)
    )
    return Release(
        version=version,
        udf_jar=jar.name,
        packages=tuple(packages),
        excludes=tuple(excludes),
        hudi_packages=tuple(hudi_packages),
        hudi_excludes=tuple(hudi_excludes),
        glue_jars=tuple(glue_jars),
        glue_python_modules=tuple(python_closure(DIST, provided=GLUE_PYTHON_PROVIDED)),
    )


def python_closure(dist: str, *, provided: frozenset[str]) -> list[str]:
    """The installed versions of a distribution's runtime requirements and theirs, except
    those ``provided`` (and what only they need), as sorted ``name==version`` pins.

    Raises:
        DeployError: A requirement is not installed here.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    walked: dict[str, set[str]] = {}  # the extras whose requirements were followed
    todo = [(Requirement(text), "") for text in metadata.requires(dist) or []]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue  # another extra's, or another platform's
        name = canonicalize_name(requirement.name)
        extras = {"", *requirement.extras} - walked.get(name, set())
        if name in provided or not extras:
            continue
        try:
            pinned[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise DeployError(f"{name} (needed by {dist}) is not installed here") from None
        walked.setdefault(name, set()).update(extras)
        for text in metadata.requires(name) or []:
            todo += [(Requirement(text), e) for e in extras]
    return [f"{name}=={version}" for name, version in sorted(pinned.items())]


# ---- cron -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CronField:
    name: str
    low: int
    high: int
    names: Mapping[str, int] = field(default_factory=dict)


_MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_WEEKDAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_MINUTE = _CronField("minute", 0, 59)
_HOUR = _CronField("hour", 0, 23)
_DAY = _CronField("day-of-month", 1, 31)
_MONTH = _CronField("month", 1, 12, _MONTHS)
# Unix numbering (0 and 7 are Sunday); AWS's is 1-7 = SUN-SAT
_WEEKDAY = _CronField("day-of-week", 0, 6, _WEEKDAYS)
_UNRESTRICTED = ("*", "?")
_ITEM = re.compile(r"^(?:\*|(?P<start>[0-9A-Z]+)(?:-(?P<end>[0-9A-Z]+))?)(?:/(?P<step>[0-9]+))?$")
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def aws_cron(expression: str) -> str:
    """Converts a Unix cron expression (five fields, or a macro) to AWS's ``cron(...)``.

    AWS has six fields (minutes hours day-of-month month day-of-week year), exactly one of
    day-of-month and day-of-week is ``?``, day-of-week counts 1-7 from Sunday, and steps
    (``/``) are not allowed in day-of-week (they are expanded to a list).

    Raises:
        ValueError: Not a valid Unix expression, or one AWS cron cannot express (both
            day-of-month and day-of-week restricted: Unix runs on days matching either).
    """
    text = check_cron(expression)
    minute, hour, day, month, weekday = _MACROS.get(text, text).upper().split()
    if day not in _UNRESTRICTED and weekday not in _UNRESTRICTED:
        raise ValueError(
            f"day-of-month {day!r} and day-of-week {weekday!r} are both restricted: Unix cron "
            "runs on the days matching either, AWS cron restricts only one of them (the other "
            "is '?'); restrict one"
        )
    if weekday in _UNRESTRICTED:
        day, weekday = _aws_day(day), "?"
    else:
        day, weekday = "?", _aws_weekday(weekday)
    fields = (_aws_numeric(minute, _MINUTE), _aws_numeric(hour, _HOUR), day)
    return f"cron({' '.join(fields)} {_aws_numeric(month, _MONTH)} {weekday} *)"


def _aws_day(text: str) -> str:
    """Day-of-month: as Unix has it, but L (last day) and nW (nearest weekday) stand alone."""
    if text == "L" or re.fullmatch(r"[0-9]{1,2}W", text):
        return text
    if "L" in text or "W" in text:
        raise ValueError(f"day-of-month {text!r}: AWS cron takes L and W alone, not in a list")
    return _aws_numeric(text, _DAY)


def _aws_weekday(text: str) -> str:
    """Day-of-week in AWS's numbering; steps and wrapping ranges become lists."""
    if "#" in text:  # the nth weekday of the month, e.g. FRI#3
        day, _, nth = text.partition("#")
        if "," in text or "-" in day:
            raise ValueError(f"day-of-week {text!r}: AWS cron takes # alone, e.g. FRI#3")
        return f"{_number(day, _WEEKDAY) % 7 + 1}#{nth}"
    days = sorted({value % 7 + 1 for item in text.split(",") for value in _values(item, _WEEKDAY)})
    return "*" if len(days) == 7 else _runs(days)


def _aws_numeric(text: str, cron_field: _CronField) -> str:
    """Minutes, hours, day-of-month, month: AWS takes lists, ranges and ``start/step``."""
    if text in _UNRESTRICTED:
        return "*"
    items = text.split(",")
    return ",".join(_aws_item(item, cron_field, alone=len(items) == 1) for item in items)


def _aws_item(item: str, cron_field: _CronField, *, alone: bool) -> str:
    match = _match(item, cron_field)
    start, end, step = match["start"], match["end"], match["step"]
    if step and alone and end is None:  # */n or a/n: AWS's start/increment
        return f"{cron_field.low if start is None else _number(start, cron_field)}/{step}"
    if not step and start is not None:
        first = _number(start, cron_field)
        if end is None:
            return str(first)
        if first <= _number(end, cron_field):
            return f"{first}-{_number(end, cron_field)}"
    # a stepped range, a step inside a list or a range wrapping around: the values themselves
    return ",".join(str(value) for value in _values(item, cron_field))


def _values(item: str, cron_field: _CronField) -> list[int]:
    """The numbers one list item stands for, as croniter reads it."""
    match = _match(item, cron_field)
    step = int(match["step"] or 1)
    if match["start"] is None:
        start, end = cron_field.low, cron_field.high
    else:
        start = _number(match["start"], cron_field)
        end = _number(match["end"], cron_field) if match["end"] else start
        if match["step"] and not match["end"]:
            end = cron_field.high
    if start <= end:
        return list(range(start, end + 1))[::step]
    wrapped = [*range(start, cron_field.high + 1), *range(cron_field.low, end + 1)]
    return wrapped[::step]


def _match(item: str, cron_field: _CronField) -> re.Match[str]:
    match = _ITEM.match(item)
    if match is None:
        raise ValueError(f"{cron_field.name} {item!r}: AWS cron cannot express it")
    return match


def _number(text: str, cron_field: _CronField) -> int:
    if text in cron_field.names:
        return cron_field.names[text]
    if not text.isdigit():  # croniter's R (random) and H (hashed) have no AWS form
        raise ValueError(f"{cron_field.name} {text!r}: AWS cron cannot express it")
    return int(text)


def _runs(values: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3,5``."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


# ---- what runs ----------------------------------------------------------------------------


def maintenance_schedules(
    settings: Settings, *, pipelines: Sequence[str] | None = None
) -> tuple[list[Scheduled], list[str]]:
    """The scheduled maintenance tasks (enabled, with a ``schedule``), and a note for each
    pipeline or task left out and why."""
    scheduled: list[Scheduled] = []
    notes: list[str] = []
    for name in _pipelines(settings, pipelines):
        pipeline = settings.pipeline(name)
        fmt = pipeline.sink.format
        for task in Task:
            settings_of_task = getattr(pipeline.maintenance, task.value)
            if not settings_of_task.enabled or settings_of_task.schedule is None:
                continue
            if fmt is TableFormat.HUDI:
                notes.append(
                    f"pipelines.{name}.maintenance.{task.value}: not scheduled: a Hudi table "
                    "is maintained inline by its stream (jobs.maintain refuses beside it)"
                )
            elif task in _COVERED_TASKS.get(fmt, frozenset()):
                notes.append(
                    f"pipelines.{name}.maintenance.{task.value}: not scheduled: a {fmt.value} "
                    "table's expire task covers it"
                )
            else:
                scheduled.append(Scheduled(name, task, fmt, settings_of_task.schedule))
    return scheduled, notes


def _aws_schedule(item: Scheduled) -> str:
    """The task's schedule as AWS cron; the error names the setting."""
    try:
        return aws_cron(item.cron)
    except ValueError as err:
        raise DeployError(f"{item.key}: {item.cron!r}: {err}") from None


def _pipelines(settings: Settings, names: Sequence[str] | None) -> list[str]:
    """The named pipelines (checked), or every pipeline."""
    chosen = list(names) if names else sorted(settings.pipelines)
    for name in chosen:
        settings.pipeline(name)
    return chosen


def _by_format(
    settings: Settings, names: Iterable[str], *, private: bool = False
) -> dict[TableFormat, list[str]]:
    """Pipelines grouped by table format (those with a privacy section, if ``private``)."""
    groups: dict[TableFormat, list[str]] = {}
    for name in names:
        pipeline = settings.pipeline(name)
        if not private or pipeline.privacy is not None:
            groups.setdefault(pipeline.sink.format, []).append(name)
    if private and not groups:
        raise DeployError(
            "pipelines.*.privacy: an erasure needs a pipeline with a privacy section, found none"
        )
    return dict(sorted(groups.items()))


def _check_cluster(settings: Settings, target: str) -> None:
    """Settings meant for a laptop do not go to a cluster."""
    local = {
        "spark.master": settings.spark.master,
        "spark.jars_dir": settings.spark.jars_dir,
        "aws.endpoint_url": settings.aws.endpoint_url,
    }
    for key, value in local.items():
        if value is not None:
            raise DeployError(
                f"{key}: expected null for {target} (the platform sets the master, ships the "
                f"jars and the real AWS endpoints are used), found {str(value)!r}"
            )


def _check_subjects_file(subjects_file: str) -> None:
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
    return {
        "Name": name,
        # a failed step leaves the cluster (and the other steps) running
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def _emr_cluster(deployment: Deployment) -> str:
    """The cluster id from ``deploy.emr``."""
    section = deployment.deploy.emr
    if section is None:
        raise DeployError("deploy.emr: expected this section (cluster_id) for EMR, found none")
    _check_cluster(deployment.settings, "EMR")
    return section.cluster_id


def _add_steps(cluster_id: str, resource: str, steps: list[Request]) -> ApiRequest:
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
    section = deployment.deploy.emr_serverless
    if section is None:
        raise DeployError(
            "deploy.emr_serverless: expected this section (application_id, "
            "execution_role_arn) for EMR Serverless, found none"
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


# ---- Glue ----------------------------------------------------------------------------------


def _glue(deployment: Deployment) -> GlueDeploySettings:
    section = deployment.deploy.glue
    if section is None:
        raise DeployError("deploy.glue: expected this section (role, ...) for Glue, found none")
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


# ---- schedules -----------------------------------------------------------------------------


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


def scheduler_schedules(
    deployment: Deployment, *, pipelines: Sequence[str] | None = None
) -> list[ApiRequest]:
    """EventBridge Scheduler CreateSchedule requests: a schedule per pipeline and maintenance
    task, starting an EMR Serverless job run through the universal target.

    Raises:
        DeployError: No ``deploy.scheduler`` (or ``deploy.emr_serverless``) section, or a
            schedule AWS cron cannot express.
    """
    scheduler = _scheduler(deployment)
    schedules = []
    for item in maintenance_schedules(deployment.settings, pipelines=pipelines)[0]:
        name = deployment.name(f"{item.pipeline}-{item.task.value}")
        run = _job_run(
            deployment,
            name=name,
            script="maintain",
            args=["--task", item.task.value, "--pipeline", item.pipeline],
            formats=[item.format],
            client_token=SCHEDULER_EXECUTION_ID,
            streaming=False,
        )
        params: Request = {
            "Name": name,
            "Description": f"{item.key}: {item.cron} (UTC)",
            "ScheduleExpression": _aws_schedule(item),
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {
                "Arn": START_JOB_RUN_TARGET,
                "RoleArn": scheduler.role_arn,
                "Input": json.dumps(sdk_input("emr-serverless", "StartJobRun", run)),
            },
        }
        if scheduler.group_name is not None:
            params["GroupName"] = scheduler.group_name
        schedules.append(ApiRequest("scheduler", "CreateSchedule", name, params))
    return schedules


def sdk_input(service: str, operation: str, params: Request) -> Request:
    """A request as a universal target's ``Input`` takes it.

    Universal targets (like Step Functions' SDK integrations) call the API through an AWS SDK
    whose member names are PascalCase (``ApplicationId``, ``JobDriver.SparkSubmit``), while
    botocore's, which the rest of this module renders, follow the API's JSON (camelCase for
    EMR Serverless). Member names are converted along the operation's shape; map keys (Spark
    properties, tags) are data and stay as they are.
    """
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    assert shape is not None, f"{service} {operation} takes parameters"
    converted: Request = _sdk_members(params, shape)
    return converted


def _sdk_members(value: Any, shape: Any) -> Any:
    """One value with its structures' member names in the SDK's PascalCase."""
    if shape.type_name == "structure":
        return {
            name[:1].upper() + name[1:]: _sdk_members(item, shape.members[name])
            for name, item in value.items()
        }
    if shape.type_name == "list":
        return [_sdk_members(item, shape.member) for item in value]
    if shape.type_name == "map":
        return {key: _sdk_members(item, shape.value) for key, item in value.items()}
    return value


def _scheduler(deployment: Deployment) -> SchedulerDeploySettings:
    section = deployment.deploy.scheduler
    if section is None:
        raise DeployError(
            "deploy.scheduler: expected this section (role_arn) for EventBridge Scheduler, "
            "found none"
        )
    return section


def crontab(
    settings: Settings,
    *,
    conf: str,
    workdir: str,
    python: str,
    pipelines: Sequence[str] | None = None,
) -> str:
    """Crontab lines running ``jobs.maintain`` on each task's schedule (hosts without an AWS
    scheduler: local, EC2, on premises).

    Args:
        settings: The parsed settings.
        conf: The settings file as the job is to read it (relative to ``workdir``).
        workdir: Where the job runs (the checkout).
        python: The interpreter with the project installed.
        pipelines: The pipelines (default all).
    """
    scheduled, notes = maintenance_schedules(settings, pipelines=pipelines)
    lines = [
        f"# maintenance of the tables of {conf} (python -m jobs.deploy --target crontab)",
        # schedules are UTC; cronie honours CRON_TZ, other crons need a host running in UTC
        "CRON_TZ=UTC",
    ]
    for item in scheduled:
        command = (
            f"cd {shlex.quote(workdir)} && {shlex.quote(python)} -m jobs.maintain "
            f"--conf {shlex.quote(conf)} --task {item.task.value} --pipeline {item.pipeline}"
        )
        # cron turns an unescaped % into a newline
        lines.append(f"{item.cron} {command.replace('%', chr(92) + '%')}")
    lines += [f"# {note}" for note in notes]
    return "\n".join(lines) + "\n"


# ---- uploads -------------------------------------------------------------------------------


def uploads(deployment: Deployment, *, conf_path: str, jars_dir: str) -> str:
    """A shell script copying what the requests refer to into ``deploy.artifacts``."""
    release = deployment.release
    copies = [
        (f"dist/{release.wheel}", deployment.uri(release.wheel)),
        (conf_path, deployment.uri(deployment.conf_file)),
        *((f"jobs/{s}.py", deployment.uri("jobs", f"{s}.py")) for s in SCRIPTS),
        *(
            (f"{jars_dir}/{jar}", deployment.uri("jars", jar))
            for jar in (release.udf_jar, *release.glue_jars)
        ),
    ]
    lines = [
        "#!/usr/bin/env bash",
        "# the objects the rendered requests refer to; build them first:",
        "#   pip wheel --no-deps -w dist . && make jars",
        "set -euo pipefail",
        *(f"aws s3 cp {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in copies),
    ]
    serverless = deployment.deploy.emr_serverless
    if serverless is not None and serverless.python_archive is not None:
        # built apart (venv-pack on Amazon Linux, Python 3.11): named, not copied
        lines.append(
            "# and the Python environment of deploy.emr_serverless.python_archive: "
            f"{serverless.python_archive}"
        )
    return "\n".join(lines) + "\n"


def _kebab(operation: str) -> str:
    """``AddJobFlowSteps`` -> ``add-job-flow-steps``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", operation).lower()
