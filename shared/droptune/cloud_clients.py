"""Google Cloud clients, created once per process, lazily, from the settings.

Production and the local stack differ only here, and only by configuration: with emulator hosts
set, the official clients talk to the emulators with anonymous credentials; without them they
use Application Default Credentials. No client is created at import time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud import firestore, pubsub_v1, storage  # type: ignore[attr-defined, unused-ignore]

    from droptune.settings import Settings


def _anonymous_credentials() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call, unused-ignore]


@functools.cache
def storage_client(settings: Settings) -> storage.Client:
    from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]

    if settings.storage_emulator_host:
        # The endpoint comes from the settings, not from whatever STORAGE_EMULATOR_HOST the process
        # holds at the moment the client is made; the credentials must not go looking for ADC.
        return storage.Client(
            project=settings.project,
            credentials=_anonymous_credentials(),
            client_options={"api_endpoint": settings.storage_emulator_host},
        )
    return storage.Client(project=settings.project)


@functools.cache
def firestore_client(settings: Settings) -> firestore.Client:
    from google.cloud import firestore

    if settings.firestore_emulator_host:
        return firestore.Client(
            project=settings.project,
            database=settings.firestore_database,
            credentials=_anonymous_credentials(),
        )
    return firestore.Client(project=settings.project, database=settings.firestore_database)


@functools.cache
def _publisher_client(settings: Settings) -> pubsub_v1.PublisherClient:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]

    if settings.pubsub_emulator_host:
        return pubsub_v1.PublisherClient(credentials=_anonymous_credentials())
    return pubsub_v1.PublisherClient()


class PubSubPublisher:
    """Publishes JSON bodies and waits for the server's acknowledgement, with a timeout."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def topic_path(self, topic: str) -> str:
        return f"projects/{self._settings.project}/topics/{topic}"

    def publish_json(self, topic: str, body: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        future = _publisher_client(self._settings).publish(self.topic_path(topic), data, **attributes)
        return str(future.result(timeout=self._settings.api_timeout_seconds))


@functools.cache
def init_vertex(settings: Settings) -> None:
    """Point the Vertex AI SDK at the configured endpoint, once per process.

    An `http://` endpoint is a local stand-in: the SDK needs the REST transport for plain HTTP
    and anonymous credentials, and keeps the scheme it is given.
    """
    import vertexai

    endpoint = settings.vertex_api_endpoint
    if endpoint and endpoint.startswith("http://"):
        vertexai.init(
            project=settings.project,
            location=settings.region,
            api_endpoint=endpoint,
            api_transport="rest",
            credentials=_anonymous_credentials(),
        )
        return
    vertexai.init(
        project=settings.project,
        location=settings.region,
        api_endpoint=endpoint,
        service_account=settings.tuning_service_account,
        encryption_spec_key_name=settings.kms_key_name,
    )
