"""Deployment requests and schedules rendered from the settings file the jobs read.

    python -m jobs.deploy --conf conf/glue.yaml [--target glue --target schedules ...]
        [--pipeline orders ...] [--out DIR]
    python -m jobs.deploy --conf conf/emr.yaml --target emr --maintain compact
    python -m jobs.deploy --conf conf/emr.yaml --target emr-serverless \\
        --forget REQ-2026-0042 --subjects-file s3://my-requests/REQ-2026-0042.txt
    python -m jobs.deploy --conf conf/local.yaml --target crontab

Targets (``all``, the default, is every one whose ``deploy`` section is set, crontab aside):

* ``emr``: an EMR AddJobFlowSteps request with the ingest step; ``--maintain TASK`` and
  ``--forget REQUEST_ID`` add requests with maintenance / erasure steps.
* ``emr-serverless``: a StartJobRun request per pipeline (streaming); ``--maintain`` and
  ``--forget`` add batch job runs.
* ``glue``: Glue CreateJob requests (ingest per pipeline, maintenance and erasure per format).
* ``schedules``: Glue CreateTrigger requests (with ``deploy.glue``) and EventBridge Scheduler
  CreateSchedule requests (with ``deploy.scheduler``) for the maintenance tasks' schedules.
* ``crontab``: crontab lines running ``jobs.maintain`` on the same schedules.
* ``uploads``: a shell script copying the wheel, the settings, the scripts and the jars to
  ``deploy.artifacts``.

Each request is one JSON file named after its API (``glue-create-job-orders-ingest.json``)
holding exactly the API's parameters: ``aws glue create-job --cli-input-json file://...``.
Without ``--out`` they are printed, each after a ``# ==> name <==`` line. Exit code 0, or 1
when the settings cannot be rendered (the message names the key).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from etl import deploy
from etl.config import Settings, load_settings
from etl.deploy import ApiRequest, Deployment
from etl.exceptions import DeployError, EtlError
from etl.jvm import JARS_DIR
from etl.maintenance import Task

EMR, SERVERLESS, GLUE, SCHEDULES, CRONTAB, UPLOADS = (
    "emr",
    "emr-serverless",
    "glue",
    "schedules",
    "crontab",
    "uploads",
)
TARGETS = (EMR, SERVERLESS, GLUE, SCHEDULES, CRONTAB, UPLOADS)
ALL = "all"


@dataclass(frozen=True)
class Output:
    """One rendered file: a request (JSON) or a text (crontab, upload script)."""

    name: str
    text: str
    request: ApiRequest | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m jobs.deploy",
        description="Render the AWS requests and crontab lines that deploy the jobs.",
    )
    parser.add_argument("--conf", required=True, help="YAML settings file, e.g. conf/glue.yaml")
    parser.add_argument(
        "--target",
        action="append",
        dest="targets",
        choices=[*TARGETS, ALL],
        help="what to render (repeatable); default all: every target whose deploy section "
        "is set, crontab aside",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        dest="pipelines",
        help="pipeline to deploy (repeatable); default: every pipeline in the file",
    )
    parser.add_argument(
        "--maintain",
        choices=[*(t.value for t in Task), "all"],
        help="also render a maintenance run of this task (emr, emr-serverless)",
    )
    parser.add_argument(
        "--forget", metavar="REQUEST_ID", help="also render an erasure run (emr, emr-serverless)"
    )
    parser.add_argument("--subjects-file", help="the erasure's subjects, an s3:// URI")
    parser.add_argument(
        "--client-token",
        default=uuid.uuid4().hex,
        help="base of the EMR Serverless runs' idempotency tokens; default: new each time",
    )
    parser.add_argument(
        "--jars-dir", type=Path, default=JARS_DIR, help="where `make jars` put the jars"
    )
    parser.add_argument(
        "--workdir", default=str(Path.cwd()), help="crontab: where jobs.maintain runs"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="crontab: the interpreter with the project"
    )
    parser.add_argument("--out", type=Path, help="write one file per request into this folder")
    args = parser.parse_args(argv)
    if (args.forget is None) != (args.subjects_file is None):
        parser.error("--forget and --subjects-file go together")
    explicit = set(args.targets or [ALL])
    if (args.maintain or args.forget) and not explicit & {EMR, SERVERLESS, ALL}:
        parser.error("--maintain and --forget render emr or emr-serverless runs: add --target")
    return args


def targets(settings: Settings, chosen: list[str] | None) -> list[str]:
    """The targets to render, ``all`` expanded to those whose section is set.

    Raises:
        DeployError: ``all`` with no ``deploy`` section.
    """
    if chosen and ALL not in chosen:
        return [t for t in TARGETS if t in chosen]
    explicit = set(chosen or [])
    section = settings.deploy
    if section is None:
        raise DeployError("deploy: expected a `deploy` section to render `all`, found none")
    configured = {
        EMR: section.emr is not None,
        SERVERLESS: section.emr_serverless is not None,
        GLUE: section.glue is not None,
        SCHEDULES: section.glue is not None or section.scheduler is not None,
        UPLOADS: True,
    }
    return [t for t in TARGETS if configured.get(t, False) or t in explicit]


def render(settings: Settings, args: argparse.Namespace) -> list[Output]:
    """Every output of the chosen targets.

    Raises:
        EtlError: The settings do not fit a target (a missing section, a schedule AWS
            cannot express, ...).
    """
    chosen = targets(settings, args.targets)
    outputs: list[Output] = []
    if CRONTAB in chosen:
        text = deploy.crontab(
            settings,
            conf=args.conf,
            workdir=args.workdir,
            python=args.python,
            pipelines=args.pipelines,
        )
        outputs.append(Output("crontab.txt", text))
    aws = [t for t in chosen if t != CRONTAB]
    if not aws:
        return outputs
    deployment = Deployment(
        settings=settings,
        conf_file=Path(args.conf).name,
        release=deploy.read_release(jars_dir=args.jars_dir),
    )
    requests: list[ApiRequest] = []
    for target in aws:
        requests += _requests(deployment, target, args)
    if (args.maintain or args.forget) and not {EMR, SERVERLESS} & set(aws):
        raise DeployError(
            "deploy.emr / deploy.emr_serverless: --maintain and --forget render runs on them, "
            "and neither section is set"
        )
    outputs += [Output(r.file_name, json.dumps(r.params, indent=2) + "\n", r) for r in requests]
    if UPLOADS in aws:
        text = deploy.uploads(deployment, conf_path=args.conf, jars_dir=str(args.jars_dir))
        outputs.append(Output("uploads.sh", text))
    return outputs


def _requests(deployment: Deployment, target: str, args: argparse.Namespace) -> list[ApiRequest]:
    """The requests of one AWS target (``uploads`` has none)."""
    pipelines = args.pipelines
    token = args.client_token
    forget = {"request_id": args.forget, "subjects_file": args.subjects_file}
    if target == EMR:
        requests = [deploy.emr_ingest(deployment, pipelines=pipelines)]
        if args.maintain:
            requests.append(
                deploy.emr_maintain(deployment, task=args.maintain, pipelines=pipelines)
            )
        if args.forget:
            requests.append(deploy.emr_forget(deployment, **forget, pipelines=pipelines))
        return requests
    if target == SERVERLESS:
        requests = deploy.serverless_ingest(deployment, client_token=token, pipelines=pipelines)
        if args.maintain:
            requests += deploy.serverless_maintain(
                deployment, task=args.maintain, client_token=token, pipelines=pipelines
            )
        if args.forget:
            requests += deploy.serverless_forget(
                deployment, **forget, client_token=token, pipelines=pipelines
            )
        return requests
    if target == GLUE:
        return deploy.glue_jobs(deployment, pipelines=pipelines)
    if target == SCHEDULES:
        return _schedules(deployment, pipelines)
    return []


def _schedules(deployment: Deployment, pipelines: list[str] | None) -> list[ApiRequest]:
    """Glue triggers and/or EventBridge schedules, whichever sections are set."""
    section = deployment.deploy
    if section.glue is None and section.scheduler is None:
        raise DeployError(
            "deploy.glue / deploy.scheduler: schedules are Glue triggers or EventBridge "
            "Scheduler schedules, and neither section is set (--target crontab needs neither)"
        )
    requests = []
    if section.glue is not None:
        requests += deploy.glue_triggers(deployment, pipelines=pipelines)
    if section.scheduler is not None:
        requests += deploy.scheduler_schedules(deployment, pipelines=pipelines)
    return requests


def write(outputs: list[Output], out: Path | None) -> None:
    """Prints the outputs, or writes them into ``out`` and prints how to send each."""
    if out is None:
        for output in outputs:
            print(f"# ==> {output.name} <==")
            print(output.text, end="")
        return
    out.mkdir(parents=True, exist_ok=True)
    for output in outputs:
        path = out / output.name
        path.write_text(output.text)
        print(output.request.command(str(path)) if output.request else str(path))


def main(argv: list[str] | None = None) -> int:
    """Renders the deployment of a settings file.

    Args:
        argv: Command-line arguments (without the program name); ``sys.argv[1:]`` if None.

    Returns:
        0 when everything was rendered, 1 when the settings do not fit a target.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args.conf)
        outputs = render(settings, args)
        _, notes = deploy.maintenance_schedules(settings, pipelines=args.pipelines)
    except EtlError as err:
        print(f"jobs.deploy: error: {err}", file=sys.stderr)
        return 1
    write(outputs, args.out)
    if any(
        o.request and o.request.operation in ("CreateTrigger", "CreateSchedule") for o in outputs
    ):
        for note in notes:
            print(f"jobs.deploy: note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
