"""The model catalog: every base model droptune can tune, with the limits its dataset must meet.

One place for these facts; the validator, the launcher and the deployer all read it.

Sources (cited per entry as ``SEED_*``):
- open models: https://cloud.google.com/vertex-ai/generative-ai/docs/models/open-model-tuning (SPEC M1)
- translation-llm-002: https://cloud.google.com/vertex-ai/generative-ai/docs/models/translation-use-supervised-tuning
  and its "prepare data" page for the 1,000-token and 1,024-example limits (SPEC M2)
- PaLM text/chat/code: https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-text-models-supervised
  (PaLM-era version of the page; SPEC M3). New PaLM tuning jobs are blocked since 2024-10-09.
"""

import difflib
from dataclasses import dataclass
from enum import StrEnum

SEED_OPEN_MODELS = "https://cloud.google.com/vertex-ai/generative-ai/docs/models/open-model-tuning"
SEED_TRANSLATION = (
    "https://cloud.google.com/vertex-ai/generative-ai/docs/models/translation-supervised-tuning-prepare"
)
SEED_PALM = "https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-text-models-supervised"
PALM_RETIREMENT = "https://cloud.google.com/vertex-ai/generative-ai/docs/legacy/legacy-models"


class TuningMode(StrEnum):
    """Tuning modes of the open-model API (M1.1); PEFT_ADAPTER is LoRA."""

    FULL = "FULL"
    PEFT_ADAPTER = "PEFT_ADAPTER"


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"


class ModelFamily(StrEnum):
    """Which API tunes the model, and so which dataset formats and options apply."""

    OPEN_MODEL = "open_model"  # tuningJobs with sft.train (M1)
    TRANSLATION = "translation"  # tuningJobs, GenerateContent data (M2)
    PALM_TEXT = "palm_text"  # pipelineJobs, input_text/output_text (M3.2)
    PALM_CHAT = "palm_chat"  # pipelineJobs, context + author/content messages (M3.3)


class OverLimitAction(StrEnum):
    """What the service does with an example longer than the model's limit."""

    REJECT = "reject"  # the limit is a documented maximum: droptune reports an error
    TRUNCATE = "truncate"  # the service cuts the example: droptune warns


class RetiredModelPolicy(StrEnum):
    """The `retired_models` setting: what to do with a request for a retired model."""

    REJECT = "reject"
    ALLOW = "allow"  # keeps PaLM working end to end against the local stand-in
    # The PaLM data is validated by PaLM's rules, rewritten as chat and tuned on the successor.
    CONVERT = "convert"


