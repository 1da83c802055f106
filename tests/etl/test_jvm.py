"""python -m etl.jvm: spark-submit flags, with a table format's own artifacts on request."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.jvm import submit_flags
from etl.jvm.__main__ import main

HUDI_BUNDLE = "org.apache.hudi:hudi-spark3.5-bundle_2.12:1.0.2"


def _flags(text: str) -> dict[str, list[str]]:
    """``--packages`` and ``spark.jars.excludes`` of a flags line, split on commas."""
    words = text.split()
    return {
        "packages": words[words.index("--packages") + 1].split(","),
        "excludes": words[words.index("--conf") + 1]
        .removeprefix("spark.jars.excludes=")
        .split(","),
    }


def test_submit_flags_add_hudi_only_when_asked(tmp_path: Path) -> None:
    plain = _flags(submit_flags(tmp_path))
    with_hudi = _flags(submit_flags(tmp_path, ("hudi",)))

    assert with_hudi["packages"] == [*plain["packages"], HUDI_BUNDLE]
    # pyspark ships what the bundle would bring besides itself
    assert sorted(set(with_hudi["excludes"]) - set(plain["excludes"])) == [
        "org.apache.hive:hive-storage-api"
    ]


def test_main_prints_hudi_packages_and_rejects_unknown_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--format", "hudi", str(tmp_path)]) == 0
    assert HUDI_BUNDLE in _flags(capsys.readouterr().out)["packages"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--format", "delta"])
    assert exit_info.value.code == 2
    assert "expected a format with its own pom (hudi), found 'delta'" in capsys.readouterr().err
