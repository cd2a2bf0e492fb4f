"""The model catalog against SPEC M1, M2 and M3: ids, modes, limits, regions, serving shapes."""

import pytest

from droptune.catalog import (
    KNOWN_MODEL_IDS,
    MODELS,
    OPEN_MODEL_REGIONS,
    PALM_REGIONS,
    Modality,
    ModelFamily,
    OverLimitAction,
    TuningMode,
    UnknownModelError,
    get_model,
    retirement_remedy,
)

# SPEC M1 table: id → (modes, max sequence length, modalities).
M1_TABLE = {
    "google/gemma3@gemma-3-1b-it": ({"FULL"}, 8192, {"text"}),
    "google/gemma3@gemma-3-4b-it": ({"FULL"}, 8192, {"text"}),
    "google/gemma3@gemma-3-12b-it": ({"FULL"}, 8192, {"text"}),
    "google/gemma3@gemma-3-27b-it": ({"FULL", "PEFT_ADAPTER"}, 8192, {"text"}),
    "meta/llama3_1@llama-3.1-8b": ({"FULL", "PEFT_ADAPTER"}, 8192, {"text"}),
    "meta/llama3_1@llama-3.1-8b-instruct": ({"FULL", "PEFT_ADAPTER"}, 8192, {"text"}),
    "meta/llama3-2@llama-3.2-1b-instruct": ({"FULL"}, 8192, {"text"}),
    "meta/llama3-2@llama-3.2-3b-instruct": ({"FULL"}, 8192, {"text"}),
    "meta/llama3-3@llama-3.3-70b-instruct": ({"FULL", "PEFT_ADAPTER"}, 8192, {"text"}),
    "meta/llama4@llama-4-scout-17b-16e-instruct": ({"PEFT_ADAPTER"}, 2048, {"text", "image"}),
    "qwen/qwen3@qwen3-4b": ({"FULL"}, 8192, {"text"}),
    "qwen/qwen3@qwen3-8b": ({"FULL"}, 8192, {"text"}),
    "qwen/qwen3@qwen3-14b": ({"FULL"}, 8192, {"text"}),
    "qwen/qwen3@qwen3-32b": ({"FULL", "PEFT_ADAPTER"}, 8192, {"text"}),
}


@pytest.mark.parametrize("model_id", sorted(M1_TABLE))
def test_open_model_matches_spec_m1_table(model_id: str) -> None:
    """M1: every open model with its modes, max sequence length and modalities; M1.2 regions."""
    modes, max_tokens, modalities = M1_TABLE[model_id]
    spec = get_model(model_id)
    assert spec.family is ModelFamily.OPEN_MODEL
    assert {m.value for m in spec.tuning_modes} == modes
    assert spec.max_example_tokens == max_tokens
    assert {m.value for m in spec.modalities} == modalities
    assert spec.regions == OPEN_MODEL_REGIONS
    assert not spec.retired


def test_catalog_holds_exactly_the_spec_models() -> None:
    """M1, M2.1, M3.1: no model missing, none invented."""
    palm = {
        "text-bison@002",
        "text-bison-32k@002",
        "chat-bison@002",
        "chat-bison-32k@002",
        "code-bison@002",
        "code-bison-32k@002",
        "codechat-bison@002",
        "codechat-bison-32k@002",
    }
    assert set(KNOWN_MODEL_IDS) == set(M1_TABLE) | palm | {"translation-llm-002"}


def test_open_model_regions_are_m1_2() -> None:
    assert set(OPEN_MODEL_REGIONS) == {
        "us-central1",
        "europe-west4",
        "us-west1",
        "us-east5",
        "asia-southeast1",
    }


def test_translation_llm_limits_m2() -> None:
    """M2.1: us-central1, text only; 1,000 tokens per example is a maximum; ≤1,024 validation examples."""
    spec = get_model("translation-llm-002")
    assert spec.family is ModelFamily.TRANSLATION
    assert spec.regions == ("us-central1",)
    assert spec.modalities == frozenset({Modality.TEXT})
    assert spec.max_example_tokens == 1000
    assert spec.over_limit is OverLimitAction.REJECT
    assert spec.max_validation_examples == 1024
    assert spec.recommended_min_examples == 100  # M2.3


