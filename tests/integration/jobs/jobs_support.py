"""Helpers of the job tests: the stand-in's jobs, hand-made tune requests, documents, events."""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

from droptune import identity


def standin_jobs(
    stack: Any, label_job_id: str | None = None, kind: str = "tuningJobs"
) -> list[dict[str, Any]]:
    """The stand-in's jobs (every location we use), optionally only those labelled with a job id."""
    found: list[dict[str, Any]] = []
    for region in ("us-central1", "europe-west4"):
        parent = f"projects/{stack.project}/locations/{region}"
        url = f"{stack.endpoint('vertex')}/v1beta1/{parent}/{kind}?pageSize=1000"
        if label_job_id:
            url += "&filter=" + urllib.parse.quote(f'labels.droptune-job-id="{label_job_id}"')
        with urllib.request.urlopen(url, timeout=10) as response:
            found.extend(json.loads(response.read()).get(kind, []))
    return found


def manual_request(
    stack: Any,
    bucket: Any,
    text: str,
    *,
    options: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A tune request for a file outside the watched prefix, so only the test's own core sees it."""
    name = f"manual/{uuid.uuid4().hex[:10]}/train.jsonl"
    blob = bucket.blob(name)
    blob.upload_from_string(text)
    blob.reload()
    resolved = {
        "base_model": "google/gemma3@gemma-3-1b-it",
        "region": "us-central1",
        "tuning_mode": "FULL",
        "epochs": 1,
        "learning_rate_multiplier": 1.0,
    } | (options or {})
    generation = str(blob.generation)
    return {
        "job_id": identity.job_id(bucket.name, name, generation, resolved),
        "dataset_id": identity.dataset_id(bucket.name, name, generation),
        "dataset_uri": f"gs://{bucket.name}/{name}",
        "bucket": bucket.name,
        "object": name,
        "generation": generation,
        "md5_hash": blob.md5_hash,
        "report_uri": None,
        "validation_uri": None,
        "base_model": resolved["base_model"],
        "tuning_mode": resolved.get("tuning_mode"),
        "options": resolved,
        "stats": {"examples": text.count("\n"), "billable_training_tokens": 1000} | (stats or {}),
        "requested_at": "2026-01-01T00:00:00+00:00",
    }


def job_document(firestore_db: Any, job_id: str) -> dict[str, Any] | None:
    snapshot = firestore_db.collection("jobs").document(job_id).get()
    return snapshot.to_dict() if snapshot.exists else None


def events_of(events: Any, job_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events.drain()
        if e.get("data", {}).get("job_id") == job_id and (event_type is None or e["type"] == event_type)
    ]


def wait_until_idle(stack: Any, firestore_db: Any) -> None:
    """Jobs of earlier tests still running would hold the stand-in's quota or droptune's slots."""
    from google.cloud.firestore_v1.base_query import FieldFilter
    from stack_support import wait_for

    def idle() -> bool:
        busy_in_standin = [
            j for j in standin_jobs(stack) if not j["state"].endswith(("SUCCEEDED", "FAILED", "CANCELLED"))
        ]
        query = firestore_db.collection("jobs").where(
            filter=FieldFilter("state", "in", ["launching", "running"])
        )
        return not busy_in_standin and not list(query.stream())

    wait_for(idle, timeout=300, interval=1, what="the stand-in and droptune's slots to be idle")


def run_jobs_command(capsys: Any, *argv: str, stderr: bool = False) -> tuple[int, str]:
    """`droptune jobs …` run in this process, as the CLI parses it; its exit code and stdout (or
    stderr)."""
    from droptune_cli.jobs_commands import add_jobs_commands

    parser = argparse.ArgumentParser(prog="droptune")
    add_jobs_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code = args.handler(args)
    captured = capsys.readouterr()
    return code, captured.err if stderr else captured.out
