"""HTTP routing of the Vertex AI REST surface the droptune flow uses.

Paths arrive under `/v1/`, `/v1beta1/` and (for long-running operation polls) `/ui/`, URL-encoded
(`text-bison%40002`), with `$alt=json;enum-encoding=int` from the aiplatform SDK; answers are JSON
with enums by name, errors in Google's `{"error": {code, message, status}}` shape.
"""

from __future__ import annotations

import json
import logging
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from vertex_standin.resources import ApiError
from vertex_standin.service import ENDPOINTS, JOB_COLLECTIONS, MODELS, ParsedName, StandinService

logger = logging.getLogger("vertex_standin")

_LOCATION = re.compile(r"^/(v1|v1beta1|ui)/projects/([^/]+)/locations/([^/:]+)(.*)$")
_COLLECTION = re.compile(r"^/(tuningJobs|pipelineJobs|models|endpoints|operations)(?:/([^/:]+))?(?::(\w+))?$")
_CHAT_COMPLETIONS = re.compile(r"^/endpoints/([^/:]+)/chat/completions$")
# A tuning job's experiment (see experiments.py): its Metadata context and TensorBoard series.
_CONTEXT = re.compile(r"^/metadataStores/default/contexts/([^/:]+)$")
_TENSORBOARD_RUNS = re.compile(r"^/tensorboards/([^/:]+)/experiments/([^/:]+)/runs$")
_TIME_SERIES = re.compile(r"^/tensorboards/([^/:]+)/experiments/([^/:]+)/runs/([^/:]+)/timeSeries$")
_BATCH_READ = re.compile(r"^/tensorboards/([^/:]+):batchRead$")
MAX_BODY_BYTES = 10 * 1024 * 1024


class Router:
    """Maps (method, path) to a service call; the lock keeps job transitions ordered."""

    def __init__(self, service: StandinService) -> None:
        self.service = service
        self.lock = service.lock

    def handle(self, method: str, raw_path: str, body: dict[str, Any]) -> dict[str, Any]:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        query = dict(pairs)
        if path == "/healthz":
            return {"status": "ok"}
        located = _LOCATION.match(path)
        if located is None:
            raise ApiError(5, f"The requested URL {path} was not found on this server.")
        version, project, location, rest = located.groups()
        parent = ParsedName(project, location, "", "")
        if rest == ":deploy" and method == "POST":
            with self.lock:
                return self.service.deploy(parent, body)
        chat = _CHAT_COMPLETIONS.match(rest)
        if chat is not None and method == "POST":
            return self.service.forward_to_endpoint(
                ParsedName(project, location, ENDPOINTS, chat.group(1)), "chat/completions", body
            )
        if method == "GET":
            experiment_answer = self._experiment_call(parent, rest, pairs)
            if experiment_answer is not None:
                return experiment_answer
        found = _COLLECTION.match(rest)
        if found is None:
            raise ApiError(5, f"The requested URL {path} was not found on this server.")
        collection, resource_id, action = found.groups()
        if resource_id is None:
            return self._collection_call(method, version, parent, collection, body=body, query=query)
        name = ParsedName(project, location, collection, resource_id)
        return self._resource_call(method, version, name, action, body)

    def _experiment_call(
        self, parent: ParsedName, rest: str, pairs: list[tuple[str, str]]
    ) -> dict[str, Any] | None:
        with self.lock:
            if (context := _CONTEXT.match(rest)) is not None:
                return self.service.get_experiment_context(parent, context.group(1))
            if (runs := _TENSORBOARD_RUNS.match(rest)) is not None:
                return self.service.list_tensorboard_runs(parent, *runs.groups())
            if (series := _TIME_SERIES.match(rest)) is not None:
                return self.service.list_time_series(parent, *series.groups())
            if (batch := _BATCH_READ.match(rest)) is not None:
                # A repeated query parameter; REST clients send the JSON name, `timeSeries`.
                names = [value for key, value in pairs if key in ("timeSeries", "time_series")]
                return self.service.batch_read_time_series(parent, batch.group(1), names)
        return None

    def _collection_call(
        self,
        method: str,
        version: str,
        parent: ParsedName,
        collection: str,
        *,
        body: dict[str, Any],
        query: dict[str, str],
    ) -> dict[str, Any]:
        if method == "GET" and collection in (*JOB_COLLECTIONS, MODELS, ENDPOINTS):
            with self.lock:
                return self.service.list_resources(parent, collection, query)
        if method == "POST" and collection == "tuningJobs":
            with self.lock:
                return self.service.create_tuning_job(parent, body)
        if method == "POST" and collection == "pipelineJobs":
            with self.lock:
                return self.service.create_pipeline_job(parent, body, version)
        raise ApiError(5, f"{method} {collection} is not supported by the stand-in.")

    def _resource_call(  # noqa: PLR0911 - a routing table: one return per route
        self, method: str, version: str, name: ParsedName, action: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        collection = name.collection
        if action is None and method == "GET":
            with self.lock:
                if collection in JOB_COLLECTIONS:
                    return self.service.get_job(name)
                if collection == "operations":
                    return self.service.get_operation(name)
                if collection == MODELS:
                    return self.service.get_model(name)
                return self.service.get_endpoint(name)
        if action is None and method == "DELETE" and collection == ENDPOINTS:
            with self.lock:
                return self.service.delete_endpoint(name)
        if method == "POST" and action == "cancel" and collection in JOB_COLLECTIONS:
            # Not under the lock: cancel_job takes it itself and releases it while it waits for the worker.
            return self.service.cancel_job(name)
        if method == "POST" and collection == ENDPOINTS:
            if action in ("undeploy", "undeployModel"):
                with self.lock:
                    return self.service.undeploy(name, body, version)
            if action in ("predict", "generateContent"):
                return self.service.forward_to_endpoint(name, action, body)
        raise ApiError(
            5, f"{method} {name.name}{':' + action if action else ''} is not supported by the stand-in."
        )


def build_server(host: str, port: int, service: StandinService) -> ThreadingHTTPServer:
    router = Router(service)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the SDKs poll on one connection

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            started = time.monotonic()
            try:
                answer = router.handle(method, self.path, self._body())
                status = HTTPStatus.OK
            except ApiError as error:
                status, answer = HTTPStatus(error.http_status), error.body()
            except Exception:  # one bad request must not take the server down; answer as Google does
                logger.exception("request failed: %s %s", method, self.path)
                internal = ApiError(13, "Internal error encountered.")
                status, answer = HTTPStatus(internal.http_status), internal.body()
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if not self.path.startswith("/healthz"):
                logger.info(
                    json.dumps(
                        {
                            "message": "request",
                            "method": method,
                            "path": self.path,
                            "status": int(status),
                            "ms": round(1000 * (time.monotonic() - started)),
                        }
                    )
                )

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise ApiError(3, f"Request body too large ({length} bytes).")
            raw = self.rfile.read(length) if length else b""
            if not raw.strip():
                return {}
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as error:
                raise ApiError(
                    3, f"Invalid JSON payload received. {error.msg} at position {error.pos}."
                ) from error
            if not isinstance(body, dict):
                raise ApiError(3, "Invalid JSON payload received: expected an object.")
            return body

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged as JSON in _serve

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
