"""Images (M1.4), token limits and counts (M1.12, M2.1, M2.3, M3.2–M3.5), validation sets (M1.5)."""

import base64
from collections.abc import Mapping, Sequence

from conftest import GOOD_CHAT, Validate, chat, codes, jsonl, warning_codes

from droptune.datasets import ImageProblem, ImageProblemKind

SCOUT = "meta/llama4@llama-4-scout-17b-16e-instruct"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def image_chat(url: str) -> dict[str, object]:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        ]
    }


def data_url(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def test_data_url_image_of_the_declared_type_is_valid_m1_4(validate: Validate) -> None:
    report = validate(jsonl(image_chat(data_url("image/png", PNG))), SCOUT)
    assert report.valid, [i.describe() for i in report.errors]


def test_data_url_type_mismatch_and_unsupported_type(validate: Validate) -> None:
    report = validate(
        jsonl(image_chat(data_url("image/jpeg", PNG)), image_chat(data_url("image/gif", b"GIF89a"))), SCOUT
    )
    assert [(i.code, i.line, i.field) for i in report.errors] == [
        ("image_type_mismatch", 1, "messages[0].content[1].image_url.url"),
        ("image_type_unsupported", 2, "messages[0].content[1].image_url.url"),
    ]
    assert "image/png" in report.errors[0].remedy


def test_http_image_url_is_rejected_case_29(validate: Validate) -> None:
    report = validate(jsonl(image_chat("https://example.com/cat.jpg")), SCOUT)
    assert codes(report) == ["image_url_scheme"] and "gs://" in report.errors[0].remedy


def test_image_for_a_text_only_model_is_an_error(validate: Validate) -> None:
    report = validate(jsonl(image_chat(data_url("image/png", PNG))))
    assert codes(report) == ["image_not_supported"] and SCOUT in report.errors[0].remedy


def test_gcs_images_checked_once_per_distinct_uri_with_iam_remedy_for_other_bucket(
    validate: Validate,
) -> None:
    calls: list[Sequence[str]] = []

    def check(uris: Sequence[str]) -> Mapping[str, ImageProblem | None]:
        calls.append(list(uris))
        return {
            "gs://datasets/ok.png": None,
            "gs://datasets/missing.png": ImageProblem(ImageProblemKind.NOT_FOUND),
            "gs://other-bucket/cat.png": ImageProblem(ImageProblemKind.FORBIDDEN, "403"),
        }

    examples = [image_chat("gs://datasets/ok.png")] * 3 + [
        image_chat("gs://datasets/missing.png"),
        image_chat("gs://other-bucket/cat.png"),
        image_chat("gs://other-bucket/cat.png"),
    ]
    report = validate(
        jsonl(*examples), SCOUT, check_gcs_images=check, source_name="gs://datasets/train.jsonl"
    )
    assert calls == [["gs://datasets/missing.png", "gs://datasets/ok.png", "gs://other-bucket/cat.png"]]
    missing, forbidden = report.errors
    assert (missing.code, missing.line) == ("image_not_found", 4)
    assert (forbidden.code, forbidden.line, forbidden.field) == (
        "image_forbidden",
        5,
        "messages[0].content[1].image_url.url",
    )
    assert "roles/storage.objectUser" in forbidden.remedy and "gcp-sa-vertex-moss-ft" in forbidden.remedy
    assert "2 examples use it" in forbidden.message
    assert report.training.counts.valid == 3 and report.training.counts.invalid == 3


def test_text_only_examples_are_dropped_when_any_image_exists_m1_4(validate: Validate) -> None:
    text_only = chat(("user", "hi"), ("assistant", "hello"))
    report = validate(jsonl(text_only, text_only, image_chat(data_url("image/png", PNG))), SCOUT)
    assert report.valid
    assert report.training.counts.dropped == 2 and report.training.counts.valid == 3
    dropped = [w for w in report.warnings if w.code == "text_only_examples_dropped"]
    assert dropped and dropped[0].message.startswith("2 text-only examples")


def test_file_data_part_for_generate_content(validate: Validate) -> None:
    example = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "What?"},
                    {"file_data": {"mime_type": "image/gif", "file_uri": "gs://b/x.gif"}},
                ],
            },
            {"role": "assistant", "parts": [{"text": "A cat."}]},
        ]
    }
    report = validate(jsonl(example), SCOUT)
    assert [(i.code, i.field) for i in report.errors] == [
        ("image_type_unsupported", "contents[0].parts[1].file_data.mime_type")
    ]
    parts = example["contents"][0]["parts"]  # type: ignore[index]
    parts[1]["file_data"]["mime_type"] = "image/jpeg"
    unchecked = validate(jsonl(example), SCOUT)
    assert unchecked.valid and "images_not_checked" in warning_codes(unchecked)


