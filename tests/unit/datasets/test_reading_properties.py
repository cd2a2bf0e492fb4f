"""Properties of the streaming reader and of the validator's decoding (issue 3 §5, Tests): for any
bytes and any chunk size, lines, numbers, offsets and facts are those of a plain reference split;
encodings are recognised; an invalid byte anywhere is one error on the right line and offset; and
the validator's fast path reports exactly what its full path reports."""

import io
import json

from conftest import Validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from droptune.catalog import RetiredModelPolicy
from droptune.datasets import resolve_options
from droptune.datasets.checks import plain_examples_check, rules_for
from droptune.datasets.formats import DatasetFormat
from droptune.datasets.reading import UTF8_BOM, LineReader, sniff_content
from droptune.datasets.tokens import estimate_tokens

# Enough cases to cover the chunk-boundary combinations, few enough to keep the file near 10 s.
# The `validate` fixture is a stateless function, safe to share between generated cases.
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Line contents built from the bytes that matter to the reader: terminators, a BOM's bytes, JSON
# punctuation, multi-byte UTF-8 and a byte that is never UTF-8.
PIECES = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b"a", b"{}", b'{"k": "v"}', b" ", b"\xef\xbb\xbf", b"\xc3\xa9", b"\xff"]
)
FILES = st.lists(PIECES, max_size=40).map(b"".join)
CHUNKS = st.integers(min_value=1, max_value=64)


