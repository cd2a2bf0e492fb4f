"""Supervised fine-tuning for one job, run as its own process: `python -m vertex_standin.training PLAN.json`.

The server never trains in a request thread: it writes a plan, starts this worker and reads the
progress file the worker rewrites as it goes. The worker reports its end in an outcome file; a
worker that dies without one is an internal error (the service's 500 "Internal error encountered").
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertex_standin.artifacts import (
    CHECKPOINTS_FOLDER,
    DatasetUnreadableError,
    download_folder,
    ensure_bucket,
    name_shards_as_vertex,
    read_dataset_text,
    upload_folder,
)
from vertex_standin.models import UnknownBaseModelError, local_model_dir
from vertex_standin.resources import timestamp
from vertex_standin.tensorboard_events import ScalarEventWriter
from vertex_standin.training_examples import (
    ChatExample,
    CompletionExample,
    DatasetFormatError,
    TrainingExample,
    parse_dataset,
)

if TYPE_CHECKING:
    import torch

MAX_CHECKPOINTS = 10  # the service keeps at most ten intermediate checkpoints (M1.8)
IGNORED_LABEL = -100
METRICS_UPLOAD_INTERVAL_S = 15.0


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a worker needs; written as JSON by the server."""

    job_name: str
    project: str
    local_model_family: str
    model_cache_dir: str
    tuning_mode: str  # "FULL" | "PEFT_ADAPTER"
    adapter_rank: int
    learning_rate: float
    training_dataset_uri: str
    output_uri: str
    work_dir: str
    epochs: int | None = None
    train_steps: int | None = None  # PaLM pipelines count steps, not epochs (M3.4)
    batch_size: int = 8
    validation_dataset_uri: str | None = None
    custom_base_model_uri: str | None = None
    default_context: str | None = None
    evaluation_interval: int | None = None
    enable_early_stopping: bool = False
    enable_checkpoint_selection: bool = False
    max_sequence_length: int = 1024
    torch_threads: int = 2
    # Where checkpoints go; None keeps them local (the benchmark).
    upload: bool = True

    @property
    def progress_file(self) -> Path:
        return Path(self.work_dir) / "progress.json"

    @property
    def outcome_file(self) -> Path:
        return Path(self.work_dir) / "outcome.json"


class TrainingInputError(ValueError):
    """Bad input the user must fix (google.rpc.Code INVALID_ARGUMENT = 3)."""


@dataclass
class EncodedExample:
    input_ids: list[int]
    labels: list[int]


@dataclass
class ProgressReport:
    """The worker's running account, rewritten atomically for the server to read."""

    path: Path
    series: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    data_stats: dict[str, Any] = field(default_factory=dict)
    current_step: int = 0
    total_steps: int = 0
    _last_write: float = 0.0

    def record(self, step: int, epoch: float, values: dict[str, float], force: bool = False) -> None:
        # wallTime as the TensorBoard API gives a point's time (RFC 3339), for the experiment view.
        self.series.append(
            {"step": step, "epoch": round(epoch, 4), "wallTime": timestamp(), "values": values}
        )
        self.current_step = step
        self.write(force)

    def write(self, force: bool = True) -> None:
        # Throttled: a tiny model steps hundreds of times a second.
        if not force and time.monotonic() - self._last_write < 0.5:
            return
        document = {
            "series": self.series,
            "checkpoints": self.checkpoints,
            "tuningDataStats": self.data_stats,
            "currentStep": self.current_step,
            "totalSteps": self.total_steps,
        }
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(document))
        scratch.replace(self.path)
        self._last_write = time.monotonic()


