"""Structural checks of one example per format: keys, role vocabulary, turn order, empty content,
images (M1.3, M1.4, M2, M3.2, M3.3).

Each check reports into the file's IssueLog with the line and the field path (`messages[2].role`)
and collects the texts the example trains on, split into input and output, for the token limits.
Kept to plain dict/list operations: this runs once per line of files up to 1 GB.
"""

import difflib
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from droptune.catalog import ModelFamily, ModelSpec
from droptune.datasets.formats import ACCEPTED_FORMATS, DatasetFormat
from droptune.datasets.images import SUPPORTED_MIME_TYPES, check_data_url
from droptune.datasets.report import IssueLog
from droptune.datasets.tokens import estimate_tokens

# Values that pandas/CSV exports write for a missing cell (research: malformed case 25).
MISSING_VALUE_STRINGS = frozenset({"nan", "none", "null", "n/a"})
# Chat-template control tokens: the trainer applies the template itself (malformed case 30).
CONTROL_TOKEN_MARKERS = ("<|", "<start_of_turn>", "<end_of_turn>", "[INST]")
IMAGE_MODEL = "meta/llama4@llama-4-scout-17b-16e-instruct"

# JSON encoded inside a text (malformed case 24): only a text whose first character is one of
# these and whose head, after JSON whitespace, is a quoted "{ or "[, an object {" or an array of
# objects [{ is parsed at all; every other text costs one character test.
JSON_TEXT_FIRST_CHARS = '"{[ \t\n\r'
_JSON_TEXT_HEAD = re.compile(r'[ \t\n\r]*(?:"[ \t\n\r]*[{\[]|\{[ \t\n\r]*"|\[[ \t\n\r]*\{)')
# Keys that make a JSON object in a text a whole example or a message rather than, say, the
# structured output a model is tuned to produce.
_ENCODED_EXAMPLE_KEYS = frozenset(
    {"messages", "contents", "systemInstruction", "prompt", "completion", "input_text", "output_text"}
)
_ENCODED_MESSAGE_KEYS = frozenset({"role", "author"})

# Keys from other chat APIs, with why they cannot be used here (malformed cases 23, 30).
FOREIGN_MESSAGE_KEYS: Mapping[str, str] = {
    "tool_calls": "Function-calling examples (tool_calls) are not supported by supervised tuning here.",
    "function_call": "Function-calling examples (function_call) are not supported by supervised tuning here.",
    "tool_call_id": "Tool messages are not supported by supervised tuning here.",
    "name": "The OpenAI 'name' field of a message is not part of the Vertex format.",
    "weight": "The OpenAI 'weight' field of a message is not part of the Vertex format.",
}

# Role names of other tools (ShareGPT, Cohere, Gemini) and what they are called here (case 19).
ROLE_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "human": ("user",),
    "gpt": ("assistant", "model"),
    "bot": ("assistant", "model"),
    "chatbot": ("assistant", "model"),
    "ai": ("assistant", "model"),
    "model": ("assistant",),
    "assistant": ("model",),
}


@dataclass(frozen=True)
class FormatRules:
    """What the checks of one file need to know, computed once per file."""

    spec: ModelSpec
    format: DatasetFormat
    turn_roles: frozenset[str]  # roles allowed in the turn list
    answer_roles: frozenset[str]  # roles whose text is the trained output
    answer_name: str  # how the answering role is spelled in remedies


