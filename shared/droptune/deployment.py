"""Deploying a tuned model: start on `job.succeeded`, follow on poller ticks, prove it answers.

The deployer only starts the Model Garden deployment (an operation) and records its name; the
poller calls `follow_deployment` on each tick until the operation ends. Then a smoke prediction
runs, and only when the endpoint answers is `model.deployed` published. A failed deployment
publishes `deploy.failed` and removes the endpoint made for it, so nothing is left billing.

Idempotent: the job moves succeeded → deploying in one transaction, so a repeated `job.succeeded`
never deploys twice. A deployer can still die between the deploy call and recording its
operation; the endpoint's display name is derived from the job id (`droptune-<job id>`), so
whoever looks next (the redelivered `job.succeeded` or the poller) finds that endpoint by name and
adopts it. Only when no such endpoint exists once the last attempt can no longer be in flight is
the deployment sent again, under an atomic claim, a bounded number of times.

An endpoint that cannot be removed after a failure is not forgotten: the job stays `deploying`
with `deployment.cleanup` naming it, each poller tick tries again (bounded), and `deploy.failed`
is published once, when the removal has succeeded or been given up (and then says so).
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
# The `predict` instance of M1.10. Greedy (temperature 0, top_k 1) so the sample answer is
# reproducible; raw_response: Model Garden's vLLM server otherwise echoes the prompt around it.
SMOKE_INSTANCE: dict[str, Any] = {
    "prompt": SMOKE_PROMPT,
    "max_tokens": SMOKE_MAX_TOKENS,
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 1,
    "raw_response": True,
}
# A deployment that has not finished in this long is given up, and its endpoint removed.
DEPLOY_TIMEOUT_S = 3 * 3600
# How long a deploy attempt may still be in flight: longer than the deployer function may run
# (110 s, infra/locals.tf) and than an accepted deploy takes to make its endpoint listable. Until
# then, finding no endpoint by name means "not yet", not "never".
ATTEMPT_IN_FLIGHT_S = 600
# Deploy calls per job, the first included; each later one only after the one before left nothing.
MAX_DEPLOY_ATTEMPTS = 3
# Poller ticks that try to remove an endpoint left by a failed deployment (every 5 minutes by
# default, so about an hour) before deploy.failed says it is still there. Undeploying is an
# operation of its own: deleting the endpoint is refused until it has ended, so a first try often
# fails and a later tick succeeds.
CLEANUP_ATTEMPTS = 12


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

    def current(self, job_id: str) -> dict[str, Any] | None:
        """The job document as stored now; None when there is no such job."""
        ...

    def claim_attempt(self, job_id: str, attempt: int, fields: Mapping[str, Any]) -> bool:
        """Atomically write `fields` if deploy attempt `attempt` is still open to take
        (`attempt_is_open`); False when another process took it or the job moved on."""
        ...

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
            now = datetime.now(UTC).isoformat()
            claimed = self.jobs.begin_deploy(
                job_id,
                {
                    "deployment": {
                        "started_at": now,
                        "reason": target.reason,
                        "shape": _shape_dict(target.shape),
                        "operation": None,
                        "endpoint": None,
                        "attempts": 1,
                        "attempt_at": now,
                    }
                },
            )
            if claimed is None:
                return self._on_redelivery(job_id)
            if target.shape is None:
                # Vertex made the endpoint itself; the poller runs the smoke prediction.
                endpoint = (claimed.get("tuned_model") or {}).get("endpoint")
                self.jobs.update_deploy(job_id, {"deployment.endpoint": endpoint, "deployment.managed": True})
                return "managed"
            checkpoint = claimed.get("final_checkpoint_uri") or job_event.get("final_checkpoint_uri")
            if not checkpoint:
                return self._fail(
                    claimed,
                    DeploymentError(
                        "internal",
                        "the job succeeded without a final checkpoint URI",
                        f"Check the tuning job's output folder (droptune jobs show {job_id}); "
                        "deploy the checkpoint by hand.",
                    ),
                    endpoint=None,
                )
            if self._adopt(job_id):
                # Only a deployment of this very job has that name: never make a second endpoint.
                return "adopted"
            return self._deploy(claimed, _shape_dict(target.shape) or {}, str(checkpoint))

    def _on_redelivery(self, job_id: str) -> str:
        """`job.succeeded` again, for a job already claimed: finish what a deployer that died
        between its deploy call and recording the operation left undone."""
        from droptune.jobs.record import JobState

        job = self.jobs.current(job_id)
        if job is None or job.get("state") != JobState.DEPLOYING.value:
            log.info("deployment already started or job not succeeded; nothing to do")
            return "duplicate"
        deployment = job.get("deployment") or {}
        if deployment.get("operation") or deployment.get("endpoint") or deployment.get("cleanup"):
            log.info("deployment already under way; the poller follows it")
            return "duplicate"
        outcome = self._recover(job)
        # "waiting": the first attempt may still be in flight, or there is nothing left to try;
        # the poller decides that on a later tick, so this delivery is done either way.
        return outcome if outcome in ("adopted", "started", "failed") else "duplicate"

    def _deploy(self, job: Mapping[str, Any], shape: Mapping[str, Any], checkpoint: str) -> str:
        job_id = str(job["job_id"])
        try:
            operation = self.vertex.deploy_checkpoint(
                checkpoint,
                display_name=endpoint_display_name(job_id),
                machine_type=str(shape["machine_type"]),
                accelerator_type=str(shape["accelerator_type"]),
                accelerator_count=int(shape["accelerator_count"]),
            )
        except VertexApiError as error:
            if error.transient:
                # Redelivery retries; once this attempt can no longer be in flight, a redelivery
                # or the poller looks for its endpoint by name and deploys again only if none.
                raise
            return self._fail(job, _categorise({"code": _rpc_code(error.status), "message": error.message}))
        self.jobs.update_deploy(
            job_id, {"deployment.operation": operation, "deployment.checkpoint_uri": checkpoint}
        )
        log.info("deployment started", extra=log_fields(operation=operation, checkpoint=checkpoint))
        return "started"

    def _adopt(self, job_id: str) -> bool:
        """Record the endpoint an earlier attempt made for this job, if there is one."""
        found = self.vertex.find_endpoints(endpoint_display_name(job_id))
        if not found:
            return False
        # The one already serving, if any: a later attempt's endpoint may still be loading.
        chosen = next((e for e in found if e.get("deployedModels")), found[0])
        if len(found) > 1:
            log.error(
                "more than one endpoint for this job; adopting one, the others need removing by hand",
                extra=log_fields(adopted=chosen["name"], found=[e["name"] for e in found]),
            )
        self.jobs.update_deploy(job_id, {"deployment.endpoint": chosen["name"], "deployment.adopted": True})
        log.warning(
            "endpoint of an earlier deploy attempt adopted", extra=log_fields(endpoint=chosen["name"])
        )
        return True

    def _recover(self, job: Mapping[str, Any]) -> str:
        """A deploying job with neither operation nor endpoint recorded: adopt what the last
        attempt made, wait while it may still be in flight, then deploy again (bounded).

        Returns "adopted", "started", "failed" (the new attempt was refused), "waiting" or
        "exhausted" (no endpoint, and no attempt left).
        """
        job_id = str(job["job_id"])
        deployment = job.get("deployment") or {}
        attempt_age = _attempt_age(deployment)
        if _is_managed(deployment):
            return self._recover_managed(job, attempt_age)
        if self._adopt(job_id):
            return "adopted"
        if attempt_age < ATTEMPT_IN_FLIGHT_S:
            return "waiting"
        attempts = int(deployment.get("attempts") or 1)
        checkpoint = deployment.get("checkpoint_uri") or job.get("final_checkpoint_uri")
        if attempts >= MAX_DEPLOY_ATTEMPTS or not checkpoint or not deployment.get("shape"):
            return "exhausted"
        claimed = self.jobs.claim_attempt(
            job_id,
            attempts + 1,
            {"deployment.attempts": attempts + 1, "deployment.attempt_at": datetime.now(UTC).isoformat()},
        )
        if not claimed:
            return "waiting"  # another process took this attempt
        log.warning(
            "no endpoint of the last deploy attempt; deploying again",
            extra=log_fields(attempt=attempts + 1, of=MAX_DEPLOY_ATTEMPTS),
        )
        return self._deploy(job, deployment["shape"], str(checkpoint))

    def _recover_managed(self, job: Mapping[str, Any], attempt_age: float) -> str:
        endpoint = (job.get("tuned_model") or {}).get("endpoint")
        if endpoint:
            self.jobs.update_deploy(
                str(job["job_id"]), {"deployment.endpoint": endpoint, "deployment.managed": True}
            )
            return "adopted"
        return "waiting" if attempt_age < ATTEMPT_IN_FLIGHT_S else "exhausted"

    def follow(self, job: Mapping[str, Any]) -> str:
        """One poller look at a deploying job.

        Returns "waiting", "deployed", "failed" or "cleanup-pending" (failed; the endpoint's
        removal is tried again on the next tick before deploy.failed is published).
        """
        job_id = str(job["job_id"])
        deployment = dict(job.get("deployment") or {})
        with correlate(job_id=job_id):
            if deployment.get("cleanup"):
                return self._retry_cleanup(job, deployment)
            endpoint = deployment.get("endpoint")
            if not endpoint and deployment.get("operation"):
                endpoint, outcome = self._operation_result(job, deployment)
                if not endpoint:
                    return outcome
            if not endpoint:
                return self._follow_unrecorded(job, deployment)
            if deployment.get("adopted") and not self._serves(job_id, str(endpoint)):
                # Adopted without its operation: it serves once it lists a deployed model.
                if _attempt_age(deployment) > DEPLOY_TIMEOUT_S:
                    return self._fail(job, _timed_out(), endpoint=str(endpoint))
                return "waiting"
            return self._smoke_and_finish(job, deployment, str(endpoint))

    def _follow_unrecorded(self, job: Mapping[str, Any], deployment: Mapping[str, Any]) -> str:
        """Neither operation nor endpoint recorded: a deployer died between its deploy call and
        the record, or before the call; or it is still at it."""
        outcome = self._recover(job)
        if outcome == "exhausted":
            # Nothing of ours exists by name (that was just checked): nothing to remove.
            return self._fail(job, _nothing_deployed(str(job["job_id"]), deployment), endpoint=None)
        # Adopted: whether it serves yet is checked on the next tick.
        return "failed" if outcome == "failed" else "waiting"

    def _operation_result(
        self, job: Mapping[str, Any], deployment: Mapping[str, Any]
    ) -> tuple[str | None, str]:
        """The endpoint a finished deploy operation made, or (None, what was done instead)."""
        job_id = str(job["job_id"])
        operation = self.vertex.get_operation(str(deployment["operation"]))
        if not operation.get("done"):
            if _attempt_age(deployment) > DEPLOY_TIMEOUT_S:
                return None, self._fail(job, _timed_out(), endpoint=self._endpoint_by_name(job_id))
            return None, "waiting"
        if "error" in operation:
            return None, self._fail(
                job, _categorise(operation["error"]), endpoint=self._endpoint_by_name(job_id)
            )
        endpoint = (operation.get("response") or {}).get("endpoint") or self._endpoint_by_name(job_id)
        return (str(endpoint), "") if endpoint else (None, self._fail(job, _no_endpoint_in(operation)))

    def _serves(self, job_id: str, endpoint: str) -> bool:
        found = self.vertex.find_endpoints(endpoint_display_name(job_id))
        return any(e.get("name") == endpoint and e.get("deployedModels") for e in found)

    def _smoke_and_finish(self, job: Mapping[str, Any], deployment: Mapping[str, Any], endpoint: str) -> str:
        started = time.perf_counter()
        try:
            if deployment.get("managed"):
                answer = self.vertex.generate_content(endpoint, SMOKE_PROMPT)
            elif (job.get("stats") or {}).get("format") == "chat_messages":
                # Tuned on conversations: ask through the chat template it learned them with.
                answer = self.vertex.chat(endpoint, SMOKE_PROMPT, max_tokens=SMOKE_MAX_TOKENS)
            else:
                predictions = self.vertex.predict(endpoint, [dict(SMOKE_INSTANCE)])
                answer = str(predictions[0]) if predictions else ""
        except VertexApiError as error:
            if error.transient:
                raise
            return self._fail(
                job,
                DeploymentError(
                    "internal",
                    f"the smoke prediction failed: {error.message}",
                    "Read the endpoint's logs in Cloud Logging; check that the checkpoint folder "
                    "holds a complete model in Hugging Face format.",
                ),
                endpoint=endpoint,
            )
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

    def _fail(self, job: Mapping[str, Any], error: DeploymentError, *, endpoint: str | None = None) -> str:
        """Remove the endpoint made for a failed deployment, then publish deploy.failed; when the
        removal fails, record it for the next tick instead, and publish nothing yet."""
        if endpoint:
            problem = self._remove(endpoint)
            if problem is not None:
                self.jobs.update_deploy(
                    str(job["job_id"]),
                    {
                        "deployment.cleanup": {
                            "endpoint": endpoint,
                            "error": error.to_dict(),
                            "attempts": 1,
                            "problem": problem,
                            "since": datetime.now(UTC).isoformat(),
                        }
                    },
                )
                log.error(
                    "endpoint not removed; the next poller tick tries again",
                    extra=log_fields(endpoint=endpoint, problem=problem, attempt=1, of=CLEANUP_ATTEMPTS),
                )
                return "cleanup-pending"
        return self._finish_failed(job, error, endpoint=endpoint, removed=bool(endpoint))

    def _retry_cleanup(self, job: Mapping[str, Any], deployment: Mapping[str, Any]) -> str:
        cleanup = deployment["cleanup"]
        endpoint = str(cleanup["endpoint"])
        recorded = cleanup.get("error") or {}
        error = DeploymentError(
            str(recorded.get("category") or "internal"),
            str(recorded.get("message") or "deployment failed"),
            str(recorded.get("remedy") or "Try again later."),
        )
        problem = self._remove(endpoint)
        if problem is None:
            return self._finish_failed(job, error, endpoint=endpoint, removed=True)
        attempts = int(cleanup.get("attempts") or 1) + 1
        log.error(
            "endpoint still not removed",
            extra=log_fields(endpoint=endpoint, problem=problem, attempt=attempts, of=CLEANUP_ATTEMPTS),
        )
        if attempts >= CLEANUP_ATTEMPTS:
            error.remedy = f"{error.remedy} {_remove_by_hand(endpoint, problem)}"
            return self._finish_failed(job, error, endpoint=endpoint, removed=False)
        self.jobs.update_deploy(
            str(job["job_id"]),
            {"deployment.cleanup.attempts": attempts, "deployment.cleanup.problem": problem},
        )
        return "cleanup-pending"

    def _remove(self, endpoint: str) -> str | None:
        """Undeploy and delete an endpoint; None when it is gone, else why it is not."""
        try:
            self.vertex.remove_endpoint(endpoint)
        except VertexApiError as error:
            if error.status == 404:
                return None  # already gone: nothing bills
            return str(error)
        except OSError as error:  # requests' timeouts and connection errors are OSErrors
            return f"{type(error).__name__}: {error}"
        return None

    def _finish_failed(
        self, job: Mapping[str, Any], error: DeploymentError, *, endpoint: str | None, removed: bool
    ) -> str:
        self.jobs.finish_deploy(
            str(job["job_id"]),
            deployed=False,
            fields={
                "error": error.to_dict(),
                "deployment.endpoint_removed": removed,
                "deployment.cleanup": None,
            },
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
        return "failed"


def attempt_is_open(job: Mapping[str, Any], attempt: int) -> bool:
    """Deploy attempt `attempt` may be taken: the job is deploying, has recorded neither an
    operation, an endpoint nor a pending cleanup, and is still at attempt `attempt - 1`."""
    from droptune.jobs.record import JobState

    deployment = job.get("deployment") or {}
    return (
        job.get("state") == JobState.DEPLOYING.value
        and not deployment.get("operation")
        and not deployment.get("endpoint")
        and not deployment.get("cleanup")
        and int(deployment.get("attempts") or 1) == attempt - 1
    )


def _is_managed(deployment: Mapping[str, Any]) -> bool:
    """Vertex AI deployed it with the tuning job (translation, PaLM): no deploy call of ours."""
    return bool(deployment.get("managed")) or ("shape" in deployment and deployment["shape"] is None)


def _attempt_age(deployment: Mapping[str, Any]) -> float:
    return _age_seconds(deployment.get("attempt_at") or deployment.get("started_at"))


def _timed_out() -> DeploymentError:
    return DeploymentError(
        "capacity",
        "the deployment did not finish in 3 hours",
        "Check L4 capacity in the region; try another region.",
    )


def _nothing_deployed(job_id: str, deployment: Mapping[str, Any]) -> DeploymentError:
    if _is_managed(deployment):
        return DeploymentError(
            "internal",
            "Vertex AI recorded no endpoint for the tuned model",
            f"See the tuned model with `droptune jobs show {job_id}` and `droptune models list`.",
        )
    attempts = int(deployment.get("attempts") or 1)
    return DeploymentError(
        "internal",
        f"no deployment was recorded after {attempts} attempt(s), and no endpoint named "
        f"{endpoint_display_name(job_id)} exists",
        f"Read the deployer's logs for job {job_id} and `droptune jobs show {job_id}`; deploy the "
        "checkpoint by hand with Model Garden (custom weights).",
    )


def _no_endpoint_in(operation: Mapping[str, Any]) -> DeploymentError:
    return DeploymentError(
        "internal",
        f"the deploy operation {operation.get('name')} ended without naming an endpoint",
        "Try again later; if it persists, deploy the checkpoint by hand.",
    )


def _remove_by_hand(endpoint: str, problem: str) -> str:
    # projects/P/locations/REGION/endpoints/ID
    parts = endpoint.split("/")
    endpoint_id, region = parts[-1], parts[3] if len(parts) > 3 else "REGION"
    where = f"{endpoint_id} --region={region}"
    return (
        f"The endpoint {endpoint} could not be removed ({problem}) and may still be billing: "
        f"list its deployed models with `gcloud ai endpoints describe {where}`, undeploy each with "
        f"`gcloud ai endpoints undeploy-model {where} --deployed-model-id=ID`, then "
        f"`gcloud ai endpoints delete {where}`."
    )


def _rpc_code(status: int) -> int:
    """The google.rpc.Code of an HTTP status (https://cloud.google.com/apis/design/errors)."""
    return {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 412: 9, 429: 8}.get(status, 13)


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

    def current(self, job_id: str) -> dict[str, Any] | None:
        document: dict[str, Any] | None = self.store.get(job_id)
        return document

    def claim_attempt(self, job_id: str, attempt: int, fields: Mapping[str, Any]) -> bool:
        from droptune.jobs.record import JobState

        # One transaction: two pollers, or a poller and a redelivery, that both find no endpoint
        # cannot both deploy again (the loser re-reads the attempt count and stops).
        claimed: bool = self.store.update_fields(
            job_id,
            fields,
            expected=JobState.DEPLOYING,
            precondition=lambda current: attempt_is_open(current, attempt),
        )
        return claimed

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
