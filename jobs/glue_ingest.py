"""AWS Glue (5.x) streaming job script: runs ``jobs.ingest`` with the job's own arguments.

Glue adds arguments of its own (``--JOB_NAME``, ``--JOB_RUN_ID``, ``--TempDir``, ...) that the
ingest job does not know, so only ours are passed on. Job parameters to set:
``--conf`` (a YAML shipped with ``--extra-files``, so it sits in the working directory),
optionally ``--pipeline``; the wheel of this project via ``--additional-python-modules``.
"""

from __future__ import annotations

import sys

from jobs import ingest

_OURS = ("--conf", "--pipeline", "--log-level")


def ingest_argv(argv: list[str]) -> list[str]:
    """Keeps our ``--flag value`` / ``--flag=value`` pairs, dropping Glue's own arguments."""
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag = arg.split("=", 1)[0]
        if flag in _OURS:
            if "=" in arg:
                kept.append(arg)
            elif i + 1 < len(argv):
                kept += [arg, argv[i + 1]]
                i += 1
        i += 1
    return kept


def main(argv: list[str] | None = None) -> int:
    """Runs the ingest job with the Glue job's arguments."""
    return ingest.main(ingest_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
