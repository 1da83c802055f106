"""Table sinks behind one interface, looked up by table format.

Each format's module is imported only when a pipeline uses it, so a missing optional
runtime (say, Hudi's) fails with a clear message naming it instead of at import time.
"""

from __future__ import annotations

import importlib

from etl.config import TableFormat
from etl.exceptions import SinkError
from etl.sinks.base import CommitInfo, TableSink, TableSpec

__all__ = ["CommitInfo", "TableSink", "TableSpec", "load_sink"]

_REGISTRY: dict[TableFormat, str] = {
    TableFormat.ICEBERG: "etl.sinks.iceberg:IcebergSink",
}


def load_sink(table_format: TableFormat, spec: TableSpec) -> TableSink:
    """Returns the sink for a table format.

    Raises:
        SinkError: The format has no sink (yet) in this build.
    """
    try:
        target = _REGISTRY[table_format]
    except KeyError:
        known = ", ".join(f.value for f in _REGISTRY)
        raise SinkError(
            f"sink.format: expected one of {known}, found {table_format.value} (no sink for it)"
        ) from None
    module_name, class_name = target.split(":")
    sink_class: type[TableSink] = getattr(importlib.import_module(module_name), class_name)
    return sink_class(spec)
