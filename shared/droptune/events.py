"""The envelope of everything droptune publishes: CloudEvents 1.0, structured mode.

The whole event (specversion, id, source, type, subject, time, data) is the JSON body of the
Pub/Sub message, so any CloudEvents SDK reads it. A few fields are copied into Pub/Sub attributes
so that subscription filters can select events without reading bodies, e.g.
`attributes.type = "droptune.job.succeeded" AND attributes.base_model = "meta/llama3_1@llama-3.1-8b"`.

Event ids are derived from what happened (type, subject, and a discriminator such as the new
state), so the same fact published twice carries the same id and subscribers can deduplicate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

SPEC_VERSION = "1.0"
# The version of droptune's event data schemas (docs/events/); bumped on incompatible change.
DATA_SCHEMA_VERSION = "1"
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"

EVENT_TYPES = frozenset(
    {
        "droptune.dataset.validated",
        "droptune.dataset.rejected",
        "droptune.job.queued",
        "droptune.job.awaiting_approval",
        "droptune.job.launched",
        "droptune.job.state_changed",
        "droptune.job.succeeded",
        "droptune.job.failed",
        "droptune.job.cancelled",
        "droptune.job.stalled",
        "droptune.model.deployed",
        "droptune.deploy.failed",
    }
)

# Data fields that become Pub/Sub attributes when present, for subscription filters.
FILTER_ATTRIBUTES = ("job_id", "dataset_id", "base_model", "state", "tuning_mode")


@dataclass(frozen=True)
class CloudEvent:
    type: str
    source: str
    subject: str
    id: str
    time: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
            "dataschema": f"https://droptune.dev/schemas/v{DATA_SCHEMA_VERSION}/{self.type}.json",
            "data": dict(self.data),
        }

    def attributes(self) -> dict[str, str]:
        attributes = {
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "id": self.id,
            "specversion": SPEC_VERSION,
            "content-type": CONTENT_TYPE,
            "schema_version": DATA_SCHEMA_VERSION,
        }
        for name in FILTER_ATTRIBUTES:
            value = self.data.get(name)
            if isinstance(value, str) and value:
                attributes[name] = value
        return attributes


def make_event(
    event_type: str,
    *,
    source: str,
    subject: str,
    data: Mapping[str, Any],
    discriminator: str = "",
    now: datetime | None = None,
) -> CloudEvent:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; known: {sorted(EVENT_TYPES)}")
    digest = hashlib.sha256("\x1f".join((event_type, subject, discriminator)).encode()).hexdigest()
    return CloudEvent(
        type=event_type,
        source=source,
        subject=subject,
        id=digest[:32],
        time=(now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        data=data,
    )


def parse_event(body: bytes) -> CloudEvent:
    """Read a droptune event back from a message body (subscribers and tests)."""
    payload = json.loads(body)
    if payload.get("specversion") != SPEC_VERSION:
        raise ValueError(f"not a CloudEvents {SPEC_VERSION} event")
    return CloudEvent(
        type=payload["type"],
        source=payload["source"],
        subject=payload.get("subject", ""),
        id=payload["id"],
        time=payload.get("time", ""),
        data=payload.get("data") or {},
    )


class Publisher(Protocol):
    def publish_json(self, topic: str, body: Mapping[str, Any], attributes: Mapping[str, str]) -> str: ...


def publish_event(publisher: Publisher, topic: str, event: CloudEvent) -> str:
    """Publish one event and wait for the server's message id (raises so the caller is retried)."""
    return publisher.publish_json(topic, event.to_json(), event.attributes())
