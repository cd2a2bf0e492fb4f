"""The create bodies of tuning and pipeline jobs, field by field (M1.1, M1.6, M1.7, M2.1, M2.2, M3.4)."""

from __future__ import annotations

from typing import Any

import pytest

from droptune.jobs.vertex_requests import build_request, final_checkpoint_uri
from droptune.settings import Settings

SETTINGS = Settings(
    project="proj-123",
    datasets_bucket="bucket-a",
    region="europe-west4",
    label_pairs=(("team", "ml"),),
    tuning_service_account="tuner@proj-123.iam.gserviceaccount.com",
)


def _document(base_model: str, **options: Any) -> dict[str, Any]:
    return {
        "job_id": "job-abc",
        "dataset_id": "ds-abc",
        "dataset_uri": "gs://bucket-a/datasets/train.jsonl",
        "bucket": "bucket-a",
        "object": "datasets/train.jsonl",
        "validation_uri": None,
        "base_model": base_model,
        "tuning_mode": options.get("tuning_mode"),
        "options": {"base_model": base_model} | options,
    }


def test_open_model_body_has_every_documented_field_M1_7() -> None:
    request = build_request(
        _document(
            "meta/llama3_1@llama-3.1-8b",
            region="us-central1",
            tuning_mode="PEFT_ADAPTER",
            epochs=3,
            learning_rate_multiplier=0.5,
            adapter_size=8,
            validation_dataset="datasets/val.jsonl",
            encryption_key_name="projects/p/locations/us-central1/keyRings/r/cryptoKeys/k",
        ),
        SETTINGS,
    )
    assert request.kind == "tuningJobs" and request.region == "us-central1"
    body = request.body
    assert body["baseModel"] == "meta/llama3_1@llama-3.1-8b"
    assert body["supervisedTuningSpec"] == {
        "trainingDatasetUri": "gs://bucket-a/datasets/train.jsonl",
        "validationDatasetUri": "gs://bucket-a/datasets/val.jsonl",
        "hyperParameters": {
            "epochCount": 3,
            "learningRateMultiplier": 0.5,
            "adapterSize": "ADAPTER_SIZE_EIGHT",
        },
        "tuningMode": "TUNING_MODE_PEFT_ADAPTER",
    }
    assert body["outputUri"] == "gs://bucket-a/tuned/job-abc/"
    assert body["labels"] == {
        "team": "ml",
        "app": "droptune",
        "droptune-job-id": "job-abc",
        "droptune-dataset-id": "ds-abc",
    }
    assert body["encryptionSpec"] == {
        "kmsKeyName": "projects/p/locations/us-central1/keyRings/r/cryptoKeys/k"
    }
    assert body["serviceAccount"] == "tuner@proj-123.iam.gserviceaccount.com"
    assert body["tunedModelDisplayName"] == "train-job-abc"
    assert "customBaseModel" not in body
    assert (
        final_checkpoint_uri(request.output_uri)
        == "gs://bucket-a/tuned/job-abc/postprocess/node-0/checkpoints/final"
    )


def test_continued_tuning_sends_the_checkpoint_with_its_base_model_M1_6() -> None:
    body = build_request(
        _document("google/gemma3@gemma-3-1b-it", custom_base_model="gs://b/ckpt/", tuning_mode="FULL"),
        SETTINGS,
    ).body
    assert body["customBaseModel"] == "gs://b/ckpt/"
    assert body["baseModel"] == "google/gemma3@gemma-3-1b-it"


def test_the_job_id_label_cannot_be_overridden_by_operator_labels() -> None:
    settings = Settings(
        project="proj-123", datasets_bucket="bucket-a", label_pairs=(("droptune-job-id", "x"),)
    )
    body = build_request(_document("google/gemma3@gemma-3-1b-it"), settings).body
    assert body["labels"]["droptune-job-id"] == "job-abc"


def test_translation_is_created_in_us_central1_with_only_its_fields_M2_2() -> None:
    request = build_request(_document("translation-llm-002", display_name="my-tl"), SETTINGS)
    assert request.kind == "tuningJobs" and request.region == "us-central1"
    assert set(request.body) == {
        "baseModel",
        "supervisedTuningSpec",
        "tunedModelDisplayName",
        "labels",
        "serviceAccount",
    }
    assert request.body["tunedModelDisplayName"] == "my-tl"
    assert "tuningMode" not in request.body["supervisedTuningSpec"]


@pytest.mark.parametrize(("accelerator", "region"), [("GPU", "us-central1"), ("TPU", "europe-west4")])
def test_palm_text_is_a_pipeline_job_with_the_parameters_of_M3_4(accelerator: str, region: str) -> None:
    request = build_request(
        _document(
            "text-bison@002",
            region="us-central1",
            accelerator_type=accelerator,
            train_steps=100,
            validation_dataset="gs://bucket-a/eval.jsonl",
        ),
        SETTINGS,
    )
    assert request.kind == "pipelineJobs" and request.region == region
    assert request.body["templateUri"].endswith("/tune-large-model/v2.0.0")
    parameters = request.body["runtimeConfig"]["parameterValues"]
    assert parameters == {
        "project": "proj-123",
        "model_display_name": "train-job-abc",
        "dataset_uri": "gs://bucket-a/datasets/train.jsonl",
        "location": "us-central1",
        "accelerator_type": accelerator,
        "large_model_reference": "text-bison@002",
        "train_steps": 100,
        "learning_rate_multiplier": 1.0,
        "evaluation_data_uri": "gs://bucket-a/eval.jsonl",
        "evaluation_interval": 20,
        "enable_early_stopping": True,
    }
    assert request.body["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket-a/tuned/job-abc/"


def test_palm_chat_uses_the_chat_template_and_default_context_without_evaluation_M3_4() -> None:
    request = build_request(_document("chat-bison@002", default_context="Be brief."), SETTINGS)
    assert request.body["templateUri"].endswith("/tune-large-chat-model/v3.0.0")
    parameters = request.body["runtimeConfig"]["parameterValues"]
    assert parameters["default_context"] == "Be brief."
    assert "evaluation_data_uri" not in parameters


def test_bodies_parse_as_the_client_library_types() -> None:
    from google.cloud.aiplatform_v1beta1.types import PipelineJob, TuningJob
    from google.protobuf import json_format

    tuning = build_request(
        _document("meta/llama3_1@llama-3.1-8b", tuning_mode="PEFT_ADAPTER", epochs=2, adapter_size=4),
        SETTINGS,
    )
    json_format.ParseDict(tuning.body, TuningJob.pb(TuningJob()))
    pipeline = build_request(_document("text-bison@002"), SETTINGS)
    json_format.ParseDict(pipeline.body, PipelineJob.pb(PipelineJob()))
