"""The deployer recovers from its own crashes and never leaves an endpoint billing (issue 6 §1, §3).

Driven through `Deployer.start` (what a `job.succeeded` delivery runs) and `Deployer.follow` (what
each poller tick runs), over two doubles: `MemoryJobs`, the job state machine as the deployer uses
it (the moves of `droptune.jobs.record.TRANSITIONS`, each announced event recorded once), and
`StandinVertex`, Vertex AI as the stand-in behaves: a deploy makes its endpoint at once, named as
asked, and the endpoint lists a deployed model only when it serves. A crash is a deployer that
raises where the real one would die.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from droptune.deployment import (
    ATTEMPT_IN_FLIGHT_S,
    CLEANUP_ATTEMPTS,
    MAX_DEPLOY_ATTEMPTS,
    SMOKE_PROMPT,
    Deployer,
    attempt_is_open,
    endpoint_display_name,
)
from droptune.settings import Settings
from droptune.vertex_rest import VertexApiError

SETTINGS = Settings(project="my-project-123", datasets_bucket="my-datasets", deploy_policy="auto")
JOB_ID = "job-0123456789abcdef01234567"
PARENT = "projects/my-project-123/locations/us-central1"
CHECKPOINT = f"gs://my-datasets/tuned/{JOB_ID}/postprocess/node-0/checkpoints/final"
SUCCEEDED_EVENT = {
    "job_id": JOB_ID,
    "base_model": "google/gemma3@gemma-3-1b-it",
    "final_checkpoint_uri": CHECKPOINT,
}


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this line of the deployer runs."""