def rules_for(spec: ModelSpec, fmt: DatasetFormat) -> FormatRules:
    if fmt is DatasetFormat.CHAT:
        return FormatRules(
            spec, fmt, frozenset({"system", "user", "assistant"}), frozenset({"assistant"}), "assistant"
        )
    if fmt is DatasetFormat.GENERATE_CONTENT:
        if spec.family is ModelFamily.TRANSLATION:
            # translation-llm-002 takes Gemini's user/model turns (seed 001's example).
            return FormatRules(spec, fmt, frozenset({"user", "model"}), frozenset({"model"}), "model")
        # The open-model seed's GenerateContent example answers with role "assistant"; Gemini's
        # spelling "model" is accepted as the same role.
        return FormatRules(
            spec,
            fmt,
            frozenset({"user", "assistant", "model"}),
            frozenset({"assistant", "model"}),
            "assistant",
        )
    if fmt is DatasetFormat.PALM_CHAT:
        return FormatRules(spec, fmt, frozenset({"user", "assistant"}), frozenset({"assistant"}), "assistant")
    return FormatRules(spec, fmt, frozenset(), frozenset(), "")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def describe_json_in_text(text: str) -> tuple[str, str] | None:
    """Message and remedy when a text holds JSON encoded inside the string (malformed case 24): a
    JSON string literal whose value is JSON again, or a whole example or list of messages; None
    for any other text. A text that is a plain JSON object or array is fine: models are tuned to
    answer in JSON. Callers parse only texts that `_JSON_TEXT_HEAD` matches."""
    try:
        value = json.loads(text)
        if isinstance(value, str):
            inner = json.loads(value)
            if isinstance(inner, dict | list):
                return (
                    "The text is a JSON string whose value is JSON again: it was JSON-encoded twice, so "
                    "the model learns the quotes and backslashes.",
                    "Encode it once (the JSON itself, without the outer quotes and escapes), unless the "
                    "model should really answer with an escaped JSON string.",
                )
            return None
    except (ValueError, RecursionError):  # not JSON after all: an ordinary text
        return None
    if isinstance(value, dict):
        holds_example = not _ENCODED_EXAMPLE_KEYS.isdisjoint(value)
        holds_message = not _ENCODED_MESSAGE_KEYS.isdisjoint(value)
    elif isinstance(value, list):
        holds_example = False
        holds_message = bool(value) and all(
            isinstance(item, dict) and not _ENCODED_MESSAGE_KEYS.isdisjoint(item) for item in value
        )
    else:
        return None
    if not (holds_example or holds_message):
        return None
    what = "a whole example" if holds_example else "messages"
    return (
        f"The text holds {what} encoded as JSON: the model is trained on the JSON text, not on the turns.",
        "Put the turns in the example itself (messages or contents), not in a JSON string inside a "
        "field, unless the model should really learn to write such JSON.",
    )


TurnProblem = tuple[str, str, str, str]  # code, message, remedy, field


def find_turn_order_problem(
    rules: FormatRules, roles: list[tuple[int, str]], container: str, key: str
) -> TurnProblem | None:
    """system (chat only, first), then user and answer turns alternating, starting with user
    and ending with an answer (malformed cases 20–22; chat templates reject anything else)."""
    answer_roles = rules.answer_roles
    answer = rules.answer_name
    expect_answer = False
    for position, (index, role) in enumerate(roles):
        field = f"{container}[{index}].{key}"
        if role == "system":
            if position != 0:
                return (
                    "system_not_first",
                    "A system message may only be the first message.",
                    "Move the system message to the start, or merge it into the first user turn.",
                    field,
                )
            continue
        if (role in answer_roles) != expect_answer:
            wanted = answer if expect_answer else "user"
            return (
                "turns_not_alternating",
                f"Expected a {wanted!r} turn here, found {role!r}: turns must alternate "
                f"user/{answer}, starting with user.",
                "Merge consecutive turns of the same role, or add the missing turn.",
                field,
            )
        expect_answer = not expect_answer
    last_index, last_role = roles[-1]
    if last_role not in answer_roles:
        return (
            "last_turn_not_answer",
            f"The last turn is {last_role!r}; the example must end with the {answer!r} turn it trains on.",
            f"Add the {answer} reply, or drop the trailing {last_role} turn.",
            f"{container}[{last_index}].{key}",
        )
    return None


