"""Vertex AI resources as the REST API shows them, and the on-disk store that keeps them.

Resources are kept as the JSON the API returns (camelCase, enums by NAME, int64 as strings):
both SDKs accept that, and google-genai breaks on integer enums. Request bodies are parsed with
the aiplatform protobuf types so enums and int64s are accepted in either encoding, exactly as the
real service accepts them, and an unknown or malformed field is named in the 400.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any


class JobState(StrEnum):
    PENDING = "JOB_STATE_PENDING"
    QUEUED = "JOB_STATE_QUEUED"
    RUNNING = "JOB_STATE_RUNNING"
    SUCCEEDED = "JOB_STATE_SUCCEEDED"
    FAILED = "JOB_STATE_FAILED"
    CANCELLING = "JOB_STATE_CANCELLING"
    CANCELLED = "JOB_STATE_CANCELLED"


class PipelineState(StrEnum):
    QUEUED = "PIPELINE_STATE_QUEUED"
    PENDING = "PIPELINE_STATE_PENDING"
    RUNNING = "PIPELINE_STATE_RUNNING"
    SUCCEEDED = "PIPELINE_STATE_SUCCEEDED"
    FAILED = "PIPELINE_STATE_FAILED"
    CANCELLING = "PIPELINE_STATE_CANCELLING"
    CANCELLED = "PIPELINE_STATE_CANCELLED"


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        PipelineState.SUCCEEDED,
        PipelineState.FAILED,
        PipelineState.CANCELLED,
    }
)

# The job state a pipeline state corresponds to: one scheduler drives both kinds.
PIPELINE_STATE_OF_JOB_STATE = {
    JobState.PENDING: PipelineState.PENDING,
    JobState.QUEUED: PipelineState.QUEUED,
    JobState.RUNNING: PipelineState.RUNNING,
    JobState.SUCCEEDED: PipelineState.SUCCEEDED,
    JobState.FAILED: PipelineState.FAILED,
    JobState.CANCELLING: PipelineState.CANCELLING,
    JobState.CANCELLED: PipelineState.CANCELLED,
}

# AdapterSize enum name -> LoRA rank.
ADAPTER_RANKS = {
    "ADAPTER_SIZE_ONE": 1,
    "ADAPTER_SIZE_TWO": 2,
    "ADAPTER_SIZE_FOUR": 4,
    "ADAPTER_SIZE_EIGHT": 8,
    "ADAPTER_SIZE_SIXTEEN": 16,
    "ADAPTER_SIZE_THIRTY_TWO": 32,
}

# google.rpc.Code -> HTTP status, for the error shape the SDKs turn into exceptions.
RPC_STATUS = {
    3: ("INVALID_ARGUMENT", HTTPStatus.BAD_REQUEST),
    5: ("NOT_FOUND", HTTPStatus.NOT_FOUND),
    6: ("ALREADY_EXISTS", HTTPStatus.CONFLICT),
    8: ("RESOURCE_EXHAUSTED", HTTPStatus.TOO_MANY_REQUESTS),
    9: ("FAILED_PRECONDITION", HTTPStatus.BAD_REQUEST),
    10: ("ABORTED", HTTPStatus.CONFLICT),
    12: ("UNIMPLEMENTED", HTTPStatus.NOT_IMPLEMENTED),
    13: ("INTERNAL", HTTPStatus.INTERNAL_SERVER_ERROR),
    14: ("UNAVAILABLE", HTTPStatus.SERVICE_UNAVAILABLE),
}
INTERNAL_ERROR_MESSAGE = "Internal error encountered."


class ApiError(Exception):
    """An error answered in Google's `{"error": {code, message, status}}` shape."""

    def __init__(self, rpc_code: int, message: str) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.message = message

    @property
    def http_status(self) -> int:
        return int(RPC_STATUS[self.rpc_code][1])

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.http_status,
                "message": self.message,
                "status": RPC_STATUS[self.rpc_code][0],
            }
        }


def rpc_status(code: int, message: str) -> dict[str, Any]:
    """A google.rpc.Status as it appears in a resource's `error` field."""
    return {"code": code, "message": message}


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_body(body: dict[str, Any], message_type: Any, what: str) -> dict[str, Any]:
    """Validate a request body against an aiplatform proto type; return it normalised.

    Normalised means enums as names and int64 as strings, however the caller sent them.
    """
    from google.protobuf import json_format

    message = message_type.pb()()
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as error:
        raise ApiError(3, f"Invalid {what}: {error}") from error
    normalised: dict[str, Any] = json_format.MessageToDict(message)
    return normalised


@dataclass(frozen=True)
class StoredResource:
    """One resource: what the API shows, and what only the stand-in needs (worker, paths)."""

    collection: str
    resource_id: str
    resource: dict[str, Any]
    internal: dict[str, Any] = field(default_factory=dict)


class ResourceStore:
    """Resources in memory, each also written to `<state>/<collection>/<id>.json` so a restart keeps them."""

    def __init__(self, state_dir: Path) -> None:
        self._root = state_dir
        self._lock = threading.RLock()
        self._items: dict[tuple[str, str], StoredResource] = {}
        self._counter_file = state_dir / "next-id.json"
        state_dir.mkdir(parents=True, exist_ok=True)
        for file in sorted(state_dir.glob("*/*.json")):
            document = json.loads(file.read_text())
            stored = StoredResource(
                file.parent.name, file.stem, document["resource"], document.get("internal", {})
            )
            self._items[(stored.collection, stored.resource_id)] = stored
        self._next_id = (
            json.loads(self._counter_file.read_text())["next"] if self._counter_file.exists() else 1001
        )

    def new_id(self) -> str:
        with self._lock:
            value = self._next_id
            self._next_id += 1
            self._counter_file.write_text(json.dumps({"next": self._next_id}))
            # Vertex ids are long decimal strings; a prefix keeps them that shape.
            return f"{8_000_000_000 + value}"

    def put(self, stored: StoredResource) -> StoredResource:
        with self._lock:
            self._items[(stored.collection, stored.resource_id)] = stored
            folder = self._root / stored.collection
            folder.mkdir(exist_ok=True)
            scratch = folder / f".{stored.resource_id}.tmp"
            scratch.write_text(json.dumps({"resource": stored.resource, "internal": stored.internal}))
            scratch.replace(folder / f"{stored.resource_id}.json")
            return stored

    def get(self, collection: str, resource_id: str) -> StoredResource | None:
        with self._lock:
            return self._items.get((collection, resource_id))

    def require(self, collection: str, resource_id: str, name: str) -> StoredResource:
        stored = self.get(collection, resource_id)
        if stored is None:
            raise ApiError(5, f"The resource {name} was not found.")
        return stored

    def update(
        self, collection: str, resource_id: str, change: Callable[[StoredResource], StoredResource]
    ) -> StoredResource | None:
        """Apply `change` atomically with respect to other updates."""
        with self._lock:
            current = self._items.get((collection, resource_id))
            if current is None:
                return None
            return self.put(change(current))

    def delete(self, collection: str, resource_id: str) -> None:
        with self._lock:
            self._items.pop((collection, resource_id), None)
            (self._root / collection / f"{resource_id}.json").unlink(missing_ok=True)

    def all(self, collection: str) -> list[StoredResource]:
        with self._lock:
            return [s for (c, _), s in self._items.items() if c == collection]
