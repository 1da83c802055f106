"""Free loopback ports and process liveness helpers shared by the local stack components."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets are held open until every port is picked so the kernel cannot hand out the
    same ephemeral port twice. There is still a short window before the server binds them,
    which is acceptable for a developer stack.

    Args:
        count: How many ports to return.

    Returns:
        The port numbers, in the order they were allocated.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    """Return one TCP port that is free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def port_open(port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a running (not zombie) process.

    A stack started by ``python -m devtools.devstack up`` is reparented once the CLI exits, and
    the new parent is not guaranteed to reap it promptly, so a plain ``kill(pid, 0)`` would
    report a zombie as alive.

    Args:
        pid: The process id.

    Returns:
        True if the process exists and is not a zombie.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): trust kill(0)
    # the state letter follows the parenthesised command name, which may contain spaces
    return stat[stat.rindex(")") + 2 :].split(" ", 1)[0] not in ("Z", "X")


def pid_cmdline(pid: int) -> str | None:
    """Return the command line of ``pid`` joined by spaces, or None if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def terminate_pid(pid: int, timeout: float = 30.0) -> bool:
    """Stop a process that is not necessarily our child: SIGTERM, then SIGKILL after ``timeout``.

    Args:
        pid: The process id.
        timeout: Seconds to wait for a graceful exit before sending SIGKILL.

    Returns:
        True if the process had to be killed with SIGKILL.
    """
    if not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone or a zombie; True if that happened within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)
