"""AWS Glue (5.x) streaming job script: runs ``jobs.ingest`` with this project's job parameters.

Glue starts the script with every job parameter in ``sys.argv`` as ``--key value`` (a bare
``--key`` when the value is empty): its own (``--JOB_NAME``, ``--TempDir``, ``--conf``, ...)
mixed with ours. Ours all start with ``--etl-``, a prefix none of Glue's special or internal
parameters use. They cannot reuse ``jobs.ingest``'s names: ``--conf`` is Glue's own parameter
for Spark settings, and job parameters are a map, so one key cannot carry both.

Job parameters (``--etl-x value`` or ``--etl-x=value``):

* ``--etl-config`` (required): the settings YAML by file name, e.g. ``glue.yaml``. Ship the
  file with ``--extra-files s3://.../glue.yaml``: Glue copies those files to the script's
  working directory before it starts. An ``s3://`` URI is refused: nothing downloads it.
* ``--etl-pipeline``: the pipelines to run, comma-separated; default every pipeline in the file.
* ``--etl-log-level``: this project's log level (default ``INFO``).

They become ``jobs.ingest``'s command line (``--conf``, ``--pipeline``, ``--log-level``);
every other argument is Glue's and is left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from etl.exceptions import EtlError
from jobs import ingest

PREFIX = "--etl-"
CONFIG = "--etl-config"
PIPELINE = "--etl-pipeline"
LOG_LEVEL = "--etl-log-level"
# the parameters every job script takes
COMMON = (CONFIG, PIPELINE, LOG_LEVEL)
_OURS = COMMON

# Glue parameters that always carry a value. The token after one of them is its value even
# when it starts with "--" (pip options in --python-modules-installer-option), so it is never
# read as a parameter of ours. The --enable-* flags are absent on purpose: Glue passes them bare
# when their value is empty, and then the next token is the next parameter.
_GLUE_VALUED = frozenset(
    {
        "--JOB_NAME",
        "--JOB_ID",
        "--JOB_RUN_ID",
        "--TempDir",
        "--RedshiftTempDir",
        "--conf",
        "--class",
        "--scriptLocation",
        "--job-language",
        "--job-bookmark-option",
        "--job-bookmark-from",
        "--job-bookmark-to",
        "--continuation-option",
        "--extra-files",
        "--extra-py-files",
        "--extra-jars",
        "--user-jars-first",
        "--additional-python-modules",
        "--python-modules-installer-option",
        "--datalake-formats",
        "--continuous-log-logGroup",
        "--continuous-log-logStreamPrefix",
        "--continuous-log-conversionPattern",
        "--spark-event-logs-path",
        "--encryption-type",
        "--executor-cores",
        "--customer-driver-env-vars",
        "--customer-executor-env-vars",
        "--auto-scale-within-microbatch",
        "--disable-proxy-v2",
        "--redirectUri",
    }
)


class JobParameterError(EtlError, ValueError):
    """A job parameter of ours is missing, unknown, repeated or unusable."""


def ingest_argv(argv: list[str]) -> list[str]:
    """Builds ``jobs.ingest``'s command line from the arguments Glue passes to the script.

    Args:
        argv: The script's arguments (without the program name), Glue's and ours mixed.

    Returns:
        ``["--conf", file, "--pipeline", name, ..., "--log-level", level]``; the pipeline
        and log-level parts only when given.

    Raises:
        JobParameterError: ``--etl-config`` is missing, is a URI or names no file in the
            working directory; an ``--etl-*`` parameter is unknown, repeated or has no value.
    """
    return common_argv(our_parameters(argv, _OURS))


def common_argv(ours: dict[str, list[str]]) -> list[str]:
    """The settings file, pipelines and log level as a job's command line (every job takes
    these; ``our_parameters`` gives ``ours``).

    Raises:
        JobParameterError: ``--etl-config`` is missing, is a URI or names no file in the
            working directory; a pipeline name is empty.
    """
    config = single(ours, CONFIG)
    if config is None:
        raise JobParameterError(
            f"{CONFIG}: required job parameter missing (the settings YAML shipped with "
            "--extra-files, by file name, e.g. glue.yaml)"
        )
    if "://" in config:
        raise JobParameterError(
            f"{CONFIG}: {config} is a URI, but the settings are read from a local file: ship "
            f"it with --extra-files {config} and set {CONFIG} {config.rsplit('/', 1)[-1]}"
        )
    if not Path(config).is_file():
        raise JobParameterError(
            f"{CONFIG}: no file {config} in the working directory {Path.cwd()} (ship it with "
            "--extra-files)"
        )
    result = ["--conf", config]
    for value in ours.get(PIPELINE, []):
        names = [name.strip() for name in value.split(",")]
        if not all(names):
            raise JobParameterError(f"{PIPELINE}: empty pipeline name in {value!r}")
        for name in names:
            result += ["--pipeline", name]
    level = single(ours, LOG_LEVEL)
    if level is not None:
        result += ["--log-level", level]
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the ingest job with the Glue job's parameters.

    Args:
        argv: The script's arguments (without the program name); ``sys.argv[1:]`` if None.

    Returns:
        ``jobs.ingest.main``'s exit code, or 2 when a job parameter of ours is wrong.
    """
    try:
        args = ingest_argv(sys.argv[1:] if argv is None else argv)
    except JobParameterError as err:
        print(f"glue_ingest: error: {err}", file=sys.stderr)
        return 2
    return ingest.main(args)


def our_parameters(argv: list[str], known: tuple[str, ...]) -> dict[str, list[str]]:
    """Our ``--etl-*`` parameters (those ``known``) and their values, Glue's skipped with
    their values.

    Raises:
        JobParameterError: An ``--etl-*`` parameter is unknown or has no value.
    """
    ours: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        i += 1
        if not key.startswith("--"):
            continue  # a value whose parameter was not seen; nothing of ours
        if not key.startswith(PREFIX):
            if not eq and i < len(argv) and (key in _GLUE_VALUED or not argv[i].startswith("--")):
                i += 1  # Glue's value
            continue
        if key not in known:
            raise JobParameterError(f"{key}: unknown job parameter (known: {', '.join(known)})")
        if not eq:
            if i == len(argv) or argv[i].startswith("--"):
                raise JobParameterError(f"{key}: job parameter without a value")
            value = argv[i]
            i += 1
        if not value:
            raise JobParameterError(f"{key}: job parameter without a value")
        ours.setdefault(key, []).append(value)
    return ours


def single(ours: dict[str, list[str]], key: str) -> str | None:
    """The one value of a parameter that may be given once."""
    values = ours.get(key, [])
    if len(values) > 1:
        raise JobParameterError(f"{key}: given {len(values)} times: {', '.join(values)}")
    return values[0] if values else None


if __name__ == "__main__":
    sys.exit(main())
