"""Vertex AI calls of the launcher and the poller: create, find by label, get, cancel, and the
reads of a tuning job's experiment (its Metadata context and TensorBoard time series).

Create, list and cancel go through google-cloud-aiplatform's generated clients (REST transport, so
the same code reaches `https://REGION-aiplatform.googleapis.com` and a local `http://` stand-in).
Get reads the job's REST JSON with an authorised session instead: the generated types of the
installed library lag the API (no `tuningJobState`, the detail state of a running job) and drop
every field they do not know, while the poller wants all of them. One GET per job per tick, the
same call either way.

Errors are sorted once, here: a quota error (429 / RESOURCE_EXHAUSTED) re-queues, a transient one
(unavailable, timeout, 5xx, IAM propagation) is retried, anything else is permanent.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from droptune.jobs import errors
from droptune.jobs.record import JOB_ID_LABEL
from droptune.jobs.vertex_requests import VertexKind, VertexRequest
from droptune.settings import Settings

API_VERSION = "v1beta1"  # customBaseModel and outputUri of tuning jobs are v1beta1 fields
_TRANSIENT_CODES = frozenset(
    {errors.UNAVAILABLE, errors.DEADLINE_EXCEEDED, errors.INTERNAL, errors.ABORTED, errors.CANCELLED}
)


class VertexError(Exception):
    """A failed Vertex AI call, with its google.rpc.Code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class QuotaExceededError(VertexError):
    """429 / RESOURCE_EXHAUSTED: the job waits for a slot, it never fails for this (M1.11)."""


class TransientVertexError(VertexError):
    """Worth retrying as is: the service was unreachable, slow, or briefly inconsistent."""


class PermanentVertexError(VertexError):
    """The request itself is refused; retrying it unchanged would fail again."""


@dataclass
class CallCounts:
    """Calls made by one poller tick or launch, for its log line and the benchmark."""

    vertex_calls: int = 0
    firestore_reads: int = 0
    firestore_writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, vertex: int = 0, reads: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.vertex_calls += vertex
            self.firestore_reads += reads
            self.firestore_writes += writes

    def as_dict(self) -> dict[str, int]:
        return {
            "vertex_calls": self.vertex_calls,
            "firestore_reads": self.firestore_reads,
            "firestore_writes": self.firestore_writes,
        }


class VertexJobs(Protocol):
    def create(self, request: VertexRequest) -> dict[str, Any]: ...
    def find_by_label(self, kind: VertexKind, region: str, job_id: str) -> dict[str, Any] | None: ...
    def get(self, name: str) -> dict[str, Any]: ...
    def cancel(self, name: str) -> None: ...
    def get_context(self, name: str) -> dict[str, Any]: ...
    def list_tensorboard_runs(self, tensorboard_experiment: str) -> list[dict[str, Any]]: ...
    def list_time_series(self, run: str) -> list[dict[str, Any]]: ...
    def batch_read_time_series(self, tensorboard: str, names: list[str]) -> list[dict[str, Any]]: ...


def classify(code: int, message: str) -> VertexError:
    """The exception class of a failed call, from its google.rpc.Code and message."""
    category = errors.categorize(code, message)
    if category.category is errors.ErrorCategory.QUOTA:
        return QuotaExceededError(code, message)
    if code in _TRANSIENT_CODES or (
        category.category is errors.ErrorCategory.PERMISSIONS and category.retryable
    ):
        return TransientVertexError(code, message)
    return PermanentVertexError(code, message)


def kind_of(name: str) -> VertexKind:
    return "pipelineJobs" if "/pipelineJobs/" in name else "tuningJobs"


def region_of(name: str) -> str:
    parts = name.split("/")
    return parts[parts.index("locations") + 1]


