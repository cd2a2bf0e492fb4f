"""validate_dataset: stream a JSONL dataset once, check every line against its model's rules, and
return the report (M1.3–M1.5, M1.12, M2.1–M2.3, M3.2–M3.5, M4.2).

Pure: the caller passes the open streams, the resolved options and, optionally, a tokenizer and
a gs:// image checker. Nothing here reads the environment or opens a network connection.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from droptune.catalog import ModelFamily, ModelSpec, OverLimitAction
from droptune.datasets.checks import CHECKS, Example, FormatRules, PlainCheck, plain_examples_check, rules_for
from droptune.datasets.formats import (
    ACCEPTED_FORMATS,
    DatasetFormat,
    accepted_formats_remedy,
    conversion_hint,
    describe_unknown_format,
    detect_format,
)
from droptune.datasets.images import GcsImageChecker, bucket_of, describe_gcs_problem
from droptune.datasets.options import TuningOptions
from droptune.datasets.reading import MAX_LINE_BYTES, LineReader, sniff_content
from droptune.datasets.report import (
    DEFAULT_LISTED_ISSUES,
    CostEstimate,
    Counts,
    DatasetReport,
    DatasetRole,
    DatasetSection,
    IssueLog,
    TokenStats,
)
from droptune.datasets.tokens import ESTIMATE_METHOD, TokenCounter, TokenMethod, estimate_tokens, exact_method

GCS_CHECK_BATCH = 1000
# Google's open-model data guide: the validation set "must be no more than 25% of the training
# dataset size" (vertex-ai-samples, open-model data_prep.md).
MAX_VALIDATION_SHARE = 0.25
# The documented maximum size of a training file (malformed case 27), per model family.
# translation-llm-002: "Max training file: 1 GB JSONL" on its prepare-data page (catalog's
# SEED_TRANSLATION, where its 1,000-token and 1,024-example limits come from), read as 10^9 bytes,
# the stricter reading of "GB". Neither the open-model seeds (SPEC M1) nor PaLM's (M3) state a size
# limit, so none is enforced for them; Gemini's 1 GB is moot, as droptune tunes no Gemini model.
MAX_TRAINING_FILE_BYTES: Mapping[ModelFamily, int] = {ModelFamily.TRANSLATION: 10**9}


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# NaN and Infinity are accepted by Python's json but by no strict JSON reader (and pandas writes them).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The decoder's own scanner (what raw_decode calls): parses one value at a position of a longer
# string, so a whole run of lines is parsed in place, with no per-line str or whitespace regex.
_SCAN_ONCE: Callable[[str, int], tuple[object, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _json_remedy(error: json.JSONDecodeError, text: str) -> str:
    """A hint for the common hand-editing mistakes (malformed cases 10–13)."""
    before = text[: error.pos].rstrip()[-1:]
    after = text[error.pos :].lstrip()[:1]
    if error.msg.startswith("Expecting property name") and before == "," and after == "}":
        return "Remove the trailing comma before the closing brace."
    if error.msg.startswith("Expecting value") and before == "," and after == "]":
        return "Remove the trailing comma before the closing bracket."
    if error.msg.startswith("Expecting property name"):
        return 'Put every key in double quotes: {"key": "value"}.'
    if error.msg.startswith("Expecting ',' delimiter"):
        return 'A double quote inside a string must be escaped as \\", and items need commas between them.'
    if error.msg.startswith("Invalid control character"):
        return "Escape line breaks and tabs inside strings as \\n and \\t."
    return "Fix the JSON syntax of this line; each line must be one complete JSON object."


@dataclass
class _Scan:
    """Everything one file's pass accumulates; no per-line storage, so memory stays flat."""

    role: DatasetRole
    source_name: str
    spec: ModelSpec
    log: IssueLog
    format: DatasetFormat | None = None
    rules: FormatRules | None = None
    lines: int = 0
    blank_lines: int = 0
    first_blank_line: int = 0
    examples: int = 0
    invalid: int = 0
    valid_text_only: int = 0
    valid_with_image: int = 0
    tokens_text_only: int = 0
    tokens_with_image: int = 0
    max_tokens: int = 0
    over_limit: int = 0
    author_fields: int = 0
    fatal: bool = False

    def __post_init__(self) -> None:
        self.gcs_images: dict[str, tuple[int, str, int]] = {}  # uri → (first line, field, references)

    @property
    def valid(self) -> int:
        return self.valid_text_only + self.valid_with_image

    @property
    def dropped(self) -> int:
        """Text-only examples are filtered out when any example has an image (M1.4)."""
        return self.valid_text_only if self.valid_with_image else 0

    @property
    def trained(self) -> int:
        return self.valid - self.dropped

    @property
    def trained_tokens(self) -> int:
        return self.tokens_with_image if self.valid_with_image else self.tokens_text_only