def run_plan(plan: TrainingPlan) -> dict[str, Any]:  # noqa: PLR0912, PLR0915 - one loop, read top to bottom
    """Train, write every artifact, return the outcome (what the server puts on the job)."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, plan.torch_threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(plan.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    progress = ProgressReport(plan.progress_file)

    tokenizer, model = _load_base_model(plan, work)
    train_rows = _read_examples(plan.training_dataset_uri, plan)
    validation_rows = _read_examples(plan.validation_dataset_uri, plan) if plan.validation_dataset_uri else []
    train_set, truncated = _encode_all(train_rows, tokenizer, plan.max_sequence_length)
    validation_set, _ = _encode_all(validation_rows, tokenizer, plan.max_sequence_length)

    steps_per_epoch = math.ceil(len(train_set) / plan.batch_size)
    total_steps = plan.train_steps if plan.train_steps is not None else steps_per_epoch * (plan.epochs or 1)
    epochs_equivalent = total_steps / steps_per_epoch
    train_tokens = sum(len(e.input_ids) for e in train_set)
    progress.total_steps = total_steps
    progress.data_stats = {
        "tuningDatasetExampleCount": str(len(train_set)),
        "totalTuningCharacterCount": str(sum(_character_count(r) for r in train_rows)),
        # Billable training tokens = tokens in the training set x epochs (M1.12).
        "totalBillableTokenCount": str(round(train_tokens * epochs_equivalent)),
        "tuningStepCount": str(total_steps),
        "totalTruncatedExampleCount": str(len(truncated)),
        "truncatedExampleIndices": [str(i) for i in truncated[:100]],
    }
    progress.write()

    model.to(device)
    if plan.tuning_mode == "PEFT_ADAPTER":
        from peft import LoraConfig, get_peft_model

        # Adapter size is the LoRA rank; alpha = 2 x rank keeps the update scale stable across sizes.
        model = get_peft_model(
            model,
            LoraConfig(
                r=plan.adapter_rank,
                lora_alpha=2 * plan.adapter_rank,
                lora_dropout=0.0,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Fused: one kernel per step instead of a pass per operation; faster and lighter on CPU and GPU.
    optimizer = torch.optim.AdamW(trainable, lr=plan.learning_rate, weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))

    events = ScalarEventWriter(work / "tensorboard")
    metrics_log = work / "metrics.jsonl"
    save_steps = _checkpoint_steps(plan, steps_per_epoch, total_steps)
    eval_steps = _evaluation_steps(plan, steps_per_epoch, total_steps) if validation_set else set()

    last_upload = time.monotonic()

    def log(step: int, values: dict[str, float]) -> None:
        nonlocal last_upload
        progress.record(
            step, step / steps_per_epoch, values, force=any(k.startswith("/eval") for k in values)
        )
        events.add_scalars(step, values)
        with metrics_log.open("a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        # Readers of the bucket see metrics while the job runs, not only at checkpoints.
        if plan.upload and time.monotonic() - last_upload > METRICS_UPLOAD_INTERVAL_S:
            _upload_metrics(plan, work)
            last_upload = time.monotonic()

    best_eval = math.inf
    evaluations_without_gain = 0
    best_folder = work / "best"
    step = 0
    stopped_early = False
    started = time.monotonic()
    model.train()
    for batch in _batches(train_set, plan.batch_size, total_steps, device):
        step += 1
        loss_sum, correct, count = _forward_metrics(model, batch)
        loss = loss_sum / count.clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        n = int(count.item())
        log(
            step,
            {
                "/train_total_loss": float(loss.item()),
                "/train_fraction_of_correct_next_step_preds": float(correct.item()) / max(n, 1),
                "/train_num_predictions": float(n),
            },
        )
        if step in eval_steps:
            eval_values = evaluate_examples(model, validation_set, plan.batch_size, device)
            log(step, eval_values)
            eval_loss = eval_values["/eval_total_loss"]
            if eval_loss < best_eval - 1e-4:
                best_eval, evaluations_without_gain = eval_loss, 0
                if plan.enable_checkpoint_selection:
                    _save_model_folder(model, tokenizer, best_folder)
            else:
                evaluations_without_gain += 1
            # Early stopping (M3.4): three evaluations in a row without a better validation loss.
            if plan.enable_early_stopping and evaluations_without_gain >= 3:
                stopped_early = True
        if step in save_steps or stopped_early:
            _publish_checkpoint(
                plan=plan,
                model=model,
                tokenizer=tokenizer,
                work=work,
                step=step,
                epoch=step / steps_per_epoch,
                progress=progress,
            )
        if stopped_early:
            break
    training_seconds = time.monotonic() - started

    final = work / "final"
    if plan.enable_checkpoint_selection and best_folder.exists():
        best_folder.rename(final)
    else:
        _save_model_folder(model, tokenizer, final)
    if plan.tuning_mode == "PEFT_ADAPTER":
        model.save_pretrained(final / "adapter")  # the adapter alone, for serving as base + adapter
    final_uri = f"{plan.output_uri.rstrip('/')}/{CHECKPOINTS_FOLDER}/final"
    if plan.upload:
        upload_folder(final, final_uri, plan.project)
        _upload_metrics(plan, work)
    progress.write()
    return {
        "finalCheckpointUri": final_uri,
        "checkpoints": progress.checkpoints,
        "stepsRun": step,
        "stoppedEarly": stopped_early,
        "trainingSeconds": round(training_seconds, 3),
        "trainTokensPerEpoch": train_tokens,
    }


def _character_count(row: TrainingExample) -> int:
    if isinstance(row, CompletionExample):
        return len(row.prompt) + len(row.completion)
    return sum(len(turn.content) for turn in row.turns)


def _load_base_model(plan: TrainingPlan, work: Path) -> tuple[Any, Any]:
    from google.api_core.exceptions import NotFound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if plan.custom_base_model_uri:
        try:
            folder = download_folder(plan.custom_base_model_uri, work / "custom_base_model", plan.project)
        except (DatasetUnreadableError, NotFound, ValueError) as error:
            raise TrainingInputError(
                f"Custom base model {plan.custom_base_model_uri} could not be read: {error}"
            ) from error
        if not (folder / "config.json").exists():
            raise TrainingInputError(
                f"Custom base model {plan.custom_base_model_uri} is not a Hugging Face folder "
                "(no config.json)"
            )
    else:
        try:
            folder = local_model_dir(plan.local_model_family, Path(plan.model_cache_dir))
        except UnknownBaseModelError as error:
            raise TrainingInputError(str(error)) from error
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    return tokenizer, model


def _read_examples(uri: str | None, plan: TrainingPlan) -> list[TrainingExample]:
    if uri is None:
        return []
    try:
        # Only a run that uploads nothing (the benchmark) may read a local file; jobs read gs://.
        text = (
            Path(uri).read_text()
            if not plan.upload and not uri.startswith("gs://")
            else read_dataset_text(uri, plan.project)
        )
        return parse_dataset(text, uri, plan.default_context)
    except (DatasetUnreadableError, DatasetFormatError) as error:
        raise TrainingInputError(str(error)) from error


def encode_example(example: TrainingExample, tokenizer: Any) -> EncodedExample:
    """Token ids plus labels that are IGNORED_LABEL everywhere but the completion / assistant text."""
    if isinstance(example, CompletionExample):
        prompt = _ids(tokenizer, example.prompt)
        completion = [*_ids(tokenizer, example.completion), tokenizer.eos_token_id]
        return EncodedExample(prompt + completion, [IGNORED_LABEL] * len(prompt) + completion)
    return _encode_chat(example, tokenizer)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    if not messages:
        return ""
    return str(
        tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    )


def _encode_chat(example: ChatExample, tokenizer: Any) -> EncodedExample:
    # Render growing prefixes of the conversation; the text an assistant turn adds is the only
    # labelled span. Each span is tokenized on its own so the boundary is exact.
    messages = [{"role": t.role, "content": t.content} for t in example.turns]
    input_ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        after = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not before.startswith(rendered) or not after.startswith(before):
            raise TrainingInputError("the model's chat template does not render conversations prefix-stably")
        context_ids = _ids(tokenizer, before[len(rendered) :])
        answer_ids = _ids(tokenizer, after[len(before) :])
        input_ids += context_ids + answer_ids
        labels += [IGNORED_LABEL] * len(context_ids) + answer_ids
        rendered = after
    return EncodedExample(input_ids, labels)


def _encode_all(
    rows: list[TrainingExample], tokenizer: Any, max_length: int
) -> tuple[list[EncodedExample], list[int]]:
    encoded, truncated = [], []
    for index, row in enumerate(rows):
        example = encode_example(row, tokenizer)
        if len(example.input_ids) > max_length:
            truncated.append(index)
            example = EncodedExample(example.input_ids[:max_length], example.labels[:max_length])
        encoded.append(example)
    return encoded, truncated


def _checkpoint_steps(plan: TrainingPlan, steps_per_epoch: int, total_steps: int) -> set[int]:
    if plan.train_steps is None:
        epochs = plan.epochs or 1
        # One per epoch when there are at most ten; otherwise ten spread over the run (M1.8).
        chosen = (
            range(1, epochs + 1)
            if epochs <= MAX_CHECKPOINTS
            else {math.ceil(k * epochs / MAX_CHECKPOINTS) for k in range(1, MAX_CHECKPOINTS + 1)}
        )
        return {min(epoch * steps_per_epoch, total_steps) for epoch in chosen}
    count = min(MAX_CHECKPOINTS, total_steps)
    return {math.ceil(k * total_steps / count) for k in range(1, count + 1)}


def _evaluation_steps(plan: TrainingPlan, steps_per_epoch: int, total_steps: int) -> set[int]:
    if plan.train_steps is not None and plan.evaluation_interval:
        return {*range(plan.evaluation_interval, total_steps + 1, plan.evaluation_interval), total_steps}
    return {
        min(e * steps_per_epoch, total_steps) for e in range(1, math.ceil(total_steps / steps_per_epoch) + 1)
    }


def _batches(
    examples: list[EncodedExample], batch_size: int, total_steps: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    produced = 0
    while produced < total_steps:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            if produced == total_steps:
                return
            yield _pack([examples[i] for i in order[start : start + batch_size]], device)
            produced += 1


def _pack(examples: list[EncodedExample], device: torch.device) -> dict[str, torch.Tensor]:
    """One batch as a single row, examples end to end: no padding token is ever computed.

    Position ids restart at 0 for each example; with no attention mask, transformers reads the
    restarts as packed sequences and attends only within each example (masking_utils,
    find_packed_sequence_indices), so the loss equals that of the padded batch. Each example's first
    label is ignored: it would otherwise be predicted from the end of the previous example.
    """
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        ids += example.input_ids
        labels += [IGNORED_LABEL, *example.labels[1:]]
        positions += range(len(example.input_ids))
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long, device=device),
        "labels": torch.tensor([labels], dtype=torch.long, device=device),
        "position_ids": torch.tensor([positions], dtype=torch.long, device=device),
    }


def _forward_metrics(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, correct next-token predictions and their count, on labelled tokens only."""
    from torch.nn import functional

    # Position i predicts token i + 1. Only positions whose next token is labelled go through the
    # vocabulary projection (logits_to_keep): prompt and context tokens never need logits, and the
    # projection is the widest matrix of a small model (SmolLM2: 576 x 49,152).
    targets = batch["labels"][0, 1:]
    labelled = targets != IGNORED_LABEL
    keep = labelled.nonzero().flatten()
    logits = model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        use_cache=False,  # a cache would make transformers ignore the packed position ids
        logits_to_keep=keep,
    ).logits
    logits = logits.reshape(-1, logits.shape[-1])
    kept = targets[keep]
    loss_sum = functional.cross_entropy(logits.float(), kept, reduction="sum")
    correct = (logits.argmax(-1) == kept).sum()
    return loss_sum, correct, labelled.sum()


