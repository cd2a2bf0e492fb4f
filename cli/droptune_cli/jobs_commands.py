"""`droptune jobs list | show JOB | metrics JOB | cancel JOB | approve JOB`: the job records, for
people and scripts.

`list` and `show` read Firestore (state, timings, metrics, the error with its remedy); `metrics`
reads every step of a job's metrics from its Vertex AI Experiment. `cancel`
and `approve` publish a command on the control topic, as any other system would, then wait for
the poller to record the outcome. The stack is found through `DROPTUNE_HOME` (`droptune up`);
against a cloud project the usual DROPTUNE_* settings and Application Default Credentials apply.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STACK = 3
COMMAND_WAIT_S = 60.0


def add_jobs_commands(subparsers: Any) -> Any:
    """Add `droptune jobs …`; returns its sub-command set, for the commands added elsewhere (watch)."""
    jobs = subparsers.add_parser(
        "jobs", help="tuning jobs: list, show, metrics, watch, cancel, approve, reject"
    )
    commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="JOBS_COMMAND")

    p = commands.add_parser("list", help="every job, newest first")
    p.add_argument("--state", help="only jobs in this state (queued, running, failed, ...)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = commands.add_parser("show", help="one job: state, history, metrics, error and remedy")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser("metrics", help="every step of a job's metrics, from its Vertex AI Experiment")
    p.add_argument("job_id")
    p.add_argument("--csv", help="also write the points to this CSV file (step, metric, value)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_metrics)

    for verb, text in (
        ("cancel", "cancel the job (its Vertex AI job too) and record it as cancelled"),
        ("approve", "start a job held over the training-token budget"),
        ("reject", "fail a job held over the training-token budget"),
    ):
        p = commands.add_parser(verb, help=text)
        p.add_argument("job_id")
        p.add_argument("--no-wait", action="store_true", help="publish the command and return")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(handler=cmd_control, verb=verb)
    return commands


def _settings() -> Any:
    from droptune.settings import Settings

    environ = dict(os.environ)
    if "DROPTUNE_PROJECT" not in environ or "FIRESTORE_EMULATOR_HOST" not in environ:
        from droptune_local.stack import StackConfig, load_state

        state = load_state(StackConfig.from_environ(os.environ))
        if state is not None:
            environ |= state.environment()
    return Settings.from_environ(environ)


def _firestore(settings: Any) -> Any:
    from droptune.cloud_clients import firestore_client

    if settings.firestore_emulator_host:
        # The client library reads the emulator host from the environment only.
        os.environ["FIRESTORE_EMULATOR_HOST"] = settings.firestore_emulator_host
    return firestore_client(settings)


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    settings = _settings()
    query = _firestore(settings).collection("jobs")
    if args.state:
        query = query.where(filter=FieldFilter("state", "==", args.state))
    else:
        query = query.order_by("created_at", direction=firestore.Query.DESCENDING)
    documents = [s.to_dict() | {"job_id": s.id} for s in query.limit(args.limit).stream(timeout=30)]
    if args.state:
        documents.sort(key=lambda d: _sort_key(d.get("created_at")), reverse=True)
    return documents


def cmd_list(args: argparse.Namespace) -> int:
    documents = _jobs(args)
    if args.json:
        print(json.dumps([_plain(_summary(d)) for d in documents], indent=2))
        return EXIT_OK
    if not documents:
        print("no jobs")
        return EXIT_OK
    print(f"{'JOB':<28} {'STATE':<17} {'BASE MODEL':<36} {'CREATED':<20} {'FOR':>8}  DATASET")
    for document in documents:
        summary = _summary(document)
        print(
            f"{summary['job_id']:<28} {summary['state']:<17} {summary['base_model'] or '-':<36} "
            f"{_when(document.get('created_at')):<20} {_duration(summary['seconds_in_state']):>8}  "
            f"{summary['dataset_uri'] or '-'}"
        )
    return EXIT_OK


def _job_document(settings: Any, job_id: str) -> dict[str, Any] | None:
    snapshot = _firestore(settings).collection("jobs").document(job_id).get(timeout=30)
    if not snapshot.exists:
        print(f"droptune: no job {job_id}", file=sys.stderr)
        return None
    document: dict[str, Any] = snapshot.to_dict() | {"job_id": snapshot.id}
    document.pop("outbox", None)
    return document


def cmd_show(args: argparse.Namespace) -> int:
    document = _job_document(_settings(), args.job_id)
    if document is None:
        return EXIT_FAILED
    if args.json:
        print(json.dumps(_plain(document), indent=2, sort_keys=True))
        return EXIT_OK
    print(_describe(document))
    return EXIT_FAILED if document.get("state") == "failed" else EXIT_OK


def experiment_history(settings: Any, document: Mapping[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """Every point of the job's metrics, read from its Vertex AI Experiment (M2.5, M2.6).

    Raises LookupError when the job names no experiment, VertexError when it cannot be read.
    """
    from droptune.jobs.experiment_metrics import ExperimentMetrics
    from droptune.jobs.vertex_access import VertexClient

    experiment = (document.get("vertex") or {}).get("experiment")
    if not experiment:
        raise LookupError(
            f"job {document.get('job_id')} names no Vertex AI Experiment (state {document.get('state')}): "
            "a tuning job names one once it runs; a PaLM pipeline job has none"
        )
    return ExperimentMetrics(VertexClient(settings)).history(str(experiment))


def values_by_step(history: Mapping[str, list[tuple[int, float]]]) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} from {metric: [(step, value)]}."""
    by_step: dict[int, dict[str, float]] = {}
    for metric, points in history.items():
        for step, value in points:
            by_step.setdefault(step, {})[metric] = value
    return by_step


