"""The event catalog: a schema and an AsyncAPI message per event type, and the real publishers'
events validated against them (issue 6 §4; M4.4).

Events are built by the production code: the validator's `Intake` over in-memory storage,
Firestore and Pub/Sub; the poller's `observe` and the `Deployer` (through its `StoreTransitions`)
over a job store that turns each transition into the event the state machine would write to its
outbox, with the state machine's own event construction. The launcher's events use its exact
`EventSpec.data` over job documents made from the validator's real tune request.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from droptune.deployment import Deployer, StoreTransitions
from droptune.envelopes import StorageObject
from droptune.event_catalog import EVENT_CATALOG, load_common_schema, load_schema, schema_url, validate_event
from droptune.events import DATA_SCHEMA_VERSION, EVENT_TYPES, CloudEvent, make_event, parse_event
from droptune.intake import Intake
from droptune.jobs.errors import budget_error, categorize
from droptune.jobs.experiment_metrics import MetricsReading
from droptune.jobs.poller import PollContext, Poller, observation
from droptune.jobs.record import JobState, new_job_document
from droptune.jobs.state_machine import EventSpec, JobStore
from droptune.settings import Settings
from droptune.topology import TOPOLOGY
from droptune.vertex_rest import VertexApiError

ROOT = Path(__file__).parents[2]
ASYNCAPI = ROOT / "shared" / "droptune" / "event_schemas" / "asyncapi.yaml"
BUCKET = "my-datasets"
SETTINGS = Settings(project="my-project-123", datasets_bucket=BUCKET, deploy_policy="auto")
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

GOOD_DATASET = "".join(
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
            ]
        }
    )
    + "\n"
    for i in range(20)
)
BAD_DATASET = '{"messages": [{"role": "user", "content": "hi"}]}\nnot json at all\n'


# --- in-memory Google clients, just enough for the validator ------------------------------


class MemoryBlob:
    def __init__(self, bucket: MemoryBucket, name: str) -> None:
        self.bucket = bucket
        self.name = name
        self.content_type: str | None = None

    def open(self, mode: str, **_: Any) -> io.BytesIO:
        assert mode == "rb"
        return io.BytesIO(self.bucket.objects[self.name])

    def download_as_bytes(self, **_: Any) -> bytes:
        return self.bucket.objects[self.name]

    def upload_from_string(self, data: str, **_: Any) -> None:
        self.bucket.objects[self.name] = data.encode()


class MemoryBucket:
    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, bytes] = {}

    def blob(self, name: str, generation: int | None = None) -> MemoryBlob:
        return MemoryBlob(self, name)

    def get_blob(self, name: str, **_: Any) -> MemoryBlob | None:
        return MemoryBlob(self, name) if name in self.objects else None


class MemoryStorage:
    def __init__(self) -> None:
        self.buckets: dict[str, MemoryBucket] = {}

    def bucket(self, name: str) -> MemoryBucket:
        return self.buckets.setdefault(name, MemoryBucket(name))


class MemoryFirestore:
    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}

    def collection(self, collection: str) -> MemoryFirestore:
        self._collection = collection
        return self

    def document(self, document_id: str) -> MemoryFirestore:
        self._path = f"{self._collection}/{document_id}"
        return self

    def set(self, document: Mapping[str, Any], **_: Any) -> None:
        self.documents[self._path] = dict(document)

    def get(self, **_: Any) -> Any:
        data = self.documents.get(self._path)
        return SimpleNamespace(exists=data is not None, to_dict=lambda: data)

    def update(self, fields: Mapping[str, Any], **_: Any) -> None:
        self.documents[self._path] |= dict(fields)


class RecordingPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def publish_json(self, topic: str, body: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
        # Through JSON and back, as Pub/Sub would carry it.
        self.messages.append((topic, json.loads(json.dumps(body)), dict(attributes)))
        return str(len(self.messages))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [body for t, body, _ in self.messages if t == topic]


def upload(text: str, name: str = "datasets/arith.jsonl") -> RecordingPublisher:
    storage, publisher = MemoryStorage(), RecordingPublisher()
    storage.bucket(BUCKET).objects[name] = text.encode()
    obj = StorageObject(
        bucket=BUCKET,
        name=name,
        generation="1735787045123456",
        size=len(text),
        md5_hash="q1w2e3r4t5y6u7i8o9p0aa==",
    )
    Intake(SETTINGS, storage, MemoryFirestore(), publisher).handle(obj, event_id="evt-1")
    return publisher


@pytest.fixture(scope="module")
def validated() -> RecordingPublisher:
    return upload(GOOD_DATASET)


def event_of(publisher: RecordingPublisher, event_type: str) -> dict[str, Any]:
    found = [body for body in publisher.on(SETTINGS.events_topic) if body["type"] == event_type]
    assert len(found) == 1, f"expected one {event_type}, published: {publisher.messages}"
    return found[0]


def assert_valid(envelope: Mapping[str, Any]) -> None:
    problems = validate_event(envelope)
    assert problems == [], f"{envelope['type']} does not match its schema:\n" + "\n".join(problems)


# --- the catalog is complete ----------------------------------------------------------------


def test_every_event_type_has_a_schema_whose_id_is_its_dataschema() -> None:
    assert set(EVENT_CATALOG) == set(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        schema = load_schema(event_type)
        event = make_event(event_type, source="//test", subject="jobs/x", data={})
        assert schema["$id"] == event.to_json()["dataschema"] == schema_url(event_type)
        assert schema["properties"]["type"] == {"const": event_type}


def test_every_schema_is_valid_draft_2020_12() -> None:
    for schema in [load_common_schema(), *(load_schema(t) for t in sorted(EVENT_TYPES))]:
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", schema["$id"]
        Draft202012Validator.check_schema(schema)


def test_every_event_type_is_an_asyncapi_message_on_the_events_channel() -> None:
    document = yaml.safe_load(ASYNCAPI.read_text())
    assert document["info"]["version"] == "1.0.0"
    messages = document["components"]["messages"]
    for event_type in EVENT_TYPES:
        message = next((m for m in messages.values() if m.get("name") == event_type), None)
        assert message is not None, f"{event_type} has no message in {ASYNCAPI}"
        payload = message["payload"]["schema"]["$ref"]
        assert (ASYNCAPI.parent / payload).resolve() == (
            ROOT / "shared" / "droptune" / "event_schemas" / f"{event_type}.json"
        ), payload
        headers = message["headers"]["properties"]
        assert headers["type"]["const"] == event_type
        assert headers["schema_version"]["const"] == DATA_SCHEMA_VERSION
    (channel,) = [c for c in document["channels"].values() if c["address"] == "droptune-events"]
    on_channel = {ref["$ref"].rsplit("/", 1)[-1] for ref in channel["messages"].values()}
    assert {messages[key]["name"] for key in on_channel} == set(EVENT_TYPES)


def test_asyncapi_documents_every_topic_and_the_attributes_events_carry() -> None:
    document = yaml.safe_load(ASYNCAPI.read_text())
    addresses = {channel["address"] for channel in document["channels"].values()}
    main_topics = {topic.name for topic in TOPOLOGY.topics if not topic.name.endswith("-dead-letter")}
    assert main_topics <= addresses
    headers = document["components"]["schemas"]["PubSubAttributes"]["properties"]
    event = make_event(
        "droptune.job.succeeded",
        source="//test",
        subject="jobs/x",
        data={
            "job_id": "j",
            "dataset_id": "d",
            "base_model": "m",
            "state": "succeeded",
            "tuning_mode": "FULL",
        },
    )
    assert set(event.attributes()) <= set(headers)


# --- the validator's events ---------------------------------------------------------------


def test_the_validators_dataset_validated_event_matches_its_schema(validated: RecordingPublisher) -> None:
    assert_valid(event_of(validated, "droptune.dataset.validated"))


def test_the_validators_dataset_rejected_event_matches_its_schema() -> None:
    assert_valid(event_of(upload(BAD_DATASET), "droptune.dataset.rejected"))


def test_the_validators_rejection_of_bad_options_matches_its_schema() -> None:
    storage, publisher = MemoryStorage(), RecordingPublisher()
    bucket = storage.bucket(BUCKET)
    bucket.objects["datasets/arith.jsonl"] = GOOD_DATASET.encode()
    bucket.objects["datasets/arith.manifest.json"] = b'{"epochs": "many"}'
    obj = StorageObject(bucket=BUCKET, name="datasets/arith.jsonl", generation="7", size=1)
    Intake(SETTINGS, storage, MemoryFirestore(), publisher).handle(obj, event_id="evt-2")
    event = event_of(publisher, "droptune.dataset.rejected")
    assert event["data"]["errors"][0]["code"] == "invalid_option"
    assert_valid(event)


# --- the job state machine's events -------------------------------------------------------


def job_document(validated: RecordingPublisher, state: JobState, **fields: Any) -> dict[str, Any]:
    (request,) = validated.on(SETTINGS.tune_topic)
    return new_job_document(request, now=NOW) | {"state": state.value} | fields


def job_event(
    document: Mapping[str, Any], previous: JobState | None, event_type: str, **extra: Any
) -> dict[str, Any]:
    """The event the state machine writes to the job's outbox for a transition."""
    store = JobStore(SETTINGS, firestore=None, publisher=RecordingPublisher(), clock=lambda: NOW)
    to = JobState(document["state"])
    (entry,) = store._outbox_entries(document, previous, to, 3, EventSpec(event_type, extra), NOW)
    body: dict[str, Any] = json.loads(json.dumps(entry["body"]))
    return body


