"""The deployer function: receives job.succeeded events."""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from droptune.jsonlog import log_fields
from droptune.runtime import start_function

SETTINGS = start_function("deployer")
log = logging.getLogger("droptune.deployer")


@functions_framework.cloud_event
def handle_job_succeeded(cloud_event: CloudEvent) -> None:
    log.info("message received", extra=log_fields(event_id=cloud_event["id"], source=cloud_event["source"]))