@dataclass(frozen=True)
class IntRange:
    minimum: int
    maximum: int
    source: str

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.minimum <= value <= self.maximum

    def describe(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"


@dataclass(frozen=True)
class FloatRange:
    """A range whose lower bound is exclusive (a multiplier of 0 would train nothing)."""

    above: float
    maximum: float
    source: str

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.above < value <= self.maximum

    def describe(self) -> str:
        return f"a number greater than {self.above:g} and at most {self.maximum:g}"


@dataclass(frozen=True)
class ServingShape:
    """Where a tuned model is deployed: machine, accelerator type and count."""

    machine_type: str
    accelerator_type: str
    accelerator_count: int
    basis: str  # "seed" when the documentation names it, otherwise why we picked it


@dataclass(frozen=True)
class PalmPipeline:
    """How a PaLM model is tuned: a pipeline job from a template (M3.4–M3.6)."""

    template_uri: str
    large_model_reference: str
    # Batch size per *tuning* region: GPU tunes in us-central1, TPU in europe-west4 (M3.5).
    batch_size_us_central1: int
    batch_size_europe_west4: int
    default_train_steps: int = 300
    supports_evaluation: bool = True  # chat models take no evaluation_data_uri (M3.4)

    def batch_size(self, tuning_region: str) -> int:
        return (
            self.batch_size_europe_west4 if tuning_region == "europe-west4" else self.batch_size_us_central1
        )


@dataclass(frozen=True)
class ModelSpec:
    """One tunable base model and everything the dataset and options must satisfy."""

    model_id: str
    display_name: str
    family: ModelFamily
    tuning_modes: tuple[TuningMode, ...]
    # Maximum tokens of one example (open models: max sequence length; translation: input + output).
    max_example_tokens: int
    over_limit: OverLimitAction
    modalities: frozenset[Modality]
    regions: tuple[str, ...]
    serving: ServingShape | None  # None: the service serves it (managed endpoint)
    parameters_billion: float | None = None
    # PaLM only: the assistant/output turn has its own cap, longer is truncated (M3.2, M3.3).
    max_output_tokens: int | None = None
    min_examples: int = 1
    recommended_min_examples: int = 100
    max_examples: int | None = None
    max_author_fields: int | None = None  # PaLM chat: summed over every example (M3.3)
    min_validation_examples: int = 1
    max_validation_examples: int | None = None
    epochs: IntRange | None = None  # None: the option does not exist for this model
    learning_rate_multiplier: FloatRange | None = None
    adapter_sizes: tuple[int, ...] = ()  # empty: adapter size cannot be set
    train_steps: IntRange | None = None
    palm: PalmPipeline | None = None
    cmek_regions: frozenset[str] | None = None  # None: the seed sets no restriction
    retired: bool = False
    successor: str | None = None
    source: str = SEED_OPEN_MODELS

    @property
    def supports_images(self) -> bool:
        return Modality.IMAGE in self.modalities


class UnknownModelError(LookupError):
    """A base model id that is not in the catalog; the message lists the known ids."""

    def __init__(self, model_id: str, known_ids: tuple[str, ...]) -> None:
        self.model_id = model_id
        self.known_ids = known_ids
        close = difflib.get_close_matches(model_id, known_ids, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"Unknown base model {model_id!r}.{hint} Known models: {', '.join(known_ids)}.")


# M1.2: the regions of open-model tuning.
OPEN_MODEL_REGIONS = ("us-central1", "europe-west4", "us-west1", "us-east5", "asia-southeast1")
# M3.6: pipeline job and model upload regions of PaLM tuning.
PALM_REGIONS = (
    "us-central1",
    "europe-west4",
    "asia-southeast1",
    "us-west1",
    "europe-west3",
    "europe-west2",
    "asia-northeast1",
    "us-east4",
    "us-west4",
    "northamerica-northeast1",
    "europe-west9",
    "europe-west1",
    "asia-northeast3",
)

# The seed shows epochs=3 and names no range; 1–100 is droptune's guard against typos (300 epochs
# of a 1 GB file is never what someone meant), not a service limit.
OPEN_MODEL_EPOCHS = IntRange(1, 100, "droptune guard; the seed shows epochs=3 and states no range")
# "1.0 uses the recommended learning rate" (seed 003); above 10× is almost always a mistake.
LEARNING_RATE_MULTIPLIER = FloatRange(0.0, 10.0, "droptune guard; 1.0 is the recommended rate")
# Adapter (LoRA rank) sizes of Vertex supervised tuning (Gemini SFT docs: 1, 2, 4, 8, 16); the
# open-model seed does not list them, so PEFT_ADAPTER accepts these and FULL accepts none.
ADAPTER_SIZES = (1, 2, 4, 8, 16)
PALM_TRAIN_STEPS = IntRange(1, 100_000, "seed 003: default 300; recommended 100–1,000 by task (M3.7)")

# The deploy shape the seed uses for an 8B model (M1.9); droptune uses it up to 8B.
SMALL_SERVING = ServingShape("g2-standard-12", "NVIDIA_L4", 1, "seed (M1.9)")
# Our estimates from bf16 weight size (2 bytes per parameter) plus room for the KV cache; the
# seed names only the G2 shape. Measure before relying on them for production traffic.
MEDIUM_SERVING = ServingShape(
    "g2-standard-24", "NVIDIA_L4", 2, "recommended: droptune estimate (~28 GB bf16)"
)
LARGE_SERVING = ServingShape(
    "a2-ultragpu-1g", "NVIDIA_A100_80GB", 1, "recommended: droptune estimate (~54 GB bf16)"
)
XL_SERVING = ServingShape(
    "a2-ultragpu-2g", "NVIDIA_A100_80GB", 2, "recommended: droptune estimate (~64 GB bf16 + KV cache)"
)
MOE_SERVING = ServingShape(
    "a3-highgpu-4g", "NVIDIA_H100_80GB", 4, "recommended: droptune estimate (109B total MoE parameters)"
)
XXL_SERVING = ServingShape(
    "a3-highgpu-4g", "NVIDIA_H100_80GB", 4, "recommended: droptune estimate (~140 GB bf16)"
)

FULL_ONLY = (TuningMode.FULL,)
PEFT_AND_FULL = (TuningMode.PEFT_ADAPTER, TuningMode.FULL)
TEXT = frozenset({Modality.TEXT})


def _open_model(
    model_id: str,
    display_name: str,
    modes: tuple[TuningMode, ...],
    billions: float,
    serving: ServingShape,
    *,
    max_tokens: int = 8192,
    modalities: frozenset[Modality] = TEXT,
) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        display_name=display_name,
        family=ModelFamily.OPEN_MODEL,
        tuning_modes=modes,
        max_example_tokens=max_tokens,
        # The seed states a maximum sequence length; longer sequences are cut by the trainer.
        over_limit=OverLimitAction.TRUNCATE,
        modalities=modalities,
        regions=OPEN_MODEL_REGIONS,
        serving=serving,
        parameters_billion=billions,
        # "Limit validation dataset to less than 5000 rows" (Google's open-model tuning notebook,
        # which caps it at 4999): 5000 itself is already too many.
        max_validation_examples=4999,
        epochs=OPEN_MODEL_EPOCHS,
        learning_rate_multiplier=LEARNING_RATE_MULTIPLIER,
        adapter_sizes=ADAPTER_SIZES if TuningMode.PEFT_ADAPTER in modes else (),
    )