VERTEX_JOB = "projects/my-project-123/locations/us-central1/tuningJobs/123"
RUNNING = {"vertex": {"name": VERTEX_JOB, "state": "JOB_STATE_RUNNING", "detail_state": None}}
OUTPUT = "gs://my-datasets/tuned/job-1/"
METRICS = {"/train_total_loss": 0.42, "/eval_total_loss": 0.51}


# The launcher's events, with the exact `EventSpec.data` of `droptune.jobs.launcher` (driving the
# launcher itself needs Firestore transactions for its slot allocation).
@pytest.mark.parametrize(
    ("event_type", "transition", "fields", "extra"),
    [
        ("droptune.job.queued", (None, JobState.QUEUED), {}, {"position": 1, "reason": "claimed"}),
        (
            "droptune.job.queued",
            (JobState.LAUNCHING, JobState.QUEUED),
            {},
            {"position": 1, "reason": "quota", "message": "429 Quota exceeded"},
        ),
        (
            "droptune.job.awaiting_approval",
            (None, JobState.AWAITING_APPROVAL),
            {},
            {
                "estimated_billable_tokens": 5400,
                "budget": 1000,
                "approve_with": "droptune jobs approve job-1",
            },
        ),
        (
            "droptune.job.launched",
            (JobState.LAUNCHING, JobState.RUNNING),
            RUNNING,
            {
                "vertex_job": VERTEX_JOB,
                "vertex_kind": "tuningJobs",
                "region": "us-central1",
                "output_uri": OUTPUT,
                "final_checkpoint_uri": OUTPUT + "postprocess/node-0/checkpoints/final",
            },
        ),
        (
            "droptune.job.failed",
            (JobState.LAUNCHING, JobState.FAILED),
            {},
            {"error": categorize(7, "Permission denied on metadataStores").to_dict()},
        ),
        (
            "droptune.job.failed",
            (JobState.AWAITING_APPROVAL, JobState.FAILED),
            {},
            {"error": budget_error(5400, 1000).to_dict()},
        ),
        (
            "droptune.job.cancelled",
            (JobState.QUEUED, JobState.CANCELLED),
            {},
            {"vertex_job": None, "requested": True},
        ),
    ],
)
def test_the_launchers_job_events_match_their_schemas(
    validated: RecordingPublisher,
    event_type: str,
    transition: tuple[JobState | None, JobState],
    fields: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    previous, state = transition
    event = job_event(job_document(validated, state, **fields), previous, event_type, **extra)
    assert event["data"]["md5_hash"] and event["data"]["estimated_billable_tokens"], event["data"]
    assert_valid(event)


class CapturingStore:
    """The job store as the poller and the deployer use it: each transition becomes the event it
    would publish. Field paths with dots update nested maps, as Firestore's `update` does."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.events: list[dict[str, Any]] = []

    def transition(
        self,
        job_id: str,
        *,
        expected: JobState,
        to: JobState,
        fields: Mapping[str, Any],
        event: EventSpec | None = None,
        **_: Any,
    ) -> Any:
        self.update_fields(job_id, {**fields, "state": to.value})
        if event is not None:
            self.events.append(job_event(self.document, expected, event.type, **event.data))
        return SimpleNamespace(document=self.document)

    def update_fields(self, job_id: str, fields: Mapping[str, Any], **_: Any) -> bool:
        for path, value in fields.items():
            *parents, name = path.split(".")
            target = self.document
            for parent in parents:
                target = target.setdefault(parent, {})
            target[name] = value
        return True


def vertex_job(state: str, **fields: Any) -> dict[str, Any]:
    """A tuning job resource as the Vertex AI stand-in returns it (local/vertex_standin/README.md)."""
    return {
        "name": VERTEX_JOB,
        "state": state,
        "outputUri": OUTPUT,
        "experiment": "projects/my-project-123/locations/us-central1/metadataStores/default/contexts/e-1",
        "droptuneMetrics": {"currentStep": 30, "totalSteps": 30},
    } | fields


# The metrics the poller read from the job's experiment this tick (experiment_metrics.py).
READING = MetricsReading(dict(METRICS), 30, {})


def poll(validated: RecordingPublisher, resource: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    store = CapturingStore(job_document(validated, JobState.RUNNING, **(RUNNING | fields)))
    context = PollContext(
        settings=SETTINGS,
        firestore=None,
        publisher=RecordingPublisher(),
        vertex=None,
        store=store,
        clock=lambda: NOW,
    )  # type: ignore[arg-type]
    Poller(context).observe(store.document, resource, READING)
    (event,) = store.events
    return event


POLLED = {
    "droptune.job.state_changed": vertex_job("JOB_STATE_RUNNING", tuningJobState="TUNING_JOB_STATE_TRAINING"),
    "droptune.job.succeeded": vertex_job(
        "JOB_STATE_SUCCEEDED",
        tunedModel={"model": "projects/my-project-123/locations/us-central1/models/9@1"},
        tuningDataStats={"supervisedTuningDataStats": {"totalBillableTokenCount": "5400"}},
        droptuneArtifacts={"finalCheckpointUri": OUTPUT + "postprocess/node-0/checkpoints/final"},
    ),
    "droptune.job.failed": vertex_job(
        "JOB_STATE_FAILED", error={"code": 13, "message": "Internal error encountered."}
    ),
    "droptune.job.cancelled": vertex_job("JOB_STATE_CANCELLED"),
}


@pytest.mark.parametrize("event_type", sorted(POLLED))
def test_the_pollers_job_events_match_their_schemas(validated: RecordingPublisher, event_type: str) -> None:
    event = poll(validated, POLLED[event_type], vertex={"name": VERTEX_JOB, "state": "JOB_STATE_PENDING"})
    assert event["type"] == event_type
    assert_valid(event)


class VertexWithBrokenExperiment:
    """Answers the job's GET; every experiment read fails as a malformed answer would."""

    def __init__(self, resource: Mapping[str, Any]) -> None:
        self.resource = resource

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.resource)

    def get_context(self, name: str) -> dict[str, Any]:
        raise KeyError("metadata")


