"""Dataset formats (M1.3, M1.4, M2, M3.2, M3.3): recognised per line from its keys, so that a file
mixing formats, or a format its model does not take, is one precise error."""

import difflib
from collections.abc import Mapping
from enum import StrEnum

from droptune.catalog import ModelFamily


class DatasetFormat(StrEnum):
    PROMPT_COMPLETION = "prompt_completion"  # {"prompt", "completion"} (M1.3)
    CHAT = "chat_messages"  # {"messages": [{"role", "content"}]} (M1.3, M1.4)
    GENERATE_CONTENT = "generate_content"  # {"systemInstruction"?, "contents": [{"role", "parts"}]}
    PALM_TEXT = "palm_text"  # {"input_text", "output_text"} (M3.2)
    PALM_CHAT = "palm_chat"  # {"context"?, "messages": [{"author", "content"}]} (M3.3)


ACCEPTED_FORMATS: Mapping[ModelFamily, tuple[DatasetFormat, ...]] = {
    ModelFamily.OPEN_MODEL: (
        DatasetFormat.PROMPT_COMPLETION,
        DatasetFormat.CHAT,
        DatasetFormat.GENERATE_CONTENT,
    ),
    # translation-llm-002 is tuned with GenerateContent data: contents with user/model turns.
    ModelFamily.TRANSLATION: (DatasetFormat.GENERATE_CONTENT,),
    ModelFamily.PALM_TEXT: (DatasetFormat.PALM_TEXT,),
    ModelFamily.PALM_CHAT: (DatasetFormat.PALM_CHAT,),
}

FORMAT_EXAMPLES: Mapping[DatasetFormat, str] = {
    DatasetFormat.PROMPT_COMPLETION: '{"prompt": "...", "completion": "..."}',
    DatasetFormat.CHAT: (
        '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
    ),
    DatasetFormat.GENERATE_CONTENT: (
        '{"contents": [{"role": "user", "parts": [{"text": "..."}]}, '
        '{"role": "model", "parts": [{"text": "..."}]}]}'
    ),
    DatasetFormat.PALM_TEXT: '{"input_text": "...", "output_text": "..."}',
    DatasetFormat.PALM_CHAT: (
        '{"context": "...", "messages": [{"author": "user", "content": "..."}, '
        '{"author": "assistant", "content": "..."}]}'
    ),
}

# How to move data between formats, for the remedy of a format the model does not take.
CONVERSIONS: Mapping[tuple[DatasetFormat, DatasetFormat], str] = {
    (
        DatasetFormat.PALM_TEXT,
        DatasetFormat.PROMPT_COMPLETION,
    ): "rename input_text → prompt, output_text → completion",
    (
        DatasetFormat.PROMPT_COMPLETION,
        DatasetFormat.PALM_TEXT,
    ): "rename prompt → input_text, completion → output_text",
    (DatasetFormat.PALM_CHAT, DatasetFormat.CHAT): (
        "rename author → role in each message and move context into a first system message"
    ),
    (DatasetFormat.CHAT, DatasetFormat.GENERATE_CONTENT): (
        "turn each message into {role, parts: [{text: content}]} under contents, with role model for "
        "assistant and the system message as systemInstruction"
    ),
    (DatasetFormat.PROMPT_COMPLETION, DatasetFormat.GENERATE_CONTENT): (
        'write {"contents": [{"role": "user", "parts": [{"text": prompt}]}, '
        '{"role": "model", "parts": [{"text": completion}]}]}'
    ),
}

KNOWN_TOP_LEVEL_KEYS = (
    "prompt",
    "completion",
    "messages",
    "contents",
    "systemInstruction",
    "input_text",
    "output_text",
    "context",
)

# Formats of other tools that people upload by mistake (research: malformed cases 19, 30).
FOREIGN_FORMATS: Mapping[str, str] = {
    "conversations": "ShareGPT (conversations/from/value)",
    "instruction": "Alpaca (instruction/input/output)",
    "text": "raw text ({'text': '### Human: … ### Assistant: …'})",
    "question": "question/answer pairs",
    "chat_history": "Cohere chat",
}


def detect_format(example: Mapping[str, object]) -> DatasetFormat | None:  # noqa: PLR0911
    """The format of one example from its keys; None when no known format matches."""
    if "messages" in example:
        messages = example["messages"]
        if "context" in example:
            return DatasetFormat.PALM_CHAT
        if isinstance(messages, list) and messages:
            first = messages[0]
            if isinstance(first, dict) and "author" in first and "role" not in first:
                return DatasetFormat.PALM_CHAT
        return DatasetFormat.CHAT
    if "contents" in example or "systemInstruction" in example or "system_instruction" in example:
        return DatasetFormat.GENERATE_CONTENT
    if "prompt" in example or "completion" in example:
        return DatasetFormat.PROMPT_COMPLETION
    if "input_text" in example or "output_text" in example:
        return DatasetFormat.PALM_TEXT
    return None


def describe_unknown_format(keys: list[str], accepted: tuple[DatasetFormat, ...]) -> tuple[str, str]:
    """Message and remedy for an example whose keys match no format."""
    shown = ", ".join(repr(key) for key in keys[:8]) or "no keys"
    foreign = next((FOREIGN_FORMATS[key] for key in keys if key in FOREIGN_FORMATS), None)
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, KNOWN_TOP_LEVEL_KEYS, n=1, cutoff=0.75)
        if close:
            hints.append(f"{key!r} → did you mean {close[0]!r}?")
    message = f"The example's keys ({shown}) match no dataset format"
    message += f"; it looks like {foreign}." if foreign else "."
    if hints:
        message += " " + " ".join(hints)
    return message, accepted_formats_remedy(accepted)


def accepted_formats_remedy(accepted: tuple[DatasetFormat, ...]) -> str:
    return "Write each line in one of the formats this model takes: " + "; ".join(
        f"{fmt.value}: {FORMAT_EXAMPLES[fmt]}" for fmt in accepted
    )


def conversion_hint(found: DatasetFormat, accepted: tuple[DatasetFormat, ...]) -> str:
    for target in accepted:
        hint = CONVERSIONS.get((found, target))
        if hint:
            return f"Convert to {target.value}: {hint}. "
    return ""
