"""Exactly one Vertex job per upload, whatever the deliveries (issue 5 §7; M4.5, M4.3, M4.4).

Each test asserts what a user would see: the job document in Firestore, the events on the
events topic, and the jobs that exist in the Vertex AI stand-in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_support import events_of, job_document, manual_request, standin_jobs, wait_until_idle
from stack_support import chat_lines, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


# The deployer takes a succeeded job further; any of these means the tuning job succeeded.
SUCCEEDED = ("succeeded", "deploying", "deployed", "deploy_failed")


def _terminal(firestore_db: Any, job_id: str, states: tuple[str, ...] = (*SUCCEEDED, "failed")) -> Any:
    def probe() -> Any:
        document = job_document(firestore_db, job_id)
        return document if document and document["state"] in states else None

    return probe


def test_the_same_tune_request_delivered_five_times_at_once_makes_one_vertex_job(
    world: Any,
) -> None:
    stack, datasets_bucket, firestore_db, events = world.stack, world.bucket, world.db, world.events
    job_settings, core = world.settings, world.core
    request = manual_request(stack, datasets_bucket, chat_lines(12))
    job_id = request["job_id"]
    launchers = [core(job_settings())[0] for _ in range(5)]
    barrier = threading.Barrier(5)
    problems: list[BaseException] = []

    def deliver(launcher: Any) -> None:
        barrier.wait()
        try:
            launcher.handle_request(request)
        except BaseException as error:  # noqa: BLE001 - reported below with the test's message
            problems.append(error)

    threads = [threading.Thread(target=deliver, args=(launcher,)) for launcher in launchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not problems, f"a delivery raised: {problems!r}"

    document = wait_for(_terminal(firestore_db, job_id), timeout=120, what="the job to finish")
    assert document["state"] in SUCCEEDED, document.get("error")
    in_standin = standin_jobs(stack, job_id)
    assert len(in_standin) == 1, f"expected exactly one Vertex job labelled {job_id}, found {len(in_standin)}"
    assert document["vertex"]["name"] == in_standin[0]["name"]
    states = [(h["from"], h["to"]) for h in document["history"]]
    assert states[:3] == [(None, "queued"), ("queued", "launching"), ("launching", "running")], states

    events.wait("droptune.job.succeeded", job_id, timeout=30)
    time.sleep(2)  # anything published twice would have arrived by now
    for event_type in ("droptune.job.queued", "droptune.job.launched", "droptune.job.succeeded"):
        found = events_of(events, job_id, event_type)
        assert len(found) == 1, f"expected one {event_type} for {job_id}, got {len(found)}"


_KILLED_LAUNCHER = textwrap.dedent(
    """
    import json, os, sys, dataclasses
    from droptune.settings import Settings
    from droptune.cloud_clients import PubSubPublisher, firestore_client
    from droptune.jobs.launcher import Launcher
    from droptune.jobs.state_machine import JobStore
    from droptune.jobs.vertex_access import VertexClient

    settings = dataclasses.replace(Settings.from_environ(os.environ), api_timeout_seconds=1.0)

    class DiesAfterCreate(VertexClient):
        def create(self, request):
            created = super().create(request)
            print(json.dumps({"created": created["name"]}), flush=True)
            os._exit(137)  # the process dies here: the job exists in Vertex, not in Firestore

    store = JobStore(settings, firestore_client(settings), PubSubPublisher(settings))
    Launcher(settings, store, DiesAfterCreate(settings)).handle_request(json.loads(sys.stdin.read()))
    """
)


def test_a_launcher_killed_between_create_and_record_is_recovered_without_a_second_job(
    world: Any,
) -> None:
    stack, datasets_bucket, firestore_db, events = world.stack, world.bucket, world.db, world.events
    job_settings, core = world.settings, world.core
    for _arrangement in range(3):
        wait_until_idle(stack, firestore_db)  # a full slot or quota would hold the job before create
        request = manual_request(stack, datasets_bucket, chat_lines(12))
        job_id = request["job_id"]
        killed = subprocess.run(
            [sys.executable, "-c", _KILLED_LAUNCHER],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        if killed.returncode != 0:
            break
        # The stack's own poller ticks every second and starts queued jobs: it may take the slot
        # allocator first and launch this job itself, and this launcher then creates nothing and
        # exits cleanly. No crash happened, so there is nothing to recover: arrange it again.
        taken = job_document(firestore_db, job_id)
        assert taken is not None and taken["state"] in ("queued", "launching", "running"), taken
        core(job_settings())[1].handle_command({"command": "cancel", "job_id": job_id})
    assert killed.returncode == 137, (killed.stderr[-2000:], job_document(firestore_db, job_id))
    created = json.loads(killed.stdout.strip().splitlines()[-1])["created"]
    document = job_document(firestore_db, job_id)
    assert document is not None and document["state"] == "launching", "the dead launcher left it launching"

    # Redelivery once the dead launcher's lease is over (4 × its 1 s API timeout).
    time.sleep(4.5)
    launcher, _poller = core(job_settings())
    launcher.handle_request(request)

    document = wait_for(_terminal(firestore_db, job_id), timeout=120, what="the recovered job to finish")
    assert document["state"] in SUCCEEDED, document.get("error")
    in_standin = standin_jobs(stack, job_id)
    assert [j["name"] for j in in_standin] == [created], "the job created before the crash, and no other"
    assert document["vertex"]["name"] == created
    assert "found" in document["history"][2]["reason"], document["history"]
    events.wait("droptune.job.succeeded", job_id, timeout=30)
    assert len(events_of(events, job_id, "droptune.job.launched")) == 1


def test_a_job_failing_inside_vertex_is_failed_with_a_categorised_error_and_remedy(
    world: Any,
) -> None:
    stack, datasets_bucket, firestore_db, events = world.stack, world.bucket, world.db, world.events
    job_settings, core = world.settings, world.core
    # Valid when validated, then overwritten in place by something else: Vertex reads bad data.
    request = manual_request(stack, datasets_bucket, '{"messages": [{"role": "user", "content": "x"}\n')
    job_id = request["job_id"]
    launcher, _poller = core(job_settings())
    launcher.handle_request(request)

    failed = events.wait("droptune.job.failed", job_id, timeout=120)
    error = failed["data"]["error"]
    assert error["category"] == "user_data", error
    assert error["code"] == 3 and "line 1" in error["message"], error
    assert "upload the dataset again" in error["remedy"]
    assert failed["_attributes"]["job_id"] == job_id
    document = job_document(firestore_db, job_id)
    assert document is not None and document["state"] == "failed"
    assert document["error"]["category"] == "user_data"
    assert [j["state"] for j in standin_jobs(stack, job_id)] == ["JOB_STATE_FAILED"]
