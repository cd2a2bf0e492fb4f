"""Typed models of what arrives at a function's edge, parsed once, keeping the wire names.

Two deliveries carry a storage upload: a Pub/Sub message from a bucket notification (the default
wiring, the same locally and in the cloud) and an Eventarc `google.cloud.storage.object.v1.finalized`
event. Both end up as one `StorageObjectEvent`. Anything that does not parse raises
`MalformedEventError`: a permanent condition that the function logs and acknowledges, because
redelivering it would never succeed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"

# Bucket notification event types: https://cloud.google.com/storage/docs/pubsub-notifications#events
_NOTIFICATION_KINDS = {
    "OBJECT_FINALIZE": "finalize",
    "OBJECT_DELETE": "delete",
    "OBJECT_METADATA_UPDATE": "metadata_update",
    "OBJECT_ARCHIVE": "archive",
}
StorageEventKind = Literal["finalize", "delete", "metadata_update", "archive"]


class MalformedEventError(ValueError):
    """The event cannot be understood; retrying it would not help."""


@dataclass(frozen=True)
class PubSubMessage:
    data: bytes
    attributes: Mapping[str, str]
    message_id: str
    publish_time: str | None = None
    delivery_attempt: int | None = None
    subscription: str | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MalformedEventError(f"message {self.message_id} does not carry JSON: {error}") from None


@dataclass(frozen=True)
class StorageObject:
    bucket: str
    name: str
    generation: str
    size: int
    content_type: str | None = None
    md5_hash: str | None = None
    crc32c: str | None = None
    time_created: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> StorageObject:
        try:
            bucket, name = str(payload["bucket"]), str(payload["name"])
            generation = str(payload["generation"])
        except KeyError as missing:
            raise MalformedEventError(f"storage object without {missing.args[0]!r}") from None
        metadata = payload.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise MalformedEventError("storage object metadata is not a map")
        return cls(
            bucket=bucket,
            name=name,
            generation=generation,
            size=int(payload.get("size") or 0),
            content_type=payload.get("contentType"),
            md5_hash=payload.get("md5Hash"),
            crc32c=payload.get("crc32c"),
            time_created=payload.get("timeCreated"),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )


@dataclass(frozen=True)
class StorageObjectEvent:
    kind: StorageEventKind
    object: StorageObject
    event_id: str
    event_time: str | None


def parse_pubsub_push(cloud_event_type: str, data: Mapping[str, Any]) -> PubSubMessage:
    """The `message` of a Pub/Sub push delivery, as functions-framework hands it over."""
    if cloud_event_type != PUBSUB_PUBLISHED:
        raise MalformedEventError(f"expected a {PUBSUB_PUBLISHED} event, got {cloud_event_type}")
    message = data.get("message")
    if not isinstance(message, dict):
        raise MalformedEventError("Pub/Sub push body without a message")
    try:
        payload = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEventError("Pub/Sub message data is not base64") from None
    attributes = message.get("attributes") or {}
    attempt = data.get("deliveryAttempt") or message.get("deliveryAttempt")
    return PubSubMessage(
        data=payload,
        attributes={str(k): str(v) for k, v in attributes.items()},
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        publish_time=message.get("publishTime") or message.get("publish_time"),
        delivery_attempt=int(attempt) if attempt else None,
        subscription=data.get("subscription"),
    )


def parse_storage_event(cloud_event_type: str, event_id: str, data: Mapping[str, Any]) -> StorageObjectEvent:
    """A storage event from either wiring: a bucket notification over Pub/Sub, or Eventarc."""
    if cloud_event_type == STORAGE_FINALIZED:
        return StorageObjectEvent("finalize", StorageObject.from_json(data), event_id, data.get("updated"))
    message = parse_pubsub_push(cloud_event_type, data)
    event_type = message.attributes.get("eventType")
    if event_type not in _NOTIFICATION_KINDS:
        raise MalformedEventError(f"not a Cloud Storage notification (eventType={event_type!r})")
    if message.attributes.get("payloadFormat", "JSON_API_V1") != "JSON_API_V1":
        raise MalformedEventError(
            "bucket notification without a JSON payload: configure payload format JSON_API_V1"
        )
    payload = message.json()
    if not isinstance(payload, dict):
        raise MalformedEventError("bucket notification payload is not an object")
    kind: StorageEventKind = _NOTIFICATION_KINDS[event_type]  # type: ignore[assignment]
    return StorageObjectEvent(
        kind, StorageObject.from_json(payload), message.message_id, message.attributes.get("eventTime")
    )
