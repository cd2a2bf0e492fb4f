"""The dataset report (M4.2): what a user reads to fix a dataset, and what the validator publishes.

Reports stay small whatever the file: the first issues of each severity are listed in full, the
rest only counted by code.
"""

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

REPORT_SCHEMA_VERSION = 1
DEFAULT_LISTED_ISSUES = 100


class Severity(StrEnum):
    ERROR = "error"  # blocks tuning
    WARNING = "warning"  # worth reading, does not block


class DatasetRole(StrEnum):
    TRAINING = "training"
    VALIDATION = "validation"


@dataclass(frozen=True)
class Issue:
    """One finding. `line` is 1-based as editors count; `field` is a path like messages[2].role."""

    severity: Severity
    code: str
    message: str
    remedy: str
    line: int | None = None
    field: str | None = None
    dataset: DatasetRole = DatasetRole.TRAINING

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "dataset": self.dataset.value,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "remedy": self.remedy,
        }

    def describe(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        if self.field:
            where += f", {self.field}"
        head = f"{self.severity.value} [{self.code}] {self.dataset.value} {where}"
        return f"{head}: {self.message} → {self.remedy}"


class IssueLog:
    """Collects issues while a file streams by, keeping at most `listed` of each severity in full.

    Codes in `once_codes` are listed only at their first occurrence (e.g. non-UTF-8 bytes on
    thousands of lines are one problem, not thousands); every occurrence is still counted.
    """

    def __init__(self, dataset: DatasetRole, *, listed: int = DEFAULT_LISTED_ISSUES) -> None:
        self.dataset = dataset
        self.listed = listed
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.error_counts: Counter[str] = Counter()
        self.warning_counts: Counter[str] = Counter()
        self.error_count = 0
        self.warning_count = 0

    def add_error(
        self, code: str, message: str, remedy: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.error_count += 1
        self.error_counts[code] += 1
        if len(self.errors) < self.listed and (code not in ONCE_CODES or self.error_counts[code] == 1):
            self.errors.append(Issue(Severity.ERROR, code, message, remedy, line, field, self.dataset))

    def add_warning(
        self, code: str, message: str, remedy: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.warning_count += 1
        self.warning_counts[code] += 1
        if len(self.warnings) < self.listed and (code not in ONCE_CODES or self.warning_counts[code] == 1):
            self.warnings.append(Issue(Severity.WARNING, code, message, remedy, line, field, self.dataset))


# Problems of the whole file's encoding or shape, and of how it was exported (JSON encoded twice
# is one export step, seen on every line): list the first, count the rest.
ONCE_CODES = frozenset({"not_utf8", "blank_line", "lone_cr_line_ending", "utf8_bom", "double_encoded_json"})


@dataclass(frozen=True)
class Counts:
    lines: int = 0  # physical lines read, blank ones included
    blank_lines: int = 0
    examples: int = 0  # non-blank lines
    valid: int = 0  # examples without errors (dropped ones included)
    invalid: int = 0
    dropped: int = 0  # valid text-only examples the service filters out (M1.4)
    errors: int = 0  # issues, not examples: one example can have several
    warnings: int = 0


# No source droptune follows states a price (SPEC, seeds): the report gives what is billed and where
# the price is, never an amount of money.
PRICING_URL = "https://cloud.google.com/vertex-ai/generative-ai/pricing"


@dataclass(frozen=True)
class CostEstimate:
    """What a tuning job of this dataset is billed on (M1.12); no price, as none is documented."""

    basis: str  # how the service bills, in one sentence (the count is TokenStats')
    pricing_url: str = PRICING_URL

    def describe(self) -> str:
        return f"no price estimated (none documented): {self.basis} Prices: {self.pricing_url}"


@dataclass(frozen=True)
class TokenStats:
    """Token figures of the examples that will be trained on (M1.12, M3.5)."""

    method: str  # how tokens were counted
    exact: bool
    relative_error: float  # bound of an estimate, 0.0 when exact
    total_tokens: int  # all valid, non-dropped examples
    max_example_tokens: int
    mean_example_tokens: float
    examples_over_limit: int
    limit_per_example: int
    epochs: float | None  # None: unknown until the service picks it
    epochs_basis: str  # "option", or "train_steps × batch size / examples" for PaLM
    billable_training_tokens: int | None  # total_tokens × epochs
    cost: CostEstimate | None = None


@dataclass(frozen=True)
class DatasetSection:
    """The figures of one file: the training set, or its validation set."""

    source_name: str
    format: str | None
    counts: Counts
    errors_by_code: dict[str, int] = field(default_factory=dict)
    warnings_by_code: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetReport:
    """The verdict on one upload. Valid only with zero errors; warnings never block."""

    valid: bool
    base_model: str
    training: DatasetSection
    validation: DatasetSection | None
    tokens: TokenStats | None
    errors: tuple[Issue, ...]  # first N in full, training then validation
    warnings: tuple[Issue, ...]
    error_total: int
    warning_total: int
    options: dict[str, Any]

    @property
    def format(self) -> str | None:
        return self.training.format

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "verdict": "valid" if self.valid else "invalid",
            "base_model": self.base_model,
            "format": self.format,
            "training": asdict(self.training),
            "validation": asdict(self.validation) if self.validation else None,
            "tokens": asdict(self.tokens) if self.tokens else None,
            "error_total": self.error_total,
            "warning_total": self.warning_total,
            "errors_listed": len(self.errors),
            "warnings_listed": len(self.warnings),
            "errors": [issue.to_dict() for issue in self.errors],
            "warnings": [issue.to_dict() for issue in self.warnings],
            "options": self.options,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        # ensure_ascii keeps hostile user text (control characters, odd Unicode) escaped.
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=True, sort_keys=False)

    def summary(self, *, max_issues: int = 10) -> str:
        """A few lines for the CLI and the rejection event."""
        counts = self.training.counts
        verdict = "VALID" if self.valid else "INVALID"
        lines = [
            f"{verdict}: {self.training.source_name} for {self.base_model} "
            f"(format: {self.format or 'unknown'}; {counts.examples} examples, {counts.valid} valid, "
            f"{counts.dropped} dropped; {self.error_total} errors, {self.warning_total} warnings)"
        ]
        if self.tokens is not None:
            billable = self.tokens.billable_training_tokens
            lines.append(
                f"tokens: {self.tokens.total_tokens} ({self.tokens.method})"
                + (f"; billable training tokens: {billable}" if billable is not None else "")
                + (f"; cost: {self.tokens.cost.describe()}" if self.tokens.cost is not None else "")
            )
        lines.extend(issue.describe() for issue in self.errors[:max_issues])
        hidden = self.error_total - min(len(self.errors), max_issues)
        if hidden > 0:
            lines.append(f"… and {hidden} more errors")
        lines.extend(issue.describe() for issue in self.warnings[: max(0, max_issues - len(self.errors))])
        return "\n".join(lines)