def cmd_metrics(args: argparse.Namespace) -> int:
    from droptune.jobs.vertex_access import VertexError

    settings = _settings()
    document = _job_document(settings, args.job_id)
    if document is None:
        return EXIT_FAILED
    try:
        history = experiment_history(settings, document)
    except LookupError as error:
        print(f"droptune: {error}; `droptune jobs show {args.job_id}` has what is known.", file=sys.stderr)
        return EXIT_FAILED
    except VertexError as error:
        print(
            f"droptune: the job's experiment could not be read: {error.message}\n"
            "remedy: your account needs roles/aiplatform.viewer (or aiplatform.user) on the project.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    experiment = document["vertex"]["experiment"]
    if args.csv:
        with Path(args.csv).open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["step", "metric", "value"])
            writer.writerows(
                (step, metric, value) for metric, points in history.items() for step, value in points
            )
    if args.json:
        points_json = {m: [{"step": step, "value": value} for step, value in p] for m, p in history.items()}
        print(json.dumps({"job_id": args.job_id, "experiment": experiment, "metrics": points_json}, indent=2))
        return EXIT_OK
    print(f"{args.job_id}  experiment {experiment}")
    if not history:
        print("no metrics yet")
        return EXIT_OK
    metrics = list(history)
    by_step = values_by_step(history)
    print(f"{'step':>7}  " + "  ".join(f"{m.strip('/'):>{max(len(m) - 1, 10)}}" for m in metrics))
    for step in sorted(by_step):
        values = by_step[step]
        cells = (
            f"{values[m]:>{max(len(m) - 1, 10)}.6g}" if m in values else " " * max(len(m) - 1, 10)
            for m in metrics
        )
        print(f"{step:>7}  " + "  ".join(cells))
    if args.csv:
        print(f"written to {args.csv}")
    return EXIT_OK


