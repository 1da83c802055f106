"""The maintenance tasks' schedules: which tasks are scheduled, EventBridge Scheduler
schedules starting EMR Serverless job runs, and crontab lines for hosts without an AWS
scheduler. (Glue's triggers are in ``etl.deploy.glue``.)"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from etl.config import SchedulerDeploySettings, Settings, TableFormat
from etl.deploy.base import ApiRequest, Deployment, Request, _pipelines, required_section
from etl.deploy.cron import aws_cron
from etl.deploy.emr import _job_run
from etl.exceptions import DeployError
from etl.maintenance import Task

# EventBridge Scheduler's universal target for EMR Serverless' StartJobRun
START_JOB_RUN_TARGET = "arn:aws:scheduler:::aws-sdk:emrserverless:startJobRun"
# replaced by EventBridge Scheduler with the id of each invocation (the same id on its
# retries): each scheduled run is a new job run, a retried invocation is not a second one
SCHEDULER_EXECUTION_ID = "<aws.scheduler.execution-id>"
# maintenance tasks another task of the format covers: scheduling them runs a job that
# records `not_applicable` (README "Maintenance")
_COVERED_TASKS = {TableFormat.DELTA: frozenset({Task.ORPHANS})}


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
    """The ``deploy.scheduler`` section."""
    return required_section(
        deployment.deploy.scheduler, "scheduler", holds="role_arn", target="EventBridge Scheduler"
    )


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