class MemoryJobs:
    """`droptune.deployment.JobTransitions` over one job document, as the state machine does it."""

    def __init__(self, **fields: Any) -> None:
        self.document: dict[str, Any] = {
            "job_id": JOB_ID,
            "dataset_id": "ds-1",
            "base_model": SUCCEEDED_EVENT["base_model"],
            "state": "succeeded",
            "final_checkpoint_uri": CHECKPOINT,
            "stats": {"format": "prompt_completion"},
            "tuned_model": {"model": f"{PARENT}/models/9@1"},
        } | fields
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.crash_on: str | None = None  # a field path whose write kills the process

    def begin_deploy(self, job_id: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.document["state"] != "succeeded":
            return None
        self._write({**fields, "state": "deploying"})
        return copy.deepcopy(self.document)

    def update_deploy(self, job_id: str, fields: Mapping[str, Any]) -> None:
        if self.crash_on is not None and self.crash_on in fields:
            raise SimulatedCrash(self.crash_on)
        if self.document["state"] == "deploying":
            self._write(fields)

    def current(self, job_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.document)

    def claim_attempt(self, job_id: str, attempt: int, fields: Mapping[str, Any]) -> bool:
        if not attempt_is_open(self.document, attempt):
            return False
        self._write(fields)
        return True

    def note_not_deployed(self, job_id: str, reason: str) -> None:
        self._write({"deployment": {"skipped": reason}})

    def finish_deploy(
        self, job_id: str, *, deployed: bool, fields: Mapping[str, Any], event_data: Mapping[str, Any]
    ) -> bool:
        if self.document["state"] != "deploying":
            return False
        self._write({**fields, "state": "deployed" if deployed else "deploy_failed"})
        event = "droptune.model.deployed" if deployed else "droptune.deploy.failed"
        self.events.append((event, copy.deepcopy(dict(event_data))))
        return True

    def _write(self, fields: Mapping[str, Any]) -> None:
        # Dotted paths update nested maps, as Firestore's update() does.
        for path, value in fields.items():
            *parents, name = path.split(".")
            target = self.document
            for parent in parents:
                target = target.setdefault(parent, {})
            target[name] = copy.deepcopy(value)

    @property
    def deployment(self) -> dict[str, Any]:
        return dict(self.document.get("deployment") or {})

    def age_attempt(self, seconds: float) -> None:
        """Move the last deploy attempt (and the deployment's start) into the past."""
        when = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
        self._write({"deployment.attempt_at": when, "deployment.started_at": when})


class StandinVertex:
    """The Vertex AI calls the deployer makes, with the stand-in's behaviour."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.deploy_calls: list[str] = []
        self.predictions: list[list[dict[str, Any]]] = []
        self.remove_calls: list[str] = []
        self.deploy_error: VertexApiError | None = None
        self.predict_error: VertexApiError | None = None
        self.remove_errors: list[VertexApiError] = []  # raised by the next removals, in turn
        self.crash_on_deploy = False

    def deploy_checkpoint(self, gcs_uri: str, *, display_name: str, **_: Any) -> str:
        if self.crash_on_deploy:
            raise SimulatedCrash("deploy_checkpoint")
        self.deploy_calls.append(display_name)
        if self.deploy_error is not None:
            raise self.deploy_error
        number = len(self.deploy_calls)
        name = f"{PARENT}/endpoints/{100 + number}"
        self.endpoints[name] = {"name": name, "displayName": display_name}
        operation = f"{PARENT}/operations/{number}"
        self.operations[operation] = {"name": operation, "done": False, "endpoint": name}
        return operation

    def serve(self) -> None:
        """Every deployment loads its model and ends its operation."""
        for endpoint in self.endpoints.values():
            endpoint["deployedModels"] = [{"id": "7", "model": f"{PARENT}/models/9"}]
        for operation in self.operations.values():
            operation["done"] = True

    def get_operation(self, name: str) -> dict[str, Any]:
        operation = self.operations[name]
        if not operation["done"]:
            return {"name": name, "done": False}
        return {"name": name, "done": True, "response": {"endpoint": operation["endpoint"]}}

    def find_endpoints(self, display_name: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(e) for e in self.endpoints.values() if e["displayName"] == display_name]

    def predict(self, endpoint: str, instances: list[dict[str, Any]]) -> list[Any]:
        self.predictions.append(copy.deepcopy(instances))
        if self.predict_error is not None:
            raise self.predict_error
        return ["I add numbers."]

    def chat(self, endpoint: str, prompt: str, **_: Any) -> str:
        raise AssertionError("a prompt/completion model is asked through predict")

    def generate_content(self, endpoint: str, prompt: str) -> str:
        raise AssertionError("not a managed endpoint")

    def remove_endpoint(self, endpoint: str) -> None:
        self.remove_calls.append(endpoint)
        if self.remove_errors:
            raise self.remove_errors.pop(0)
        self.endpoints.pop(endpoint, None)


def deployer(jobs: MemoryJobs, vertex: StandinVertex) -> Deployer:
    return Deployer(SETTINGS, jobs, vertex)  # type: ignore[arg-type]


def crash_after_the_deploy_call(jobs: MemoryJobs, vertex: StandinVertex) -> None:
    """A deployer that dies once Vertex accepted the deploy, before the operation is recorded."""
    jobs.crash_on = "deployment.operation"
    with pytest.raises(SimulatedCrash):
        deployer(jobs, vertex).start(SUCCEEDED_EVENT)
    jobs.crash_on = None
    assert jobs.document["state"] == "deploying" and jobs.deployment["operation"] is None
    assert len(vertex.endpoints) == 1, "the deploy call made its endpoint before the crash"


def events_of(jobs: MemoryJobs, event_type: str) -> list[dict[str, Any]]:
    return [data for kind, data in jobs.events if kind == event_type]


# --- finding 1: a deployer that died after its deploy call ---------------------------------


def test_a_redelivered_job_succeeded_adopts_the_endpoint_of_the_deployer_that_died() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    crash_after_the_deploy_call(jobs, vertex)

    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "adopted"
    (endpoint,) = vertex.endpoints
    assert jobs.deployment["endpoint"] == endpoint
    assert vertex.deploy_calls == [endpoint_display_name(JOB_ID)], "no second deploy call"

    assert deployer(jobs, vertex).follow(jobs.document) == "waiting", "not serving yet"
    vertex.serve()
    assert deployer(jobs, vertex).follow(jobs.document) == "deployed"
    (deployed,) = events_of(jobs, "droptune.model.deployed")
    assert deployed["endpoint"] == endpoint and deployed["sample_answer"] == "I add numbers."
    assert events_of(jobs, "droptune.deploy.failed") == []
    assert list(vertex.endpoints) == [endpoint] and vertex.remove_calls == []


def test_the_poller_alone_adopts_it_even_long_after_the_crash_instead_of_failing_it() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    crash_after_the_deploy_call(jobs, vertex)
    jobs.age_attempt(2 * ATTEMPT_IN_FLIGHT_S)  # well past the old ten-minute give-up
    vertex.serve()

    assert deployer(jobs, vertex).follow(jobs.document) == "waiting"
    assert jobs.deployment["adopted"] is True
    assert deployer(jobs, vertex).follow(jobs.document) == "deployed"
    assert len(events_of(jobs, "droptune.model.deployed")) == 1
    assert vertex.remove_calls == [] and len(vertex.endpoints) == 1
    assert len(vertex.deploy_calls) == 1


def test_more_redeliveries_after_adoption_change_nothing() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    crash_after_the_deploy_call(jobs, vertex)
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "adopted"
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "duplicate"
    vertex.serve()
    deployer(jobs, vertex).follow(jobs.document)
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "duplicate"
    assert len(vertex.deploy_calls) == 1 and len(vertex.endpoints) == 1
    assert len(jobs.events) == 1


def test_an_adopted_endpoint_that_never_serves_is_failed_after_the_deploy_timeout_and_removed() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    crash_after_the_deploy_call(jobs, vertex)
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "adopted"
    jobs.age_attempt(4 * 3600)

    assert deployer(jobs, vertex).follow(jobs.document) == "failed"
    (failed,) = events_of(jobs, "droptune.deploy.failed")
    assert failed["error"]["category"] == "capacity" and failed["endpoint_removed"] is True
    assert vertex.endpoints == {}


# --- a deployer that died before its deploy call, or whose call failed ---------------------


def test_no_endpoint_while_the_first_attempt_may_be_in_flight_means_wait_not_deploy() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    vertex.crash_on_deploy = True  # dies after the claim, before its deploy call reaches Vertex
    with pytest.raises(SimulatedCrash):
        deployer(jobs, vertex).start(SUCCEEDED_EVENT)
    vertex.crash_on_deploy = False
    assert jobs.document["state"] == "deploying" and vertex.endpoints == {}

    # Or the deployer is only slow: either way, nothing is deployed twice while it may be at it.
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "duplicate"
    assert deployer(jobs, vertex).follow(jobs.document) == "waiting"
    assert vertex.deploy_calls == [] and jobs.events == []


def died_before_the_deploy_call(jobs: MemoryJobs, vertex: StandinVertex) -> None:
    vertex.deploy_error = VertexApiError(503, "The service is currently unavailable.")
    with pytest.raises(VertexApiError):  # raised, so that Pub/Sub redelivers
        deployer(jobs, vertex).start(SUCCEEDED_EVENT)
    vertex.deploy_error = None
    vertex.deploy_calls.clear()
    assert jobs.document["state"] == "deploying" and vertex.endpoints == {}


def test_once_the_attempt_cannot_be_in_flight_the_poller_deploys_again_exactly_once() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    died_before_the_deploy_call(jobs, vertex)
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "duplicate", "too early to deploy again"
    assert vertex.deploy_calls == []
    jobs.age_attempt(ATTEMPT_IN_FLIGHT_S + 60)

    snapshot = copy.deepcopy(jobs.document)  # two pollers read the job in the same tick
    assert deployer(jobs, vertex).follow(snapshot) == "waiting"
    assert deployer(jobs, vertex).follow(snapshot) == "waiting"
    assert vertex.deploy_calls == [endpoint_display_name(JOB_ID)], "the attempt is claimed once"
    assert jobs.deployment["attempts"] == 2 and jobs.deployment["operation"]

    vertex.serve()
    assert deployer(jobs, vertex).follow(jobs.document) == "deployed"
    assert len(events_of(jobs, "droptune.model.deployed")) == 1 and len(vertex.endpoints) == 1


def test_when_every_attempt_left_nothing_the_job_fails_with_a_remedy_of_real_commands() -> None:
    from droptune_cli.main import build_parser

    jobs, vertex = MemoryJobs(), StandinVertex()
    died_before_the_deploy_call(jobs, vertex)
    vertex.deploy_error = VertexApiError(503, "The service is currently unavailable.")
    for _ in range(MAX_DEPLOY_ATTEMPTS - 1):
        jobs.age_attempt(ATTEMPT_IN_FLIGHT_S + 60)
        with pytest.raises(VertexApiError):
            deployer(jobs, vertex).follow(jobs.document)
    assert len(vertex.deploy_calls) == MAX_DEPLOY_ATTEMPTS - 1
    jobs.age_attempt(ATTEMPT_IN_FLIGHT_S + 60)

    assert deployer(jobs, vertex).follow(jobs.document) == "failed"
    assert len(vertex.deploy_calls) == MAX_DEPLOY_ATTEMPTS - 1, "no call past the bound"
    (failed,) = events_of(jobs, "droptune.deploy.failed")
    remedy = failed["error"]["remedy"]
    assert "redeploy" not in remedy, remedy
    commands = re.findall(r"`(droptune [^`]+)`", remedy)
    assert commands, f"the remedy should name a droptune command: {remedy}"
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])  # SystemExit if it does not exist
    assert failed["endpoint"] is None and failed["endpoint_removed"] is False


def test_a_deploy_call_vertex_refuses_fails_the_deployment_at_once_without_a_retry() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    vertex.deploy_error = VertexApiError(403, "Permission 'aiplatform.endpoints.deploy' denied")
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "failed"
    (failed,) = events_of(jobs, "droptune.deploy.failed")
    assert failed["error"]["category"] == "permissions"
    assert jobs.document["state"] == "deploy_failed"


# --- finding 2: an endpoint that cannot be removed is retried, bounded ---------------------


def deployed_but_not_answering(jobs: MemoryJobs, vertex: StandinVertex) -> str:
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "started"
    vertex.serve()
    vertex.predict_error = VertexApiError(400, "The model server could not load the tokenizer.")
    (endpoint,) = vertex.endpoints
    return endpoint


def test_a_failed_removal_is_retried_on_the_next_tick_and_deploy_failed_is_published_once() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    endpoint = deployed_but_not_answering(jobs, vertex)
    vertex.remove_errors = [VertexApiError(400, "Endpoint has deployed models; undeploy them first.")]

    assert deployer(jobs, vertex).follow(jobs.document) == "cleanup-pending"
    assert jobs.document["state"] == "deploying", "kept where the poller follows it"
    assert jobs.deployment["cleanup"]["endpoint"] == endpoint
    assert jobs.events == [], "nothing announced while the endpoint may still bill"

    assert deployer(jobs, vertex).follow(jobs.document) == "failed"
    assert vertex.remove_calls == [endpoint, endpoint] and vertex.endpoints == {}
    (failed,) = events_of(jobs, "droptune.deploy.failed")
    assert failed["endpoint"] == endpoint and failed["endpoint_removed"] is True
    assert "smoke prediction failed" in failed["error"]["message"]
    assert jobs.document["state"] == "deploy_failed" and jobs.deployment["cleanup"] is None
    assert len(vertex.predictions) == 1, "the smoke prediction is not asked again"
    assert jobs.events == [("droptune.deploy.failed", failed)]


def test_removal_is_given_up_after_a_bounded_number_of_ticks_and_the_event_says_so() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    endpoint = deployed_but_not_answering(jobs, vertex)
    vertex.remove_errors = [VertexApiError(503, "unavailable")] * (CLEANUP_ATTEMPTS + 5)

    outcomes = []
    for _ in range(CLEANUP_ATTEMPTS):
        stale = copy.deepcopy(jobs.document)
        outcomes.append(deployer(jobs, vertex).follow(jobs.document))
    assert outcomes == ["cleanup-pending"] * (CLEANUP_ATTEMPTS - 1) + ["failed"]
    assert len(vertex.remove_calls) == CLEANUP_ATTEMPTS
    (failed,) = events_of(jobs, "droptune.deploy.failed")
    assert failed["endpoint"] == endpoint and failed["endpoint_removed"] is False
    endpoint_id = endpoint.rsplit("/", 1)[-1]
    assert f"gcloud ai endpoints delete {endpoint_id} --region=us-central1" in failed["error"]["remedy"]
    # A poller that read the job before the last tick finished cannot announce it a second time.
    deployer(jobs, vertex).follow(stale)
    assert len(jobs.events) == 1 and jobs.document["state"] == "deploy_failed"


def test_an_endpoint_already_gone_counts_as_removed() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    deployed_but_not_answering(jobs, vertex)
    vertex.remove_errors = [VertexApiError(404, "Endpoint not found.")]
    assert deployer(jobs, vertex).follow(jobs.document) == "failed"
    (failed,) = events_of(jobs, "droptune.deploy.failed")
    assert failed["endpoint_removed"] is True


# --- finding 3: the smoke prediction is the predict instance of M1.10 ----------------------


def test_the_smoke_prediction_sends_the_m1_10_instance_fields() -> None:
    jobs, vertex = MemoryJobs(), StandinVertex()
    assert deployer(jobs, vertex).start(SUCCEEDED_EVENT) == "started"
    vertex.serve()
    assert deployer(jobs, vertex).follow(jobs.document) == "deployed"
    ((instance,),) = vertex.predictions
    assert set(instance) == {"prompt", "max_tokens", "temperature", "top_p", "top_k", "raw_response"}
    assert instance["prompt"] == SMOKE_PROMPT and instance["raw_response"] is True
    assert isinstance(instance["max_tokens"], int) and isinstance(instance["top_k"], int)
