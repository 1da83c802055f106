"""``make docker-test``: the ingest job's container image, built and run here with podman.

No image registry is reachable from these machines, so the official Spark base image cannot be
pulled: a stand-in is built from Debian packages (``debootstrap``: OpenJDK 17 and Python 3.11,
a user ``spark`` with uid 185 and no home, ``SPARK_HOME=/opt/spark`` left empty, as the official
image's user and environment are). Then, each step printed with its duration:

1. podman, runc and debootstrap, installed with apt-get when missing (needs root);
2. the stand-in base ``localhost/etl-base:bookworm`` (kept once built; ``--rebuild-base``);
3. the build context ``.docker/context`` (see docker/Dockerfile): the wheelhouse (``pip wheel``
   of ``dist/*.whl``: offline from the wheelhouse when it holds everything already, else from
   the package index), the jars of ``make jars``, the schemas and ``conf/docker.yaml``;
4. the image ``localhost/streaming-etl:latest`` (``podman build --isolation chroot``), on the
   stand-in base; nothing is downloaded in the build;
5. the local stack on the host (Kafka broker + moto), the schema registered and order events
   produced from the host, as ``make run`` does;
6. the container: ``jobs.ingest`` over the pipelines of ``conf/docker.yaml`` (Iceberg append,
   Delta upsert), ``available_now``, ``--network=host``, a host directory as its working
   directory (mounted at the same path, so the tables' absolute paths hold on the host too);
7. the tables read back from the host (pyiceberg, deltalake): every produced order id, the
   poison records as dead letters, the files owned by the image's non-root user.

podman's storage and state stay in ``.docker/podman`` (``--root``, ``--runroot``,
``--tmpdir``), its settings in ``docker/containers.conf`` (``CONTAINERS_CONF``). Exits 1 on
any failure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from devtools.devstack.stack import LocalStack, StackInfo
from devtools.producer import glue_frames, produce, register_schema
from devtools.sample_data import orders
from devtools.tables import hadoop_iceberg_table
from etl.config import Settings, TableFormat, load_settings
from etl.exceptions import LocalStackError
from etl.registry import read_avsc
from transforms.errors import ErrorClass

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".docker"
CONTEXT = STATE / "context"
PODMAN_DIR = STATE / "podman"
CHECK_DIR = STATE / "check"
DOCKERFILE = REPO / "docker" / "Dockerfile"
CONTAINERS_CONF = REPO / "docker" / "containers.conf"
CONF = REPO / "conf" / "docker.yaml"
# where the image keeps the conf (docker/Dockerfile)
IMAGE_CONF = "/opt/etl/conf/docker.yaml"
BASE_IMAGE = "localhost/etl-base:bookworm"
IMAGE = "localhost/streaming-etl:latest"
CONTAINER = "etl-docker-check"
SPARK_UID = 185
BASE_PACKAGES = "openjdk-17-jre-headless,python3,python3-venv"
# each is the name of its command and of its Debian package
TOOLS = ("podman", "runc", "debootstrap")
FALLBACK_MIRROR = "http://deb.debian.org/debian"


# a titled step of the check: prints its title, then its duration
Step = Callable[[str], AbstractContextManager[None]]


class CheckError(Exception):
    """A step failed; the message says which and why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.docker_check",
        description="Build the ingest image on a stand-in base with podman and check an ingest "
        "in a container against the local stack.",
    )
    parser.add_argument("--records", type=int, default=2000, help="order events to produce")
    parser.add_argument(
        "--context-only",
        action="store_true",
        help="only stage the build context .docker/context (needs dist/*.whl and make jars)",
    )
    parser.add_argument(
        "--rebuild-base", action="store_true", help="rebuild the stand-in base image"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the check; returns 0 when every step and check passed, 1 otherwise."""
    args = parse_args(argv)
    timings: list[tuple[str, float]] = []

    @contextmanager
    def step(title: str) -> Iterator[None]:
        print(f"\n== {title}", flush=True)
        started = time.monotonic()
        try:
            yield
        finally:
            timings.append((title, time.monotonic() - started))
            print(f"== {title}: {timings[-1][1]:.0f}s", flush=True)

    started = time.monotonic()
    try:
        if args.context_only:
            with step("build context"):
                stage_context()
            return 0
        if os.geteuid() != 0:
            raise CheckError("needs root: rootful podman, debootstrap and chroot")
        with step("podman, runc, debootstrap"):
            ensure_tools()
        podman = Podman()
        with step(f"stand-in base image {BASE_IMAGE}"):
            ensure_base(podman, rebuild=args.rebuild_base)
        with step("build context (wheelhouse, jars, schemas, conf)"):
            stage_context()
        with step(f"image {IMAGE}"):
            build_image(podman)
        failures = run_check(podman, args.records, step)
    except (CheckError, LocalStackError, subprocess.SubprocessError) as err:
        print(f"\nFAILED: {err}", file=sys.stderr)
        return 1
    finally:
        print("\n== timings")
        for title, seconds in timings:
            print(f"  {seconds:6.0f}s  {title}")
        print(f"  {time.monotonic() - started:6.0f}s  in all")
    if failures:
        print(f"\nFAILED: {len(failures)} checks: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("\nOK: the image ingested the produced events into every table")
    return 0


def ensure_tools() -> None:
    """Installs podman, runc and debootstrap with apt-get where missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        print("all present")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


class Podman:
    """podman with this repository's settings and its storage in ``.docker/podman``."""

    def __init__(self, state: Path = PODMAN_DIR) -> None:
        """Prepares the storage directories (podman creates the rest)."""
        self.state = state
        for name in ("storage", "run", "tmp", "networks"):
            (state / name).mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(CONTAINERS_CONF),
            # image layers being pulled or committed are staged in TMPDIR (default /var/tmp)
            "TMPDIR": str(state / "tmp"),
        }

    def command(self, *args: str) -> list[str]:
        """The podman command line with the global flags."""
        return [
            "podman",
            "--root",
            str(self.state / "storage"),
            "--runroot",
            str(self.state / "run"),
            "--tmpdir",
            str(self.state / "run" / "libpod"),
            "--network-config-dir",
            str(self.state / "networks"),
            "--storage-driver",
            "overlay",
            "--runtime",
            "runc",
            # runc keeps its container state in /run/runc unless told
            "--runtime-flag",
            f"root={self.state / 'run' / 'runc'}",
            "--cgroup-manager=cgroupfs",
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, stdin: Any = None, timeout: float | None = None
    ) -> int:
        """Runs a podman command, its output going to ours; returns its exit code."""
        command = self.command(*args)
        print("$ " + " ".join(command), flush=True)
        done = subprocess.run(command, env=self.env, stdin=stdin, timeout=timeout, check=False)
        if check and done.returncode:
            raise CheckError(f"podman {args[0]} exited with {done.returncode}")
        return done.returncode

    def image_exists(self, name: str) -> bool:
        """Whether the image is in this storage."""
        command = self.command("image", "exists", name)
        return subprocess.run(command, env=self.env, check=False).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror of apt's sources (the bookworm suite), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, colon, value = line.partition(":")
                    if colon and not line.startswith("#"):
                        fields[key.strip().lower()] = value.strip()
                types = fields.get("types", "").split()
                if "deb" in types and "bookworm" in fields.get("suites", "").split():
                    return fields["uris"].split()[0]
        elif path.suffix == ".list" or path.name == "sources.list":
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == "bookworm":
                    return parts[1]
    return FALLBACK_MIRROR


