"""Helpers shared by the tests that run against the local stack."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


def wait_for(
    probe: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll until `probe()` returns something truthy; fail the test naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or probe}")


@dataclass
class EventTap:
    """A pull subscription on the events topic, as any subscriber would make one."""

    subscriber: Any
    path: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def drain(self) -> list[dict[str, Any]]:
        from google.api_core.exceptions import DeadlineExceeded

        try:
            response = self.subscriber.pull(
                request={"subscription": self.path, "max_messages": 100}, timeout=5
            )
        except DeadlineExceeded:
            return self.received
        if response.received_messages:
            self.subscriber.acknowledge(
                request={
                    "subscription": self.path,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        for message in response.received_messages:
            body = json.loads(message.message.data)
            body["_attributes"] = dict(message.message.attributes)
            self.received.append(body)
        return self.received

    def of(self, subject_contains: str) -> list[dict[str, Any]]:
        return [e for e in self.drain() if subject_contains in json.dumps(e.get("data", {}))]

    def wait(self, event_type: str, match: str, timeout: float = 60.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            for event in self.of(match):
                if event["type"] == event_type:
                    return event
            return None

        result: dict[str, Any] = wait_for(probe, timeout=timeout, what=f"{event_type} for {match}")
        return result


@contextlib.contextmanager
def topic_tap(project: str, topic: str) -> Iterator[EventTap]:
    """Messages published on `topic` from now on, through a pull subscription of the caller's own."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient(credentials=AnonymousCredentials())
    path = subscriber.subscription_path(project, f"test-{topic}-{uuid.uuid4().hex[:10]}")
    subscriber.create_subscription(
        request={"name": path, "topic": f"projects/{project}/topics/{topic}"}, timeout=10
    )
    try:
        yield EventTap(subscriber, path)
    finally:
        subscriber.delete_subscription(request={"subscription": path}, timeout=10)
        subscriber.close()


def chat_lines(count: int, *, topic: str = "greeting") -> str:
    """A small valid chat dataset (the format of M1.3) as JSONL text."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say something about {topic} number {i}."},
                {"role": "assistant", "content": f"Here is {topic} number {i}."},
            ]
        }
        for i in range(count)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows)