def reference_lines(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, line, terminator) of each line: LF, CRLF and lone CR end a line (malformed cases
    3, 4), a UTF-8 BOM at the start is not content, a last line without terminator still counts."""
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    lines = []
    offset = start
    for chunk in data[start:].splitlines(keepends=True):
        line = chunk.rstrip(b"\r\n")
        lines.append((offset, line, chunk[len(line) :]))
        offset += len(chunk)
    return lines


@PROPERTY
@given(data=FILES, chunk_bytes=CHUNKS)
def test_lines_offsets_and_facts_match_a_reference_split(data: bytes, chunk_bytes: int) -> None:
    reader = LineReader(io.BytesIO(data), chunk_bytes=chunk_bytes)
    lines = list(reader)
    expected = reference_lines(data)
    assert [(n, o, line) for n, o, line in lines] == [
        (number, offset, line) for number, (offset, line, _) in enumerate(expected, 1)
    ], f"lines of {data!r} read in chunks of {chunk_bytes}"
    facts = reader.facts
    endings = [end for _, _, end in expected]
    lone_cr = [number for number, end in enumerate(endings, 1) if end == b"\r"]
    assert facts.bom == data.startswith(UTF8_BOM)
    assert facts.crlf_lines == endings.count(b"\r\n")
    assert facts.lone_cr_lines == len(lone_cr)
    assert facts.first_lone_cr_line == (lone_cr[0] if lone_cr else None)
    assert facts.ends_with_newline == (not endings or endings[-1] != b"")
    assert facts.bytes_read == len(data)


@PROPERTY
@given(data=FILES, chunk_bytes=CHUNKS)
def test_runs_hold_whole_lines_in_order(data: bytes, chunk_bytes: int) -> None:
    """Every line comes in exactly one run; a run has no CR and its lines are consecutive."""
    reader = LineReader(io.BytesIO(data), chunk_bytes=chunk_bytes)
    flattened = []
    for offset, run in reader.runs():
        assert run is not None and b"\r" not in run, f"run {run!r} of {data!r}"
        assert data[offset : offset + len(run)] == run, "a run is a contiguous slice of the file"
        position = offset
        for line in run.split(b"\n"):
            flattened.append((position, line))
            position += len(line) + 1
    assert flattened == [(offset, line) for offset, line, _ in reference_lines(data)]


@PROPERTY
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=12),
    chunk_bytes=CHUNKS,
    max_line_bytes=st.integers(min_value=1, max_value=30),
)
def test_overlong_lines_are_skipped_without_shifting_the_others(
    lengths: list[int], chunk_bytes: int, max_line_bytes: int
) -> None:
    data = b"".join(bytes([ord("a") + index % 26]) * length + b"\n" for index, length in enumerate(lengths))
    reader = LineReader(io.BytesIO(data), chunk_bytes=chunk_bytes, max_line_bytes=max_line_bytes)
    lines = list(reader)
    expected = reference_lines(data)
    assert [number for number, _, _ in lines] == list(range(1, len(expected) + 1))
    for (number, offset, line), (true_offset, true_line, _) in zip(lines, expected, strict=True):
        assert offset == true_offset, f"line {number} of {lengths}"
        if line is None:
            assert len(true_line) > max_line_bytes, f"line {number} skipped but within the limit"
        else:
            assert line == true_line
    assert reader.facts.overlong_lines == sum(line is None for _, _, line in lines)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@PROPERTY
@given(text=TEXT, encoding=st.sampled_from(["utf-16-le", "utf-16-be", "utf-32-le"]), bom=st.booleans())
def test_utf16_and_utf32_files_are_one_clear_error(text: str, encoding: str, bom: bool) -> None:
    """Malformed case 5: a wide encoding is recognised from its BOM or its NUL bytes."""
    body = json.dumps({"prompt": text, "completion": text}).encode(encoding)
    head = ("\ufeff".encode(encoding) if bom else b"") + body
    problem = sniff_content(head)
    assert problem is not None and problem.code == "not_jsonl_binary", f"{encoding} {head[:12]!r}"


@PROPERTY
@given(text=TEXT, bom=st.booleans(), ending=st.sampled_from(["\n", "\r\n"]))
def test_utf8_with_or_without_bom_validates(validate: Validate, text: str, bom: bool, ending: str) -> None:
    lines = [json.dumps({"prompt": f"Say {text}", "completion": f"Said {text}"}, ensure_ascii=False)] * 3
    data = (UTF8_BOM if bom else b"") + "".join(line + ending for line in lines).encode()
    report = validate(data)
    assert report.training.counts.examples == 3 and report.training.counts.invalid == 0, report.summary()
    assert report.training.errors_by_code == {}, report.summary()
    assert ("utf8_bom" in report.training.warnings_by_code) == bom


GOOD_LINE = b'{"prompt": "What is the capital?", "completion": "Paris is the capital."}'


@PROPERTY
@given(lines=st.integers(min_value=1, max_value=8), data=st.data())
def test_an_invalid_byte_anywhere_is_one_error_with_its_line_and_offset(
    validate: Validate, lines: int, data: st.DataObject
) -> None:
    file = GOOD_LINE + b"\n"
    clean = file * lines
    position = data.draw(st.integers(min_value=0, max_value=len(clean) - 1), label="position")
    byte = data.draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed"]), label="byte")
    corrupt = clean[:position] + byte + clean[position:]
    line = clean.count(b"\n", 0, position) + 1
    report = validate(corrupt)
    assert report.training.errors_by_code == {"not_utf8": 1}, report.summary()
    (issue,) = report.errors
    assert issue.line == line, f"byte at {position} reported on line {issue.line}, expected {line}"
    assert f"(file offset {position})" in issue.message, issue.message
    assert report.training.counts.valid == lines - 1


# Texts around the fast path's edges: short, blank, "<", missing values, non-ASCII, long, JSON
# inside a text, and values that are not strings. Mostly good texts, so that whole examples often
# pass every check but one: those are the cases where the fast path must step aside.
GOOD_TEXTS = st.sampled_from(["Hello there", "Paris is the capital.", "ünïcödé text", "日本語のテキストです"])
EDGE_TEXTS = st.one_of(
    st.sampled_from(
        [
            "ok",
            "   ",
            "",
            "nan",
            "N/A",
            "a <b> c",
            "<|im_start|>",
            "\t\n  \u3000",
            "y " * 2_500,
            "z " * 20_000,
            # JSON inside a text (malformed case 24): encoded twice, a conversation, plain JSON.
            '"{\\"a\\": 1}"',
            ' [{"role": "user", "content": "hi"}]',
            '{"city": "Paris"}',
            None,
            3,
            [{"type": "text", "text": "part text"}],
        ]
    ),
    st.text(max_size=12),
)


@st.composite
def texts(draw: st.DrawFn) -> object:
    return draw(EDGE_TEXTS) if draw(st.integers(min_value=0, max_value=3)) == 0 else draw(GOOD_TEXTS)


ODD_ROLES = st.sampled_from(["system", "user", "assistant", "User", "model", "gpt", 3, None, ["user"]])


# llama-3.1-8b has no output limit; text-bison@002 has a 1,024-token one and an 8,192-token
# example limit, and takes neither format (one more error, the same on both paths).
MODELS = ["meta/llama3_1@llama-3.1-8b", "text-bison@002"]


@st.composite
def chat_examples(draw: st.DrawFn) -> dict[str, object]:
    """A well-formed conversation, then at most a few of the mistakes people make."""
    roles: list[object] = ["system"] if draw(st.booleans()) else []
    roles += ["user", "assistant"] * draw(st.integers(min_value=0, max_value=3))
    if roles and draw(st.integers(min_value=0, max_value=5)) == 0:
        roles[draw(st.integers(min_value=0, max_value=len(roles) - 1))] = draw(ODD_ROLES)
    messages: list[object] = [{"role": role, "content": draw(texts())} for role in roles]
    if messages and draw(st.integers(min_value=0, max_value=5)) == 0:
        messages[-1] = draw(st.sampled_from([{"role": "assistant"}, {"content": "no role"}, "text", []]))
    first = messages[0] if messages else None
    if isinstance(first, dict) and draw(st.integers(min_value=0, max_value=5)) == 0:
        messages[0] = {**first, "name": "x"}
    example: dict[str, object] = {"messages": messages}
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        example["extra"] = 1
    return example


@st.composite
def prompt_completion_examples(draw: st.DrawFn) -> dict[str, object]:
    example: dict[str, object] = {"prompt": draw(texts()), "completion": draw(texts())}
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        del example[draw(st.sampled_from(["prompt", "completion"]))]
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        example["promt"] = "x"
    return example


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    examples=st.one_of(
        st.lists(chat_examples(), min_size=2, max_size=6),
        st.lists(prompt_completion_examples(), min_size=2, max_size=6),
        st.lists(st.one_of(chat_examples(), prompt_completion_examples()), min_size=2, max_size=6),
    ),
    model=st.sampled_from(MODELS),
)
def test_fast_path_reports_exactly_what_the_full_check_reports(
    validate: Validate, examples: list[object], model: str
) -> None:
    """A line that starts with a space always takes the full check (the fast path parses from the
    line's first byte), a bare line the fast path where it can: both files must get the same
    report, whatever the line endings."""
    lines = [json.dumps(example, ensure_ascii=False).encode() for example in examples]
    for ending in (b"\n", b"\r\n"):
        fast = validate(b"".join(line + ending for line in lines), model, retired="allow")
        full = validate(b"".join(b" " + line + ending for line in lines), model, retired="allow")
        assert fast.to_dict() == full.to_dict(), (
            f"fast path:\n{fast.summary()}\nfull check:\n{full.summary()}"
        )


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=st.one_of(chat_examples(), prompt_completion_examples()), model=st.sampled_from(MODELS))
def test_fast_path_vouches_only_for_examples_the_full_check_passes(
    validate: Validate, example: dict[str, object], model: str
) -> None:
    """Where the fast path returns a token count, the full check (a file's first line always takes
    it) finds nothing on that line and counts the same tokens."""
    options = resolve_options({"base_model": model}, {}, None, retired_models=RetiredModelPolicy.ALLOW)
    fmt = DatasetFormat.CHAT if "messages" in example else DatasetFormat.PROMPT_COMPLETION
    plain = plain_examples_check(
        rules_for(options.model, fmt), estimate_tokens, options.model.max_example_tokens
    )
    assert plain is not None
    line = json.dumps(example, ensure_ascii=False)
    tokens = plain(json.loads(line), line.isascii())
    if tokens < 0:
        return
    report = validate(line.encode() + b"\n", model, retired="allow")
    findings = [
        issue.describe()
        for issue in report.errors + report.warnings
        # The format error of text-bison is about the file, reported once at its first line.
        if issue.line == 1 and issue.code != "format_not_supported_by_model"
    ]
    assert findings == [], f"the fast path passed {line} but the full check reports {findings}"
    assert report.tokens is not None and report.tokens.total_tokens == tokens
