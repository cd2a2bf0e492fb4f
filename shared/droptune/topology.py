"""The messaging topology: every topic and subscription droptune needs, declared once.

The local stack creates exactly these, and the Terraform in `infra/` mirrors them name for name
(a test parses the HCL and compares). Functions are reached by push subscriptions in both places,
so a dead-letter topic and a bounded number of delivery attempts apply to every function: a poison
message ends up parked on a dead-letter topic instead of being retried forever.
"""

from __future__ import annotations

from dataclasses import dataclass

# Pub/Sub allows 5..100 delivery attempts before dead-lettering; 5 covers a transient outage
# of a few minutes with backoff without letting a broken message loop for long.
# https://cloud.google.com/pubsub/docs/handling-failures#dead_letter_topic
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5


@dataclass(frozen=True)
class Topic:
    name: str
    purpose: str


@dataclass(frozen=True)
class PushSubscription:
    """A subscription that pushes each message to one function."""

    name: str
    topic: str
    service: str
    dead_letter_topic: str
    max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS
    # Long enough for the slowest handler (the validator streaming a 1 GB file is bounded by the
    # function timeout, not by this: push deliveries use the request's own deadline).
    ack_deadline_seconds: int = 60
    filter: str = ""
    minimum_backoff_seconds: int = 10
    maximum_backoff_seconds: int = 600


@dataclass(frozen=True)
class PullSubscription:
    """A subscription nobody pushes from: it keeps messages until someone reads them."""

    name: str
    topic: str
    purpose: str
    message_retention_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class Topology:
    topics: tuple[Topic, ...]
    push_subscriptions: tuple[PushSubscription, ...]
    pull_subscriptions: tuple[PullSubscription, ...]

    def topic_names(self) -> list[str]:
        return [topic.name for topic in self.topics]

    def subscription_names(self) -> list[str]:
        return [s.name for s in self.push_subscriptions] + [s.name for s in self.pull_subscriptions]

    def subscriptions_of(self, service: str) -> list[PushSubscription]:
        return [s for s in self.push_subscriptions if s.service == service]


DATASET_UPLOADS = "dataset-uploads"
TUNE_REQUESTS = "tune-requests"
EVENTS = "droptune-events"
POLLER_TICKS = "poller-ticks"
JOB_CONTROL = "job-control"

SERVICES = ("validator", "launcher", "poller", "deployer")


def _dead_letter(subscription: str) -> str:
    return f"{subscription}-dead-letter"


def _push(
    name: str,
    topic: str,
    service: str,
    *,
    ack_deadline_seconds: int,
    max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS,
    minimum_backoff_seconds: int = 10,
    maximum_backoff_seconds: int = 600,
    filter: str = "",
) -> PushSubscription:
    return PushSubscription(
        name=name,
        topic=topic,
        service=service,
        dead_letter_topic=_dead_letter(name),
        max_delivery_attempts=max_delivery_attempts,
        ack_deadline_seconds=ack_deadline_seconds,
        filter=filter,
        minimum_backoff_seconds=minimum_backoff_seconds,
        maximum_backoff_seconds=maximum_backoff_seconds,
    )


_PUSH_SUBSCRIPTIONS = (
    _push("validator-dataset-uploads", DATASET_UPLOADS, "validator", ack_deadline_seconds=600),
    _push("launcher-tune-requests", TUNE_REQUESTS, "launcher", ack_deadline_seconds=120),
    # A tick that fails is simply superseded by the next one: few attempts, short backoff.
    _push(
        "poller-ticks",
        POLLER_TICKS,
        "poller",
        ack_deadline_seconds=300,
        max_delivery_attempts=5,
        minimum_backoff_seconds=10,
        maximum_backoff_seconds=60,
    ),
    _push("poller-job-control", JOB_CONTROL, "poller", ack_deadline_seconds=120),
    # The deployer only cares about successful jobs; the filter keeps it from being woken by
    # every other event (the function checks the type again: filters are an optimisation).
    _push(
        "deployer-job-succeeded",
        EVENTS,
        "deployer",
        ack_deadline_seconds=120,
        filter='attributes.type = "droptune.job.succeeded"',
    ),
)

TOPOLOGY = Topology(
    topics=(
        Topic(DATASET_UPLOADS, "Cloud Storage OBJECT_FINALIZE notifications of the datasets bucket"),
        Topic(TUNE_REQUESTS, "validated datasets with resolved options, one message per tuning job"),
        Topic(EVENTS, "every droptune event (CloudEvents 1.0); subscribe with attribute filters"),
        Topic(POLLER_TICKS, "scheduler ticks that wake the poller"),
        Topic(JOB_CONTROL, "commands for running jobs (cancel)"),
        *(Topic(s.dead_letter_topic, f"messages {s.service} could not process") for s in _PUSH_SUBSCRIPTIONS),
    ),
    push_subscriptions=_PUSH_SUBSCRIPTIONS,
    pull_subscriptions=tuple(
        PullSubscription(
            f"{s.dead_letter_topic}-hold", s.dead_letter_topic, f"keeps what {s.service} gave up on"
        )
        for s in _PUSH_SUBSCRIPTIONS
    ),
)
