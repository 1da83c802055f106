"""Live schema evolution: fold each new writer schema version into the table's reader schema.

The Glue registry checks compatibility in AWS, but not in moto, and a registry's mode can be
NONE anyway; so the job reasons for itself. A writer version is **admitted** when the reader
schema can be widened to read it while still reading every earlier version:

- a field only the writer has is added to the reader as optional (default null), so rows of
  older versions read it as null;
- int → long, float → double and a larger decimal precision widen the reader (Iceberg can
  widen the column the same way); a writer narrower than the reader is read by promotion;
- new enum symbols are appended; a nullable writer makes the reader nullable.

Anything else — a changed type, a changed logical type (millis vs micros would silently
rescale), a different decimal scale, a reader field without default that the writer lacks —
is **incompatible**: the version's rows go to the dead-letter table with the reason.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from etl.exceptions import IncompatibleSchemaError

_WIDENS = {("int", "long"), ("float", "double")}
_PROMOTES = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass
class ReaderSchema:
    """The evolving reader schema of one pipeline, and what each writer version did to it."""

    schema: dict[str, Any]
    admitted: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, text: str) -> ReaderSchema:
        """Starts from the configured reader schema."""
        return cls(json.loads(text))

    def json(self) -> str:
        """The current reader schema as JSON."""
        return json.dumps(self.schema)

    def admit(self, writers: dict[str, str]) -> dict[str, str]:
        """Folds new writer versions in; returns {version id: reason} of the incompatible ones.

        Versions seen before are skipped, so the work is once per version per process.
        """
        for version_id, text in sorted(writers.items()):
            if version_id in self.admitted or version_id in self.rejected:
                continue
            try:
                merged, changes = merge(self.schema, json.loads(text))
            except IncompatibleSchemaError as err:
                self.rejected[version_id] = str(err)
                continue
            self.schema = merged
            self.admitted.add(version_id)
            self.changes += [f"{version_id}: {c}" for c in changes]
        return {v: r for v, r in self.rejected.items() if v in writers}


def merge(reader: dict[str, Any], writer: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Returns (widened reader, list of changes) or raises IncompatibleSchemaError.

    Args:
        reader: The current reader (table) schema, an Avro record.
        writer: A writer schema version, an Avro record.
    """
    changes: list[str] = []
    merged = _merge(
        copy.deepcopy(reader), writer, path=reader.get("name", "record"), changes=changes
    )
    return merged, changes


def _merge(r: Any, w: Any, *, path: str, changes: list[str]) -> Any:
    """Merges one (possibly union) type position."""
    r_null, r_base = _split_null(r)
    w_null, w_base = _split_null(w)
    base = _merge_base(r_base, w_base, path=path, changes=changes)
    if w_null and not r_null:
        changes.append(f"{path}: now nullable")
        return [base, "null"]
    if r_null:
        return ["null", base] if isinstance(r, list) and r and r[0] == "null" else [base, "null"]
    return base


