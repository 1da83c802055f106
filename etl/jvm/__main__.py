"""``python -m etl.jvm [JARS_DIR]``: print the spark-submit flags (see ``etl.jvm``)."""

from __future__ import annotations

import sys
from pathlib import Path

from etl.jvm import JARS_DIR, submit_flags


def main(argv: list[str] | None = None) -> int:
    """Prints the flags; the optional argument is where the UDF jar was built."""
    args = sys.argv[1:] if argv is None else argv
    print(submit_flags(Path(args[0]) if args else JARS_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
