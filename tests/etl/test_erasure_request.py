"""An erasure request is checked before anything is deleted; its subjects file too."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.erasure import ErasureRequest, read_subjects
from etl.exceptions import ErasureError


def test_read_subjects_one_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "subjects.txt"
    path.write_text("a@example.org\n\nzoë@example.org\r\n")

    assert read_subjects(str(path)) == ["a@example.org", "zoë@example.org"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "expected one value per line, found none"),
        (b"\n  \n", "expected one value per line, found none"),
        (b"ok@example.org\n bad@example.org\n", "line 2: expected one value per line without"),
        (b"a\tb\n", "line 1: expected one value per line without"),
        (b"caf\xe9\n", "expected UTF-8 text, found a byte that is not at offset 3"),
    ],
    ids=["empty", "blank", "surrounding-blank", "control-character", "not-utf8"],
)
def test_read_subjects_malformed_file_names_the_line_not_the_value(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "subjects.txt"
    path.write_bytes(content)

    with pytest.raises(ErasureError, match=message) as info:
        read_subjects(str(path))

    assert "bad@example.org" not in str(info.value)


def test_read_subjects_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ErasureError, match=r"--subjects-file .*absent.txt: cannot be read"):
        read_subjects(str(tmp_path / "absent.txt"))


def test_erasure_request_needs_an_id_and_subjects() -> None:
    assert ErasureRequest.of("req-1", ["b", "a", "b"]).subjects == ("a", "b")
    with pytest.raises(ErasureError, match="found none"):
        ErasureRequest.of("req-1", [])
    with pytest.raises(ErasureError, match="blank"):
        ErasureRequest.of("req-1", ["a", " "])
    with pytest.raises(ErasureError, match="--request-id: expected 1-128 letters"):
        ErasureRequest.of("req 1; drop", ["a"])
