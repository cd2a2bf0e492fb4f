"""Whole-file problems (research malformed cases 1–9, 27): each is reported precisely, once."""

import gzip
import json

from conftest import GOOD_CHAT, Validate, codes, jsonl, only_error, warning_codes

from droptune.datasets.report import Issue


def test_utf8_bom_is_tolerated_with_a_warning_case_1(validate: Validate) -> None:
    report = validate(b"\xef\xbb\xbf" + jsonl(GOOD_CHAT))
    assert report.valid
    assert warning_codes(report)[0] == "utf8_bom"


def test_non_utf8_bytes_name_line_and_byte_offset_case_2(validate: Validate) -> None:
    line2 = '{"prompt": "It\x92s", "completion": "ok"}'.encode("latin-1")
    data = b'{"prompt": "a", "completion": "b"}\n' + line2 + b"\n" + line2 + b"\n"
    report = validate(data)
    error = only_error(report)  # one listed error for the whole file's encoding problem
    assert isinstance(error, Issue)
    assert (error.code, error.line) == ("not_utf8", 2)
    offset = data.index(b"\x92")
    assert (
        "0x92" in error.message and "column 15" in error.message and f"file offset {offset}" in error.message
    )
    assert "UTF-8" in error.remedy
    assert report.training.errors_by_code["not_utf8"] == 2  # every affected line is counted


def test_crlf_line_endings_are_valid_case_3(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT, GOOD_CHAT).replace(b"\n", b"\r\n"))
    assert report.valid and report.training.counts.examples == 2


def test_lone_cr_line_endings_are_one_error_case_4(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT, GOOD_CHAT, GOOD_CHAT).replace(b"\n", b"\r"))
    error = only_error(report)
    assert isinstance(error, Issue)
    assert error.code == "lone_cr_line_ending" and error.line == 1
    assert "LF" in error.remedy
    assert report.training.counts.examples == 3  # the lines were still checked one by one


def test_blank_lines_are_counted_in_one_warning_case_5(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT) + b"\n   \n" + jsonl(GOOD_CHAT) + b"\n")
    assert report.valid
    blank = [w for w in report.warnings if w.code == "blank_line"]
    assert len(blank) == 1 and blank[0].line == 2 and "3 blank lines" in blank[0].message
    assert report.training.counts.blank_lines == 3 and report.training.counts.examples == 2


def test_last_line_without_newline_is_an_example_case_6(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT) + json.dumps(GOOD_CHAT).encode())
    assert report.valid and report.training.counts.examples == 2


def test_json_array_is_one_error_case_7(validate: Validate) -> None:
    report = validate(json.dumps([GOOD_CHAT] * 500, indent=2).encode())
    error = only_error(report)
    assert isinstance(error, Issue)
    assert error.code == "json_array_not_jsonl" and "one JSON object per line" in error.remedy
    assert report.error_total == 1


def test_pretty_printed_objects_are_one_error_case_8(validate: Validate) -> None:
    data = b"".join(json.dumps(GOOD_CHAT, indent=2).encode() + b"\n" for _ in range(200))
    report = validate(data)
    error = only_error(report)
    assert isinstance(error, Issue)
    assert (error.code, error.line) == ("pretty_printed_json", 1)
    assert report.error_total == 1


def test_several_objects_on_one_line_case_9(validate: Validate) -> None:
    line = json.dumps(GOOD_CHAT) + " " + json.dumps(GOOD_CHAT)
    report = validate(jsonl(GOOD_CHAT) + line.encode() + b"\n")
    error = only_error(report)
    assert isinstance(error, Issue)
    assert (error.code, error.line) == ("several_json_values", 2)
    assert "own line" in error.remedy


def test_gzip_file_is_one_error(validate: Validate) -> None:
    report = validate(gzip.compress(jsonl(GOOD_CHAT) * 1000))
    error = only_error(report)
    assert isinstance(error, Issue)
    assert error.code == "not_jsonl_binary" and "gzip" in error.message and "gunzip" in error.remedy


def test_utf16_file_is_one_error(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT).decode().encode("utf-16"))
    assert codes(report) == ["not_jsonl_binary"]


def test_empty_file_and_blank_only_file_are_errors(validate: Validate) -> None:
    assert codes(validate(b"")) == ["empty_file"]
    assert codes(validate(b"\n\n  \n")) == ["empty_file"]


def test_truncated_last_line_is_an_incomplete_object_not_pretty_printing(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT) + json.dumps(GOOD_CHAT).encode()[:40])
    error = only_error(report)
    assert isinstance(error, Issue)
    assert (error.code, error.line) == ("invalid_json", 2)
    assert "before the object is complete" in error.message


def test_report_lists_first_issues_and_counts_the_rest(validate: Validate) -> None:
    """M4.2: a 5,000-line broken file gives a small report with the true total."""
    data = b'{"prompt": "a",}\n' * 5000
    report = validate(data, listed_issues=100)
    assert len(report.errors) == 100 and report.error_total == 5000
    assert [issue.line for issue in report.errors[:3]] == [1, 2, 3]
    as_json = json.loads(report.to_json())
    assert as_json["error_total"] == 5000 and as_json["errors_listed"] == 100
    assert as_json["training"]["errors_by_code"] == {"invalid_json": 5000}
    assert len(report.to_json()) < 60_000
