"""The user's journey: upload a dataset, follow its job, read events, list models, predict.

Every command works against the local stack (found through DROPTUNE_HOME) or a real project
(DROPTUNE_PROJECT, DROPTUNE_DATASETS_BUCKET and Application Default Credentials).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from droptune.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STACK = 0, 1, 2, 3
FINAL_STATES = {"failed", "cancelled", "deployed", "deploy_failed"}


def connect() -> Settings:
    """Settings for the CLI: the running local stack's, unless a project is configured."""
    environ = dict(os.environ)
    if "DROPTUNE_PROJECT" not in environ:
        from droptune_local.stack import StackConfig, load_state

        state = load_state(StackConfig.from_environ(environ))
        if state is None:
            raise SystemExit(
                "droptune: no local stack is running and DROPTUNE_PROJECT is not set. "
                "Start one with `droptune up`, or set DROPTUNE_PROJECT and DROPTUNE_DATASETS_BUCKET."
            )
        environ |= state.environment()
        os.environ.update(state.environment())  # the official clients read the emulator hosts
    return Settings.from_environ(environ)


def _clients(settings: Settings) -> tuple[Any, Any]:
    from droptune.cloud_clients import firestore_client, storage_client

    return storage_client(settings), firestore_client(settings)


# --- upload -------------------------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    from droptune import identity
    from droptune.datasets import paired_validation_name

    settings = connect()
    storage, db = _clients(settings)
    source = Path(args.file)
    if not source.is_file():
        print(f"droptune: {source} does not exist", file=sys.stderr)
        return EXIT_USAGE
    name = args.name or source.name
    if not name.endswith(".jsonl"):
        print(f"droptune: the object name must end with .jsonl (got {name})", file=sys.stderr)
        return EXIT_USAGE
    object_name = settings.watch_prefix + name
    bucket = storage.bucket(settings.datasets_bucket)
    metadata = {
        f"droptune-{option.replace('_', '-')}": str(value)
        for option, value in (
            ("base_model", args.base_model),
            ("tuning_mode", args.mode),
            ("epochs", args.epochs),
            ("learning_rate_multiplier", args.learning_rate_multiplier),
            ("adapter_size", args.adapter_size),
            ("display_name", args.display_name),
        )
        if value is not None
    }
    if args.validation:
        # The validation set goes first: the training upload is what triggers validation (M1.5).
        bucket.blob(paired_validation_name(object_name)).upload_from_filename(
            args.validation, timeout=settings.api_timeout_seconds
        )
    blob = bucket.blob(object_name)
    blob.metadata = metadata
    blob.upload_from_filename(str(source), content_type="application/jsonl", timeout=600)
    uri = f"gs://{settings.datasets_bucket}/{object_name}"
    dataset_id = identity.dataset_id(settings.datasets_bucket, object_name, str(blob.generation))
    if not args.json:
        print(f"uploaded {source} → {uri} (generation {blob.generation}); waiting for the validator …")
    record = _wait_for_document(db, "datasets", dataset_id, timeout=args.timeout)
    if record is None:
        print(f"droptune: no validation result for {uri} after {args.timeout} s", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(record, default=str, indent=2))
    else:
        if record["state"] != "validated":
            print(record.get("summary") or f"{record['state'].upper()}: {uri}")
        else:
            stats = record.get("stats") or {}
            exact = str(stats.get("token_count_method") or "").startswith("exact")
            print(
                f"VALID: {stats.get('examples')} examples, {'' if exact else 'about '}"
                f"{stats.get('total_tokens')} tokens ({stats.get('billable_training_tokens')} billable "
                f"training tokens, {'exact count' if exact else 'estimated'})"
            )
            print(f"job: {record['job_id']}   follow it with: droptune jobs watch {record['job_id']}")
        print(f"report: {record.get('report_uri')}")
    return EXIT_OK if record["state"] == "validated" else EXIT_FAILED


