"""The launcher's core: a tune request in, exactly one Vertex AI tuning job out (M4.5, M1.11).

1. Claim: one Firestore `create()` of `jobs/{job_id}`. A repeated delivery finds the document and
   stops there (after finishing whatever the first delivery left half done).
2. Budget guard: a job whose estimated billable training tokens exceed the budget is held as
   `awaiting_approval`, or failed, per `DROPTUNE_OVER_BUDGET`.
3. Start: the oldest queued jobs take the free slots of the concurrency limit (`launching`), then
   each one's Vertex job is looked up by its job id label and created only if none exists, so a
   launcher that died between "created" and "recorded" never causes a second job.
4. Outcome: running; or back to the head of the queue on 429 / RESOURCE_EXHAUSTED (the job waits,
   it never fails for quota); or failed with a categorised error when Vertex refuses the request.
   Transient errors put the job back in the queue and raise, so Pub/Sub redelivers; after
   MAX_LAUNCH_ATTEMPTS the job fails instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from droptune import identity
from droptune.catalog import UnknownModelError
from droptune.envelopes import MalformedEventError
from droptune.jobs import errors
from droptune.jobs.record import JobState, new_job_document
from droptune.jobs.state_machine import EventSpec, JobStore, TransitionResult
from droptune.jobs.vertex_access import (
    PermanentVertexError,
    QuotaExceededError,
    TransientVertexError,
    VertexJobs,
)
from droptune.jobs.vertex_requests import build_request, final_checkpoint_uri
from droptune.jsonlog import correlate, log_fields
from droptune.settings import Settings

log = logging.getLogger(__name__)

MAX_LAUNCH_ATTEMPTS = 5
_REQUIRED = ("job_id", "dataset_id", "dataset_uri", "bucket", "object", "generation", "base_model")


def parse_tune_request(body: Any) -> dict[str, Any]:
    """Check the validator's tune request; a request that cannot be launched is malformed."""
    if not isinstance(body, dict):
        raise MalformedEventError("a tune request is a JSON object")
    missing = [name for name in _REQUIRED if not body.get(name)]
    if missing:
        raise MalformedEventError(f"tune request without {', '.join(missing)}")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise MalformedEventError("tune request options are not an object")
    # The id is trusted only if it is the one these inputs give: a request that does not match
    # could create a job that escapes deduplication.
    expected = identity.job_id(str(body["bucket"]), str(body["object"]), str(body["generation"]), options)
    if expected != body["job_id"]:
        raise MalformedEventError(f"job_id {body['job_id']} does not match its inputs (expected {expected})")
    return body


def launch_lease(settings: Settings) -> timedelta:
    # A launch makes two Vertex calls (find by label, create), each bounded by the API timeout;
    # only after twice that may another process assume the launcher died and take over.
    return timedelta(seconds=4 * settings.api_timeout_seconds)


@dataclass(frozen=True)
class LaunchReport:
    started: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    transient: tuple[str, ...] = ()


