"""Running each benchmark case in a process of its own (one Spark session hosts one format
family), collecting the ``RESULT`` line each prints."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

RESULT = "RESULT "


def run_in_processes(module: str, cases: list[str], passed: list[str]) -> dict[str, Any] | None:
    """Runs ``python -m module *passed --one CASE`` for each case, in turn.

    Returns:
        Each case's result, or None when one failed (its output is written to stderr).
    """
    results: dict[str, Any] = {}
    for case in cases:
        command = [sys.executable, "-m", module, *passed, "--one", case]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
        if done.returncode or not lines:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            print(f"case {case} failed (exit {done.returncode})", file=sys.stderr)
            return None
        results[case] = json.loads(lines[-1].removeprefix(RESULT))
        print(f"{case}: {json.dumps(results[case])}", flush=True)
    return results


def print_result(result: dict[str, Any]) -> None:
    """Prints a case's result for ``run_in_processes`` (in the case's own process)."""
    print(RESULT + json.dumps(result), flush=True)
