"""Creating the messaging topology and the buckets on the local emulators, idempotently.

Everything comes from `droptune.topology.TOPOLOGY`, the same declaration the Terraform mirrors,
so the local stack and a real project have the same topics, subscriptions and dead-letter
policies, name for name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping

from droptune.topology import TOPOLOGY, Topology

log = logging.getLogger(__name__)

API_TIMEOUT_S = 10.0


def push_endpoint(function_url: str, project: str, topic: str) -> str:
    # functions-framework takes the CloudEvent `source` from the URL path: with this path the
    # event it builds says which topic the message came from, as Eventarc's would.
    return f"{function_url}/projects/{project}/topics/{topic}"


def provision_pubsub(
    emulator_host: str,
    project: str,
    function_urls: Mapping[str, str],
    topology: Topology = TOPOLOGY,
) -> None:
    """Create every topic and subscription; existing ones are left as they are.

    The emulator is reached through channels made here rather than through PUBSUB_EMULATOR_HOST:
    changing the environment of the calling process would unplug its other clients (a test
    session that starts a second stack beside its own, say) from the emulator they use.
    """
    import grpc
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]
    from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    publisher = pubsub_v1.PublisherClient(
        transport=PublisherGrpcTransport(channel=grpc.insecure_channel(emulator_host))
    )
    subscriber = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(emulator_host))
    )
    try:
        for topic in topology.topics:
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(
                    request={"name": publisher.topic_path(project, topic.name)}, timeout=API_TIMEOUT_S
                )
        for push in topology.push_subscriptions:
            request = {
                "name": subscriber.subscription_path(project, push.name),
                "topic": publisher.topic_path(project, push.topic),
                "ack_deadline_seconds": push.ack_deadline_seconds,
                "push_config": {
                    "push_endpoint": push_endpoint(function_urls[push.service], project, push.topic)
                },
                "dead_letter_policy": {
                    "dead_letter_topic": publisher.topic_path(project, push.dead_letter_topic),
                    "max_delivery_attempts": push.max_delivery_attempts,
                },
                "retry_policy": {
                    "minimum_backoff": {"seconds": push.minimum_backoff_seconds},
                    "maximum_backoff": {"seconds": push.maximum_backoff_seconds},
                },
                "filter": push.filter,
            }
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(request=request, timeout=API_TIMEOUT_S)
        for pull in topology.pull_subscriptions:
            with contextlib.suppress(AlreadyExists):
                subscriber.create_subscription(
                    request={
                        "name": subscriber.subscription_path(project, pull.name),
                        "topic": publisher.topic_path(project, pull.topic),
                        "message_retention_duration": {"seconds": pull.message_retention_seconds},
                    },
                    timeout=API_TIMEOUT_S,
                )
    finally:
        subscriber.close()
        publisher.transport.close()


def create_bucket(storage_url: str, project: str, bucket: str) -> None:
    """Create a bucket on fake-gcs-server through the JSON API (409 = it exists already)."""
    request = urllib.request.Request(  # noqa: S310 - a loopback URL we built
        f"{storage_url}/storage/v1/b?project={project}",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S):  # noqa: S310
            pass
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise
