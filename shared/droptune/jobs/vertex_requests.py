"""The Vertex AI request of a job: a tuningJobs.create body, or a pipelineJobs.create body for PaLM.

Bodies are built as the REST JSON the API documents (camelCase, enums by name), so a test can
compare them with the reference and the same dict goes to the client library unchanged:
- open models (M1.1, M1.6, M1.7): `baseModel` (plus `customBaseModel` for continued tuning),
  `supervisedTuningSpec` with the tuning mode, epochs, learning-rate multiplier and adapter size,
  training and validation URIs, `outputUri`, display name, labels, CMEK and service account.
  https://cloud.google.com/vertex-ai/generative-ai/docs/models/open-model-tuning
- translation-llm-002 (M2.1, M2.2): `baseModel`, the dataset URIs and `tunedModelDisplayName`, in
  us-central1 only.
- PaLM text/chat/code (M3.4-M3.6): a pipeline job from the model's template with the documented
  parameters; the job runs where its accelerator is (GPU: us-central1, TPU: europe-west4) and the
  tuned model is uploaded to the chosen region.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from droptune.catalog import ModelFamily, ModelSpec, get_model
from droptune.jobs.record import APP_LABEL, DATASET_ID_LABEL, JOB_ID_LABEL
from droptune.settings import Settings

VertexKind = Literal["tuningJobs", "pipelineJobs"]

# AdapterSize enum names of SupervisedHyperParameters.
ADAPTER_SIZE_NAMES = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
    32: "ADAPTER_SIZE_THIRTY_TWO",
}
TUNING_MODE_NAMES = {"FULL": "TUNING_MODE_FULL", "PEFT_ADAPTER": "TUNING_MODE_PEFT_ADAPTER"}
# Where open models write their final checkpoint under the output URI (M1.8).
FINAL_CHECKPOINT_PATH = "postprocess/node-0/checkpoints/final"
MAX_DISPLAY_NAME = 128
PALM_EVALUATION_INTERVAL = 20  # seed 003 default


@dataclass(frozen=True)
class VertexRequest:
    kind: VertexKind
    region: str  # where the job is created (its parent location)
    body: dict[str, Any]
    output_uri: str


def output_uri(document: Mapping[str, Any], settings: Settings) -> str:
    """`gs://<datasets bucket>/<output prefix><job id>/` unless the upload named its own."""
    options = document.get("options") or {}
    given = options.get("output_uri")
    if given:
        return str(given).rstrip("/") + "/"
    return f"gs://{settings.datasets_bucket}/{settings.output_prefix}{document['job_id']}/"


def final_checkpoint_uri(output: str) -> str:
    return output.rstrip("/") + "/" + FINAL_CHECKPOINT_PATH


def job_labels(document: Mapping[str, Any], settings: Settings) -> dict[str, str]:
    """The operator's labels, then droptune's own (which win: the job id label is load-bearing)."""
    return settings.labels | {
        APP_LABEL[0]: APP_LABEL[1],
        JOB_ID_LABEL: str(document["job_id"]),
        DATASET_ID_LABEL: str(document["dataset_id"]),
    }


def display_name(document: Mapping[str, Any]) -> str:
    options = document.get("options") or {}
    if options.get("display_name"):
        return str(options["display_name"])[:MAX_DISPLAY_NAME]
    stem = str(document["object"]).rsplit("/", 1)[-1].removesuffix(".jsonl")
    suffix = f"-{document['job_id']}"
    return stem[: MAX_DISPLAY_NAME - len(suffix)] + suffix


def build_request(document: Mapping[str, Any], settings: Settings) -> VertexRequest:
    """The create request of a job document, for the family of its base model."""
    spec = get_model(str(document["base_model"]))
    if spec.family is ModelFamily.OPEN_MODEL:
        return _open_model_request(document, settings, spec)
    if spec.family is ModelFamily.TRANSLATION:
        return _translation_request(document, settings, spec)
    return _palm_request(document, settings, spec)


def _kms_key(document: Mapping[str, Any], settings: Settings) -> str | None:
    options = document.get("options") or {}
    return options.get("encryption_key_name") or settings.kms_key_name


def _common(document: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    body: dict[str, Any] = {"labels": job_labels(document, settings)}
    key = _kms_key(document, settings)
    if key:
        body["encryptionSpec"] = {"kmsKeyName": key}
    if settings.tuning_service_account:
        body["serviceAccount"] = settings.tuning_service_account
    return body


def _datasets(document: Mapping[str, Any]) -> dict[str, Any]:
    options = document.get("options") or {}
    spec: dict[str, Any] = {"trainingDatasetUri": document.get("training_uri") or document["dataset_uri"]}
    validation = options.get("validation_dataset") or document.get("validation_uri")
    if validation:
        spec["validationDatasetUri"] = _absolute_uri(str(validation), str(document["bucket"]))
    return spec


def _absolute_uri(path: str, bucket: str) -> str:
    # A manifest may name the validation set by object name, in the upload's bucket.
    return path if path.startswith("gs://") else f"gs://{bucket}/{path.lstrip('/')}"


def _open_model_request(document: Mapping[str, Any], settings: Settings, spec: ModelSpec) -> VertexRequest:
    options = document.get("options") or {}
    hyper: dict[str, Any] = {}
    if options.get("epochs") is not None:
        hyper["epochCount"] = int(options["epochs"])
    if options.get("learning_rate_multiplier") is not None:
        hyper["learningRateMultiplier"] = float(options["learning_rate_multiplier"])
    if options.get("adapter_size") is not None:
        hyper["adapterSize"] = ADAPTER_SIZE_NAMES[int(options["adapter_size"])]
    tuning = _datasets(document)
    if hyper:
        tuning["hyperParameters"] = hyper
    mode = options.get("tuning_mode") or document.get("tuning_mode")
    if mode:
        tuning["tuningMode"] = TUNING_MODE_NAMES[str(mode)]
    output = output_uri(document, settings)
    body = {
        "baseModel": spec.model_id,
        "supervisedTuningSpec": tuning,
        "tunedModelDisplayName": display_name(document),
        "outputUri": output,
        **_common(document, settings),
    }
    if options.get("custom_base_model"):
        # Continued tuning (M1.6): the checkpoint folder, with the base model naming its architecture.
        body["customBaseModel"] = str(options["custom_base_model"])
    return VertexRequest("tuningJobs", str(options.get("region") or settings.region), body, output)


def _translation_request(document: Mapping[str, Any], settings: Settings, spec: ModelSpec) -> VertexRequest:
    body = {
        "baseModel": spec.model_id,
        "supervisedTuningSpec": _datasets(document),
        "tunedModelDisplayName": display_name(document),
        **_common(document, settings),
    }
    # M2.1: translation-llm-002 is tuned in us-central1 whatever the default region is.
    return VertexRequest("tuningJobs", spec.regions[0], body, output_uri(document, settings))


def _palm_request(document: Mapping[str, Any], settings: Settings, spec: ModelSpec) -> VertexRequest:
    assert spec.palm is not None
    options = document.get("options") or {}
    accelerator = str(options.get("accelerator_type") or "GPU").upper()
    tuning_region = "europe-west4" if accelerator == "TPU" else "us-central1"
    upload_region = str(options.get("region") or settings.region)
    output = output_uri(document, settings)
    parameters: dict[str, Any] = {
        "project": settings.project,
        "model_display_name": display_name(document),
        "dataset_uri": document["dataset_uri"],
        "location": upload_region,
        "accelerator_type": accelerator,
        "large_model_reference": spec.palm.large_model_reference,
        "train_steps": int(options.get("train_steps") or spec.palm.default_train_steps),
        "learning_rate_multiplier": float(options.get("learning_rate_multiplier") or 1.0),
    }
    if spec.family is ModelFamily.PALM_CHAT:
        if options.get("default_context"):
            parameters["default_context"] = str(options["default_context"])
    else:
        evaluation = options.get("validation_dataset") or document.get("validation_uri")
        if evaluation:
            parameters["evaluation_data_uri"] = _absolute_uri(str(evaluation), str(document["bucket"]))
            parameters["evaluation_interval"] = int(
                options.get("evaluation_interval") or PALM_EVALUATION_INTERVAL
            )
            early = options.get("enable_early_stopping")
            parameters["enable_early_stopping"] = True if early is None else bool(early)
    key = _kms_key(document, settings)
    if key:
        parameters["encryption_spec_key_name"] = key
    body = {
        "displayName": display_name(document),
        "templateUri": spec.palm.template_uri,
        "runtimeConfig": {"gcsOutputDirectory": output, "parameterValues": parameters},
        **_common(document, settings),
    }
    return VertexRequest("pipelineJobs", tuning_region, body, output)