def test_a_metrics_read_that_breaks_still_lets_the_job_succeed_with_the_metrics_it_had(
    validated: RecordingPublisher,
) -> None:
    store = CapturingStore(job_document(validated, JobState.RUNNING, **RUNNING, metrics=dict(METRICS)))
    resource = POLLED["droptune.job.succeeded"]
    context = PollContext(
        settings=SETTINGS,
        firestore=None,
        publisher=RecordingPublisher(),
        vertex=VertexWithBrokenExperiment(resource),
        store=store,
        clock=lambda: NOW,
    )  # type: ignore[arg-type]
    assert Poller(context)._poll_one(store.document) == "transition"
    (event,) = store.events
    assert event["type"] == "droptune.job.succeeded" and event["data"]["metrics"] == METRICS
    assert store.document["state"] == "succeeded"


def test_the_pollers_stalled_event_matches_its_schema(validated: RecordingPublisher) -> None:
    resource = vertex_job("JOB_STATE_RUNNING")
    document = job_document(validated, JobState.RUNNING, **RUNNING)
    unchanged = observation(resource, document, READING)["progress_fingerprint"]
    event = poll(
        validated,
        resource,
        progress_fingerprint=unchanged,
        progress_at=NOW - timedelta(hours=7),
        stalled=False,
    )
    assert event["type"] == "droptune.job.stalled"
    assert_valid(event)


