"""An upload reaches the validator through the real bucket notification and push subscription.

fake-gcs-server publishes OBJECT_FINALIZE to the Pub/Sub emulator, the emulator pushes to the
validator under functions-framework; what a user sees is the report beside the file, the
Firestore record and the events (M1.3, M4.2; issue 2 §7).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from stack_support import EventTap, chat_lines, topic_tap, wait_for

pytestmark = pytest.mark.integration


def _report(bucket: Any, name: str) -> dict[str, Any] | None:
    blob = bucket.get_blob(name + ".report.json")
    return json.loads(blob.download_as_bytes()) if blob is not None else None


def test_a_valid_upload_is_validated_recorded_and_announced(
    datasets_bucket: Any, firestore_db: Any, events: Any, unique_prefix: str
) -> None:
    name = f"{unique_prefix}greetings.jsonl"
    blob = datasets_bucket.blob(name)
    blob.metadata = {"droptune-epochs": "2"}
    blob.upload_from_string(chat_lines(12))

    report = wait_for(lambda: _report(datasets_bucket, name), what="the validation report")
    assert report["verdict"] == "valid"
    assert report["training"]["counts"]["examples"] == 12

    validated = events.wait("droptune.dataset.validated", name)
    data = validated["data"]
    assert data["dataset_uri"] == f"gs://{datasets_bucket.name}/{name}"
    assert data["options"]["epochs"] == 2  # from the object metadata
    assert data["job_id"].startswith("job-")
    assert validated["_attributes"]["type"] == "droptune.dataset.validated"
    assert validated["_attributes"]["dataset_id"] == data["dataset_id"]

    record = firestore_db.collection("datasets").document(data["dataset_id"]).get().to_dict()
    assert record["state"] == "validated"
    assert record["generation"] == str(blob.generation)
    assert record["option_sources"]["epochs"] == "metadata droptune-epochs"


def test_an_invalid_upload_gets_a_report_naming_the_line_and_a_rejection_event(
    datasets_bucket: Any, firestore_db: Any, events: Any, unique_prefix: str
) -> None:
    name = f"{unique_prefix}broken.jsonl"
    text = chat_lines(3) + '{"messages": [{"role": "user", "content": "unterminated"}\n'
    datasets_bucket.blob(name).upload_from_string(text)

    rejected = events.wait("droptune.dataset.rejected", name)
    error = rejected["data"]["errors"][0]
    assert error["line"] == 4
    assert error["remedy"]
    report = _report(datasets_bucket, name)
    assert report is not None and report["verdict"] == "invalid"
    record = firestore_db.collection("datasets").document(rejected["data"]["dataset_id"]).get().to_dict()
    assert record["state"] == "rejected"


def test_bad_options_are_rejected_naming_the_option_and_its_source(
    datasets_bucket: Any, events: Any, unique_prefix: str
) -> None:
    name = f"{unique_prefix}options.jsonl"
    datasets_bucket.blob(name.replace(".jsonl", ".manifest.json")).upload_from_string(
        json.dumps({"base_model": "google/gemma3@gemma-3-1b"})
    )
    datasets_bucket.blob(name).upload_from_string(chat_lines(3))

    rejected = events.wait("droptune.dataset.rejected", name)
    problem = rejected["data"]["errors"][0]
    assert problem["option"] == "base_model"
    assert problem["source"] == "manifest field base_model"
    assert "gemma-3-1b-it" in problem["message"] + problem["allowed"]


def test_objects_outside_the_watched_prefix_or_not_jsonl_are_ignored_with_a_log_line(
    stack: Any, datasets_bucket: Any, unique_prefix: str
) -> None:
    outside = f"elsewhere/{unique_prefix}data.jsonl"
    not_jsonl = f"{unique_prefix}notes.txt"
    datasets_bucket.blob(outside).upload_from_string(chat_lines(2))
    datasets_bucket.blob(not_jsonl).upload_from_string("hello")

    log = Path(stack.components["validator"].log)

    def ignored() -> bool:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        reasons = {
            line.get("object"): line.get("reason") for line in lines if line["message"] == "upload ignored"
        }
        bucket = datasets_bucket.name
        return f"gs://{bucket}/{outside}" in reasons and f"gs://{bucket}/{not_jsonl}" in reasons

    wait_for(ignored, what="the validator's 'upload ignored' log lines")
    assert datasets_bucket.get_blob(outside + ".report.json") is None
    assert datasets_bucket.get_blob(not_jsonl + ".report.json") is None


def test_a_model_that_cannot_be_served_on_one_l4_is_refused_before_tuning(
    datasets_bucket: Any, events: Any, unique_prefix: str
) -> None:
    name = f"{unique_prefix}big.jsonl"
    blob = datasets_bucket.blob(name)
    blob.metadata = {"droptune-base-model": "meta/llama3-3@llama-3.3-70b-instruct"}
    blob.upload_from_string(chat_lines(12))

    rejected = events.wait("droptune.dataset.rejected", name)
    problem = rejected["data"]["errors"][0]
    assert problem["code"] == "unservable_model"
    assert "DROPTUNE_DEPLOY=shape-from-catalog" in problem["message"]


@pytest.fixture
def tune_requests(stack: Any) -> Iterator[EventTap]:
    """Tune requests published from now on, through a subscription of this test's own."""
    from droptune.topology import TUNE_REQUESTS

    with topic_tap(stack.project, TUNE_REQUESTS) as tap:
        yield tap


