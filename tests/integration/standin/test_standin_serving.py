"""Deploy a tuned checkpoint and call it the three ways users do (M1.9, M1.10, M2.4)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import LOCATION, PROJECT, Datasets, StandinServer, wait_until_ended
from google.api_core import exceptions

pytestmark = [pytest.mark.integration]

PARENT = f"projects/{PROJECT}/locations/{LOCATION}"


@pytest.fixture(scope="module")
def tuned_checkpoint(vertex: str, datasets: Datasets) -> str:
    from vertexai.tuning import sft

    output = f"gs://{datasets.train[5:].split('/')[0]}/out/serving"
    job = wait_until_ended(
        sft.train(
            source_model="google/gemma3@gemma-3-1b-it",
            train_dataset=datasets.train,
            tuning_mode="FULL",
            epochs=2,
            output_uri=output,
        )
    )
    assert job.has_succeeded, job.error
    return f"{output}/postprocess/node-0/checkpoints/final"


@pytest.fixture(scope="module")
def lora_checkpoint(vertex: str, datasets: Datasets) -> str:
    from vertexai.tuning import sft

    output = f"gs://{datasets.train[5:].split('/')[0]}/out/serving-lora"
    job = wait_until_ended(
        sft.train(
            source_model="meta/llama3_1@llama-3.1-8b",
            train_dataset=datasets.train,
            tuning_mode="PEFT_ADAPTER",
            adapter_size=4,
            epochs=1,
            output_uri=output,
        )
    )
    assert job.has_succeeded, job.error
    return f"{output}/postprocess/node-0/checkpoints/final"


@pytest.fixture(scope="module")
def endpoint(tuned_checkpoint: str) -> Any:
    from vertexai.preview import model_garden

    # Exactly the deployer's call (M1.9); the LRO is polled on /ui/ until the model is loaded.
    return model_garden.CustomModel(gcs_uri=tuned_checkpoint).deploy(
        machine_type="g2-standard-12", accelerator_type="NVIDIA_L4", accelerator_count=1
    )


def test_deploy_returns_an_endpoint_with_the_model(endpoint: Any, tuned_checkpoint: str) -> None:
    from google.cloud import aiplatform

    assert endpoint.resource_name.startswith(f"{PARENT}/endpoints/")
    fetched = aiplatform.Endpoint(endpoint.resource_name)
    [deployed] = fetched.list_models()
    spec = deployed.dedicated_resources.machine_spec
    assert (spec.machine_type, spec.accelerator_type.name, spec.accelerator_count) == (
        "g2-standard-12",
        "NVIDIA_L4",
        1,
    ), "the machine the deployer asked for is echoed"
    model = aiplatform.Model(deployed.model)
    assert model.uri == tuned_checkpoint
    assert endpoint.resource_name in [e.resource_name for e in aiplatform.Endpoint.list()]
    assert deployed.model.split("/")[-1] in [m.name for m in aiplatform.Model.list()]


def test_predict_with_float_integers_and_raw_response(endpoint: Any) -> None:
    from google.cloud import aiplatform

    answer = aiplatform.Endpoint(endpoint.resource_name).predict(
        instances=[
            {
                "prompt": "Capital of Peru:",
                "max_tokens": 20,
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": 1,
                "raw_response": True,
            },
            {"prompt": "Capital of Norway:", "max_tokens": 5, "temperature": 0.0},
        ]
    )
    assert len(answer.predictions) == 2
    raw, echoed = answer.predictions
    assert isinstance(raw, str) and not raw.startswith("Prompt:")
    assert echoed.startswith("Prompt:\nCapital of Norway:\nOutput:\n"), (
        "without raw_response the prompt is echoed"
    )
    assert answer.deployed_model_id


def test_temperature_zero_is_greedy_and_temperature_one_samples(endpoint: Any) -> None:
    from google.cloud import aiplatform

    target = aiplatform.Endpoint(endpoint.resource_name)
    greedy = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.0, "raw_response": True}
    first, second = (target.predict(instances=[greedy]).predictions[0] for _ in range(2))
    assert first == second, "temperature 0 is greedy decoding: one prompt, one answer"
    sampling = {**greedy, "temperature": 1.0, "top_p": 1.0, "top_k": 1000}
    tries = target.predict(instances=[sampling] * 6).predictions
    assert len(set(tries)) > 1, f"temperature 1 samples, so six tries must not all agree: {tries}"


def test_predict_rejects_a_bad_instance(endpoint: Any) -> None:
    from google.cloud import aiplatform

    with pytest.raises(exceptions.BadRequest, match=r"instances\[0\].prompt"):
        aiplatform.Endpoint(endpoint.resource_name).predict(instances=[{"text": "no prompt"}])


def test_generate_content_on_the_endpoint(endpoint: Any, genai_client: Any) -> None:
    from google.genai import types

    response = genai_client.models.generate_content(
        model=endpoint.resource_name,
        contents="English: Hello. Spanish:",
        config=types.GenerateContentConfig(max_output_tokens=8, temperature=0.0),
    )
    assert response.candidates[0].content.role == "model"
    assert response.usage_metadata.candidates_token_count <= 8
    assert response.candidates[0].finish_reason.name in ("STOP", "MAX_TOKENS")


def test_openai_chat_completions(endpoint: Any, standin: StandinServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{standin.url}/v1/{endpoint.resource_name}", api_key="local-dev")
    completion = client.chat.completions.create(
        model="tuned",
        messages=[{"role": "user", "content": "What is the capital of Italy?"}],
        max_tokens=6,
        temperature=0.7,
        top_p=0.9,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage.completion_tokens <= 6
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_translation_job_is_deployed_by_the_service(
    vertex: str, datasets: Datasets, genai_client: Any
) -> None:
    # translation-llm-002 jobs come back with an endpoint (M2.4, M2.6).
    from vertexai.tuning import sft

    job = wait_until_ended(
        sft.train(
            source_model="translation-llm-002",
            train_dataset=datasets.translation,
            epochs=2,
            adapter_size=4,
            tuned_model_display_name="tl",
        )
    )
    assert job.has_succeeded, job.error
    assert job.tuned_model_endpoint_name.startswith(f"{PARENT}/endpoints/")
    from google.cloud import aiplatform

    for _ in range(150):  # the endpoint's model server loads in the background
        if aiplatform.Endpoint(job.tuned_model_endpoint_name).list_models():
            break
        import time

        time.sleep(0.2)
    response = genai_client.models.generate_content(
        model=job.tuned_model_endpoint_name, contents="English: Hello. Spanish:"
    )
    assert response.candidates[0].content.parts is not None


def test_a_lora_checkpoint_deploys_and_predicts(lora_checkpoint: str, gcs: Any) -> None:
    from google.cloud import aiplatform
    from vertexai.preview import model_garden

    bucket, _, prefix = lora_checkpoint[5:].partition("/")
    assert gcs.bucket(bucket).blob(f"{prefix}/adapter/adapter_model.safetensors").exists(), (
        "a PEFT_ADAPTER job's final/ holds its adapter beside the merged weights"
    )
    # The deployer's call on the folder it deploys: the job's final checkpoint.
    target = model_garden.CustomModel(gcs_uri=lora_checkpoint).deploy(
        machine_type="g2-standard-12", accelerator_type="NVIDIA_L4", accelerator_count=1
    )
    try:
        [deployed] = target.list_models()
        assert aiplatform.Model(deployed.model).uri == lora_checkpoint
        answer = target.predict(
            instances=[{"prompt": "Capital of Peru:", "max_tokens": 8, "temperature": 0.0}]
        )
        [prediction] = answer.predictions
        assert prediction.startswith("Prompt:\nCapital of Peru:\nOutput:\n"), prediction
    finally:
        target.undeploy_all()  # a serving worker per endpoint: free it for the tests after
        target.delete()


def test_deploying_a_missing_checkpoint_fails_the_operation(vertex: str) -> None:
    from vertexai.preview import model_garden

    with pytest.raises(Exception, match="could not be loaded"):
        model_garden.CustomModel(gcs_uri="gs://standin-test-data/no/such/checkpoint").deploy(
            machine_type="g2-standard-12", accelerator_type="NVIDIA_L4", accelerator_count=1
        )


def test_undeploy_then_delete(endpoint: Any) -> None:
    from google.cloud import aiplatform

    target = aiplatform.Endpoint(endpoint.resource_name)
    with pytest.raises(exceptions.BadRequest, match="undeploy them first"):
        target.delete()
    target.undeploy_all()
    assert aiplatform.Endpoint(endpoint.resource_name).list_models() == []
    with pytest.raises(exceptions.BadRequest, match="no deployed model"):
        target.predict(instances=[{"prompt": "hi"}])
    target.delete()
    assert endpoint.resource_name not in [e.resource_name for e in aiplatform.Endpoint.list()]
