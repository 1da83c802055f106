"""Table formats behind one interface, looked up by ``TableFormat``.

Each format's package is imported only when a pipeline uses it, so a missing optional
runtime fails with a clear message naming it instead of at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from etl.config import Settings, TableFormat, TableSettings
from etl.exceptions import ConfigError, SinkError
from etl.formats.base import CommitInfo, TableFormatSupport, TableSink, TableSpec
from etl.paths import local_uri

__all__ = [
    "CommitInfo",
    "TableFormatSupport",
    "TableSink",
    "TableSpec",
    "check_one_session",
    "formats_used",
    "load_sink",
    "side_table",
    "table_format",
]

_REGISTRY: dict[TableFormat, str] = {
    TableFormat.ICEBERG: "etl.formats.iceberg:IcebergFormat",
    TableFormat.DELTA: "etl.formats.delta:DeltaFormat",
    TableFormat.HUDI: "etl.formats.hudi:HudiFormat",
}

# Formats one Spark session cannot host together, and why. Hudi and an Iceberg named catalog
# can: their SQL extensions clash only on CALL (apache/hudi#12808), which ingest and replay
# do not use (Iceberg's extension is listed last, so Iceberg's procedures keep working).
_EXCLUSIVE: dict[frozenset[TableFormat], str] = {
    frozenset({TableFormat.HUDI, TableFormat.DELTA}): (
        "both replace the session catalog, spark.sql.catalog.spark_catalog"
    ),
}


def table_format(table_format: TableFormat) -> TableFormatSupport:
    """Returns the support object of a table format.

    Raises:
        SinkError: The format has no support in this build (config rejects it earlier).
    """
    try:
        target = _REGISTRY[table_format]
    except KeyError:
        known = ", ".join(f.value for f in _REGISTRY)
        raise SinkError(
            f"sink.format: expected one of {known}, found {table_format.value} (no sink for it)"
        ) from None
    module_name, class_name = target.split(":")
    support: type[TableFormatSupport] = getattr(importlib.import_module(module_name), class_name)
    return support()


def load_sink(fmt: TableFormat, spec: TableSpec) -> TableSink:
    """Returns the sink of ``spec``'s table in a format."""
    return table_format(fmt).sink(spec)


def side_table(fmt: TableFormat, table: TableSettings) -> TableSink:
    """A pipeline's fixed-schema side table (maintenance log, forget list, erasure audit) in
    the pipeline's format."""
    location = local_uri(table.location) if table.location else None
    return load_sink(fmt, TableSpec(table.table, evolve=False, location=location))


def formats_used(settings: Settings, pipelines: Iterable[str] | None = None) -> list[TableFormat]:
    """The formats the named pipelines (default: all) write, plus Iceberg when a catalog is set."""
    names = list(pipelines) if pipelines is not None else list(settings.pipelines)
    used = {settings.pipeline(name).sink.format for name in names}
    if settings.catalog is not None:
        used.add(TableFormat.ICEBERG)
    return sorted(used)


def check_one_session(settings: Settings, formats: Iterable[TableFormat]) -> None:
    """Fails before Spark starts when one session cannot host all these formats.

    Args:
        settings: Parsed settings (the pipelines named in the error come from them).
        formats: The formats the session is to host (``formats_used``).

    Raises:
        ConfigError: Two of the formats cannot share a session; the message names the
            ``sink.format`` key of each pipeline writing one of them.
    """
    hosted = set(formats)
    for clash, reason in _EXCLUSIVE.items():
        if clash <= hosted:
            keys = ", ".join(
                f"pipelines.{name}.sink.format ({pipeline.sink.format.value})"
                for name, pipeline in sorted(settings.pipelines.items())
                if pipeline.sink.format in clash
            )
            both = " and ".join(sorted(f.value for f in clash))
            raise ConfigError(
                f"{keys}: one Spark session cannot host {both} tables ({reason}); "
                "run these pipelines as separate jobs"
            )
