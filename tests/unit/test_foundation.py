"""The foundation's pure parts: settings, event envelopes, CloudEvents, ids, the topology (issue 2)."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from droptune import identity
from droptune.envelopes import MalformedEventError, parse_pubsub_push, parse_storage_event
from droptune.events import make_event, parse_event
from droptune.jsonlog import JsonFormatter, correlate, log_fields
from droptune.settings import Settings, SettingsError
from droptune.topology import TOPOLOGY

EVENTS = Path(__file__).parents[1] / "events"
REQUIRED = {"DROPTUNE_PROJECT": "my-project-123", "DROPTUNE_DATASETS_BUCKET": "my-datasets"}


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


# --- settings ---------------------------------------------------------------------------------


def test_settings_have_defaults_for_everything_but_project_and_bucket() -> None:
    settings = Settings.from_environ(REQUIRED)
    assert settings.region == "us-central1"
    assert settings.watch_prefix == "datasets/"
    assert settings.max_concurrent_jobs == 1
    assert not settings.is_local


@pytest.mark.parametrize(
    ("environ", "variable", "hint"),
    [
        ({}, "DROPTUNE_PROJECT", "is required"),
        ({**REQUIRED, "DROPTUNE_PROJECT": "Bad_Project"}, "DROPTUNE_PROJECT", "project id"),
        ({**REQUIRED, "DROPTUNE_REGION": "mars-north1"}, "DROPTUNE_REGION", "us-central1"),
        ({**REQUIRED, "DROPTUNE_MAX_CONCURRENT_JOBS": "many"}, "DROPTUNE_MAX_CONCURRENT_JOBS", "number"),
        ({**REQUIRED, "DROPTUNE_MAX_CONCURRENT_JOBS": "0"}, "DROPTUNE_MAX_CONCURRENT_JOBS", "1 to 100"),
        ({**REQUIRED, "DROPTUNE_DEPLOY": "sometimes"}, "DROPTUNE_DEPLOY", "never"),
        ({**REQUIRED, "DROPTUNE_WATCH_PREFIX": "../up"}, "DROPTUNE_WATCH_PREFIX", "relative"),
    ],
)
def test_a_bad_setting_names_the_variable_and_the_remedy(environ: dict, variable: str, hint: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ(environ)
    assert raised.value.variable == variable
    assert str(raised.value).startswith(variable)
    assert hint in str(raised.value)


def test_settings_are_hashable_so_clients_can_be_cached_per_settings() -> None:
    settings = Settings.from_environ({**REQUIRED, "DROPTUNE_LABELS": "team=ml,env=dev"})
    assert hash(settings) == hash(Settings.from_environ({**REQUIRED, "DROPTUNE_LABELS": "env=dev,team=ml"}))
    assert settings.labels == {"team": "ml", "env": "dev"}


# --- envelopes --------------------------------------------------------------------------------


def test_a_bucket_notification_pushed_by_pubsub_becomes_a_storage_object() -> None:
    event = load("storage-notification-via-pubsub-push.json")
    parsed = parse_storage_event(event["type"], event["id"], event["data"])
    assert parsed.kind == "finalize"
    assert parsed.object.uri == "gs://droptune-datasets/datasets/support/train.jsonl"
    assert parsed.object.generation == "1763798400123456"
    assert parsed.object.metadata["droptune-epochs"] == "2"


def test_an_eventarc_finalized_event_gives_the_same_object() -> None:
    pushed = load("storage-notification-via-pubsub-push.json")
    eventarc = load("storage-finalized-via-eventarc.json")
    via_pubsub = parse_storage_event(pushed["type"], pushed["id"], pushed["data"]).object
    via_eventarc = parse_storage_event(eventarc["type"], eventarc["id"], eventarc["data"]).object
    assert via_pubsub == via_eventarc


def test_other_notification_kinds_are_recognised_not_mistaken_for_uploads() -> None:
    event = load("storage-notification-via-pubsub-push.json")
    event["data"]["message"]["attributes"]["eventType"] = "OBJECT_DELETE"
    assert parse_storage_event(event["type"], event["id"], event["data"]).kind == "delete"


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda e: e["data"].pop("message"), "without a message"),
        (lambda e: e["data"]["message"].update(data="%%%"), "not base64"),
        (lambda e: e["data"]["message"]["attributes"].update(eventType="SOMETHING"), "not a Cloud Storage"),
        (
            lambda e: e["data"]["message"]["attributes"].update(payloadFormat="NONE"),
            "JSON_API_V1",
        ),
        (
            lambda e: e["data"]["message"].update(data=base64.b64encode(b'{"name": "x"}').decode()),
            "without 'bucket'",
        ),
    ],
)
def test_malformed_events_raise_a_final_error_saying_what_is_wrong(mutate, problem: str) -> None:
    event = load("storage-notification-via-pubsub-push.json")
    mutate(event)
    with pytest.raises(MalformedEventError, match=problem):
        parse_storage_event(event["type"], event["id"], event["data"])


def test_a_pubsub_push_carries_its_attributes_and_delivery_attempt() -> None:
    data = {
        "message": {
            "data": base64.b64encode(b'{"a": 1}').decode(),
            "attributes": {"k": "v"},
            "messageId": "1",
        },
        "subscription": "projects/p/subscriptions/s",
        "deliveryAttempt": 3,
    }
    message = parse_pubsub_push("google.cloud.pubsub.topic.v1.messagePublished", data)
    assert message.json() == {"a": 1}
    assert message.attributes == {"k": "v"}
    assert message.delivery_attempt == 3


# --- events -----------------------------------------------------------------------------------


def test_the_same_fact_gets_the_same_event_id_and_a_different_fact_another() -> None:
    first = make_event(
        "droptune.job.state_changed", source="s", subject="jobs/j", data={}, discriminator="RUNNING"
    )
    again = make_event(
        "droptune.job.state_changed", source="s", subject="jobs/j", data={}, discriminator="RUNNING"
    )
    other = make_event(
        "droptune.job.state_changed", source="s", subject="jobs/j", data={}, discriminator="SUCCEEDED"
    )
    assert first.id == again.id != other.id


def test_events_are_cloudevents_with_filterable_attributes() -> None:
    event = make_event(
        "droptune.job.succeeded",
        source="//droptune/poller",
        subject="jobs/job-1",
        data={"job_id": "job-1", "base_model": "meta/llama3_1@llama-3.1-8b", "epochs": 3},
    )
    body = json.dumps(event.to_json()).encode()
    assert parse_event(body) == event
    assert event.to_json()["specversion"] == "1.0"
    attributes = event.attributes()
    assert attributes["type"] == "droptune.job.succeeded"
    assert attributes["base_model"] == "meta/llama3_1@llama-3.1-8b"
    assert "epochs" not in attributes  # only the filter fields become attributes


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        make_event("droptune.job.exploded", source="s", subject="x", data={})


# --- ids --------------------------------------------------------------------------------------


def test_job_ids_are_deterministic_and_change_with_generation_or_options() -> None:
    base = identity.job_id("b", "datasets/a.jsonl", "1", {"epochs": 3, "base_model": "m"})
    assert base == identity.job_id("b", "datasets/a.jsonl", "1", {"base_model": "m", "epochs": 3})
    assert base != identity.job_id("b", "datasets/a.jsonl", "2", {"epochs": 3, "base_model": "m"})
    assert base != identity.job_id("b", "datasets/a.jsonl", "1", {"epochs": 4, "base_model": "m"})
    assert base.startswith("job-") and len(base) <= 63  # a valid Vertex AI label value


# --- topology ---------------------------------------------------------------------------------


def test_every_push_subscription_has_a_dead_letter_topic_and_bounded_attempts() -> None:
    topics = set(TOPOLOGY.topic_names())
    for subscription in TOPOLOGY.push_subscriptions:
        assert subscription.topic in topics
        assert subscription.dead_letter_topic in topics
        assert 5 <= subscription.max_delivery_attempts <= 100  # the range Pub/Sub accepts
    held = {s.topic for s in TOPOLOGY.pull_subscriptions}
    assert held == {s.dead_letter_topic for s in TOPOLOGY.push_subscriptions}
    names = TOPOLOGY.subscription_names()
    assert len(names) == len(set(names))


# --- logs -------------------------------------------------------------------------------------


def test_log_lines_are_json_with_severity_and_correlation_ids() -> None:
    record = logging.LogRecord("droptune.test", logging.WARNING, __file__, 1, "dataset rejected", None, None)
    record.fields = log_fields(error_total=2)["fields"]
    with correlate(job_id="job-1", dataset_id=None):
        line = json.loads(JsonFormatter("validator").format(record))
    assert line["severity"] == "WARNING"
    assert line["message"] == "dataset rejected"
    assert line["job_id"] == "job-1"
    assert "dataset_id" not in line
    assert line["error_total"] == 2
    outside = json.loads(JsonFormatter("validator").format(record))
    assert "job_id" not in outside
