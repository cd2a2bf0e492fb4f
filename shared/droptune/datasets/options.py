"""Tuning options without code (M4.1): defaults from settings, per upload from the object's
metadata and/or a manifest beside the file, each checked against the model catalog.

Precedence, lowest first: settings defaults < manifest < object metadata (the most specific to one
upload wins). Object metadata keys carry the prefix `droptune-` (e.g. `droptune-base-model`, set
with `gcloud storage cp --custom-metadata=droptune-base-model=…`); other metadata is not ours and
is ignored. Manifest fields and defaults use the option names below (`base_model`, `epochs`, …).

Every problem names the option, where its value came from, the bad value and what is allowed.
"""

import difflib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from droptune.catalog import (
    KNOWN_MODEL_IDS,
    ModelFamily,
    ModelSpec,
    RetiredModelPolicy,
    TuningMode,
    get_model,
    retirement_remedy,
)

METADATA_PREFIX = "droptune-"
VALIDATION_SUFFIX = ".validation.jsonl"
DEFAULT_OPEN_MODEL_EPOCHS = 3  # the seed's example (sft.train(..., epochs=3))
# Vertex resource display names are limited to 128 characters.
MAX_DISPLAY_NAME = 128
PALM_ACCELERATORS = ("GPU", "TPU")
KMS_KEY = re.compile(r"^projects/[^/]+/locations/([^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+$")

OPTION_NAMES = (
    "base_model",
    "tuning_mode",
    "epochs",
    "learning_rate_multiplier",
    "adapter_size",
    "region",
    "display_name",
    "validation_dataset",
    "output_uri",
    "custom_base_model",
    "encryption_key_name",
    "train_steps",
    "accelerator_type",
    "default_context",
    "evaluation_interval",
    "enable_early_stopping",
)


def paired_validation_name(training_object: str) -> str:
    """The naming rule that pairs a validation set with its training file (M1.5):
    `data/train.jsonl` → `data/train.validation.jsonl`, uploaded beside it."""
    stem = training_object[: -len(".jsonl")] if training_object.endswith(".jsonl") else training_object
    return stem + VALIDATION_SUFFIX


def is_validation_dataset_name(object_name: str) -> bool:
    """A validation file is validated with its training file, never as an upload of its own."""
    return object_name.endswith(VALIDATION_SUFFIX)


@dataclass(frozen=True)
class OptionProblem:
    option: str
    source: str  # "default", "metadata droptune-epochs", "manifest field epochs"
    value: str
    allowed: str
    message: str

    def describe(self) -> str:
        return f"{self.option} = {self.value!r} (from {self.source}): {self.message} Allowed: {self.allowed}."


