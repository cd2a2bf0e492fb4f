"""The user's journeys on the local stack with the tiny model, as a subscriber sees them (issue 6 §7).

A file is dropped in the bucket; everything else happens by itself. Each test reads the events
topic through its own subscription and checks the events arrive, in order, each valid against
its published JSON Schema; then checks what the user can see (Firestore, the endpoint).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from stack_support import EventTap, chat_lines, wait_for

from droptune.event_catalog import validate_event

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOURNEY_TIMEOUT_S = 240


def _for_job(events: EventTap, job_id: str) -> list[dict[str, Any]]:
    return [e for e in events.drain() if (e.get("data") or {}).get("job_id") == job_id]


def _assert_schema_valid(received: list[dict[str, Any]]) -> None:
    for event in received:
        body = {k: v for k, v in event.items() if k != "_attributes"}
        assert validate_event(body) == [], f"{event['type']} does not match its schema"


def _job_events_in_order(received: list[dict[str, Any]]) -> list[str]:
    """One job's event types in the order of their transitions, as a subscriber orders them.

    Pub/Sub keeps no order, so every job event carries its transition's `sequence`; no two events
    share one, and they only grow along the job's history (the validator's event has none).
    """
    job_events = sorted(
        (
            e
            for e in received
            if e["type"].startswith(("droptune.job.", "droptune.model.", "droptune.deploy."))
        ),
        key=lambda e: e["data"]["sequence"],
    )
    sequences = [e["data"]["sequence"] for e in job_events]
    assert len(set(sequences)) == len(sequences), f"two events share a sequence: {sequences}"
    return [e["type"] for e in job_events]


def test_a_dropped_file_becomes_a_deployed_model_that_answers(
    datasets_bucket: Any, firestore_db: Any, events: EventTap, unique_prefix: str
) -> None:
    from droptune.settings import Settings
    from droptune.vertex_rest import VertexRest

    name = f"{unique_prefix}journey.jsonl"
    blob = datasets_bucket.blob(name)
    blob.metadata = {"droptune-epochs": "1", "droptune-tuning-mode": "FULL"}
    blob.upload_from_string(chat_lines(16))

    validated = events.wait("droptune.dataset.validated", name)
    job_id = validated["data"]["job_id"]
    deployed = events.wait("droptune.model.deployed", job_id, timeout=JOURNEY_TIMEOUT_S)

    received = _for_job(events, job_id)  # the validated event carries the job id too
    types = [e["type"] for e in received]
    assert types.count("droptune.dataset.validated") == 1, types
    assert len({e["id"] for e in received}) == len(received), "an event was delivered twice"
    # The order a subscriber relies on: queued, launched, (state changes), succeeded, deployed.
    ordered = [t for t in _job_events_in_order(received) if t != "droptune.job.state_changed"]
    assert ordered == [
        "droptune.job.queued",
        "droptune.job.launched",
        "droptune.job.succeeded",
        "droptune.model.deployed",
    ], ordered
    assert "droptune.job.failed" not in types
    _assert_schema_valid(received)

    data = deployed["data"]
    assert data["checkpoint_uri"].endswith("/postprocess/node-0/checkpoints/final")
    assert (data["machine_type"], data["accelerator_type"], data["accelerator_count"]) == (
        "g2-standard-12",
        "NVIDIA_L4",
        1,
    )
    assert isinstance(data["sample_answer"], str) and data["latency_ms"] >= 0
    assert deployed["_attributes"]["job_id"] == job_id

    job = firestore_db.collection("jobs").document(job_id).get().to_dict()
    assert job["state"] == "deployed"
    assert [h["to"] for h in job["history"]][-2:] == ["deploying", "deployed"]
    answer = VertexRest(Settings.from_environ(os.environ)).predict(
        job["endpoint"], [{"prompt": "Say something about greeting number 3.", "max_tokens": 8}]
    )
    assert answer and isinstance(answer[0], str)


def test_a_rejected_dataset_tells_the_subscriber_why_and_starts_no_job(
    datasets_bucket: Any, firestore_db: Any, events: EventTap, unique_prefix: str
) -> None:
    name = f"{unique_prefix}rejected.jsonl"
    datasets_bucket.blob(name).upload_from_string(
        chat_lines(5) + json.dumps({"messages": [{"role": "assistant", "content": "no question"}]}) + "\n"
    )
    rejected = events.wait("droptune.dataset.rejected", name)
    _assert_schema_valid([rejected])
    assert rejected["data"]["errors"][0]["line"] == 6
    # Nothing else about this dataset follows: no job was created.
    dataset_id = rejected["data"]["dataset_id"]
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = firestore_db.collection("jobs").where(filter=FieldFilter("dataset_id", "==", dataset_id))
    jobs = list(query.stream())
    assert jobs == []
    events.drain()
    assert [e["type"] for e in events.of(dataset_id)] == ["droptune.dataset.rejected"]


def test_a_cancelled_job_is_announced_and_never_deployed(
    stack: Any, datasets_bucket: Any, firestore_db: Any, events: EventTap, unique_prefix: str
) -> None:
    from droptune.cloud_clients import PubSubPublisher
    from droptune.settings import Settings

    name = f"{unique_prefix}cancel.jsonl"
    blob = datasets_bucket.blob(name)
    blob.metadata = {"droptune-epochs": "50"}  # long enough to be cancelled while it runs
    blob.upload_from_string(chat_lines(40))
    job_id = events.wait("droptune.dataset.validated", name)["data"]["job_id"]

    def running() -> bool:
        job = firestore_db.collection("jobs").document(job_id).get().to_dict() or {}
        return job.get("state") == "running"

    wait_for(running, timeout=JOURNEY_TIMEOUT_S, what=f"{job_id} running")
    settings = Settings.from_environ(os.environ)
    PubSubPublisher(settings).publish_json(
        settings.control_topic, {"command": "cancel", "job_id": job_id}, {"job_id": job_id}
    )
    events.wait("droptune.job.cancelled", job_id, timeout=JOURNEY_TIMEOUT_S)
    received = _for_job(events, job_id)
    ordered = [t for t in _job_events_in_order(received) if t != "droptune.job.state_changed"]
    assert ordered == ["droptune.job.queued", "droptune.job.launched", "droptune.job.cancelled"], ordered
    _assert_schema_valid(received)
    assert firestore_db.collection("jobs").document(job_id).get().to_dict()["state"] == "cancelled"
