from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from etl.config import SourceSettings
from etl.formats.base import CommitInfo
from etl.offsets import (
    ConsumerGroup,
    OffsetRange,
    admin_config,
    parse_ranges,
    ranges_between,
    ranges_json,
)
from etl.pipeline import Pipeline


def test_ranges_between_pairs_spark_offsets_and_marks_new_partitions() -> None:
    start = {"orders": {"0": 10, "1": 20}}
    end = {"orders": {"1": 25, "0": 12, "2": 7}, "refunds": {"0": 3}}
    assert ranges_between(start, end) == (
        OffsetRange("orders", 0, 10, 12),
        OffsetRange("orders", 1, 20, 25),
        # a partition that appeared after the last batch: read from its earliest offset
        OffsetRange("orders", 2, None, 7),
        OffsetRange("refunds", 0, None, 3),
    )


def test_ranges_json_round_trips_sorted_and_compact() -> None:
    ranges = [OffsetRange("b", 1, 5, 9), OffsetRange("a", 0, None, 4)]
    text = ranges_json(ranges)
    assert json.loads(text) == {"a": {"0": [None, 4]}, "b": {"1": [5, 9]}}
    assert " " not in text
    assert parse_ranges(text) == tuple(sorted(ranges))


@pytest.mark.parametrize("text", ["[]", '{"a": {"0": 5}}', '{"a": [1, 2]}', "not json"])
def test_parse_ranges_says_what_it_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected offset ranges as"):
        parse_ranges(text)


def test_admin_config_takes_the_sources_kafka_options_only() -> None:
    options = {
        "kafka.bootstrap.servers": "b:9098",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "AWS_MSK_IAM",
        "subscribe": "orders",
        "startingOffsets": "earliest",
    }
    assert admin_config(options, client_id="etl-orders-offsets") == {
        "bootstrap.servers": "b:9098",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "AWS_MSK_IAM",
        "client.id": "etl-orders-offsets",
    }


def test_consumer_group_defaults_to_the_pipeline_and_refuses_names_msk_cannot_report() -> None:
    source = SourceSettings(bootstrap_servers="b:1", topics=["t"])
    assert source.group_id("orders") == "streaming-etl.orders"
    named = SourceSettings(bootstrap_servers="b:1", topics=["t"], consumer_group="etl-orders")
    assert named.group_id("orders") == "etl-orders"
    with pytest.raises(ValueError, match="consumer_group"):
        SourceSettings(bootstrap_servers="b:1", topics=["t"], consumer_group="etl:orders")


@dataclass(eq=False)
class FakeGroup(ConsumerGroup):
    """A group whose broker calls fail (or not) on demand, recording the commits."""

    commit_error: Exception | None = None
    lag_error: Exception | None = None
    committed: list[tuple[tuple[OffsetRange, ...], str]] = field(default_factory=list)

    def commit(self, spark: Any, ranges: Iterable[OffsetRange], *, note: str) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.committed.append((tuple(ranges), note))

    def lag(self, spark: Any, ranges: Iterable[OffsetRange]) -> dict[str, int]:
        if self.lag_error is not None:
            raise self.lag_error
        return {f"{r.topic}/{r.partition}": 100 - r.end for r in ranges}


RANGES = (OffsetRange("orders", 0, 10, 40), OffsetRange("orders", 1, 5, 60))
COMMIT = CommitInfo("orders", "q1", 3)


def _report(group: FakeGroup) -> tuple[str | None, dict[str, int] | None]:
    pipeline = Pipeline("orders", cast(Any, None), cast(Any, None), group=group)
    return pipeline._report_offsets(cast(Any, None), RANGES, COMMIT)


def test_offsets_go_to_the_group_with_the_batch_as_note_and_the_lag_is_measured() -> None:
    group = FakeGroup("streaming-etl.orders", {})
    assert _report(group) == ("streaming-etl.orders", {"orders/0": 60, "orders/1": 40})
    assert group.committed == [(RANGES, "q1/3")]


def test_a_failing_group_commit_or_lag_never_fails_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = FakeGroup("g", {}, commit_error=RuntimeError("broker gone"))
    # the broker did not answer the commit: no second wait for the lag
    assert _report(failing) == (None, None)
    assert "offsets not committed to group g: RuntimeError: broker gone" in caplog.text
    no_lag = FakeGroup("g", {}, lag_error=TimeoutError("no answer"))
    assert _report(no_lag) == ("g", None)
    assert "lag not measured" in caplog.text


def test_commit_offsets_off_measures_the_lag_only() -> None:
    group = FakeGroup("g", {}, commit_enabled=False)
    assert _report(group) == (None, {"orders/0": 60, "orders/1": 40})
    assert group.committed == []