class _TokenRules:
    def __init__(self, spec: ModelSpec, count_tokens: TokenCounter | None, method: TokenMethod) -> None:
        self.spec = spec
        self.count = count_tokens or estimate_tokens
        self.method = method
        self.limit = spec.max_example_tokens
        self.output_limit = spec.max_output_tokens

    def measure(self, ex: Example, scan: _Scan, default_context: str | None) -> int:
        count = self.count
        inputs = sum(count(text) for text in ex.inputs)
        if default_context and scan.format is DatasetFormat.PALM_CHAT and not ex.inputs_have_context:
            inputs += count(default_context)
        outputs = 0
        for text in ex.outputs:
            tokens = count(text)
            outputs += tokens
            if self.output_limit is not None and tokens > self.output_limit:
                ex.warning(
                    "output_truncated",
                    f"An output of about {tokens} tokens exceeds {self.output_limit}: "
                    "the service truncates it.",
                    f"Shorten outputs to at most {self.output_limit} tokens ({self.method.description}).",
                    None,
                )
        total = inputs + outputs
        if total > self.limit:
            scan.over_limit += 1
            self._report_over_limit(ex, total)
        return total

    def _report_over_limit(self, ex: Example, total: int) -> None:
        limit = self.limit
        counted = "tokens" if self.method.exact else "tokens (estimated)"
        if self.spec.over_limit is OverLimitAction.TRUNCATE:
            ex.warning(
                "example_truncated",
                f"The example has {total} {counted}, over the {limit}-token limit of {self.spec.model_id}: "
                "the service truncates it.",
                f"Shorten or split the example to at most {limit} tokens.",
                None,
            )
        elif self.method.exact or total > limit * (1 + self.method.relative_error):
            ex.error(
                "example_too_long",
                f"The example has {total} {counted}, over the {limit}-token maximum of {self.spec.model_id}.",
                f"Shorten or split the example to at most {limit} tokens (input + output).",
                None,
            )
        else:
            ex.warning(
                "example_may_be_too_long",
                f"The example has about {total} tokens by estimate, near the {limit}-token maximum of "
                f"{self.spec.model_id}; the estimate is ±{self.method.relative_error:.0%}.",
                "Count it with the model's tokenizer, or shorten it.",
                None,
            )


