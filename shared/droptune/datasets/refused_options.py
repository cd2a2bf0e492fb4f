"""The report of an upload whose options were refused, before its data is read (issue 3 §2).

The validator writes it beside the upload and `droptune validate` prints it: one shape for both,
every problem naming the option, where its value came from, and the values allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from droptune.datasets.options import OptionProblem
from droptune.datasets.report import REPORT_SCHEMA_VERSION

Issue = dict[str, str | None]


def parse_manifest(data: bytes, where: str) -> tuple[dict[str, object] | None, str | None]:
    """The options a manifest holds, or None and what is wrong with it (naming `where`)."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{where} is not valid JSON ({error}); write one JSON object of options"
    if not isinstance(manifest, dict):
        return None, f'{where} must hold one JSON object of options, e.g. {{"epochs": 3}}'
    return manifest, None


def option_issues(problems: Iterable[OptionProblem], *, source_of: Callable[[str], str] = str) -> list[Issue]:
    """One issue per refused option; `source_of` may say where the value came from in the
    caller's terms (a command-line flag rather than object metadata)."""
    return [
        {
            "severity": "error",
            "code": "invalid_option",
            "option": problem.option,
            "source": source_of(problem.source),
            "value": problem.value,
            "allowed": problem.allowed,
            "message": problem.message,
            "remedy": f"Set {problem.option} to one of: {problem.allowed}.",
        }
        for problem in problems
    ]


def manifest_issue(source: str, message: str, remedy: str) -> Issue:
    return {
        "severity": "error",
        "code": "invalid_manifest",
        "option": None,
        "source": source,
        "value": None,
        "allowed": "a JSON object of option names and values",
        "message": message,
        "remedy": remedy,
    }


def refused_options_report(dataset: str, issues: list[Issue]) -> dict[str, Any]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "verdict": "invalid",
        "dataset": dataset,
        "error_total": len(issues),
        "errors": issues,
    }


def refused_options_summary(dataset: str, issues: Iterable[Mapping[str, str | None]]) -> str:
    return "\n".join(
        [f"INVALID OPTIONS: {dataset}"]
        + [f"{i['option'] or i['source']}: {i['message']} Allowed: {i['allowed']}." for i in issues]
    )
