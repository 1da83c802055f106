"""Opening tables the jobs wrote without Spark, for the demo's checks and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def hadoop_iceberg_table(warehouse: Path, table: str) -> Any:
    """An Iceberg table of a Hadoop catalog opened by pyiceberg from its metadata files alone
    (the version ``version-hint.text`` names).

    Args:
        warehouse: The catalog's warehouse directory.
        table: ``[catalog.]namespace.name``.

    Returns:
        pyiceberg's ``StaticTable`` at the table's current metadata.
    """
    from pyiceberg.table import StaticTable

    namespace, name = table.split(".")[-2:]
    metadata = warehouse / namespace / name / "metadata"
    version = (metadata / "version-hint.text").read_text().strip()
    return StaticTable.from_metadata(str(metadata / f"v{version}.metadata.json"))
