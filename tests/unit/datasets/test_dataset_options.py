"""Options without code (M4.1): sources, precedence and catalog checks with named allowed values."""

import pytest

from droptune.catalog import RetiredModelPolicy, TuningMode
from droptune.datasets import (
    OptionsError,
    is_validation_dataset_name,
    paired_validation_name,
    resolve_options,
)

LLAMA = "meta/llama3_1@llama-3.1-8b"


def problems_of(
    defaults: dict[str, str],
    metadata: dict[str, str] | None = None,
    manifest: dict[str, object] | None = None,
    **kwargs: RetiredModelPolicy,
) -> list[tuple[str, str, str]]:
    with pytest.raises(OptionsError) as caught:
        resolve_options(defaults, metadata or {}, manifest, **kwargs)
    return [(p.option, p.source, p.allowed) for p in caught.value.problems]


def test_precedence_defaults_then_manifest_then_metadata() -> None:
    options = resolve_options(
        {"base_model": LLAMA, "epochs": "2", "region": "europe-west4"},
        {"droptune-epochs": "5", "content-type": "not ours"},
        {"epochs": 4, "learning_rate_multiplier": 0.5, "region": "us-west1"},
    )
    assert options.epochs == 5 and options.learning_rate_multiplier == 0.5 and options.region == "us-west1"
    sources = dict(options.sources)
    assert sources["epochs"] == "metadata droptune-epochs" and sources["region"] == "manifest field region"
    assert sources["base_model"] == "default"


def test_defaults_fill_the_mode_epochs_and_region_m1_1() -> None:
    options = resolve_options({"base_model": LLAMA}, {}, None)
    assert (options.tuning_mode, options.epochs, options.region) == (
        TuningMode.PEFT_ADAPTER,
        3,
        "us-central1",
    )
    assert resolve_options({"base_model": "qwen/qwen3@qwen3-8b"}, {}, None).tuning_mode is TuningMode.FULL


def test_mode_the_model_lacks_names_the_allowed_modes_m1_1() -> None:
    [(option, source, allowed)] = problems_of(
        {"base_model": "qwen/qwen3@qwen3-8b"}, {"droptune-tuning-mode": "PEFT"}
    )
    assert (option, source, allowed) == ("tuning_mode", "metadata droptune-tuning-mode", "FULL")


def test_every_problem_is_reported_not_just_the_first() -> None:
    found = problems_of(
        {"base_model": LLAMA},
        None,
        {"region": "mars-east1", "epochs": 0, "learning_rate_multiplier": "fast", "adapter_size": 3},
    )
    options = [option for option, _, _ in found]
    assert options == ["region", "epochs", "learning_rate_multiplier", "adapter_size"]
    assert "us-central1" in found[0][2] and "1 to 100" in found[1][2]
    assert found[3][2] == "1, 2, 4, 8, 16"


def test_unknown_option_suggests_the_closest_name() -> None:
    with pytest.raises(OptionsError) as caught:
        resolve_options({"base_model": LLAMA}, {"droptune-epoch": "3"}, None)
    assert "Did you mean 'epochs'" in str(caught.value)


def test_unknown_model_lists_known_ids() -> None:
    [(option, _, allowed)] = problems_of({"base_model": "llama-3.1-8b"})
    assert option == "base_model" and LLAMA in allowed and "translation-llm-002" in allowed


def test_adapter_size_needs_peft() -> None:
    [(option, _, _)] = problems_of({"base_model": LLAMA, "tuning_mode": "FULL", "adapter_size": "4"})
    assert option == "adapter_size"


def test_retired_palm_is_rejected_by_default_with_a_successor() -> None:
    with pytest.raises(OptionsError) as caught:
        resolve_options({"base_model": "text-bison@002"}, {}, None)
    problem = caught.value.problems[0]
    assert problem.option == "base_model" and "retired" in problem.message
    assert "google/gemma3@gemma-3-12b-it" in problem.message


def test_retired_palm_allowed_resolves_pipeline_options_m3_4() -> None:
    options = resolve_options(
        {"base_model": "text-bison@002"}, {}, None, retired_models=RetiredModelPolicy.ALLOW
    )
    assert (options.train_steps, options.accelerator_type, options.tuning_region) == (
        300,
        "GPU",
        "us-central1",
    )
    assert options.epochs is None


def test_cmek_only_in_us_central1_for_palm_m3_4() -> None:
    key = "projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k"
    found = problems_of(
        {"base_model": "text-bison@002", "region": "europe-west4", "encryption_key_name": key},
        retired_models=RetiredModelPolicy.ALLOW,
    )
    assert found == [("encryption_key_name", "default", "(only with region us-central1)")]


def test_options_of_another_family_are_rejected() -> None:
    found = problems_of({"base_model": "translation-llm-002", "epochs": "3", "train_steps": "100"})
    assert [option for option, _, _ in found] == ["epochs", "train_steps"]


def test_validation_dataset_must_be_readable_by_the_service_case_30() -> None:
    [(option, _, allowed)] = problems_of(
        {"base_model": LLAMA}, None, {"validation_dataset": "/home/me/val.jsonl"}
    )
    assert option == "validation_dataset" and "gs://" in allowed
    ok = resolve_options({"base_model": LLAMA}, {}, {"validation_dataset": "gs://b/val.jsonl"})
    assert ok.validation_dataset == "gs://b/val.jsonl"


def test_validation_naming_rule_m1_5() -> None:
    assert paired_validation_name("data/train.jsonl") == "data/train.validation.jsonl"
    assert is_validation_dataset_name("data/train.validation.jsonl")
    assert not is_validation_dataset_name("data/train.jsonl")
