"""`droptune validate PATH` (issue 3 §7): the validator's checks on a local file, no stack, no project.

Each test writes files to tmp_path and runs the real command line, asserting on what a user reads
(the verdict, the line numbers, the allowed values) and on the exit code: 0 valid, 1 invalid,
2 usage error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from droptune_cli.main import main

IMAGE_MODEL = "meta/llama4@llama-4-scout-17b-16e-instruct"


@pytest.fixture(autouse=True)
def no_droptune_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults must come from the settings' own defaults, not from this shell or a running stack."""
    for name in list(os.environ):
        if name.startswith("DROPTUNE_"):
            monkeypatch.delenv(name)


def chat_line(question: str, answer: str) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    )


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = [chat_line("hello world", "hello"), chat_line("world", "hello world"), chat_line("hello", "world")]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *args, "--json")
    report: dict[str, Any] = json.loads(out)
    return code, report


def test_valid_chat_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    code, out, _ = run(capsys, str(train))
    assert code == 0, out
    first = out.splitlines()[0]
    assert first.startswith("VALID: ") and "3 examples" in first, first
    assert "google/gemma3@gemma-3-1b-it" in first, "the settings' default base model applies"


def test_invalid_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", GOOD[0], '{"messages": [}', GOOD[1])
    code, out, _ = run(capsys, str(train))
    assert code == 1, out
    assert out.startswith("INVALID: "), out
    assert "[invalid_json] training line 2" in out, out


def test_unknown_base_model_lists_allowed_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    code, out, _ = run(capsys, str(train), "--base-model", "google/gemma3@gemma-3-2b-it")
    assert code == 1, out
    assert "base_model = 'google/gemma3@gemma-3-2b-it' (from --base-model)" in out, out
    assert "Allowed: google/gemma3@gemma-3-1b-it," in out, out
    assert "meta/llama3_1@llama-3.1-8b" in out, out


def test_every_option_problem_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    code, out, _ = run(capsys, str(train), "--mode", "PEFT_ADAPTER", "--epochs", "0")
    assert code == 1, out
    assert "tuning_mode = 'PEFT_ADAPTER' (from --mode)" in out and "Allowed: FULL." in out, out
    assert "epochs = '0' (from --epochs)" in out and "Allowed: an integer from 1 to 100." in out, out


def test_invalid_options_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    code, report = run_json(capsys, str(train), "--base-model", "nope")
    assert code == 1
    assert report["verdict"] == "invalid"
    assert report["error_total"] == 1
    (error,) = report["errors"]
    assert error["code"] == "invalid_option" and error["option"] == "base_model"
    assert "google/gemma3@gemma-3-1b-it" in error["allowed"], error


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(tmp_path / "absent.jsonl"))
    assert code == 2
    assert out == "" and "absent.jsonl does not exist" in err, err


def test_json_report_has_the_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    code, report = run_json(capsys, str(train), "--base-model", "meta/llama3_1@llama-3.1-8b", "--epochs", "2")
    assert code == 0
    assert report["verdict"] == "valid"
    assert report["base_model"] == "meta/llama3_1@llama-3.1-8b"
    assert report["options"]["epochs"] == 2
    assert report["options"]["sources"]["epochs"] == "metadata droptune-epochs"
    assert report["tokens"]["exact"] is False, "without --tokenizer the counts are an estimate"


def word_level_tokenizer_json() -> str:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def test_tokenizer_folder_gives_exact_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "tokenizer.json").write_text(word_level_tokenizer_json(), encoding="utf-8")
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    code, report = run_json(capsys, str(train), "--tokenizer", str(model))
    assert code == 0
    tokens = report["tokens"]
    assert tokens["exact"] is True and tokens["relative_error"] == 0.0
    assert tokens["method"].startswith(f"exact: {model / 'tokenizer.json'}"), tokens["method"]
    assert tokens["total_tokens"] == 3 + 3 + 2, "one token per word of the three examples"


def test_unreadable_tokenizer_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json", encoding="utf-8")
    code, _, err = run(capsys, str(train), "--tokenizer", str(broken))
    assert code == 2
    assert "Not a loadable Hugging Face tokenizer.json" in err, err
    code, _, err = run(capsys, str(train), "--tokenizer", str(tmp_path / "no-model"))
    assert code == 2 and "no tokenizer.json" in err, err


def test_paired_validation_file_is_picked_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    write_lines(tmp_path / "train.validation.jsonl", GOOD[0], '{"messages": []}')
    code, report = run_json(capsys, str(train))
    assert code == 1, "an error in the paired validation set makes the upload invalid"
    assert report["validation"] is not None, "train.validation.jsonl beside train.jsonl must be validated"
    assert report["validation"]["source_name"] == str(tmp_path / "train.validation.jsonl")
    assert [(e["dataset"], e["line"]) for e in report["errors"]] == [("validation", 2)], report["errors"]


def test_validation_option_replaces_the_paired_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    write_lines(tmp_path / "train.validation.jsonl", '{"messages": []}')
    chosen = write_lines(tmp_path / "held-out.jsonl", GOOD[0])
    code, report = run_json(capsys, str(train), "--validation", str(chosen))
    assert code == 0, report["errors"]
    assert report["validation"]["source_name"] == str(chosen)
    code, _, err = run(capsys, str(train), "--validation", str(tmp_path / "absent.jsonl"))
    assert code == 2 and "absent.jsonl" in err


def test_manifest_beside_the_file_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    (tmp_path / "train.manifest.json").write_text(
        json.dumps({"base_model": "meta/llama3_1@llama-3.1-8b", "epochs": 5}), encoding="utf-8"
    )
    code, report = run_json(capsys, str(train), "--epochs", "2")
    assert code == 0
    assert report["base_model"] == "meta/llama3_1@llama-3.1-8b", "the manifest beats the default"
    assert report["options"]["epochs"] == 2, "command-line options (the metadata) beat the manifest"


def test_invalid_manifest_makes_the_upload_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_lines(tmp_path / "train.jsonl", *GOOD)
    (tmp_path / "train.manifest.json").write_text("[3]", encoding="utf-8")
    code, out, _ = run(capsys, str(train))
    assert code == 1
    assert "train.manifest.json must hold one JSON object of options" in out, out


def test_gcs_images_are_reported_as_unchecked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content = [
        {"type": "text", "text": "What is in the picture?"},
        {"type": "image_url", "image_url": {"url": "gs://my-bucket/cat.jpg"}},
    ]
    example = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "A cat."}]}
    train = write_lines(tmp_path / "train.jsonl", json.dumps(example))
    code, out, _ = run(capsys, str(train), "--base-model", IMAGE_MODEL)
    assert code == 0, out
    assert "note: gs:// images were not checked: `droptune validate` works offline" in out, out
    code, report = run_json(capsys, str(train), "--base-model", IMAGE_MODEL)
    assert code == 0
    assert "images_not_checked" in report["training"]["warnings_by_code"], report["warnings"]
