"""AWS Glue (5.x) job script (type ``glueetl``): runs ``jobs.maintain`` with the job's parameters.

Glue passes every job parameter in ``sys.argv``; ours start with ``--etl-`` (see
``jobs.glue_ingest``, whose parsing this shares):

* ``--etl-config`` (required), ``--etl-pipeline``, ``--etl-log-level``: as for the ingest job;
* ``--etl-task`` (required): ``compact``, ``expire``, ``orphans`` or ``all``;
* ``--etl-format``: maintain the pipelines writing this format (one format per run);
* ``--etl-dry-run``: ``true`` to report what would be done and change nothing.

A Glue trigger on the task's ``schedule`` starts it (issue 12 renders them).
"""

from __future__ import annotations

import sys

from jobs import maintain
from jobs.glue_ingest import COMMON, JobParameterError, common_argv, our_parameters, single

TASK = "--etl-task"
FORMAT = "--etl-format"
DRY_RUN = "--etl-dry-run"
_OURS = (*COMMON, TASK, FORMAT, DRY_RUN)
_BOOLEANS = {"true": True, "false": False}


def maintain_argv(argv: list[str]) -> list[str]:
    """Builds ``jobs.maintain``'s command line from the arguments Glue passes to the script.

    Raises:
        JobParameterError: A parameter of ours is missing, unknown, repeated or unusable.
    """
    ours = our_parameters(argv, _OURS)
    result = common_argv(ours)
    task = single(ours, TASK)
    if task is None:
        raise JobParameterError(
            f"{TASK}: required job parameter missing (compact, expire, orphans or all)"
        )
    result += ["--task", task]
    fmt = single(ours, FORMAT)
    if fmt is not None:
        result += ["--format", fmt]
    dry_run = single(ours, DRY_RUN)
    if dry_run is not None:
        if dry_run.lower() not in _BOOLEANS:
            raise JobParameterError(f"{DRY_RUN}: expected true or false, found {dry_run!r}")
        if _BOOLEANS[dry_run.lower()]:
            result.append("--dry-run")
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the maintenance job with the Glue job's parameters.

    Returns:
        ``jobs.maintain.main``'s exit code, or 2 when a job parameter of ours is wrong.
    """
    try:
        args = maintain_argv(sys.argv[1:] if argv is None else argv)
    except JobParameterError as err:
        print(f"glue_maintain: error: {err}", file=sys.stderr)
        return 2
    return maintain.main(args)


if __name__ == "__main__":
    sys.exit(main())