def _redeliver_notification(stack: Any, name: str, message_id: str) -> requests.Response:
    """POST the bucket notification of `name` to the validator as the Pub/Sub push would redeliver it."""
    from droptune.topology import DATASET_UPLOADS
    from droptune_local.provisioning import push_endpoint

    # The notification payload is the object's JSON API resource (payload format JSON_API_V1).
    storage = stack.endpoint("storage")
    quoted = urllib.parse.quote(name, safe="")
    resource = requests.get(f"{storage}/storage/v1/b/{stack.bucket}/o/{quoted}", timeout=10)
    resource.raise_for_status()
    payload = resource.json()
    body = {
        "message": {
            "attributes": {
                "bucketId": stack.bucket,
                "eventType": "OBJECT_FINALIZE",
                "objectGeneration": str(payload["generation"]),
                "objectId": name,
                "payloadFormat": "JSON_API_V1",
            },
            "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            "messageId": message_id,
            "publishTime": payload.get("updated"),
        },
        "subscription": f"projects/{stack.project}/subscriptions/validator-dataset-uploads",
    }
    url = push_endpoint(stack.endpoint("validator"), stack.project, DATASET_UPLOADS)
    # The function answers once the handler has returned: 200 acknowledges, anything else retries.
    return requests.post(url, json=body, timeout=60)


def test_a_redelivered_upload_gives_the_same_report_and_no_second_tune_request(  # noqa: PLR0917 - pytest passes fixtures positionally
    stack: Any, datasets_bucket: Any, firestore_db: Any, events: Any, tune_requests: Any, unique_prefix: str
) -> None:
    name = f"{unique_prefix}twice.jsonl"
    datasets_bucket.blob(name).upload_from_string(chat_lines(12))
    validated = events.wait("droptune.dataset.validated", name)
    dataset_id = validated["data"]["dataset_id"]
    # A redelivery comes after the first delivery has finished (its acknowledgement lost or late):
    # wait until the first one has recorded that it announced. Two deliveries running at once are
    # not deduplicated here; the launcher's one job per job id is what stops a second tuning.
    record = firestore_db.collection("datasets").document(dataset_id)
    wait_for(
        lambda: (record.get(timeout=10).to_dict() or {}).get("announced_at"),
        what="the first delivery to record announced_at",
    )
    report = datasets_bucket.get_blob(name + ".report.json")
    first_report = (report.generation, report.download_as_bytes())

    message_id = f"redelivery-{uuid.uuid4().hex[:8]}"
    for attempt in (1, 2):
        response = _redeliver_notification(stack, name, message_id)
        assert response.status_code == 200, f"redelivery {attempt} not acknowledged: {response.text[:500]}"

    # The handler has returned; give the emulator a few seconds to hand over anything published.
    settle = time.monotonic() + 5
    while time.monotonic() < settle:
        events.drain()
        tune_requests.drain()
    announced = [
        e
        for e in events.received
        if e["type"] == "droptune.dataset.validated" and e["data"]["dataset_id"] == dataset_id
    ]
    assert len(announced) == 1, f"expected one dataset.validated for {dataset_id}, got {len(announced)}"
    requested = [r for r in tune_requests.received if r.get("dataset_id") == dataset_id]
    assert len(requested) == 1, f"expected one tune request for {dataset_id}, got {len(requested)}"
    report = datasets_bucket.get_blob(name + ".report.json")
    assert (report.generation, report.download_as_bytes()) == first_report, "the report was rewritten"

    log = Path(stack.components["validator"].log)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    duplicates = [
        line
        for line in lines
        if line["message"] == "duplicate delivery" and line.get("dataset_id") == dataset_id
    ]
    assert len(duplicates) == 2, (
        f"expected the validator to log both redeliveries as duplicates: {duplicates}"
    )


