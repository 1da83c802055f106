"""Reading a table back without Spark: each format's independent reader."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from devtools.tables import hadoop_iceberg_table
from etl.config import TableFormat
from etl.formats import TableSink


def independent_arrow(fmt: TableFormat, table: TableSink, warehouse: Path) -> pa.Table:
    """The table's current rows as pyiceberg, delta-rs or hudi-rs reads them."""
    if fmt is TableFormat.ICEBERG:
        arrow: pa.Table = hadoop_iceberg_table(warehouse, table.name).scan().to_arrow()
        return arrow
    if fmt is TableFormat.DELTA:
        return _delta_arrow(location_path(table))
    from hudi import HudiTable

    return pa.Table.from_batches(HudiTable(location_path(table)).read())


def commit_properties(fmt: TableFormat, table: TableSink, warehouse: Path) -> list[dict[str, str]]:
    """The commit metadata of each commit carrying ours (etl.*), oldest first, as pyiceberg
    (snapshot summaries), delta-rs (commit userMetadata) or hudi-rs (instant metadata) read it."""
    found: list[dict[str, str]] = []
    if fmt is TableFormat.ICEBERG:
        for snapshot in hadoop_iceberg_table(warehouse, table.name).snapshots():
            assert snapshot.summary is not None
            found.append(dict(snapshot.summary.additional_properties))
    elif fmt is TableFormat.DELTA:
        from deltalake import DeltaTable

        history = sorted(DeltaTable(location_path(table)).history(), key=lambda c: c["version"])
        found = [json.loads(c["userMetadata"]) for c in history if c.get("userMetadata")]
    else:
        from hudi import HudiTable

        timeline = HudiTable(location_path(table)).get_timeline()
        instants = timeline.get_completed_commits() + timeline.get_completed_deltacommits()
        for instant in sorted(instants, key=lambda i: i.timestamp):
            metadata = json.loads(timeline.get_instant_metadata_in_json(instant))
            found.append(dict(metadata.get("extraMetadata") or {}))
    return [props for props in found if any(k.startswith("etl.") for k in props)]


def location_path(table: TableSink) -> str:
    """A Delta or Hudi table's location as a local path."""
    location = table.spec.location
    assert location is not None
    return location.removeprefix("file://")


def _delta_arrow(path: str) -> pa.Table:
    """A Delta table read by delta-rs; one with the deletion-vector feature (which delta-rs
    cannot apply) by its files as delta-rs lists them, provided no file has a deletion vector."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaProtocolError

    table = DeltaTable(path)
    try:
        return table.to_pyarrow_table()
    except DeltaProtocolError:
        actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
        vectors = [v for v in actions.get("deletionVector.storageType", []) if v]
        assert not vectors, f"{path}: files with deletion vectors, no independent read"
        return pa.concat_tables(
            [pq.read_table(uri.removeprefix("file://")) for uri in table.file_uris()],
            promote_options="default",
        )