def _wait_for_document(
    db: Any, collection: str, document_id: str, *, timeout: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = db.collection(collection).document(document_id).get(timeout=10)
        if snapshot.exists:
            data: dict[str, Any] = snapshot.to_dict()
            return data
        time.sleep(0.5)
    return None


# --- jobs watch ---------------------------------------------------------------------------------


def _progress_line(job: dict[str, Any]) -> str:
    latest = job.get("metrics") or {}
    step, total = job.get("metrics_step"), job.get("total_steps")
    parts = [f"{job.get('state', '?'):<14}"]
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        filled = round(20 * step / total)
        parts.append(f"[{'#' * filled}{'.' * (20 - filled)}] {step}/{total}")
    for key in ("/train_total_loss", "/train_fraction_of_correct_next_step_preds", "/eval_total_loss"):
        if isinstance(latest.get(key), int | float):
            parts.append(f"{key.rsplit('/', 1)[-1]}={latest[key]:.4f}")
    return "  ".join(parts)


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    settings = connect()
    _, db = _clients(settings)
    deadline = time.monotonic() + args.timeout
    last = ""
    job: dict[str, Any] | None = None
    samples: dict[int, dict[str, float]] = {}  # step → metrics seen while watching, for --plot
    while time.monotonic() < deadline:
        snapshot = db.collection("jobs").document(args.job).get(timeout=10)
        job = snapshot.to_dict() if snapshot.exists else None
        if job and isinstance(job.get("metrics_step"), int) and job.get("metrics"):
            samples[job["metrics_step"]] = dict(job["metrics"])
        line = _progress_line(job) if job else "waiting for the launcher …"
        if line != last:
            print(f"{time.strftime('%H:%M:%S')}  {args.job}  {line}", flush=True)
            last = line
        if job and (
            job.get("state") in FINAL_STATES
            or job.get("state") == args.until
            or (job.get("deployment") or {}).get("skipped")
        ):
            break
        time.sleep(args.interval)
    if job is None:
        print(f"droptune: job {args.job} not found", file=sys.stderr)
        return EXIT_FAILED
    if args.plot:
        _plot(args.job, _plotted_points(settings, job, samples), Path(args.plot))
    error = job.get("error")
    if error:
        print(f"error ({error.get('category')}): {error.get('message')}\nremedy: {error.get('remedy')}")
    endpoint = job.get("endpoint") or (job.get("deployment") or {}).get("endpoint")
    if endpoint:
        print(f"endpoint: {endpoint}")
    return EXIT_OK if job.get("state") in ("deployed", "succeeded", args.until) else EXIT_FAILED


def _plotted_points(
    settings: Any, job: dict[str, Any], samples: dict[int, dict[str, float]]
) -> tuple[dict[int, dict[str, float]], str]:
    """Every step from the job's Vertex AI Experiment when it can be read, else what was seen."""
    from droptune.jobs.vertex_access import VertexError
    from droptune_cli.jobs_commands import experiment_history, values_by_step

    try:
        history = experiment_history(settings, job)
    except (LookupError, VertexError) as error:
        print(f"droptune: plotting the metrics seen while watching ({error})", file=sys.stderr)
        return samples, "metrics seen while watching"
    return values_by_step(history), "every step, from the job's Vertex AI Experiment"


def _plot(job_id: str, plotted: tuple[dict[int, dict[str, float]], str], path: Path) -> None:
    samples, where = plotted
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("droptune: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return
    figure, axis = plt.subplots(figsize=(7, 4))
    for key in ("/train_total_loss", "/eval_total_loss", "/train_fraction_of_correct_next_step_preds"):
        points = sorted((step, values[key]) for step, values in samples.items() if key in values)
        if points:
            axis.plot(*zip(*points, strict=True), label=key.strip("/"), marker=".")
    axis.set_xlabel("step")
    axis.set_title(f"{job_id} ({where})")
    axis.legend()
    figure.savefig(path, dpi=100)
    print(f"metrics plot written to {path}")


# --- events, models, predict --------------------------------------------------------------------


def cmd_events_tail(args: argparse.Namespace) -> int:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined, unused-ignore]

    settings = connect()
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(settings.project, f"droptune-tail-{uuid.uuid4().hex[:8]}")
    request: dict[str, Any] = {
        "name": path,
        "topic": f"projects/{settings.project}/topics/{settings.events_topic}",
        "expiration_policy": {"ttl": {"seconds": 86400}},
    }
    wanted = None
    if args.type:
        wanted = args.type if args.type.startswith("droptune.") else f"droptune.{args.type}"
        request["filter"] = f'attributes.type = "{wanted}"'
    subscriber.create_subscription(request=request, timeout=30)
    print(f"listening on {settings.events_topic} (Ctrl-C to stop)", file=sys.stderr)
    seen = 0
    try:
        while args.count is None or seen < args.count:
            response = subscriber.pull(request={"subscription": path, "max_messages": 50}, timeout=60)
            if response.received_messages:
                subscriber.acknowledge(
                    request={"subscription": path, "ack_ids": [m.ack_id for m in response.received_messages]}
                )
            for message in response.received_messages:
                event = json.loads(message.message.data)
                if wanted and event.get("type") != wanted:
                    continue  # the Pub/Sub emulator accepts filters but does not apply them
                seen += 1
                if args.json:
                    print(json.dumps(event), flush=True)
                else:
                    data = event.get("data") or {}
                    print(
                        f"{event.get('time')}  {event['type']:<28} {event.get('subject')}  "
                        f"{data.get('state') or data.get('endpoint') or data.get('dataset_uri') or ''}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.delete_subscription(request={"subscription": path}, timeout=30)
    return EXIT_OK


def cmd_models_list(args: argparse.Namespace) -> int:
    settings = connect()
    _, db = _clients(settings)
    rows = []
    for snapshot in db.collection("jobs").stream(timeout=30):
        job = snapshot.to_dict()
        tuned = job.get("tuned_model") or {}
        if not (tuned or job.get("endpoint")):
            continue
        rows.append(
            {
                "job_id": job["job_id"],
                "base_model": job.get("base_model"),
                "state": job.get("state"),
                "model": tuned.get("model"),
                "checkpoint": job.get("final_checkpoint_uri"),
                "endpoint": job.get("endpoint"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no tuned models yet")
    else:
        for row in rows:
            print(
                f"{row['job_id']}  {row['state']:<14} {row['base_model']}  endpoint: {row['endpoint'] or '-'}"
            )
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from droptune.vertex_rest import VertexApiError, VertexRest

    settings = connect()
    endpoint = args.target
    chat = bool(args.chat)
    if not endpoint.startswith("projects/"):
        _, db = _clients(settings)
        snapshot = db.collection("jobs").document(args.target).get(timeout=10)
        job = snapshot.to_dict() if snapshot.exists else None
        endpoint = job.get("endpoint") if job else None
        if not endpoint or job is None:
            print(f"droptune: {args.target} is not a deployed job or an endpoint name", file=sys.stderr)
            return EXIT_FAILED
        # A model tuned on conversations answers through the chat template it learned them with.
        chat = chat or (job.get("stats") or {}).get("format") == "chat_messages"
    vertex = VertexRest(settings)
    try:
        if chat:
            answers = [
                vertex.chat(endpoint, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature)
            ]
        else:
            instance = {"prompt": args.prompt, "max_tokens": args.max_tokens, "temperature": args.temperature}
            answers = [str(p) for p in vertex.predict(endpoint, [instance])]
    except VertexApiError as error:
        print(f"droptune: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(answers))
    else:
        # Model Garden's serving containers echo "Prompt:\n…\nOutput:\n" before a raw answer.
        text = answers[0] if answers else ""
        print(text.split("\nOutput:\n", 1)[-1].strip())
    return EXIT_OK


def add_commands(commands: Any) -> None:
    p = commands.add_parser("upload", help="upload a JSONL dataset and print its validation report")
    p.add_argument("file")
    p.add_argument("--name", help="object name under the watched prefix (default: the file's name)")
    p.add_argument("--base-model", help="a catalog id, e.g. google/gemma3@gemma-3-1b-it")
    p.add_argument("--mode", choices=("PEFT_ADAPTER", "FULL"), help="tuning mode")
    p.add_argument("--epochs", type=int)
    p.add_argument("--learning-rate-multiplier", type=float)
    p.add_argument("--adapter-size", type=int)
    p.add_argument("--display-name")
    p.add_argument("--validation", help="a validation JSONL, uploaded beside the dataset first")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_upload)

    from droptune_cli.validate_command import add_validate_command

    add_validate_command(commands)

    from droptune_cli.jobs_commands import add_jobs_commands

    job_commands = add_jobs_commands(commands)
    p = job_commands.add_parser("watch", help="follow a job with progress and live loss")
    p.add_argument("job")
    p.add_argument("--until", default="deployed", help="stop at this state (default: deployed)")
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--plot", help="write a PNG plot of the metrics seen while watching")
    p.set_defaults(handler=cmd_jobs_watch)

    events = commands.add_parser("events", help="read droptune events")
    event_commands = events.add_subparsers(dest="events_command", required=True, metavar="EVENTS_COMMAND")
    p = event_commands.add_parser("tail", help="print events as they are published")
    p.add_argument("--type", help="only this type, e.g. job.succeeded")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_events_tail)

    models = commands.add_parser("models", help="tuned models and their endpoints")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    p = model_commands.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_models_list)

    p = commands.add_parser("predict", help="ask a deployed model (a job id or an endpoint name)")
    p.add_argument("target")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--chat", action="store_true", help="use the chat route (the default for chat-tuned jobs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_predict)