class OptionsError(ValueError):
    """The options of an upload are wrong; `problems` holds every one found, not just the first."""

    def __init__(self, problems: tuple[OptionProblem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(problem.describe() for problem in problems))


@dataclass(frozen=True)
class TuningOptions:
    base_model: str
    region: str
    tuning_mode: TuningMode | None = None
    epochs: int | None = None
    learning_rate_multiplier: float | None = None
    adapter_size: int | None = None
    display_name: str | None = None
    validation_dataset: str | None = None
    output_uri: str | None = None
    custom_base_model: str | None = None
    encryption_key_name: str | None = None
    train_steps: int | None = None
    accelerator_type: str | None = None  # PaLM: GPU tunes in us-central1, TPU in europe-west4
    default_context: str | None = None
    evaluation_interval: int | None = None
    enable_early_stopping: bool | None = None
    sources: tuple[tuple[str, str], ...] = ()  # (option, where its value came from)

    @property
    def model(self) -> ModelSpec:
        return get_model(self.base_model)

    @property
    def tuning_region(self) -> str:
        """Where the computation runs; for PaLM it follows the accelerator (seed 003, M3.4)."""
        if self.model.palm is not None:
            return "europe-west4" if self.accelerator_type == "TPU" else "us-central1"
        return self.region

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["tuning_mode"] = self.tuning_mode.value if self.tuning_mode else None
        values["sources"] = dict(self.sources)
        return values


@dataclass(frozen=True)
class _Raw:
    value: object
    source: str


def _collect(
    defaults: Mapping[str, str],
    object_metadata: Mapping[str, str],
    manifest: Mapping[str, object] | None,
    problems: list[OptionProblem],
) -> dict[str, _Raw]:
    raw: dict[str, _Raw] = {}

    def unknown(name: str, source: str, value: object) -> None:
        close = difflib.get_close_matches(name, OPTION_NAMES, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        problems.append(
            OptionProblem(name, source, str(value), ", ".join(OPTION_NAMES), f"Unknown option.{hint}")
        )

    for name, value in defaults.items():
        if name in OPTION_NAMES:
            raw[name] = _Raw(value, "default")
        else:
            unknown(name, "default", value)
    for name, field_value in (manifest or {}).items():
        if name in OPTION_NAMES:
            raw[name] = _Raw(field_value, f"manifest field {name}")
        else:
            unknown(name, f"manifest field {name}", field_value)
    for key, value in object_metadata.items():
        lowered = key.lower()
        if not lowered.startswith(METADATA_PREFIX):
            continue
        name = lowered[len(METADATA_PREFIX) :].replace("-", "_")
        if name in OPTION_NAMES:
            raw[name] = _Raw(value, f"metadata {key}")
        else:
            unknown(name, f"metadata {key}", value)
    return raw


class _Resolver:
    def __init__(self, raw: dict[str, _Raw], problems: list[OptionProblem]) -> None:
        self.raw = raw
        self.problems = problems
        self.sources: dict[str, str] = {}

    def problem(self, name: str, allowed: str, message: str) -> None:
        item = self.raw.get(name)
        self.problems.append(
            OptionProblem(
                name, item.source if item else "not set", str(item.value) if item else "", allowed, message
            )
        )

    def given(self, name: str) -> bool:
        value = self.raw.get(name)
        return value is not None and value.value not in ("", None)

    def text(self, name: str) -> str | None:
        if not self.given(name):
            return None
        self.sources[name] = self.raw[name].source
        return str(self.raw[name].value).strip()

    def integer(self, name: str, allowed: str) -> int | None:
        if not self.given(name):
            return None
        value = self.raw[name].value
        self.sources[name] = self.raw[name].source
        if isinstance(value, bool):
            self.problem(name, allowed, "Expected an integer.")
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        text = str(value).strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        self.problem(name, allowed, "Expected an integer.")
        return None

    def number(self, name: str, allowed: str) -> float | None:
        if not self.given(name):
            return None
        value = self.raw[name].value
        self.sources[name] = self.raw[name].source
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            self.problem(name, allowed, "Expected a number.")
            return None

    def boolean(self, name: str) -> bool | None:
        if not self.given(name):
            return None
        value = self.raw[name].value
        self.sources[name] = self.raw[name].source
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        self.problem(name, "true, false", "Expected a boolean.")
        return None

    def reject_if_given(self, names: tuple[str, ...], spec: ModelSpec, why: str) -> None:
        for name in names:
            if self.given(name):
                self.problem(name, "(not set)", f"Not an option of {spec.model_id}: {why}")


# One linear pass over the options in a fixed order reads better than a dozen tiny functions.
def resolve_options(  # noqa: PLR0912, PLR0915
    defaults: Mapping[str, str],
    object_metadata: Mapping[str, str],
    manifest: Mapping[str, object] | None,
    *,
    retired_models: RetiredModelPolicy = RetiredModelPolicy.REJECT,
) -> TuningOptions:
    """Merge the option sources of one upload and check them against the catalog.

    Raises OptionsError listing every problem found.
    """
    problems: list[OptionProblem] = []
    resolver = _Resolver(_collect(defaults, object_metadata, manifest, problems), problems)
    base_model = resolver.text("base_model")
    if base_model is None:
        resolver.problem("base_model", ", ".join(KNOWN_MODEL_IDS), "A base model is required.")
        raise OptionsError(tuple(problems))
    try:
        spec = get_model(base_model)
    except LookupError:
        close = difflib.get_close_matches(base_model, KNOWN_MODEL_IDS, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        resolver.problem("base_model", ", ".join(KNOWN_MODEL_IDS), f"Unknown base model.{hint}")
        raise OptionsError(tuple(problems)) from None
    if spec.retired and retired_models is RetiredModelPolicy.REJECT:
        resolver.problem(
            "base_model",
            ", ".join(m for m in KNOWN_MODEL_IDS if not get_model(m).retired),
            retirement_remedy(spec),
        )

    region = resolver.text("region") or spec.regions[0]
    if region not in spec.regions:
        resolver.problem(
            "region", ", ".join(spec.regions), f"{spec.model_id} cannot be tuned in this region."
        )

    tuning_mode = _resolve_mode(resolver, spec)
    epochs = _resolve_epochs(resolver, spec)
    multiplier = None
    if spec.learning_rate_multiplier is None:
        resolver.reject_if_given(("learning_rate_multiplier",), spec, "the service sets the learning rate.")
    else:
        allowed = spec.learning_rate_multiplier.describe()
        multiplier = resolver.number("learning_rate_multiplier", allowed)
        if multiplier is None and not resolver.given("learning_rate_multiplier"):
            multiplier = 1.0
        elif multiplier is not None and multiplier not in spec.learning_rate_multiplier:
            resolver.problem("learning_rate_multiplier", allowed, "Out of range.")

    adapter_size = resolver.integer("adapter_size", ", ".join(map(str, spec.adapter_sizes)) or "(not set)")
    if adapter_size is not None:
        if tuning_mode is not TuningMode.PEFT_ADAPTER:
            resolver.problem(
                "adapter_size", "(not set)", "An adapter size applies only to tuning_mode PEFT_ADAPTER."
            )
        elif adapter_size not in spec.adapter_sizes:
            resolver.problem(
                "adapter_size", ", ".join(map(str, spec.adapter_sizes)), "Unsupported adapter size."
            )

    display_name = resolver.text("display_name")
    if display_name is not None and (len(display_name) > MAX_DISPLAY_NAME or not display_name.isprintable()):
        resolver.problem(
            "display_name", f"printable text of at most {MAX_DISPLAY_NAME} characters", "Invalid."
        )

    validation = resolver.text("validation_dataset")
    if validation is not None:
        _check_dataset_path(resolver, validation, spec)
    output_uri = resolver.text("output_uri")
    if output_uri is not None and not output_uri.startswith("gs://"):
        resolver.problem("output_uri", "a gs://bucket/folder URI", "The output must be a Cloud Storage URI.")

    custom_base_model = resolver.text("custom_base_model")
    if custom_base_model is not None:
        if spec.family is not ModelFamily.OPEN_MODEL:
            resolver.problem(
                "custom_base_model",
                "(not set)",
                f"Continued tuning from a checkpoint applies to open models only, not {spec.model_id}.",
            )
        elif not custom_base_model.startswith("gs://"):
            resolver.problem(
                "custom_base_model",
                "a gs:// folder holding a checkpoint of the same architecture",
                "The checkpoint must be in Cloud Storage.",
            )

    palm_values = _resolve_palm(resolver, spec, validation)
    key = resolver.text("encryption_key_name")
    if key is not None:
        _check_cmek(resolver, key, spec, region, palm_values.get("accelerator_type"))

    if problems:
        raise OptionsError(tuple(problems))
    return TuningOptions(
        base_model=spec.model_id,
        region=region,
        tuning_mode=tuning_mode,
        epochs=epochs,
        learning_rate_multiplier=multiplier,
        adapter_size=adapter_size,
        display_name=display_name,
        validation_dataset=validation,
        output_uri=output_uri,
        custom_base_model=custom_base_model,
        encryption_key_name=key,
        train_steps=_int_or_none(palm_values.get("train_steps")),
        accelerator_type=_str_or_none(palm_values.get("accelerator_type")),
        default_context=_str_or_none(palm_values.get("default_context")),
        evaluation_interval=_int_or_none(palm_values.get("evaluation_interval")),
        enable_early_stopping=_bool_or_none(palm_values.get("enable_early_stopping")),
        sources=tuple(sorted(resolver.sources.items())),
    )


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _bool_or_none(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _resolve_mode(resolver: _Resolver, spec: ModelSpec) -> TuningMode | None:
    if not spec.tuning_modes:
        resolver.reject_if_given(("tuning_mode",), spec, "it has no tuning modes to choose from.")
        return None
    allowed = ", ".join(mode.value for mode in spec.tuning_modes)
    text = resolver.text("tuning_mode")
    if text is None:
        # The cheaper mode when the model offers both (LoRA trains a fraction of the parameters).
        return spec.tuning_modes[0]
    normalized = text.upper().replace("-", "_")
    if normalized in ("PEFT", "LORA"):
        normalized = TuningMode.PEFT_ADAPTER.value
    if normalized not in spec.tuning_modes:
        resolver.problem("tuning_mode", allowed, f"{spec.model_id} does not support this tuning mode (M1.1).")
        return None
    return TuningMode(normalized)


def _resolve_epochs(resolver: _Resolver, spec: ModelSpec) -> int | None:
    if spec.epochs is None:
        why = (
            "PaLM models take train_steps instead."
            if spec.palm
            else "the service picks the number of epochs."
        )
        resolver.reject_if_given(("epochs",), spec, why)
        return None
    allowed = spec.epochs.describe()
    epochs = resolver.integer("epochs", allowed)
    if epochs is None:
        return None if resolver.given("epochs") else DEFAULT_OPEN_MODEL_EPOCHS
    if epochs not in spec.epochs:
        resolver.problem("epochs", allowed, "Out of range.")
    return epochs


def _check_dataset_path(resolver: _Resolver, path: str, spec: ModelSpec) -> None:
    allowed = "a gs://bucket/path.jsonl URI, or an object name in the upload's bucket"
    if path.startswith(("/", "~", "file:", "http:", "https:")) or re.match(r"^[A-Za-z]:[\\/]", path):
        resolver.problem(
            "validation_dataset", allowed, "A local path or web URL cannot be read by the service."
        )
    elif ".." in path.split("/") or not path.endswith(".jsonl"):
        resolver.problem("validation_dataset", allowed, "Expected a .jsonl object path without '..'.")
    elif spec.palm is not None and not spec.palm.supports_evaluation:
        resolver.problem(
            "validation_dataset", "(not set)", f"{spec.model_id} takes no evaluation dataset (M3.4)."
        )


def _resolve_palm(resolver: _Resolver, spec: ModelSpec, validation: str | None) -> dict[str, object]:
    palm_only = (
        "train_steps",
        "accelerator_type",
        "default_context",
        "evaluation_interval",
        "enable_early_stopping",
    )
    if spec.palm is None:
        resolver.reject_if_given(palm_only, spec, "it applies to PaLM pipeline tuning only.")
        return {}
    values: dict[str, object] = {}
    assert spec.train_steps is not None  # every PaLM entry has a step range
    steps = resolver.integer("train_steps", spec.train_steps.describe())
    if steps is not None and steps not in spec.train_steps:
        resolver.problem("train_steps", spec.train_steps.describe(), "Out of range.")
    values["train_steps"] = steps if steps is not None else spec.palm.default_train_steps
    accelerator = (resolver.text("accelerator_type") or "GPU").upper()
    if accelerator not in PALM_ACCELERATORS:
        resolver.problem("accelerator_type", ", ".join(PALM_ACCELERATORS), "Unknown accelerator type.")
    values["accelerator_type"] = accelerator
    if spec.family is ModelFamily.PALM_CHAT:
        values["default_context"] = resolver.text("default_context")
        resolver.reject_if_given(
            ("evaluation_interval", "enable_early_stopping"), spec, "chat models take no evaluation."
        )
    else:
        resolver.reject_if_given(("default_context",), spec, "default_context applies to chat models only.")
        interval = resolver.integer("evaluation_interval", "a positive integer (default 20)")
        early = resolver.boolean("enable_early_stopping")
        if (interval is not None or early is not None) and validation is None:
            resolver.problem(
                "evaluation_interval" if interval is not None else "enable_early_stopping",
                "(set validation_dataset first)",
                "Evaluation settings need an evaluation dataset (M3.4).",
            )
        if interval is not None and interval < 1:
            resolver.problem("evaluation_interval", "a positive integer (default 20)", "Out of range.")
        values["evaluation_interval"] = interval
        values["enable_early_stopping"] = early
    return values


def _check_cmek(resolver: _Resolver, key: str, spec: ModelSpec, region: str, accelerator: object) -> None:
    match = KMS_KEY.match(key)
    if match is None:
        resolver.problem(
            "encryption_key_name", "projects/P/locations/L/keyRings/R/cryptoKeys/K", "Malformed key name."
        )
        return
    if spec.cmek_regions is not None and region not in spec.cmek_regions:
        resolver.problem(
            "encryption_key_name",
            f"(only with region {', '.join(sorted(spec.cmek_regions))})",
            f"CMEK is supported only in {', '.join(sorted(spec.cmek_regions))} for {spec.model_id}.",
        )
    elif accelerator == "TPU":
        resolver.problem(
            "encryption_key_name", "(only with accelerator_type GPU)", "CMEK is not supported with TPU."
        )
