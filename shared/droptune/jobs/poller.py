"""The poller's core: one tick follows every active job, and commands cancel or approve jobs.

A tick (M2.5, M4.3, M4.4; peers pain points 4, 13):
1. publishes events a crashed process left in a job's outbox;
2. reads every active job from Firestore (launching, running, deploying), oldest first;
3. takes over launches whose launcher stopped (their lease expired);
4. gets every running job from Vertex AI in bounded parallel and records what changed: state
   (every non-terminal Vertex state, quota and capacity waits and post-processing included, just
   means "keep polling"), metrics (M2.5 names, from the job's Vertex AI Experiment:
   experiment_metrics.py), checkpoints, `tuningDataStats`, the tuned model;
   terminal states become succeeded / failed (with a categorised error) / cancelled, each
   announced once; a job whose progress has not moved for `stall_after_seconds` is announced as
   stalled (an event, not a failure), once per stall;
5. hands each `deploying` job to the deployer's `follow_deployment`;
6. gives free slots to queued jobs, in arrival order.

Nothing is written when nothing changed, so a steady tick costs one Firestore query and, per
running job, one Vertex GET and (once it names an experiment) one TensorBoard batchRead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from droptune.events import Publisher
from droptune.jobs import errors
from droptune.jobs.experiment_metrics import ExperimentMetrics, MetricsReading
from droptune.jobs.launcher import Launcher, normalized_state, vertex_fields
from droptune.jobs.record import ACTIVE_STATES, JobState
from droptune.jobs.state_machine import EventSpec, JobStore
from droptune.jobs.vertex_access import (
    CallCounts,
    PermanentVertexError,
    TransientVertexError,
    VertexError,
    VertexJobs,
    kind_of,
)
from droptune.jobs.vertex_requests import final_checkpoint_uri
from droptune.jsonlog import correlate, log_fields
from droptune.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PARALLELISM = 16
# Vertex states after which nothing more happens to a job (JobState / PipelineState).
_SUCCEEDED = "JOB_STATE_SUCCEEDED"
_FAILED = frozenset({"JOB_STATE_FAILED", "JOB_STATE_EXPIRED"})
_CANCELLED = "JOB_STATE_CANCELLED"
# Metric names of M2.5 (the `/train_*` and `/eval_*` series); anything else is not ours to keep.
_METRIC_PREFIXES = ("/train_", "/eval_")


@dataclass
class PollContext:
    """What the poller, and the deployer's `follow_deployment`, work with."""

    settings: Settings
    firestore: Any
    publisher: Publisher
    vertex: VertexJobs
    store: JobStore
    counts: CallCounts = field(default_factory=CallCounts)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass
class TickReport:
    active: int = 0
    polled: int = 0
    transitions: int = 0
    updated: int = 0
    stalled: int = 0
    started: int = 0
    outbox_published: int = 0
    errors: int = 0
    deploying: int = 0
    seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)


def build_context(
    settings: Settings, firestore: Any, publisher: Publisher, vertex: VertexJobs | None = None
) -> PollContext:
    from droptune.jobs.vertex_access import VertexClient

    counts = CallCounts()
    return PollContext(
        settings=settings,
        firestore=firestore,
        publisher=publisher,
        vertex=vertex or VertexClient(settings, counts, pool_size=DEFAULT_PARALLELISM),
        store=JobStore(settings, firestore, publisher, counts),
        counts=counts,
    )


