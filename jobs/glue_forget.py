"""AWS Glue (5.x) job script (type ``glueetl``): runs ``jobs.forget`` with the job's parameters.

Glue passes every job parameter in ``sys.argv``; ours start with ``--etl-`` (see
``jobs.glue_ingest``, whose parsing this shares):

* ``--etl-config`` (required), ``--etl-pipeline``, ``--etl-log-level``: as for the ingest job;
* ``--etl-request-id`` (required): the request's id;
* ``--etl-subjects-file`` (required): the subjects, one per line, as an ``s3://`` URI (a job
  parameter's value shows in the Glue console, so subject values are never passed inline);
* ``--etl-format``: erase from the pipelines writing this format (one format per run).
"""

from __future__ import annotations

import sys

from jobs import forget
from jobs.glue_ingest import COMMON, JobParameterError, common_argv, our_parameters, single

REQUEST_ID = "--etl-request-id"
SUBJECTS_FILE = "--etl-subjects-file"
FORMAT = "--etl-format"
_OURS = (*COMMON, REQUEST_ID, SUBJECTS_FILE, FORMAT)


def forget_argv(argv: list[str]) -> list[str]:
    """Builds ``jobs.forget``'s command line from the arguments Glue passes to the script.

    Raises:
        JobParameterError: A parameter of ours is missing, unknown, repeated or unusable.
    """
    ours = our_parameters(argv, _OURS)
    result = common_argv(ours)
    for key, option in ((REQUEST_ID, "--request-id"), (SUBJECTS_FILE, "--subjects-file")):
        value = single(ours, key)
        if value is None:
            raise JobParameterError(f"{key}: required job parameter missing")
        result += [option, value]
    fmt = single(ours, FORMAT)
    if fmt is not None:
        result += ["--format", fmt]
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the erasure job with the Glue job's parameters.

    Returns:
        ``jobs.forget.main``'s exit code, or 2 when a job parameter of ours is wrong.
    """
    try:
        args = forget_argv(sys.argv[1:] if argv is None else argv)
    except JobParameterError as err:
        print(f"glue_forget: error: {err}", file=sys.stderr)
        return 2
    return forget.main(args)


if __name__ == "__main__":
    sys.exit(main())
