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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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


class _Incompatible(ValueError):
    """A writer version cannot be read into the reader schema (internal: becomes a reason)."""


@dataclass(frozen=True)
class WriterVersion:
    """One writer schema version as the registry knows it."""

    version_id: str
    definition: str
    # registration order (Glue's VersionNumber): versions are folded in this order, so the
    # outcome does not depend on which ids a batch happens to hold or how they sort
    number: int


@dataclass(frozen=True)
class Merged:
    """The outcome of folding one writer into a reader: the widened schema and what changed,
    or, when ``incompatible`` is set, why the writer cannot be read (schema unchanged)."""

    schema: dict[str, Any]
    changes: tuple[str, ...] = ()
    incompatible: str | None = None


@dataclass(frozen=True)
class Admission:
    """What admitting a batch's writer versions did: changes to the reader, rejections."""

    changes: tuple[str, ...]
    # version id -> reason, for the versions passed in that cannot be read
    rejected: dict[str, str]


@dataclass
class ReaderSchema:
    """The evolving reader schema of one pipeline and the versions already decided.

    Start it from the table's last stored reader schema (``seeded``), so a restart decides
    each version exactly as the run before it did.
    """

    schema: dict[str, Any]
    admitted: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    # whether the table format can widen column types (see ``merge``)
    widen: bool = True

    @classmethod
    def from_json(cls, text: str, *, widen: bool = True) -> ReaderSchema:
        """Starts from a reader schema."""
        return cls(json.loads(text), widen=widen)

    @classmethod
    def seeded(
        cls, configured: str, stored: str | None, *, widen: bool = True
    ) -> tuple[ReaderSchema, Merged]:
        """Starts from the table's stored reader schema, widened by the configured one.

        Args:
            configured: The reader schema from the settings.
            stored: The reader schema the table's newest commit recorded, if any.

        Returns:
            The reader schema, and how the configured schema merged into the stored one
            (``incompatible`` set when it cannot be: the caller decides how to fail).
        """
        if stored is None:
            return cls.from_json(configured, widen=widen), Merged(json.loads(configured))
        merged = merge(json.loads(stored), json.loads(configured), widen=widen)
        return cls(merged.schema, widen=widen), merged

    def json(self) -> str:
        """The current reader schema as JSON."""
        return json.dumps(self.schema)

    def admit(self, writers: Iterable[WriterVersion]) -> Admission:
        """Folds new writer versions in, in registration order.

        Versions decided before are skipped, so the work is once per version per process.
        """
        changes: list[str] = []
        ordered = sorted(writers, key=lambda w: (w.number, w.version_id))
        for writer in ordered:
            if writer.version_id in self.admitted or writer.version_id in self.rejected:
                continue
            merged = merge(self.schema, json.loads(writer.definition), widen=self.widen)
            if merged.incompatible is not None:
                self.rejected[writer.version_id] = merged.incompatible
                continue
            self.schema = merged.schema
            self.admitted.add(writer.version_id)
            changes += [f"{writer.version_id}: {c}" for c in merged.changes]
        ids = {w.version_id for w in ordered}
        return Admission(tuple(changes), {v: r for v, r in self.rejected.items() if v in ids})


def merge(reader: dict[str, Any], writer: dict[str, Any], *, widen: bool = True) -> Merged:
    """Folds a writer schema into a reader schema.

    Args:
        reader: The current reader (table) schema, an Avro record.
        writer: A writer schema version, an Avro record.
        widen: Whether the table can widen column types (int -> long, float -> double, decimal
            precision); if not, a writer needing it is incompatible.

    Returns:
        The widened reader and the list of changes, or the reason it cannot be done.
    """
    changes: list[str] = []
    try:
        merged = _merge(
            copy.deepcopy(reader),
            writer,
            path=reader.get("name", "record"),
            changes=changes,
            widen=widen,
        )
    except _Incompatible as err:
        return Merged(reader, incompatible=str(err))
    return Merged(merged, tuple(changes))