class Example:
    """One example under check: where it is, and the texts and images found in it."""

    __slots__ = (
        "author_fields",
        "gcs_images",
        "has_image",
        "inputs",
        "inputs_have_context",
        "line",
        "log",
        "outputs",
        "rules",
    )

    def __init__(self, line: int, log: IssueLog, rules: FormatRules) -> None:
        self.line = line
        self.log = log
        self.rules = rules
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.has_image = False
        self.gcs_images: list[tuple[str, str]] = []  # (uri, field path)
        self.author_fields = 0
        self.inputs_have_context = False  # PaLM chat: otherwise default_context applies

    def error(self, code: str, message: str, remedy: str, field: str | None) -> None:
        self.log.add_error(code, message, remedy, line=self.line, field=field)

    def warning(self, code: str, message: str, remedy: str, field: str | None) -> None:
        self.log.add_warning(code, message, remedy, line=self.line, field=field)

    def wrong_type(self, expected: str, value: object, remedy: str, field: str) -> None:
        self.error("wrong_type", f"Expected {expected}, found {_type_name(value)}.", remedy, field)

    def add_text(self, text: str, *, is_answer: bool) -> None:
        (self.outputs if is_answer else self.inputs).append(text)

    def check_keys(
        self, obj: Mapping[str, object], known: frozenset[str], path: str, *, warn: bool = True
    ) -> None:
        """Unknown keys: a near-miss of a known key is an error with a hint (the real key is
        then missing); any other key is ignored by the service, so only a warning."""
        for key in obj:
            if key in known:
                continue
            field = f"{path}.{key}" if path else key
            if key in FOREIGN_MESSAGE_KEYS:
                self.error("unsupported_key", FOREIGN_MESSAGE_KEYS[key], f"Remove {key!r}.", field)
                continue
            allowed = ", ".join(sorted(known))
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            if close:
                self.error(
                    "unknown_key",
                    f"Unknown key {key!r}; did you mean {close[0]!r}?",
                    f"Rename {key!r} to {close[0]!r}. Allowed keys here: {allowed}.",
                    field,
                )
            elif warn:
                self.warning(
                    "unknown_key_ignored",
                    f"Unknown key {key!r} is ignored.",
                    f"Remove it, or check its spelling. Allowed keys here: {allowed}.",
                    field,
                )

    def check_text(self, value: object, field: str) -> str | None:
        if not isinstance(value, str):
            self.wrong_type("a string", value, "Write the text as a JSON string.", field)
            return None
        if not value or value.isspace():
            self.error("empty_content", "The text is empty.", "Fill it in, or drop the example.", field)
            return None
        if len(value) <= 4 and value.strip().lower() in MISSING_VALUE_STRINGS:
            self.warning(
                "missing_value_text",
                f"The text is {value!r}, which is what a CSV/pandas export writes for a missing value.",
                "Drop rows with missing values before exporting, unless this text is really meant.",
                field,
            )
        elif "<" in value and any(marker in value for marker in CONTROL_TOKEN_MARKERS):
            self.warning(
                "control_token_in_text",
                "The text contains chat-template control tokens (e.g. <|...|>, <start_of_turn>).",
                "Give plain text: the trainer applies the model's chat template itself.",
                field,
            )
        if value[0] in JSON_TEXT_FIRST_CHARS and _JSON_TEXT_HEAD.match(value):
            encoded = describe_json_in_text(value)
            if encoded is not None:
                self.warning("double_encoded_json", *encoded, field)
        return value

    def check_role(self, role: object, key: str, field: str) -> str | None:
        rules = self.rules
        if isinstance(role, str) and role in rules.turn_roles:
            return role
        allowed = ", ".join(sorted(rules.turn_roles))
        if not isinstance(role, str):
            self.wrong_type("a string", role, f"Use one of: {allowed}.", field)
            return None
        normalized = role.strip().lower()
        synonyms = [name for name in ROLE_SYNONYMS.get(normalized, ()) if name in rules.turn_roles]
        if rules.format not in ACCEPTED_FORMATS[rules.spec.family]:
            # The file needs converting anyway (its format error says how); "use X instead"
            # would point at the spelling of a format this model does not take.
            hint = (
                f"Convert the file to a format {rules.spec.model_id} takes, as the format error "
                "of this file says; the roles follow from that format."
            )
        elif normalized in rules.turn_roles:
            hint = f"Write {normalized!r}: {key}s are lowercase, without spaces."
        elif normalized == "system" and rules.format is DatasetFormat.GENERATE_CONTENT:
            hint = 'Move the system text to "systemInstruction": {"parts": [{"text": ...}]}.'
        elif synonyms:
            hint = f"Use {synonyms[0]!r} instead of {role!r}."
        else:
            hint = f"Use one of: {allowed}."
        self.error(
            "unknown_role",
            f"Unknown {key} {role!r} for {rules.format.value} data of {rules.spec.model_id} "
            f"(allowed: {allowed}).",
            hint,
            field,
        )
        return None

    def check_turn_order(self, roles: list[tuple[int, str]], container: str, key: str) -> None:
        problem = find_turn_order_problem(self.rules, roles, container, key)
        if problem is not None:
            self.error(*problem)

    def check_image_url(self, url: object, field: str) -> None:
        self.has_image = True
        if not isinstance(url, str):
            self.wrong_type("a URL string", url, "Give a gs:// URI or a data:image/...;base64 URL.", field)
        elif url.startswith("gs://"):
            self.gcs_images.append((url, field))
        elif url.startswith("data:"):
            problem = check_data_url(url)
            if problem is not None:
                self.error(problem.code, problem.message, problem.remedy, field)
        else:
            scheme = url.split(":", 1)[0] if ":" in url else "a relative path"
            self.error(
                "image_url_scheme",
                f"Image URLs must be gs:// or data: URLs, found {scheme!r}.",
                "Copy the image to Cloud Storage and use its gs:// URI, "
                "or inline it as data:image/jpeg;base64,…",
                field,
            )

    def reject_image(self, field: str) -> None:
        self.error(
            "image_not_supported",
            f"{self.rules.spec.model_id} is text-only; this example has an image.",
            f"Remove the images, or tune an image model ({IMAGE_MODEL}).",
            field,
        )


