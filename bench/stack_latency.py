"""The local stack's start-up time and the upload → validator latency (issue 2 §8).

Starts a fresh stack in a temporary DROPTUNE_HOME (cold: no state, emulators and functions all
new), then uploads N small datasets one after another with google-cloud-storage and measures,
per upload, from the end of the upload call to (a) the validator's "dataset received" log line
(the notification's trip: fake-gcs-server → Pub/Sub emulator → push → functions-framework) and
(b) the report appearing beside the file (the whole validator step). Prints p50/p95/max.

    python bench/stack_latency.py [--uploads 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from droptune_local.stack import StackConfig, down, up


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def received_times(log: Path) -> dict[str, float]:
    times = {}
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("message") == "dataset received":
            times[entry["object"]] = datetime.fromisoformat(entry["time"]).timestamp()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        config = StackConfig(home=Path(home), project="bench-stack", tick_seconds=60)
        started = time.perf_counter()
        state, _ = up(config)
        startup_s = time.perf_counter() - started
        try:
            os.environ.update(state.environment())
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            bucket = storage.Client(project=state.project, credentials=AnonymousCredentials()).bucket(
                state.bucket
            )
            row = json.dumps(
                {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
            )
            uploaded: dict[str, float] = {}
            to_report: list[float] = []
            for i in range(args.uploads):
                name = f"datasets/bench/{i:03d}.jsonl"
                bucket.blob(name).upload_from_string((row + "\n") * 20)
                uploaded[f"gs://{state.bucket}/{name}"] = time.time()
                deadline = time.monotonic() + 30
                while bucket.get_blob(name + ".report.json") is None:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"no report for {name} after 30 s")
                    time.sleep(0.005)
                to_report.append((time.time() - uploaded[f"gs://{state.bucket}/{name}"]) * 1000)
            received = received_times(Path(state.components["validator"].log))
            to_validator = [(received[uri] - at) * 1000 for uri, at in uploaded.items() if uri in received]
        finally:
            down(config)

    print(f"stack start-up (cold, {len(state.components)} components): {startup_s:.1f} s")
    for label, values in (
        ("upload → validator invoked", to_validator),
        ("upload → report written", to_report),
    ):
        print(
            f"{label}: n={len(values)} p50={statistics.median(values):.0f} ms "
            f"p95={percentile(values, 0.95):.0f} ms max={max(values):.0f} ms"
        )


if __name__ == "__main__":
    main()
