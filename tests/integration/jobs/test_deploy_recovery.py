"""A deployer that dies mid-deployment is recovered without a second endpoint (issue 6 §1, §3).

On the local stack, with the Vertex AI stand-in: a real job is tuned (its checkpoint is what
the deployments below serve), then a deployer process is killed right after Vertex accepted its
deploy call, and `job.succeeded` is delivered again through the events topic. What a user sees
is asserted: the endpoints and models in the stand-in, the job document, the events published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jobs_support import events_of, job_document, manual_request
from stack_support import chat_lines, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEPLOY_TIMEOUT_S = 240

_KILLED_DEPLOYER = textwrap.dedent(
    """
    import json, os, sys
    from droptune.cloud_clients import PubSubPublisher, firestore_client
    from droptune.deployment import Deployer, StoreTransitions
    from droptune.jobs.state_machine import JobStore
    from droptune.settings import Settings
    from droptune.vertex_rest import VertexRest

    settings = Settings.from_environ(os.environ)

    class DiesAfterDeploy(VertexRest):
        def deploy_checkpoint(self, gcs_uri, **options):
            operation = super().deploy_checkpoint(gcs_uri, **options)
            print(json.dumps({"operation": operation}), flush=True)
            os._exit(137)  # Vertex accepted the deploy; the operation is never recorded

    store = JobStore(settings, firestore_client(settings), PubSubPublisher(settings))
    Deployer(settings, StoreTransitions(store), DiesAfterDeploy(settings)).start(json.loads(sys.stdin.read()))
    """
)


@pytest.fixture(scope="module")
def tuned(stack: Any, datasets_bucket: Any, firestore_db: Any) -> dict[str, Any]:
    """A job tuned on the stack, as its document once the tuning succeeded."""
    from droptune.cloud_clients import PubSubPublisher, firestore_client
    from droptune.jobs.launcher import Launcher
    from droptune.jobs.poller import build_context
    from droptune.settings import Settings

    settings = Settings.from_environ(dict(os.environ))
    context = build_context(settings, firestore_client(settings), PubSubPublisher(settings))
    request = manual_request(stack, datasets_bucket, chat_lines(12))
    Launcher(settings, context.store, context.vertex).handle_request(request)

    def succeeded() -> dict[str, Any] | None:
        document = job_document(firestore_db, request["job_id"])
        if document and document["state"] == "failed":
            pytest.fail(f"the tuning job failed: {document.get('error')}")
        return document if document and document.get("final_checkpoint_uri") else None

    document: dict[str, Any] = wait_for(succeeded, timeout=300, what="the tuning job to succeed")
    return document | {"job_id": request["job_id"]}


def a_job_like(tuned: dict[str, Any], state: str, **fields: Any) -> dict[str, Any]:
    """Another job with the tuned job's checkpoint, as the state machine would have left it."""
    kept = {k: v for k, v in tuned.items() if k not in ("deployment", "endpoint", "error")}
    return (
        kept
        | {
            "job_id": f"job-{uuid.uuid4().hex[:24]}",
            "state": state,
            "history": [],
            "outbox": [],
            "outbox_pending": False,
        }
        | fields
    )


def in_standin(stack: Any, collection: str, display_name: str) -> list[dict[str, Any]]:
    parent = f"projects/{stack.project}/locations/us-central1"
    query = urllib.parse.quote(f'display_name="{display_name}"')
    url = f"{stack.endpoint('vertex')}/v1/{parent}/{collection}?pageSize=1000&filter={query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        found: list[dict[str, Any]] = json.loads(response.read()).get(collection, [])
    return found


def succeeded_event(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job["job_id"],
        "base_model": job["base_model"],
        "final_checkpoint_uri": job["final_checkpoint_uri"],
    }


def test_a_deployer_killed_after_its_deploy_call_is_recovered_with_one_endpoint(
    stack: Any, firestore_db: Any, events: Any, tuned: dict[str, Any]
) -> None:
    from droptune.cloud_clients import PubSubPublisher
    from droptune.events import make_event
    from droptune.settings import Settings

    job = a_job_like(tuned, "succeeded")
    job_id = job["job_id"]
    name = f"droptune-{job_id}"
    firestore_db.collection("jobs").document(job_id).set(job)

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_DEPLOYER],
        input=json.dumps(succeeded_event(job)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    document = job_document(firestore_db, job_id)
    assert document is not None and document["state"] == "deploying", document
    assert document["deployment"]["operation"] is None, "the dead deployer recorded no operation"
    assert len(in_standin(stack, "endpoints", name)) == 1, "its deploy call made an endpoint"

    # Pub/Sub redelivers job.succeeded (the function failed); the stack's deployer receives it.
    settings = Settings.from_environ(dict(os.environ))
    event = make_event(
        "droptune.job.succeeded",
        source="//droptune/jobs",
        subject=f"jobs/{job_id}",
        data=succeeded_event(job),
        discriminator="redelivered",
    )
    PubSubPublisher(settings).publish_json(settings.events_topic, event.to_json(), event.attributes())

    deployed = events.wait("droptune.model.deployed", job_id, timeout=DEPLOY_TIMEOUT_S)
    time.sleep(3)  # a second announcement, or a failure, would have arrived by now
    assert len(events_of(events, job_id, "droptune.model.deployed")) == 1
    assert events_of(events, job_id, "droptune.deploy.failed") == []

    endpoints = in_standin(stack, "endpoints", name)
    assert [e["name"] for e in endpoints] == [deployed["data"]["endpoint"]], "one endpoint: the adopted one"
    assert len(in_standin(stack, "models", name)) == 1, "one model uploaded for the job"
    document = job_document(firestore_db, job_id)
    assert document is not None and document["state"] == "deployed", document.get("error")
    assert document["deployment"]["adopted"] is True
    assert "deploy_failed" not in [h["to"] for h in document["history"]]
    # The M1.10 instance asks for the raw answer: the vLLM-style echo of the prompt is not in it.
    assert not deployed["data"]["sample_answer"].startswith("Prompt:"), deployed["data"]["sample_answer"]


def test_a_deployer_killed_before_its_deploy_call_is_deployed_again_by_the_poller(
    stack: Any, firestore_db: Any, events: Any, tuned: dict[str, Any]
) -> None:
    from droptune.deployment import ATTEMPT_IN_FLIGHT_S

    # What a deployer leaves when it dies between its claim and its deploy call, long ago.
    long_ago = (datetime.now(UTC) - timedelta(seconds=ATTEMPT_IN_FLIGHT_S + 60)).isoformat()
    job = a_job_like(
        tuned,
        "deploying",
        deployment={
            "started_at": long_ago,
            "attempt_at": long_ago,
            "attempts": 1,
            "reason": "the default shape",
            "shape": {
                "machine_type": "g2-standard-12",
                "accelerator_type": "NVIDIA_L4",
                "accelerator_count": 1,
            },
            "operation": None,
            "endpoint": None,
        },
    )
    job_id = job["job_id"]
    firestore_db.collection("jobs").document(job_id).set(job)

    deployed = events.wait("droptune.model.deployed", job_id, timeout=DEPLOY_TIMEOUT_S)
    time.sleep(3)
    assert len(events_of(events, job_id, "droptune.model.deployed")) == 1
    endpoints = in_standin(stack, "endpoints", f"droptune-{job_id}")
    assert [e["name"] for e in endpoints] == [deployed["data"]["endpoint"]]
    document = job_document(firestore_db, job_id)
    assert document is not None and document["state"] == "deployed", document.get("error")
    assert document["deployment"]["attempts"] == 2, "deployed again once, under the attempt claim"
