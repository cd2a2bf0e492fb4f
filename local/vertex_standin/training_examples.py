"""Turn one JSONL dataset line, in any format the tuning services accept, into a training example.

Two shapes come out: a raw prompt/completion pair (trained as plain text continuation) and a
chat conversation (rendered through the model's chat template, loss on assistant turns only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class DatasetFormatError(ValueError):
    """A dataset line the trainer cannot use; the message names the file and the line."""


@dataclass(frozen=True)
class ChatTurn:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class CompletionExample:
    prompt: str
    completion: str


@dataclass(frozen=True)
class ChatExample:
    turns: tuple[ChatTurn, ...]


TrainingExample = CompletionExample | ChatExample

# GenerateContent uses "model" for the assistant; PaLM chat names the speaker "author".
_ROLE_ALIASES = {
    "user": "user",
    "model": "assistant",
    "assistant": "assistant",
    "system": "system",
    "bot": "assistant",
}


def parse_dataset(text: str, source: str, default_context: str | None = None) -> list[TrainingExample]:
    """Parse a whole JSONL file; `source` (its gs:// URI) is named in every error."""
    examples: list[TrainingExample] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetFormatError(f"{source} line {line_number}: not valid JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise DatasetFormatError(f"{source} line {line_number}: expected a JSON object")
        try:
            examples.append(parse_example(row, default_context))
        except DatasetFormatError as error:
            raise DatasetFormatError(f"{source} line {line_number}: {error}") from error
    if not examples:
        raise DatasetFormatError(f"{source}: the dataset holds no examples")
    return examples


def parse_example(row: dict[str, Any], default_context: str | None = None) -> TrainingExample:
    if "prompt" in row and "completion" in row:
        return CompletionExample(_text(row, "prompt"), _text(row, "completion"))
    if "input_text" in row and "output_text" in row:
        return CompletionExample(_text(row, "input_text"), _text(row, "output_text"))
    if "contents" in row:
        return _parse_generate_content(row)
    if "messages" in row:
        return _parse_messages(row, default_context)
    raise DatasetFormatError(
        "unrecognised example: expected prompt/completion, input_text/output_text, messages or contents"
    )


def _text(row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DatasetFormatError(f'"{key}" must be a string')
    return value


def _parse_messages(row: dict[str, Any], default_context: str | None) -> ChatExample:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise DatasetFormatError('"messages" must be a non-empty list')
    turns: list[ChatTurn] = []
    context = row.get("context", default_context)
    if isinstance(context, str) and context:
        turns.append(ChatTurn("system", context))
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DatasetFormatError(f"messages[{index}] must be an object")
        speaker = message.get("role", message.get("author"))
        role = _ROLE_ALIASES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise DatasetFormatError(f"messages[{index}]: unknown role {speaker!r}")
        turns.append(ChatTurn(role, _content_text(message.get("content"), f"messages[{index}].content")))
    return _checked_chat(turns)


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    # Multimodal chat content is a list of parts; the local models are text-only, so keep the text.
    if isinstance(content, list):
        texts = [
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        ]
        return "".join(texts)
    raise DatasetFormatError(f"{where} must be a string or a list of parts")


def _parse_generate_content(row: dict[str, Any]) -> ChatExample:
    turns: list[ChatTurn] = []
    system = row.get("systemInstruction", row.get("system_instruction"))
    if isinstance(system, dict):
        turns.append(ChatTurn("system", _parts_text(system.get("parts"), "systemInstruction.parts")))
    contents = row["contents"]
    if not isinstance(contents, list) or not contents:
        raise DatasetFormatError('"contents" must be a non-empty list')
    for index, content in enumerate(contents):
        if not isinstance(content, dict):
            raise DatasetFormatError(f"contents[{index}] must be an object")
        role = _ROLE_ALIASES.get(str(content.get("role", "")).lower())
        if role is None or role == "system":
            raise DatasetFormatError(f"contents[{index}]: unknown role {content.get('role')!r}")
        turns.append(ChatTurn(role, _parts_text(content.get("parts"), f"contents[{index}].parts")))
    return _checked_chat(turns)


def _parts_text(parts: Any, where: str) -> str:
    if not isinstance(parts, list):
        raise DatasetFormatError(f"{where} must be a list")
    return "".join(
        part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def _checked_chat(turns: list[ChatTurn]) -> ChatExample:
    if not any(turn.role == "assistant" for turn in turns):
        raise DatasetFormatError("the conversation has no assistant turn to learn from")
    return ChatExample(tuple(turns))
