"""``python -m devtools.devstack up|down|status``: run the local stack in the background.

``up`` starts a Kafka broker and a moto server that outlive the command, records their
pids, ports and the generated SCRAM password in ``<workdir>/state.json`` (mode 0600) and
prints the endpoints. ``down`` stops them; ``status`` exits 0 only if both are running.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.devstack.stack import (
    DEFAULT_SCRAM_USERNAME,
    LocalStack,
    component_pids,
    is_running,
    read_state,
    state_path,
    stop_from_state,
    write_state,
)
from etl.exceptions import LocalStackError

DEFAULT_WORKDIR = Path(".stack")
DEFAULT_BROKER_JARS = Path(".jars/broker")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns:
        The process exit code: 0 on success (for ``status``: both components running),
        1 otherwise.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    workdir: Path = args.workdir.resolve()
    try:
        if args.command == "up":
            return _up(workdir, args.broker_jars, args.scram_username)
        if args.command == "down":
            return _down(workdir)
        return _status(workdir)
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devstack",
        description="Run the embedded local stack (Kafka broker + moto) in the background.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="stack directory (default .stack)"
    )
    parser.add_argument(
        "--broker-jars",
        type=Path,
        default=DEFAULT_BROKER_JARS,
        help="Kafka broker classpath from `make jars` (default .jars/broker)",
    )
    parser.add_argument(
        "--scram-username",
        default=DEFAULT_SCRAM_USERNAME,
        help=f"SCRAM user created in the broker (default {DEFAULT_SCRAM_USERNAME})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def _up(workdir: Path, broker_jars: Path, scram_username: str) -> int:
    """Start the stack unless it already runs, save its state and print its endpoints."""
    state = read_state(workdir)
    if state is not None:
        if _all_running(state):
            print(f"local stack already up (state in {state_path(workdir)})")
            _print_endpoints(state)
            return 0
        # half-dead from a crash or a reboot: clear it rather than leave a stray process
        stop_from_state(state)
        state_path(workdir).unlink(missing_ok=True)
        print("found a stale local stack state; stopped its leftovers", file=sys.stderr)
    stack = LocalStack(workdir, broker_jars, scram_username=scram_username)
    stack.start()
    try:
        state = stack.detach()
    except BaseException:
        stack.stop()
        raise
    try:
        path = write_state(workdir, state)
    except BaseException:
        # without a state file `down` could not find them
        stop_from_state(state)
        raise
    print(f"local stack up (state in {path})")
    _print_endpoints(state)
    return 0


def _down(workdir: Path) -> int:
    """Stop the recorded processes and remove the state file."""
    state = read_state(workdir)
    if state is None:
        print(f"no local stack state in {workdir}: nothing to stop")
        return 0
    for name, was_running in stop_from_state(state).items():
        print(f"{name}: {'stopped' if was_running else 'was not running'}")
    state_path(workdir).unlink(missing_ok=True)
    return 0


def _status(workdir: Path) -> int:
    """Print whether each recorded process is alive; 0 only if all are."""
    state = read_state(workdir)
    if state is None:
        print(f"local stack down (no state in {workdir})")
        return 1
    all_up = True
    for name, (pid, marker) in component_pids(state).items():
        alive = is_running(pid, marker)
        all_up &= alive
        print(f"{name}: pid {pid} {'running' if alive else 'NOT running'}")
    if all_up:
        _print_endpoints(state)
    return 0 if all_up else 1


def _all_running(state: dict[str, Any]) -> bool:
    """Tell whether every process recorded in ``state`` is alive."""
    return all(is_running(pid, marker) for pid, marker in component_pids(state).values())


def _print_endpoints(state: dict[str, Any]) -> None:
    """Print the endpoints; the password stays in the state file."""
    print(f"kafka plaintext: {state['broker']['bootstrap_plaintext']}")
    print(f"kafka scram:     {state['broker']['bootstrap_scram']} (SASL_PLAINTEXT SCRAM-SHA-512)")
    print(f"scram username:  {state['scram_username']} (password in {state['workdir']}/state.json)")
    print(f"aws endpoint:    {state['moto']['endpoint']} (glue, s3, secretsmanager)")


if __name__ == "__main__":
    sys.exit(main())