CHAT_KEYS = frozenset({"messages"})
CHAT_MESSAGE_KEYS = frozenset({"role", "content"})
CHAT_PART_KEYS = frozenset({"type", "text", "image_url"})
IMAGE_URL_KEYS = frozenset({"url", "detail"})


def _check_chat_parts(ex: Example, parts: list[object], field: str, *, is_answer: bool) -> None:
    if not parts:
        ex.error("empty_content", "The content list is empty.", "Add a text part.", field)
    for index, part in enumerate(parts):
        part_field = f"{field}[{index}]"
        if not isinstance(part, dict):
            ex.wrong_type("an object", part, '{"type": "text", "text": "..."}', part_field)
            continue
        ex.check_keys(part, CHAT_PART_KEYS, part_field)
        kind = part.get("type")
        if kind == "text":
            text = ex.check_text(part.get("text"), f"{part_field}.text")
            if text is not None:
                ex.add_text(text, is_answer=is_answer)
        elif kind == "image_url":
            if not ex.rules.spec.supports_images:
                ex.reject_image(part_field)
                continue
            image = part.get("image_url")
            if not isinstance(image, dict):
                ex.wrong_type(
                    "an object", image, '{"url": "gs://…", "detail": "low"}', f"{part_field}.image_url"
                )
                continue
            ex.check_keys(image, IMAGE_URL_KEYS, f"{part_field}.image_url")
            ex.check_image_url(image.get("url"), f"{part_field}.image_url.url")
        else:
            ex.error(
                "unknown_part_type",
                f"Unknown content part type {kind!r}.",
                "Use type 'text' or 'image_url'.",
                f"{part_field}.type",
            )


def check_chat(example: dict[str, object], ex: Example) -> None:  # noqa: PLR0912 (fast path + full path)
    ex.check_keys(example, CHAT_KEYS, "")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        ex.wrong_type(
            "a non-empty array", messages, 'Give the turns as "messages": [{role, content}, …].', "messages"
        )
        return
    roles: list[tuple[int, str]] = []
    turn_roles = ex.rules.turn_roles
    for index, message in enumerate(messages):
        # Fast path for the common, well-formed message: plain text with a known role and only
        # the two known keys. Anything else takes the full path below, which explains it.
        if type(message) is dict and len(message) == 2:
            role = message.get("role")
            content = message.get("content")
            if (
                type(role) is str
                and role in turn_roles
                and type(content) is str
                and len(content) > 4
                and "<" not in content
                and not content.isspace()
                and not (content[0] in JSON_TEXT_FIRST_CHARS and _JSON_TEXT_HEAD.match(content))
            ):
                roles.append((index, role))
                (ex.outputs if role == "assistant" else ex.inputs).append(content)
                continue
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            ex.wrong_type("an object", message, '{"role": "user", "content": "..."}', field)
            continue
        ex.check_keys(message, CHAT_MESSAGE_KEYS, field)
        role = None
        if "role" in message:
            role = ex.check_role(message["role"], "role", f"{field}.role")
        else:
            ex.error(
                "missing_key",
                "The message has no role.",
                "Add role: system, user or assistant.",
                f"{field}.role",
            )
        if role is not None:
            roles.append((index, role))
        content = message.get("content")
        is_answer = role == "assistant"
        if isinstance(content, list):
            _check_chat_parts(ex, content, f"{field}.content", is_answer=is_answer)
        elif "content" not in message:
            ex.error(
                "missing_key", "The message has no content.", "Add the text as content.", f"{field}.content"
            )
        else:
            text = ex.check_text(content, f"{field}.content")
            if text is not None:
                ex.add_text(text, is_answer=is_answer)
    if len(roles) == len(messages):
        ex.check_turn_order(roles, "messages", "role")


