from __future__ import annotations

import json
from typing import Any

import pytest

from transforms.schema_evolution import Admission, Merged, ReaderSchema, WriterVersion, merge


def _record(*fields: dict[str, Any], name: str = "Ev") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


ID = {"name": "id", "type": "long"}


def test_merge_adds_writer_only_field_as_optional_with_null_default() -> None:
    reader = _record(ID)
    writer = _record(ID, {"name": "note", "type": "string"})
    merged, changes = _ok(merge(reader, writer))
    assert merged == _record(ID, {"name": "note", "type": ["null", "string"], "default": None})
    assert changes == ["Ev.note: added"]


def test_merge_widens_int_to_long_and_float_to_double() -> None:
    reader = _record(
        {"name": "n", "type": "int"}, {"name": "x", "type": ["null", "float"], "default": None}
    )
    writer = _record(
        {"name": "n", "type": "long"}, {"name": "x", "type": ["null", "double"], "default": None}
    )
    merged, changes = _ok(merge(reader, writer))
    assert merged == _record(
        {"name": "n", "type": "long"}, {"name": "x", "type": ["null", "double"], "default": None}
    )
    assert changes == ["Ev.n: widened int -> long", "Ev.x: widened float -> double"]


def test_merge_keeps_wider_reader_for_narrower_writer() -> None:
    reader = _record({"name": "n", "type": "double"})
    merged, changes = _ok(merge(reader, _record({"name": "n", "type": "int"})))
    assert (merged, changes) == (reader, [])


def test_merge_appends_new_enum_symbols_in_nested_records() -> None:
    status = {"type": "enum", "name": "S", "symbols": ["A", "B"]}
    reader = _record({"name": "inner", "type": _record({"name": "s", "type": status}, name="In")})
    writer_status = {"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}
    writer = _record(
        {"name": "inner", "type": _record({"name": "s", "type": writer_status}, name="In")}
    )
    merged, changes = _ok(merge(reader, writer))
    assert merged["fields"][0]["type"]["fields"][0]["type"]["symbols"] == ["A", "B", "C"]
    assert changes == ["Ev.inner.s: enum symbols added ['C']"]


def test_merge_widens_decimal_precision_same_scale() -> None:
    dec = {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}
    merged, _ = _ok(
        merge(
            _record({"name": "d", "type": dec}),
            _record({"name": "d", "type": {**dec, "precision": 14}}),
        )
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
def test_merge_incompatible_changes_give_the_reason_with_the_path(
    reader_type: Any, writer_type: Any, reason: str | None
) -> None:
    reader, writer = (
        _record({"name": "f", "type": reader_type}),
        _record({"name": "f", "type": writer_type}),
    )
    expected = Merged(reader) if reason is None else Merged(reader, incompatible=reason)
    assert merge(reader, writer) == expected


def test_merge_required_reader_field_missing_in_writer_is_incompatible() -> None:
    reader = _record(ID, {"name": "must", "type": "string"})
    merged = merge(reader, _record(ID))
    assert merged.schema == reader
    assert (
        merged.incompatible
        == "Ev.must: required by the table schema (no default), missing in the writer"
    )


def test_merge_reader_field_with_default_may_be_missing_in_writer() -> None:
    reader = _record(ID, {"name": "opt", "type": ["null", "string"], "default": None})
    assert merge(reader, _record(ID)) == Merged(reader)


def test_reader_schema_admit_evolves_once_and_remembers_rejections() -> None:
    reader = ReaderSchema.from_json(json.dumps(_record(ID)))
    v2 = WriterVersion(
        "v2",
        json.dumps(_record(ID, {"name": "note", "type": ["null", "string"], "default": None})),
        2,
    )
    bad = WriterVersion("bad", json.dumps(_record({"name": "id", "type": "string"})), 3)
    admission = reader.admit([v2, bad])
    assert admission.rejected == {"bad": "Ev.id: type changed from long to string"}
    assert admission.changes == ("v2: Ev.note: added",)
    assert json.loads(reader.json())["fields"][1]["name"] == "note"
    # decided versions are not merged again; the rejection is reported for batches that carry it
    assert reader.admit([v2]) == Admission((), {})
    assert reader.admit([bad]) == Admission((), {"bad": "Ev.id: type changed from long to string"})


def _clashing_versions() -> tuple[WriterVersion, WriterVersion]:
    """Two versions adding the same field with different types; the later-registered one
    sorts first by id, so only registration order decides which is admitted."""
    as_string = _record(ID, {"name": "note", "type": "string"})
    as_long = _record(ID, {"name": "note", "type": "long"})
    first = WriterVersion("ffff-registered-first", json.dumps(as_string), 1)
    second = WriterVersion("0000-registered-second", json.dumps(as_long), 2)
    return first, second


def test_reader_schema_admit_follows_registration_order_not_id_order() -> None:
    first, second = _clashing_versions()
    reader = ReaderSchema.from_json(json.dumps(_record(ID)))
    admission = reader.admit([second, first])
    assert admission.rejected == {
        "0000-registered-second": "Ev.note: type changed from string to long"
    }
    assert json.loads(reader.json())["fields"][1] == {
        "name": "note",
        "type": ["null", "string"],
        "default": None,
    }


def test_reader_schema_seeded_from_the_stored_schema_decides_as_before_a_restart() -> None:
    first, second = _clashing_versions()
    before = ReaderSchema.from_json(json.dumps(_record(ID)))
    before.admit([first])
    # a restart whose first batch holds only the later version: seeded from what the table
    # recorded it is rejected again; started from the configured schema it would be admitted
    restarted, merged = ReaderSchema.seeded(json.dumps(_record(ID)), before.json())
    assert merged.incompatible is None
    assert restarted.admit([second]).rejected == {
        "0000-registered-second": "Ev.note: type changed from string to long"
    }
    fresh = ReaderSchema.from_json(json.dumps(_record(ID)))
    assert fresh.admit([second]).rejected == {}


def test_reader_schema_seeded_widens_the_stored_schema_by_the_configured_one() -> None:
    stored = json.dumps(_record(ID))
    configured = json.dumps(
        _record(ID, {"name": "extra", "type": ["null", "int"], "default": None})
    )
    reader, merged = ReaderSchema.seeded(configured, stored)
    assert merged.changes == ("Ev.extra: added",)
    assert [f["name"] for f in json.loads(reader.json())["fields"]] == ["id", "extra"]
    _, clash = ReaderSchema.seeded(json.dumps(_record({"name": "id", "type": "string"})), stored)
    assert clash.incompatible == "Ev.id: type changed from long to string"


def _ok(merged: Merged) -> tuple[dict[str, Any], list[str]]:
    """The schema and changes of a compatible merge."""
    assert merged.incompatible is None, merged.incompatible
    return merged.schema, list(merged.changes)


def test_merge_without_widening_makes_a_widening_writer_incompatible() -> None:
    reader = _record({"name": "n", "type": "int"})
    writer = _record({"name": "n", "type": "long"}, {"name": "extra", "type": "string"})
    assert merge(reader, writer, widen=False) == Merged(
        reader, incompatible="Ev.n: widening int -> long is not supported by the table format"
    )
    # adding fields still works
    added = merge(
        reader, _record({"name": "n", "type": "int"}, {"name": "x", "type": "string"}), widen=False
    )
    assert added.incompatible is None and added.changes == ("Ev.x: added",)