class Poller:
    def __init__(self, context: PollContext, *, parallelism: int = DEFAULT_PARALLELISM) -> None:
        self.context = context
        self.settings = context.settings
        self.store = context.store
        self.vertex = context.vertex
        self.parallelism = parallelism
        self.launcher = Launcher(context.settings, context.store, context.vertex)
        self.metrics = ExperimentMetrics(context.vertex)

    # --- the tick ------------------------------------------------------------------------------

    def tick(self) -> TickReport:
        started = time.monotonic()
        before = self.context.counts.as_dict()
        report = TickReport()
        # Each job's step is tried on its own: one contended or unreachable document (a commit the
        # emulator or Firestore keeps aborting) is logged and left to the next tick, and the other
        # jobs are still followed. A tick that cannot even query Firestore raises, to be retried.
        for document in self.store.jobs_with_pending_events():
            with correlate(job_id=str(document.get("job_id"))):
                try:
                    report.outbox_published += self.store.publish_pending(document)
                except Exception:
                    log.exception("publishing a job's pending events failed; the next tick tries again")
                    report.errors += 1
        active = self.store.query_states(ACTIVE_STATES)
        report.active = len(active)
        running = [d for d in active if d.get("state") == JobState.RUNNING.value]
        for document in active:
            if document.get("state") == JobState.LAUNCHING.value:
                with correlate(job_id=str(document.get("job_id"))):
                    try:
                        self.launcher.recover_launch(document)
                    except Exception:
                        log.exception("recovering a launch failed; the next tick tries again")
                        report.errors += 1
        if running:
            workers = max(1, min(self.parallelism, len(running)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
                for outcome in pool.map(self._poll_one, running):
                    report.polled += 1
                    if outcome == "error":
                        report.errors += 1
                    elif outcome == "transition":
                        report.transitions += 1
                    elif outcome == "updated":
                        report.updated += 1
                    elif outcome == "stalled":
                        report.stalled += 1
        deploying = [d for d in active if d.get("state") == JobState.DEPLOYING.value]
        report.deploying = len(deploying)
        self._follow_deployments(deploying)
        try:
            report.started = len(self.launcher.start_queued().started)
        except Exception:  # the allocator is released by start_queued itself; the next tick retries
            log.exception("starting queued jobs failed; the next tick tries again")
            report.errors += 1
        report.seconds = time.monotonic() - started
        after = self.context.counts.as_dict()
        report.calls = {key: after[key] - before[key] for key in after}
        log.info("poll tick done", extra=log_fields(**dict(vars(report).items())))
        return report

    def _poll_one(self, document: Mapping[str, Any]) -> str:
        job_id = str(document["job_id"])
        name = str((document.get("vertex") or {}).get("name") or "")
        with correlate(job_id=job_id):
            if not name:
                log.error("running job without a Vertex job name", extra=log_fields(job_id=job_id))
                return "error"
            try:
                vertex_job = self.vertex.get(name)
            except VertexError as error:
                # One job's trouble must not stop the others; the next tick tries again.
                log.warning(
                    "Vertex job not read this tick", extra=log_fields(vertex_job=name, problem=error.message)
                )
                return "error"
            try:
                return self.observe(document, vertex_job, self._read_metrics(document, vertex_job))
            except Exception:  # the same: log it with its job, keep polling the rest
                log.exception("job observation failed", extra=log_fields(vertex_job=name))
                return "error"

    def _read_metrics(
        self, document: Mapping[str, Any], vertex_job: Mapping[str, Any]
    ) -> MetricsReading | None:
        """A tuning job's metrics from its experiment, once it names one (see experiment_metrics)."""
        experiment = vertex_job.get("experiment")
        if not experiment or kind_of(str(vertex_job.get("name") or "")) != "tuningJobs":
            return None
        validation = (document.get("options") or {}).get("validation_dataset") or document.get(
            "validation_uri"
        )
        try:
            return self.metrics.read(
                str(experiment), document.get("metrics_source"), expects_eval=bool(validation)
            )
        except Exception:  # an answer of an unexpected shape: the job's state is still recorded
            log.exception("tuning metrics read failed", extra=log_fields(experiment=experiment))
            return None

    def observe(  # noqa: PLR0911 - one return per outcome of the observation
        self,
        document: Mapping[str, Any],
        vertex_job: Mapping[str, Any],
        reading: MetricsReading | None = None,
    ) -> str:
        """Record what one GET of a running job's Vertex resource (and its metrics) says."""
        job_id = str(document["job_id"])
        observed = observation(vertex_job, document, reading)
        state = observed["vertex"]["state"]
        previous_vertex = document.get("vertex") or {}
        if state == _SUCCEEDED:
            return self._finish_succeeded(document, observed)
        if state in _FAILED:
            error = _job_error(vertex_job, document)
            result = self.store.transition(
                job_id,
                expected=JobState.RUNNING,
                to=JobState.FAILED,
                fields=observed | {"error": error.to_dict()},
                event=EventSpec(
                    "droptune.job.failed",
                    {"vertex_job": observed["vertex"]["name"], "error": error.to_dict()},
                ),
                reason=f"{error.category.value}: {error.message}",
            )
            return "transition" if result else "none"
        if state == _CANCELLED:
            result = self.store.transition(
                job_id,
                expected=JobState.RUNNING,
                to=JobState.CANCELLED,
                fields=observed,
                event=EventSpec("droptune.job.cancelled", {"vertex_job": observed["vertex"]["name"]}),
                reason="cancelled in Vertex AI",
            )
            return "transition" if result else "none"

        fingerprint = observed["progress_fingerprint"]
        now = self.context.clock()
        if fingerprint != document.get("progress_fingerprint"):
            fields = observed | {"progress_at": now, "stalled": False}
            seen = (previous_vertex.get("state"), previous_vertex.get("detail_state"))
            if (state, observed["vertex"]["detail_state"]) != seen:
                result = self.store.transition(
                    job_id,
                    expected=JobState.RUNNING,
                    to=JobState.RUNNING,
                    fields=fields,
                    event=EventSpec(
                        "droptune.job.state_changed",
                        {
                            "vertex_job": observed["vertex"]["name"],
                            "vertex_state": state,
                            "vertex_detail_state": observed["vertex"]["detail_state"],
                            "previous_vertex_state": seen[0],
                        },
                    ),
                    reason=f"Vertex state {seen[0]} → {state}",
                    precondition=lambda current: (
                        (current.get("vertex") or {}).get("state") == seen[0]
                        and (current.get("vertex") or {}).get("detail_state") == seen[1]
                    ),
                )
                return "transition" if result else "none"
            self.store.update_fields(job_id, fields)
            return "updated"
        progress_at = document.get("progress_at")
        stall_after = timedelta(seconds=self.settings.stall_after_seconds)
        if (
            not document.get("stalled")
            and isinstance(progress_at, datetime)
            and now - progress_at >= stall_after
        ):
            silent = int((now - progress_at).total_seconds())
            result = self.store.transition(
                job_id,
                expected=JobState.RUNNING,
                to=JobState.RUNNING,
                fields={"stalled": True, "stalled_at": now},
                event=EventSpec(
                    "droptune.job.stalled",
                    {
                        "vertex_job": observed["vertex"]["name"],
                        "vertex_state": state,
                        "vertex_detail_state": observed["vertex"]["detail_state"],
                        "silent_seconds": silent,
                        "remedy": "The job is still running in Vertex AI but has not progressed; look at "
                        "its page in the console, or cancel it with `droptune jobs cancel "
                        f"{job_id}`.",
                    },
                ),
                reason=f"stalled: no progress for {silent} s",
                precondition=lambda current: (
                    not current.get("stalled") and current.get("progress_fingerprint") == fingerprint
                ),
            )
            return "stalled" if result else "none"
        return "unchanged"

    def _finish_succeeded(self, document: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
        job_id = str(document["job_id"])
        vertex = observed["vertex"]
        tuned = observed.get("tuned_model") or {}
        stats = observed.get("tuning_data_stats") or {}
        billable = _billable_tokens(stats) or (document.get("stats") or {}).get("billable_training_tokens")
        data = {
            "vertex_job": vertex["name"],
            "output_uri": observed.get("output_uri"),
            "final_checkpoint_uri": observed.get("final_checkpoint_uri"),
            "tuned_model": tuned.get("model"),
            "tuned_model_endpoint": tuned.get("endpoint"),
            "checkpoints": observed.get("checkpoints") or [],
            "metrics": observed.get("metrics") or {},
            "billable_tokens": billable,
            "tuning_data_stats": stats or None,
            "options": document.get("options") or {},
        }
        result = self.store.transition(
            job_id,
            expected=JobState.RUNNING,
            to=JobState.SUCCEEDED,
            fields=dict(observed) | {"billable_tokens": billable, "stalled": False},
            event=EventSpec("droptune.job.succeeded", data),
            reason=f"{vertex['name']} succeeded",
        )
        return "transition" if result else "none"

    def _follow_deployments(self, deploying: list[dict[str, Any]]) -> None:
        if not deploying:
            return
        try:
            from droptune.deployment import follow_deployment  # type: ignore[attr-defined, unused-ignore]
        except ImportError:
            log.info("deployments not followed: droptune.deployment is not installed")
            return
        for document in deploying:
            with correlate(job_id=str(document["job_id"])):
                try:
                    follow_deployment(document, self.context)
                except Exception:  # one deployment's trouble must not stop the tick
                    log.exception("following a deployment failed")

    # --- commands --------------------------------------------------------------------------------

    def handle_command(self, command: Mapping[str, Any]) -> str:
        """`{"command": "cancel" | "approve" | "reject", "job_id": ...}` from the control topic."""
        verb = str(command.get("command", ""))
        job_id = str(command.get("job_id", ""))
        with correlate(job_id=job_id):
            document = self.store.get(job_id)
            if document is None:
                log.warning("command for an unknown job dropped", extra=log_fields(command=verb))
                return "unknown job"
            state = JobState(document["state"])
            if verb == "cancel":
                return self._cancel(document, state)
            if verb == "approve":
                return self._approve(document, state)
            if verb == "reject":
                return self._reject(document, state)
            log.warning("unknown command dropped", extra=log_fields(command=verb))
            return "unknown command"

    def _cancel(self, document: Mapping[str, Any], state: JobState) -> str:
        job_id = str(document["job_id"])
        if state in (JobState.QUEUED, JobState.AWAITING_APPROVAL):
            result = self.store.transition(
                job_id,
                expected=state,
                to=JobState.CANCELLED,
                event=EventSpec("droptune.job.cancelled", {"vertex_job": None, "requested": True}),
                reason="cancelled before launch",
            )
            return "cancelled" if result else "refused"
        if state is JobState.LAUNCHING:
            # The Vertex job may be being created right now: the launch cancels it once recorded.
            if not self.store.update_fields(job_id, {"cancel_requested": True}, expected=JobState.LAUNCHING):
                current = self.store.get(job_id)  # the launch finished meanwhile
                return self._cancel(current, JobState(current["state"])) if current else "unknown job"
            return "cancel requested"
        if state is JobState.RUNNING:
            name = str((document.get("vertex") or {}).get("name"))
            try:
                self.vertex.cancel(name)
            except PermanentVertexError as error:
                # Typically FAILED_PRECONDITION: the job ended meanwhile; the next tick records how.
                log.warning(
                    "Vertex job not cancelled", extra=log_fields(vertex_job=name, problem=error.message)
                )
                return "too late"
            result = self.store.transition(
                job_id,
                expected=JobState.RUNNING,
                to=JobState.CANCELLED,
                fields={"cancel_requested": True},
                event=EventSpec("droptune.job.cancelled", {"vertex_job": name, "requested": True}),
                reason="cancelled on request",
            )
            return "cancelled" if result else "refused"
        log.info("nothing to cancel", extra=log_fields(state=state.value))
        return "nothing to cancel"

    def _approve(self, document: Mapping[str, Any], state: JobState) -> str:
        if state is not JobState.AWAITING_APPROVAL:
            return "not awaiting approval"
        job_id = str(document["job_id"])
        result = self.store.transition(
            job_id,
            expected=JobState.AWAITING_APPROVAL,
            to=JobState.QUEUED,
            fields={"approved_at": self.context.clock()},
            event=EventSpec("droptune.job.queued", {"position": None, "reason": "approved"}),
            reason="approved over the training-token budget",
        )
        if result is None:
            return "refused"
        with contextlib.suppress(TransientVertexError):  # it is queued; the next tick starts it
            self.launcher.start_queued()
        return "approved"

    def _reject(self, document: Mapping[str, Any], state: JobState) -> str:
        if state is not JobState.AWAITING_APPROVAL:
            return "not awaiting approval"
        estimate = int((document.get("stats") or {}).get("billable_training_tokens") or 0)
        error = errors.budget_error(estimate, self.settings.training_token_budget or 0)
        result = self.store.transition(
            str(document["job_id"]),
            expected=JobState.AWAITING_APPROVAL,
            to=JobState.FAILED,
            fields={"error": error.to_dict()},
            event=EventSpec("droptune.job.failed", {"error": error.to_dict()}),
            reason="rejected over the training-token budget",
        )
        return "rejected" if result else "refused"


def observation(
    vertex_job: Mapping[str, Any], document: Mapping[str, Any], reading: MetricsReading | None = None
) -> dict[str, Any]:
    """The job document fields a Vertex job resource gives (documented fields first; the local
    stand-in's `droptune*` extras only add to them).

    A tuning job's metrics come from its experiment (`reading`); without a reading this tick the
    document keeps the metrics it had. A pipeline job (PaLM) writes its metrics to TensorBoard only
    after it ends (M3.4, `tensorboard_resource_id`), so live ones come from the stand-in alone.
    """
    name = str(vertex_job.get("name") or (document.get("vertex") or {}).get("name"))
    kind = kind_of(name)
    previous = document.get("vertex") or {}
    vertex = vertex_fields(vertex_job, kind, str(previous.get("region") or ""))
    extras = vertex_job.get("droptuneMetrics") or {}
    artifacts = vertex_job.get("droptuneArtifacts") or {}
    tuned = dict(vertex_job.get("tunedModel") or vertex_job.get("droptuneTunedModel") or {})
    stats = (vertex_job.get("tuningDataStats") or {}).get("supervisedTuningDataStats") or vertex_job.get(
        "droptuneTuningDataStats"
    )
    output = vertex_job.get("outputUri") or document.get("output_uri")
    if kind == "tuningJobs":
        metrics = reading.metrics if reading else dict(document.get("metrics") or {})
        metrics_step = reading.step if reading else document.get("metrics_step")
        metrics_source = reading.source if reading else document.get("metrics_source")
    else:
        latest = extras.get("latest") or {}
        metrics = {k: v for k, v in latest.items() if k.startswith(_METRIC_PREFIXES)}
        metrics_step, metrics_source = extras.get("currentStep"), None
    checkpoints = _checkpoints(tuned.get("checkpoints") or [], extras.get("checkpoints") or [])
    final_uri = artifacts.get("finalCheckpointUri")
    if not final_uri and output and kind == "tuningJobs":
        final_uri = final_checkpoint_uri(str(output))
    fields: dict[str, Any] = {
        "vertex": vertex,
        "metrics": metrics,
        "metrics_step": metrics_step,
        "metrics_source": metrics_source,
        "total_steps": extras.get("totalSteps"),
        "checkpoints": checkpoints,
        "tuning_data_stats": stats or None,
        "tuned_model": {"model": tuned.get("model"), "endpoint": tuned.get("endpoint")} if tuned else None,
        "output_uri": output,
        "final_checkpoint_uri": final_uri
        if normalized_state(vertex_job.get("state")) == _SUCCEEDED
        else None,
    }
    fields["progress_fingerprint"] = _fingerprint(fields)
    return fields


def _checkpoints(documented: list[Any], extra: list[Any]) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for item in [*extra, *documented]:
        if not isinstance(item, dict):
            continue
        key = str(item.get("checkpointId") or item.get("step"))
        merged = by_id.setdefault(key, {})
        merged.update(
            {
                "checkpoint_id": item.get("checkpointId", merged.get("checkpoint_id")),
                "epoch": _int_or_none(item.get("epoch", merged.get("epoch"))),
                "step": _int_or_none(item.get("step", merged.get("step"))),
            }
        )
        if item.get("uri"):
            merged["uri"] = item["uri"]
    return sorted(by_id.values(), key=lambda c: c.get("step") or 0)


def _fingerprint(fields: Mapping[str, Any]) -> str:
    """What counts as progress: state, detail state, step, checkpoints, statistics, the model."""
    vertex = fields["vertex"]
    parts = [
        vertex.get("state"),
        vertex.get("detail_state"),
        fields.get("metrics_step"),
        len(fields.get("checkpoints") or []),
        bool(fields.get("tuning_data_stats")),
        bool(fields.get("tuned_model")),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _job_error(vertex_job: Mapping[str, Any], document: Mapping[str, Any]) -> errors.JobError:
    error = vertex_job.get("error") or {}
    state = normalized_state(vertex_job.get("state"))
    message = str(error.get("message") or ("The job expired." if state == "JOB_STATE_EXPIRED" else ""))
    code = error.get("code")
    return errors.categorize(
        int(code) if isinstance(code, int | str) and str(code).isdigit() else None,
        message,
        base_model=document.get("base_model"),
    )


def _billable_tokens(stats: Mapping[str, Any]) -> int | None:
    for key in ("totalBillableTokenCount", "totalBillableCharacterCount"):
        if stats.get(key) is not None:
            return int(stats[key])
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


__all__ = ["PollContext", "Poller", "TickReport", "TransientVertexError", "build_context", "observation"]
