"""Which uploads the validator takes, and hostile object names (issue 2 bad input, issue 3 §8)."""

from __future__ import annotations

import pytest

from droptune.envelopes import StorageObject
from droptune.intake import ignore_reason, manifest_name, report_name
from droptune.settings import Settings

SETTINGS = Settings.from_environ({"DROPTUNE_PROJECT": "my-project-123", "DROPTUNE_DATASETS_BUCKET": "data"})


def upload(name: str, bucket: str = "data") -> StorageObject:
    return StorageObject(bucket=bucket, name=name, generation="1", size=10)


@pytest.mark.parametrize(
    "name",
    ["datasets/train.jsonl", "datasets/team a/données-été.jsonl", "datasets/deep/er/x.jsonl"],
)
def test_datasets_under_the_watched_prefix_are_taken(name: str) -> None:
    assert ignore_reason(upload(name), SETTINGS) is None


@pytest.mark.parametrize(
    ("name", "bucket", "why"),
    [
        ("other/train.jsonl", "data", "outside the watched prefix"),
        ("datasets/train.csv", "data", "not a .jsonl file"),
        ("datasets/train.jsonl.report.json", "data", "not a .jsonl file"),
        ("datasets/train.manifest.json", "data", "not a .jsonl file"),
        ("datasets/train.validation.jsonl", "data", "a validation set"),
        ("datasets/train.jsonl", "elsewhere", "not the datasets bucket"),
        ("datasets/../secrets/x.jsonl", "data", "path segments"),
        ("datasets/./x.jsonl", "data", "path segments"),
        ("datasets/evil\nname.jsonl", "data", "control characters"),
        ("datasets/evil\x00.jsonl", "data", "control characters"),
        ("datasets/" + "a" * 1100 + ".jsonl", "data", "longer than"),
    ],
)
def test_other_objects_and_hostile_names_are_ignored_with_the_reason(
    name: str, bucket: str, why: str
) -> None:
    reason = ignore_reason(upload(name, bucket), SETTINGS)
    assert reason is not None and why in reason


def test_reports_and_manifests_sit_beside_the_dataset() -> None:
    assert report_name("datasets/a/train.jsonl") == "datasets/a/train.jsonl.report.json"
    assert manifest_name("datasets/a/train.jsonl") == "datasets/a/train.manifest.json"
    # What droptune writes is never a dataset itself: no validation loop.
    assert ignore_reason(upload(report_name("datasets/a/train.jsonl")), SETTINGS) is not None
