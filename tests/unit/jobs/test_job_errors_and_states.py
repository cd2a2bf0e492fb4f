"""Error categories with remedies (M3.9), the legal transitions (issue 5 §2) and what a Vertex job
resource becomes in the job document (M2.5, M2.6)."""

from __future__ import annotations

import pytest

from droptune.envelopes import MalformedEventError
from droptune.identity import job_id
from droptune.jobs.errors import ErrorCategory, categorize
from droptune.jobs.experiment_metrics import MetricsReading
from droptune.jobs.launcher import parse_tune_request
from droptune.jobs.poller import observation
from droptune.jobs.record import TRANSITIONS, JobState, is_legal
from droptune.jobs.vertex_access import (
    PermanentVertexError,
    QuotaExceededError,
    TransientVertexError,
    classify,
)


@pytest.mark.parametrize(
    ("code", "message", "category", "remedy_part"),
    [
        (13, "Internal error encountered.", ErrorCategory.INTERNAL, "upload the dataset again"),
        (
            7,
            "Permission denied on resource projects/p/locations/us-central1/metadataStores/default",
            ErrorCategory.PERMISSIONS,
            "roles/aiplatform.admin and roles/storage.objectAdmin",
        ),
        (
            7,
            "Permission 'artifactregistry.repositories.downloadArtifacts' denied",
            ErrorCategory.PERMISSIONS,
            "propagate",
        ),
        (8, "Quota exceeded for quota metric 'Concurrent tuning jobs'", ErrorCategory.QUOTA, "queues"),
        (8, "The zone does not have enough resources available (stockout)", ErrorCategory.CAPACITY, "region"),
        (3, "gs://b/train.jsonl line 4: invalid JSON", ErrorCategory.USER_DATA, "fix what the message names"),
        (9, "Accelerators are not supported for this project.", ErrorCategory.RETIRED_MODEL, "retired"),
    ],
)
def test_known_failures_get_their_category_and_remedy_M3_9(
    code: int, message: str, category: ErrorCategory, remedy_part: str
) -> None:
    error = categorize(
        code, message, base_model="text-bison@002" if category is ErrorCategory.RETIRED_MODEL else None
    )
    assert error.category is category
    assert remedy_part.lower() in error.remedy.lower()
    assert error.to_dict()["category"] == category.value


def test_call_errors_sort_into_quota_transient_and_permanent() -> None:
    assert isinstance(classify(8, "Quota exceeded"), QuotaExceededError)
    assert isinstance(classify(14, "unavailable"), TransientVertexError)
    assert isinstance(classify(13, "Internal error encountered."), TransientVertexError)
    assert isinstance(classify(7, "artifactregistry permission denied"), TransientVertexError)
    assert isinstance(classify(3, "bad field"), PermanentVertexError)


def test_the_state_machine_allows_only_the_documented_moves() -> None:
    assert is_legal(JobState.QUEUED, JobState.LAUNCHING)
    assert is_legal(JobState.LAUNCHING, JobState.QUEUED)  # a 429 puts the job back in the queue
    assert is_legal(JobState.RUNNING, JobState.RUNNING)  # a Vertex sub-state change
    assert is_legal(JobState.SUCCEEDED, JobState.DEPLOYING)
    assert not is_legal(JobState.QUEUED, JobState.RUNNING)
    assert not is_legal(JobState.FAILED, JobState.QUEUED)
    assert not is_legal(JobState.CANCELLED, JobState.RUNNING)
    for terminal in (JobState.FAILED, JobState.CANCELLED, JobState.DEPLOYED):
        assert TRANSITIONS[terminal] == frozenset()
    assert set(TRANSITIONS) == set(JobState)


def test_a_tune_request_whose_id_does_not_match_its_inputs_is_malformed() -> None:
    options = {"base_model": "google/gemma3@gemma-3-1b-it", "epochs": 1}
    request = {
        "job_id": job_id("b", "datasets/x.jsonl", "7", options),
        "dataset_id": "ds-1",
        "dataset_uri": "gs://b/datasets/x.jsonl",
        "bucket": "b",
        "object": "datasets/x.jsonl",
        "generation": "7",
        "base_model": "google/gemma3@gemma-3-1b-it",
        "options": options,
    }
    assert parse_tune_request(request) is request
    with pytest.raises(MalformedEventError, match="does not match"):
        parse_tune_request(request | {"generation": "8"})
    with pytest.raises(MalformedEventError, match="without dataset_uri"):
        parse_tune_request({k: v for k, v in request.items() if k != "dataset_uri"})


def test_an_observation_keeps_documented_fields_and_m2_5_metrics_only() -> None:
    vertex_job = {
        "name": "projects/p/locations/us-central1/tuningJobs/42",
        "state": "JOB_STATE_SUCCEEDED",
        "tuningJobState": None,
        "outputUri": "gs://b/tuned/job-1/",
        "tunedModel": {
            "model": "projects/p/locations/us-central1/models/7@1",
            "checkpoints": [{"checkpointId": "1", "epoch": "1", "step": "4"}],
        },
        "tuningDataStats": {"supervisedTuningDataStats": {"totalBillableTokenCount": "1200"}},
        # The stand-in's own record: never the metrics of a tuning job, which come from its experiment.
        "droptuneMetrics": {"latest": {"/train_total_loss": 9.0}, "currentStep": 9},
    }
    reading = MetricsReading({"/train_total_loss": 1.5, "/eval_total_loss": 1.7}, 4, {"experiment": "e"})
    fields = observation(vertex_job, {"vertex": {"region": "us-central1"}}, reading)
    assert fields["vertex"]["state"] == "JOB_STATE_SUCCEEDED"
    assert fields["metrics"] == {"/train_total_loss": 1.5, "/eval_total_loss": 1.7}
    assert fields["metrics_step"] == 4 and fields["metrics_source"] == {"experiment": "e"}
    assert fields["checkpoints"] == [{"checkpoint_id": "1", "epoch": 1, "step": 4}]
    assert fields["final_checkpoint_uri"] == "gs://b/tuned/job-1/postprocess/node-0/checkpoints/final"
    assert fields["tuned_model"] == {"model": "projects/p/locations/us-central1/models/7@1", "endpoint": None}
    assert fields["tuning_data_stats"] == {"totalBillableTokenCount": "1200"}


def test_a_tick_without_a_metrics_reading_keeps_the_metrics_the_job_had() -> None:
    running = {"name": "projects/p/locations/us-central1/tuningJobs/42", "state": "JOB_STATE_RUNNING"}
    document = {
        "metrics": {"/train_total_loss": 2.0},
        "metrics_step": 7,
        "metrics_source": {"experiment": "e"},
    }
    fields = observation(running, document, None)
    assert fields["metrics"] == {"/train_total_loss": 2.0} and fields["metrics_step"] == 7
    assert fields["metrics_source"] == {"experiment": "e"}


def test_pipeline_states_read_as_job_states_and_progress_changes_the_fingerprint() -> None:
    running = {"name": "projects/p/locations/us-central1/pipelineJobs/9", "state": "PIPELINE_STATE_RUNNING"}
    first = observation(running, {})
    later = observation(running | {"droptuneMetrics": {"currentStep": 3}}, {})
    assert first["vertex"]["state"] == "JOB_STATE_RUNNING" and first["vertex"]["kind"] == "pipelineJobs"
    assert first["progress_fingerprint"] != later["progress_fingerprint"]
    assert observation(running, {})["progress_fingerprint"] == first["progress_fingerprint"]