def _merge_base(r: Any, w: Any, *, path: str, changes: list[str]) -> Any:
    """Merges two non-null, non-union types."""
    if _is_reference(r) or _is_reference(w):
        # a named type used again by name: its definition was merged where it first appeared
        if _type_name(r) == _type_name(w):
            return r
        raise IncompatibleSchemaError(f"{path}: type changed from {_show(r)} to {_show(w)}")
    if isinstance(r, list) or isinstance(w, list):
        if json.dumps(r, sort_keys=True) == json.dumps(w, sort_keys=True):
            return r
        raise IncompatibleSchemaError(f"{path}: union changed from {_show(r)} to {_show(w)}")
    r_kind, w_kind = _kind(r), _kind(w)
    r_logical, w_logical = _logical(r), _logical(w)
    if r_logical != w_logical and not (r_logical == "decimal" == w_logical):
        raise IncompatibleSchemaError(
            f"{path}: logical type changed from {r_logical or r_kind} to {w_logical or w_kind}"
        )
    if r_logical == "decimal":
        return _merge_decimal(r, w, path=path, changes=changes)
    if r_kind in _PRIMITIVES and w_kind in _PRIMITIVES:
        if r_kind == w_kind or (w_kind, r_kind) in _PROMOTES:
            return r
        if (r_kind, w_kind) in _WIDENS:
            changes.append(f"{path}: widened {r_kind} -> {w_kind}")
            return w if isinstance(r, str) else {**r, "type": w_kind}
        raise IncompatibleSchemaError(f"{path}: type changed from {r_kind} to {w_kind}")
    if r_kind != w_kind:
        raise IncompatibleSchemaError(f"{path}: type changed from {r_kind} to {w_kind}")
    if r_kind == "record":
        return _merge_record(r, w, path=path, changes=changes)
    if r_kind == "enum":
        new = [s for s in w["symbols"] if s not in r["symbols"]]
        if new:
            changes.append(f"{path}: enum symbols added {new}")
            return {**r, "symbols": [*r["symbols"], *new]}
        return r
    if r_kind == "array":
        return {**r, "items": _merge(r["items"], w["items"], path=f"{path}[]", changes=changes)}
    if r_kind == "map":
        return {
            **r,
            "values": _merge(r["values"], w["values"], path=f"{path}{{}}", changes=changes),
        }
    if r_kind == "fixed" and r.get("size") != w.get("size"):
        raise IncompatibleSchemaError(f"{path}: fixed size changed from {r['size']} to {w['size']}")
    return r


def _merge_record(r: dict[str, Any], w: dict[str, Any], *, path: str, changes: list[str]) -> Any:
    """Merges records field by field, adding writer-only fields as optional."""
    w_fields = {f["name"]: f for f in w["fields"]}
    fields = []
    for rf in r["fields"]:
        name = rf["name"]
        if name in w_fields:
            merged = _merge(
                rf["type"], w_fields[name]["type"], path=f"{path}.{name}", changes=changes
            )
            fields.append({**rf, "type": merged})
        elif "default" in rf:
            fields.append(rf)
        else:
            raise IncompatibleSchemaError(
                f"{path}.{name}: required by the table schema (no default), missing in the writer"
            )
    known = {f["name"] for f in r["fields"]}
    for wf in w["fields"]:
        if wf["name"] not in known:
            _, w_base = _split_null(wf["type"])
            branches = w_base if isinstance(w_base, list) else [w_base]
            fields.append({"name": wf["name"], "type": ["null", *branches], "default": None})
            changes.append(f"{path}.{wf['name']}: added")
    return {**r, "fields": fields}


def _merge_decimal(r: dict[str, Any], w: dict[str, Any], *, path: str, changes: list[str]) -> Any:
    """Decimals: same scale; the reader takes the larger precision."""
    if r.get("scale", 0) != w.get("scale", 0):
        raise IncompatibleSchemaError(
            f"{path}: decimal scale changed from {r.get('scale', 0)} to {w.get('scale', 0)}"
        )
    if w["precision"] > r["precision"]:
        changes.append(f"{path}: decimal precision widened {r['precision']} -> {w['precision']}")
        return {**r, "precision": w["precision"]}
    return r


def _is_reference(t: Any) -> bool:
    """True for a bare name of a named type (not a primitive)."""
    return isinstance(t, str) and t not in _PRIMITIVES


def _type_name(t: Any) -> str | None:
    """The unqualified name of a named type or reference."""
    name = t if isinstance(t, str) else t.get("name") if isinstance(t, dict) else None
    return name.rsplit(".", 1)[-1] if name else None


def _split_null(t: Any) -> tuple[bool, Any]:
    """(nullable, the non-null type); unions of several non-null types stay unions."""
    if isinstance(t, list):
        rest = [b for b in t if b != "null"]
        return len(rest) < len(t), rest[0] if len(rest) == 1 else rest
    return False, t


def _kind(t: Any) -> str:
    """The Avro type name of a schema position ('record', 'int', a named reference ...)."""
    if isinstance(t, dict):
        inner = t["type"]
        return inner if isinstance(inner, str) else _kind(inner)
    return str(t)


def _logical(t: Any) -> str | None:
    """The logical type of a schema position, if any."""
    return t.get("logicalType") if isinstance(t, dict) else None


def _show(t: Any) -> str:
    """A compact rendering of a type for messages."""
    return json.dumps(t, separators=(",", ":"))
