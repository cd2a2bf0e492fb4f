"""The launcher function: a tune request in, exactly one Vertex AI tuning job out (M4.5, M1.11).

Subscribed to the tune topic. A malformed request is logged and acknowledged (redelivering it
would never help); a transient failure raises, so Pub/Sub redelivers it, bounded by the
subscription's dead-letter policy.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from droptune.cloud_clients import PubSubPublisher, firestore_client
from droptune.envelopes import MalformedEventError, parse_pubsub_push
from droptune.jobs.launcher import Launcher, parse_tune_request
from droptune.jobs.state_machine import JobStore
from droptune.jobs.vertex_access import CallCounts, VertexClient
from droptune.jsonlog import correlate, log_fields
from droptune.runtime import start_function

SETTINGS = start_function("launcher")
_COUNTS = CallCounts()
LAUNCHER = Launcher(
    SETTINGS,
    JobStore(SETTINGS, firestore_client(SETTINGS), PubSubPublisher(SETTINGS), _COUNTS),
    VertexClient(SETTINGS, _COUNTS),
)
log = logging.getLogger("droptune.launcher")


@functions_framework.cloud_event
def handle_tune_request(cloud_event: CloudEvent) -> None:
    try:
        message = parse_pubsub_push(cloud_event["type"], cloud_event.data or {})
        request = parse_tune_request(message.json())
    except MalformedEventError as error:
        log.error(
            "malformed tune request dropped", extra=log_fields(event_id=cloud_event["id"], problem=str(error))
        )
        return
    with correlate(event_id=message.message_id):
        report = LAUNCHER.handle_request(request)
        log.info(
            "tune request handled",
            extra=log_fields(
                started=list(report.started), requeued=list(report.requeued), failed=list(report.failed)
            ),
        )
