"""`droptune validate PATH`: the validator's checks on a local file, before anything is uploaded
(issue 3 §7).

Needs no stack and no cloud project. Options resolve exactly as the validator resolves them for an
upload: the settings' defaults, then a manifest beside the file (`x.manifest.json`), then the
command-line options, which stand for the object metadata `droptune upload` would set. A
validation set `x.validation.jsonl` beside the file is paired with it by the same naming rule.
What only the cloud can answer (do the gs:// images exist?) is said to be unchecked, never guessed.

Exit codes: 0 valid, 1 invalid (the data or the options), 2 usage error (a file missing or
unreadable, an unusable tokenizer or setting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from droptune.datasets.refused_options import (
    manifest_issue,
    option_issues,
    parse_manifest,
    refused_options_report,
)

if TYPE_CHECKING:
    from droptune.datasets import DatasetReport, TuningOptions
    from droptune.datasets.tokens import TokenCounter
    from droptune.settings import Settings

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

# The command-line options and the object metadata keys they stand for (as `droptune upload` sets them).
METADATA_OPTIONS = (
    ("base_model", "--base-model"),
    ("tuning_mode", "--mode"),
    ("epochs", "--epochs"),
)
# The project and the bucket name cloud resources a local check never touches; placeholders let
# the settings of this shell (DROPTUNE_DEFAULT_BASE_MODEL, DROPTUNE_RETIRED_MODELS, …) be read
# and checked as every function reads them, without requiring a project.
OFFLINE_PLACEHOLDERS = {
    "DROPTUNE_PROJECT": "droptune-offline",
    "DROPTUNE_DATASETS_BUCKET": "droptune-offline",
}


class UsageError(Exception):
    """A file is missing or unusable: nothing was validated (exit 2)."""


def add_validate_command(commands: Any) -> None:
    p = commands.add_parser(
        "validate", help="check a local JSONL dataset with the validator's rules, without uploading it"
    )
    p.add_argument("path", help="the JSONL training file")
    p.add_argument("--base-model", help="a catalog id, e.g. google/gemma3@gemma-3-1b-it")
    # No argparse choices: an unsupported mode is reported with the modes of the chosen model.
    p.add_argument("--mode", help="tuning mode: PEFT_ADAPTER or FULL, as the model allows")
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--validation", help="a validation JSONL (default: <stem>.validation.jsonl beside PATH, if present)"
    )
    p.add_argument(
        "--tokenizer", help="a tokenizer.json, or a model folder holding one, for exact token counts"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_validate)


@dataclass(frozen=True)
class _Tokenizer:
    count: TokenCounter
    name: str


def cmd_validate(args: argparse.Namespace) -> int:
    training = Path(args.path)
    notes: list[str] = []
    try:
        if not training.is_file():
            raise UsageError(f"{training} does not exist or is not a file")
        tokenizer = _load_tokenizer(Path(args.tokenizer)) if args.tokenizer else None
        chosen_validation = Path(args.validation) if args.validation else None
        if chosen_validation is not None and not chosen_validation.is_file():
            raise UsageError(f"the validation file {chosen_validation} does not exist or is not a file")
        settings = _offline_settings(os.environ)
        options, problems = _resolve(training, args, settings)
        if options is None:
            return _print_option_problems(training, problems, as_json=args.json)
        validation = _validation_file(training, chosen_validation, options, notes)
        notes.extend(_upload_notes(training, options, settings))
        report = _validate(training, validation, options, tokenizer)
    except UsageError as error:
        print(f"droptune: {error}", file=sys.stderr)
        return EXIT_USAGE
    if _images_unchecked(report):
        notes.append(
            "gs:// images were not checked: `droptune validate` works offline. After upload the "
            "validator checks that each one exists and that droptune may read it."
        )
    if args.json:
        print(report.to_json())
        for note in notes:
            print(f"droptune: note: {note}", file=sys.stderr)
    else:
        print(report.summary())
        for note in notes:
            print(f"note: {note}")
    return EXIT_VALID if report.valid else EXIT_INVALID


def _load_tokenizer(given: Path) -> _Tokenizer:
    from droptune.datasets.tokenizer_files import (
        TokenizerFileError,
        read_tokenizer_file,
        token_counter_from_json,
    )

    try:
        found = read_tokenizer_file(given)
        if found is None:
            raise UsageError(f"--tokenizer {given}: no such file, and no tokenizer.json in such a folder")
        path, data = found
        count = token_counter_from_json(data)
    except OSError as error:
        raise UsageError(f"cannot read {given}: {error.strerror or error}") from None
    except TokenizerFileError as error:
        raise UsageError(f"--tokenizer {given}: {error}") from None
    return _Tokenizer(count, str(path))


def _offline_settings(environ: Mapping[str, str]) -> Settings:
    from droptune.settings import Settings, SettingsError

    try:
        return Settings.from_environ(OFFLINE_PLACEHOLDERS | dict(environ))
    except SettingsError as error:
        raise UsageError(str(error)) from None


def _resolve(
    training: Path, args: argparse.Namespace, settings: Settings
) -> tuple[TuningOptions | None, list[dict[str, str | None]]]:
    """The options as the validator resolves them, or None and every problem found."""
    from droptune.catalog import RetiredModelPolicy
    from droptune.datasets import OptionsError, resolve_options

    manifest, manifest_problem = _read_manifest(training)
    metadata = {
        f"droptune-{option.replace('_', '-')}": str(value)
        for option, flag in METADATA_OPTIONS
        if (value := getattr(args, _dest(flag))) is not None
    }
    problems: list[dict[str, str | None]] = []
    options: TuningOptions | None = None
    try:
        options = resolve_options(
            settings.option_defaults,
            metadata,
            manifest,
            retired_models=RetiredModelPolicy(settings.retired_models),
        )
    except OptionsError as error:
        problems = option_issues(error.problems, source_of=_cli_source)
    if manifest_problem is not None:
        problems.append(manifest_problem)
    return (None, problems) if problems else (options, [])


def _read_manifest(training: Path) -> tuple[dict[str, object] | None, dict[str, str | None] | None]:
    from droptune.intake import manifest_name

    path = training.with_name(manifest_name(training.name))
    if not path.is_file():
        return None, None
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    manifest, problem = parse_manifest(data, str(path))
    if problem is not None:
        return None, manifest_issue(str(path), problem, "Fix the manifest, then run droptune validate again.")
    return manifest, None


def _dest(flag: str) -> str:
    """`--base-model` → `base_model`, the attribute argparse stores it in."""
    return flag.removeprefix("--").replace("-", "_")


def _cli_source(source: str) -> str:
    """`metadata droptune-epochs` → `--epochs`: the user set it on the command line, not as metadata."""
    for option, flag in METADATA_OPTIONS:
        if source == f"metadata droptune-{option.replace('_', '-')}":
            return flag
    return source


def _print_option_problems(training: Path, problems: list[dict[str, str | None]], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(refused_options_report(str(training), problems), indent=2, ensure_ascii=True))
    else:
        print(f"INVALID OPTIONS: {training} (the data was not checked; fix these first)")
        for issue in problems:
            where = issue["source"]
            if issue["option"]:
                where = f"{issue['option']} = {issue['value']!r} (from {issue['source']})"
            print(f"{where}: {issue['message']} Allowed: {issue['allowed']}.")
    return EXIT_INVALID


def _validation_file(
    training: Path, chosen: Path | None, options: TuningOptions, notes: list[str]
) -> Path | None:
    """--validation, else the paired file beside the training file, as the validator pairs them."""
    if chosen is not None:
        return chosen
    if options.validation_dataset:
        # The validator then reads that object from the bucket and ignores any paired file.
        notes.append(
            f"the options name the validation set {options.validation_dataset}, which is in the bucket; "
            "pass --validation FILE to check a local copy of it."
        )
        return None
    from droptune.datasets import paired_validation_name

    paired = training.with_name(paired_validation_name(training.name))
    return paired if paired.is_file() else None


def _upload_notes(training: Path, options: TuningOptions, settings: Settings) -> list[str]:
    """What the validator would do differently with this file once uploaded."""
    from droptune.datasets import is_validation_dataset_name
    from droptune.deployment import preflight_problem

    notes = []
    if is_validation_dataset_name(training.name):
        notes.append(
            f"{training.name} is named as a validation set: uploaded on its own, the validator skips it "
            "and checks it with its training file."
        )
    unservable = preflight_problem(options.base_model, settings)
    if unservable is not None:
        # A deployment setting, not the data: this shell's DROPTUNE_DEPLOY may differ from the functions'.
        notes.append(
            f"with DROPTUNE_DEPLOY={settings.deploy_policy} the validator refuses this model: {unservable}"
        )
    return notes


def _validate(
    training: Path, validation: Path | None, options: TuningOptions, tokenizer: _Tokenizer | None
) -> DatasetReport:
    from droptune.datasets import validate_dataset

    try:
        with ExitStack() as files:
            return validate_dataset(
                files.enter_context(training.open("rb")),
                options=options,
                source_name=str(training),
                size_bytes=training.stat().st_size,
                count_tokens=tokenizer.count if tokenizer else None,
                tokenizer_name=tokenizer.name if tokenizer else None,
                validation_stream=files.enter_context(validation.open("rb")) if validation else None,
                validation_source_name=str(validation) if validation else None,
            )
    except OSError as error:
        raise UsageError(f"cannot read {error.filename or training}: {error.strerror or error}") from None


def _images_unchecked(report: DatasetReport) -> bool:
    sections = (report.training, report.validation)
    return any(
        section is not None and "images_not_checked" in section.warnings_by_code for section in sections
    )
