"""Fault-injection helpers: a stoppable TCP proxy, tracked producing, process-tree kills.

Everything binds to 127.0.0.1 only, every loop is bounded, and everything started here can
be stopped (the proxy by ``stop()``, a job's process tree by ``kill_process_tree``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.devstack.lifecycle import Service
from devtools.devstack.ports import LOOPBACK, free_port, pid_alive, pid_cmdline

_BUFFER = 64 * 1024
_CLIENT_LOG = logging.getLogger("tests.faults.rdkafka")
_ACCEPT_POLL_S = 0.1
_JOIN_TIMEOUT_S = 5.0


class TcpProxy(Service):
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``; stoppable and restartable.

    ``stop()`` closes the listener and drops every open connection (both directions), so
    clients see refused connections until ``start()`` binds the same port again; the
    upstream server (and its in-memory state) is untouched.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        """Prepares (but does not start) the proxy; the port is chosen now and kept."""
        self.target_port = target_port
        self.port = port if port is not None else free_port()
        self.accepted = 0  # connections accepted over the proxy's lifetime
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the listener is open."""
        return self._listener is not None

    def start(self) -> None:
        """Binds the port (again) and accepts connections in a background thread."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        listener.settimeout(_ACCEPT_POLL_S)
        self._stopping.clear()
        self._listener = listener
        self._spawn(self._accept_loop, listener)

    def stop(self) -> None:
        """Closes the listener and every proxied connection; waits for the threads (bounded)."""
        listener, self._listener = self._listener, None
        self._stopping.set()
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
            threads, self._threads = list(self._threads), []
        for sock in sockets:
            _close(sock)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT_S)
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"proxy threads did not stop: {alive}")

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="tcp-proxy")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by stop()
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._stopping.is_set():
                    _close(client)
                    _close(upstream)
                    return
                self.accepted += 1
                self._sockets.update((client, upstream))
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_BUFFER)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def produce_tracked(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes]], timeout: float = 60.0
) -> dict[bytes, tuple[int, int]]:
    """Produces (key, value) pairs idempotently and returns key -> (partition, offset).

    A key produced more than once (an upsert stream) maps to its last position.

    Raises:
        RuntimeError: A message was not acknowledged within ``timeout``.
    """
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.num.messages": 10000,
        },
        logger=_CLIENT_LOG,  # not librdkafka's stderr (e.g. while the broker restarts)
    )
    positions: dict[bytes, tuple[int, int]] = {}
    errors: list[str] = []
    acknowledged = 0

    def _on_delivery(err: Any, msg: Any) -> None:
        nonlocal acknowledged
        if err is not None:
            errors.append(str(err))
            return
        acknowledged += 1
        position = (msg.partition(), msg.offset())
        positions[msg.key()] = max(positions.get(msg.key(), position), position)

    sent = 0
    for key, value in messages:
        for _ in range(1000):  # bounded: the local queue drains in well under a minute
            try:
                producer.produce(topic, key=key, value=value, on_delivery=_on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        else:
            raise RuntimeError("producer queue stayed full")
        sent += 1
        producer.poll(0)
    remaining = producer.flush(timeout)
    if errors or remaining or acknowledged != sent:
        raise RuntimeError(
            f"{sent} sent, {acknowledged} acknowledged, {remaining} pending, errors: {errors[:3]}"
        )
    return positions


# -- processes -------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (from /proc), root first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid_alive(pid):
            tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def is_spark_jvm(pid: int) -> bool:
    """Whether ``pid`` is a JVM running Spark's driver (spark-submit)."""
    cmdline = pid_cmdline(pid) or ""
    return "java" in cmdline and "org.apache.spark.deploy.SparkSubmit" in cmdline


@dataclass(frozen=True)
class KillReport:
    """What ``kill_process_tree`` killed."""

    pids: tuple[int, ...]
    jvm_pids: tuple[int, ...]
    seconds: float


def kill_process_tree(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> KillReport:
    """SIGKILLs a job: its process group and every descendant, then waits until all are gone.

    The job must have been started with ``start_new_session=True`` (its group id is its
    pid). pyspark's Python worker daemon moves itself into its own process group, so killing the
    driver's group alone is not enough; every descendant is killed by pid (and its group).

    Raises:
        AssertionError: A process of the tree is still alive after ``timeout``.
    """
    started = time.monotonic()
    # freeze the driver's group (driver, JVM) first so nothing new is forked meanwhile
    if proc.poll() is None and proc.pid != os.getpgrp():
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGSTOP)
    tree = process_tree(proc.pid) if proc.poll() is None else []
    jvms = tuple(p for p in tree if is_spark_jvm(p))
    own_group = os.getpgrp()
    groups: set[int] = set()
    for pid in tree:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    for group in sorted(groups - {own_group}):
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    deadline = time.monotonic() + timeout
    alive = [p for p in tree if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    assert proc.poll() is not None, f"job pid {proc.pid} survived SIGKILL"
    assert not alive, f"processes of the job survived SIGKILL: {alive} (JVMs: {jvms})"
    return KillReport(tuple(tree), jvms, time.monotonic() - started)