class Launcher:
    def __init__(self, settings: Settings, store: JobStore, vertex: VertexJobs) -> None:
        self.settings = settings
        self.store = store
        self.vertex = vertex

    # --- the tune request ---------------------------------------------------------------------

    def handle_request(self, request: Mapping[str, Any]) -> LaunchReport:
        """Claim the request's job and start what the free slots allow. Raises on transient errors
        of this job, so that the delivery is retried."""
        job_id = str(request["job_id"])
        with correlate(job_id=job_id, dataset_id=str(request["dataset_id"])):
            now = self.store.clock()
            document = new_job_document(request, now=now)
            state, event, reason = self._initial_state(document)
            created = self.store.create(document, state, event=event, reason=reason)
            if created is None:
                self._resume(job_id)
            report = self.start_queued()
            if job_id in report.transient:
                raise TransientVertexError(errors.UNAVAILABLE, f"job {job_id}: Vertex AI unreachable, retry")
            return report

    def _initial_state(self, document: dict[str, Any]) -> tuple[JobState, EventSpec, str]:
        budget = self.settings.training_token_budget
        estimate = (document.get("stats") or {}).get("billable_training_tokens")
        if budget is not None and isinstance(estimate, int) and estimate > budget:
            if self.settings.over_budget == "reject":
                error = errors.budget_error(estimate, budget)
                document["error"] = error.to_dict()
                return (
                    JobState.FAILED,
                    EventSpec("droptune.job.failed", {"error": error.to_dict()}),
                    "over the training-token budget",
                )
            return (
                JobState.AWAITING_APPROVAL,
                EventSpec(
                    "droptune.job.awaiting_approval",
                    {
                        "estimated_billable_tokens": estimate,
                        "budget": budget,
                        "approve_with": f"droptune jobs approve {document['job_id']}",
                    },
                ),
                "over the training-token budget: waits for approval",
            )
        position = self.store.queue_position(None)
        return (
            JobState.QUEUED,
            EventSpec("droptune.job.queued", {"position": position, "reason": "claimed"}),
            "claimed",
        )

    def _resume(self, job_id: str) -> None:
        """A repeated delivery: publish what the first one left in the outbox, and take over a
        launch whose launcher stopped answering."""
        document = self.store.get(job_id)
        if document is None:
            return
        if document.get("outbox_pending"):
            self.store.publish_pending(document)
        log.info("tune request repeated", extra=log_fields(job_id=job_id, state=document.get("state")))
        if document.get("state") == JobState.LAUNCHING.value:
            self.recover_launch(document)

    # --- starting jobs ------------------------------------------------------------------------

    def start_queued(self) -> LaunchReport:
        """Give free slots to the oldest queued jobs and create their Vertex jobs."""
        allocated = self.store.allocate_slots(
            self.settings.max_concurrent_jobs, lease=launch_lease(self.settings)
        )
        report = LaunchReport()
        for index, result in enumerate(allocated):
            outcome = self.launch(result.document)
            report = _add(report, outcome, result.job_id)
            if outcome == "requeued":
                # The quota is full: the others would get the same 429; they go back unasked.
                for other in allocated[index + 1 :]:
                    self._requeue(other.document, quota=False, reason="quota full, not tried")
                    report = _add(report, "requeued", other.job_id)
                break
        return report

    def recover_launch(self, document: Mapping[str, Any]) -> str | None:
        """Take over a launch whose lease expired (its launcher died or hung), then finish it."""
        lease_until = document.get("launch_lease_until")
        if isinstance(lease_until, datetime) and lease_until > self.store.clock():
            return None
        job_id = str(document["job_id"])
        token = document.get("launch_token")
        now = self.store.clock()
        taken = self.store.update_fields(
            job_id,
            {"launch_lease_until": now + launch_lease(self.settings), "launched_by": self.store.worker_id},
            expected=JobState.LAUNCHING,
        )
        if not taken:
            return None
        log.warning(
            "taking over a launch whose launcher stopped", extra=log_fields(job_id=job_id, token=token)
        )
        return self.launch(dict(document))

    def launch(self, document: Mapping[str, Any]) -> str:
        """Create (or find) the Vertex job of a `launching` job; returns what became of it."""
        job_id = str(document["job_id"])
        token = document.get("launch_token")
        with correlate(job_id=job_id):
            try:
                request = build_request(document, self.settings)
            except (UnknownModelError, KeyError, ValueError) as error:
                self._fail(
                    document, errors.categorize(errors.INVALID_ARGUMENT, f"cannot build request: {error}")
                )
                return "failed"
            try:
                existing = self.vertex.find_by_label(request.kind, request.region, job_id)
                if existing is not None:
                    log.warning(
                        "Vertex job found by its label: recorded, not created again",
                        extra=log_fields(vertex_job=existing.get("name")),
                    )
                vertex_job = existing or self.vertex.create(request)
            except QuotaExceededError as error:
                self._requeue(document, quota=True, reason=f"quota: {error.message}")
                return "requeued"
            except TransientVertexError as error:
                if int(document.get("launch_attempts") or 0) >= MAX_LAUNCH_ATTEMPTS:
                    self._fail(document, errors.categorize(error.code, error.message))
                    return "failed"
                self._requeue(document, quota=False, reason=f"transient: {error.message}")
                return "transient"
            except PermanentVertexError as error:
                self._fail(
                    document,
                    errors.categorize(error.code, error.message, base_model=document.get("base_model")),
                )
                return "failed"
            name = str(vertex_job["name"])
            output = str(vertex_job.get("outputUri") or request.output_uri)
            result = self.store.transition(
                job_id,
                expected=JobState.LAUNCHING,
                to=JobState.RUNNING,
                fields={
                    "vertex": vertex_fields(vertex_job, request.kind, request.region),
                    "output_uri": output,
                    "progress_at": self.store.clock(),
                    "progress_fingerprint": "",
                    "launch_lease_until": None,
                },
                event=EventSpec(
                    "droptune.job.launched",
                    {
                        "vertex_job": name,
                        "vertex_kind": request.kind,
                        "region": request.region,
                        "output_uri": output,
                        "final_checkpoint_uri": final_checkpoint_uri(output)
                        if request.kind == "tuningJobs"
                        else None,
                    },
                ),
                reason=f"created {name}" if existing is None else f"found {name} by its label",
                precondition=lambda current: current.get("launch_token") == token,
            )
            if result is not None and result.document.get("cancel_requested"):
                self._cancel_after_launch(result)
            return "started"

    def _cancel_after_launch(self, result: TransitionResult) -> None:
        name = str((result.document.get("vertex") or {}).get("name"))
        try:
            self.vertex.cancel(name)
        except (PermanentVertexError, TransientVertexError) as error:
            log.warning(
                "cancel after launch failed", extra=log_fields(job_id=result.job_id, problem=str(error))
            )
            return
        self.store.transition(
            result.job_id,
            expected=JobState.RUNNING,
            to=JobState.CANCELLED,
            event=EventSpec("droptune.job.cancelled", {"vertex_job": name, "requested": True}),
            reason="cancel requested while launching",
        )

    def _requeue(self, document: Mapping[str, Any], *, quota: bool, reason: str) -> None:
        job_id = str(document["job_id"])
        token = document.get("launch_token")
        waits = int(document.get("quota_waits") or 0)
        first_wait = quota and waits == 0
        event = None
        if first_wait:
            event = EventSpec(
                "droptune.job.queued",
                {"position": 1, "reason": "quota", "message": reason},
            )
        fields: dict[str, Any] = {"launch_lease_until": None, "launch_token": None}
        if quota:
            fields |= {"quota_waits": waits + 1, "last_quota_error": reason}
            # A quota wait is not a failed attempt: it does not count towards MAX_LAUNCH_ATTEMPTS.
            fields["launch_attempts"] = max(int(document.get("launch_attempts") or 1) - 1, 0)
        result = self.store.transition(
            job_id,
            expected=JobState.LAUNCHING,
            to=JobState.QUEUED,
            fields=fields,
            event=event,
            reason=reason,
            precondition=lambda current: current.get("launch_token") == token,
        )
        log.info("job back in the queue", extra=log_fields(job_id=job_id, reason=reason))
        if result is not None and quota and result.document.get("cancel_requested"):
            # A cancel that arrived while launching: a 429 means Vertex created nothing, so the job
            # ends here instead of being launched only to be cancelled. (After other errors a job may
            # exist on Vertex; the next launch finds it by its label and cancels it.)
            self.store.transition(
                job_id,
                expected=JobState.QUEUED,
                to=JobState.CANCELLED,
                event=EventSpec("droptune.job.cancelled", {"vertex_job": None, "requested": True}),
                reason="cancel requested while launching; the quota wait created no Vertex job",
            )

    def _fail(self, document: Mapping[str, Any], error: errors.JobError) -> None:
        self.store.transition(
            str(document["job_id"]),
            expected=JobState.LAUNCHING,
            to=JobState.FAILED,
            fields={"error": error.to_dict(), "launch_lease_until": None},
            event=EventSpec("droptune.job.failed", {"error": error.to_dict()}),
            reason=f"{error.category.value}: {error.message}",
        )
        log.error(
            "job failed at launch",
            extra=log_fields(job_id=document["job_id"], category=error.category.value, problem=error.message),
        )