GC_TOP_KEYS = frozenset({"systemInstruction", "system_instruction", "contents"})
GC_SYSTEM_KEYS = frozenset({"parts", "role"})  # its role is ignored by the service
GC_CONTENT_KEYS = frozenset({"role", "parts"})
GC_PART_KEYS = frozenset({"text", "file_data", "fileData"})
GC_FILE_KEYS = frozenset({"mime_type", "file_uri", "mimeType", "fileUri"})
UNSUPPORTED_PARTS = frozenset(
    {"functionCall", "function_call", "functionResponse", "function_response", "inlineData", "inline_data"}
)


def _check_file_part(ex: Example, data: object, field: str) -> None:
    if not ex.rules.spec.supports_images:
        ex.reject_image(field)
        return
    if not isinstance(data, dict):
        ex.wrong_type("an object", data, '{"mime_type": "image/jpeg", "file_uri": "gs://…"}', field)
        return
    ex.check_keys(data, GC_FILE_KEYS, field)
    mime = data.get("mime_type", data.get("mimeType"))
    if mime not in SUPPORTED_MIME_TYPES:
        ex.error(
            "image_type_unsupported",
            f"mime_type {mime!r} is not supported.",
            f"Use one of {', '.join(SUPPORTED_MIME_TYPES)}.",
            f"{field}.mime_type",
        )
    ex.check_image_url(data.get("file_uri", data.get("fileUri")), f"{field}.file_uri")


def _check_parts(ex: Example, parts: object, field: str, *, is_answer: bool) -> None:
    if not isinstance(parts, list) or not parts:
        ex.wrong_type("a non-empty array", parts, '"parts": [{"text": "..."}]', field)
        return
    for index, part in enumerate(parts):
        part_field = f"{field}[{index}]"
        if not isinstance(part, dict):
            ex.wrong_type("an object", part, '{"text": "..."}', part_field)
            continue
        unsupported = UNSUPPORTED_PARTS.intersection(part)
        if unsupported:
            name = sorted(unsupported)[0]
            ex.error(
                "unsupported_part",
                f"Parts of kind {name!r} are not supported for tuning.",
                "Keep text parts (and file_data images for image models) only.",
                f"{part_field}.{name}",
            )
            continue
        ex.check_keys(part, GC_PART_KEYS, part_field)
        if "text" in part:
            text = ex.check_text(part["text"], f"{part_field}.text")
            if text is not None:
                ex.add_text(text, is_answer=is_answer)
        elif "file_data" in part or "fileData" in part:
            key = "file_data" if "file_data" in part else "fileData"
            _check_file_part(ex, part[key], f"{part_field}.{key}")
        else:
            ex.error(
                "missing_key", "The part has neither text nor file_data.", 'Add "text".', f"{part_field}.text"
            )


