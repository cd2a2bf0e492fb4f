"""Deploying a tuned model: start on `job.succeeded`, follow on poller ticks, prove it answers.

The deployer only starts the Model Garden deployment (an operation) and records its name; the
poller calls `follow_deployment` on each tick until the operation ends. Then a smoke prediction
runs, and only when the endpoint answers is `model.deployed` published. A failed deployment
publishes `deploy.failed` and removes the endpoint made for it, so nothing is left billing.

Idempotent: the job moves succeeded → deploying in one transaction, so a repeated `job.succeeded`
finds the job deploying and does nothing; the endpoint's display name is derived from the job id,
so a deployer that died between the deploy call and the record finds its endpoint again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from droptune.catalog import SMALL_SERVING, ServingShape, UnknownModelError, get_model
from droptune.jsonlog import correlate, log_fields
from droptune.settings import Settings
from droptune.vertex_rest import VertexApiError, VertexRest

log = logging.getLogger(__name__)

SMOKE_PROMPT = "Hello! In one short sentence, what can you do?"
SMOKE_MAX_TOKENS = 48
# A deployment that has not finished in this long is given up, and its endpoint removed.
DEPLOY_TIMEOUT_S = 3 * 3600


class DeploymentError(Exception):
    def __init__(self, category: str, message: str, remedy: str) -> None:
        self.category = category
        self.message = message
        self.remedy = remedy
        super().__init__(message)

    def to_dict(self) -> dict[str, str]:
        return {"category": self.category, "message": self.message, "remedy": self.remedy}


class JobTransitions(Protocol):
    """The job state machine, as the deployer uses it (implemented in `droptune.jobs`)."""

    def begin_deploy(self, job_id: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """succeeded/deploy_failed → deploying; None when the job is not in such a state."""
        ...

    def update_deploy(self, job_id: str, fields: Mapping[str, Any]) -> None: ...

    def note_not_deployed(self, job_id: str, reason: str) -> None: ...

    def finish_deploy(
        self, job_id: str, *, deployed: bool, fields: Mapping[str, Any], event_data: Mapping[str, Any]
    ) -> bool:
        """deploying → deployed | deploy_failed, publishing model.deployed | deploy.failed once."""
        ...


@dataclass(frozen=True)
class DeployTarget:
    shape: ServingShape | None  # None: Vertex serves it itself (translation, PaLM, Gemini)
    reason: str


def serving_target(base_model: str, settings: Settings) -> DeployTarget | None:
    """Where a job's model goes, by the `DROPTUNE_DEPLOY` setting; None: not deployed."""
    if settings.deploy_policy == "never":
        return None
    try:
        spec = get_model(base_model)
    except UnknownModelError:
        return None
    if spec.serving is None:
        return DeployTarget(None, "Vertex AI deployed it with the tuning job")
    if settings.deploy_policy == "shape-from-catalog":
        return DeployTarget(spec.serving, f"the catalog's shape for {base_model} ({spec.serving.basis})")
    return DeployTarget(SMALL_SERVING, "the default shape, g2-standard-12 with one NVIDIA L4 (M1.9)")


def preflight_problem(base_model: str, settings: Settings) -> str | None:
    """Why a model cannot be served as configured, before any money is spent (issue 6 §2)."""
    if settings.deploy_policy != "auto":
        return None
    try:
        spec = get_model(base_model)
    except UnknownModelError:
        return None
    serving = spec.serving
    if serving is None or (serving.machine_type, serving.accelerator_type, serving.accelerator_count) == (
        SMALL_SERVING.machine_type,
        SMALL_SERVING.accelerator_type,
        SMALL_SERVING.accelerator_count,
    ):
        return None
    return (
        f"{base_model} cannot be served on one NVIDIA L4 (g2-standard-12); it needs "
        f"{serving.accelerator_count} x {serving.accelerator_type} on {serving.machine_type}. "
        "Set DROPTUNE_DEPLOY=shape-from-catalog to deploy on that shape, or DROPTUNE_DEPLOY=never "
        "to tune without deploying."
    )


def endpoint_display_name(job_id: str) -> str:
    return f"droptune-{job_id}"


