"""The verification scan reads files as what they are, not through a table format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from etl.verify import scan_location

SUBJECT = "person-042@example.org"


def _names(hits: tuple[str, ...]) -> list[str]:
    return sorted(Path(h).name for h in hits)


def test_scan_finds_a_value_in_nested_compressed_parquet_columns(tmp_path: Path) -> None:
    nested = pa.table(
        {
            "id": [1, 2],
            "who": [{"email": "x@example.org"}, {"email": SUBJECT}],
            "tags": [["a"], []],
        }
    )
    pq.write_table(nested, tmp_path / "nested.parquet", compression="zstd")
    stats = pa.table({"stats": [f'{{"minValues":{{"email":"{SUBJECT}"}}}}']})
    pq.write_table(stats, tmp_path / "00010.checkpoint.parquet")
    raw = pa.table({"value": [b"\x02\x10" + SUBJECT.encode() + b"\x00"]})
    pq.write_table(raw, tmp_path / "dead-letters.parquet")
    pq.write_table(pa.table({"email": ["someone-else@example.org"]}), tmp_path / "clean.parquet")

    result = scan_location(str(tmp_path), [SUBJECT])

    assert _names(result.hits) == [
        "00010.checkpoint.parquet",
        "dead-letters.parquet",
        "nested.parquet",
    ]
    assert result.files == 4 and result.bytes > 0 and result.unparsed == ()


def test_scan_finds_a_truncated_column_bound_in_a_deflated_manifest(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "manifest_entry",
        "fields": [{"name": "lower_bounds", "type": {"type": "map", "values": "bytes"}}],
    }
    # Iceberg keeps the first 16 characters of a string column's lower bound
    with (tmp_path / "m0.avro").open("wb") as out:
        fastavro.writer(out, schema, [{"lower_bounds": {"2": SUBJECT[:16].encode()}}], "deflate")
    with (tmp_path / "m1.avro").open("wb") as out:
        fastavro.writer(out, schema, [{"lower_bounds": {"2": b"other-person@exa"}}], "deflate")

    assert _names(scan_location(str(tmp_path), [SUBJECT]).hits) == ["m0.avro"]


def test_scan_reads_text_logs_and_gzipped_hfile_blocks(tmp_path: Path) -> None:
    (tmp_path / "00003.json").write_text(f'{{"add":{{"stats":"{{\\"max\\":\\"{SUBJECT}\\"}}"}}}}')
    block = gzip.compress(b"key:" + SUBJECT.encode())
    header = b"DATABLK*" + struct.pack(">iiqbii", len(block), 64, -1, 1, 16384, 0)
    (tmp_path / "files-0000_0-1-0_0001.hfile").write_bytes(b"\x00" * 10 + header + block)
    (tmp_path / "hoodie.properties").write_text("hoodie.table.name=t\n")

    result = scan_location(str(tmp_path), [SUBJECT, "ab"])

    assert _names(result.hits) == ["00003.json", "files-0000_0-1-0_0001.hfile"]


def test_scan_of_a_missing_location_reads_nothing(tmp_path: Path) -> None:
    assert scan_location(str(tmp_path / "absent"), [SUBJECT]).files == 0
