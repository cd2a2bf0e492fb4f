"""Malformed cases of the research list (research/dataset-rules.md §4) not covered elsewhere:
6, 10, 15, 19, 24, 26, 27 and 28, each with what the user reads in the report."""

import io
import json

import pytest
from conftest import GOOD_CHAT, Validate, chat, codes, jsonl, only_error, warning_codes

from droptune.datasets import DatasetReport
from droptune.datasets.report import PRICING_URL, Issue

TRANSLATION = "translation-llm-002"
SCOUT = "meta/llama4@llama-4-scout-17b-16e-instruct"
GOOD_PAIR = {
    "contents": [
        {"role": "user", "parts": [{"text": "English: Hello. Spanish:"}]},
        {"role": "model", "parts": [{"text": "Hola."}]},
    ]
}


def issue_of(issues: tuple[Issue, ...], code: str) -> Issue:
    found = [issue for issue in issues if issue.code == code]
    assert found, f"expected a {code} issue, got {[i.describe() for i in issues]}"
    return found[0]


def by_words(text: str) -> int:
    """An exact counter for the tests: one token per word."""
    return len(text.split())


def test_single_line_file_without_final_newline_is_one_example_case_6(validate: Validate) -> None:
    """Case 6: patient_1_glucose_examples.jsonl has one line and no newline at all."""
    report = validate(json.dumps(GOOD_CHAT).encode())
    assert report.valid, report.summary()
    counts = report.training.counts
    assert (counts.lines, counts.examples, counts.valid) == (1, 1, 1), counts
    assert report.tokens is not None and report.tokens.total_tokens > 0


def test_trailing_comma_before_closing_brace_is_one_error_with_its_line_case_10(validate: Validate) -> None:
    """Case 10: a trailing comma before }, on line 2 of an otherwise good file."""
    good = jsonl({"prompt": "Capital of France?", "completion": "Paris."})
    report = validate(good + b'{"prompt": "Capital of Spain?", "completion": "Madrid.",}\n' + good)
    error = only_error(report)
    assert isinstance(error, Issue)
    assert (error.code, error.line) == ("invalid_json", 2), error.describe()
    assert error.remedy == "Remove the trailing comma before the closing brace."
    assert report.error_total == 1 and report.training.counts.valid == 2


def test_gemini_1_0_messages_for_translation_names_its_format_case_15(validate: Validate) -> None:
    """Case 15: training_data_wrong.jsonl's Gemini 1.0 messages (user/model) sent to
    translation-llm-002, which takes GenerateContent contents/parts only."""
    example = chat(("user", "English: Hello. Spanish:"), ("model", "Hola."))
    report = validate(jsonl(example, example), TRANSLATION)
    assert not report.valid
    error = issue_of(report.errors, "format_not_supported_by_model")
    assert error.line == 1 and "chat_messages" in error.message and "generate_content" in error.message
    assert "Convert to generate_content" in error.remedy
    assert '"contents": [{"role": "user", "parts": [{"text": "..."}]}' in error.remedy
    assert report.training.errors_by_code["format_not_supported_by_model"] == 1, "reported once per file"
    # The role check must not contradict the conversion: 'model' is right once it is converted.
    role_errors = [e for e in report.errors if e.code == "unknown_role"]
    assert role_errors, "the chat checks still name the role that is wrong for chat data"
    for role_error in role_errors:
        assert "instead of 'model'" not in role_error.remedy and "Convert the file" in role_error.remedy


@pytest.mark.parametrize(
    ("role", "remedy"),
    [
        ("Chatbot", "Use 'assistant' instead of 'Chatbot'."),
        ("gpt", "Use 'assistant' instead of 'gpt'."),
        ("narrator", "Use one of: assistant, system, user."),
    ],
)
def test_role_outside_the_vocabulary_names_the_allowed_roles_case_19(
    validate: Validate, role: str, remedy: str
) -> None:
    """Case 19: Cohere's Chatbot, ShareGPT's gpt, or a role no tool uses."""
    report = validate(jsonl(chat(("user", "Capital of France?"), (role, "Paris."))))
    error = only_error(report)
    assert isinstance(error, Issue)
    assert (error.code, error.line, error.field) == ("unknown_role", 1, "messages[1].role")
    assert "(allowed: assistant, system, user)" in error.message and role in error.message
    assert error.remedy == remedy


