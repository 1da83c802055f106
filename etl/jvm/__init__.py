"""Spark-submit flags for EMR / Glue from ``etl/jvm/pom.xml``, the one list of JVM deps.

The pom ships inside the package (package data), so ``python -m etl.jvm`` works from an
installed wheel as well as from the repository, where ``make jars`` resolves the same pom.

``--packages`` gets the pom's direct dependencies; ``spark.jars.excludes`` gets its
exclusions (Spark resolves them with glob matching), so the cluster resolves the same set
``make jars`` does locally. ``--jars`` gets the project's own UDF jar (built from ``jvm/udf``
by ``make jars``; it is not on Maven Central). A table format with its own pom
(``etl/formats/<format>/pom.xml``, e.g. Hudi's bundle) adds its coordinates when asked for.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

POM = Path(__file__).with_name("pom.xml")
# table formats whose JVM artifacts have a pom of their own, beside their package
FORMATS_DIR = Path(__file__).parents[1] / "formats"
# where `make jars` puts the UDF jar, relative to the directory the command runs in
JARS_DIR = Path(".jars") / "spark"
_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def maven_dependencies(pom: Path = POM) -> tuple[list[str], list[str]]:
    """Returns (``group:artifact:version`` of each direct dependency, ``group:artifact`` of
    each exclusion), with ``${properties}`` expanded."""
    root = ET.parse(pom).getroot()
    properties = root.find("m:properties", _NS)
    props = {el.tag.split("}")[1]: (el.text or "") for el in (properties or [])}

    def expand(text: str | None) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: props[m.group(1)], text or "")

    def coordinate(element: ET.Element, tags: tuple[str, ...]) -> str:
        return ":".join(expand(element.findtext(f"m:{t}", namespaces=_NS)) for t in tags)

    packages, excludes = [], []
    for dep in root.findall("m:dependencies/m:dependency", _NS):
        packages.append(coordinate(dep, ("groupId", "artifactId", "version")))
        for exclusion in dep.findall("m:exclusions/m:exclusion", _NS):
            excludes.append(coordinate(exclusion, ("groupId", "artifactId")))
    return packages, sorted(set(excludes))


def udf_jar(jars_dir: Path = JARS_DIR) -> Path | None:
    """The built ``etl-udf`` jar, or None before ``make jars``."""
    return next(iter(sorted(jars_dir.glob("etl-udf-*.jar"))), None)


def format_pom(name: str) -> Path:
    """The pom of a table format's own JVM artifacts (``hudi``).

    Raises:
        ValueError: The format has no pom of its own.
    """
    pom = FORMATS_DIR / name / "pom.xml"
    if not pom.is_file():
        known = ", ".join(sorted(p.parent.name for p in FORMATS_DIR.glob("*/pom.xml")))
        raise ValueError(f"expected a format with its own pom ({known}), found {name!r}")
    return pom


def submit_flags(jars_dir: Path = JARS_DIR, formats: tuple[str, ...] = ()) -> str:
    """The spark-submit flags: ``--packages`` (with the named formats' own artifacts),
    ``spark.jars.excludes`` and, once built, ``--jars`` with the UDF jar (a warning on
    stderr when it is not)."""
    packages, excludes = maven_dependencies()
    for name in formats:
        more, more_excludes = maven_dependencies(format_pom(name))
        packages += more
        excludes = sorted({*excludes, *more_excludes})
    flags = f"--packages {','.join(packages)} --conf spark.jars.excludes={','.join(excludes)}"
    jar = udf_jar(jars_dir)
    if jar is None:
        print(
            f"etl-udf jar not found in {jars_dir} (run `make jars`): zlib would be inflated "
            "in Python",
            file=sys.stderr,
        )
    else:
        flags += f" --jars {jar}"
    return flags
