"""Formats and structural rules per format (M1.3, M2, M3.2, M3.3; malformed cases 10–25, 30)."""

import json

import pytest
from conftest import GOOD_CHAT, Validate, chat, codes, jsonl, only_error, warning_codes

from droptune.datasets.report import Issue

TRANSLATION = "translation-llm-002"


def error_at(report: object, code: str) -> Issue:
    from droptune.datasets import DatasetReport

    assert isinstance(report, DatasetReport)
    found = [issue for issue in report.errors if issue.code == code]
    assert found, f"expected a {code} error, got {[i.describe() for i in report.errors]}"
    return found[0]


@pytest.mark.parametrize(
    "example",
    [
        {"prompt": "2+2?", "completion": "4"},
        GOOD_CHAT,
        {
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "2+2?"}]},
                {"role": "assistant", "parts": [{"text": "4"}]},
            ],
        },
        {
            "contents": [
                {"role": "user", "parts": [{"text": "2+2?"}]},
                {"role": "model", "parts": [{"text": "4"}]},
            ]
        },
    ],
    ids=["prompt_completion", "chat", "generate_content_assistant", "generate_content_model"],
)
def test_open_model_formats_from_the_seed_are_valid_m1_3(
    validate: Validate, example: dict[str, object]
) -> None:
    report = validate(jsonl(example, example))
    assert report.valid, [i.describe() for i in report.errors]


def test_trailing_comma_names_the_fix_case_10(validate: Validate) -> None:
    report = validate(b'{"messages": [{"role": "user", "content": "a"},]}\n')
    error = only_error(report)
    assert isinstance(error, Issue)
    assert error.code == "invalid_json" and error.line == 1 and "trailing comma" in error.remedy


def test_copy_pasted_translation_doc_sample_is_invalid_json_case_11(validate: Validate) -> None:
    line = (
        b'{"contents": [{"role": "user", "parts": [{"text": "English: Hello. Spanish:",}]} '
        b'{"role": "model""}]}\n'
    )
    assert codes(validate(line, TRANSLATION)) == ["invalid_json"]


def test_unescaped_quote_case_12(validate: Validate) -> None:
    report = validate(b'{"prompt": "called as" tik-tak", "completion": "x"}\n')
    error = only_error(report)
    assert isinstance(error, Issue)
    assert error.code == "invalid_json" and "escaped" in error.remedy


def test_unquoted_key_case_13(validate: Validate) -> None:
    error = only_error(validate(b'{"prompt": "a", completion: "b"}\n'))
    assert isinstance(error, Issue)
    assert "double quotes" in error.remedy


def test_palm_text_for_an_open_model_names_the_conversion_case_14(validate: Validate) -> None:
    report = validate(jsonl({"input_text": "Patient has asthma", "output_text": "Allergy"}))
    error = error_at(report, "format_not_supported_by_model")
    assert error.line == 1
    assert "input_text → prompt" in error.remedy and "prompt_completion" in error.remedy


def test_gemini_1_0_role_model_in_chat_messages_case_15_18(validate: Validate) -> None:
    report = validate(jsonl(chat(("user", "hi"), ("model", "hello"))))
    error = error_at(report, "unknown_role")
    assert (error.line, error.field) == (1, "messages[1].role")
    assert "'assistant'" in error.remedy and "assistant, system, user" in error.message


def test_assistant_role_in_translation_contents_case_16(validate: Validate) -> None:
    example = {
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "assistant", "parts": [{"text": "b"}]},
        ]
    }
    error = error_at(validate(jsonl(example), TRANSLATION), "unknown_role")
    assert error.field == "contents[1].role" and "'model'" in error.remedy


def test_system_turn_inside_contents_points_to_system_instruction_case_17(validate: Validate) -> None:
    example = {
        "contents": [
            {"role": "system", "parts": [{"text": "Be brief."}]},
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "model", "parts": [{"text": "b"}]},
        ]
    }
    error = error_at(validate(jsonl(example), TRANSLATION), "unknown_role")
    assert error.field == "contents[0].role" and "systemInstruction" in error.remedy


@pytest.mark.parametrize(("role", "hint"), [("User", "'user'"), (" user", "'user'"), ("human", "'user'")])
def test_role_casing_and_other_tools_vocabulary_case_19(validate: Validate, role: str, hint: str) -> None:
    error = error_at(validate(jsonl(chat((role, "hi"), ("assistant", "yo")))), "unknown_role")
    assert error.field == "messages[0].role" and hint in error.remedy


def test_sharegpt_file_is_named_case_19(validate: Validate) -> None:
    example = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    error = error_at(validate(jsonl(example)), "unknown_format")
    assert "ShareGPT" in error.message and "messages" in error.remedy


