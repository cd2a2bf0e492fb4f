"""Removing an endpoint follows each undeploy operation before deleting (issue 6 §3; M1.9).

Vertex AI answers undeployModel with a long-running operation and refuses to delete an endpoint
that still holds a model. The stand-in finishes its operations at once, so the waiting is checked
here against scripted answers in the documented Operation shape.
"""

from __future__ import annotations

from typing import Any

import pytest

from droptune import vertex_rest
from droptune.settings import Settings
from droptune.vertex_rest import VertexApiError, VertexRest

ENDPOINT = "projects/p/locations/us-central1/endpoints/42"
OPERATION = f"{ENDPOINT}/operations/9"
SETTINGS = Settings.from_environ(
    {"DROPTUNE_PROJECT": "my-project-123", "DROPTUNE_DATASETS_BUCKET": "my-datasets"}
)


class ScriptedVertex(VertexRest):
    """The real client with its HTTP call replaced by answers in the order Vertex AI gives them."""

    def __init__(self, operation_polls: list[dict[str, Any]]) -> None:
        self.settings = SETTINGS
        self.calls: list[tuple[str, str]] = []
        self.polls = list(operation_polls)

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path))
        if method == "GET" and path == f"v1/{ENDPOINT}":
            return {"name": ENDPOINT, "deployedModels": [{"id": "7"}]}
        if path.endswith(":undeployModel"):
            return {"name": OPERATION, "done": False}
        if method == "GET" and "/operations/" in path:
            return self.polls.pop(0)
        return {}


@pytest.fixture(autouse=True)
def no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vertex_rest, "OPERATION_POLL_S", 0.0)


def test_the_endpoint_is_deleted_only_after_its_undeploy_is_done() -> None:
    vertex = ScriptedVertex([{"name": OPERATION, "done": False}, {"name": OPERATION, "done": True}])
    vertex.remove_endpoint(ENDPOINT)
    methods = [method for method, _ in vertex.calls]
    assert methods == ["GET", "POST", "GET", "GET", "DELETE"]
    assert vertex.calls[-1] == ("DELETE", f"v1/{ENDPOINT}")


def test_a_failed_undeploy_stops_before_the_delete_and_says_why() -> None:
    failed = {"name": OPERATION, "done": True, "error": {"code": 9, "message": "model is being updated"}}
    vertex = ScriptedVertex([failed])
    with pytest.raises(VertexApiError, match="model is being updated") as raised:
        vertex.remove_endpoint(ENDPOINT)
    assert not raised.value.transient
    assert ("DELETE", f"v1/{ENDPOINT}") not in vertex.calls


def test_an_undeploy_still_running_after_the_bound_is_a_transient_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vertex_rest, "UNDEPLOY_WAIT_S", 0.0)
    vertex = ScriptedVertex([{"name": OPERATION, "done": False}] * 3)
    with pytest.raises(VertexApiError) as raised:
        vertex.remove_endpoint(ENDPOINT)
    assert raised.value.transient
    assert ("DELETE", f"v1/{ENDPOINT}") not in vertex.calls
