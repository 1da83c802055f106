"""Reading a table back without Spark: each format's independent reader."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from etl.config import TableFormat
from etl.formats import TableSink


def independent_arrow(fmt: TableFormat, table: TableSink, warehouse: Path) -> pa.Table:
    """The table's current rows as pyiceberg, delta-rs or hudi-rs reads them."""
    if fmt is TableFormat.ICEBERG:
        from pyiceberg.table import StaticTable

        _, namespace, name = table.name.split(".")
        metadata = warehouse / namespace / name / "metadata"
        version = (metadata / "version-hint.text").read_text().strip()
        return (
            StaticTable.from_metadata(str(metadata / f"v{version}.metadata.json")).scan().to_arrow()
        )
    if fmt is TableFormat.DELTA:
        from deltalake import DeltaTable

        return DeltaTable(location_path(table)).to_pyarrow_table()
    from hudi import HudiTable

    return pa.Table.from_batches(HudiTable(location_path(table)).read())


def location_path(table: TableSink) -> str:
    """A Delta or Hudi table's location as a local path."""
    location = table.spec.location
    assert location is not None
    return location.removeprefix("file://")