def test_consecutive_user_turns_case_20(validate: Validate) -> None:
    error = error_at(
        validate(jsonl(chat(("user", "a"), ("user", "b"), ("assistant", "c")))), "turns_not_alternating"
    )
    assert (error.line, error.field) == (1, "messages[1].role")


def test_last_turn_must_be_the_answer_case_21(validate: Validate) -> None:
    error = error_at(
        validate(jsonl(chat(("user", "a"), ("assistant", "b"), ("user", "c")))), "last_turn_not_answer"
    )
    assert error.field == "messages[2].role" and "assistant" in error.remedy


def test_no_user_turn_case_22(validate: Validate) -> None:
    error = error_at(validate(jsonl(chat(("system", "s"), ("assistant", "b")))), "turns_not_alternating")
    assert error.field == "messages[1].role" and "'user'" in error.message


def test_system_message_not_first(validate: Validate) -> None:
    report = validate(jsonl(chat(("user", "a"), ("system", "s"), ("assistant", "b"))))
    assert error_at(report, "system_not_first").field == "messages[1].role"


def test_tool_calls_are_unsupported_case_23(validate: Validate) -> None:
    example = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "1"}]},
        ]
    }
    report = validate(jsonl(example))
    assert error_at(report, "unsupported_key").field == "messages[1].tool_calls"
    assert error_at(report, "missing_key").field == "messages[1].content"


def test_function_call_part_is_unsupported_case_23(validate: Validate) -> None:
    example = {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather"}}]},
        ]
    }
    error = error_at(validate(jsonl(example), TRANSLATION), "unsupported_part")
    assert error.field == "contents[1].parts[0].functionCall"


def test_double_encoded_line_case_24(validate: Validate) -> None:
    line = json.dumps(json.dumps(GOOD_CHAT)).encode() + b"\n"
    error = only_error(validate(line))
    assert isinstance(error, Issue)
    assert error.code == "not_an_object" and "encoded twice" in error.message


def test_empty_and_nan_values_case_25(validate: Validate) -> None:
    report = validate(b'{"prompt": "", "completion": "b"}\n{"prompt": NaN, "completion": "b"}\n')
    assert [(i.code, i.line, i.field) for i in report.errors] == [
        ("empty_content", 1, "prompt"),
        ("invalid_json", 2, None),
    ]
    nan_text = validate(jsonl({"prompt": "q", "completion": "nan"}))
    assert nan_text.valid and "missing_value_text" in warning_codes(nan_text)


def test_raw_text_format_is_named_case_30(validate: Validate) -> None:
    error = error_at(validate(jsonl({"text": "### Human: hi ### Assistant: yo"})), "unknown_format")
    assert "raw text" in error.message


def test_control_tokens_warn_case_30(validate: Validate) -> None:
    report = validate(jsonl({"prompt": "a<|fim_suffix|>", "completion": "b"}))
    assert report.valid and warning_codes(report)[0] == "control_token_in_text"


def test_misspelled_key_gets_did_you_mean(validate: Validate) -> None:
    report = validate(jsonl({"prompt": "a", "completoin": "b"}))
    error = error_at(report, "unknown_key")
    assert error.field == "completoin" and "did you mean 'completion'" in error.message
    assert error_at(report, "missing_key").field == "completion"


def test_unknown_extra_key_is_only_a_warning(validate: Validate) -> None:
    report = validate(jsonl({"prompt": "a", "completion": "b", "source": "wiki"}))
    assert report.valid and "unknown_key_ignored" in warning_codes(report)


def test_mixed_formats_in_one_file(validate: Validate) -> None:
    report = validate(jsonl(GOOD_CHAT, {"prompt": "a", "completion": "b"}))
    error = only_error(report)
    assert isinstance(error, Issue)
    assert (error.code, error.line) == ("mixed_formats", 2) and "chat_messages" in error.message


def test_palm_text_extra_fields_are_ignored_m3_2(validate: Validate) -> None:
    examples = [{"input_text": f"q{i}", "output_text": "a", "context": "c"} for i in range(10)]
    report = validate(jsonl(*examples), "text-bison@002", retired="allow")
    assert report.valid and "unknown_key_ignored" not in warning_codes(report)


def test_palm_chat_authors_alternate_and_end_with_assistant_m3_3(validate: Validate) -> None:
    good = {
        "context": "pirate",
        "messages": [{"author": "user", "content": "Hi"}, {"author": "assistant", "content": "Argh"}],
    }
    bad = {"messages": [{"author": "user", "content": "Hi"}, {"author": "user", "content": "Yo"}]}
    report = validate(jsonl(*([good] * 10), bad), "chat-bison@002", retired="allow")
    error = error_at(report, "turns_not_alternating")
    assert (error.line, error.field) == (11, "messages[1].author")
