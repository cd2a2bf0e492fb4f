"""PaLM examples rewritten as chat examples for the retired model's successor (issue 3, retired models).

Vertex AI blocks new PaLM tuning jobs since 2024-10-09. With `retired_models=convert` a PaLM
dataset is validated against its own rules first (so every problem is reported with the user's
line numbers), then rewritten line for line in the chat `messages` format that every open model
of the catalog takes, and tuned on the catalog's successor of the PaLM model:

- text (M3.2): `input_text` becomes the user turn, `output_text` the assistant turn; other fields
  are ignored, as PaLM ignored them;
- chat (M3.3): `context` (or the `default_context` option where an example has none) becomes the
  system turn; each message keeps its content, its `author` becomes the `role`.

Only datasets that passed validation are converted, so a line that still does not fit is a bug
in the validator: it raises instead of being skipped silently.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

# The option only PaLM pipelines take: dropped when the job moves to the successor.
PALM_ONLY_OPTIONS = frozenset(
    {"train_steps", "accelerator_type", "default_context", "evaluation_interval", "enable_early_stopping"}
)


class ConversionError(ValueError):
    """A line of a validated PaLM dataset that cannot be rewritten (names the line)."""


@dataclass(frozen=True)
class ConversionResult:
    examples: int


def palm_example_as_chat(example: Mapping[str, Any], *, default_context: str | None = None) -> dict[str, Any]:
    """One PaLM text or chat example as a chat `messages` example."""
    if "input_text" in example or "output_text" in example:
        return {
            "messages": [
                {"role": "user", "content": str(example["input_text"])},
                {"role": "assistant", "content": str(example["output_text"])},
            ]
        }
    messages: list[dict[str, str]] = []
    context = example.get("context") or default_context
    if context:
        messages.append({"role": "system", "content": str(context)})
    for message in example["messages"]:
        messages.append({"role": str(message["author"]), "content": str(message["content"])})
    return {"messages": messages}


def _lines(source: IO[bytes]) -> Iterator[tuple[int, str]]:
    # utf-8-sig drops a BOM; universal newlines read CRLF and lone CR as the validator does.
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline=None)
    for number, line in enumerate(text, start=1):
        if line.strip():
            yield number, line


def convert_palm_dataset(
    source: IO[bytes], sink: IO[bytes], *, source_name: str, default_context: str | None = None
) -> ConversionResult:
    """Stream a validated PaLM JSONL file into `sink` as chat JSONL, one line per example."""
    examples = 0
    for number, line in _lines(source):
        try:
            converted = palm_example_as_chat(json.loads(line), default_context=default_context)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConversionError(f"{source_name}, line {number}: cannot convert ({error!r})") from error
        sink.write(json.dumps(converted, ensure_ascii=False).encode() + b"\n")
        examples += 1
    return ConversionResult(examples)
