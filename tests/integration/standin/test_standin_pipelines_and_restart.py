"""PaLM tuning pipelines (M3.4, M3.5) and a restart of the stand-in (jobs survive on disk)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCATION, PROJECT, Datasets, StandinServer, start_standin, wait_for, wait_until_ended
from google.api_core import exceptions

pytestmark = [pytest.mark.integration]

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
TEXT_TEMPLATE = "https://us-kfp.pkg.dev/ml-pipeline/large-language-model-pipelines/tune-large-model/v2.0.0"
CHAT_TEMPLATE = (
    "https://us-kfp.pkg.dev/ml-pipeline/large-language-model-pipelines/tune-large-chat-model/v3.0.0"
)


def _tuning_client(url: str) -> Any:
    import google.auth.credentials
    from google.cloud import aiplatform_v1beta1

    return aiplatform_v1beta1.GenAiTuningServiceClient(
        client_options={"api_endpoint": url},
        transport="rest",
        credentials=google.auth.credentials.AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )


def _pipeline_client(url: str) -> Any:
    import google.auth.credentials
    from google.cloud import aiplatform_v1

    return aiplatform_v1.PipelineServiceClient(
        client_options={"api_endpoint": url},
        transport="rest",
        credentials=google.auth.credentials.AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )


def _submit(url: str, template: str, parameters: dict[str, Any], output: str) -> Any:
    from google.cloud import aiplatform_v1

    job = aiplatform_v1.PipelineJob(
        display_name="palm-tuning",
        template_uri=template,
        runtime_config=aiplatform_v1.PipelineJob.RuntimeConfig(
            gcs_output_directory=output, parameter_values=parameters
        ),
    )
    return _pipeline_client(url).create_pipeline_job(parent=PARENT, pipeline_job=job)


def _wait_for_pipeline(name: str) -> Any:
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob.get(name)
    wait_for(
        lambda: (
            job._gca_resource.state.name
            in ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED")
            or job._sync_gca_resource()  # type: ignore[no-untyped-call]
        ),
        120,
        f"{name} to end",
    )
    return job


def test_text_template_trains_for_the_requested_steps(
    vertex: str, datasets: Datasets, standin: StandinServer, gcs: Any
) -> None:
    created = _submit(
        vertex,
        TEXT_TEMPLATE,
        {
            "project": PROJECT,
            "location": LOCATION,
            "large_model_reference": "text-bison@002",
            "model_display_name": "palm-text",
            "dataset_uri": datasets.palm_text,
            "train_steps": 12,
            "learning_rate_multiplier": 1.0,
            "evaluation_data_uri": datasets.palm_text,
            "evaluation_interval": 4,
            "enable_early_stopping": True,
            "enable_checkpoint_selection": "true",
            "accelerator_type": "TPU",
            "tensorboard_resource_id": "",
        },
        output=f"gs://{datasets.train[5:].split('/')[0]}/pipelines",
    )
    assert created.state.name == "PIPELINE_STATE_PENDING"
    job = _wait_for_pipeline(created.name)
    assert job.state.name == "PIPELINE_STATE_SUCCEEDED", job._gca_resource.error
    # Pipeline jobs carry data stats, metrics, artifacts and the tuned model in the stand-in's own
    # fields, which no PipelineJob proto holds: see read_wire_resource.
    raw = standin.read_wire_resource(created.name)
    # TPU tuning of an 8k model uses batch 24 (M3.5): 12 steps x 24 / 20 examples.
    assert raw["droptuneTuningDataStats"]["tuningStepCount"] == "12"
    assert raw["droptuneTuningDataStats"]["totalBillableTokenCount"] != "0"
    evals = [p["step"] for p in raw["droptuneMetrics"]["series"] if "/eval_total_loss" in p["values"]]
    assert evals[:2] == [4, 8], "evaluation every evaluation_interval steps"
    assert len(raw["droptuneArtifacts"]["checkpoints"]) <= 10
    assert raw["droptuneTunedModel"]["endpoint"].startswith(f"{PARENT}/endpoints/"), (
        "PaLM models are deployed"
    )


def test_chat_template_with_default_context(vertex: str, datasets: Datasets) -> None:
    created = _submit(
        vertex,
        CHAT_TEMPLATE,
        {
            "large_model_reference": "chat-bison@002",
            "dataset_uri": datasets.palm_chat,
            "train_steps": 3,
            "default_context": "You answer with a city name.",
        },
        output=f"gs://{datasets.train[5:].split('/')[0]}/pipelines-chat",
    )
    job = _wait_for_pipeline(created.name)
    assert job.state.name == "PIPELINE_STATE_SUCCEEDED", job._gca_resource.error


def test_pipeline_cancel_and_list(vertex: str, datasets: Datasets) -> None:
    from google.cloud import aiplatform

    created = _submit(
        vertex,
        TEXT_TEMPLATE,
        {"large_model_reference": "text-bison@002", "dataset_uri": datasets.palm_text, "train_steps": 100000},
        output="",
    )
    job = aiplatform.PipelineJob.get(created.name)
    job.cancel()  # asynchronous, as on Vertex AI: CANCELLING until the worker has exited
    job = _wait_for_pipeline(created.name)
    assert job.state.name == "PIPELINE_STATE_CANCELLED"
    listed = _pipeline_client(vertex).list_pipeline_jobs(
        request={"parent": PARENT, "filter": 'state="PIPELINE_STATE_CANCELLED"'}
    )
    assert created.name in [j.name for j in listed]


def test_pipeline_rejects_other_templates_and_missing_parameters(vertex: str, datasets: Datasets) -> None:
    with pytest.raises(exceptions.BadRequest, match="templateUri"):
        _submit(vertex, "https://example.com/my-pipeline/v1", {"dataset_uri": datasets.palm_text}, output="")
    with pytest.raises(exceptions.BadRequest, match="large_model_reference is required"):
        _submit(vertex, TEXT_TEMPLATE, {"dataset_uri": datasets.palm_text}, output="")


def test_jobs_survive_a_restart(
    storage_emulator: str, datasets: Datasets, model_cache: Any, tmp_path: Any
) -> None:
    state = tmp_path / "state"
    first = start_standin(state, model_cache)
    first_api = _tuning_client(first.url)
    spec = {
        "training_dataset_uri": datasets.train,
        "hyper_parameters": {"epoch_count": 500},
        "tuning_mode": "TUNING_MODE_FULL",
    }
    try:
        running = first_api.create_tuning_job(
            parent=PARENT,
            tuning_job={"base_model": "meta/llama3_1@llama-3.1-8b", "supervised_tuning_spec": spec},
        )
        wait_for(
            lambda: first_api.get_tuning_job(name=running.name).state.name == "JOB_STATE_RUNNING",
            30,
            "the job to run",
        )
    finally:
        first.process.terminate()
        first.process.wait(timeout=30)
    second = start_standin(state, model_cache)
    second_api = _tuning_client(second.url)
    try:
        after = second_api.get_tuning_job(name=running.name)
        assert after.state.name == "JOB_STATE_FAILED"
        assert after.error.code == 10 and "restarted" in after.error.message
        assert after.supervised_tuning_spec.training_dataset_uri == datasets.train, "the job's record is kept"
        fresh = second_api.create_tuning_job(
            parent=PARENT,
            tuning_job={
                "base_model": "meta/llama3_1@llama-3.1-8b",
                "supervised_tuning_spec": {**spec, "hyper_parameters": {"epoch_count": 1}},
            },
        )
        assert fresh.name != running.name, "ids keep counting after a restart"
        wait_for(
            lambda: second_api.get_tuning_job(name=fresh.name).state.name == "JOB_STATE_SUCCEEDED",
            90,
            "the new job to succeed",
        )
    finally:
        second.process.terminate()
        second.process.wait(timeout=30)


def test_a_job_whose_worker_finished_before_a_crash_is_recovered_as_succeeded(
    storage_emulator: str, datasets: Datasets, model_cache: Any, tmp_path: Any
) -> None:
    import google.auth.credentials
    from google.cloud import aiplatform_v1beta1

    state = tmp_path / "state"
    first = start_standin(state, model_cache)
    first_api = _tuning_client(first.url)
    try:
        job = first_api.create_tuning_job(
            parent=PARENT,
            tuning_job={
                "base_model": "meta/llama3_1@llama-3.1-8b",
                "supervised_tuning_spec": {
                    "training_dataset_uri": datasets.train,
                    "hyper_parameters": {"epoch_count": 1},
                    "tuning_mode": "TUNING_MODE_FULL",
                },
            },
        )
        wait_for(
            lambda: first_api.get_tuning_job(name=job.name).state.name == "JOB_STATE_RUNNING",
            30,
            "the job to run",
        )
        outcome = Path(first.stored_internal("tuningJobs", job.name)["work_dir"]) / "outcome.json"
        # The crash falls between the worker's last write and the tick that would read it: the
        # server is frozen (its worker, in its own session, trains on), then killed.
        first.process.send_signal(signal.SIGSTOP)
        assert first.stored("tuningJobs", job.name)["resource"]["state"] == "JOB_STATE_RUNNING", (
            "the server must freeze before it sees the job end, or this test proves nothing"
        )
        wait_for(outcome.exists, 120, "the worker's outcome file")
    finally:
        first.process.kill()
        first.process.wait(timeout=30)
    second = start_standin(state, model_cache)
    second_api = _tuning_client(second.url)
    try:
        after = second_api.get_tuning_job(name=job.name)
        assert after.state.name == "JOB_STATE_SUCCEEDED", after.error
        assert after.tuned_model.model.startswith(f"{PARENT}/models/"), "the tuned model is registered"
        assert after.tuning_data_stats.supervised_tuning_data_stats.tuning_step_count == 4, (
            "the worker's last progress is kept: 30 examples, batch 8, 1 epoch"
        )
        model = aiplatform_v1beta1.ModelServiceClient(
            client_options={"api_endpoint": second.url},
            transport="rest",
            credentials=google.auth.credentials.AnonymousCredentials(),  # type: ignore[no-untyped-call]
        ).get_model(name=after.tuned_model.model)
        assert model.artifact_uri == f"{after.output_uri}/postprocess/node-0/checkpoints/final"
    finally:
        second.process.terminate()
        second.process.wait(timeout=30)


def test_vertexai_job_polling_sees_the_same_states(vertex: str, datasets: Datasets) -> None:
    # The poller's loop, once more through the high-level SDK, on a job that fails fast.
    from vertexai.tuning import sft

    job = wait_until_ended(
        sft.train(source_model="meta/llama3_1@llama-3.1-8b", train_dataset=datasets.missing)
    )
    assert job.state.name == "JOB_STATE_FAILED"
