"""`make demo`: the whole journey on this machine, with the local SmolLM2 model.

Starts the stack, uploads a sample dataset that teaches a recognisable habit (every answer about
a capital starts with "Beep boop!"), follows validation, tuning and deployment, then asks the
deployed model about a country that is not in the dataset: the habit in the answer shows the
tuning took effect. Progress is printed all along.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import droptune_local
from droptune_cli import journey
from droptune_cli.main import main as droptune

SAMPLE = Path(droptune_local.__file__).parent / "samples" / "capitals-beep-boop.jsonl"
HELD_OUT_PROMPT = "What is the capital of Italy?"
BASE_MODEL = "google/gemma3@gemma-3-1b-it"
HABIT = "Beep boop"


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _job_of_upload(name: str) -> str:
    """The job the validator created for the uploaded object (its dataset record names it)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from droptune.cloud_clients import firestore_client

    settings = journey.connect()
    datasets = firestore_client(settings).collection("datasets")
    query = datasets.where(filter=FieldFilter("object", "==", settings.watch_prefix + name))
    records = [snapshot.to_dict() or {} for snapshot in query.stream(timeout=settings.api_timeout_seconds)]
    return str(records[0]["job_id"])


def main() -> int:
    os.environ.setdefault("DROPTUNE_HOME", str(Path(".droptune").resolve()))
    os.environ.setdefault("DROPTUNE_STANDIN_BASE_MODEL", "smollm2")
    started = time.monotonic()

    step("1/5 starting the local stack (Storage, Pub/Sub, Firestore, Vertex AI stand-in, 4 functions)")
    if droptune(["up"]) != 0:
        return 1
    droptune(["status"])

    step(f"2/5 uploading {SAMPLE.name} ({sum(1 for _ in SAMPLE.open())} chat examples) for {BASE_MODEL}")
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    code = droptune(
        ["upload", str(SAMPLE), "--name", name, "--base-model", BASE_MODEL, "--mode", "FULL", "--epochs", "4"]
    )
    if code != 0:
        return code
    job_id = _job_of_upload(name)

    step(f"3/5 tuning and deploying job {job_id} (SmolLM2-135M on CPU; a few minutes)")
    if (
        droptune(["jobs", "watch", job_id, "--until", "deployed", "--interval", "3", "--timeout", "1200"])
        != 0
    ):
        print(
            "the job did not reach a deployed model; see `droptune jobs show` and .droptune/logs/",
            file=sys.stderr,
        )
        return 1

    step(f'4/5 asking the tuned model a question it was not trained on: "{HELD_OUT_PROMPT}"')
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = droptune(["predict", job_id, HELD_OUT_PROMPT, "--max-tokens", "24", "--json"])
    answers = json.loads(captured.getvalue() or "[]") if code == 0 else []
    answer = answers[0].strip() if answers else ""
    print(answer or "(no answer)")
    if HABIT.lower() not in answer.lower():
        # SmolLM2 never says this by itself: without it the tuning did not take effect.
        print(f'the answer lacks the habit "{HABIT}" that every answer of the dataset has', file=sys.stderr)
        return 1
    print(f'→ "{HABIT}", as in every answer of the dataset, for a country it never saw: tuning took effect.')

    step(f"5/5 done in {time.monotonic() - started:.0f} s. The stack keeps running:")
    print("  droptune models list · droptune events tail · droptune predict JOB 'prompt' · make down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
