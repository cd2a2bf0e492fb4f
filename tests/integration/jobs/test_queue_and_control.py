"""The quota-aware queue, cancel and the budget guard on the local stack (issue 5 §3, §5, §7, §8;
M1.11, M4.3, M4.4). Each test checks Firestore, the events and the stand-in's jobs."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import pytest
from jobs_support import events_of, job_document, manual_request, standin_jobs, wait_until_idle
from stack_support import chat_lines, wait_for

pytestmark = pytest.mark.integration

FINISHED = ("succeeded", "deploying", "deployed", "deploy_failed")
SIMULTANEOUS = timedelta(milliseconds=250)


def _entered(document: dict[str, Any], state: str) -> datetime:
    return next(h["at"] for h in document["history"] if h["to"] == state)


def _left_slot(document: dict[str, Any]) -> datetime:
    return next(h["at"] for h in document["history"] if h["from"] == "running" and h["to"] != "running")


def test_twenty_uploads_with_a_limit_of_two_run_two_at_a_time_in_arrival_order(world: Any) -> None:
    bucket, db, events = world.bucket, world.db, world.events
    wait_until_idle(world.stack, world.db)
    prefix = f"datasets/queue-{int(time.time())}/"
    for index in range(20):
        blob = bucket.blob(f"{prefix}upload-{index:02d}.jsonl")
        blob.metadata = {"droptune-epochs": "1"}
        blob.upload_from_string(chat_lines(8, topic=f"topic {index}"))

    def job_ids() -> list[str] | None:
        found = [e["data"]["job_id"] for e in events.drain() if e["type"] == "droptune.dataset.validated"]
        found = [j for j in dict.fromkeys(found) if prefix in json.dumps(events.of(j))]
        return found if len(found) == 20 else None

    ids = wait_for(job_ids, timeout=120, what="20 validated uploads")

    def all_done() -> list[dict[str, Any]] | None:
        documents = [job_document(db, job_id) for job_id in ids]
        if all(d and d["state"] in FINISHED for d in documents):
            return documents  # type: ignore[return-value]
        return None

    documents = wait_for(all_done, timeout=420, interval=2, what="all 20 jobs to finish")

    # Never more than 2 in a slot: sweep the launching → end-of-running intervals.
    moments = sorted(
        [(_entered(d, "launching"), 1) for d in documents] + [(_left_slot(d), -1) for d in documents]
    )
    in_use, most = 0, 0
    for _at, change in moments:
        in_use += change
        most = max(most, in_use)
    assert most <= 2, f"{most} jobs held a slot at once; the limit is 2"

    # Arrival order: a job that arrived clearly earlier got its slot no later. Arrivals within
    # SIMULTANEOUS of each other have no order to keep (concurrent deliveries; the emulator's
    # commit timestamps are not strictly ordered with visibility at that scale).
    overtaken = [
        (early["job_id"], late["job_id"])
        for early in documents
        for late in documents
        if early["queued_at"] + SIMULTANEOUS < late["queued_at"]
        and _entered(late, "launching") < _entered(early, "launching")
    ]
    assert overtaken == [], f"jobs started before jobs that arrived earlier: {overtaken}"

    # In the stand-in: one job per upload. Its quota is also 2, so had droptune's own limit let a
    # third job through, the stand-in would have answered 429 and the job would show a quota wait.
    for job_id in ids:
        assert len(standin_jobs(world.stack, job_id)) == 1, f"{job_id} has not exactly one Vertex job"
    assert [d["job_id"] for d in documents if d.get("quota_waits")] == []

    # Every job announced once per step, no event lost or duplicated.
    time.sleep(2)
    received = events.drain()
    for job_id in ids:
        mine = [e for e in received if e.get("data", {}).get("job_id") == job_id]
        for event_type in ("droptune.job.queued", "droptune.job.launched", "droptune.job.succeeded"):
            count = sum(1 for e in mine if e["type"] == event_type)
            assert count == 1, f"{job_id}: {count} × {event_type}"
        assert len({e["id"] for e in mine}) == len(mine), f"{job_id}: an event id arrived twice"


def _create_foreign_job(stack: Any, bucket: Any) -> str:
    """A Vertex job droptune knows nothing about (another team's), holding one quota slot."""
    blob = bucket.blob(f"foreign/{time.time_ns()}.jsonl")
    blob.upload_from_string(chat_lines(40))
    body = {
        "baseModel": "google/gemma3@gemma-3-1b-it",
        "supervisedTuningSpec": {
            "trainingDatasetUri": f"gs://{bucket.name}/{blob.name}",
            "hyperParameters": {"epochCount": 3},
        },
    }
    request = urllib.request.Request(
        f"{stack.endpoint('vertex')}/v1beta1/projects/{stack.project}/locations/us-central1/tuningJobs",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["name"])


def test_a_quota_error_on_create_puts_the_job_back_in_the_queue_until_it_can_run(world: Any) -> None:
    stack, bucket, db, events = world.stack, world.bucket, world.db, world.events
    wait_until_idle(stack, db)
    foreign = [_create_foreign_job(stack, bucket) for _ in range(2)]  # the stand-in's quota is 2
    request = manual_request(stack, bucket, chat_lines(12))
    job_id = request["job_id"]
    launcher, _poller = world.core(world.settings())
    launcher.handle_request(request)

    queued = events.wait("droptune.job.queued", job_id, timeout=30)
    waited = wait_for(
        lambda: [
            e for e in events_of(events, job_id, "droptune.job.queued") if e["data"]["reason"] == "quota"
        ],
        timeout=30,
        what="job.queued with reason quota",
    )
    assert waited[0]["data"]["message"].startswith("quota:"), waited[0]["data"]
    assert queued["data"]["state"] == "queued"

    document = wait_for(
        lambda: (d := job_document(db, job_id)) and d["state"] in FINISHED and d,
        timeout=240,
        what="the job to run once the quota freed up",
    )
    assert document["quota_waits"] >= 1
    assert any(h["from"] == "launching" and h["to"] == "queued" for h in document["history"])
    assert document.get("error") is None
    names = [j["name"] for j in standin_jobs(stack, job_id)]
    assert len(names) == 1 and names[0] not in foreign
    assert len(events_of(events, job_id, "droptune.job.queued")) == 2  # claimed, then the quota wait


def test_a_cancel_that_arrives_while_launching_into_a_full_quota_ends_the_job_without_a_vertex_job(
    world: Any,
) -> None:
    stack, bucket, db, events = world.stack, world.bucket, world.db, world.events
    wait_until_idle(stack, db)
    foreign = [_create_foreign_job(stack, bucket) for _ in range(2)]  # the stand-in's quota is 2
    request = manual_request(stack, bucket, chat_lines(12))
    job_id = request["job_id"]
    launcher, poller = world.core(world.settings())
    real_vertex = launcher.vertex

    class CancelledWhileCreating:
        """The real client; the user's cancel lands between the claim and the (429) create."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_vertex, name)

        def create(self, launch: Any) -> Any:
            assert poller.handle_command({"command": "cancel", "job_id": job_id}) != "unknown job"
            return real_vertex.create(launch)

    launcher.vertex = CancelledWhileCreating()
    try:
        launcher.handle_request(request)
        cancelled = events.wait("droptune.job.cancelled", job_id, timeout=30)
    finally:
        for name in foreign:
            real_vertex.cancel(name)
    assert cancelled["data"]["vertex_job"] is None
    document = job_document(db, job_id)
    assert document is not None and document["state"] == "cancelled"
    assert [h["to"] for h in document["history"]] == ["queued", "launching", "queued", "cancelled"]
    assert standin_jobs(stack, job_id) == [], "a cancelled job must not be launched afterwards"


def test_cancel_from_the_control_topic_cancels_the_vertex_job_and_records_it(world: Any) -> None:
    from droptune.cloud_clients import PubSubPublisher

    stack, db, events = world.stack, world.db, world.events
    job_id = world.launch(chat_lines(200), epochs=20)
    wait_for(lambda: (d := job_document(db, job_id)) and d["state"] == "running", timeout=120, what="running")
    PubSubPublisher(world.settings()).publish_json(
        "job-control", {"command": "cancel", "job_id": job_id}, {"command": "cancel", "job_id": job_id}
    )
    cancelled = events.wait("droptune.job.cancelled", job_id, timeout=60)
    assert cancelled["data"]["vertex_job"] == job_document(db, job_id)["vertex"]["name"]
    assert job_document(db, job_id)["state"] == "cancelled"
    assert [j["state"] for j in standin_jobs(stack, job_id)] == ["JOB_STATE_CANCELLED"]


def test_a_job_over_the_token_budget_waits_for_approval_then_runs(world: Any) -> None:
    stack, bucket, db, events = world.stack, world.bucket, world.db, world.events
    settings = world.settings(training_token_budget=500)
    request = manual_request(stack, bucket, chat_lines(12), stats={"billable_training_tokens": 900})
    job_id = request["job_id"]
    launcher, poller = world.core(settings)
    launcher.handle_request(request)

    held = events.wait("droptune.job.awaiting_approval", job_id, timeout=30)
    assert held["data"]["estimated_billable_tokens"] == 900 and held["data"]["budget"] == 500
    assert job_document(db, job_id)["state"] == "awaiting_approval"
    assert standin_jobs(stack, job_id) == [], "nothing may start before approval"

    assert poller.handle_command({"command": "approve", "job_id": job_id}) == "approved"
    document = wait_for(
        lambda: (d := job_document(db, job_id)) and d["state"] in FINISHED and d, timeout=180, what="the run"
    )
    assert [h["to"] for h in document["history"]][:3] == ["awaiting_approval", "queued", "launching"]
    assert len(standin_jobs(stack, job_id)) == 1


def test_a_job_over_the_budget_is_rejected_when_the_policy_says_so(world: Any) -> None:
    stack, bucket, db, events = world.stack, world.bucket, world.db, world.events
    settings = world.settings(training_token_budget=500, over_budget="reject")
    request = manual_request(stack, bucket, chat_lines(12), stats={"billable_training_tokens": 900})
    launcher, _poller = world.core(settings)
    launcher.handle_request(request)
    failed = events.wait("droptune.job.failed", request["job_id"], timeout=30)
    assert failed["data"]["error"]["category"] == "budget"
    assert "DROPTUNE_TRAINING_TOKEN_BUDGET" in failed["data"]["error"]["remedy"]
    assert job_document(db, request["job_id"])["state"] == "failed"
    assert standin_jobs(stack, request["job_id"]) == []
