"""The event catalog: what each droptune event means, and its JSON Schema (M4.4, decision 7).

Every event type in `droptune.events.EVENT_TYPES` has a schema in `droptune/event_schemas/`
(draft 2020-12, the whole CloudEvent with its `data`) and a one-line description here, which the
docs (`docs/events/`) and the command-line tool show. `validate_event` checks an event as it goes
on the wire, so tests can hold every publisher to its schema.

`jsonschema` is imported only when an event is validated: the functions import this module for
`EVENT_CATALOG` without needing it installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from droptune import topology
from droptune.events import DATA_SCHEMA_VERSION, EVENT_TYPES

SCHEMA_PACKAGE = "droptune.event_schemas"
COMMON_SCHEMA = "common"
SCHEMA_BASE_URL = f"https://droptune.dev/schemas/v{DATA_SCHEMA_VERSION}/"


@dataclass(frozen=True)
class CatalogEntry:
    event_type: str
    publisher: str
    summary: str
    topic: str = topology.EVENTS


def _entries(*entries: CatalogEntry) -> dict[str, CatalogEntry]:
    return {entry.event_type: entry for entry in entries}


EVENT_CATALOG: Mapping[str, CatalogEntry] = _entries(
    CatalogEntry(
        "droptune.dataset.validated",
        "validator",
        "A dropped dataset passed validation; carries its job id, resolved options and token estimate.",
    ),
    CatalogEntry(
        "droptune.dataset.rejected",
        "validator",
        "A dropped dataset or its options failed validation; carries the first errors with remedies.",
    ),
    CatalogEntry(
        "droptune.job.queued",
        "launcher",
        "A tuning job was accepted and waits for a free slot of the concurrency limit.",
    ),
    CatalogEntry(
        "droptune.job.awaiting_approval",
        "launcher",
        "A job's estimated billable tokens exceed the budget; it waits for `droptune jobs approve`.",
    ),
    CatalogEntry(
        "droptune.job.launched",
        "launcher",
        "The Vertex AI tuning job was created; carries its resource name.",
    ),
    CatalogEntry(
        "droptune.job.state_changed",
        "poller",
        "A job moved to another droptune or Vertex AI state; carries the metrics so far.",
    ),
    CatalogEntry(
        "droptune.job.succeeded",
        "poller",
        "Tuning finished; carries the final checkpoint, tuned model, metrics and billable tokens.",
    ),
    CatalogEntry(
        "droptune.job.failed",
        "launcher, poller",
        "A job failed at launch, in Vertex AI or at a guard; carries the categorised error and remedy.",
    ),
    CatalogEntry(
        "droptune.job.cancelled",
        "poller",
        "A job was cancelled; nothing will be deployed.",
    ),
    CatalogEntry(
        "droptune.job.stalled",
        "poller",
        "A job's state has not moved for longer than the stall threshold (a warning, not a failure).",
    ),
    CatalogEntry(
        "droptune.model.deployed",
        "deployer, poller",
        "The tuned model is deployed and answered a smoke prediction; carries endpoint and latency.",
    ),
    CatalogEntry(
        "droptune.deploy.failed",
        "deployer, poller",
        "Deploying or smoke-testing failed; carries the categorised error and whether the endpoint is gone.",
    ),
)


class UnknownEventTypeError(KeyError):
    pass


def schema_url(event_type: str) -> str:
    """The `dataschema` of an event type, which is also its schema's `$id`."""
    return f"{SCHEMA_BASE_URL}{event_type}.json"


@cache
def _read_schema(name: str) -> dict[str, Any]:
    text = files(SCHEMA_PACKAGE).joinpath(f"{name}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type (a copy: callers may change it freely)."""
    if event_type not in EVENT_TYPES:
        raise UnknownEventTypeError(f"unknown event type {event_type!r}; known: {sorted(EVENT_TYPES)}")
    return json.loads(json.dumps(_read_schema(event_type)))  # type: ignore[no-any-return]


def load_common_schema() -> dict[str, Any]:
    return json.loads(json.dumps(_read_schema(COMMON_SCHEMA)))  # type: ignore[no-any-return]


@cache
def _validator(event_type: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    common = _read_schema(COMMON_SCHEMA)
    registry: Registry[Any] = Registry().with_resource(common["$id"], Resource.from_contents(common))
    return Draft202012Validator(
        _read_schema(event_type),
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def validate_event(envelope: Mapping[str, Any]) -> list[str]:
    """Problems of one event as published (`CloudEvent.to_json()`), each naming its JSON path.

    An empty list means the event matches the schema of its `type`, e.g.
    `["$.data.error.category: 'oops' is not one of ['user_data', ...]"]` when it does not.
    """
    if not isinstance(envelope, Mapping):
        return [f"$: an event is a JSON object, not {type(envelope).__name__}"]
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        return [f"$.type: unknown event type {event_type!r}; known: {sorted(EVENT_TYPES)}"]
    errors = _validator(event_type).iter_errors(dict(envelope))
    problems = {f"{error.json_path}: {error.message}" for error in errors}
    return sorted(problems)
