"""python -m jobs.deploy: files per request that load and validate, printed output, errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from jobs import deploy
from tests.aws_requests import check_request
from tests.conftest import REPO
from tests.etl.test_deploy import fake_jars

CONF = REPO / "conf"
LOCAL, EMR, GLUE = (str(CONF / name) for name in ("local.yaml", "emr.yaml", "glue.yaml"))
# file name prefix -> (botocore service, operation)
APIS = {
    "emr-add-job-flow-steps-": ("emr", "AddJobFlowSteps"),
    "emr-serverless-start-job-run-": ("emr-serverless", "StartJobRun"),
    "glue-create-job-": ("glue", "CreateJob"),
    "glue-create-trigger-": ("glue", "CreateTrigger"),
    "scheduler-create-schedule-": ("scheduler", "CreateSchedule"),
}


@pytest.fixture
def jars(tmp_path: Path) -> str:
    return str(fake_jars(tmp_path / "jars"))


def api_of(name: str) -> tuple[str, str]:
    # the longest prefix: emr-serverless-... before emr-...
    prefix = max((p for p in APIS if name.startswith(p)), key=len)
    return APIS[prefix]


def validate_file(path: Path) -> None:
    service, operation = api_of(path.name)
    check_request(service, operation, json.loads(path.read_text()))


def test_out_writes_a_file_per_request_that_loads_and_validates(
    tmp_path: Path, jars: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--conf", str(CONF / "emr.yaml"), "--jars-dir", jars, "--out", str(out)]
    argv += ["--maintain", "expire", "--forget", "REQ-9", "--subjects-file", "s3://r/REQ-9.txt"]
    assert deploy.main(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(
        [
            "emr-add-job-flow-steps-ingest.json",
            "emr-add-job-flow-steps-maintain-expire.json",
            "emr-add-job-flow-steps-forget.json",
            *(f"emr-serverless-start-job-run-{p}-ingest.json"
              for p in ("customers", "orders", "payments")),
            "emr-serverless-start-job-run-maintain-expire-hudi.json",
            "emr-serverless-start-job-run-maintain-expire-iceberg.json",
            "emr-serverless-start-job-run-forget-iceberg.json",
            *(
                f"scheduler-create-schedule-{p}-{t}.json"
                for p in ("orders", "payments")
                for t in ("compact", "expire", "orphans")
            ),
            "uploads.sh",
        ]
    )  # fmt: skip
    for path in out.glob("*.json"):
        validate_file(path)
    captured = capsys.readouterr()
    # a command per file that sends it
    commands = captured.out.splitlines()
    assert len(commands) == len(files)
    assert f"aws scheduler create-schedule --cli-input-json file://{out}/" in captured.out
    assert all(shlex.split(c)[-1].removeprefix("file://").startswith(str(out)) for c in commands)
    # the Hudi pipeline's schedules are left out, and said so
    assert "note: pipelines.customers.maintenance.compact: not scheduled" in captured.err


def test_all_renders_the_glue_jobs_triggers_and_uploads(
    tmp_path: Path, jars: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--conf", str(CONF / "glue.yaml"), "--jars-dir", jars, "--out", str(out)]
    assert deploy.main([*argv, "--target", "all"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "glue-create-job-orders-ingest.json" in names
    assert "glue-create-trigger-orders-compact.json" in names
    assert "uploads.sh" in names
    assert not any(n.startswith(("emr", "scheduler")) for n in names)
    for path in out.glob("*.json"):
        validate_file(path)
    assert "aws glue create-job --cli-input-json file://" in capsys.readouterr().out


def test_without_out_each_request_is_printed_after_its_name(
    jars: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--conf", str(CONF / "glue.yaml"), "--jars-dir", jars, "--target", "schedules"]
    assert deploy.main(argv) == 0
    parts = capsys.readouterr().out.split("# ==> ")[1:]
    assert len(parts) == 5  # glue.yaml: 5 scheduled maintenance tasks
    for part in parts:
        name, _, text = part.partition(" <==\n")
        assert name.startswith("glue-create-trigger-")
        check_request("glue", "CreateTrigger", json.loads(text))


def test_crontab_prints_a_crontab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--conf", LOCAL, "--target", "crontab", "--workdir", "/srv/etl"]
    # needs neither a deploy section nor the built jars
    assert deploy.main([*argv, "--python", "/usr/bin/python3", "--jars-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# ==> crontab.txt <=="
    assert "CRON_TZ=UTC" in lines
    assert (
        "30 2 * * * cd /srv/etl && /usr/bin/python3 -m jobs.maintain "
        f"--conf {LOCAL} --task expire --pipeline orders"
    ) in lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--conf", LOCAL, "--target", "glue"], "deploy: expected a `deploy` section"),
        (["--conf", LOCAL], "deploy: expected a `deploy` section to render `all`"),
        (["--conf", EMR, "--target", "glue"], "deploy.glue: expected this section"),
        (["--conf", GLUE, "--target", "emr-serverless"],
         "deploy.emr_serverless: expected this section"),
        (["--conf", GLUE, "--maintain", "compact"],
         "deploy.emr / deploy.emr_serverless: --maintain and --forget render runs on them"),
        (["--conf", EMR, "--target", "emr", "--pipeline", "nope"],
         "pipelines.nope: no such pipeline"),
        (["--conf", str(CONF / "missing.yaml")], "config file: expected an existing YAML file"),
    ],
)  # fmt: skip
def test_settings_that_do_not_fit_exit_1_naming_the_key(
    jars: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert deploy.main([*argv, "--jars-dir", jars]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"jobs.deploy: error: {message}"), err


def test_missing_jars_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy.main(["--conf", EMR, "--jars-dir", str(tmp_path)]) == 1
    assert "run `make jars`" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--forget", "REQ-1"], "--forget and --subjects-file go together"),
        (["--subjects-file", "s3://r/x"], "--forget and --subjects-file go together"),
        (["--target", "glue", "--maintain", "all"], "--maintain and --forget render emr"),
        (["--target", "aws"], "invalid choice: 'aws'"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        deploy.main(["--conf", EMR, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