def evaluate_examples(
    model: Any, examples: list[EncodedExample], batch_size: int, device: torch.device
) -> dict[str, float]:
    """The `/eval_*` metrics: token-weighted loss and accuracy over completion / assistant tokens."""
    import torch

    model.eval()
    loss_total, correct_total, count_total = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            loss_sum, correct, count = _forward_metrics(
                model, _pack(examples[start : start + batch_size], device)
            )
            loss_total += float(loss_sum.item())
            correct_total += int(correct.item())
            count_total += int(count.item())
    model.train()
    return {
        "/eval_total_loss": loss_total / max(count_total, 1),
        "/eval_fraction_of_correct_next_step_preds": correct_total / max(count_total, 1),
        "/eval_num_predictions": float(count_total),
    }


def _save_model_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """A plain, deployable Hugging Face folder; a LoRA model is saved merged into its base."""
    if folder.exists():
        shutil.rmtree(folder)
    to_save = model
    if hasattr(model, "merge_and_unload"):
        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    name_shards_as_vertex(folder)


def _publish_checkpoint(
    *,
    plan: TrainingPlan,
    model: Any,
    tokenizer: Any,
    work: Path,
    step: int,
    epoch: float,
    progress: ProgressReport,
) -> None:
    folder = work / "checkpoints" / f"checkpoint-{step}"
    _save_model_folder(model, tokenizer, folder)
    uri = f"{plan.output_uri.rstrip('/')}/{CHECKPOINTS_FOLDER}/checkpoint-{step}"
    if plan.upload:
        upload_folder(folder, uri, plan.project)
        _upload_metrics(plan, work)
        shutil.rmtree(folder)  # the bucket holds it now; full checkpoints of real models are large
    progress.checkpoints.append(
        {
            "checkpointId": str(len(progress.checkpoints) + 1),
            "epoch": str(max(1, math.ceil(epoch - 1e-9))),
            "step": str(step),
            "uri": uri,
        }
    )
    progress.write()