class _LineChecker:
    """The full check of one line, every rule with its message: the path of a file's first line,
    of every line the fast path does not vouch for, and of the formats without a fast path."""

    def __init__(
        self,
        scan: _Scan,
        tokens: _TokenRules,
        options: TuningOptions,
        expected_format: DatasetFormat | None,
    ) -> None:
        self.scan = scan
        self.tokens = tokens
        self.default_context = options.default_context
        self.expected_format = expected_format
        self.accepted = ACCEPTED_FORMATS[scan.spec.family]
        self.check: Callable[[dict[str, object], Example], None] | None = None
        self.pending: tuple[int, str, str] | None = None  # an object cut at the end of its line

    def line(self, number: int, offset: int, data: bytes | None) -> None:  # noqa: PLR0911
        """Decode and parse one line, then check it; sets scan.fatal when the file is not JSONL."""
        scan = self.scan
        log = scan.log
        scan.lines = number
        if data is None:
            scan.examples += 1
            scan.invalid += 1
            log.add_error(
                "line_too_long",
                f"The line is longer than {MAX_LINE_BYTES >> 20} MiB.",
                "Put one example per line; store large images in Cloud Storage "
                "and reference them by gs:// URI.",
                line=number,
            )
            return
        if not data or data.isspace():
            scan.blank_lines += 1
            scan.first_blank_line = scan.first_blank_line or number
            return
        scan.examples += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            scan.invalid += 1
            log.add_error(
                "not_utf8",
                f"Byte 0x{data[error.start]:02x} at column {error.start + 1} "
                f"(file offset {offset + error.start}) "
                "is not UTF-8.",
                "Re-save the file as UTF-8 (e.g. iconv -f cp1252 -t utf-8 in.jsonl > out.jsonl).",
                line=number,
            )
            return
        try:
            example = _DECODER.decode(text)
        except json.JSONDecodeError as error:
            scan.invalid += 1
            if self.pending is not None:
                # Two incomplete objects in a row: the objects span lines.
                log.add_error(
                    "pretty_printed_json",
                    "A JSON object continues over several lines (pretty-printed JSON), but JSONL needs "
                    "one complete object per line.",
                    "Write each example on a single line, e.g. jq -c . data.json > data.jsonl",
                    line=self.pending[0],
                )
                scan.fatal = True
                return
            if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
                self.pending = (number, error.msg, text)
                return
            code = "several_json_values" if error.msg == "Extra data" else "invalid_json"
            message = (
                f"More than one JSON value on the line (extra data at column {error.colno})."
                if code == "several_json_values"
                else f"Invalid JSON: {error.msg} (column {error.colno})."
            )
            remedy = (
                "Put each example on its own line."
                if code == "several_json_values"
                else _json_remedy(error, text)
            )
            log.add_error(code, message, remedy, line=number)
            return
        except ValueError as error:
            scan.invalid += 1
            log.add_error(
                "invalid_json",
                f"Invalid JSON: {error}.",
                "Replace NaN/Infinity with a string or drop it.",
                line=number,
            )
            return
        self.example(number, example)

    def example(self, number: int, example: object) -> None:
        """Check one parsed line (counted by the caller as an example) against its format's rules."""
        scan = self.scan
        log = scan.log
        if self.pending is not None:
            _flush_incomplete(log, self.pending)
            self.pending = None
        if type(example) is not dict:
            scan.invalid += 1
            hint = (
                " It is a JSON string holding JSON: the line was encoded twice."
                if isinstance(example, str) and example.lstrip().startswith("{")
                else ""
            )
            log.add_error(
                "not_an_object",
                f"The line is a JSON {type(example).__name__}, not an object.{hint}",
                "Each line must be one JSON object: " + accepted_formats_remedy(self.accepted),
                line=number,
            )
            return
        fmt = detect_format(example)
        if fmt is None:
            scan.invalid += 1
            message, remedy = describe_unknown_format(list(example), self.accepted)
            log.add_error("unknown_format", message, remedy, line=number)
            return
        if scan.format is None:
            scan.format = fmt
            scan.rules = rules_for(scan.spec, fmt)
            self.check = CHECKS[fmt]
            _check_file_format(scan, fmt, self.accepted, self.expected_format, number)
        elif fmt is not scan.format:
            scan.invalid += 1
            log.add_error(
                "mixed_formats",
                f"This line is {fmt.value}, but the file started as {scan.format.value}.",
                f"Write every line in one format ({scan.format.value}).",
                line=number,
            )
            return
        assert self.check is not None and scan.rules is not None
        errors_before = log.error_count
        ex = Example(number, log, scan.rules)
        self.check(example, ex)
        scan.author_fields += ex.author_fields
        if fmt is DatasetFormat.PALM_CHAT:
            ex.inputs_have_context = "context" in example
        total = self.tokens.measure(ex, scan, self.default_context)
        if log.error_count > errors_before:
            scan.invalid += 1
            return
        scan.max_tokens = max(scan.max_tokens, total)
        if ex.has_image:
            scan.valid_with_image += 1
            scan.tokens_with_image += total
        else:
            scan.valid_text_only += 1
            scan.tokens_text_only += total
        for uri, field in ex.gcs_images:
            first = scan.gcs_images.get(uri)
            scan.gcs_images[uri] = (number, field, 1) if first is None else (first[0], first[1], first[2] + 1)


