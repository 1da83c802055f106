"""What the requests refer to, copied into ``deploy.artifacts``.

Layout under ``deploy.artifacts`` (``uploads`` renders the copy commands)::

    <artifacts>/streaming_etl-<version>-py3-none-any.whl
    <artifacts>/<settings file name>          e.g. emr.yaml
    <artifacts>/jobs/<script>.py              ingest, maintain, forget and their glue_ wrappers
    <artifacts>/jars/<jar>                    the etl-udf jar; for Glue the Kafka/Avro/MSK jars
"""

from __future__ import annotations

import shlex

from etl.deploy.base import Deployment

SCRIPTS = ("ingest", "maintain", "forget", "glue_ingest", "glue_maintain", "glue_forget")


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