def test_json_encoded_twice_inside_a_text_warns_case_24(validate: Validate) -> None:
    """Case 24 (drone_training.jsonl): a text that is a JSON string of JSON, e.g. "{\\"a\\": 1}"
    with its quotes. A warning, not an error: the model may be meant to answer that way."""
    encoded_twice = json.dumps(json.dumps({"location": "Paris", "unit": "celsius"}))
    example = chat(("user", "Weather in Paris, as JSON?"), ("assistant", encoded_twice))
    report = validate(jsonl(example))
    assert report.valid, report.summary()
    warning = issue_of(report.warnings, "double_encoded_json")
    assert (warning.line, warning.field) == (1, "messages[1].content")
    assert "JSON-encoded twice" in warning.message and "Encode it once" in warning.remedy


@pytest.mark.parametrize(
    "text",
    [
        json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
        json.dumps(GOOD_CHAT),
        '  {"prompt": "a question", "completion": "an answer"}',
    ],
    ids=["list_of_messages", "whole_chat_example", "whole_prompt_completion_example"],
)
def test_conversation_encoded_inside_a_text_warns_case_24(validate: Validate, text: str) -> None:
    """Case 24: a whole example or its messages serialised into one string field."""
    report = validate(jsonl({"prompt": text, "completion": "Summarised."}))
    assert report.valid, report.summary()
    warning = issue_of(report.warnings, "double_encoded_json")
    assert warning.field == "prompt" and "encoded as JSON" in warning.message
    assert "Put the turns in the example itself" in warning.remedy


@pytest.mark.parametrize(
    "text",
    [
        '{"city": "Paris", "country": "France"}',  # structured output a model is tuned to give
        "[1, 2, 3] are the first three numbers.",
        '"[citation needed]" is what editors write.',
        '{"unterminated": ',
        '"plain quoted text"',
    ],
)
def test_json_looking_texts_that_are_not_encoded_twice_do_not_warn_case_24(
    validate: Validate, text: str
) -> None:
    """Case 24's warning stays quiet on a text that only starts like JSON, and on a plain JSON
    object answer, in both the fast path (the second line) and the full check (the first)."""
    line = {"prompt": "Answer as the dataset does.", "completion": text}
    report = validate(jsonl(line, line))
    assert report.valid and "double_encoded_json" not in warning_codes(report), report.summary()


def test_json_encoded_twice_is_listed_once_and_counted_case_24(validate: Validate) -> None:
    """Case 24: an export that double-encodes does it on every line: one listed warning, all counted."""
    encoded_twice = json.dumps(json.dumps({"a": 1}))
    report = validate(jsonl(*[{"prompt": "Give the object.", "completion": encoded_twice}] * 5))
    assert warning_codes(report).count("double_encoded_json") == 1
    assert report.training.warnings_by_code["double_encoded_json"] == 5


def test_llama_4_scout_over_2048_tokens_warns_truncation_case_26(validate: Validate) -> None:
    """Case 26: Llama 4 Scout's maximum sequence length is 2048 (SPEC M1); the catalog says the
    trainer cuts longer sequences, so an example over it is a truncation warning, not an error."""
    at_limit = {"prompt": "word " * 2000, "completion": "end " * 48}
    over = {"prompt": "word " * 2000, "completion": "end " * 49}
    report = validate(jsonl(at_limit, over), SCOUT, count_tokens=by_words)
    assert report.valid, report.summary()
    truncated = [w for w in report.warnings if w.code == "example_truncated"]
    assert [w.line for w in truncated] == [2], [w.describe() for w in report.warnings]
    assert "2049 tokens" in truncated[0].message and "2048-token limit" in truncated[0].message
    assert report.tokens is not None and report.tokens.examples_over_limit == 1
    assert report.tokens.limit_per_example == 2048


class UnreadableStream(io.RawIOBase):
    """A stream that fails the test if it is read: a file too large must not be streamed."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise AssertionError("the training file was read although its size is over the limit")


def test_file_over_1_gb_is_rejected_before_reading_case_27() -> None:
    """Case 27: translation-llm-002 takes training files up to 1 GB; the object's size decides
    before a byte is read."""
    from droptune.catalog import RetiredModelPolicy
    from droptune.datasets import resolve_options, validate_dataset

    options = resolve_options({"base_model": TRANSLATION}, {}, None, retired_models=RetiredModelPolicy.REJECT)
    report = validate_dataset(
        UnreadableStream(),  # type: ignore[arg-type]
        options=options,
        source_name="gs://datasets/train.jsonl",
        size_bytes=1_200_000_000,
    )
    error = only_error(report)
    assert isinstance(error, Issue)
    assert error.code == "file_too_large" and error.line is None
    assert "1,200,000,000 bytes (1.20 GB)" in error.message and "1 GB" in error.message
    assert "Split it into files under 1 GB" in error.remedy
    assert report.training.counts.examples == 0


def test_file_size_limit_applies_at_the_limit_and_where_documented_case_27(validate: Validate) -> None:
    """Case 27: exactly 1 GB passes; open models have no documented size limit (SPEC M1)."""
    data = jsonl(*[GOOD_PAIR] * 100)
    assert validate(data, TRANSLATION, size_bytes=1_000_000_000).valid
    assert validate(jsonl(*[GOOD_CHAT] * 100), size_bytes=5_000_000_000).valid


def test_file_size_limit_is_checked_on_the_bytes_read_without_a_size_case_27(
    validate: Validate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 27: a caller that does not know the size (a local file) still gets the rule."""
    from droptune.catalog import ModelFamily
    from droptune.datasets import validation

    data = jsonl(*[GOOD_PAIR] * 100)
    monkeypatch.setitem(validation.MAX_TRAINING_FILE_BYTES, ModelFamily.TRANSLATION, len(data) - 1)
    report = validate(data, TRANSLATION)
    assert codes(report) == ["file_too_large"] and f"{len(data):,} bytes" in report.errors[0].message


