from __future__ import annotations

import json

import pytest

from etl.config import SourceSettings
from etl.offsets import OffsetRange, admin_config, parse_ranges, ranges_between, ranges_json


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
    assert json.loads(text) == [
        {"topic": "a", "partition": 0, "start": None, "end": 4},
        {"topic": "b", "partition": 1, "start": 5, "end": 9},
    ]
    assert " " not in text
    assert parse_ranges(text) == tuple(sorted(ranges))


@pytest.mark.parametrize("text", ["{}", '[{"topic": "a"}]', "not json"])
def test_parse_ranges_says_what_it_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected a JSON list of offset ranges"):
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