def ensure_base(podman: Podman, *, rebuild: bool) -> None:
    """Builds the stand-in base from Debian packages unless it is there already."""
    if podman.image_exists(BASE_IMAGE) and not rebuild:
        print(f"{BASE_IMAGE} is there (--rebuild-base rebuilds it)")
        return
    for tool in ("debootstrap", "chroot", "tar"):
        if shutil.which(tool) is None:
            raise CheckError(f"need {tool} on PATH to build the stand-in base")
    rootfs = STATE / "base-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    mirror = debian_mirror()
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            check=True,
        )
        # the official image's user: spark, uid 185, no home directory
        chroot = ["chroot", str(rootfs)]
        subprocess.run(
            [*chroot, "groupadd", "--system", "--gid", str(SPARK_UID), "spark"], check=True
        )
        subprocess.run(
            [
                *chroot,
                "useradd",
                "--system",
                "--uid",
                str(SPARK_UID),
                "--gid",
                "spark",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "spark",
            ],
            check=True,
        )
        # the official image sets SPARK_HOME=/opt/spark (its own Spark); here it is empty, so
        # an image that relied on it would fail on the stand-in
        (rootfs / "opt" / "spark" / "work-dir").mkdir(parents=True)
        os.chown(rootfs / "opt" / "spark" / "work-dir", SPARK_UID, SPARK_UID)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        jvms = sorted(p for p in (rootfs / "usr/lib/jvm").glob("java-17-openjdk-*") if p.is_dir())
        if not jvms:
            raise CheckError("the stand-in base has no OpenJDK 17 in /usr/lib/jvm")
        java_home = "/" + str(jvms[0].relative_to(rootfs))
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"ENV JAVA_HOME={java_home}",
            "ENV LANG=C.UTF-8",
            "ENV SPARK_HOME=/opt/spark",
            "WORKDIR /opt/spark/work-dir",
            "USER spark",
        ]
        flags = [arg for change in changes for arg in ("--change", change)]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            podman.run("import", *flags, "-", BASE_IMAGE, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
        if tar.returncode:
            raise CheckError(f"tar of the stand-in rootfs exited with {tar.returncode}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def project_wheel() -> Path:
    """The one wheel in ``dist/`` (``make dist``)."""
    wheels = sorted((REPO / "dist").glob("streaming_etl-*.whl"))
    if len(wheels) != 1:
        raise CheckError(f"expected one wheel in dist/ (make dist), found {len(wheels)}")
    return wheels[0]


def runtime_requirements(wheel: Path) -> list[str]:
    """The wheel's dependencies, without the optional ones (its METADATA's Requires-Dist)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = HeaderParser().parsestr(archive.read(name).decode())
    return [r for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r]


def stage_context() -> None:
    """Stages ``.docker/context``: every file the image build reads (docker/Dockerfile)."""
    wheel = project_wheel()
    wheelhouse = CONTEXT / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for stale in wheelhouse.glob("streaming_etl-*.whl"):
        stale.unlink()
    # the dependencies (one layer, cached while they do not change), then the project wheel;
    # pinned to the versions of this venv, the ones the tests ran with
    freeze = [sys.executable, "-m", "pip", "freeze", "--exclude-editable"]
    pins = subprocess.run(freeze, check=True, capture_output=True, text=True).stdout
    listed = {
        wheelhouse / "requirements.txt": "".join(f"{r}\n" for r in runtime_requirements(wheel)),
        wheelhouse / "constraints.txt": pins,
    }
    for path, text in listed.items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheelhouse)]
    pip += ["--find-links", str(wheelhouse)]
    pip += ["-r", str(wheelhouse / "requirements.txt"), "-c", str(wheelhouse / "constraints.txt")]
    if subprocess.run([*pip, "--no-index"], check=False, capture_output=True).returncode:
        print("the wheelhouse lacks some dependencies: pip wheel from the package index")
        subprocess.run([p for p in pip if p != "-q"], check=True)
    project = CONTEXT / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    shutil.copy2(wheel, project)
    for name in ("spark", "hudi"):
        source = REPO / ".jars" / name
        if not any(source.glob("*.jar")):
            raise CheckError(f"no jars in {source} (make jars)")
        _sync(source, CONTEXT / "jars" / name)
    _sync(REPO / "schemas", CONTEXT / "schemas")
    (CONTEXT / "conf").mkdir(exist_ok=True)
    shutil.copy2(CONF, CONTEXT / "conf" / CONF.name)
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    print(f"{CONTEXT}: {len(wheels)} dependency wheels, {wheel.name}, jars, schemas, conf")


def _sync(source: Path, target: Path) -> None:
    """Makes ``target`` a copy of the directory ``source`` (unchanged files are kept)."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in source.iterdir() if p.is_file()}
    for existing in target.iterdir():
        if existing.name not in wanted:
            existing.unlink()
    for name in wanted:
        src, dst = source / name, target / name
        same = dst.is_file() and dst.stat().st_size == src.stat().st_size
        if not same or dst.stat().st_mtime != src.stat().st_mtime:
            shutil.copy2(src, dst)


def build_image(podman: Podman) -> None:
    """Builds the project image on the stand-in base, from the staged context only."""
    podman.run(
        "build",
        "--isolation",
        "chroot",
        "--pull=never",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "-f",
        str(DOCKERFILE),
        "-t",
        IMAGE,
        str(CONTEXT),
    )


def run_check(podman: Podman, records: int, step: Step) -> list[str]:
    """Steps 5 to 7: stack, events, the container, the tables; returns the failed checks."""
    settings = load_settings(CONF, env={})
    shutil.rmtree(CHECK_DIR, ignore_errors=True)
    data = CHECK_DIR / "data"
    data.mkdir(parents=True)
    # the image runs as the base's non-root user; it writes the tables and checkpoints here
    os.chown(data, SPARK_UID, SPARK_UID)
    with step("local stack (Kafka broker, moto) on the host"):
        stack = LocalStack(CHECK_DIR / "stack", REPO / ".jars" / "broker")
        stack.start()
    try:
        with step(f"{records} order events produced from the host"):
            produced, poison = _produce(stack, settings, records)
        with step("the ingest job in a container"):
            # a container left by an interrupted check would hold the name
            podman.run("rm", "--force", "--ignore", CONTAINER, check=False)
            try:
                code = podman.run(*_run_args(stack.info, settings, data), check=False, timeout=1800)
            except subprocess.TimeoutExpired:
                podman.run("rm", "--force", "--ignore", CONTAINER, check=False)
                raise CheckError("the ingest container did not finish in 30 minutes") from None
        if code:
            raise CheckError(f"the ingest container exited with {code}")
        with step("the tables, read back from the host"):
            return _check_tables(settings, data, produced, poison)
    finally:
        stack.stop()


def _produce(
    stack: LocalStack, settings: Settings, records: int
) -> tuple[list[str], list[ErrorClass]]:
    """Registers the schema and produces Glue-framed order events plus poison records."""
    topics = {t for p in settings.pipelines.values() for t in p.source.topics or []}
    schema_files = {p.decode.schema_file for p in settings.pipelines.values()}
    if len(topics) != 1 or len(schema_files) != 1 or None in schema_files:
        raise CheckError(f"{CONF}: expected one topic and one schema file, found {topics}")
    (topic,) = topics
    (schema_file,) = schema_files
    assert schema_file is not None
    # the conf names the image's copy; the host reads the repository's
    definition = read_avsc(REPO / "schemas" / schema_file.name)
    version = register_schema(
        stack.info.glue_client(),
        registry_name=settings.registry.registry_name,
        schema_name=topic,
        definition=definition,
    )
    stack.broker.create_topic(topic, partitions=3)
    events = orders(records)
    values = glue_frames(definition, version, events, compress_every=10)
    # not a Glue frame; a frame naming a schema version the registry does not know
    poison: dict[ErrorClass, bytes] = {
        ErrorClass.UNKNOWN_HEADER_VERSION: b"\x01not-a-glue-frame",
        ErrorClass.UNKNOWN_SCHEMA: bytes([0x03, 0x00]) + uuid.uuid4().bytes + b"\x02",
    }
    keyed: list[tuple[bytes | None, bytes | None]] = [
        (e["order_id"].encode(), v) for e, v in zip(events, values, strict=True)
    ]
    keyed += [(b"poison", value) for value in poison.values()]
    sent = produce(stack.info.bootstrap_plaintext, topic, keyed)
    print(f"{sent} records on topic {topic} ({len(poison)} poison)")
    return [e["order_id"] for e in events], sorted(poison)


def _run_args(info: StackInfo, settings: Settings, data: Path) -> list[str]:
    """``podman run`` arguments: the host's network, the data directory as the working
    directory, the stack's endpoints and ``available_now`` as ETL__ overrides."""
    env = {
        "ETL__AWS__ENDPOINT_URL": info.aws_endpoint,
        # moto accepts any credentials; real ones must never reach it
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
    for name in settings.pipelines:
        prefix = f"ETL__PIPELINES__{name.upper()}"
        env[f"{prefix}__SOURCE__BOOTSTRAP_SERVERS"] = info.bootstrap_plaintext
        env[f"{prefix}__TRIGGER__MODE"] = "available_now"
    args = ["run", "--rm", "--name", CONTAINER, "--network=host"]
    args += ["-v", f"{data}:{data}", "-w", str(data)]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    args += [IMAGE, "--conf", IMAGE_CONF]
    for name in settings.pipelines:
        args += ["--pipeline", name]
    return args


def _check_tables(
    settings: Settings, data: Path, produced: list[str], poison: list[ErrorClass]
) -> list[str]:
    """Reads every pipeline's table and dead-letter table from the host; prints each check."""
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'}  {what}", flush=True)
        if not ok:
            failures.append(what)

    expected = sorted(produced)
    for name, pipeline in settings.pipelines.items():
        fmt = pipeline.sink.format
        try:
            table = _read(settings, data, fmt, pipeline.sink.table, pipeline.sink.location)
            dead = _read(
                settings, data, fmt, pipeline.dead_letter.table, pipeline.dead_letter.location
            )
        except Exception as err:
            check(False, f"{name}: read the {fmt.value} tables ({type(err).__name__}: {err})")
            continue
        ids = sorted(table["order_id"].to_pylist())
        check(
            ids == expected,
            f"{name}: {fmt.value} table {pipeline.sink.table} holds the {len(expected)} "
            f"produced order ids (found {len(ids)} rows, {len(set(ids))} distinct ids)",
        )
        classes = sorted(dead["error_class"].to_pylist())
        check(
            classes == poison,
            f"{name}: dead-letter table {pipeline.dead_letter.table} holds the poison records "
            f"as {', '.join(poison)} (found {', '.join(map(str, classes)) or 'none'})",
        )
    owners = {p.stat().st_uid for p in data.rglob("*.parquet")}
    check(
        owners == {SPARK_UID},
        f"the data files were written by the image's user, uid {SPARK_UID} (found {owners})",
    )
    return failures


def _read(
    settings: Settings, data: Path, fmt: TableFormat, table: str, location: str | None
) -> Any:
    """One table as a pyarrow Table, read without Spark (pyiceberg / deltalake)."""
    if fmt is TableFormat.ICEBERG:
        assert settings.catalog is not None
        return hadoop_iceberg_table(data / settings.catalog.warehouse, table).scan().to_arrow()
    if fmt is TableFormat.DELTA:
        from deltalake import DeltaTable

        assert location is not None
        return DeltaTable(str(data / location)).to_pyarrow_table()
    raise CheckError(f"no host-side reader for {fmt.value} tables here")


if __name__ == "__main__":
    sys.exit(main())
