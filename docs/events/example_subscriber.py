"""Print droptune's events as they happen: a filtered subscription and a streaming pull.

    python docs/events/example_subscriber.py --project my-project --type droptune.job.succeeded \
        --type droptune.model.deployed

Creates (once) a subscription on `droptune-events` whose filter lets only the given types through,
so Pub/Sub drops the others before they are delivered (and billed), then reads each message as a
CloudEvent. Against the local stack, `eval "$(droptune env)"` first: the client then talks to the
Pub/Sub emulator. Needs only `google-cloud-pubsub` and `cloudevents`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence

from cloudevents.http import CloudEvent, from_json
from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1

EVENTS_TOPIC = "droptune-events"
# Delivered at least once: a subscriber that acts on events deduplicates on the CloudEvent id,
# which droptune derives from what happened, so a republished fact keeps its id.
SEEN_LIMIT = 10_000


def subscription_filter(types: Sequence[str], base_model: str | None = None) -> str:
    """A Pub/Sub filter on droptune's message attributes; a filter is at most 256 bytes
    (https://cloud.google.com/pubsub/docs/subscription-message-filter)."""
    clauses = []
    if types:
        clauses.append("(" + " OR ".join(f'attributes.type = "{t}"' for t in types) + ")")
    if base_model:
        clauses.append(f'attributes.base_model = "{base_model}"')
    return " AND ".join(clauses)


def ensure_subscription(project: str, name: str, filter_: str) -> str:
    """Create the subscription if it does not exist. A filter cannot be changed afterwards:
    use another subscription name for another filter."""
    path = pubsub_v1.SubscriberClient.subscription_path(project, name)
    topic = pubsub_v1.PublisherClient.topic_path(project, EVENTS_TOPIC)
    with pubsub_v1.SubscriberClient() as subscriber, contextlib.suppress(AlreadyExists):
        subscriber.create_subscription(
            request={"name": path, "topic": topic, "filter": filter_, "ack_deadline_seconds": 60},
            timeout=30,
        )
    return str(path)


def describe(event: CloudEvent) -> str:
    data = event.data or {}
    line = f"{event['time']} {event['type']} {event['subject']}"
    if event["type"] == "droptune.job.succeeded":
        line += (
            f" checkpoint={data.get('final_checkpoint_uri')} billable_tokens={data.get('billable_tokens')}"
        )
    elif event["type"] == "droptune.model.deployed":
        line += f" endpoint={data.get('endpoint')} answer={data.get('sample_answer')!r}"
    elif "error" in data:
        error = data["error"] or {}
        line += f" [{error.get('category')}] {error.get('message')} -> {error.get('remedy')}"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--subscription", default="droptune-example-subscriber")
    parser.add_argument("--type", action="append", default=[], help="an event type; repeat for more")
    parser.add_argument("--base-model", help="only events about this base model")
    parser.add_argument("--json", action="store_true", help="print each event as JSON")
    args = parser.parse_args(argv)

    path = ensure_subscription(
        args.project, args.subscription, subscription_filter(args.type, args.base_model)
    )
    seen: dict[str, None] = {}

    def on_message(message: pubsub_v1.subscriber.message.Message) -> None:
        try:
            event = from_json(message.data)
        except Exception as error:  # noqa: BLE001 - not a CloudEvent: say so and drop it
            print(f"not a CloudEvent ({error}); dropped", file=sys.stderr)
            message.ack()
            return
        # Filters are an optimisation, not a guarantee: Pub/Sub emulators before Cloud SDK 555
        # accept a filter and deliver everything, so the types are checked here too.
        wanted = not args.type or event["type"] in args.type
        if wanted and event["id"] not in seen:
            seen[event["id"]] = None
            if len(seen) > SEEN_LIMIT:
                seen.pop(next(iter(seen)))
            print(json.dumps(json.loads(message.data)) if args.json else describe(event), flush=True)
        message.ack()

    with pubsub_v1.SubscriberClient() as subscriber:
        future = subscriber.subscribe(path, callback=on_message)
        print(f"listening on {path}; Ctrl-C to stop", file=sys.stderr)
        try:
            future.result()
        except KeyboardInterrupt:
            future.cancel()
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