def _merge(r: Any, w: Any, *, path: str, changes: list[str], widen: bool) -> Any:
    """Merges one (possibly union) type position."""
    r_null, r_base = _split_null(r)
    w_null, w_base = _split_null(w)
    base = _merge_base(r_base, w_base, path=path, changes=changes, widen=widen)
    if w_null and not r_null:
        changes.append(f"{path}: now nullable")
        return [base, "null"]
    if r_null:
        return ["null", base] if isinstance(r, list) and r and r[0] == "null" else [base, "null"]
    return base


def _merge_base(r: Any, w: Any, *, path: str, changes: list[str], widen: bool) -> Any:
    """Merges two non-null, non-union types."""
    if _is_reference(r) or _is_reference(w):
        # a named type used again by name: its definition was merged where it first appeared
        if _type_name(r) == _type_name(w):
            return r
        raise _Incompatible(f"{path}: type changed from {_show(r)} to {_show(w)}")
    if isinstance(r, list) or isinstance(w, list):
        if json.dumps(r, sort_keys=True) == json.dumps(w, sort_keys=True):
            return r
        raise _Incompatible(f"{path}: union changed from {_show(r)} to {_show(w)}")
    r_kind, w_kind = _kind(r), _kind(w)
    r_logical, w_logical = _logical(r), _logical(w)
    if r_logical != w_logical and not (r_logical == "decimal" == w_logical):
        raise _Incompatible(
            f"{path}: logical type changed from {r_logical or r_kind} to {w_logical or w_kind}"
        )
    if r_logical == "decimal":
        return _merge_decimal(r, w, path=path, changes=changes, widen=widen)
    if r_kind in _PRIMITIVES and w_kind in _PRIMITIVES:
        if r_kind == w_kind or (w_kind, r_kind) in _PROMOTES:
            return r
        if (r_kind, w_kind) in _WIDENS:
            if not widen:
                raise _Incompatible(
                    f"{path}: widening {r_kind} -> {w_kind} is not supported by the table format"
                )
            changes.append(f"{path}: widened {r_kind} -> {w_kind}")
            return w if isinstance(r, str) else {**r, "type": w_kind}
        raise _Incompatible(f"{path}: type changed from {r_kind} to {w_kind}")
    if r_kind != w_kind:
        raise _Incompatible(f"{path}: type changed from {r_kind} to {w_kind}")
    if r_kind == "record":
        return _merge_record(r, w, path=path, changes=changes, widen=widen)
    if r_kind == "enum":
        new = [s for s in w["symbols"] if s not in r["symbols"]]
        if new:
            changes.append(f"{path}: enum symbols added {new}")
            return {**r, "symbols": [*r["symbols"], *new]}
        return r
    if r_kind == "array":
        return {
            **r,
            "items": _merge(r["items"], w["items"], path=f"{path}[]", changes=changes, widen=widen),
        }
    if r_kind == "map":
        return {
            **r,
            "values": _merge(
                r["values"], w["values"], path=f"{path}{{}}", changes=changes, widen=widen
            ),
        }
    if r_kind == "fixed" and r.get("size") != w.get("size"):
        raise _Incompatible(f"{path}: fixed size changed from {r['size']} to {w['size']}")
    return r


def _merge_record(
    r: dict[str, Any], w: dict[str, Any], *, path: str, changes: list[str], widen: bool
) -> Any:
    """Merges records field by field, adding writer-only fields as optional."""
    w_fields = {f["name"]: f for f in w["fields"]}
    fields = []
    for rf in r["fields"]:
        name = rf["name"]
        if name in w_fields:
            merged = _merge(
                rf["type"],
                w_fields[name]["type"],
                path=f"{path}.{name}",
                changes=changes,
                widen=widen,
            )
            fields.append({**rf, "type": merged})
        elif "default" in rf:
            fields.append(rf)
        else:
            raise _Incompatible(
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


def _merge_decimal(
    r: dict[str, Any], w: dict[str, Any], *, path: str, changes: list[str], widen: bool
) -> Any:
    """Decimals: same scale; the reader takes the larger precision."""
    if r.get("scale", 0) != w.get("scale", 0):
        raise _Incompatible(
            f"{path}: decimal scale changed from {r.get('scale', 0)} to {w.get('scale', 0)}"
        )
    if w["precision"] > r["precision"]:
        if not widen:
            raise _Incompatible(
                f"{path}: widening decimal precision {r['precision']} -> {w['precision']} is "
                "not supported by the table format"
            )
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
