"""Validation of rendered AWS requests against botocore's service models, without a network."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import botocore.session
from botocore.model import Shape
from botocore.validate import validate_parameters

_SESSION = botocore.session.get_session()
# AWS's patterns are Java regexes, where a UTF-16 surrogate pair stands for one character
_SURROGATE_PAIR = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", re.IGNORECASE)


class ConstraintError(ValueError):
    """A value breaks an enum, pattern or maximum of the model that botocore leaves unchecked."""


def check_request(service: str, operation: str, params: Mapping[str, Any]) -> None:
    """Validates a request as botocore does before sending it (names, required members,
    types, minimums), then the enums, patterns and maximums the service checks and botocore's
    client-side validator does not.

    Raises:
        botocore.exceptions.ParamValidationError: botocore rejects it.
        ConstraintError: An enum, pattern or maximum of the model is broken.
    """
    shape = _SESSION.get_service_model(service).operation_model(operation).input_shape
    assert shape is not None, f"{service} {operation} takes no parameters"
    validate_parameters(dict(params), shape)
    problems = list(_constraints(params, shape, operation))
    if problems:
        raise ConstraintError("; ".join(problems))


def _constraints(value: Any, shape: Shape, path: str) -> Iterator[str]:
    limit = shape.metadata.get("max")
    if shape.type_name == "structure":
        for key, member in shape.members.items():  # type: ignore[attr-defined]
            if key in value:
                yield from _constraints(value[key], member, f"{path}.{key}")
    elif shape.type_name == "list":
        if limit is not None and len(value) > limit:
            yield f"{path}: {len(value)} items, at most {limit}"
        for i, item in enumerate(value):
            yield from _constraints(item, shape.member, f"{path}[{i}]")  # type: ignore[attr-defined]
    elif shape.type_name == "map":
        if limit is not None and len(value) > limit:
            yield f"{path}: {len(value)} entries, at most {limit}"
        for key, item in value.items():
            yield from _constraints(key, shape.key, f"{path} key {key!r}")  # type: ignore[attr-defined]
            yield from _constraints(item, shape.value, f"{path}[{key!r}]")  # type: ignore[attr-defined]
    elif shape.type_name == "string":
        yield from _string(value, shape, path)
    elif shape.type_name in ("integer", "long") and limit is not None and value > limit:
        yield f"{path}: {value}, at most {limit}"


def _string(value: str, shape: Shape, path: str) -> Iterator[str]:
    enum = shape.enum  # type: ignore[attr-defined]
    if enum and value not in enum:
        yield f"{path}: {value!r} is not one of {enum}"
    limit = shape.metadata.get("max")
    if limit is not None and len(value) > limit:
        yield f"{path}: {len(value)} characters, at most {limit}"
    pattern = shape.metadata.get("pattern")
    # the services match the whole value (stricter than a search, so safe either way)
    if pattern is not None and re.fullmatch(_python(pattern), value, re.DOTALL) is None:
        yield f"{path}: {value!r} does not match {pattern!r}"


def _python(pattern: str) -> str:
    """A Java pattern for Python's re: ``\\uD800\\uDC00`` becomes ``\\U00010000``."""

    def astral(match: re.Match[str]) -> str:
        high, low = int(match[1], 16), int(match[2], 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"

    return _SURROGATE_PAIR.sub(astral, pattern)
