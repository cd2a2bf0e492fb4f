"""The deployer function: a job succeeded, its final checkpoint is deployed (M1.9, M1.10, M2.4).

Receives `droptune.job.succeeded` events through the `deployer-job-succeeded` push subscription
(filtered on the type attribute). It only starts the deployment; the poller follows it.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from droptune.cloud_clients import PubSubPublisher, firestore_client
from droptune.deployment import Deployer, StoreTransitions
from droptune.envelopes import MalformedEventError, parse_pubsub_push
from droptune.events import parse_event
from droptune.jobs.state_machine import JobStore
from droptune.jsonlog import correlate, log_fields
from droptune.runtime import start_function
from droptune.vertex_rest import VertexRest

SETTINGS = start_function("deployer")
DEPLOYER = Deployer(
    SETTINGS,
    StoreTransitions(JobStore(SETTINGS, firestore_client(SETTINGS), PubSubPublisher(SETTINGS))),
    VertexRest(SETTINGS),
)
log = logging.getLogger("droptune.deployer")


@functions_framework.cloud_event
def handle_job_succeeded(cloud_event: CloudEvent) -> None:
    try:
        message = parse_pubsub_push(cloud_event["type"], cloud_event.data or {})
        event = parse_event(message.data)
    except (MalformedEventError, ValueError, KeyError) as error:
        # Retrying cannot fix a message we cannot read: acknowledge it, and say so.
        log.error("malformed event dropped", extra=log_fields(event_id=cloud_event["id"], problem=str(error)))
        return
    if event.type != "droptune.job.succeeded":  # the subscription filters; this is the backstop
        log.info("event ignored", extra=log_fields(type=event.type))
        return
    with correlate(event_id=event.id):
        outcome = DEPLOYER.start(event.data)
        log.info("deployer done", extra=log_fields(outcome=outcome))
