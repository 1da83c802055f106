"""What every target shares: the ``Deployment`` (settings, file name, release), the
``ApiRequest`` it renders, and the choice and grouping of the pipelines a request covers."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from etl.config import DeploySettings, Settings, TableFormat
from etl.deploy.release import Release
from etl.exceptions import DeployError

_S = TypeVar("_S")

Request = dict[str, Any]


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


def required_section(section: _S | None, key: str, *, holds: str, target: str) -> _S:
    """A ``deploy`` section a target needs.

    Raises:
        DeployError: It is not set (the message names the key and what it holds).
    """
    if section is None:
        raise DeployError(f"deploy.{key}: expected this section ({holds}) for {target}, found none")
    return section


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


def _kebab(operation: str) -> str:
    """``AddJobFlowSteps`` -> ``add-job-flow-steps``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", operation).lower()
