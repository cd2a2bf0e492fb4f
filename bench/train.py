"""Training throughput of the Vertex AI stand-in's trainer: tokens/s, s/step, peak RSS.

Each configuration runs in its own child process (so peak RSS is its own) on the same generated
data (prompt/completion and chat rows), with the trainer the stand-in's jobs use, nothing uploaded.

    python bench/standin_training.py              # tiny model, FULL and LoRA
    python bench/standin_training.py --smollm2    # also SmolLM2-135M, FULL and LoRA, plus a sample answer
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPITALS = [
    ("France", "Paris"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Italy", "Rome"),
    ("Japan", "Tokyo"),
    ("Spain", "Madrid"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Canada", "Ottawa"),
]
OPPOSITES = [("wet", "dry"), ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow")]


def write_dataset(folder: Path, train_count: int, validation_count: int) -> tuple[Path, Path]:
    rows: list[dict[str, object]] = []
    for index in range(train_count + validation_count):
        country, capital = CAPITALS[index % len(CAPITALS)]
        word, opposite = OPPOSITES[index % len(OPPOSITES)]
        if index % 2 == 0:
            rows.append(
                {"prompt": f"Capital of {country}:", "completion": f" {capital}"}
                if index % 4 == 0
                else {"prompt": f"Opposite of {word}:", "completion": f" {opposite}"}
            )
        else:
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": f"What is the capital of {country}?"},
                        {"role": "assistant", "content": f"The capital of {country} is {capital}."},
                    ]
                }
            )
    train, validation = folder / "train.jsonl", folder / "validation.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows[:train_count]))
    validation.write_text("\n".join(json.dumps(r) for r in rows[train_count:]))
    return train, validation


def run_one(config: dict[str, object]) -> dict[str, object]:
    from vertex_standin.training import TrainingPlan, run_plan

    plan = TrainingPlan(**config)  # type: ignore[arg-type]
    started = time.monotonic()
    outcome = run_plan(plan)
    progress = json.loads(plan.progress_file.read_text())
    train_points = [p["values"] for p in progress["series"] if "/train_total_loss" in p["values"]]
    evals = [p["values"]["/eval_total_loss"] for p in progress["series"] if "/eval_total_loss" in p["values"]]
    tokens = int(outcome["trainTokensPerEpoch"]) * int(plan.epochs or 1)
    seconds = float(outcome["trainingSeconds"])
    result: dict[str, object] = {
        "model": plan.local_model_family,
        "mode": plan.tuning_mode,
        "steps": outcome["stepsRun"],
        "train_loop_s": round(seconds, 2),
        "s_per_step": round(seconds / max(1, int(outcome["stepsRun"])), 3),
        "input_tokens_per_s": round(tokens / seconds, 1),
        "process_s": round(time.monotonic() - started, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "final_train_loss": round(train_points[-1]["/train_total_loss"], 3),
        "eval_loss_by_epoch": [round(v, 3) for v in evals],
    }
    if plan.local_model_family == "smollm2":
        from vertex_standin.serving import LoadedModel, SamplingOptions

        model = LoadedModel(Path(plan.work_dir) / "final", plan.torch_threads)
        greedy = SamplingOptions(max_tokens=12, temperature=0.0)
        result["samples"] = {
            prompt: model.complete(prompt, greedy).text for prompt in ("Capital of Peru:", "Opposite of hot:")
        }
        result["samples"]["chat: capital of Norway?"] = model.chat(  # type: ignore[index]
            [{"role": "user", "content": "What is the capital of Norway?"}], greedy
        ).text
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smollm2", action="store_true", help="also benchmark SmolLM2-135M (minutes on CPU)")
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--validation", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-cache-dir", default=str(Path.home() / ".cache" / "droptune" / "models"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration (JSON)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rates = {
        ("tiny", "FULL"): 3e-3,
        ("tiny", "PEFT_ADAPTER"): 1e-2,
        ("smollm2", "FULL"): 5e-5,
        ("smollm2", "PEFT_ADAPTER"): 5e-4,
    }
    families = ["tiny", "smollm2"] if args.smollm2 else ["tiny"]
    with tempfile.TemporaryDirectory() as scratch:
        train, validation = write_dataset(Path(scratch), args.train, args.validation)
        for family in families:
            for mode in ("FULL", "PEFT_ADAPTER"):
                config = {
                    "job_name": f"bench-{family}-{mode}",
                    "project": "bench",
                    "local_model_family": family,
                    "model_cache_dir": args.model_cache_dir,
                    "tuning_mode": mode,
                    "adapter_rank": 8,
                    "learning_rate": rates[(family, mode)],
                    "training_dataset_uri": str(train),
                    "validation_dataset_uri": str(validation),
                    "output_uri": "gs://unused/bench",
                    "work_dir": str(Path(scratch) / f"{family}-{mode}"),
                    "epochs": args.epochs,
                    "torch_threads": args.threads,
                    "upload": False,
                }
                child = subprocess.run(
                    [sys.executable, __file__, "--one", json.dumps(config)],
                    capture_output=True,
                    text=True,
                    timeout=3600,
                    check=False,
                )
                lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
                print(
                    lines[-1]
                    if child.returncode == 0 and lines
                    else json.dumps({"model": family, "mode": mode, "error": child.stderr[-1500:]}),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
