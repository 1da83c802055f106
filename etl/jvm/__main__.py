"""``python -m etl.jvm [--format hudi] [JARS_DIR]``: print the spark-submit flags (see
``etl.jvm``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etl.jvm import JARS_DIR, submit_flags


def main(argv: list[str] | None = None) -> int:
    """Prints the flags; JARS_DIR is where the UDF jar was built, each ``--format`` adds
    that table format's own artifacts (Hudi's bundle) to ``--packages``."""
    parser = argparse.ArgumentParser(prog="python -m etl.jvm", description=__doc__)
    parser.add_argument("jars_dir", nargs="?", type=Path, default=JARS_DIR)
    parser.add_argument("--format", action="append", default=[], dest="formats")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        print(submit_flags(args.jars_dir, tuple(args.formats)))
    except ValueError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
