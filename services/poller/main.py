"""The poller function: scheduler ticks follow every active job; control commands cancel or approve.

Two push subscriptions reach it: `poller-ticks` (Cloud Scheduler's fixed body, or the local
ticker's) and `job-control` (`{"command": "cancel" | "approve" | "reject", "job_id": ...}`). The
CloudEvent's source ends with the topic, which says which one a message is.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import functions_framework
from cloudevents.http import CloudEvent

from droptune.cloud_clients import PubSubPublisher, firestore_client
from droptune.envelopes import MalformedEventError, parse_pubsub_push
from droptune.jobs.poller import Poller, build_context
from droptune.jsonlog import correlate, log_fields
from droptune.runtime import start_function

SETTINGS = start_function("poller")
POLLER = Poller(build_context(SETTINGS, firestore_client(SETTINGS), PubSubPublisher(SETTINGS)))
log = logging.getLogger("droptune.poller")

# A tick redelivered long after it was published is superseded by newer ones: skip it.
STALE_TICK = timedelta(minutes=5)


@functions_framework.cloud_event
def handle_poller_message(cloud_event: CloudEvent) -> None:
    try:
        message = parse_pubsub_push(cloud_event["type"], cloud_event.data or {})
        body = message.json()
    except MalformedEventError as error:
        log.error(
            "malformed message dropped", extra=log_fields(event_id=cloud_event["id"], problem=str(error))
        )
        return
    topic = str(cloud_event["source"]).rsplit("/", 1)[-1]
    with correlate(event_id=message.message_id):
        if topic == SETTINGS.control_topic:
            if not isinstance(body, dict) or not body.get("job_id") or not body.get("command"):
                log.error("malformed command dropped", extra=log_fields(body=str(body)[:200]))
                return
            outcome = POLLER.handle_command(body)
            log.info("command handled", extra=log_fields(command=body.get("command"), outcome=outcome))
            return
        published = _published_at(message.publish_time)
        if published is not None and datetime.now(UTC) - published > STALE_TICK:
            log.info("stale tick skipped", extra=log_fields(published=message.publish_time))
            return
        POLLER.tick()


def _published_at(value: str | None) -> datetime | None:
    # Cloud Scheduler sends a fixed body ({"tick":"scheduled"}): the publish time is the tick's time.
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
