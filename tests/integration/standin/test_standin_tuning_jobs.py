"""Tuning jobs through the official SDKs, as the launcher and the poller will drive them (M1, M2)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from typing import Any

import pytest
from conftest import LOCATION, PROJECT, Datasets, StandinServer, wait_for, wait_until_ended
from google.api_core import exceptions

from vertex_standin.tensorboard_events import read_scalar_tags

pytestmark = [pytest.mark.integration]

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
OPEN_MODEL = "meta/llama3_1@llama-3.1-8b"
TRAIN_METRICS = {"/train_total_loss", "/train_fraction_of_correct_next_step_preds", "/train_num_predictions"}
EVAL_METRICS = {"/eval_total_loss", "/eval_fraction_of_correct_next_step_preds", "/eval_num_predictions"}
CANCEL_BOUND_S = 10.0  # issue 4 §7: cancel stops the worker within seconds
QUICK_ANSWER_S = 1.0  # a GET on the tiny stand-in takes milliseconds; a held lock, seconds


def _train(datasets: Datasets, **options: Any) -> Any:
    from vertexai.tuning import sft

    arguments: dict[str, Any] = {
        "source_model": OPEN_MODEL,
        "train_dataset": datasets.train,
        "tuning_mode": "FULL",
        "epochs": 2,
    }
    arguments.update(options)
    return sft.train(**arguments)


@pytest.fixture(scope="module")
def finished_lora_job(vertex: str, datasets: Datasets) -> Any:
    job = _train(
        datasets,
        validation_dataset=datasets.validation,
        tuning_mode="PEFT_ADAPTER",
        epochs=3,
        adapter_size=4,
        learning_rate_multiplier=2.0,
        output_uri=f"gs://{datasets.train[5:].split('/')[0]}/out/lora",
        labels={"droptune-job-id": "job-123"},
        tuned_model_display_name="lora-test",
    )
    return wait_until_ended(job)


def test_lora_job_succeeds_with_echoed_request_and_tuned_model(finished_lora_job: Any) -> None:
    job = finished_lora_job
    resource = job._gca_resource
    assert job.has_succeeded, f"expected SUCCEEDED, got {job.state} {job.error}"
    assert resource.base_model == OPEN_MODEL
    assert resource.tuned_model_display_name == "lora-test"
    assert resource.labels["droptune-job-id"] == "job-123", "the caller's labels must be kept"
    spec = resource.supervised_tuning_spec
    assert spec.tuning_mode.name == "TUNING_MODE_PEFT_ADAPTER"
    assert spec.hyper_parameters.adapter_size.name == "ADAPTER_SIZE_FOUR"
    assert spec.hyper_parameters.epoch_count == 3
    assert job.tuned_model_name.startswith(f"{PARENT}/models/"), "open models get a tuned model"
    assert not job.tuned_model_endpoint_name, "open models are deployed by the user, not by the service"
    # M2.6: the job names its Vertex AI Experiment, which the SDK opens from the stand-in (it
    # checks the context's schema is system.Experiment).
    assert job.experiment is not None and job.experiment.resource_name == resource.experiment
    assert [c.epoch for c in resource.tuned_model.checkpoints] == [1, 2, 3]
    for stamp in ("create_time", "start_time", "end_time", "update_time"):
        assert getattr(resource, stamp), f"{stamp} missing"
    stats = resource.tuning_data_stats.supervised_tuning_data_stats
    assert stats.tuning_dataset_example_count == 30
    assert stats.tuning_step_count == 12  # 30 examples, batch 8 -> 4 steps x 3 epochs
    assert stats.total_billable_token_count > 0


def test_artifacts_follow_the_seed_layout(finished_lora_job: Any, gcs: Any) -> None:
    bucket, _, prefix = finished_lora_job._gca_resource.output_uri[5:].partition("/")
    names = {b.name for b in gcs.list_blobs(bucket, prefix=prefix)}
    root = f"{prefix}/postprocess/node-0/checkpoints"
    folders = sorted({n[len(root) + 1 :].split("/")[0] for n in names if n.startswith(root)})
    assert folders == ["checkpoint-12", "checkpoint-4", "checkpoint-8", "final"], (
        "one checkpoint per epoch (3 epochs) plus final/"
    )
    for folder in folders:
        assert f"{root}/{folder}/model-00001-of-00001.safetensors" in names, f"{folder} lacks its shard"
        assert f"{root}/{folder}/config.json" in names
    assert f"{root}/final/adapter/adapter_model.safetensors" in names, (
        "LoRA keeps its adapter beside the merge"
    )
    events = [n for n in names if "/tensorboard/events.out.tfevents." in n]
    assert events, "TensorBoard event files belong in the output folder"


def test_tensorboard_events_carry_the_seed_metric_names(
    finished_lora_job: Any, gcs: Any, tmp_path: Any
) -> None:
    bucket, _, prefix = finished_lora_job._gca_resource.output_uri[5:].partition("/")
    blob = next(b for b in gcs.list_blobs(bucket, prefix=f"{prefix}/tensorboard/"))
    local = tmp_path / "events"
    blob.download_to_filename(str(local))
    assert read_scalar_tags(local) == TRAIN_METRICS | EVAL_METRICS


def test_metrics_are_on_the_job_resource(finished_lora_job: Any, standin: StandinServer) -> None:
    # droptuneMetrics is the stand-in's own field, in no proto: see read_wire_resource.
    metrics = standin.read_wire_resource(finished_lora_job.resource_name)["droptuneMetrics"]
    assert set(metrics["latest"]) >= TRAIN_METRICS | EVAL_METRICS, metrics["latest"].keys()
    evals = [p for p in metrics["series"] if "/eval_total_loss" in p["values"]]
    assert [p["epoch"] for p in evals] == [1.0, 2.0, 3.0], "validation metrics once per epoch"
    assert evals[-1]["values"]["/eval_total_loss"] < evals[0]["values"]["/eval_total_loss"], (
        "loss must go down"
    )
    assert metrics["currentStep"] == metrics["totalSteps"] == 12
    assert [c["step"] for c in metrics["checkpoints"]] == ["4", "8", "12"]


def test_genai_reads_the_job_with_enum_names(finished_lora_job: Any, genai_client: Any) -> None:
    job = genai_client.tunings.get(name=finished_lora_job.resource_name)
    assert job.state.name == "JOB_STATE_SUCCEEDED"
    assert job.has_succeeded
    assert job.tuned_model.model == finished_lora_job.tuned_model_name
    assert job.supervised_tuning_spec.tuning_mode == "TUNING_MODE_PEFT_ADAPTER"


def test_genai_creates_with_enum_names_and_int64_numbers(
    vertex: str, genai_client: Any, datasets: Datasets
) -> None:
    from google.genai import types

    job = genai_client.tunings.tune(
        base_model="qwen/qwen3@qwen3-32b",
        training_dataset=types.TuningDataset(gcs_uri=datasets.train),
        config=types.CreateTuningJobConfig(
            tuned_model_display_name="genai-sft",
            epoch_count=1,
            tuning_mode=types.TuningMode("TUNING_MODE_PEFT_ADAPTER"),
            adapter_size=types.AdapterSize("ADAPTER_SIZE_TWO"),
            learning_rate=0.005,
        ),
    )
    assert job.name.startswith(f"{PARENT}/tuningJobs/")
    ended = wait_for(
        lambda: (j := genai_client.tunings.get(name=job.name)).has_ended and j, 120, "genai job end"
    )
    assert ended.state.name == "JOB_STATE_SUCCEEDED", ended.error
    assert ended.supervised_tuning_spec.hyper_parameters.adapter_size == "ADAPTER_SIZE_TWO"
    assert int(ended.supervised_tuning_spec.hyper_parameters.epoch_count) == 1


def test_full_tuning_from_a_custom_base_model(
    vertex: str, datasets: Datasets, finished_lora_job: Any
) -> None:
    # Continued tuning (M1.6): a checkpoint droptune tuned before is a valid starting point.
    from vertexai.tuning import SourceModel, sft

    final = f"{finished_lora_job._gca_resource.output_uri}/postprocess/node-0/checkpoints/final"
    job = sft.train(
        source_model=SourceModel(base_model=OPEN_MODEL, custom_base_model=final),
        train_dataset=datasets.train,
        tuning_mode="FULL",
        epochs=1,
        output_uri=f"{finished_lora_job._gca_resource.output_uri}-continued",
    )
    wait_until_ended(job)
    assert job.has_succeeded, job.error
    assert job._gca_resource.custom_base_model == final


@pytest.mark.parametrize(
    ("options", "expected_message"),
    [
        ({"train_dataset": "missing"}, "does-not-exist.jsonl could not be read"),
        ({"train_dataset": "broken"}, "broken.jsonl line 3: not valid JSON"),
        ({"source_model": "acme/unknown@model-1"}, "Base model acme/unknown@model-1 is not supported"),
        (
            {"source_model": "google/gemma3@gemma-3-1b-it", "tuning_mode": "PEFT_ADAPTER"},
            "Tuning mode PEFT_ADAPTER is not supported for base model google/gemma3@gemma-3-1b-it; "
            "supported: FULL",
        ),
    ],
    ids=["missing-dataset", "unparseable-line", "unknown-model", "mode-not-allowed"],
)
def test_bad_input_fails_the_job_with_invalid_argument(
    vertex: str, datasets: Datasets, options: dict[str, Any], expected_message: str
) -> None:
    if options.get("train_dataset") in ("missing", "broken"):
        options = {**options, "train_dataset": getattr(datasets, options["train_dataset"])}
    job = wait_until_ended(_train(datasets, **options), timeout_s=60)
    assert job.state.name == "JOB_STATE_FAILED"
    assert job.error.code == 3, job.error
    assert expected_message in job.error.message


def test_worker_crash_is_an_internal_error(vertex: str, datasets: Datasets, standin: StandinServer) -> None:
    job = _train(datasets, epochs=500)
    pid = wait_for(
        lambda: standin.stored_internal("tuningJobs", job.resource_name).get("pid"), 30, "worker pid"
    )
    wait_for(lambda: job.refresh().state.name == "JOB_STATE_RUNNING", 30, "RUNNING")
    os.killpg(pid, signal.SIGKILL)
    wait_until_ended(job, timeout_s=30)
    assert job.state.name == "JOB_STATE_FAILED"
    assert (job.error.code, job.error.message) == (13, "Internal error encountered.")


def test_cancel_stops_the_worker_within_seconds(
    vertex: str, datasets: Datasets, standin: StandinServer
) -> None:
    job = _train(datasets, epochs=500, validation_dataset=datasets.validation)
    pid = wait_for(
        lambda: standin.stored_internal("tuningJobs", job.resource_name).get("pid"), 30, "worker pid"
    )
    # Metrics are visible while the job runs (M2.5).
    wait_for(
        lambda: (
            job.refresh().state.name == "JOB_STATE_RUNNING"
            and job._gca_resource.tuning_data_stats.supervised_tuning_data_stats.tuning_step_count > 0
        ),
        60,
        "data stats while running",
    )
    asked = time.monotonic()
    job.cancel()
    wait_for(lambda: job.refresh().has_ended, 3 * CANCEL_BOUND_S, "the cancelled job to end")
    took = time.monotonic() - asked
    assert job.state.name == "JOB_STATE_CANCELLED", job.state
    assert took < CANCEL_BOUND_S, f"cancelled after {took:.1f} s; expected under {CANCEL_BOUND_S} s"
    assert (job.error.code, job.error.message) == (1, "CANCELED")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_other_requests_are_answered_while_a_cancel_waits_for_a_stuck_worker(
    vertex: str, datasets: Datasets, standin: StandinServer, finished_lora_job: Any
) -> None:
    from vertexai.tuning import sft

    job = _train(datasets, epochs=500)
    pid = wait_for(
        lambda: standin.stored_internal("tuningJobs", job.resource_name).get("pid"), 30, "worker pid"
    )
    wait_for(lambda: job.refresh().state.name == "JOB_STATE_RUNNING", 30, "RUNNING")
    # A stopped process ignores SIGTERM until it is continued: a worker that will not stop, which
    # the stand-in must kill after its grace.
    os.killpg(pid, signal.SIGSTOP)
    canceller = sft.SupervisedTuningJob(job.resource_name)
    asked = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        cancel = pool.submit(canceller.cancel)
        wait_for(lambda: job.refresh().state.name == "JOB_STATE_CANCELLING", CANCEL_BOUND_S, "CANCELLING")
        started = time.monotonic()
        other = sft.SupervisedTuningJob(finished_lora_job.resource_name)  # a GET of another job
        get_took = time.monotonic() - started
        cancel_in_flight = not cancel.done()
        cancel.result(timeout=3 * CANCEL_BOUND_S)
    assert cancel_in_flight, "the GET must have been answered while the cancel call was waiting"
    assert get_took < QUICK_ANSWER_S, f"a GET during the cancel took {get_took:.1f} s"
    assert other.has_succeeded
    wait_for(lambda: job.refresh().has_ended, 3 * CANCEL_BOUND_S, "the cancelled job to end")
    took = time.monotonic() - asked
    assert job.state.name == "JOB_STATE_CANCELLED", job.state
    assert took < CANCEL_BOUND_S, f"cancelled after {took:.1f} s; expected under {CANCEL_BOUND_S} s"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_unknown_job_is_not_found(vertex: str) -> None:
    from vertexai.tuning import sft

    with pytest.raises(exceptions.NotFound, match="tuningJobs/42"):
        sft.SupervisedTuningJob(f"{PARENT}/tuningJobs/42")


def test_malformed_request_names_the_field(vertex: str) -> None:
    from vertexai.tuning import sft

    with pytest.raises(exceptions.BadRequest, match="trainingDatasetUri"):
        sft.train(source_model=OPEN_MODEL, train_dataset="")


def test_list_filters_by_state_and_pages(
    vertex: str, datasets: Datasets, finished_lora_job: Any, genai_client: Any
) -> None:
    from google.genai import types
    from vertexai.tuning import sft

    everything = sft.SupervisedTuningJob.list()
    assert finished_lora_job.resource_name in [j.resource_name for j in everything]
    succeeded = sft.SupervisedTuningJob.list(filter='state="JOB_STATE_SUCCEEDED"')
    assert succeeded and all(j.state.name == "JOB_STATE_SUCCEEDED" for j in succeeded)
    failed = sft.SupervisedTuningJob.list(filter="state=JOB_STATE_FAILED")
    assert all(j.state.name == "JOB_STATE_FAILED" for j in failed)
    labelled = sft.SupervisedTuningJob.list(filter='labels.droptune-job-id="job-123"')
    assert [j.resource_name for j in labelled] == [finished_lora_job.resource_name]

    pager = genai_client.tunings.list(config=types.ListTuningJobsConfig(page_size=2))
    assert pager.page_size == 2
    assert len(pager.page) <= 2
    names = [j.name for j in pager]  # iterating the pager follows nextPageToken
    assert len(names) == len(everything) == len(set(names)), "paging must neither repeat nor lose jobs"


def test_list_rejects_an_unsupported_filter(vertex: str) -> None:
    from vertexai.tuning import sft

    with pytest.raises(exceptions.BadRequest, match="unsupported field 'colour'"):
        sft.SupervisedTuningJob.list(filter='colour="blue"')


def test_genai_cancel(vertex: str, datasets: Datasets, genai_client: Any) -> None:
    job = _train(datasets, epochs=500)
    genai_client.tunings.cancel(name=job.resource_name)
    ended = wait_for(
        lambda: (j := genai_client.tunings.get(name=job.resource_name)).has_ended and j,
        CANCEL_BOUND_S,
        "the cancelled job to end",
    )
    assert ended.state.name == "JOB_STATE_CANCELLED"


def test_quota_answers_resource_exhausted(vertex: str, datasets: Datasets) -> None:
    # The fixture's stand-in admits 3 concurrent jobs, and every earlier test waits for its jobs.
    started: list[Any] = []
    try:
        with pytest.raises(exceptions.TooManyRequests, match=r"Concurrent tuning jobs.*limit 3"):
            for _ in range(10):
                started.append(_train(datasets, epochs=500))
        assert len(started) == 3, f"the quota of 3 must admit exactly 3 jobs; admitted {len(started)}"
    finally:
        for job in started:
            job.cancel()
        for job in started:
            wait_until_ended(job, timeout_s=3 * CANCEL_BOUND_S)  # free the quota for later tests