def check_generate_content(example: dict[str, object], ex: Example) -> None:
    ex.check_keys(example, GC_TOP_KEYS, "")
    system_key = "systemInstruction" if "systemInstruction" in example else "system_instruction"
    if system_key in example:
        system = example[system_key]
        if isinstance(system, dict):
            ex.check_keys(system, GC_SYSTEM_KEYS, system_key)
            _check_parts(ex, system.get("parts"), f"{system_key}.parts", is_answer=False)
        else:
            ex.wrong_type(
                "an object", system, '"systemInstruction": {"parts": [{"text": "..."}]}', system_key
            )
    contents = example.get("contents")
    if not isinstance(contents, list) or not contents:
        ex.wrong_type(
            "a non-empty array", contents, '"contents": [{"role": "user", "parts": [...]}, …]', "contents"
        )
        return
    roles: list[tuple[int, str]] = []
    for index, turn in enumerate(contents):
        field = f"contents[{index}]"
        if not isinstance(turn, dict):
            ex.wrong_type("an object", turn, '{"role": "user", "parts": [{"text": "..."}]}', field)
            continue
        ex.check_keys(turn, GC_CONTENT_KEYS, field)
        role = None
        if "role" in turn:
            role = ex.check_role(turn["role"], "role", f"{field}.role")
        else:
            allowed = ", ".join(sorted(ex.rules.turn_roles))
            ex.error("missing_key", "The turn has no role.", f"Add role: {allowed}.", f"{field}.role")
        if role is not None:
            roles.append((index, role))
        _check_parts(ex, turn.get("parts"), f"{field}.parts", is_answer=role in ex.rules.answer_roles)
    if len(roles) == len(contents):
        ex.check_turn_order(roles, "contents", "role")


def _check_pair(
    example: dict[str, object], ex: Example, input_key: str, output_key: str, *, warn: bool
) -> None:
    ex.check_keys(example, frozenset({input_key, output_key}), "", warn=warn)
    for key, is_answer in ((input_key, False), (output_key, True)):
        if key not in example:
            ex.error("missing_key", f"The example has no {key!r}.", f"Add {key!r} with its text.", key)
            continue
        text = ex.check_text(example[key], key)
        if text is not None:
            ex.add_text(text, is_answer=is_answer)


def check_prompt_completion(example: dict[str, object], ex: Example) -> None:
    _check_pair(example, ex, "prompt", "completion", warn=True)


def check_palm_text(example: dict[str, object], ex: Example) -> None:
    # "Other fields such as context are ignored" (seed 003): extra keys get no warning.
    _check_pair(example, ex, "input_text", "output_text", warn=False)


PALM_CHAT_KEYS = frozenset({"context", "messages"})
PALM_MESSAGE_KEYS = frozenset({"author", "content"})


def check_palm_chat(example: dict[str, object], ex: Example) -> None:
    ex.check_keys(example, PALM_CHAT_KEYS, "")
    if "context" in example:
        context = ex.check_text(example["context"], "context")
        if context is not None:
            ex.add_text(context, is_answer=False)
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        ex.wrong_type(
            "a non-empty array", messages, '"messages": [{"author": "user", "content": "..."}, …]', "messages"
        )
        return
    roles: list[tuple[int, str]] = []
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            ex.wrong_type("an object", message, '{"author": "user", "content": "..."}', field)
            continue
        ex.check_keys(message, PALM_MESSAGE_KEYS, field)
        author = None
        if "author" in message:
            ex.author_fields += 1
            author = ex.check_role(message["author"], "author", f"{field}.author")
        else:
            ex.error(
                "missing_key",
                "The message has no author.",
                "Add author: user or assistant.",
                f"{field}.author",
            )
        if author is not None:
            roles.append((index, author))
        if "content" not in message:
            ex.error(
                "missing_key", "The message has no content.", "Add the text as content.", f"{field}.content"
            )
            continue
        text = ex.check_text(message["content"], f"{field}.content")
        if text is not None:
            ex.add_text(text, is_answer=author == "assistant")
    if len(roles) == len(messages):
        ex.check_turn_order(roles, "messages", "author")


CHECKS: Mapping[DatasetFormat, Callable[[dict[str, object], Example], None]] = {
    DatasetFormat.PROMPT_COMPLETION: check_prompt_completion,
    DatasetFormat.CHAT: check_chat,
    DatasetFormat.GENERATE_CONTENT: check_generate_content,
    DatasetFormat.PALM_TEXT: check_palm_text,
    DatasetFormat.PALM_CHAT: check_palm_chat,
}


# Distinct role sequences remembered per file; past this, sequences are checked without storing.
MAX_REMEMBERED_TURN_ORDERS = 4096

# (an example already parsed, whether its whole run of lines is ASCII) → its token count, or -1
PlainCheck = Callable[[object, bool], int]


