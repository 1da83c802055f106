"""Deployment artefacts rendered from the settings: AWS API requests and crontab lines.

Every request is a dict of the API's own parameters, named as the API (and botocore) names
them, so it can be sent as is (``aws glue create-job --cli-input-json file://...``, or
``boto3.client(service).<operation>(**request)``). Nothing here talks to AWS or reads files,
except ``read_release``, which collects what the requests refer to besides the settings (the
project's version, the jar names ``make jars`` produced, the Maven coordinates and the pinned
Python requirements) into a ``Release``.

Modules (every public name is re-exported here, so ``etl.deploy.<name>`` is the API):

* ``cron``: Unix cron expressions as AWS's ``cron(...)``.
* ``release``: the ``Release`` (``read_release``) and the Python pins Glue lacks.
* ``base``: the ``Deployment``, the ``ApiRequest``, and the pipelines a request covers.
* ``emr``: EMR on EC2 steps and EMR Serverless job runs.
* ``glue``: Glue jobs and the triggers scheduling their maintenance.
* ``schedules``: the scheduled maintenance tasks, EventBridge Scheduler schedules, crontab.
* ``artifacts``: the layout under ``deploy.artifacts`` and the script copying it there.

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

from etl.deploy.artifacts import SCRIPTS, uploads
from etl.deploy.base import ApiRequest, Deployment, Request
from etl.deploy.cron import aws_cron
from etl.deploy.emr import (
    emr_forget,
    emr_ingest,
    emr_maintain,
    serverless_forget,
    serverless_ingest,
    serverless_maintain,
)
from etl.deploy.glue import glue_job_name, glue_jobs, glue_triggers
from etl.deploy.release import (
    DIST,
    GLUE_PYTHON_PROVIDED,
    WHEEL,
    Release,
    python_closure,
    read_release,
)
from etl.deploy.schedules import (
    SCHEDULER_EXECUTION_ID,
    START_JOB_RUN_TARGET,
    Scheduled,
    crontab,
    maintenance_schedules,
    scheduler_schedules,
    sdk_input,
)

__all__ = [
    "DIST",
    "GLUE_PYTHON_PROVIDED",
    "SCHEDULER_EXECUTION_ID",
    "SCRIPTS",
    "START_JOB_RUN_TARGET",
    "WHEEL",
    "ApiRequest",
    "Deployment",
    "Release",
    "Request",
    "Scheduled",
    "aws_cron",
    "crontab",
    "emr_forget",
    "emr_ingest",
    "emr_maintain",
    "glue_job_name",
    "glue_jobs",
    "glue_triggers",
    "maintenance_schedules",
    "python_closure",
    "read_release",
    "scheduler_schedules",
    "sdk_input",
    "serverless_forget",
    "serverless_ingest",
    "serverless_maintain",
    "uploads",
]
