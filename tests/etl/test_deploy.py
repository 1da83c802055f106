"""Deployment rendering: every AWS request checked against botocore's model of its API, the
job command lines parsed back by the jobs' own parsers, cron conversion, crontab lines."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore.exceptions import ParamValidationError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from etl import deploy
from etl.config import Settings, TableFormat, load_settings
from etl.deploy import ApiRequest, Deployment, Release, aws_cron, read_release
from etl.exceptions import ConfigError, DeployError
from etl.jvm import format_pom, maven_dependencies
from etl.spark import spark_conf
from jobs import forget, glue_forget, glue_ingest, glue_maintain, ingest, maintain
from tests.aws_requests import ConstraintError, check_request
from tests.conftest import REPO

CONF = REPO / "conf"
ARTIFACTS = "s3://my-artifacts/streaming-etl/0.1.0"
HUDI_BUNDLE = "org.apache.hudi:hudi-spark3.5-bundle_2.12:1.0.2"
# the file names `make jars` leaves in .jars/spark/ (empty files will do)
JARS = (
    "etl-udf-1.0.0.jar",
    "aws-msk-iam-auth-2.3.2.jar",
    "commons-pool2-2.11.1.jar",
    "kafka-clients-3.4.1.jar",
    "spark-avro_2.12-3.5.7.jar",
    "spark-sql-kafka-0-10_2.12-3.5.7.jar",
    "spark-token-provider-kafka-0-10_2.12-3.5.7.jar",
    "iceberg-spark-runtime-3.5_2.12-1.10.0.jar",
    "iceberg-aws-bundle-1.10.0.jar",
    "delta-spark_2.12-3.3.2.jar",
    "delta-storage-3.3.2.jar",
)
# Glue's own arguments as its scripts get them, around ours
GLUE_ARGS = ["--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--job-bookmark-option", "x"]


def fake_jars(directory: Path) -> Path:
    """A jars directory as `make jars` leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in JARS:
        (directory / name).write_bytes(b"")
    return directory


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    return read_release(jars_dir=fake_jars(tmp_path_factory.mktemp("jars")))


def deployment(conf: str | Path, release: Release) -> Deployment:
    path = Path(conf) if Path(conf).is_absolute() else CONF / conf
    return Deployment(settings=load_settings(path, env={}), conf_file=path.name, release=release)


@pytest.fixture(scope="module")
def emr(release: Release) -> Deployment:
    return deployment("emr.yaml", release)


@pytest.fixture(scope="module")
def glue(release: Release) -> Deployment:
    return deployment("glue.yaml", release)