def vertex_fields(vertex_job: Mapping[str, Any], kind: str, region: str) -> dict[str, Any]:
    """The part of a Vertex job resource kept in `jobs/{id}.vertex`."""
    return {
        "name": vertex_job.get("name"),
        "kind": kind,
        "region": region,
        "state": normalized_state(vertex_job.get("state")),
        "detail_state": vertex_job.get("tuningJobState"),
        "create_time": vertex_job.get("createTime"),
        "start_time": vertex_job.get("startTime"),
        "end_time": vertex_job.get("endTime"),
        "update_time": vertex_job.get("updateTime"),
        # The Vertex AI Experiment holding the job's metrics (M2.6; read by experiment_metrics.py).
        "experiment": vertex_job.get("experiment"),
    }


def normalized_state(state: Any) -> str:
    """Pipeline states read as job states: PIPELINE_STATE_RUNNING → JOB_STATE_RUNNING."""
    return str(state or "JOB_STATE_UNSPECIFIED").replace("PIPELINE_STATE_", "JOB_STATE_")


def _add(report: LaunchReport, outcome: str, job_id: str) -> LaunchReport:
    if outcome == "started":
        return LaunchReport((*report.started, job_id), report.requeued, report.failed, report.transient)
    if outcome == "requeued":
        return LaunchReport(report.started, (*report.requeued, job_id), report.failed, report.transient)
    if outcome == "failed":
        return LaunchReport(report.started, report.requeued, (*report.failed, job_id), report.transient)
    return LaunchReport(report.started, report.requeued, report.failed, (*report.transient, job_id))


def utc_now() -> datetime:
    return datetime.now(UTC)