_OPEN_MODELS = (
    _open_model("google/gemma3@gemma-3-1b-it", "Gemma 3 1B IT", FULL_ONLY, 1, SMALL_SERVING),
    _open_model("google/gemma3@gemma-3-4b-it", "Gemma 3 4B IT", FULL_ONLY, 4, SMALL_SERVING),
    _open_model("google/gemma3@gemma-3-12b-it", "Gemma 3 12B IT", FULL_ONLY, 12, MEDIUM_SERVING),
    _open_model("google/gemma3@gemma-3-27b-it", "Gemma 3 27B IT", PEFT_AND_FULL, 27, LARGE_SERVING),
    _open_model("meta/llama3_1@llama-3.1-8b", "Llama 3.1 8B", PEFT_AND_FULL, 8, SMALL_SERVING),
    _open_model(
        "meta/llama3_1@llama-3.1-8b-instruct", "Llama 3.1 8B Instruct", PEFT_AND_FULL, 8, SMALL_SERVING
    ),
    _open_model("meta/llama3-2@llama-3.2-1b-instruct", "Llama 3.2 1B Instruct", FULL_ONLY, 1, SMALL_SERVING),
    _open_model("meta/llama3-2@llama-3.2-3b-instruct", "Llama 3.2 3B Instruct", FULL_ONLY, 3, SMALL_SERVING),
    _open_model(
        "meta/llama3-3@llama-3.3-70b-instruct", "Llama 3.3 70B Instruct", PEFT_AND_FULL, 70, XXL_SERVING
    ),
    _open_model(
        "meta/llama4@llama-4-scout-17b-16e-instruct",
        "Llama 4 Scout 17B 16E Instruct",
        (TuningMode.PEFT_ADAPTER,),
        109,
        MOE_SERVING,
        max_tokens=2048,
        modalities=frozenset({Modality.TEXT, Modality.IMAGE}),
    ),
    _open_model("qwen/qwen3@qwen3-4b", "Qwen 3 4B", FULL_ONLY, 4, SMALL_SERVING),
    _open_model("qwen/qwen3@qwen3-8b", "Qwen 3 8B", FULL_ONLY, 8, SMALL_SERVING),
    _open_model("qwen/qwen3@qwen3-14b", "Qwen 3 14B", FULL_ONLY, 14, MEDIUM_SERVING),
    _open_model("qwen/qwen3@qwen3-32b", "Qwen 3 32B", PEFT_AND_FULL, 32, XL_SERVING),
)

_TRANSLATION = ModelSpec(
    model_id="translation-llm-002",
    display_name="Translation LLM 002",
    family=ModelFamily.TRANSLATION,
    # tuningJobs.create takes only base model, datasets and display name (seed 001, M2.2).
    tuning_modes=(),
    # "Max input + output tokens per example: 1,000" is a documented maximum: reject, don't cut.
    max_example_tokens=1000,
    over_limit=OverLimitAction.REJECT,
    modalities=TEXT,
    regions=("us-central1",),
    serving=None,
    max_validation_examples=1024,
    source=SEED_TRANSLATION,
)


