"""The launcher function: receives tune requests."""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from droptune.jsonlog import log_fields
from droptune.runtime import start_function

SETTINGS = start_function("launcher")
log = logging.getLogger("droptune.launcher")


@functions_framework.cloud_event
def handle_tune_request(cloud_event: CloudEvent) -> None:
    log.info("message received", extra=log_fields(event_id=cloud_event["id"], source=cloud_event["source"]))