class Deployer:
    def __init__(self, settings: Settings, jobs: JobTransitions, vertex: VertexRest) -> None:
        self.settings = settings
        self.jobs = jobs
        self.vertex = vertex

    def start(self, job_event: Mapping[str, Any]) -> str:
        """React to `job.succeeded`: start a deployment. Returns what was done, for logs/tests."""
        job_id = str(job_event["job_id"])
        with correlate(job_id=job_id):
            target = serving_target(str(job_event.get("base_model")), self.settings)
            if target is None:
                reason = f"DROPTUNE_DEPLOY={self.settings.deploy_policy}"
                self.jobs.note_not_deployed(job_id, reason)
                log.info("not deployed", extra=log_fields(reason=reason))
                return "not-deployed"
            claimed = self.jobs.begin_deploy(
                job_id,
                {
                    "deployment": {
                        "started_at": datetime.now(UTC).isoformat(),
                        "reason": target.reason,
                        "shape": _shape_dict(target.shape),
                        "operation": None,
                        "endpoint": None,
                    }
                },
            )
            if claimed is None:
                log.info("deployment already started or job not succeeded; nothing to do")
                return "duplicate"
            if target.shape is None:
                # Vertex made the endpoint itself; the poller runs the smoke prediction.
                endpoint = (claimed.get("tuned_model") or {}).get("endpoint")
                self.jobs.update_deploy(job_id, {"deployment.endpoint": endpoint, "deployment.managed": True})
                return "managed"
            checkpoint = claimed.get("final_checkpoint_uri") or job_event.get("final_checkpoint_uri")
            if not checkpoint:
                self._fail(
                    claimed,
                    DeploymentError(
                        "internal",
                        "the job succeeded without a final checkpoint URI",
                        "Check the tuning job's output folder; deploy the checkpoint by hand.",
                    ),
                    endpoint=None,
                )
                return "failed"
            existing = self.vertex.find_endpoints(endpoint_display_name(job_id))
            if existing:
                # A deployer died after the deploy call: adopt that endpoint, make no second one.
                self.jobs.update_deploy(job_id, {"deployment.endpoint": existing[0]["name"]})
                return "adopted"
            operation = self.vertex.deploy_checkpoint(
                str(checkpoint),
                display_name=endpoint_display_name(job_id),
                machine_type=target.shape.machine_type,
                accelerator_type=target.shape.accelerator_type,
                accelerator_count=target.shape.accelerator_count,
            )
            self.jobs.update_deploy(
                job_id, {"deployment.operation": operation, "deployment.checkpoint_uri": checkpoint}
            )
            log.info("deployment started", extra=log_fields(operation=operation, checkpoint=checkpoint))
            return "started"

    def follow(self, job: Mapping[str, Any]) -> str:
        """One poller look at a deploying job. Returns "waiting", "deployed" or "failed"."""
        job_id = str(job["job_id"])
        deployment = dict(job.get("deployment") or {})
        with correlate(job_id=job_id):
            endpoint = deployment.get("endpoint")
            operation_name = deployment.get("operation")
            if not endpoint and operation_name:
                operation = self.vertex.get_operation(str(operation_name))
                if not operation.get("done"):
                    if _age_seconds(deployment.get("started_at")) > DEPLOY_TIMEOUT_S:
                        self._fail(
                            job,
                            DeploymentError(
                                "capacity",
                                "the deployment did not finish in 3 hours",
                                "Check L4 capacity in the region; try another region.",
                            ),
                            endpoint=self._endpoint_by_name(job_id),
                        )
                        return "failed"
                    return "waiting"
                if "error" in operation:
                    error = operation["error"]
                    self._fail(job, _categorise(error), endpoint=self._endpoint_by_name(job_id))
                    return "failed"
                endpoint = (operation.get("response") or {}).get("endpoint")
            if not endpoint:
                if _age_seconds(deployment.get("started_at")) > 600:
                    self._fail(
                        job,
                        DeploymentError(
                            "internal",
                            "no deployment operation was recorded",
                            "Deploy again with: droptune jobs redeploy JOB.",
                        ),
                        endpoint=self._endpoint_by_name(job_id),
                    )
                    return "failed"
                return "waiting"
            return self._smoke_and_finish(job, deployment, str(endpoint))

    def _smoke_and_finish(self, job: Mapping[str, Any], deployment: Mapping[str, Any], endpoint: str) -> str:
        started = time.perf_counter()
        try:
            if deployment.get("managed"):
                answer = self.vertex.generate_content(endpoint, SMOKE_PROMPT)
            elif (job.get("stats") or {}).get("format") == "chat_messages":
                # Tuned on conversations: ask through the chat template it learned them with.
                answer = self.vertex.chat(endpoint, SMOKE_PROMPT, max_tokens=SMOKE_MAX_TOKENS)
            else:
                predictions = self.vertex.predict(
                    endpoint, [{"prompt": SMOKE_PROMPT, "max_tokens": SMOKE_MAX_TOKENS, "temperature": 0}]
                )
                answer = str(predictions[0]) if predictions else ""
        except VertexApiError as error:
            if error.transient:
                raise
            self._fail(
                job,
                DeploymentError(
                    "internal",
                    f"the smoke prediction failed: {error.message}",
                    "Read the endpoint's logs; the endpoint was removed.",
                ),
                endpoint=endpoint,
            )
            return "failed"
        latency_ms = round((time.perf_counter() - started) * 1000)
        shape = deployment.get("shape") or {}
        data = {
            **_job_identity(job),
            "checkpoint_uri": deployment.get("checkpoint_uri") or job.get("final_checkpoint_uri"),
            "endpoint": endpoint,
            "model": (job.get("tuned_model") or {}).get("model"),
            "machine_type": shape.get("machine_type"),
            "accelerator_type": shape.get("accelerator_type"),
            "accelerator_count": shape.get("accelerator_count"),
            "sample_prompt": SMOKE_PROMPT,
            "sample_answer": answer,
            "latency_ms": latency_ms,
            "metrics": job.get("metrics") or {},
        }
        self.jobs.finish_deploy(
            str(job["job_id"]),
            deployed=True,
            fields={
                "deployment.endpoint": endpoint,
                "deployment.sample_answer": answer,
                "deployment.latency_ms": latency_ms,
                "deployment.deployed_at": datetime.now(UTC).isoformat(),
                "endpoint": endpoint,
            },
            event_data=data,
        )
        log.info("model deployed", extra=log_fields(endpoint=endpoint, latency_ms=latency_ms))
        return "deployed"

    def _endpoint_by_name(self, job_id: str) -> str | None:
        found = self.vertex.find_endpoints(endpoint_display_name(job_id))
        return str(found[0]["name"]) if found else None

    def _fail(self, job: Mapping[str, Any], error: DeploymentError, *, endpoint: str | None) -> None:
        removed = False
        if endpoint:
            try:
                self.vertex.remove_endpoint(endpoint)
                removed = True
            except VertexApiError as cleanup:
                log.error("endpoint not removed", extra=log_fields(endpoint=endpoint, problem=str(cleanup)))
        self.jobs.finish_deploy(
            str(job["job_id"]),
            deployed=False,
            fields={"error": error.to_dict(), "deployment.endpoint_removed": removed},
            event_data={
                **_job_identity(job),
                "checkpoint_uri": (job.get("deployment") or {}).get("checkpoint_uri")
                or job.get("final_checkpoint_uri"),
                "endpoint": endpoint,
                "endpoint_removed": removed,
                "error": error.to_dict(),
            },
        )
        log.warning("deployment failed", extra=log_fields(error=error.to_dict(), endpoint_removed=removed))


