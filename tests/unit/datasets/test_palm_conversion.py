"""PaLM datasets rewritten for the successor model (issue 3, retired models: `convert`)."""

import io
import json

import pytest
from conftest import Validate, jsonl

from droptune.catalog import get_model
from droptune.datasets.palm_conversion import ConversionError, convert_palm_dataset, palm_example_as_chat


def convert(data: bytes, **kwargs: str) -> list[dict[str, object]]:
    sink = io.BytesIO()
    result = convert_palm_dataset(io.BytesIO(data), sink, source_name="gs://d/train.jsonl", **kwargs)
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert result.examples == len(lines)
    return lines


def test_a_text_example_becomes_a_user_and_an_assistant_turn_and_its_other_fields_are_dropped() -> None:
    converted = palm_example_as_chat({"input_text": "2+2?", "output_text": "4", "context": "ignored by PaLM"})
    assert converted == {
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    }


def test_a_chat_example_keeps_its_turns_and_its_context_becomes_the_system_turn() -> None:
    example = {
        "context": "You are a pirate.",
        "messages": [
            {"author": "user", "content": "Hello"},
            {"author": "assistant", "content": "Arr."},
            {"author": "user", "content": "Bye"},
            {"author": "assistant", "content": "Arr!"},
        ],
    }
    roles = [(m["role"], m["content"]) for m in palm_example_as_chat(example)["messages"]]
    assert roles == [
        ("system", "You are a pirate."),
        ("user", "Hello"),
        ("assistant", "Arr."),
        ("user", "Bye"),
        ("assistant", "Arr!"),
    ]


def test_the_default_context_applies_only_where_an_example_has_none() -> None:
    data = jsonl(
        {"messages": [{"author": "user", "content": "a"}, {"author": "assistant", "content": "b"}]},
        {
            "context": "own",
            "messages": [{"author": "user", "content": "a"}, {"author": "assistant", "content": "b"}],
        },
    )
    first, second = convert(data, default_context="default")
    assert first["messages"][0] == {"role": "system", "content": "default"}  # type: ignore[index]
    assert second["messages"][0] == {"role": "system", "content": "own"}  # type: ignore[index]


def test_bom_crlf_and_blank_lines_are_read_as_the_validator_reads_them() -> None:
    data = (
        b"\xef\xbb\xbf"
        + b'{"input_text": "q", "output_text": "a"}\r\n\r\n{"input_text": "r", "output_text": "b"}'
    )
    assert [m["messages"][0]["content"] for m in convert(data)] == ["q", "r"]  # type: ignore[index]


def test_a_line_that_cannot_be_converted_is_named_not_skipped() -> None:
    with pytest.raises(ConversionError, match="line 2"):
        convert(jsonl({"input_text": "q", "output_text": "a"}, {"neither": "format"}))


@pytest.mark.parametrize("palm_model", ["text-bison@002", "chat-bison@002", "codechat-bison@002"])
def test_a_valid_palm_dataset_converts_into_a_valid_dataset_for_its_successor(
    validate: Validate, palm_model: str
) -> None:
    if "chat" in palm_model:
        examples = [
            {
                "context": "Answer briefly.",
                "messages": [
                    {"author": "user", "content": f"question {i}"},
                    {"author": "assistant", "content": f"answer {i}"},
                ],
            }
            for i in range(12)
        ]
    else:
        examples = [{"input_text": f"question {i}", "output_text": f"answer {i}"} for i in range(12)]
    original = jsonl(*examples)
    assert validate(original, palm_model, retired="allow").valid

    successor = get_model(palm_model).successor
    assert successor is not None and not get_model(successor).retired
    sink = io.BytesIO()
    convert_palm_dataset(io.BytesIO(original), sink, source_name="train.jsonl")
    report = validate(sink.getvalue(), successor)
    assert report.valid, report.summary()
    assert report.training.counts.examples == 12