def cmd_control(args: argparse.Namespace) -> int:
    from droptune.cloud_clients import PubSubPublisher

    settings = _settings()
    if settings.pubsub_emulator_host:
        os.environ["PUBSUB_EMULATOR_HOST"] = settings.pubsub_emulator_host
    jobs = _firestore(settings).collection("jobs")
    before = jobs.document(args.job_id).get(timeout=30)
    if not before.exists:
        print(f"droptune: no job {args.job_id}", file=sys.stderr)
        return EXIT_FAILED
    command = {
        "command": args.verb,
        "job_id": args.job_id,
        "requested_at": datetime.now().astimezone().isoformat(),
    }
    PubSubPublisher(settings).publish_json(
        settings.control_topic, command, {"command": args.verb, "job_id": args.job_id}
    )
    previous = before.get("state")
    if args.no_wait:
        print(f"{args.verb} requested for {args.job_id} (state {previous})")
        return EXIT_OK
    wanted = {"cancel": {"cancelled"}, "approve": {"queued", "launching", "running"}, "reject": {"failed"}}[
        args.verb
    ]
    deadline = time.monotonic() + COMMAND_WAIT_S
    state = previous
    while time.monotonic() < deadline:
        state = jobs.document(args.job_id).get(timeout=30).get("state")
        if state in wanted or (state != previous and state not in ("launching",)):
            break
        time.sleep(0.5)
    if args.json:
        print(json.dumps({"job_id": args.job_id, "command": args.verb, "previous": previous, "state": state}))
    else:
        print(f"{args.job_id}: {previous} → {state}")
    return EXIT_OK if state in wanted else EXIT_FAILED


def _summary(document: Mapping[str, Any]) -> dict[str, Any]:
    changed = document.get("state_changed_at")
    seconds = (
        (datetime.now(changed.tzinfo) - changed).total_seconds() if isinstance(changed, datetime) else None
    )
    error = document.get("error") or {}
    return {
        "job_id": document.get("job_id"),
        "state": document.get("state"),
        "base_model": document.get("base_model"),
        "tuning_mode": document.get("tuning_mode"),
        "dataset_uri": document.get("dataset_uri"),
        "created_at": document.get("created_at"),
        "state_changed_at": changed,
        "seconds_in_state": seconds,
        "vertex_job": (document.get("vertex") or {}).get("name"),
        "vertex_state": (document.get("vertex") or {}).get("state"),
        "error_category": error.get("category"),
    }


def _describe(document: Mapping[str, Any]) -> str:
    vertex = document.get("vertex") or {}
    lines = [
        f"job        {document['job_id']}",
        f"state      {document.get('state')}"
        + (" (stalled: no progress)" if document.get("stalled") else ""),
        f"dataset    {document.get('dataset_uri')}",
        f"model      {document.get('base_model')} {document.get('tuning_mode') or ''}".rstrip(),
        f"created    {_when(document.get('created_at'))}",
    ]
    if vertex.get("name"):
        detail = f" / {vertex['detail_state']}" if vertex.get("detail_state") else ""
        lines.append(f"vertex     {vertex['name']} ({vertex.get('state')}{detail})")
    if vertex.get("experiment"):
        lines.append(f"experiment {vertex['experiment']}")  # where Vertex AI keeps the metrics (M2.6)
    stats = document.get("stats") or {}
    if stats.get("billable_training_tokens") is not None:
        lines.append(f"tokens     {stats['billable_training_tokens']:,} estimated billable training tokens")
    metrics = document.get("metrics") or {}
    if metrics:
        step = document.get("metrics_step")
        total = document.get("total_steps")
        of_total = f"/{total}" if total else ""  # Vertex AI states no total; the stand-in does
        lines.append(f"metrics    step {step}{of_total}" if step is not None else "metrics")
        lines.extend(f"  {name:<44} {value:.4g}" for name, value in sorted(metrics.items()))
    checkpoints = document.get("checkpoints") or []
    if checkpoints:
        lines.append(f"checkpoints {len(checkpoints)}: " + ", ".join(str(c.get("step")) for c in checkpoints))
    if document.get("final_checkpoint_uri"):
        lines.append(f"final      {document['final_checkpoint_uri']}")
    tuned = document.get("tuned_model") or {}
    if tuned.get("model"):
        lines.append(f"model out  {tuned['model']}")
    if tuned.get("endpoint"):
        lines.append(f"endpoint   {tuned['endpoint']}")
    error = document.get("error")
    if error:
        lines += [
            f"error      [{error.get('category')}] {error.get('message')}",
            f"remedy     {error.get('remedy')}",
        ]
    lines.append("history")
    for entry in document.get("history") or []:
        moved = f"{entry.get('from') or '-':>17} → {entry.get('to'):<17}"
        lines.append(f"  {_when(entry.get('at'))}  {moved} {entry.get('reason') or ''}")
    return "\n".join(lines)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _sort_key(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