@pytest.fixture
def conf_with(tmp_path: Path) -> Callable[..., Path]:
    """Writes a copy of a conf file with some keys replaced (dotted paths)."""

    def write(base: str, **changes: Any) -> Path:
        data = yaml.safe_load((CONF / base).read_text())
        for dotted, value in changes.items():
            *parents, last = dotted.split("__")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value
        path = tmp_path / base
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def glue_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of a Glue job, holding glue.yaml as --extra-files leaves it."""
    workdir = tmp_path / "glue-workdir"
    workdir.mkdir()
    (workdir / "glue.yaml").write_text("pipelines: {}\n")
    monkeypatch.chdir(workdir)
    return workdir


def check(request: ApiRequest) -> None:
    check_request(request.service, request.operation, request.params)


def after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def job_args(args: list[str], script: str) -> list[str]:
    """What follows the job script in a spark-submit command line."""
    return args[args.index(f"{ARTIFACTS}/jobs/{script}.py") + 1 :]


def submit_conf(parameters: str) -> dict[str, str]:
    """EMR Serverless' sparkSubmitParameters as a dict."""
    words = shlex.split(parameters)
    assert words[::2] == ["--conf"] * (len(words) // 2)
    return dict(word.split("=", 1) for word in words[1::2])


def glue_argv(arguments: dict[str, str]) -> list[str]:
    """Job parameters as Glue passes them to the script: ``--key value`` each."""
    return [*GLUE_ARGS, *(token for item in arguments.items() for token in item)]


def botocore_names(value: Any, service: str, operation: str) -> Any:
    """An SDK-cased request (a universal target's Input) back in botocore's member names."""
    shape = botocore.session.get_session().get_service_model(service)
    return _botocore(value, shape.operation_model(operation).input_shape)


def _botocore(value: Any, shape: Any) -> Any:
    if shape.type_name == "structure":
        names = {name[:1].upper() + name[1:]: name for name in shape.members}
        return {names[k]: _botocore(v, shape.members[names[k]]) for k, v in value.items()}
    if shape.type_name == "list":
        return [_botocore(item, shape.member) for item in value]
    if shape.type_name == "map":
        return {k: _botocore(v, shape.value) for k, v in value.items()}
    return value


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
        if value.startswith("{"):  # the scheduler's Input: a request inside a request
            yield from strings(json.loads(value))
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# ---- the check itself ---------------------------------------------------------------------


def _misspell(params: dict[str, Any]) -> None:
    params["JobFlowID"] = params.pop("JobFlowId")


def _wrong_type(params: dict[str, Any]) -> None:
    params["Steps"][0]["HadoopJarStep"]["Args"] = "spark-submit --version"


def _unknown_enum(params: dict[str, Any]) -> None:
    params["Steps"][0]["ActionOnFailure"] = "IGNORE"


def _too_long(params: dict[str, Any]) -> None:
    params["Steps"][0]["Name"] = "x" * 257


@pytest.mark.parametrize(
    ("spoil", "error", "message"),
    [
        (_misspell, ParamValidationError, 'Unknown parameter in input: "JobFlowID"'),
        (_wrong_type, ParamValidationError, "Invalid type for parameter Steps[0].HadoopJarStep"),
        # botocore does not check these; the service does, and so does check_request
        (_unknown_enum, ConstraintError, "'IGNORE' is not one of"),
        (_too_long, ConstraintError, "257 characters, at most 256"),
    ],
    ids=["misspelled-key", "wrong-type", "unknown-enum", "too-long"],
)
def test_the_check_catches_wrong_requests(
    emr: Deployment, spoil: Callable[[dict[str, Any]], None], error: type[Exception], message: str
) -> None:
    request = deploy.emr_ingest(emr)
    check(request)
    params = json.loads(json.dumps(request.params))
    spoil(params)
    with pytest.raises(error, match=re.escape(message)):
        check_request("emr", "AddJobFlowSteps", params)


def test_the_check_matches_patterns(emr: Deployment) -> None:
    params = deploy.serverless_ingest(emr, client_token="t")[0].params
    params["applicationId"] = "My-App"  # ids are lower-case letters and digits
    with pytest.raises(ConstraintError, match="does not match"):
        check_request("emr-serverless", "StartJobRun", params)


# ---- EMR on EC2 ---------------------------------------------------------------------------


def test_emr_ingest_step_runs_spark_submit_with_the_poms_packages(
    emr: Deployment, release: Release
) -> None:
    request = deploy.emr_ingest(emr)
    check(request)
    assert request.file_name == "emr-add-job-flow-steps-ingest.json"
    assert request.params["JobFlowId"] == "j-2AXXXXXXGAPLF"
    (step,) = request.params["Steps"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = step["HadoopJarStep"]["Args"]
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    packages, excludes = maven_dependencies()
    hudi_packages, hudi_excludes = maven_dependencies(format_pom("hudi"))
    # emr.yaml's customers pipeline writes Hudi: its bundle joins the packages
    assert after(args, "--packages").split(",") == [*packages, *hudi_packages]
    assert after(args, "--conf") == "spark.jars.excludes=" + ",".join(
        sorted({*excludes, *hudi_excludes})
    )
    assert after(args, "--jars") == f"{ARTIFACTS}/jars/etl-udf-1.0.0.jar"
    assert (
        after(args, "--py-files") == f"{ARTIFACTS}/streaming_etl-{release.version}-py3-none-any.whl"
    )
    assert after(args, "--files") == f"{ARTIFACTS}/emr.yaml"
    parsed = ingest.parse_args(job_args(args, "ingest"))
    assert (parsed.conf, parsed.pipelines) == ("emr.yaml", None)


def test_emr_ingest_of_some_pipelines_names_them_and_leaves_hudi_out(emr: Deployment) -> None:
    request = deploy.emr_ingest(emr, pipelines=["orders", "payments"])
    check(request)
    args = request.params["Steps"][0]["HadoopJarStep"]["Args"]
    assert HUDI_BUNDLE not in after(args, "--packages").split(",")
    assert ingest.parse_args(job_args(args, "ingest")).pipelines == ["orders", "payments"]


def test_emr_maintenance_and_erasure_steps_one_per_format(emr: Deployment) -> None:
    maintenance = deploy.emr_maintain(emr, task="compact")
    check(maintenance)
    assert maintenance.file_name == "emr-add-job-flow-steps-maintain-compact.json"
    parsed = {}
    for step in maintenance.params["Steps"]:
        args = step["HadoopJarStep"]["Args"]
        job = maintain.parse_args(job_args(args, "maintain"))
        assert (job.conf, job.task, job.pipelines) == ("emr.yaml", "compact", None)
        parsed[job.format] = HUDI_BUNDLE in after(args, "--packages")
    # each format's session gets only its own artifacts
    assert parsed == {"hudi": True, "iceberg": False}

    erasure = deploy.emr_forget(emr, request_id="REQ-1", subjects_file="s3://requests/REQ-1.txt")
    check(erasure)
    (step,) = erasure.params["Steps"]  # orders is the one pipeline with a privacy section
    job = forget.parse_args(job_args(step["HadoopJarStep"]["Args"], "forget"))
    assert (job.request_id, job.subjects_file, job.format) == (
        "REQ-1",
        "s3://requests/REQ-1.txt",
        "iceberg",
    )
    with pytest.raises(DeployError, match="--subjects-file: expected an s3:// URI"):
        deploy.emr_forget(emr, request_id="REQ-1", subjects_file="subjects.txt")


# ---- EMR Serverless -----------------------------------------------------------------------


def test_serverless_ingest_is_one_streaming_run_per_pipeline(emr: Deployment) -> None:
    requests = deploy.serverless_ingest(emr, client_token="base")
    assert [r.file_name for r in requests] == [
        f"emr-serverless-start-job-run-{name}-ingest.json"
        for name in ("customers", "orders", "payments")
    ]
    packages = maven_dependencies()[0]
    for request in requests:
        check(request)
        params = request.params
        assert params["mode"] == "STREAMING"
        assert params["executionRoleArn"].endswith(":role/streaming-etl-emr-serverless")
        driver = params["jobDriver"]["sparkSubmit"]
        assert driver["entryPoint"] == f"{ARTIFACTS}/jobs/ingest.py"
        parsed = ingest.parse_args(driver["entryPointArguments"])
        assert parsed.conf == "emr.yaml"
        conf = submit_conf(driver["sparkSubmitParameters"])
        hudi = parsed.pipelines == ["customers"]
        assert conf["spark.jars.packages"].split(",") == [
            *packages,
            *([HUDI_BUNDLE] if hudi else []),
        ]
        assert conf["spark.files"] == f"{ARTIFACTS}/emr.yaml"
        assert conf["spark.jars"] == f"{ARTIFACTS}/jars/etl-udf-1.0.0.jar"
        assert conf["spark.archives"].endswith("pyspark_venv.tar.gz#environment")
        logs = params["configurationOverrides"]["monitoringConfiguration"]
        assert logs["s3MonitoringConfiguration"]["logUri"] == "s3://my-lake/logs/emr-serverless"
    # a run per pipeline: a token each; the same rendering again: the same tokens
    tokens = [r.params["clientToken"] for r in requests]
    assert len(set(tokens)) == 3
    assert tokens == [
        r.params["clientToken"] for r in deploy.serverless_ingest(emr, client_token="base")
    ]
    assert not set(tokens) & {
        r.params["clientToken"] for r in deploy.serverless_ingest(emr, client_token="other")
    }


def test_serverless_maintenance_and_erasure_runs_are_batch_runs(emr: Deployment) -> None:
    runs = [
        *deploy.serverless_maintain(emr, task="expire", client_token="t", pipelines=["orders"]),
        *deploy.serverless_forget(
            emr, request_id="REQ-2", subjects_file="s3://requests/REQ-2.txt", client_token="t"
        ),
    ]
    for request in runs:
        check(request)
        assert request.params["mode"] == "BATCH"
    first, second = (r.params["jobDriver"]["sparkSubmit"]["entryPointArguments"] for r in runs)
    job = maintain.parse_args(first)
    assert (job.task, job.pipelines, job.format) == ("expire", ["orders"], "iceberg")
    assert forget.parse_args(second).request_id == "REQ-2"


# ---- Glue ---------------------------------------------------------------------------------


def _glue_jobs(glue: Deployment) -> dict[str, dict[str, Any]]:
    requests = deploy.glue_jobs(glue)
    for request in requests:
        check(request)
    return {r.params["Name"]: r.params for r in requests}


def test_glue_jobs_are_an_ingest_job_per_pipeline_and_batch_jobs_per_format(
    glue: Deployment,
) -> None:
    jobs = _glue_jobs(glue)
    assert sorted(jobs) == [
        "customers-ingest",
        "forget-iceberg",  # customers (delta) has no privacy section
        "maintain-delta",
        "maintain-iceberg",
        "orders-ingest",
    ]
    for name, job in jobs.items():
        streaming = name.endswith("-ingest")
        assert job["GlueVersion"] == "5.0"
        assert job["Command"]["Name"] == ("gluestreaming" if streaming else "glueetl")
        assert job["ExecutionProperty"]["MaxConcurrentRuns"] == 1
        assert job.get("JobRunQueuingEnabled", False) is not streaming
        assert (job["WorkerType"], job["NumberOfWorkers"]) == ("G.1X", 4)
        assert job["Connections"] == {"Connections": ["msk-vpc"]}
        assert job["Role"] == "streaming-etl-glue"
    names = [r.file_name for r in deploy.glue_jobs(glue)]
    assert "glue-create-job-orders-ingest.json" in names


@pytest.mark.parametrize(
    ("job", "run_arguments", "parser", "expected"),
    [
        ("orders-ingest", {}, glue_ingest.ingest_argv, ["--pipeline", "orders"]),
        ("customers-ingest", {}, glue_ingest.ingest_argv, ["--pipeline", "customers"]),
        ("maintain-delta", {"--etl-task": "all"}, glue_maintain.maintain_argv,
         ["--task", "all", "--format", "delta"]),
        ("forget-iceberg",
         {"--etl-request-id": "REQ-3", "--etl-subjects-file": "s3://requests/REQ-3.txt"},
         glue_forget.forget_argv,
         ["--request-id", "REQ-3", "--subjects-file", "s3://requests/REQ-3.txt",
          "--format", "iceberg"]),
    ],
)  # fmt: skip
def test_glue_arguments_parse_back_into_the_jobs_command_lines(
    glue: Deployment,
    glue_workdir: Path,
    job: str,
    run_arguments: dict[str, str],
    parser: Callable[[list[str]], list[str]],
    expected: list[str],
) -> None:
    arguments = {**_glue_jobs(glue)[job]["DefaultArguments"], **run_arguments}
    assert parser(glue_argv(arguments)) == ["--conf", "glue.yaml", *expected]
    # the same when Glue splits the chained --conf value into words
    words = [word for token in glue_argv(arguments) for word in token.split(" ")]
    assert parser(words) == ["--conf", "glue.yaml", *expected]


@pytest.mark.parametrize(
    ("job", "formats"),
    [
        ("orders-ingest", [TableFormat.ICEBERG]),
        # Delta beside the Iceberg catalog, as the ingest session hosts them
        ("customers-ingest", [TableFormat.DELTA, TableFormat.ICEBERG]),
        ("maintain-delta", [TableFormat.DELTA]),
        ("forget-iceberg", [TableFormat.ICEBERG]),
    ],
)
def test_glue_arguments_carry_formats_confs_jars_and_modules(
    glue: Deployment, release: Release, job: str, formats: list[TableFormat]
) -> None:
    arguments = _glue_jobs(glue)[job]["DefaultArguments"]
    assert arguments["--datalake-formats"] == ",".join(f.value for f in formats)
    assert ("--enable-glue-datacatalog" in arguments) is (TableFormat.DELTA in formats)
    # Glue's one --conf parameter: the confs the session needs, chained
    first, *rest = arguments["--conf"].split(" --conf ")
    conf = dict(pair.split("=", 1) for pair in [first, *rest])
    expected = spark_conf(glue.settings, formats)
    del expected["spark.ui.enabled"]  # Glue's, through --enable-spark-ui
    assert conf == expected
    assert arguments["--extra-files"] == f"{ARTIFACTS}/glue.yaml"
    jars = [jar.removeprefix(f"{ARTIFACTS}/jars/") for jar in arguments["--extra-jars"].split(",")]
    # Glue provides the table formats (--datalake-formats), not the Kafka source, Avro or MSK IAM
    assert jars == [
        "etl-udf-1.0.0.jar",
        "aws-msk-iam-auth-2.3.2.jar",
        "commons-pool2-2.11.1.jar",
        "kafka-clients-3.4.1.jar",
        "spark-avro_2.12-3.5.7.jar",
        "spark-sql-kafka-0-10_2.12-3.5.7.jar",
        "spark-token-provider-kafka-0-10_2.12-3.5.7.jar",
    ]
    wheel, *modules = arguments["--additional-python-modules"].split(",")
    assert wheel == f"{ARTIFACTS}/streaming_etl-{release.version}-py3-none-any.whl"
    assert arguments["--python-modules-installer-option"] == "--no-deps"
    assert modules == list(release.glue_python_modules)


def test_glue_python_modules_pin_what_glue_lacks_within_the_projects_ranges(
    release: Release,
) -> None:
    pins = {
        canonicalize_name(Requirement(m).name): Requirement(m) for m in release.glue_python_modules
    }
    # none of what Glue provides; what the project needs, and what those need (--no-deps)
    assert not set(pins) & deploy.GLUE_PYTHON_PROVIDED
    assert {"fastavro", "pydantic", "pydantic-core", "pydantic-settings", "croniter"} <= set(pins)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in project:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name in deploy.GLUE_PYTHON_PROVIDED:
            continue
        (version,) = (s.version for s in pins[name].specifier)
        assert requirement.specifier.contains(version), (text, version)


def test_glue_refuses_hudi_on_a_glue_with_hudi_0x(
    conf_with: Callable[..., Path], release: Release
) -> None:
    old = deployment(conf_with("emr.yaml", deploy__glue={"role": "etl"}), release)
    with pytest.raises(DeployError, match=r"deploy.glue.glue_version: pipelines.customers"):
        deploy.glue_jobs(old)
    new = deployment(
        conf_with("emr.yaml", deploy__glue={"role": "etl", "glue_version": "5.1"}), release
    )
    jobs = {r.params["Name"]: r.params for r in deploy.glue_jobs(new)}
    assert jobs["customers-ingest"]["DefaultArguments"]["--datalake-formats"] == "hudi,iceberg"


def test_glue_conf_refuses_whitespace_it_cannot_carry(
    conf_with: Callable[..., Path], release: Release
) -> None:
    spaced = deployment(
        conf_with("glue.yaml", spark__conf={"spark.driver.extraJavaOptions": "-Da=1 -Db=2"}),
        release,
    )
    with pytest.raises(DeployError, match=r"^spark.conf.spark.driver.extraJavaOptions: "):
        deploy.glue_jobs(spaced)


# ---- schedules ----------------------------------------------------------------------------


def test_glue_triggers_start_the_formats_maintenance_job_with_task_and_pipeline(
    glue: Deployment, glue_workdir: Path
) -> None:
    jobs = _glue_jobs(glue)
    triggers = deploy.glue_triggers(glue)
    expected = {
        # customers writes Delta: its orphans task is VACUUM's (expire), not scheduled
        "customers-compact": ("cron(0 3 * * ? *)", "delta"),
        "customers-expire": ("cron(30 3 * * ? *)", "delta"),
        "orders-compact": ("cron(0 0/6 * * ? *)", "iceberg"),
        "orders-expire": ("cron(30 2 * * ? *)", "iceberg"),
        "orders-orphans": ("cron(0 4 ? * 1 *)", "iceberg"),
    }
    assert {
        t.params["Name"]: (
            t.params["Schedule"],
            t.params["Actions"][0]["JobName"].removeprefix("maintain-"),
        )
        for t in triggers
    } == expected
    for trigger in triggers:
        check(trigger)
        params = trigger.params
        assert (params["Type"], params["StartOnCreation"]) == ("SCHEDULED", True)
        (action,) = params["Actions"]
        pipeline, task = params["Name"].split("-")
        arguments = {**jobs[action["JobName"]]["DefaultArguments"], **action["Arguments"]}
        fmt = expected[params["Name"]][1]
        assert glue_maintain.maintain_argv(glue_argv(arguments)) == [
            "--conf", "glue.yaml", "--pipeline", pipeline, "--task", task, "--format", fmt,
        ]  # fmt: skip
    assert triggers[0].file_name == "glue-create-trigger-customers-compact.json"


def test_scheduler_schedules_start_emr_serverless_maintenance_runs(emr: Deployment) -> None:
    schedules = deploy.scheduler_schedules(emr)
    # customers writes Hudi: maintained inline by its stream, not scheduled
    assert [s.params["Name"] for s in schedules] == [
        f"{p}-{t}" for p in ("orders", "payments") for t in ("compact", "expire", "orphans")
    ]
    for schedule in schedules:
        check(schedule)
        params = schedule.params
        pipeline, task = params["Name"].split("-")
        cron = getattr(emr.settings.pipelines[pipeline].maintenance, task).schedule
        assert params["ScheduleExpression"] == aws_cron(cron)
        assert params["ScheduleExpressionTimezone"] == "UTC"
        assert params["GroupName"] == "streaming-etl"
        target = params["Target"]
        assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:emrserverless:startJobRun"
        assert target["RoleArn"].endswith(":role/streaming-etl-scheduler")
        sdk_run = json.loads(target["Input"])
        # the SDK's member names (PascalCase), map keys (Spark properties) untouched
        assert {"ApplicationId", "ExecutionRoleArn", "JobDriver", "ClientToken"} <= set(sdk_run)
        assert "EntryPoint" in sdk_run["JobDriver"]["SparkSubmit"]
        run = botocore_names(sdk_run, "emr-serverless", "StartJobRun")
        assert deploy.sdk_input("emr-serverless", "StartJobRun", run) == sdk_run
        # each invocation's own token, filled in by the scheduler
        assert run["clientToken"] == "<aws.scheduler.execution-id>"
        run["clientToken"] = str(uuid.uuid4())
        check_request("emr-serverless", "StartJobRun", run)
        assert run["mode"] == "BATCH"
        job = maintain.parse_args(run["jobDriver"]["sparkSubmit"]["entryPointArguments"])
        assert (job.conf, job.task, job.pipelines) == ("emr.yaml", task, [pipeline])
    assert schedules[0].params["ScheduleExpression"] == "cron(15 0/4 * * ? *)"


@pytest.mark.parametrize(
    ("unix", "aws"),
    [
        ("0 3 * * *", "cron(0 3 * * ? *)"),
        ("15 */4 * * *", "cron(15 0/4 * * ? *)"),
        ("*/15 * * * *", "cron(0/15 * * * ? *)"),
        ("5/20 * * * *", "cron(5/20 * * * ? *)"),
        ("0-30/10 * * * *", "cron(0,10,20,30 * * * ? *)"),
        ("0,30 8-18 * * *", "cron(0,30 8-18 * * ? *)"),
        ("50-10 * * * *", "cron(50,51,52,53,54,55,56,57,58,59,0,1,2,3,4,5,6,7,8,9,10 * * * ? *)"),
        # day-of-week: Unix 0-7 (0 and 7 Sunday) -> AWS 1-7 (1 Sunday)
        ("0 4 * * 0", "cron(0 4 ? * 1 *)"),
        ("0 4 * * 7", "cron(0 4 ? * 1 *)"),
        ("0 4 * * 6", "cron(0 4 ? * 7 *)"),
        ("0 9 * * 1-5", "cron(0 9 ? * 2-6 *)"),
        ("0 9 * * MON-FRI", "cron(0 9 ? * 2-6 *)"),
        ("0 9 * * sat,sun", "cron(0 9 ? * 1,7 *)"),
        ("0 9 * * 5-7", "cron(0 9 ? * 1,6-7 *)"),
        ("0 9 * * 6-1", "cron(0 9 ? * 1-2,7 *)"),
        # no steps in AWS's day-of-week: the days themselves
        ("0 9 * * */2", "cron(0 9 ? * 1,3,5,7 *)"),
        ("0 9 * * 1/2", "cron(0 9 ? * 2,4,6 *)"),
        ("0 9 * * 0-7", "cron(0 9 ? * * *)"),
        ("0 9 * * 5#3", "cron(0 9 ? * 6#3 *)"),
        ("0 9 * * FRI#3", "cron(0 9 ? * 6#3 *)"),
        # day-of-month and month
        ("0 0 1,15 * *", "cron(0 0 1,15 * ? *)"),
        ("0 0 */2 * *", "cron(0 0 1/2 * ? *)"),
        ("0 0 1-10/3 * *", "cron(0 0 1,4,7,10 * ? *)"),
        ("0 0 L * *", "cron(0 0 L * ? *)"),
        ("0 0 15W * *", "cron(0 0 15W * ? *)"),
        ("0 0 1 */3 *", "cron(0 0 1 1/3 ? *)"),
        ("0 0 1 jan,jul *", "cron(0 0 1 1,7 ? *)"),
        ("0 0 ? * 1", "cron(0 0 ? * 2 *)"),
        # macros
        ("@hourly", "cron(0 * * * ? *)"),
        ("@daily", "cron(0 0 * * ? *)"),
        ("@weekly", "cron(0 0 ? * 1 *)"),
        ("@monthly", "cron(0 0 1 * ? *)"),
        ("@yearly", "cron(0 0 1 1 ? *)"),
        ("@annually", "cron(0 0 1 1 ? *)"),
    ],
)
def test_aws_cron(unix: str, aws: str) -> None:
    assert aws_cron(unix) == aws


@pytest.mark.parametrize(
    ("unix", "message"),
    [
        ("0 0 1 * 1", "day-of-month '1' and day-of-week '1' are both restricted"),
        ("0 0 */2 * MON", "day-of-month '*/2' and day-of-week 'MON' are both restricted"),
        ("0 0 1,L * *", "day-of-month '1,L': AWS cron takes L and W alone"),
        ("R 0 * * *", "minute 'R': AWS cron cannot express it"),
        ("0 0 * *", "expected a cron expression of five fields"),
    ],
)
def test_aws_cron_refuses_what_it_cannot_express(unix: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        aws_cron(unix)


def test_an_inexpressible_schedule_names_pipeline_and_task(
    conf_with: Callable[..., Path], release: Release
) -> None:
    path = conf_with(
        "emr.yaml", pipelines__payments__maintenance={"expire": {"schedule": "0 2 1 * 0"}}
    )
    emr = deployment(path, release)
    message = r"^pipelines.payments.maintenance.expire.schedule: '0 2 1 \* 0': day-of-month"
    with pytest.raises(DeployError, match=message):
        deploy.scheduler_schedules(emr)
    # a crontab takes it as it is
    assert "0 2 1 * 0 cd " in deploy.crontab(emr.settings, conf="c.yaml", workdir="/w", python="p")


def test_crontab_runs_maintain_on_each_tasks_schedule() -> None:
    settings = load_settings(CONF / "local.yaml", env={})
    text = deploy.crontab(
        settings,
        conf="conf/local.yaml",
        workdir="/srv/etl 100%",
        python="/srv/etl/.venv/bin/python",
    )
    lines = text.splitlines()
    assert lines[1] == "CRON_TZ=UTC"
    jobs = [line for line in lines if not line.startswith(("#", "CRON_TZ="))]
    runs = set()
    for line in jobs:
        fields = line.split(" ", 5)
        # cron turns a bare % into a newline: escaped
        command = shlex.split(fields[5].replace("\\%", "%"))
        assert command[:4] == ["cd", "/srv/etl 100%", "&&", "/srv/etl/.venv/bin/python"]
        assert command[4:6] == ["-m", "jobs.maintain"]
        job = maintain.parse_args(command[6:])
        (pipeline,) = job.pipelines
        assert job.conf == "conf/local.yaml"
        schedule = getattr(settings.pipelines[pipeline].maintenance, job.task).schedule
        assert " ".join(fields[:5]) == schedule
        runs.add((pipeline, job.task))
    assert "\\%" in jobs[0]
    assert runs == {
        ("orders", "compact"),
        ("orders", "expire"),
        ("orders", "orphans"),
        ("orders_delta", "compact"),
        ("orders_delta", "expire"),
    }
    assert "# pipelines.orders_hudi.maintenance.compact: not scheduled: a Hudi table" in text


# ---- errors ---------------------------------------------------------------------------------


def test_a_missing_section_is_named(emr: Deployment, glue: Deployment, release: Release) -> None:
    local = deployment("local.yaml", release)
    with pytest.raises(DeployError, match=r"^deploy: expected a `deploy` section"):
        deploy.glue_jobs(local)
    with pytest.raises(DeployError, match=r"^deploy.glue: expected this section"):
        deploy.glue_jobs(emr)
    with pytest.raises(DeployError, match=r"^deploy.glue: expected this section"):
        deploy.glue_triggers(emr)
    with pytest.raises(DeployError, match=r"^deploy.emr: expected this section"):
        deploy.emr_ingest(glue)
    with pytest.raises(DeployError, match=r"^deploy.emr_serverless: expected this section"):
        deploy.serverless_ingest(glue, client_token="t")
    with pytest.raises(DeployError, match=r"^deploy.scheduler: expected this section"):
        deploy.scheduler_schedules(glue)


def test_settings_for_a_laptop_are_not_deployed(
    conf_with: Callable[..., Path], release: Release
) -> None:
    local = deployment(
        conf_with("local.yaml", deploy={"artifacts": ARTIFACTS, "emr": {"cluster_id": "j-1"}}),
        release,
    )
    with pytest.raises(DeployError, match=r"^spark.master: expected null for EMR"):
        deploy.emr_ingest(local)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deploy__artifacts": "my-artifacts/etl"},
         "deploy.artifacts: Value error, expected an s3://bucket/prefix URI"),
        ({"deploy__emr__cluster_id": "cluster-1"}, "deploy.emr.cluster_id: String should match"),
        ({"deploy__emr_serverless__execution_role_arn": "etl-role"},
         "deploy.emr_serverless.execution_role_arn: String should match"),
        ({"deploy__emr_serverless": None},
         "deploy: Value error, `scheduler` schedules EMR Serverless job runs: it needs an "
         "`emr_serverless` section"),
        ({"deploy__glue": {"role": "r", "worker_type": "G.3X"}}, "deploy.glue.worker_type: "),
        ({"deploy__glue": {"role": "r", "number_of_workers": 1}},
         "deploy.glue.number_of_workers: Input should be greater than or equal to 2"),
        ({"deploy__name_prefix": "prod etl-"}, "deploy.name_prefix: String should match"),
    ],
)  # fmt: skip
def test_deploy_settings_errors_name_the_key(
    conf_with: Callable[..., Path], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(conf_with("emr.yaml", **changes), env={})


def test_deploy_settings_take_env_overrides() -> None:
    env = {"ETL__DEPLOY__GLUE__NUMBER_OF_WORKERS": "8", "ETL__DEPLOY__NAME_PREFIX": "prod-"}
    settings: Settings = load_settings(CONF / "glue.yaml", env=env)
    assert settings.deploy is not None and settings.deploy.glue is not None
    assert (settings.deploy.glue.number_of_workers, settings.deploy.name_prefix) == (8, "prod-")
    assert settings.deploy.artifacts == ARTIFACTS


def test_name_prefix_names_every_job_trigger_and_run(
    conf_with: Callable[..., Path], release: Release
) -> None:
    prefixed = deployment(conf_with("glue.yaml", deploy__name_prefix="prod-"), release)
    jobs = deploy.glue_jobs(prefixed)
    triggers = deploy.glue_triggers(prefixed)
    assert all(r.params["Name"].startswith("prod-") for r in [*jobs, *triggers])
    job_names = {r.params["Name"] for r in jobs}
    assert {t.params["Actions"][0]["JobName"] for t in triggers} <= job_names


# ---- the release and the uploads ------------------------------------------------------------


def test_the_release_is_read_from_the_checkout(release: Release, tmp_path: Path) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # the installed metadata names the wheel that `pip wheel` builds from pyproject.toml
    assert release.version == pyproject["version"]
    assert release.wheel == f"streaming_etl-{pyproject['version']}-py3-none-any.whl"
    assert release.udf_jar == "etl-udf-1.0.0.jar"
    assert not any(jar.startswith(("iceberg-", "delta-", "etl-udf")) for jar in release.glue_jars)
    with pytest.raises(DeployError, match=r"no etl-udf-\*.jar in .*: run `make jars`"):
        read_release(jars_dir=tmp_path)


def test_uploads_copy_every_object_the_requests_refer_to(emr: Deployment, glue: Deployment) -> None:
    for target in (emr, glue):
        requests: list[ApiRequest] = []
        if target is emr:
            requests += [deploy.emr_ingest(target), deploy.emr_maintain(target, task="all")]
            requests += deploy.serverless_ingest(target, client_token="t")
            requests += deploy.scheduler_schedules(target)
        else:
            requests += [*deploy.glue_jobs(target), *deploy.glue_triggers(target)]
        script = deploy.uploads(
            target, conf_path=f"conf/{target.conf_file}", jars_dir=".jars/spark"
        )
        lines = script.splitlines()
        copied = {shlex.split(line)[-1] for line in lines if line.startswith("aws ")}
        # the Python environment is built apart: the script names it
        serverless = target.deploy.emr_serverless
        if serverless is not None and serverless.python_archive is not None:
            assert lines[-1].endswith(f"python_archive: {serverless.python_archive}")
            copied.add(serverless.python_archive)
        referred = {
            uri
            for request in requests
            for text in strings(request.params)
            for uri in re.findall(r"s3://my-artifacts/[^\s,#\"]+", text)
        }
        assert referred
        assert referred <= copied, referred - copied


def test_request_file_names_and_commands(emr: Deployment, glue: Deployment) -> None:
    job = deploy.glue_jobs(glue)[0]
    assert job.file_name == "glue-create-job-customers-ingest.json"
    assert job.command("out/x.json") == "aws glue create-job --cli-input-json file://out/x.json"
    steps = deploy.emr_ingest(emr)
    # `aws emr add-steps` has its own arguments: boto3 takes the request as it is
    assert "boto3.client('emr').add_job_flow_steps(**json.load(" in steps.command("x.json")