def _undecided(example: object, ascii_only: bool) -> int:
    return -1


def _no_fast_path(example: object, ascii_only: bool) -> int:
    return -1


# The per-line loop of a 1 GB file: kept in one function on purpose (no per-line indirection on
# the common path). Each run of lines from the reader is decoded with one call; each line is
# parsed in place with the JSON scanner (no per-line bytes, str or whitespace regex) and, when the
# file's format has a fast path, checked by it (checks.PlainExamples). Any line the fast path
# does not vouch for takes the full check, so both paths give the same report.
def _scan_file(  # noqa: PLR0912, PLR0915
    reader: LineReader,
    scan: _Scan,
    tokens: _TokenRules,
    options: TuningOptions,
    expected_format: DatasetFormat | None,
) -> None:
    problem = sniff_content(reader.head)
    if problem is not None:
        scan.log.add_error(problem.code, problem.message, problem.remedy, line=1)
        scan.fatal = True
        return
    checker = _LineChecker(scan, tokens, options, expected_format)
    full_check = checker.line
    scan_once = _SCAN_ONCE
    plain: PlainCheck = _undecided  # the format's fast path, once the first example has fixed the format
    number = 0  # the number of the last line seen
    for offset, data in reader.runs():
        number += 1
        reader.note_run_start(number, offset)
        if data is None:
            full_check(number, offset, data)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # Some line of the run is not UTF-8: each line on its own, so the error has its line.
            line_offset = offset
            for line in data.split(b"\n"):
                full_check(number, line_offset, line)
                if scan.fatal:
                    return
                number += 1
                line_offset += len(line) + 1
            number -= 1
            continue
        # Character positions are byte positions in an ASCII run; otherwise a line's byte offset
        # is counted only when the full check needs it (chars_seen → bytes_seen).
        ascii_only = len(text) == len(data)
        chars_seen = bytes_seen = 0
        valid = total_tokens = max_tokens = 0
        cut_object = checker.pending is not None  # the previous line ended inside an object
        end_of_run = len(text)
        start = 0
        while True:
            stop = text.find("\n", start)
            if stop < 0:
                stop = end_of_run
            try:
                example, end = scan_once(text, start)
            except (StopIteration, ValueError, RecursionError):
                end = -1  # blank, leading whitespace or invalid JSON: the full check reports it
            if end == stop and not cut_object:
                tokens_of_example = plain(example, ascii_only)
                if tokens_of_example >= 0:
                    valid += 1
                    total_tokens += tokens_of_example
                    if tokens_of_example > max_tokens:  # noqa: PLR1730 (no call per line)
                        max_tokens = tokens_of_example
                else:
                    scan.lines = number
                    scan.examples += 1
                    checker.example(number, example)
                    if plain is _undecided and scan.rules is not None:
                        plain = plain_examples_check(scan.rules, tokens.count, tokens.limit) or _no_fast_path
            else:
                if ascii_only:
                    line = data[start:stop]
                    bytes_seen = start
                else:
                    bytes_seen += len(text[chars_seen:start].encode("utf-8"))
                    chars_seen = start
                    line = text[start:stop].encode("utf-8")
                full_check(number, offset + bytes_seen, line)
                if scan.fatal:
                    break
                cut_object = checker.pending is not None
            if stop == end_of_run:
                break
            start = stop + 1
            number += 1
        scan.lines = max(scan.lines, number)
        scan.examples += valid
        scan.valid_text_only += valid
        scan.tokens_text_only += total_tokens
        scan.max_tokens = max(scan.max_tokens, max_tokens)
        if scan.fatal:
            return
    if checker.pending is not None:
        _flush_incomplete(scan.log, checker.pending)
    _report_file_shape(scan, reader)