def plain_examples_check(rules: FormatRules, count: Callable[[str], int], limit: int) -> PlainCheck | None:
    """The fast path of the two most common formats, for files of up to 1 GB; None for the others.

    A plain example is one the full check (`check_chat`, `check_prompt_completion`) would pass
    without a single error or warning: exactly the known keys, known roles in a valid turn order,
    texts that are strings of more than 4 characters with no "<", not only whitespace and with no
    JSON encoded inside (so neither the missing-value, the control-token nor the double-encoding
    warning can apply), and no output over the model's output limit, at most `limit` tokens in all.
    For such an example the check returns its token count; for anything else -1, and the caller
    runs the full check, which explains what is wrong. So the fast path decides nothing on its
    own: it only skips the full check where that check has nothing to say.
    Written as closures over plain locals: this runs once per line of a 1 GB file.
    """
    # No output limit: a bound no text reaches, so the loop compares without a None test.
    output_limit = rules.spec.max_output_tokens or sys.maxsize
    estimating = count is estimate_tokens
    turn_roles = rules.turn_roles
    turn_orders: dict[tuple[str, ...], bool] = {}
    json_first = JSON_TEXT_FIRST_CHARS
    json_head = _JSON_TEXT_HEAD.match

    def holds_encoded_json(text: str) -> bool:
        # Called only for a text starting like JSON: one regex match, a parse only on its heads.
        return json_head(text) is not None and describe_json_in_text(text) is not None

    def turn_order_ok(roles: tuple[str, ...]) -> bool:
        ok = (
            bool(roles)
            and all(type(role) is str and role in turn_roles for role in roles)
            and find_turn_order_problem(rules, list(enumerate(roles)), "messages", "role") is None
        )
        if len(turn_orders) < MAX_REMEMBERED_TURN_ORDERS:
            turn_orders[roles] = ok
        return ok

    def chat_tokens(example: object, ascii_only: bool) -> int:  # noqa: PLR0911 (one exit per rule)
        # The estimate of an ASCII text is (length + 3) // 4 (tokens.estimate_tokens), inlined.
        inline = ascii_only and estimating
        try:
            if len(example) != 1:  # type: ignore[arg-type]
                return -1
            messages = example["messages"]  # type: ignore[index]
            if type(messages) is not list:
                return -1
            total = 0
            roles = []
            for message in messages:
                # A list or a string of two items fails on the subscript: TypeError below.
                content = message["content"]
                if type(content) is not str or len(message) != 2:
                    return -1
                size = len(content)
                if (
                    size <= 4
                    or "<" in content
                    or content.isspace()
                    or (content[0] in json_first and holds_encoded_json(content))
                ):
                    return -1
                role = message["role"]
                tokens = (size + 3) >> 2 if inline else count(content)
                if tokens > output_limit and role == "assistant":
                    return -1
                total += tokens
                roles.append(role)
            key = tuple(roles)
            ok = turn_orders.get(key)
        except (KeyError, TypeError):  # a missing key, a non-object, an unhashable role
            return -1
        if ok is None:
            ok = turn_order_ok(key)
        return total if ok and total <= limit else -1

    def prompt_completion_tokens(example: object, ascii_only: bool) -> int:
        try:
            if len(example) != 2:  # type: ignore[arg-type]
                return -1
            prompt = example["prompt"]  # type: ignore[index]
            completion = example["completion"]  # type: ignore[index]
        except (KeyError, TypeError):
            return -1
        if (
            type(prompt) is not str
            or type(completion) is not str
            or len(prompt) <= 4
            or len(completion) <= 4
            or "<" in prompt
            or "<" in completion
            or prompt.isspace()
            or completion.isspace()
            or (prompt[0] in json_first and holds_encoded_json(prompt))
            or (completion[0] in json_first and holds_encoded_json(completion))
        ):
            return -1
        if ascii_only and estimating:
            tokens = (len(prompt) + 3) >> 2
            output = (len(completion) + 3) >> 2
        else:
            tokens = count(prompt)
            output = count(completion)
        if output > output_limit or tokens + output > limit:
            return -1
        return tokens + output

    if rules.format is DatasetFormat.CHAT:
        return chat_tokens
    if rules.format is DatasetFormat.PROMPT_COMPLETION:
        return prompt_completion_tokens
    return None
