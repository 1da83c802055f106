from __future__ import annotations

import json
from typing import Any

import pytest

from etl.exceptions import IncompatibleSchemaError
from etl.schema_evolution import ReaderSchema, merge


def _record(*fields: dict[str, Any], name: str = "Ev") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


ID = {"name": "id", "type": "long"}


def test_merge_adds_writer_only_field_as_optional_with_null_default() -> None:
    reader = _record(ID)
    writer = _record(ID, {"name": "note", "type": "string"})
    merged, changes = merge(reader, writer)
    assert merged == _record(ID, {"name": "note", "type": ["null", "string"], "default": None})
    assert changes == ["Ev.note: added"]


def test_merge_widens_int_to_long_and_float_to_double() -> None:
    reader = _record(
        {"name": "n", "type": "int"}, {"name": "x", "type": ["null", "float"], "default": None}
    )
    writer = _record(
        {"name": "n", "type": "long"}, {"name": "x", "type": ["null", "double"], "default": None}
    )
    merged, changes = merge(reader, writer)
    assert merged == _record(
        {"name": "n", "type": "long"}, {"name": "x", "type": ["null", "double"], "default": None}
    )
    assert changes == ["Ev.n: widened int -> long", "Ev.x: widened float -> double"]


def test_merge_keeps_wider_reader_for_narrower_writer() -> None:
    reader = _record({"name": "n", "type": "double"})
    merged, changes = merge(reader, _record({"name": "n", "type": "int"}))
    assert (merged, changes) == (reader, [])


def test_merge_appends_new_enum_symbols_in_nested_records() -> None:
    status = {"type": "enum", "name": "S", "symbols": ["A", "B"]}
    reader = _record({"name": "inner", "type": _record({"name": "s", "type": status}, name="In")})
    writer_status = {"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}
    writer = _record(
        {"name": "inner", "type": _record({"name": "s", "type": writer_status}, name="In")}
    )
    merged, changes = merge(reader, writer)
    assert merged["fields"][0]["type"]["fields"][0]["type"]["symbols"] == ["A", "B", "C"]
    assert changes == ["Ev.inner.s: enum symbols added ['C']"]


def test_merge_widens_decimal_precision_same_scale() -> None:
    dec = {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}
    merged, _ = merge(
        _record({"name": "d", "type": dec}),
        _record({"name": "d", "type": {**dec, "precision": 14}}),
    )
    assert merged["fields"][0]["type"]["precision"] == 14


@pytest.mark.parametrize(
    ("reader_type", "writer_type", "reason"),
    [
        ("string", "long", "Ev.f: type changed from string to long"),
        ("long", "int", None),
        (
            {"type": "long", "logicalType": "timestamp-millis"},
            {"type": "long", "logicalType": "timestamp-micros"},
            "Ev.f: logical type changed from timestamp-millis to timestamp-micros",
        ),
        (
            {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
            {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 3},
            "Ev.f: decimal scale changed from 2 to 3",
        ),
        ("int", "double", "Ev.f: type changed from int to double"),
        (
            {"type": "array", "items": "string"},
            {"type": "map", "values": "string"},
            "Ev.f: type changed from array to map",
        ),
    ],
)
def test_merge_incompatible_changes_raise_with_the_path(
    reader_type: Any, writer_type: Any, reason: str | None
) -> None:
    reader, writer = (
        _record({"name": "f", "type": reader_type}),
        _record({"name": "f", "type": writer_type}),
    )
    if reason is None:
        assert merge(reader, writer) == (reader, [])
        return
    with pytest.raises(IncompatibleSchemaError) as err:
        merge(reader, writer)
    assert str(err.value) == reason


def test_merge_required_reader_field_missing_in_writer_is_incompatible() -> None:
    reader = _record(ID, {"name": "must", "type": "string"})
    with pytest.raises(IncompatibleSchemaError, match=r"^Ev\.must: required by the table schema"):
        merge(reader, _record(ID))


def test_merge_reader_field_with_default_may_be_missing_in_writer() -> None:
    reader = _record(ID, {"name": "opt", "type": ["null", "string"], "default": None})
    assert merge(reader, _record(ID)) == (reader, [])


def test_reader_schema_admit_evolves_once_and_remembers_rejections() -> None:
    reader = ReaderSchema.from_json(json.dumps(_record(ID)))
    v2 = json.dumps(_record(ID, {"name": "note", "type": ["null", "string"], "default": None}))
    bad = json.dumps(_record({"name": "id", "type": "string"}))
    assert reader.admit({"v2": v2, "bad": bad}) == {
        "bad": "Ev.id: type changed from long to string"
    }
    assert reader.changes == ["v2: Ev.note: added"]
    assert json.loads(reader.json())["fields"][1]["name"] == "note"
    # seen versions are not merged again; the rejection is reported for batches that carry it
    reader.changes.clear()
    assert reader.admit({"v2": v2}) == {}
    assert reader.admit({"bad": bad}) == {"bad": "Ev.id: type changed from long to string"}
    assert reader.changes == []
