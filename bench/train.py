"""Training throughput of the Vertex AI stand-in's trainer, side by side with TRL's `SFTTrainer`.

Same model, same data, same hyper-parameters, same loss mask: both trainers get the token ids and
the completion / assistant-only labels the stand-in encodes (TRL takes them as an already tokenized
dataset with a "labels" column), batch 8, AdamW (weight decay 0), linear decay to 0 without warm-up,
gradient clipping at 1.0, fp32, validation and a checkpoint at the end of each epoch. TRL runs
with its defaults otherwise (padded batches), except gradient checkpointing and bf16, which are
off as in the stand-in. Each (model, mode, trainer) runs in its own child process, so peak RSS is
its own. Tokens/s counts the real (non-padding) tokens of the training set x epochs over the
training loop's wall time (validation and checkpoint writes included, on both sides). The final
validation loss of both is computed by the same code (`evaluate_examples`), so it compares.

    python bench/train.py                          # tiny model, FULL and LoRA
    python bench/train.py --smollm2 --smollm2-epochs 1   # also SmolLM2-135M (minutes on CPU)
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
from typing import Any

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
# Long enough that rows differ in length, as real datasets do: padding is what packing saves.
SYSTEM_PROMPT = "You are a concise geography tutor. Answer in one sentence."
TRAINERS = ("standin", "trl")


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
        elif index % 3 == 0:
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": f"Which city is the capital of {country}?"},
                        {"role": "assistant", "content": f"{capital} is the capital of {country}."},
                        {"role": "user", "content": f"And what is the opposite of {word}?"},
                        {"role": "assistant", "content": f"The opposite of {word} is {opposite}."},
                    ]
                }
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


def peak_rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_standin(config: dict[str, Any]) -> dict[str, Any]:
    from vertex_standin.training import TrainingPlan, run_plan

    plan = TrainingPlan(**config)
    outcome = run_plan(plan)
    progress = json.loads(plan.progress_file.read_text())
    steps_per_epoch = int(outcome["stepsRun"]) // int(plan.epochs or 1)
    train_losses = [
        p["values"]["/train_total_loss"] for p in progress["series"] if "/train_total_loss" in p["values"]
    ]
    evals = [p["values"]["/eval_total_loss"] for p in progress["series"] if "/eval_total_loss" in p["values"]]
    seconds = float(outcome["trainingSeconds"])
    tokens = int(outcome["trainTokensPerEpoch"]) * int(plan.epochs or 1)
    return {
        "steps": outcome["stepsRun"],
        "loop_s": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "computed_tokens_per_real_token": 1.0,  # packed: not one padding token
        "peak_rss_mib": peak_rss_mib(),
        "last_epoch_train_loss": round(sum(train_losses[-steps_per_epoch:]) / steps_per_epoch, 4),
        "final_eval_loss": round(evals[-1], 4),
    }


def run_trl(config: dict[str, Any], padding_free: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from vertex_standin.models import local_model_dir
    from vertex_standin.training import TrainingPlan, encode_example, evaluate_examples
    from vertex_standin.training_examples import parse_dataset

    plan = TrainingPlan(**config)
    torch.manual_seed(0)
    torch.set_num_threads(plan.torch_threads)
    folder = local_model_dir(plan.local_model_family, Path(plan.model_cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))

    def encoded(uri: str) -> list[Any]:
        examples = [encode_example(row, tokenizer) for row in parse_dataset(Path(uri).read_text(), uri)]
        assert all(len(e.input_ids) <= plan.max_sequence_length for e in examples), "bench rows must fit"
        return examples

    train_set = encoded(plan.training_dataset_uri)
    assert plan.validation_dataset_uri is not None
    validation_set = encoded(plan.validation_dataset_uri)

    def as_dataset(examples: list[Any]) -> Any:
        return Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])

    peft_config = None
    if plan.tuning_mode == "PEFT_ADAPTER":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=plan.adapter_rank,
            lora_alpha=2 * plan.adapter_rank,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    args = SFTConfig(
        output_dir=str(Path(plan.work_dir) / "trl"),
        num_train_epochs=plan.epochs or 1,
        per_device_train_batch_size=plan.batch_size,
        per_device_eval_batch_size=plan.batch_size,
        learning_rate=plan.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        # Rows are checked to fit above; TRL refuses a max_length it would not enforce (padding-free).
        max_length=None if padding_free else plan.max_sequence_length,
        padding_free=padding_free,
        gradient_checkpointing=False,
        bf16=False,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_only_model=True,
        logging_steps=1,
        report_to="none",
        seed=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=as_dataset(train_set),
        eval_dataset=as_dataset(validation_set),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    computed = {"tokens": 0}
    collate = trainer.data_collator

    def counting_collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = collate(rows)
        computed["tokens"] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting_collate
    started = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - started
    train_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    steps_per_epoch = trainer.state.global_step // int(plan.epochs or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    final = evaluate_examples(trainer.model, validation_set, plan.batch_size, device)
    epochs = int(plan.epochs or 1)
    tokens = sum(len(e.input_ids) for e in train_set) * epochs
    real = tokens + sum(len(e.input_ids) for e in validation_set) * epochs
    return {
        "steps": trainer.state.global_step,
        "loop_s": round(seconds, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        # Train and validation batches as the collator built them, over the real tokens in them.
        "computed_tokens_per_real_token": round(computed["tokens"] / real, 2),
        "peak_rss_mib": peak_rss_mib(),
        "last_epoch_train_loss": round(sum(train_losses[-steps_per_epoch:]) / steps_per_epoch, 4),
        "final_eval_loss": round(final["/eval_total_loss"], 4),
    }


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    trainer = config.pop("trainer")
    padding_free = config.pop("trl_padding_free", False)
    return run_trl(config, padding_free) if trainer == "trl" else run_standin(config)


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    """One configuration in a fresh child process, so that its peak RSS is its own."""
    child = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith('{"')]
    if child.returncode != 0 or not lines:
        return {"error": child.stderr[-1500:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with every run's tokens/s beside it.

    Others' work shares this machine's cores and only ever adds time (one run of the same
    configuration measured 10x slower than the next), so the fastest run is the closest to the
    trainer's own speed.
    """
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    fastest = max(runs, key=lambda run: float(run["tokens_per_s"]))
    return {**fastest, "tokens_per_s_runs": [run["tokens_per_s"] for run in runs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (minutes on CPU)")
    parser.add_argument("--only-smollm2", action="store_true", help="SmolLM2-135M only")
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--validation", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smollm2-epochs", type=int, default=1)
    parser.add_argument("--trl-padding-free", action="store_true", help="also TRL with padding_free=True")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest is kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-cache-dir", default=str(Path.home() / ".cache" / "droptune" / "models"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration (JSON)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vertex_standin.models import BASE_LEARNING_RATES

    families = ["smollm2"] if args.only_smollm2 else ["tiny", "smollm2"] if args.smollm2 else ["tiny"]
    variants: list[tuple[str, bool]] = [("standin", False), ("trl", False)]
    if args.trl_padding_free:
        variants.append(("trl", True))
    with tempfile.TemporaryDirectory() as scratch:
        train, validation = write_dataset(Path(scratch), args.train, args.validation)
        for family in families:
            for mode in ("FULL", "PEFT_ADAPTER"):
                configs = [
                    {
                        "trainer": trainer,
                        "trl_padding_free": padding_free,
                        "job_name": f"bench-{family}-{mode}",
                        "project": "bench",
                        "local_model_family": family,
                        "model_cache_dir": args.model_cache_dir,
                        "tuning_mode": mode,
                        "adapter_rank": 8,
                        "learning_rate": BASE_LEARNING_RATES[(family, mode)],
                        "training_dataset_uri": str(train),
                        "validation_dataset_uri": str(validation),
                        "output_uri": "gs://unused/bench",
                        "work_dir": str(Path(scratch) / f"{family}-{mode}-{trainer}-{padding_free}"),
                        "epochs": args.smollm2_epochs if family == "smollm2" else args.epochs,
                        "torch_threads": args.threads,
                        "upload": False,
                    }
                    for trainer, padding_free in variants
                ]
                # Rounds alternate the trainers, so a busy spell on the shared cores hits them alike.
                runs: list[list[dict[str, Any]]] = [[] for _ in configs]
                for _ in range(args.repeats):
                    for index, config in enumerate(configs):
                        runs[index].append(run_child(config))
                for config, its_runs in zip(configs, runs, strict=True):
                    name = str(config["trainer"]) + ("-padding-free" if config["trl_padding_free"] else "")
                    label = {"model": family, "mode": mode, "trainer": name}
                    print(json.dumps({**label, **best_of(its_runs)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
