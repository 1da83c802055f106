"""A single-node KRaft Kafka broker run from the jars in ``.jars/broker`` (see jvm/broker/pom.xml).

The broker listens on three loopback ports: PLAINTEXT (no auth, used by tests and admin
calls), SASL_PLAINTEXT with SCRAM-SHA-512 (what MSK's SCRAM listener looks like to a
client) and the KRaft CONTROLLER listener. Storage lives under ``workdir/data`` and is kept
across :meth:`KafkaBroker.stop` / :meth:`KafkaBroker.start`, so a restart keeps the topics
and records.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devtools.devstack.lifecycle import Service
from devtools.devstack.ports import LOOPBACK, free_ports, port_open
from etl.exceptions import LocalStackError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 4096  # the minimum Kafka accepts
# the storage tool's --add-scram syntax has no escaping
_USERNAME_RE = re.compile(r"[A-Za-z0-9._@-]+")
# A single node has no one to hand leadership to, so a clean shutdown takes about a second;
# one that lasts longer is stuck, and SIGKILL then only costs a log recovery at next start.
STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
_LOG_TAIL_LINES = 20
_LOG_ERROR_LINES = 5


@dataclass(frozen=True)
class BrokerPorts:
    """The three loopback ports of the broker."""

    plaintext: int
    scram: int
    controller: int

    @classmethod
    def pick(cls) -> BrokerPorts:
        """Choose three free loopback ports."""
        plaintext, scram, controller = free_ports(3)
        return cls(plaintext=plaintext, scram=scram, controller=controller)


class KafkaBroker(Service):
    """A single-node Kafka 3.9 broker in KRaft combined mode, run as a ``java`` subprocess.

    The ports are chosen when the object is created and kept for its lifetime, so a
    ``stop()`` / ``start()`` cycle gives clients the same bootstrap addresses. The process
    runs in its own session: it survives the Python process unless :meth:`stop` is called.

    Example:
        >>> with KafkaBroker(Path(".stack/broker"), Path(".jars/broker"),
        ...                  scram_username="etl", scram_password="s3cret") as broker:
        ...     broker.create_topic("orders", partitions=3)
    """

    def __init__(
        self,
        workdir: Path,
        jars_dir: Path,
        *,
        scram_username: str,
        scram_password: str,
        ports: BrokerPorts | None = None,
        heap: str = "512m",
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        """Prepare (but do not start) a broker.

        Args:
            workdir: Directory for ``server.properties``, ``data/`` and ``logs/``; created
                if missing. Existing storage in it is reused, not reformatted.
            jars_dir: Directory holding the broker classpath (``make jars``).
            scram_username: The SCRAM-SHA-512 user that exists from the first start.
            scram_password: That user's password.
            ports: Fixed ports; by default three free loopback ports are chosen now.
            heap: The JVM's maximum heap (``-Xmx``).
            start_timeout: Seconds :meth:`start` waits for the broker to answer.
        """
        if not scram_username or not scram_password:
            raise LocalStackError("the SCRAM username and password must not be empty")
        if not _USERNAME_RE.fullmatch(scram_username):
            raise LocalStackError(
                f"SCRAM username {scram_username!r} may only use letters, digits and ._@-"
            )
        self.workdir = workdir.resolve()
        self.jars_dir = jars_dir.resolve()
        self.scram_username = scram_username
        self._scram_password = scram_password
        self.ports = ports or BrokerPorts.pick()
        self.heap = heap
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offsets: dict[Path, int] = {}

    # -- addresses and client configuration ---------------------------------------------

    @property
    def bootstrap_plaintext(self) -> str:
        """``127.0.0.1:PORT`` of the unauthenticated PLAINTEXT listener."""
        return f"{LOOPBACK}:{self.ports.plaintext}"

    @property
    def bootstrap_scram(self) -> str:
        """``127.0.0.1:PORT`` of the SASL_PLAINTEXT / SCRAM-SHA-512 listener."""
        return f"{LOOPBACK}:{self.ports.scram}"

    @property
    def scram_password(self) -> str:
        """The SCRAM-SHA-512 password of :attr:`scram_username`."""
        return self._scram_password

    @property
    def data_dir(self) -> Path:
        """The KRaft metadata and log directory."""
        return self.workdir / "data"

    @property
    def logs_dir(self) -> Path:
        """Where the broker's ``server.log`` and captured stdout/stderr go."""
        return self.workdir / "logs"

    @property
    def server_log(self) -> Path:
        """The broker's log4j log file."""
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        """The broker process's captured stdout and stderr."""
        return self.logs_dir / "broker.out"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.pid is not None

    def client_config(self, *, scram: bool = False, password: str | None = None) -> dict[str, Any]:
        """Return a confluent-kafka / librdkafka configuration for this broker.

        Args:
            scram: Use the SCRAM-SHA-512 listener instead of PLAINTEXT.
            password: Override the SCRAM password (to test a wrong one).

        Returns:
            A new dict; callers may add their own keys.
        """
        if not scram:
            return {"bootstrap.servers": self.bootstrap_plaintext}
        return {
            "bootstrap.servers": self.bootstrap_scram,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": self.scram_username,
            "sasl.password": self._scram_password if password is None else password,
        }

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Format storage if needed, launch the broker and wait until both listeners answer.

        Calling it on a running broker does nothing.

        Raises:
            LocalStackError: ``java`` or the jars are missing, formatting failed, or the
                broker exited or did not answer on PLAINTEXT and SCRAM in time; the message
                ends with the tail of the broker log.
        """
        if self.running:
            return
        java = _find_java()
        self._check_jars()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        formatted_now = self._format_storage(java)
        # error messages quote only what this start wrote (the logs append across restarts)
        self._log_offsets = {
            path: path.stat().st_size if path.exists() else 0
            for path in (self.stdout_log, self.server_log)
        }
        started = time.monotonic()
        with self.stdout_log.open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    *self._java_cmd(java),
                    "kafka.Kafka",
                    str(self.workdir / "server.properties"),
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # own session: Ctrl-C in the terminal that ran the CLI must not kill it, and
                # `devtools.devstack up` exits while the broker keeps running
                start_new_session=True,
            )
        log.info("kafka broker pid %d starting in %s", self._proc.pid, self.workdir)
        try:
            self._wait_ready(started, formatted_now)
        except BaseException:
            self.stop()
            raise
        log.info(
            "kafka broker ready in %.1fs: plaintext %s, scram %s",
            time.monotonic() - started,
            self.bootstrap_plaintext,
            self.bootstrap_scram,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it has not exited after ``timeout``.

        Calling it on a stopped broker does nothing. Storage and logs are kept.

        Args:
            timeout: Seconds to wait for a graceful shutdown.
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
                log.warning("kafka broker pid %d ignored SIGTERM, killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.info("kafka broker pid %d stopped (exit code %s)", proc.pid, proc.returncode)

    def detach(self) -> int:
        """Forget the running process without stopping it and return its pid.

        Used by the CLI, whose ``up`` exits while the broker keeps running; ``down`` later
        stops it by pid.

        Returns:
            The broker's pid.

        Raises:
            LocalStackError: The broker is not running.
        """
        pid = self.pid
        if pid is None:
            raise LocalStackError("the kafka broker is not running")
        # Popen would otherwise warn in __del__ that the child is still running
        self._proc = None
        return pid

    # -- admin helpers -----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 30.0) -> None:
        """Create a topic (replication factor 1) and wait until every partition has a leader.

        Creating a topic that already exists is not an error.

        Args:
            name: The topic name.
            partitions: The number of partitions.
            timeout: Seconds to wait for creation and leader election.

        Raises:
            LocalStackError: The broker refused to create the topic or timed out.
        """
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.cimpl import NewTopic  # see _admin() for why not .admin

        admin = self._admin()
        future = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )[name]
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise LocalStackError(f"could not create topic {name!r}: {exc}") from exc
        except TimeoutError as exc:
            raise LocalStackError(f"creating topic {name!r} timed out") from exc
        # producers started right after creation would otherwise see UNKNOWN_TOPIC errors
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and topic.partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                return
            time.sleep(0.1)
        raise LocalStackError(f"topic {name!r} has no leader after {timeout:.0f}s")

    def upsert_scram_credential(self, timeout: float = 30.0) -> None:
        """Set the SCRAM-SHA-512 password of :attr:`scram_username` through the admin API.

        Raises:
            LocalStackError: The broker refused the change.
        """
        from confluent_kafka import KafkaException
        from confluent_kafka.admin._scram import (
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        upsert = UserScramCredentialUpsertion(
            self.scram_username,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            self._scram_password.encode(),
        )
        # keep the client referenced until the future resolves: a collected client
        # destroys its handle and fails the pending request
        admin = self._admin()
        futures = admin.alter_user_scram_credentials([upsert], request_timeout=timeout)
        try:
            futures[self.scram_username].result(timeout)
        except KafkaException as exc:
            raise LocalStackError(f"could not set the SCRAM credential: {exc}") from exc

    # -- internals ---------------------------------------------------------------------

    def _admin(self, *, scram: bool = False, password: str | None = None) -> AdminClient:
        """Return an AdminClient; librdkafka's own log lines go to this module's logger."""
        # confluent_kafka is typed but confluent_kafka.admin has no __all__, so strict mypy
        # treats its re-exports as private; the helpers import from the defining modules.
        # Imported lazily so that `import devtools.devstack` works without the [local] extra.
        from confluent_kafka.admin import AdminClient

        conf = self.client_config(scram=scram, password=password)
        # the default grows to 10 s between attempts, which would slow readiness polling
        conf.update({"reconnect.backoff.max.ms": 500, "logger": log})
        return AdminClient(conf)

    def _check_jars(self) -> None:
        """Fail early with a hint if the broker classpath was not copied yet."""
        if not any(self.jars_dir.glob("kafka_2.13-*.jar")):
            raise LocalStackError(
                f"no Kafka broker jars in {self.jars_dir}: run `make jars` (mvn -q -B -f "
                "jvm/broker/pom.xml dependency:copy-dependencies -DoutputDirectory=.jars/broker)"
            )

    def _java_cmd(self, java: str) -> list[str]:
        """Return the JVM launch prefix shared by the storage tool and the broker."""
        return [
            java,
            "-Xms128m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={(self.workdir / 'log4j.properties').as_uri()}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.jars_dir}{os.sep}*",
        ]

    def _write_config(self) -> None:
        """Write server.properties and log4j.properties for the current ports."""
        p = self.ports
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{p.controller}",
            "listeners": (
                f"PLAINTEXT://{LOOPBACK}:{p.plaintext},"
                f"SASL_PLAINTEXT://{LOOPBACK}:{p.scram},"
                f"CONTROLLER://{LOOPBACK}:{p.controller}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{LOOPBACK}:{p.plaintext},SASL_PLAINTEXT://{LOOPBACK}:{p.scram}"
            ),
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "-1",
            # a laptop stack: tiny segments are not worth it, but 1 GiB preallocated
            # index files per partition are wasteful
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        (self.workdir / "server.properties").write_text(text)
        (self.workdir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.server_log}\n"
            "log4j.appender.file.Append=true\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            # per-request chatter that buries the useful lines
            "log4j.logger.kafka.request.logger=WARN\n"
            "log4j.logger.org.apache.kafka.clients.NetworkClient=WARN\n"
        )

    def _format_storage(self, java: str) -> bool:
        """Format ``data/`` with a new cluster id and the SCRAM user unless already formatted.

        Returns:
            True if it formatted now, False if the storage already existed.
        """
        if (self.data_dir / "meta.properties").exists():
            return False
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Pass the salted password rather than the password: it keeps the secret off the
        # java command line (visible in `ps`), and the tool's parser splits on "," and "]",
        # which a base64 value never contains.
        salt = secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac(
            "sha512", self._scram_password.encode(), salt, SCRAM_ITERATIONS
        )
        scram = (
            f"{SCRAM_MECHANISM}=[name={self.scram_username},iterations={SCRAM_ITERATIONS},"
            f'salt="{base64.b64encode(salt).decode()}",'
            f'saltedpassword="{base64.b64encode(salted).decode()}"]'
        )
        cmd = [
            *self._java_cmd(java),
            "kafka.tools.StorageTool",
            "format",
            # one token: a random id may start with "-" and be read as an option
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.workdir / "server.properties"),
            "--add-scram",
            scram,
        ]
        result = subprocess.run(
            cmd, cwd=self.workdir, capture_output=True, text=True, timeout=120, check=False
        )
        (self.logs_dir / "format.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise LocalStackError(
                f"formatting Kafka storage in {self.data_dir} failed "
                f"(exit {result.returncode}):\n{(result.stdout + result.stderr).strip()}"
            )
        log.info("formatted kafka storage %s (cluster id %s)", self.data_dir, cluster_id)
        return True

    def _wait_ready(self, started: float, formatted_now: bool) -> None:
        """Block until the broker answers metadata requests on both client listeners."""
        from confluent_kafka import KafkaException

        deadline = started + self.start_timeout
        stage = "PLAINTEXT"
        last_error = "the port is not open yet"
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise LocalStackError(
                    f"the kafka broker exited with code {code} during start-up" + self._log_tail()
                )
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"the kafka broker did not answer on {stage} within "
                    f"{self.start_timeout:.0f}s ({last_error})" + self._log_tail()
                )
            try:
                if stage == "PLAINTEXT":
                    if port_open(self.ports.plaintext):
                        self._admin().list_topics(timeout=5)
                        if not formatted_now:
                            # the storage may come from another stack run with another
                            # password; make the configured one the valid one
                            self.upsert_scram_credential()
                        stage = "SCRAM"
                        continue
                elif port_open(self.ports.scram):
                    self._admin(scram=True).list_topics(timeout=5)
                    return
            except KafkaException as exc:
                last_error = str(exc.args[0]) if exc.args else repr(exc)
            except LocalStackError as exc:
                last_error = str(exc)
            time.sleep(0.2)

    def _log_tail(self) -> str:
        """Return this start's first errors and last lines of the broker logs, for errors."""
        parts: list[str] = []
        for path in (self.stdout_log, self.server_log):
            try:
                with path.open("rb") as fh:
                    fh.seek(self._log_offsets.get(path, 0))
                    lines = fh.read().decode(errors="replace").splitlines()
            except OSError:
                continue
            # a failed start ends with dozens of shutdown lines; the cause is the first
            # ERROR and the exception message on the line after it
            errors = [
                f"{line}\n{lines[i + 1] if i + 1 < len(lines) else ''}".rstrip()
                for i, line in enumerate(lines)
                if "] ERROR " in line or "] FATAL " in line
            ][:_LOG_ERROR_LINES]
            if errors:
                parts.append(f"\n--- first errors in {path} ---\n" + "\n".join(errors))
            if lines:
                tail = "\n".join(lines[-_LOG_TAIL_LINES:])
                parts.append(f"\n--- tail of {path} ---\n{tail}")
        return "".join(parts) or f"\n(no broker log in {self.logs_dir})"


def _find_java() -> str:
    """Return the java launcher from JAVA_HOME or PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise LocalStackError("java not found: install a JDK 17 or set JAVA_HOME")
    return java
