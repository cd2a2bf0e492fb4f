"""The validator function: a dataset lands in the bucket, it is validated and sent on (M1.3-M1.5, M4.2).

Triggered by the bucket's OBJECT_FINALIZE notification through the `dataset-uploads` push
subscription, or by an Eventarc `google.cloud.storage.object.v1.finalized` event.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from droptune.cloud_clients import PubSubPublisher, firestore_client, storage_client
from droptune.envelopes import MalformedEventError, parse_storage_event
from droptune.intake import Intake
from droptune.jsonlog import log_fields
from droptune.runtime import start_function

SETTINGS = start_function("validator")
INTAKE = Intake(SETTINGS, storage_client(SETTINGS), firestore_client(SETTINGS), PubSubPublisher(SETTINGS))
log = logging.getLogger("droptune.validator")


@functions_framework.cloud_event
def handle_dataset_upload(cloud_event: CloudEvent) -> None:
    try:
        event = parse_storage_event(cloud_event["type"], cloud_event["id"], cloud_event.data or {})
    except MalformedEventError as error:
        # Retrying cannot fix a message we cannot read: acknowledge it, and say so.
        log.error("malformed event dropped", extra=log_fields(event_id=cloud_event["id"], problem=str(error)))
        return
    if event.kind != "finalize":
        log.info("storage event ignored", extra=log_fields(kind=event.kind, object=event.object.uri))
        return
    INTAKE.handle(event.object, event.event_id)
