"""The erasure job's command line and its Glue wrapper: errors before anything is done."""

from __future__ import annotations

import pytest

from jobs import forget, glue_forget
from tests.conftest import REPO

LOCAL = str(REPO / "conf" / "local.yaml")


def test_main_without_the_salt_fails_before_anything(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ETL_PRIVACY_SALT", raising=False)

    code = forget.main(
        [
            "--conf",
            LOCAL,
            "--request-id",
            "r1",
            "--subject",
            "c1@example.com",
            "--format",
            "iceberg",
        ]
    )

    assert code == 1
    assert "expected env var ETL_PRIVACY_SALT to hold the forget list's hash key" in caplog.text
    assert "c1@example.com" not in caplog.text


def test_main_refuses_a_pipeline_without_privacy_and_an_empty_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ETL_PRIVACY_SALT", "a-salt-long-enough-for-tests")

    assert (
        forget.main(["--conf", LOCAL, "--request-id", "r1", "--subject", "x", "--format", "delta"])
        == 1
    )
    assert "expected a pipeline writing delta with a privacy section, found none" in caplog.text
    assert forget.main(["--conf", LOCAL, "--request-id", "r1", "--subject", " "]) == 1
    assert "expected non-blank subject values" in caplog.text


def test_glue_forget_maps_the_job_parameters() -> None:
    argv = [
        "--JOB_NAME",
        "forget",
        "--etl-config",
        "conf/glue.yaml",
        "--etl-request-id",
        "REQ-7",
        "--etl-subjects-file",
        "s3://bucket/requests/REQ-7.txt",
        "--etl-format",
        "iceberg",
    ]

    assert glue_forget.forget_argv(argv)[-6:] == [
        "--request-id",
        "REQ-7",
        "--subjects-file",
        "s3://bucket/requests/REQ-7.txt",
        "--format",
        "iceberg",
    ]


def test_glue_forget_needs_the_subjects_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = glue_forget.main(["--etl-config", "conf/glue.yaml", "--etl-request-id", "REQ-7"])

    assert code == 2
    assert "--etl-subjects-file: required job parameter missing" in capsys.readouterr().err