def _flush_incomplete(log: IssueLog, pending: tuple[int, str, str]) -> None:
    number, message, _ = pending
    log.add_error(
        "invalid_json",
        f"Invalid JSON: {message}; the line ends before the object is complete.",
        "Complete the object on this line (a cut-off upload or a missing closing brace or quote).",
        line=number,
    )


def _check_file_format(
    scan: _Scan,
    fmt: DatasetFormat,
    accepted: tuple[DatasetFormat, ...],
    expected_format: DatasetFormat | None,
    number: int,
) -> None:
    if fmt not in accepted:
        scan.log.add_error(
            "format_not_supported_by_model",
            f"The data is {fmt.value}, which {scan.spec.model_id} does not take "
            f"(it takes {', '.join(f.value for f in accepted)}).",
            conversion_hint(fmt, accepted) + accepted_formats_remedy(accepted),
            line=number,
        )
    if expected_format is not None and fmt is not expected_format:
        scan.log.add_error(
            "validation_format_differs",
            f"The validation set is {fmt.value} but the training set is {expected_format.value}.",
            f"Write the validation set in {expected_format.value} too.",
            line=number,
        )


def _report_file_shape(scan: _Scan, reader: LineReader) -> None:
    facts = reader.facts
    log = scan.log
    if facts.lone_cr_lines:
        # The tuning service splits lines at LF: a lone-CR file is one huge line to it.
        log.add_error(
            "lone_cr_line_ending",
            f"{facts.lone_cr_lines} lines end with a lone CR (classic Mac line endings).",
            "Convert line endings to LF (e.g. tr '\\r' '\\n' < in.jsonl > out.jsonl).",
            line=facts.first_lone_cr_line,
        )
    if facts.bom:
        log.add_warning(
            "utf8_bom",
            "The file starts with a UTF-8 byte order mark; droptune skips it, strict JSON readers reject it.",
            "Save the file as UTF-8 without BOM.",
            line=1,
        )
    if scan.blank_lines:
        log.add_warning(
            "blank_line",
            f"{scan.blank_lines} blank lines (first at line {scan.first_blank_line}) are not examples.",
            "Remove blank lines; some JSONL readers reject them.",
            line=scan.first_blank_line,
        )
    if scan.examples == 0 and not scan.fatal:
        log.add_error(
            "empty_file", "The file holds no examples.", "Upload a JSONL file with one example per line."
        )


def _report_too_large(scan: _Scan, size: int, limit: int) -> None:
    scan.log.add_error(
        "file_too_large",
        f"The training file is {size:,} bytes ({size / 1e9:.2f} GB), over the {limit / 1e9:g} GB "
        f"({limit:,} bytes) limit of {scan.spec.model_id} training files.",
        f"Split it into files under {limit / 1e9:g} GB that keep lines whole (e.g. split -C 900M "
        "train.jsonl part-) and tune on one, or remove examples.",
    )


def _cost(spec: ModelSpec, billable_training_tokens: int | None) -> CostEstimate:
    if spec.family is ModelFamily.OPEN_MODEL:
        basis = "Vertex AI bills tuning per training token: tokens in the training set × epochs (M1.12)."
    else:
        basis = (
            "Vertex AI bills open-model tuning per training token, tokens in the training set × epochs "
            f"(M1.12); droptune's sources do not say how {spec.model_id} is billed."
        )
    if billable_training_tokens is None:
        basis += " The service chooses the epochs: multiply the training tokens by them."
    return CostEstimate(basis)


def _check_images(
    scans: Sequence[_Scan], checker: GcsImageChecker | None, dataset_bucket: str | None
) -> None:
    for scan in scans:
        if not scan.gcs_images:
            continue
        if checker is None:
            scan.log.add_warning(
                "images_not_checked",
                f"{len(scan.gcs_images)} gs:// images were not checked for existence.",
                "Run the validator with image checks enabled.",
            )
            continue
        uris = sorted(scan.gcs_images)
        for start in range(0, len(uris), GCS_CHECK_BATCH):
            batch = uris[start : start + GCS_CHECK_BATCH]
            results = checker(batch)
            for uri in batch:
                problem = results.get(uri)
                if problem is None:
                    continue
                line, field, references = scan.gcs_images[uri]
                described = describe_gcs_problem(uri, problem, dataset_bucket)
                more = f" ({references} examples use it)" if references > 1 else ""
                scan.log.add_error(
                    described.code, described.message + more, described.remedy, line=line, field=field
                )
                # Every example that uses a broken image is invalid (an example with two broken
                # images is counted once per image: an upper bound).
                moved = min(references, scan.valid_with_image)
                scan.valid_with_image -= moved
                scan.invalid += moved