def test_exact_token_count_over_translation_limit_is_an_error_m2_1(validate: Validate) -> None:
    ok = {
        "contents": [
            {"role": "user", "parts": [{"text": "short"}]},
            {"role": "model", "parts": [{"text": "x"}]},
        ]
    }
    long = {
        "contents": [
            {"role": "user", "parts": [{"text": "w " * 600}]},
            {"role": "model", "parts": [{"text": "w " * 500}]},
        ]
    }
    report = validate(jsonl(ok, long), "translation-llm-002", count_tokens=lambda text: len(text.split()))
    assert [(i.code, i.line) for i in report.errors] == [("example_too_long", 2)]
    assert "1100 tokens" in report.errors[0].message and "1000" in report.errors[0].remedy
    assert report.tokens is not None and report.tokens.exact and report.tokens.examples_over_limit == 1


def test_estimated_tokens_near_the_maximum_only_warn(validate: Validate) -> None:
    """An estimate cannot reject: within its ±25% it warns, well above it errs."""
    near = {
        "contents": [
            {"role": "user", "parts": [{"text": "a" * 4400}]},
            {"role": "model", "parts": [{"text": "b"}]},
        ]
    }
    far = {
        "contents": [
            {"role": "user", "parts": [{"text": "a" * 8000}]},
            {"role": "model", "parts": [{"text": "b"}]},
        ]
    }
    report = validate(jsonl(near, far), "translation-llm-002")
    assert [(i.code, i.line) for i in report.errors] == [("example_too_long", 2)]
    assert "example_may_be_too_long" in warning_codes(report)
    assert report.tokens is not None and not report.tokens.exact and "±25%" in report.tokens.method


def test_open_model_over_max_sequence_length_warns_truncation(validate: Validate) -> None:
    report = validate(jsonl({"prompt": "word " * 10_000, "completion": "x"}))
    assert report.valid and "example_truncated" in warning_codes(report)


def test_palm_output_over_1024_tokens_warns_truncation_m3_2(validate: Validate) -> None:
    examples = [{"input_text": "q", "output_text": "a"}] * 9 + [
        {"input_text": "q", "output_text": "a" * 5000}
    ]
    report = validate(jsonl(*examples), "text-bison@002", retired="allow")
    assert report.valid
    truncated = [w for w in report.warnings if w.code == "output_truncated"]
    assert truncated and truncated[0].line == 10


def test_palm_epochs_from_steps_batch_and_examples_m3_5(validate: Validate) -> None:
    """Seed 003's example: text-bison@002 in europe-west4 (TPU), 240 examples, 20 steps → 2 epochs."""
    examples = [{"input_text": f"question {i}", "output_text": "answer"} for i in range(240)]
    report = validate(
        jsonl(*examples),
        "text-bison@002",
        retired="allow",
        options={"train_steps": "20", "accelerator_type": "TPU"},
    )
    assert report.tokens is not None
    assert report.tokens.epochs == 2.0 and "batch size 24" in report.tokens.epochs_basis
    assert report.tokens.billable_training_tokens == report.tokens.total_tokens * 2


def test_training_tokens_times_epochs_m1_12(validate: Validate) -> None:
    report = validate(jsonl({"prompt": "abcd" * 10, "completion": "abcd" * 5}), options={"epochs": "4"})
    assert report.tokens is not None
    assert report.tokens.total_tokens == 15 and report.tokens.billable_training_tokens == 60


def test_example_counts_palm_minimum_and_recommended_m3_2_m2_3(validate: Validate) -> None:
    few = validate(jsonl(*[{"input_text": "q", "output_text": "a"}] * 5), "text-bison@002", retired="allow")
    assert codes(few) == ["too_few_examples"] and "10" in few.errors[0].message
    translation = {
        "contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]
    }
    small = validate(jsonl(translation), "translation-llm-002")
    assert small.valid and "fewer_than_recommended" in warning_codes(small)


def test_palm_chat_author_fields_over_10000_m3_3(validate: Validate) -> None:
    turns = [{"author": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(1000)]
    report = validate(jsonl(*[{"messages": turns}] * 11), "chat-bison@002", retired="allow")
    assert "too_many_messages" in codes(report) and "11000" in report.errors[0].message


def test_validation_set_limits_and_format_m1_5(validate: Validate) -> None:
    pair = {
        "contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}]
    }
    report = validate(jsonl(*[pair] * 100), "translation-llm-002", validation=jsonl(*[pair] * 1025))
    assert [(i.code, i.dataset.value) for i in report.errors] == [("validation_too_large", "validation")]
    assert report.validation is not None and report.validation.counts.examples == 1025
    mixed = validate(jsonl(GOOD_CHAT), validation=jsonl({"prompt": "a", "completion": "b"}))
    assert [(i.code, i.dataset.value, i.line) for i in mixed.errors] == [
        ("validation_format_differs", "validation", 1)
    ]