@pytest.mark.parametrize(
    ("model_id", "batch_us", "batch_eu"),
    [
        ("text-bison@002", 8, 24),
        ("chat-bison@002", 8, 24),
        ("code-bison@002", 8, 24),
        ("codechat-bison@002", 8, 24),
        ("text-bison-32k@002", 8, 8),
        ("chat-bison-32k@002", 8, 8),
        ("code-bison-32k@002", 8, 8),
        ("codechat-bison-32k@002", 8, 8),
    ],
)
def test_palm_batch_size_by_tuning_region_m3_5(model_id: str, batch_us: int, batch_eu: int) -> None:
    spec = get_model(model_id)
    assert spec.palm is not None
    assert spec.palm.batch_size("us-central1") == batch_us
    assert spec.palm.batch_size("europe-west4") == batch_eu


def test_palm_templates_regions_and_limits_m3() -> None:
    """M3.2–M3.6: templates, regions, 10..10,000 examples, 1,024 output tokens, CMEK only us-central1."""
    text = get_model("text-bison@002")
    chat = get_model("chat-bison@002")
    assert text.palm is not None and chat.palm is not None
    assert text.palm.template_uri.endswith("/tune-large-model/v2.0.0")
    assert chat.palm.template_uri.endswith("/tune-large-chat-model/v3.0.0")
    assert text.palm.default_train_steps == 300
    assert text.palm.supports_evaluation and not chat.palm.supports_evaluation
    assert text.regions == PALM_REGIONS and len(PALM_REGIONS) == 13
    assert text.min_examples == 10 and text.max_examples == 10_000
    assert chat.max_author_fields == 10_000 and chat.max_examples is None
    assert text.max_output_tokens == 1024 and text.max_example_tokens == 8192
    assert text.over_limit is OverLimitAction.TRUNCATE
    assert (text.min_validation_examples, text.max_validation_examples) == (10, 250)
    assert text.cmek_regions == frozenset({"us-central1"})


@pytest.mark.parametrize(
    "model_id", [m for m in MODELS if MODELS[m].family in {ModelFamily.PALM_TEXT, ModelFamily.PALM_CHAT}]
)
def test_palm_models_are_retired_with_a_catalogued_successor(model_id: str) -> None:
    spec = get_model(model_id)
    assert spec.retired
    assert spec.successor in MODELS and not MODELS[spec.successor].retired
    remedy = retirement_remedy(spec)
    assert spec.successor in remedy and "retired_models=allow" in remedy


def test_unknown_model_error_lists_known_ids_and_suggests_the_closest() -> None:
    with pytest.raises(UnknownModelError) as caught:
        get_model("meta/llama3_1@llama-3.1-8b-instrukt")
    message = str(caught.value)
    assert "Did you mean 'meta/llama3_1@llama-3.1-8b-instruct'" in message
    for model_id in KNOWN_MODEL_IDS:
        assert model_id in message
    assert caught.value.known_ids == KNOWN_MODEL_IDS


def test_serving_shape_small_models_use_the_seed_g2_l4_shape_m1_9() -> None:
    for model_id, spec in MODELS.items():
        if spec.parameters_billion is not None and spec.parameters_billion <= 8:
            assert spec.serving is not None, model_id
            assert (
                spec.serving.machine_type,
                spec.serving.accelerator_type,
                spec.serving.accelerator_count,
            ) == (
                "g2-standard-12",
                "NVIDIA_L4",
                1,
            ), model_id


def test_serving_shape_grows_with_model_size_and_says_it_is_an_estimate() -> None:
    medium = get_model("qwen/qwen3@qwen3-14b").serving
    large = get_model("meta/llama3-3@llama-3.3-70b-instruct").serving
    assert medium is not None and large is not None
    assert medium.accelerator_count * 24 >= 28  # L4 has 24 GB: 14B in bf16 needs two
    assert "estimate" in medium.basis and "estimate" in large.basis
    assert large.accelerator_type.startswith(("NVIDIA_A100", "NVIDIA_H100"))


def test_adapter_sizes_only_for_models_with_peft() -> None:
    for model_id, spec in MODELS.items():
        has_peft = TuningMode.PEFT_ADAPTER in spec.tuning_modes
        assert bool(spec.adapter_sizes) == has_peft, model_id


def test_ranges_reject_out_of_range_and_wrong_types() -> None:
    spec = get_model("meta/llama3_1@llama-3.1-8b")
    assert spec.epochs is not None and spec.learning_rate_multiplier is not None
    assert 3 in spec.epochs and 0 not in spec.epochs and 101 not in spec.epochs and 3.5 not in spec.epochs
    assert 1.0 in spec.learning_rate_multiplier and 0 not in spec.learning_rate_multiplier
    assert 11 not in spec.learning_rate_multiplier
