"""A small client for the Vertex AI REST calls the SDK only offers as blocking helpers.

Model Garden's deploy is a long-running operation; the SDK's `CustomModel.deploy()` waits for it,
which a function must never do (ARCHITECTURE decision 6). Here the deploy request is sent, the
operation's name kept, and the poller reads the operation on later ticks. The request bodies are
the documented JSON of `DeployRequest`, `PredictRequest` and `GenerateContentRequest`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from droptune.settings import Settings

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


# How long removing an endpoint follows one undeploy operation, and how often it asks.
UNDEPLOY_WAIT_S = 60.0
OPERATION_POLL_S = 2.0


class VertexApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"Vertex AI answered {status}: {message}")

    @property
    def transient(self) -> bool:
        return self.status in (408, 429, 500, 502, 503, 504)


def api_base(settings: Settings) -> str:
    if settings.vertex_api_endpoint:
        return settings.vertex_api_endpoint.rstrip("/")
    return f"https://{settings.region}-aiplatform.googleapis.com"


@functools.cache
def _session(settings: Settings) -> Any:
    from google.auth.transport.requests import AuthorizedSession

    if api_base(settings).startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        credentials: Any = AnonymousCredentials()  # type: ignore[no-untyped-call, unused-ignore]
    else:
        import google.auth

        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return AuthorizedSession(credentials)  # type: ignore[no-untyped-call, unused-ignore]


class VertexRest:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = api_base(settings)

    @property
    def parent(self) -> str:
        return f"projects/{self.settings.project}/locations/{self.settings.region}"

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = _session(self.settings).request(
            method, f"{self.base}/{path}", json=body, timeout=self.settings.api_timeout_seconds
        )
        try:
            payload: dict[str, Any] = response.json() if response.content else {}
        except ValueError:
            payload = {"error": {"message": response.text[:500]}}
        if response.status_code >= 400:
            error = payload.get("error") or {}
            raise VertexApiError(response.status_code, str(error.get("message") or response.reason))
        return payload

    def deploy_checkpoint(
        self,
        gcs_uri: str,
        *,
        display_name: str,
        machine_type: str,
        accelerator_type: str,
        accelerator_count: int,
    ) -> str:
        """Start a Model Garden deployment of a checkpoint folder; return the operation's name."""
        body = deploy_request(
            gcs_uri,
            display_name=display_name,
            machine_type=machine_type,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
        )
        operation = self._call("POST", f"v1beta1/{self.parent}:deploy", body)
        return str(operation["name"])

    def get_operation(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"v1beta1/{name}")

    def find_endpoints(self, display_name: str) -> list[dict[str, Any]]:
        found = self._call("GET", f"v1/{self.parent}/endpoints?filter=display_name%3D%22{display_name}%22")
        return list(found.get("endpoints") or [])

    def predict(self, endpoint: str, instances: list[dict[str, Any]]) -> list[Any]:
        answer = self._call("POST", f"v1/{endpoint}:predict", {"instances": instances})
        return list(answer.get("predictions") or [])

    def chat(self, endpoint: str, prompt: str, *, max_tokens: int, temperature: float = 0.0) -> str:
        """The OpenAI-compatible chat completions route of a Model Garden endpoint: the model's
        chat template is applied, as it was in tuning on a chat dataset."""
        answer = self._call(
            "POST",
            f"v1/{endpoint}/chat/completions",
            {
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": temperature,
            },
        )
        choices = answer.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content", ""))

    def generate_content(self, endpoint: str, prompt: str) -> str:
        answer = self._call(
            "POST",
            f"v1/{endpoint}:generateContent",
            {"contents": [{"role": "user", "parts": [{"text": prompt}]}]},
        )
        candidates = answer.get("candidates") or [{}]
        parts = (candidates[0].get("content") or {}).get("parts") or [{}]
        return str(parts[0].get("text", ""))

    def remove_endpoint(self, endpoint: str) -> None:
        """Undeploy every model of an endpoint, then delete it: nothing left billing.

        Undeploying is a long-running operation on Vertex AI, and an endpoint that still holds a
        model refuses deletion, so each undeploy is followed to its end first (bounded: past the
        bound a transient error asks the caller to try again later).
        """
        described = self._call("GET", f"v1/{endpoint}")
        for deployed in described.get("deployedModels") or []:
            operation = self._call(
                "POST", f"v1/{endpoint}:undeployModel", {"deployedModelId": deployed["id"]}
            )
            self._wait_until_done(operation, UNDEPLOY_WAIT_S)
        self._call("DELETE", f"v1/{endpoint}")

    def _wait_until_done(self, operation: Mapping[str, Any], limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not operation.get("done"):
            if time.monotonic() >= deadline:
                raise VertexApiError(504, f"{operation.get('name')} was not done after {limit_s:.0f} s")
            time.sleep(OPERATION_POLL_S)
            operation = self.get_operation(str(operation["name"]))
        error = operation.get("error")
        if error:
            # google.rpc codes 4, 10, 13, 14 (deadline, aborted, internal, unavailable) may pass.
            status = 503 if error.get("code") in (4, 10, 13, 14) else 400
            raise VertexApiError(status, str(error.get("message") or error))


def deploy_request(
    gcs_uri: str, *, display_name: str, machine_type: str, accelerator_type: str, accelerator_count: int
) -> dict[str, Any]:
    """The JSON of Model Garden's `DeployRequest` for a custom (tuned) model (M1.9)."""
    return {
        "customModel": {"gcsUri": gcs_uri},
        "modelConfig": {"modelDisplayName": display_name},
        "endpointConfig": {"endpointDisplayName": display_name},
        "deployConfig": {
            "dedicatedResources": {
                "machineSpec": {
                    "machineType": machine_type,
                    "acceleratorType": accelerator_type,
                    "acceleratorCount": accelerator_count,
                },
                "minReplicaCount": 1,
                "maxReplicaCount": 1,
            }
        },
    }