class VertexClient:
    """The real thing: google-cloud-aiplatform clients per region, one session for GETs."""

    def __init__(self, settings: Settings, counts: CallCounts | None = None, *, pool_size: int = 16) -> None:
        self.settings = settings
        self.counts = counts or CallCounts()
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._session: Any = None

    # --- calls ------------------------------------------------------------------------------

    def create(self, request: VertexRequest) -> dict[str, Any]:
        from google.protobuf import json_format

        parent = f"projects/{self.settings.project}/locations/{request.region}"
        self.counts.add(vertex=1)
        if request.kind == "tuningJobs":
            from google.cloud.aiplatform_v1beta1.types import TuningJob

            tuning_job = TuningJob.pb(TuningJob())
            json_format.ParseDict(request.body, tuning_job)
            created = self._call(
                lambda: self._tuning_client(request.region).create_tuning_job(
                    parent=parent, tuning_job=tuning_job, timeout=self.settings.api_timeout_seconds
                )
            )
            return _as_json(created)
        from google.cloud.aiplatform_v1beta1.types import PipelineJob

        pipeline_job = PipelineJob.pb(PipelineJob())
        json_format.ParseDict(request.body, pipeline_job)
        created = self._call(
            lambda: self._pipeline_client(request.region).create_pipeline_job(
                parent=parent, pipeline_job=pipeline_job, timeout=self.settings.api_timeout_seconds
            )
        )
        return _as_json(created)

    def find_by_label(self, kind: VertexKind, region: str, job_id: str) -> dict[str, Any] | None:
        """The Vertex job carrying droptune's job id label, if one was created (AIP-160 filter)."""
        parent = f"projects/{self.settings.project}/locations/{region}"
        label_filter = f'labels.{JOB_ID_LABEL}="{job_id}"'
        self.counts.add(vertex=1)
        if kind == "tuningJobs":
            pager = self._call(
                lambda: self._tuning_client(region).list_tuning_jobs(
                    request={"parent": parent, "filter": label_filter},
                    timeout=self.settings.api_timeout_seconds,
                )
            )
            found = [_as_json(job) for job in self._call(lambda: list(pager))]
        else:
            pager = self._call(
                lambda: self._pipeline_client(region).list_pipeline_jobs(
                    request={"parent": parent, "filter": label_filter},
                    timeout=self.settings.api_timeout_seconds,
                )
            )
            found = [_as_json(job) for job in self._call(lambda: list(pager))]
        # The filter is applied by the service; checking again costs nothing and guards a
        # service that ignored it.
        mine = [job for job in found if (job.get("labels") or {}).get(JOB_ID_LABEL) == job_id]
        mine.sort(key=lambda job: str(job.get("createTime", "")))
        return dict(mine[0]) if mine else None

    def get(self, name: str) -> dict[str, Any]:
        self.counts.add(vertex=1)
        url = f"{self._base_url(region_of(name))}/{API_VERSION}/{name}"
        try:
            response = self._authorized_session().get(url, timeout=self.settings.api_timeout_seconds)
        except Exception as error:  # requests' and google-auth's transport errors alike: retry later
            raise TransientVertexError(errors.UNAVAILABLE, f"GET {name}: {error}") from error
        if response.status_code != 200:
            raise classify(errors.rpc_code_of_http(response.status_code), _error_message(response))
        body: dict[str, Any] = response.json()
        return body

    def cancel(self, name: str) -> None:
        self.counts.add(vertex=1)
        region = region_of(name)
        if kind_of(name) == "tuningJobs":
            self._call(
                lambda: self._tuning_client(region).cancel_tuning_job(
                    name=name, timeout=self.settings.api_timeout_seconds
                )
            )
        else:
            self._call(
                lambda: self._pipeline_client(region).cancel_pipeline_job(
                    name=name, timeout=self.settings.api_timeout_seconds
                )
            )

    # --- a tuning job's experiment (experiment_metrics.py): Metadata and TensorBoard reads ------

    def get_context(self, name: str) -> dict[str, Any]:
        """metadataStores.contexts.get: an experiment's context, its metadata included."""
        self.counts.add(vertex=1)
        context = self._call(
            lambda: _client(self, "metadata", region_of(name)).get_context(
                name=name, timeout=self.settings.api_timeout_seconds
            )
        )
        return _as_json(context)

    def list_tensorboard_runs(self, tensorboard_experiment: str) -> list[dict[str, Any]]:
        self.counts.add(vertex=1)
        client = _client(self, "tensorboard", region_of(tensorboard_experiment))
        pager = self._call(
            lambda: client.list_tensorboard_runs(
                request={"parent": tensorboard_experiment, "page_size": 1000},
                timeout=self.settings.api_timeout_seconds,
            )
        )
        return [_as_json(run) for run in self._call(lambda: list(pager))]

    def list_time_series(self, run: str) -> list[dict[str, Any]]:
        self.counts.add(vertex=1)
        client = _client(self, "tensorboard", region_of(run))
        pager = self._call(
            lambda: client.list_tensorboard_time_series(
                request={"parent": run, "page_size": 1000}, timeout=self.settings.api_timeout_seconds
            )
        )
        return [_as_json(series) for series in self._call(lambda: list(pager))]

    def batch_read_time_series(self, tensorboard: str, names: list[str]) -> list[dict[str, Any]]:
        """tensorboards.batchRead: the points of up to 1,000 scalars per series, in one call."""
        self.counts.add(vertex=1)
        answer = self._call(
            lambda: _client(
                self, "tensorboard", region_of(tensorboard)
            ).batch_read_tensorboard_time_series_data(
                request={"tensorboard": tensorboard, "time_series": names},
                timeout=self.settings.api_timeout_seconds,
            )
        )
        return [dict(item) for item in _as_json(answer).get("timeSeriesData", [])]

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, call: Any) -> Any:
        from google.api_core import exceptions as api_exceptions

        try:
            return call()
        except api_exceptions.GoogleAPICallError as error:
            status = error.code if isinstance(error.code, int) else 500
            raise classify(errors.rpc_code_of_http(status), str(error.message)) from error
        except api_exceptions.RetryError as error:
            raise TransientVertexError(errors.DEADLINE_EXCEEDED, str(error)) from error
        except (OSError, TimeoutError) as error:  # connection refused or reset, socket timeouts
            raise TransientVertexError(errors.UNAVAILABLE, str(error)) from error

    def _endpoint(self, region: str) -> str:
        return self.settings.vertex_api_endpoint or f"{region}-aiplatform.googleapis.com"

    def _base_url(self, region: str) -> str:
        endpoint = self._endpoint(region)
        return endpoint if endpoint.startswith(("http://", "https://")) else f"https://{endpoint}"

    def _credentials(self) -> Any:
        # init_vertex decides the credentials from the settings (anonymous for a local http://
        # stand-in, Application Default Credentials otherwise); reuse its choice.
        from google.cloud.aiplatform import initializer

        from droptune.cloud_clients import init_vertex

        init_vertex(self.settings)
        return initializer.global_config.credentials

    def _tuning_client(self, region: str) -> Any:
        return _client(self, "tuning", region)

    def _pipeline_client(self, region: str) -> Any:
        return _client(self, "pipeline", region)

    def _authorized_session(self) -> Any:
        with self._lock:
            if self._session is None:
                import requests.adapters
                from google.auth.transport.requests import AuthorizedSession

                session = AuthorizedSession(self._credentials())  # type: ignore[no-untyped-call, unused-ignore]
                adapter = requests.adapters.HTTPAdapter(
                    pool_connections=4, pool_maxsize=self._pool_size, max_retries=0
                )
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._session = session
            return self._session


