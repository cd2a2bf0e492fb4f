"""Exact token counts from a tokenizer.json (issue 3 §4), with a tiny real tokenizer built here."""

import sys
from pathlib import Path

import pytest
from conftest import GOOD_CHAT, Validate, chat, jsonl
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from droptune.datasets.tokenizer_files import (
    MAX_TOKENIZER_BYTES,
    TokenizerFileError,
    find_tokenizer_file,
    token_counter_from_json,
)

VOCABULARY = {"[UNK]": 0, "[BOS]": 1, "hello": 2, "world": 3, "Paris": 4, ".": 5}


def word_level_tokenizer(*, truncate_at: int | None = None) -> bytes:
    """One token per word or punctuation mark, and a BOS token the post-processor adds."""
    tokenizer = Tokenizer(models.WordLevel(VOCABULARY, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", VOCABULARY["[BOS]"])]
    )
    if truncate_at is not None:
        tokenizer.enable_truncation(truncate_at)
    return tokenizer.to_str().encode()


def test_counts_are_exact_and_exclude_special_tokens() -> None:
    count = token_counter_from_json(word_level_tokenizer())
    assert count("hello world") == 2, "the BOS token the post-processor adds must not be counted"
    assert count("Paris.") == 2, "'Paris' and '.' are two tokens for this pre-tokenizer"
    assert count("unknown words become UNK") == 4
    assert count("") == 0


def test_truncation_in_the_file_does_not_shorten_counts() -> None:
    # An over-long example must not look short because the tokenizer.json truncates at 2 tokens.
    count = token_counter_from_json(word_level_tokenizer(truncate_at=2))
    assert count("hello world hello world hello") == 5


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json at all", "Not a loadable Hugging Face tokenizer.json"),
        (b'{"model": 3}', "Not a loadable Hugging Face tokenizer.json"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9\n", "git lfs pull"),
    ],
)
def test_unloadable_bytes_raise_a_clear_error(data: bytes, expected: str) -> None:
    with pytest.raises(TokenizerFileError, match=expected):
        token_counter_from_json(data)


def test_error_is_a_value_error() -> None:
    assert issubclass(TokenizerFileError, ValueError)


def test_oversized_file_is_refused_before_parsing() -> None:
    with pytest.raises(TokenizerFileError, match="MiB"):
        token_counter_from_json(b" " * (MAX_TOKENIZER_BYTES + 1))


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(TokenizerFileError, match="pip install tokenizers"):
        token_counter_from_json(word_level_tokenizer())


def test_find_tokenizer_file_in_a_folder_and_as_a_file(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    assert find_tokenizer_file(model) is None, "a folder without tokenizer.json has none"
    (model / "tokenizer.json").write_bytes(word_level_tokenizer())
    assert find_tokenizer_file(model) == model / "tokenizer.json"
    assert find_tokenizer_file(model / "tokenizer.json") == model / "tokenizer.json"
    assert find_tokenizer_file(tmp_path / "absent") is None


def test_validation_report_states_the_exact_method(validate: Validate) -> None:
    count = token_counter_from_json(word_level_tokenizer())
    data = jsonl(chat(("user", "hello world"), ("assistant", "Paris.")), GOOD_CHAT)
    report = validate(data, count_tokens=count, tokenizer_name="my-model/tokenizer.json")
    assert report.valid, report.summary()
    assert report.tokens is not None
    assert report.tokens.exact and report.tokens.relative_error == 0.0
    assert report.tokens.method.startswith("exact: my-model/tokenizer.json"), report.tokens.method
    # "hello world" + "Paris." = 4; "Be brief." + "Capital of France?" + "Paris." = 3 + 4 + 2
    # (words outside the vocabulary are one [UNK] each, punctuation its own token).
    assert report.tokens.total_tokens == 4 + 9, report.tokens
    assert report.tokens.max_example_tokens == 9