# --- the deployer's events ----------------------------------------------------------------


class ScriptedVertex:
    ENDPOINT = "projects/my-project-123/locations/us-central1/endpoints/42"

    def __init__(self, *, deploy_error: Mapping[str, Any] | None = None) -> None:
        self.deploy_error = deploy_error
        self.removed: list[str] = []
        self.deploying = False

    def find_endpoints(self, display_name: str) -> list[dict[str, Any]]:
        # The endpoint exists once a deployment started, whether or not it then failed.
        return [{"name": self.ENDPOINT}] if self.deploying else []

    def deploy_checkpoint(self, checkpoint: str, **_: Any) -> str:
        self.deploying = True
        return "projects/my-project-123/locations/us-central1/operations/7"

    def get_operation(self, name: str) -> dict[str, Any]:
        if self.deploy_error:
            return {"done": True, "error": dict(self.deploy_error)}
        return {"done": True, "response": {"endpoint": self.ENDPOINT}}

    def predict(self, endpoint: str, instances: list[dict[str, Any]]) -> list[Any]:
        return ["I answer questions about arithmetic."]

    def chat(self, endpoint: str, prompt: str, **_: Any) -> str:
        return "Hello from the tuned model."

    def generate_content(self, endpoint: str, prompt: str) -> str:
        raise VertexApiError(400, "not a managed endpoint")

    def remove_endpoint(self, endpoint: str) -> None:
        self.removed.append(endpoint)


