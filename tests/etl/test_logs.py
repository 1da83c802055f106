from __future__ import annotations

import json
import logging
import sys

from etl.commit import BatchResult
from etl.logs import EVENT, FIELDS, JsonFormatter
from etl.offsets import OffsetRange
from etl.pipeline import BatchProgress


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("etl.pipeline", logging.INFO, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_puts_an_events_fields_in_the_line() -> None:
    progress = BatchProgress(
        "orders",
        "q1",
        BatchResult(7, read=10, written=8, dead_lettered=1, committed=True, forgotten=1),
        (OffsetRange("orders", 0, 100, 110),),
        "streaming-etl.orders",
        {"orders/0": 5},
        decode_s=0.25,
        write_s=1.5,
        offsets_s=0.0125,
    )
    fields = progress.fields()
    line = JsonFormatter().format(_record("batch %s", **{EVENT: "batch", FIELDS: fields}))
    entry = json.loads(line)
    assert entry.pop("ts").endswith("Z")
    assert entry == {
        "level": "INFO",
        "logger": "etl.pipeline",
        "event": "batch",
        "pipeline": "orders",
        "query_id": "q1",
        "batch_id": 7,
        "committed": True,
        "read": 10,
        "written": 8,
        "dead_lettered": 1,
        "forgotten": 1,
        "violations": {},
        "offsets": [{"topic": "orders", "partition": 0, "start": 100, "end": 110}],
        "consumer_group": "streaming-etl.orders",
        "lag": 5,
        "lag_by_partition": {"orders/0": 5},
        "decode_s": 0.25,
        "write_s": 1.5,
        "offsets_s": 0.013,
        "seconds": 0.0,
    }


def test_json_formatter_keeps_plain_messages_and_errors_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = _record("it failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "it failed"
    assert "ValueError: bad" in entry["error"]