def _job_identity(job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job.get("job_id"),
        "dataset_id": job.get("dataset_id"),
        "dataset_uri": job.get("dataset_uri"),
        "md5_hash": job.get("md5_hash"),
        "base_model": job.get("base_model"),
        "tuning_mode": job.get("tuning_mode"),
    }


def _shape_dict(shape: ServingShape | None) -> dict[str, Any] | None:
    if shape is None:
        return None
    return {
        "machine_type": shape.machine_type,
        "accelerator_type": shape.accelerator_type,
        "accelerator_count": shape.accelerator_count,
    }


def _categorise(error: Mapping[str, Any]) -> DeploymentError:
    code = int(error.get("code") or 13)
    message = str(error.get("message") or "deployment failed")
    if code == 8:
        return DeploymentError(
            "quota", message, "Request more NVIDIA L4 quota for the region, or undeploy a model."
        )
    if code == 7:
        return DeploymentError(
            "permissions", message, "Grant the deployer's service account roles/aiplatform.user."
        )
    if code in (3, 5, 9):
        return DeploymentError(
            "user_data", message, "Check that the checkpoint folder exists and holds a complete model."
        )
    return DeploymentError(
        "internal", message, "Try again later; if it persists, deploy the checkpoint by hand."
    )


def _age_seconds(started_at: object) -> float:
    if not isinstance(started_at, str):
        return 0.0
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(started_at)).total_seconds()
    except ValueError:
        return 0.0


class StoreTransitions:
    """`JobTransitions` over the job state machine (`droptune.jobs.state_machine.JobStore`)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def begin_deploy(self, job_id: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        from droptune.jobs.record import JobState

        # Only from succeeded: a repeated job.succeeded finds the job deploying (or beyond) and
        # stops here. Redeploying after deploy_failed is a person's decision, not a redelivery's.
        result = self.store.transition(
            job_id,
            expected=JobState.SUCCEEDED,
            to=JobState.DEPLOYING,
            fields=fields,
            reason="deployer started",
        )
        return dict(result.document) if result is not None else None

    def update_deploy(self, job_id: str, fields: Mapping[str, Any]) -> None:
        from droptune.jobs.record import JobState

        self.store.update_fields(job_id, fields, expected=JobState.DEPLOYING)

    def note_not_deployed(self, job_id: str, reason: str) -> None:
        from droptune.jobs.record import JobState

        self.store.update_fields(job_id, {"deployment": {"skipped": reason}}, expected=JobState.SUCCEEDED)

    def finish_deploy(
        self, job_id: str, *, deployed: bool, fields: Mapping[str, Any], event_data: Mapping[str, Any]
    ) -> bool:
        from droptune.jobs.record import JobState
        from droptune.jobs.state_machine import EventSpec

        result = self.store.transition(
            job_id,
            expected=JobState.DEPLOYING,
            to=JobState.DEPLOYED if deployed else JobState.DEPLOY_FAILED,
            fields=fields,
            event=EventSpec("droptune.model.deployed" if deployed else "droptune.deploy.failed", event_data),
            reason="smoke prediction answered" if deployed else "deployment failed",
        )
        return result is not None


def follow_deployment(job_document: Mapping[str, Any], context: Any) -> str:
    """The poller's hook: one look at a deploying job (context: `droptune.jobs.poller.PollContext`)."""
    deployer = Deployer(context.settings, StoreTransitions(context.store), VertexRest(context.settings))
    return deployer.follow(job_document)