def _palm(
    model_id: str,
    display_name: str,
    family: ModelFamily,
    *,
    context_32k: bool,
    successor: str,
) -> ModelSpec:
    is_chat = family is ModelFamily.PALM_CHAT
    template = (
        "https://us-kfp.pkg.dev/ml-pipeline/large-language-model-pipelines/tune-large-chat-model/v3.0.0"
        if is_chat
        else "https://us-kfp.pkg.dev/ml-pipeline/large-language-model-pipelines/tune-large-model/v2.0.0"
    )
    return ModelSpec(
        model_id=model_id,
        display_name=display_name,
        family=family,
        tuning_modes=(),
        # Seed 003: input_text / context + messages ≤ 8,192 tokens; the 32k variants take a 32,768
        # token context by their name. Longer examples are truncated, not rejected (M3.2).
        max_example_tokens=32_768 if context_32k else 8192,
        over_limit=OverLimitAction.TRUNCATE,
        max_output_tokens=1024,
        modalities=TEXT,
        regions=PALM_REGIONS,
        serving=None,
        min_examples=10,
        recommended_min_examples=200 if is_chat else 100,  # M3.7: chat 200+, others 100+
        max_examples=None if is_chat else 10_000,
        max_author_fields=10_000 if is_chat else None,
        min_validation_examples=10,
        max_validation_examples=250,
        learning_rate_multiplier=LEARNING_RATE_MULTIPLIER,
        train_steps=PALM_TRAIN_STEPS,
        palm=PalmPipeline(
            template_uri=template,
            large_model_reference=model_id,
            batch_size_us_central1=8,
            batch_size_europe_west4=8 if context_32k else 24,
            supports_evaluation=not is_chat,
        ),
        # "CMEK is supported only in us-central1" and not with TPU tuning (seed 003, M3.4).
        cmek_regions=frozenset({"us-central1"}),
        retired=True,
        successor=successor,
        source=SEED_PALM,
    )


_PALM_TEXT_SUCCESSOR = "google/gemma3@gemma-3-12b-it"
_PALM_CODE_SUCCESSOR = "qwen/qwen3@qwen3-14b"
_PALM_MODELS = (
    _palm(
        "text-bison@002",
        "PaLM 2 Text Bison",
        ModelFamily.PALM_TEXT,
        context_32k=False,
        successor=_PALM_TEXT_SUCCESSOR,
    ),
    _palm(
        "text-bison-32k@002",
        "PaLM 2 Text Bison 32k",
        ModelFamily.PALM_TEXT,
        context_32k=True,
        successor=_PALM_TEXT_SUCCESSOR,
    ),
    _palm(
        "chat-bison@002",
        "PaLM 2 Chat Bison",
        ModelFamily.PALM_CHAT,
        context_32k=False,
        successor=_PALM_TEXT_SUCCESSOR,
    ),
    _palm(
        "chat-bison-32k@002",
        "PaLM 2 Chat Bison 32k",
        ModelFamily.PALM_CHAT,
        context_32k=True,
        successor=_PALM_TEXT_SUCCESSOR,
    ),
    _palm(
        "code-bison@002",
        "Codey Code Bison",
        ModelFamily.PALM_TEXT,
        context_32k=False,
        successor=_PALM_CODE_SUCCESSOR,
    ),
    _palm(
        "code-bison-32k@002",
        "Codey Code Bison 32k",
        ModelFamily.PALM_TEXT,
        context_32k=True,
        successor=_PALM_CODE_SUCCESSOR,
    ),
    _palm(
        "codechat-bison@002",
        "Codey Code Chat Bison",
        ModelFamily.PALM_CHAT,
        context_32k=False,
        successor=_PALM_CODE_SUCCESSOR,
    ),
    _palm(
        "codechat-bison-32k@002",
        "Codey Code Chat Bison 32k",
        ModelFamily.PALM_CHAT,
        context_32k=True,
        successor=_PALM_CODE_SUCCESSOR,
    ),
)

MODELS: dict[str, ModelSpec] = {spec.model_id: spec for spec in (*_OPEN_MODELS, _TRANSLATION, *_PALM_MODELS)}
KNOWN_MODEL_IDS: tuple[str, ...] = tuple(MODELS)


def get_model(model_id: str) -> ModelSpec:
    """Return the catalog entry of `model_id`, or raise UnknownModelError naming the known ids."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise UnknownModelError(model_id, KNOWN_MODEL_IDS) from None


def retirement_remedy(spec: ModelSpec) -> str:
    """The migration hint given when a retired model is requested and the policy rejects it."""
    return (
        f"{spec.model_id} is retired: Vertex AI blocks new PaLM tuning jobs since 2024-10-09 "
        f"({PALM_RETIREMENT}). Set base_model to a supported model such as {spec.successor} and "
        "convert the data (input_text/output_text → prompt/completion; chat author/content → "
        "messages role/content), or let droptune do both with retired_models=convert; "
        "retired_models=allow runs it on the local stand-in only."
    )
