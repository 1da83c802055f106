"""moto in server mode: one local HTTP endpoint for Glue Schema Registry, S3 and Secrets Manager.

moto's server picks the emulated service from each request's SigV4 credential scope, so
every boto3 client of the project can share the one ``endpoint_url``. State lives in the
server process's memory only: a restart starts empty.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from devtools.devstack.lifecycle import Service
from devtools.devstack.ports import LOOPBACK, free_port
from etl.exceptions import LocalStackError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class MotoServer(Service):
    """A ``python -m moto.server`` subprocess bound to 127.0.0.1.

    The port is chosen when the object is created and kept across ``stop()`` / ``start()``.
    The process runs in its own session so it can outlive the Python process that started
    it (the CLI's ``up``).

    Example:
        >>> with MotoServer() as moto:
        ...     glue = boto3.client("glue", endpoint_url=moto.endpoint, region_name="us-east-1")
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        """Prepare (but do not start) a moto server.

        Args:
            port: The loopback port; by default a free one is chosen now.
            log_path: File for the server's output (request log, tracebacks); by default
                the output is discarded.
            start_timeout: Seconds :meth:`start` waits for the server to answer HTTP.
        """
        self.port = port if port is not None else free_port()
        self.log_path = log_path.resolve() if log_path is not None else None
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the ``endpoint_url`` for boto3 clients."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.pid is not None

    def start(self) -> None:
        """Launch the server and wait until it answers HTTP. Does nothing if it runs.

        Raises:
            LocalStackError: The server exited or did not answer within the timeout.
        """
        if self.running:
            return
        started = time.monotonic()
        out: IO[bytes] | int
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        else:
            out = subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # own session: survives the CLI's exit and the terminal's Ctrl-C
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        log.info("moto server pid %d starting on %s", self._proc.pid, self.endpoint)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        log.info("moto server ready in %.1fs on %s", time.monotonic() - started, self.endpoint)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout``. Does nothing if stopped.

        Args:
            timeout: Seconds to wait for a graceful exit.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.info("moto server pid %d stopped (exit code %s)", proc.pid, proc.returncode)

    def detach(self) -> int:
        """Forget the running process without stopping it and return its pid.

        Returns:
            The server's pid.

        Raises:
            LocalStackError: The server is not running.
        """
        pid = self.pid
        if pid is None:
            raise LocalStackError("the moto server is not running")
        self._proc = None
        return pid

    def _wait_ready(self, started: float) -> None:
        """Poll moto's own API until it answers (any HTTP status counts as up)."""
        deadline = started + self.start_timeout
        last_error = "no answer yet"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise LocalStackError(
                    f"the moto server exited with code {code} during start-up{self._log_hint()}"
                )
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"the moto server did not answer on {self.endpoint} within "
                    f"{self.start_timeout:.0f}s ({last_error}){self._log_hint()}"
                )
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.1)

    def _log_hint(self) -> str:
        """Return the tail of the server log, or where to find it, for error messages."""
        if self.log_path is None:
            return " (start it with log_path= to capture its output)"
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
        except OSError:
            return f" (no log at {self.log_path})"
        return f"\n--- tail of {self.log_path} ---\n" + "\n".join(tail)