def deploy(validated: RecordingPublisher, vertex: ScriptedVertex) -> dict[str, Any]:
    document = job_document(
        validated,
        JobState.SUCCEEDED,
        base_model="google/gemma3@gemma-3-1b-it",
        final_checkpoint_uri=OUTPUT + "postprocess/node-0/checkpoints/final",
        metrics=METRICS,
        tuned_model={"model": "projects/my-project-123/locations/us-central1/models/9@1"},
        **RUNNING,
    )
    store = CapturingStore(document)
    deployer = Deployer(SETTINGS, StoreTransitions(store), vertex)  # type: ignore[arg-type]
    assert deployer.start({"job_id": document["job_id"], "base_model": document["base_model"]}) == "started"
    deployer.follow(store.document)
    (event,) = store.events
    return event


def test_the_deployers_model_deployed_event_matches_its_schema(validated: RecordingPublisher) -> None:
    event = deploy(validated, ScriptedVertex())
    assert event["type"] == "droptune.model.deployed"
    assert_valid(event)


def test_the_deployers_deploy_failed_event_matches_its_schema(validated: RecordingPublisher) -> None:
    vertex = ScriptedVertex(deploy_error={"code": 8, "message": "Quota exceeded for NVIDIA_L4"})
    event = deploy(validated, vertex)
    assert event["type"] == "droptune.deploy.failed"
    assert event["data"]["endpoint_removed"] is True
    assert_valid(event)


# --- broken events are refused, naming the path ------------------------------------------


def test_an_event_without_its_job_id_is_refused_naming_the_field(validated: RecordingPublisher) -> None:
    event = job_event(job_document(validated, JobState.QUEUED), None, "droptune.job.queued")
    del event["data"]["job_id"]
    assert validate_event(event) == ["$.data: 'job_id' is a required property"]


def test_an_error_outside_the_categories_is_refused_naming_the_field(validated: RecordingPublisher) -> None:
    error = categorize(13, "Internal error encountered.").to_dict() | {"category": "cosmic_rays"}
    event = job_event(
        job_document(validated, JobState.FAILED, **RUNNING),
        JobState.RUNNING,
        "droptune.job.failed",
        error=error,
    )
    (problem,) = validate_event(event)
    assert problem.startswith("$.data.error.category: 'cosmic_rays' is not one of"), problem


def test_an_error_without_a_remedy_is_refused(validated: RecordingPublisher) -> None:
    event = job_event(
        job_document(validated, JobState.FAILED, **RUNNING),
        JobState.RUNNING,
        "droptune.job.failed",
        error={"category": "quota", "message": "Quota exceeded"},
    )
    assert validate_event(event) == ["$.data.error: 'remedy' is a required property"]


def test_a_validated_event_without_the_dataset_hash_or_token_estimate_is_refused(
    validated: RecordingPublisher,
) -> None:
    event = json.loads(json.dumps(event_of(validated, "droptune.dataset.validated")))
    del event["data"]["md5_hash"]
    event["data"]["stats"]["billable_training_tokens"] = "lots"
    assert validate_event(event) == [
        "$.data.stats.billable_training_tokens: 'lots' is not of type 'integer', 'null'",
        "$.data: 'md5_hash' is a required property",
    ]


def test_an_envelope_that_lies_about_its_type_or_schema_is_refused(validated: RecordingPublisher) -> None:
    event = json.loads(json.dumps(event_of(validated, "droptune.dataset.validated")))
    event["dataschema"] = "https://droptune.dev/schemas/v2/droptune.dataset.validated.json"
    del event["specversion"]
    problems = validate_event(event)
    assert any(p.startswith("$.dataschema:") for p in problems), problems
    assert "$: 'specversion' is a required property" in problems
    assert validate_event({"type": "droptune.job.exploded"})[0].startswith("$.type: unknown event type")


def test_forward_compatible_additions_to_data_are_accepted(validated: RecordingPublisher) -> None:
    event = json.loads(json.dumps(event_of(validated, "droptune.dataset.validated")))
    event["data"]["a_field_from_the_future"] = {"anything": [1, 2]}
    assert validate_event(event) == []


def test_a_published_event_reads_back_through_parse_event(validated: RecordingPublisher) -> None:
    body = event_of(validated, "droptune.dataset.validated")
    parsed = parse_event(json.dumps(body).encode())
    assert isinstance(parsed, CloudEvent)
    assert parsed.data["job_id"] == body["data"]["job_id"]
