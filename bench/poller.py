"""One poller tick over 1,000 active jobs against the Vertex AI stand-in, beside a sequential baseline.

Starts its own Firestore emulator and stand-in (nothing else of the stack, so no other poller
reads the jobs), seeds 1,000 Vertex tuning jobs into the stand-in's state folder and 1,000
`running` job documents into Firestore, then times three ticks of the real poller core:

- first: the first tick after launch, which records each job's progress fingerprint (one write
  per job);
- steady: a tick where nothing changed (one query, one GET per job, no writes);
- baseline: the same steady tick with a parallelism of 1 (one GET after the other).

The seeded Vertex jobs are in JOB_STATE_QUEUED (a quota wait: "keep polling"), each with its
experiment and three steps of `/train_*` metrics, so the stand-in serves them, metrics included,
without starting 1,000 trainers. The first tick finds each job's series (context, runs, series
list, batchRead); a steady tick makes one GET and one batchRead per job.
Run: `python bench/poller.py [--jobs N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT = "droptune-bench"


class CountingPublisher:
    def __init__(self) -> None:
        self.published = 0

    def publish_json(self, topic: str, body: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
        self.published += 1
        return str(self.published)


SERIES = [
    {
        "/train_total_loss": 2.5,
        "/train_fraction_of_correct_next_step_preds": 0.4,
        "/train_num_predictions": 96,
    },
    {
        "/train_total_loss": 2.1,
        "/train_fraction_of_correct_next_step_preds": 0.5,
        "/train_num_predictions": 96,
    },
    {
        "/train_total_loss": 1.8,
        "/train_fraction_of_correct_next_step_preds": 0.6,
        "/train_num_predictions": 96,
    },
]


def seed_standin(state_dir: Path, count: int) -> list[str]:
    from vertex_standin.experiments import experiment_name

    folder = state_dir / "resources" / "tuningJobs"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for index in range(count):
        resource_id = str(9_000_000_000 + index)
        name = f"projects/{PROJECT}/locations/us-central1/tuningJobs/{resource_id}"
        resource = {
            "name": name,
            "tunedModelDisplayName": f"bench-{index}",
            "baseModel": "google/gemma3@gemma-3-1b-it",
            "state": "JOB_STATE_QUEUED",
            "createTime": now,
            "updateTime": now,
            "labels": {"app": "droptune", "droptune-job-id": f"job-bench-{index:05d}"},
            "outputUri": f"gs://bench/tuned/job-bench-{index:05d}/",
            # Its experiment, whose TensorBoard series the stand-in serves from this record.
            "experiment": experiment_name(f"projects/{PROJECT}/locations/us-central1", resource_id),
            "droptuneMetrics": {
                "series": [
                    {"step": step, "epoch": step / 10, "wallTime": now, "values": dict(values)}
                    for step, values in enumerate(SERIES, start=1)
                ],
                "currentStep": len(SERIES),
                "totalSteps": 30,
                "checkpoints": [],
            },
        }
        (folder / f"{resource_id}.json").write_text(json.dumps({"resource": resource, "internal": {}}))
        names.append(name)
    return names


def seed_firestore(db: Any, names: list[str]) -> None:
    from google.cloud import firestore

    from droptune.jobs.record import new_job_document

    now = datetime.now(UTC)
    batch = db.batch()
    for index, name in enumerate(names):
        job_id = f"job-bench-{index:05d}"
        document = new_job_document(
            {
                "job_id": job_id,
                "dataset_id": f"ds-bench-{index:05d}",
                "dataset_uri": f"gs://bench/datasets/{index}.jsonl",
                "bucket": "bench",
                "object": f"datasets/{index}.jsonl",
                "generation": "1",
                "base_model": "google/gemma3@gemma-3-1b-it",
                "tuning_mode": "FULL",
                "options": {"epochs": 3},
            },
            now=now,
        ) | {
            "state": "running",
            "created_at": firestore.SERVER_TIMESTAMP,
            "queued_at": firestore.SERVER_TIMESTAMP,
            "vertex": {
                "name": name,
                "kind": "tuningJobs",
                "region": "us-central1",
                "state": "JOB_STATE_QUEUED",
            },
            "progress_at": now,
            "progress_fingerprint": "",
        }
        batch.set(db.collection("jobs").document(job_id), document)
        if index % 400 == 399:
            batch.commit()
            batch = db.batch()
    batch.commit()


def run_tick(settings: Any, db: Any, parallelism: int) -> dict[str, Any]:
    from droptune.jobs.poller import Poller, build_context

    context = build_context(settings, db, CountingPublisher())
    poller = Poller(context, parallelism=parallelism)
    started = time.perf_counter()
    report = poller.tick()
    return {
        "seconds": time.perf_counter() - started,
        "polled": report.polled,
        "errors": report.errors,
        "updated": report.updated,
        **report.calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=16)
    args = parser.parse_args()

    from droptune_local import processes
    from droptune_local.emulators import find_emulators

    home = Path(tempfile.mkdtemp(prefix="droptune-bench-poller-"))
    names = seed_standin(home / "vertex", args.jobs)
    firestore_port, vertex_port = processes.free_port(), processes.free_port()
    emulators = find_emulators()
    started = [
        processes.start_process(
            emulators.firestore_command(firestore_port),
            env=dict(os.environ),
            log_path=home / "firestore.log",
            cwd=home,
        ),
        processes.start_process(
            [
                sys.executable,
                "-m",
                "vertex_standin",
                "--host",
                "127.0.0.1",
                "--port",
                str(vertex_port),
                "--state-dir",
                str(home / "vertex"),
                "--project",
                PROJECT,
            ],
            env=dict(os.environ),
            log_path=home / "vertex.log",
            cwd=Path(__file__).resolve().parents[1],
        ),
    ]
    try:
        deadline = time.monotonic() + 120
        while not (
            processes.http_ready(f"http://127.0.0.1:{firestore_port}")
            and processes.http_ready(f"http://127.0.0.1:{vertex_port}/healthz")
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"emulator or stand-in did not start; logs in {home}")
            time.sleep(0.3)
        os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{firestore_port}"
        from droptune.cloud_clients import firestore_client
        from droptune.settings import Settings

        settings = Settings(
            project=PROJECT,
            datasets_bucket="bench",
            vertex_api_endpoint=f"http://127.0.0.1:{vertex_port}",
            firestore_emulator_host=f"127.0.0.1:{firestore_port}",
            storage_emulator_host="http://127.0.0.1:1",
            pubsub_emulator_host="127.0.0.1:1",
            max_concurrent_jobs=args.jobs,
        )
        db = firestore_client(settings)
        seed_firestore(db, names)
        results = {
            f"first tick (parallel {args.parallelism})": run_tick(settings, db, args.parallelism),
            f"steady tick (parallel {args.parallelism})": run_tick(settings, db, args.parallelism),
            "steady tick (sequential baseline)": run_tick(settings, db, 1),
        }
    finally:
        for record in reversed(started):
            processes.stop_process(record)
    where = f"Firestore emulator + Vertex AI stand-in, {os.cpu_count()} CPUs"
    print(f"poller tick over {args.jobs} active jobs ({where})")
    print(f"{'tick':<34} {'wall s':>8} {'polled':>7} {'Vertex calls':>13} {'FS reads':>9} {'FS writes':>10}")
    for label, row in results.items():
        print(
            f"{label:<34} {row['seconds']:>8.2f} {row['polled']:>7} {row['vertex_calls']:>13} "
            f"{row['firestore_reads']:>9} {row['firestore_writes']:>10}"
        )
    baseline = results["steady tick (sequential baseline)"]["seconds"]
    steady = results[f"steady tick (parallel {args.parallelism})"]["seconds"]
    print(f"speed-up of the parallel steady tick over the sequential one: {baseline / steady:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