def _upload_metrics(plan: TrainingPlan, work: Path) -> None:
    base = plan.output_uri.rstrip("/")
    upload_folder(work / "tensorboard", f"{base}/tensorboard", plan.project)
    from vertex_standin.artifacts import split_gs_uri, storage_client

    bucket, path = split_gs_uri(f"{base}/metrics.jsonl")
    storage_client(plan.project).bucket(bucket).blob(path).upload_from_filename(
        str(work / "metrics.jsonl"), timeout=120
    )


def main(argv: Sequence[str]) -> int:
    plan = TrainingPlan(**json.loads(Path(argv[0]).read_text()))
    try:
        if plan.upload:
            ensure_bucket(plan.output_uri, plan.project)
        result = run_plan(plan)
        outcome: dict[str, Any] = {"ok": True, **result}
    except TrainingInputError as error:
        outcome = {"ok": False, "code": 3, "message": str(error)}
    scratch = plan.outcome_file.with_suffix(".tmp")
    scratch.write_text(json.dumps(outcome))
    scratch.replace(plan.outcome_file)
    print(
        json.dumps(
            {
                "severity": "INFO",
                "message": "training worker finished",
                "job": plan.job_name,
                "ok": outcome["ok"],
            }
        ),
        flush=True,
    )
    return 0


def plan_to_json(plan: TrainingPlan) -> str:
    return json.dumps(asdict(plan), indent=1)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