def _check_sizes(training: _Scan, validation: _Scan | None, spec: ModelSpec) -> None:
    log = training.log
    if training.dropped:
        log.add_warning(
            "text_only_examples_dropped",
            f"{training.dropped} text-only examples will be dropped: the dataset has image examples, and the "
            "service then filters out every text-only example.",
            "Add an image to those examples, or tune them separately.",
        )
    if 0 < training.examples < spec.min_examples:
        log.add_error(
            "too_few_examples",
            f"{training.examples} examples; {spec.model_id} needs at least {spec.min_examples}.",
            f"Add examples: {spec.recommended_min_examples} or more are recommended.",
        )
    elif 0 < training.trained < spec.recommended_min_examples:
        log.add_warning(
            "fewer_than_recommended",
            f"{training.trained} examples will be trained on; at least {spec.recommended_min_examples} are "
            "recommended for good results.",
            f"Add examples, up to {spec.recommended_min_examples}–500 or more.",
        )
    if spec.max_examples is not None and training.examples > spec.max_examples:
        log.add_error(
            "too_many_examples",
            f"{training.examples} examples; {spec.model_id} takes at most {spec.max_examples}.",
            f"Keep at most {spec.max_examples} examples.",
        )
    if spec.max_author_fields is not None and training.author_fields > spec.max_author_fields:
        log.add_error(
            "too_many_messages",
            f"{training.author_fields} author fields in all examples; {spec.model_id} takes at most "
            f"{spec.max_author_fields}.",
            "Drop examples or shorten conversations.",
        )
    if validation is None:
        return
    vlog = validation.log
    count = validation.examples
    if spec.max_validation_examples is not None and count > spec.max_validation_examples:
        severity = vlog.add_warning if spec.family is ModelFamily.OPEN_MODEL else vlog.add_error
        severity(
            "validation_too_large",
            f"{count} validation examples; {spec.model_id} takes at most {spec.max_validation_examples}.",
            f"Keep at most {spec.max_validation_examples} validation examples.",
        )
    if 0 < count < spec.min_validation_examples:
        vlog.add_error(
            "validation_too_small",
            f"{count} validation examples; {spec.model_id} needs at least {spec.min_validation_examples}.",
            f"Give {spec.min_validation_examples} to {spec.max_validation_examples} validation examples.",
        )
    if (
        spec.family is ModelFamily.OPEN_MODEL
        and training.examples
        and count > training.examples * MAX_VALIDATION_SHARE
    ):
        vlog.add_warning(
            "validation_share_too_large",
            f"The validation set ({count}) is more than 25% of the training set ({training.examples}).",
            "Move examples from validation to training.",
        )


def _epochs(training: _Scan, options: TuningOptions) -> tuple[float | None, str]:
    spec = options.model
    if spec.palm is not None:
        steps = options.train_steps or spec.palm.default_train_steps
        batch = spec.palm.batch_size(options.tuning_region)
        if not training.trained:
            return None, "train_steps × batch size / examples"
        # M3.5: epochs = steps × batch size / examples (seed 003's 20 × 24 / 240 = 2).
        return steps * batch / training.trained, f"train_steps {steps} × batch size {batch} / examples"
    if options.epochs is not None:
        return float(options.epochs), "option"
    return None, "chosen by the service"


