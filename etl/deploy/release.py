"""What the requests refer to besides the settings: the project's version, the jar names
``make jars`` produced, the Maven coordinates and the pinned Python requirements.

``read_release`` is the only reader of files (and of the installed distributions) here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from etl.config import TableFormat
from etl.exceptions import DeployError
from etl.jvm import JARS_DIR, format_pom, maven_dependencies, udf_jar

DIST = "streaming-etl"
WHEEL = "streaming_etl-{version}-py3-none-any.whl"

# Python distributions a Glue 5 job already has (assumption from AWS's list of provided
# modules: Glue's own PySpark, the AWS SDK, the pandas/Arrow stack, PyYAML and their
# dependencies). Everything else the project needs is installed with pip --no-deps, pinned to
# the versions resolved here: the wheel's own requirement pyspark==3.5.7 would otherwise make
# pip fetch PySpark over Glue's.
GLUE_PYTHON_PROVIDED = frozenset(
    {
        "pyspark",
        "py4j",
        "pyarrow",
        "pandas",
        "numpy",
        "boto3",
        "botocore",
        "s3transfer",
        "jmespath",
        "urllib3",
        "pyyaml",
        "python-dateutil",
        "pytz",
        "tzdata",
        "six",
    }
)
# jars Glue provides itself (--datalake-formats): not shipped in --extra-jars
_GLUE_FORMAT_JARS = ("iceberg-", "delta-", "hudi-")


@dataclass(frozen=True)
class Release:
    """What the requests refer to besides the settings, read once by ``read_release``."""

    version: str
    # file name of the project's UDF jar (``make jars``)
    udf_jar: str
    # spark-submit's --packages and spark.jars.excludes from etl/jvm/pom.xml; Hudi's own
    # pom apart, for sessions hosting Hudi only
    packages: tuple[str, ...]
    excludes: tuple[str, ...]
    hudi_packages: tuple[str, ...]
    hudi_excludes: tuple[str, ...]
    # file names of the jars Glue lacks (Kafka source, Avro, MSK IAM and their dependencies)
    glue_jars: tuple[str, ...]
    # pinned requirements Glue lacks (``name==version``), dependencies included
    glue_python_modules: tuple[str, ...]

    @property
    def wheel(self) -> str:
        """The wheel's file name (``pip wheel --no-deps -w dist .`` builds it)."""
        return WHEEL.format(version=self.version)


def read_release(*, jars_dir: Path = JARS_DIR) -> Release:
    """Collects what the requests refer to: the installed project's version, the jars
    ``make jars`` left in ``jars_dir``, the poms' coordinates, the pinned Python requirements.

    Raises:
        DeployError: The project is not installed, or ``make jars`` has not run.
    """
    try:
        version = metadata.version(DIST)
    except metadata.PackageNotFoundError:
        raise DeployError(f"{DIST} is not installed: run `pip install -e .`") from None
    jar = udf_jar(jars_dir)
    if jar is None:
        raise DeployError(f"no etl-udf-*.jar in {jars_dir}: run `make jars`")
    packages, excludes = maven_dependencies()
    hudi_packages, hudi_excludes = maven_dependencies(format_pom(TableFormat.HUDI.value))
    glue_jars = sorted(
        path.name
        for path in jars_dir.glob("*.jar")
        if path != jar and not path.name.startswith(_GLUE_FORMAT_JARS)
    )
    return Release(
        version=version,
        udf_jar=jar.name,
        packages=tuple(packages),
        excludes=tuple(excludes),
        hudi_packages=tuple(hudi_packages),
        hudi_excludes=tuple(hudi_excludes),
        glue_jars=tuple(glue_jars),
        glue_python_modules=tuple(python_closure(DIST, provided=GLUE_PYTHON_PROVIDED)),
    )


def python_closure(dist: str, *, provided: frozenset[str]) -> list[str]:
    """The installed versions of a distribution's runtime requirements and theirs, except
    those ``provided`` (and what only they need), as sorted ``name==version`` pins.

    Raises:
        DeployError: A requirement is not installed here.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    walked: dict[str, set[str]] = {}  # the extras whose requirements were followed
    todo = [(Requirement(text), "") for text in metadata.requires(dist) or []]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue  # another extra's, or another platform's
        name = canonicalize_name(requirement.name)
        extras = {"", *requirement.extras} - walked.get(name, set())
        if name in provided or not extras:
            continue
        try:
            pinned[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise DeployError(f"{name} (needed by {dist}) is not installed here") from None
        walked.setdefault(name, set()).update(extras)
        for text in metadata.requires(name) or []:
            todo += [(Requirement(text), e) for e in extras]
    return [f"{name}=={version}" for name, version in sorted(pinned.items())]
