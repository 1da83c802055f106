"""Unix cron expressions (the settings' ``schedule``) as AWS's ``cron(...)`` expressions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from etl.config import check_cron


@dataclass(frozen=True)
class _CronField:
    """One field of a cron expression: its name, its range, the names its values take."""

    name: str
    low: int
    high: int
    names: Mapping[str, int] = field(default_factory=dict)


_MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_WEEKDAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_MINUTE = _CronField("minute", 0, 59)
_HOUR = _CronField("hour", 0, 23)
_DAY = _CronField("day-of-month", 1, 31)
_MONTH = _CronField("month", 1, 12, _MONTHS)
# Unix numbering (0 and 7 are Sunday); AWS's is 1-7 = SUN-SAT
_WEEKDAY = _CronField("day-of-week", 0, 6, _WEEKDAYS)
_UNRESTRICTED = ("*", "?")
_ITEM = re.compile(r"^(?:\*|(?P<start>[0-9A-Z]+)(?:-(?P<end>[0-9A-Z]+))?)(?:/(?P<step>[0-9]+))?$")
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def aws_cron(expression: str) -> str:
    """Converts a Unix cron expression (five fields, or a macro) to AWS's ``cron(...)``.

    AWS has six fields (minutes hours day-of-month month day-of-week year), exactly one of
    day-of-month and day-of-week is ``?``, day-of-week counts 1-7 from Sunday, and steps
    (``/``) are not allowed in day-of-week (they are expanded to a list).

    Raises:
        ValueError: Not a valid Unix expression, or one AWS cron cannot express (both
            day-of-month and day-of-week restricted: Unix runs on days matching either).
    """
    text = check_cron(expression)
    minute, hour, day, month, weekday = _MACROS.get(text, text).upper().split()
    if day not in _UNRESTRICTED and weekday not in _UNRESTRICTED:
        raise ValueError(
            f"day-of-month {day!r} and day-of-week {weekday!r} are both restricted: Unix cron "
            "runs on the days matching either, AWS cron restricts only one of them (the other "
            "is '?'); restrict one"
        )
    if weekday in _UNRESTRICTED:
        day, weekday = _aws_day(day), "?"
    else:
        day, weekday = "?", _aws_weekday(weekday)
    fields = (_aws_numeric(minute, _MINUTE), _aws_numeric(hour, _HOUR), day)
    return f"cron({' '.join(fields)} {_aws_numeric(month, _MONTH)} {weekday} *)"


def _aws_day(text: str) -> str:
    """Day-of-month: as Unix has it, but L (last day) and nW (nearest weekday) stand alone."""
    if text == "L" or re.fullmatch(r"[0-9]{1,2}W", text):
        return text
    if "L" in text or "W" in text:
        raise ValueError(f"day-of-month {text!r}: AWS cron takes L and W alone, not in a list")
    return _aws_numeric(text, _DAY)


def _aws_weekday(text: str) -> str:
    """Day-of-week in AWS's numbering; steps and wrapping ranges become lists."""
    if "#" in text:  # the nth weekday of the month, e.g. FRI#3
        day, _, nth = text.partition("#")
        if "," in text or "-" in day:
            raise ValueError(f"day-of-week {text!r}: AWS cron takes # alone, e.g. FRI#3")
        return f"{_number(day, _WEEKDAY) % 7 + 1}#{nth}"
    days = sorted({value % 7 + 1 for item in text.split(",") for value in _values(item, _WEEKDAY)})
    return "*" if len(days) == 7 else _runs(days)


def _aws_numeric(text: str, cron_field: _CronField) -> str:
    """Minutes, hours, day-of-month, month: AWS takes lists, ranges and ``start/step``."""
    if text in _UNRESTRICTED:
        return "*"
    items = text.split(",")
    return ",".join(_aws_item(item, cron_field, alone=len(items) == 1) for item in items)


def _aws_item(item: str, cron_field: _CronField, *, alone: bool) -> str:
    """One list item of a numeric field as AWS takes it: a number, range, start/step or list."""
    match = _match(item, cron_field)
    start, end, step = match["start"], match["end"], match["step"]
    if step and alone and end is None:  # */n or a/n: AWS's start/increment
        return f"{cron_field.low if start is None else _number(start, cron_field)}/{step}"
    if not step and start is not None:
        first = _number(start, cron_field)
        if end is None:
            return str(first)
        if first <= _number(end, cron_field):
            return f"{first}-{_number(end, cron_field)}"
    # a stepped range, a step inside a list or a range wrapping around: the values themselves
    return ",".join(str(value) for value in _values(item, cron_field))


def _values(item: str, cron_field: _CronField) -> list[int]:
    """The numbers one list item stands for, as croniter reads it."""
    match = _match(item, cron_field)
    step = int(match["step"] or 1)
    if match["start"] is None:
        start, end = cron_field.low, cron_field.high
    else:
        start = _number(match["start"], cron_field)
        end = _number(match["end"], cron_field) if match["end"] else start
        if match["step"] and not match["end"]:
            end = cron_field.high
    if start <= end:
        return list(range(start, end + 1))[::step]
    wrapped = [*range(start, cron_field.high + 1), *range(cron_field.low, end + 1)]
    return wrapped[::step]


def _match(item: str, cron_field: _CronField) -> re.Match[str]:
    """The item's start, end and step; the error names the field."""
    match = _ITEM.match(item)
    if match is None:
        raise ValueError(f"{cron_field.name} {item!r}: AWS cron cannot express it")
    return match


def _number(text: str, cron_field: _CronField) -> int:
    """A value of the field, a number or a name (``JAN``, ``SUN``), as its number."""
    if text in cron_field.names:
        return cron_field.names[text]
    if not text.isdigit():  # croniter's R (random) and H (hashed) have no AWS form
        raise ValueError(f"{cron_field.name} {text!r}: AWS cron cannot express it")
    return int(text)


def _runs(values: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3,5``."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ",".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