def _section(scan: _Scan) -> DatasetSection:
    log = scan.log
    counts = Counts(
        lines=scan.lines,
        blank_lines=scan.blank_lines,
        examples=scan.examples,
        valid=scan.valid,
        invalid=scan.invalid,
        dropped=scan.dropped,
        errors=log.error_count,
        warnings=log.warning_count,
    )
    return DatasetSection(
        source_name=scan.source_name,
        format=scan.format.value if scan.format else None,
        counts=counts,
        errors_by_code=dict(log.error_counts),
        warnings_by_code=dict(log.warning_counts),
    )


def validate_dataset(
    stream: BinaryIO,
    *,
    options: TuningOptions,
    source_name: str,
    count_tokens: TokenCounter | None = None,
    tokenizer_name: str | None = None,
    check_gcs_images: GcsImageChecker | None = None,
    validation_stream: BinaryIO | None = None,
    validation_source_name: str | None = None,
    listed_issues: int = DEFAULT_LISTED_ISSUES,
    size_bytes: int | None = None,
) -> DatasetReport:
    """Validate a training set (and its optional validation set) for `options.base_model`.

    The report is valid only when there are no errors in either file. `check_gcs_images` is
    called once per batch of distinct gs:// image URIs after the files have streamed by.
    `size_bytes`, the training file's size where the caller knows it (a storage object's size),
    rejects a file over its model's size limit without reading it; otherwise the limit is checked
    on the bytes read.
    """
    spec = options.model
    method = exact_method(tokenizer_name or "the model's tokenizer") if count_tokens else ESTIMATE_METHOD
    tokens = _TokenRules(spec, count_tokens, method)
    training = _Scan(
        DatasetRole.TRAINING, source_name, spec, IssueLog(DatasetRole.TRAINING, listed=listed_issues)
    )
    size_limit = MAX_TRAINING_FILE_BYTES.get(spec.family)
    if size_limit is not None and size_bytes is not None and size_bytes > size_limit:
        _report_too_large(training, size_bytes, size_limit)
        training.fatal = True  # not read at all: no counts, and no checks that need them
    else:
        reader = LineReader(stream)
        _scan_file(reader, training, tokens, options, None)
        if size_limit is not None and not training.fatal and reader.facts.bytes_read > size_limit:
            _report_too_large(training, reader.facts.bytes_read, size_limit)
    scans = [training]
    validation = None
    if validation_stream is not None:
        validation = _Scan(
            DatasetRole.VALIDATION,
            validation_source_name or "validation",
            spec,
            IssueLog(DatasetRole.VALIDATION, listed=listed_issues),
        )
        _scan_file(LineReader(validation_stream), validation, tokens, options, training.format)
        scans.append(validation)
    _check_images(scans, check_gcs_images, bucket_of(source_name))
    if not training.fatal:
        _check_sizes(training, validation, spec)

    epochs, basis = _epochs(training, options)
    trained_tokens = training.trained_tokens
    # M1.12: training tokens = tokens in the training set × epochs.
    billable = round(trained_tokens * epochs) if epochs is not None else None
    token_stats = TokenStats(
        method=method.description,
        exact=method.exact,
        relative_error=method.relative_error,
        total_tokens=trained_tokens,
        max_example_tokens=training.max_tokens,
        mean_example_tokens=round(trained_tokens / training.trained, 1) if training.trained else 0.0,
        examples_over_limit=training.over_limit,
        limit_per_example=spec.max_example_tokens,
        epochs=round(epochs, 3) if epochs is not None else None,
        epochs_basis=basis,
        billable_training_tokens=billable,
        cost=_cost(spec, billable),
    )
    errors = tuple(training.log.errors) + (tuple(validation.log.errors) if validation else ())
    warnings = tuple(training.log.warnings) + (tuple(validation.log.warnings) if validation else ())
    error_total = training.log.error_count + (validation.log.error_count if validation else 0)
    warning_total = training.log.warning_count + (validation.log.warning_count if validation else 0)
    return DatasetReport(
        valid=error_total == 0,
        base_model=spec.model_id,
        training=_section(training),
        validation=_section(validation) if validation else None,
        tokens=token_stats,
        errors=errors[:listed_issues],
        warnings=warnings[:listed_issues],
        error_total=error_total,
        warning_total=warning_total,
        options=options.to_dict(),
    )
