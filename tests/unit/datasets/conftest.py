"""Helpers shared by the dataset tests: build JSONL bytes and validate them for a model."""

import io
import json
from collections.abc import Callable

import pytest

from droptune.datasets import DatasetReport, resolve_options, validate_dataset

Validate = Callable[..., DatasetReport]


def jsonl(*examples: object) -> bytes:
    return b"".join(json.dumps(example).encode() + b"\n" for example in examples)


def chat(*turns: tuple[str, str]) -> dict[str, object]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


GOOD_CHAT = chat(("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris."))


@pytest.fixture
def validate() -> Validate:
    def run(
        data: bytes,
        model: str = "meta/llama3_1@llama-3.1-8b",
        *,
        options: dict[str, str] | None = None,
        retired: str = "reject",
        **kwargs: object,
    ) -> DatasetReport:
        from droptune.catalog import RetiredModelPolicy

        resolved = resolve_options(
            {"base_model": model, **(options or {})}, {}, None, retired_models=RetiredModelPolicy(retired)
        )
        validation = kwargs.pop("validation", None)
        return validate_dataset(
            io.BytesIO(data),
            options=resolved,
            source_name=str(kwargs.pop("source_name", "gs://datasets/train.jsonl")),
            validation_stream=io.BytesIO(validation) if isinstance(validation, bytes) else None,
            **kwargs,  # type: ignore[arg-type]
        )

    return run


def codes(report: DatasetReport) -> list[str]:
    return [issue.code for issue in report.errors]


def warning_codes(report: DatasetReport) -> list[str]:
    return [issue.code for issue in report.warnings]


def only_error(report: DatasetReport) -> "object":
    assert len(report.errors) == 1, f"expected exactly one error, got {[i.describe() for i in report.errors]}"
    return report.errors[0]