def test_open_model_validation_set_of_5000_rows_or_more_warns_case_28(validate: Validate) -> None:
    """Case 28: "Limit validation dataset to less than 5000 rows" (Google's open-model notebook);
    the catalog keeps it a warning for open models."""
    report = validate(jsonl(*[GOOD_CHAT] * 20_000), validation=jsonl(*[GOOD_CHAT] * 5000))
    assert report.valid, report.summary()
    warning = issue_of(report.warnings, "validation_too_large")
    assert warning.dataset.value == "validation" and "5000 validation examples" in warning.message
    assert "at most 4999" in warning.remedy
    assert "validation_share_too_large" not in warning_codes(report), "5000 is 25% of 20,000"
    under = validate(jsonl(*[GOOD_CHAT] * 20_000), validation=jsonl(*[GOOD_CHAT] * 4999))
    assert "validation_too_large" not in warning_codes(under)


def test_open_model_validation_set_over_25_percent_of_training_warns_case_28(validate: Validate) -> None:
    """Case 28: the validation set "must be no more than 25% of the training dataset size"."""
    at_share = validate(jsonl(*[GOOD_CHAT] * 100), validation=jsonl(*[GOOD_CHAT] * 25))
    assert at_share.valid and "validation_share_too_large" not in warning_codes(at_share)
    over = validate(jsonl(*[GOOD_CHAT] * 100), validation=jsonl(*[GOOD_CHAT] * 26))
    assert over.valid, over.summary()
    warning = issue_of(over.warnings, "validation_share_too_large")
    assert warning.dataset.value == "validation" and "(26)" in warning.message and "(100)" in warning.message


@pytest.mark.parametrize(
    ("count", "error"),
    [(9, "validation_too_small"), (10, None), (250, None), (251, "validation_too_large")],
)
def test_palm_validation_set_takes_10_to_250_examples_case_28(
    validate: Validate, count: int, error: str | None
) -> None:
    """Case 28: PaLM's evaluation data takes 10–250 examples (SPEC M3.4); outside is an error."""
    example = {"input_text": "Classify: patient has asthma.", "output_text": "Allergy / Immunology"}
    report = validate(
        jsonl(*[example] * 20), "text-bison@002", retired="allow", validation=jsonl(*[example] * count)
    )
    assert codes(report) == ([error] if error else []), report.summary()
    if error:
        issue = report.errors[0]
        assert issue.dataset.value == "validation" and f"{count} validation examples" in issue.message


def test_report_states_what_is_billed_and_where_prices_are_not_a_price_m1_12(validate: Validate) -> None:
    """Issue 3 §6, M4.2: no price is documented, so the cost is the billable tokens and the
    pricing page, in the JSON report and in the summary."""
    report: DatasetReport = validate(
        jsonl({"prompt": "abcd" * 10, "completion": "abcd" * 5}), options={"epochs": "4"}
    )
    tokens = report.to_dict()["tokens"]
    cost = tokens["cost"]
    assert tokens["billable_training_tokens"] == 60 and cost["pricing_url"] == PRICING_URL
    assert "per training token" in cost["basis"] and "M1.12" in cost["basis"]
    assert not any(key in json.dumps(cost) for key in ("USD", "$")), cost
    tokens_line = report.summary().splitlines()[1]
    assert "billable training tokens: 60" in tokens_line and PRICING_URL in tokens_line
    # translation-llm-002: no epochs option, and no billing basis in droptune's sources.
    translation = validate(jsonl(GOOD_PAIR), TRANSLATION)
    assert translation.tokens is not None and translation.tokens.cost is not None
    assert translation.tokens.billable_training_tokens is None
    basis = translation.tokens.cost.basis
    assert "do not say how translation-llm-002 is billed" in basis and "chooses the epochs" in basis
