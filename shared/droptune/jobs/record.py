"""The job record: one Firestore document per tuning job, `jobs/{job_id}` (M4.3).

The document holds what the job was asked to do (dataset, resolved options, the validation
report's statistics), what Vertex AI made of it (resource name, state, metrics, checkpoints,
`tuningDataStats`, the tuned model and its endpoint), the droptune state with its history, and a
categorised error with its remedy when something went wrong (M3.9). Field names are snake_case;
values are plain JSON types or timestamps, so `droptune jobs show --json` can print them as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

JOBS_COLLECTION = "jobs"
# Documents holding one event claim each, so that an event is published by one process only.
# Firestore deletes them after `expire_at` (a TTL policy on that field, see infra/).
TRANSITION_CLAIMS_COLLECTION = "transition_claims"
# One document that every start of a Vertex job is serialised through (the concurrency limit).
SLOTS_COLLECTION = "job_slots"
SLOTS_DOCUMENT = "allocator"

# Labels carry the job id into Vertex AI, so a launcher that died after creating a job finds it
# again instead of creating a second one (ARCHITECTURE decision 3).
JOB_ID_LABEL = "droptune-job-id"
DATASET_ID_LABEL = "droptune-dataset-id"
APP_LABEL = ("app", "droptune")


class JobState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # over the training-token budget; waits for approval
    QUEUED = "queued"  # claimed; waits for a free slot of the concurrency limit (M1.11)
    LAUNCHING = "launching"  # holds a slot; the Vertex job is being created
    RUNNING = "running"  # the Vertex job exists and has not ended (any non-terminal Vertex state)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEPLOYING = "deploying"  # the deployer started a deployment; the poller follows it
    DEPLOYED = "deployed"
    DEPLOY_FAILED = "deploy_failed"


# Jobs that hold one of the concurrency slots: their Vertex job counts against the quota.
SLOT_STATES = (JobState.LAUNCHING, JobState.RUNNING)
# Jobs the poller looks at on every tick (queued jobs are started by the slot allocation).
ACTIVE_STATES = (JobState.LAUNCHING, JobState.RUNNING, JobState.DEPLOYING)
TERMINAL_STATES = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.DEPLOYED, JobState.DEPLOY_FAILED})

# The legal transitions, and nothing else (ARCHITECTURE decision 4). RUNNING → RUNNING records a
# change of the Vertex state inside "running" (e.g. PENDING → RUNNING, a quota wait).
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.AWAITING_APPROVAL: frozenset({JobState.QUEUED, JobState.CANCELLED, JobState.FAILED}),
    JobState.QUEUED: frozenset({JobState.LAUNCHING, JobState.CANCELLED, JobState.FAILED}),
    JobState.LAUNCHING: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset({JobState.DEPLOYING, JobState.DEPLOYED, JobState.DEPLOY_FAILED}),
    JobState.DEPLOYING: frozenset({JobState.DEPLOYED, JobState.DEPLOY_FAILED}),
    JobState.DEPLOY_FAILED: frozenset({JobState.DEPLOYING}),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.DEPLOYED: frozenset(),
}


def is_legal(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def new_job_document(request: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """The first version of a job document, from the validator's tune request."""
    options = dict(request.get("options") or {})
    return {
        "job_id": request["job_id"],
        "dataset_id": request["dataset_id"],
        "dataset_uri": request["dataset_uri"],
        # What Vertex trains on: the upload, or its conversion for a retired model's successor.
        "training_uri": request.get("training_uri") or request["dataset_uri"],
        "converted_from": request.get("converted_from"),
        "bucket": request["bucket"],
        "object": request["object"],
        "generation": str(request["generation"]),
        "md5_hash": request.get("md5_hash"),
        "report_uri": request.get("report_uri"),
        "validation_uri": request.get("validation_uri"),
        "base_model": request["base_model"],
        "tuning_mode": request.get("tuning_mode"),
        "options": options,
        "stats": dict(request.get("stats") or {}),
        "requested_at": request.get("requested_at"),
        "history": [],
        "outbox": [],
        "outbox_pending": False,
        "launch_attempts": 0,
        "quota_waits": 0,
        "vertex": None,
        "metrics": {},
        "checkpoints": [],
        "tuning_data_stats": None,
        "tuned_model": None,
        "final_checkpoint_uri": None,
        "output_uri": None,
        "error": None,
        "stalled": False,
        "cancel_requested": False,
        "updated_at": now,
    }


def event_summary(document: Mapping[str, Any]) -> dict[str, Any]:
    """What every job event carries, so a subscriber never has to read Firestore (decision 7)."""
    vertex = document.get("vertex") or {}
    stats = document.get("stats") or {}
    return {
        "job_id": document["job_id"],
        "dataset_id": document.get("dataset_id"),
        "dataset_uri": document.get("dataset_uri"),
        "md5_hash": document.get("md5_hash"),
        "base_model": document.get("base_model"),
        "tuning_mode": document.get("tuning_mode"),
        "state": document.get("state"),
        "vertex_job": vertex.get("name"),
        "vertex_state": vertex.get("state"),
        "estimated_billable_tokens": stats.get("billable_training_tokens"),
    }
