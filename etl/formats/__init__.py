"""Table formats behind one interface, looked up by ``TableFormat``.

Each format's package is imported only when a pipeline uses it, so a missing optional
runtime fails with a clear message naming it instead of at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from etl.config import Settings, TableFormat
from etl.exceptions import SinkError
from etl.formats.base import CommitInfo, TableFormatSupport, TableSink, TableSpec

__all__ = [
    "CommitInfo",
    "TableFormatSupport",
    "TableSink",
    "TableSpec",
    "formats_used",
    "load_sink",
    "table_format",
]

_REGISTRY: dict[TableFormat, str] = {
    TableFormat.ICEBERG: "etl.formats.iceberg:IcebergFormat",
    TableFormat.DELTA: "etl.formats.delta:DeltaFormat",
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


def formats_used(settings: Settings, pipelines: Iterable[str] | None = None) -> list[TableFormat]:
    """The formats the named pipelines (default: all) write, plus Iceberg when a catalog is set."""
    names = list(pipelines) if pipelines is not None else list(settings.pipelines)
    used = {settings.pipeline(name).sink.format for name in names}
    if settings.catalog is not None:
        used.add(TableFormat.ICEBERG)
    return sorted(used)