@functools.lru_cache(maxsize=32)
def _cached_client(kind: str, endpoint: str, credentials_id: int, credentials: Any) -> Any:
    del credentials_id  # part of the key only
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1beta1

    client_class = {
        "tuning": aiplatform_v1beta1.GenAiTuningServiceClient,
        "pipeline": aiplatform_v1beta1.PipelineServiceClient,
        "metadata": aiplatform_v1beta1.MetadataServiceClient,
        "tensorboard": aiplatform_v1beta1.TensorboardServiceClient,
    }[kind]
    return client_class(
        credentials=credentials, transport="rest", client_options=ClientOptions(api_endpoint=endpoint)
    )


def _client(vertex: VertexClient, kind: str, region: str) -> Any:
    credentials = vertex._credentials()
    return _cached_client(kind, vertex._endpoint(region), id(credentials), credentials)


def _as_json(message: Any) -> dict[str, Any]:
    """A proto-plus answer of a generated client as its REST JSON (camelCase, zeros left out)."""
    from google.protobuf import json_format

    return dict(json_format.MessageToDict(type(message).pb(message)))


def _error_message(response: Any) -> str:
    try:
        body: Mapping[str, Any] = response.json()
        return str(body.get("error", {}).get("message") or json.dumps(body))
    except ValueError:
        return str(response.text)[:500]
