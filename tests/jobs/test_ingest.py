from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etl.exceptions import StopRequested
from jobs import ingest


def test_main_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ingest.main(["--help"])
    assert exit_info.value.code == 0
    assert "--pipeline" in capsys.readouterr().out


def test_main_invalid_config_returns_one_and_names_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text(
        "catalog: {warehouse: /tmp/w, type: hadoop}\n"
        "pipelines:\n"
        "  orders:\n"
        "    source: {bootstrap_servers: 'x:1', topics: [t]}\n"
        "    decode: {schema_file: schemas/orders.avsc}\n"
        "    sink: {table: not_qualified}\n"
        "    dead_letter: {table: a.b.c}\n"
        "    checkpoint: /tmp/c\n"
    )
    assert ingest.main(["--conf", str(conf)]) == 1
    assert "pipelines.orders.sink.table" in caplog.text


def test_main_unknown_pipeline_returns_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert ingest.main(["--conf", "conf/local.yaml", "--pipeline", "nope"]) == 1
    known = "orders, orders_delta, orders_hudi"
    assert f"pipelines.nope: no such pipeline (known: {known})" in caplog.text


class _Ended:
    """A query that ended, with or without an error."""

    isActive = False

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def exception(self) -> Exception | None:
        return self.error


def test_a_failed_query_is_raised_and_a_refused_batch_during_a_stop_is_not() -> None:
    refused = RuntimeError(f"Query failed: {StopRequested.MARKER}: batch 7 of orders not run")
    failed = RuntimeError("batch 3 failed: broker gone")
    queries: list[Any] = [_Ended(None), _Ended(refused)]
    ingest._raise_failed(queries, stopping=True)  # a clean stop
    with pytest.raises(RuntimeError, match="not run"):
        ingest._raise_failed(queries, stopping=False)
    with pytest.raises(RuntimeError, match="broker gone"):
        ingest._raise_failed([*queries, _Ended(failed)], stopping=True)