def test_a_palm_dataset_is_converted_and_tuned_on_the_successor_when_the_policy_says_convert(
    stack: Any, datasets_bucket: Any, firestore_db: Any, events: Any
) -> None:
    """retired_models=convert (issue 3, retired models): the validator core runs here with that
    setting, on the stack's emulators, under a prefix of its own that the stack's validator (which
    allows PaLM) does not watch; the stack's launcher then starts the successor's job."""
    import dataclasses
    import os

    from droptune.catalog import get_model
    from droptune.cloud_clients import PubSubPublisher, firestore_client, storage_client
    from droptune.envelopes import StorageObject
    from droptune.intake import CONVERTED_PREFIX, Intake
    from droptune.settings import Settings

    settings = dataclasses.replace(
        # The stack's own variables: other fixtures may point this process's at other emulators.
        Settings.from_environ({**os.environ, **stack.environment()}),
        retired_models="convert",
        deploy_policy="never",
        watch_prefix="palm-convert/",
    )
    name = f"palm-convert/{uuid.uuid4().hex[:8]}/support.jsonl"
    rows = [
        {
            "context": "You are a helpful support agent.",
            "messages": [
                {"author": "user", "content": f"My order {i} is late."},
                {"author": "assistant", "content": f"Sorry about order {i}; it ships today."},
            ],
        }
        for i in range(12)
    ]
    blob = datasets_bucket.blob(name)
    blob.metadata = {"droptune-base-model": "chat-bison@002", "droptune-train-steps": "20"}
    blob.upload_from_string("".join(json.dumps(row) + "\n" for row in rows))
    blob.reload()
    upload = StorageObject(
        bucket=datasets_bucket.name,
        name=name,
        generation=str(blob.generation),
        size=blob.size,
        metadata=dict(blob.metadata or {}),
        md5_hash=blob.md5_hash,
    )

    intake = Intake(settings, storage_client(settings), firestore_client(settings), PubSubPublisher(settings))
    result = intake.handle(upload, "convert-event-1")

    successor = get_model("chat-bison@002").successor
    assert result.outcome == "validated", result.reason
    report = _report(datasets_bucket, name)
    assert report is not None and report["verdict"] == "valid"
    assert report["base_model"] == successor
    converted = report["converted_from"]
    assert converted["retired_model"] == "chat-bison@002"
    assert converted["training_uri"].startswith(f"gs://{datasets_bucket.name}/{CONVERTED_PREFIX}")
    first = json.loads(
        datasets_bucket.blob(converted["training_uri"].split("/", 3)[3]).download_as_bytes().splitlines()[0]
    )
    assert first["messages"][0] == {"role": "system", "content": "You are a helpful support agent."}
    assert first["messages"][1]["role"] == "user"

    validated = events.wait("droptune.dataset.validated", name)
    assert validated["data"]["base_model"] == successor
    assert "train_steps" not in {k for k, v in validated["data"]["options"].items() if v is not None}

    def launched() -> list[dict[str, Any]]:
        label = urllib.parse.quote(f'labels.droptune-job-id="{result.job_id}"')
        url = f"{stack.endpoint('vertex')}/v1beta1/projects/{stack.project}/locations/us-central1/tuningJobs"
        found: list[dict[str, Any]] = (
            requests.get(f"{url}?filter={label}", timeout=10).json().get("tuningJobs", [])
        )
        return found

    jobs = wait_for(launched, timeout=60, what="the successor's tuning job in the stand-in")
    assert jobs[0]["baseModel"] == successor
    assert jobs[0]["supervisedTuningSpec"]["trainingDatasetUri"] == converted["training_uri"]
    job = firestore_db.collection("jobs").document(result.job_id).get().to_dict()
    assert job["converted_from"] == "chat-bison@002"
