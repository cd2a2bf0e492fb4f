"""The deployer's requests are the documented Vertex AI JSON (M1.9, M1.10; issue 6 §1).

Parsed with the official protobuf types of google-cloud-aiplatform, which reject any unknown
field name: a typo here would fail on the real API too.
"""

from __future__ import annotations

from google.cloud.aiplatform_v1beta1.types import model_garden_service
from google.protobuf import json_format

from droptune.deployment import endpoint_display_name, preflight_problem, serving_target
from droptune.settings import Settings
from droptune.vertex_rest import deploy_request

SETTINGS = {"DROPTUNE_PROJECT": "my-project-123", "DROPTUNE_DATASETS_BUCKET": "my-datasets"}


def test_the_deploy_request_asks_for_one_l4_on_g2_standard_12() -> None:
    body = deploy_request(
        "gs://b/tuned/job-1/postprocess/node-0/checkpoints/final",
        display_name=endpoint_display_name("job-1"),
        machine_type="g2-standard-12",
        accelerator_type="NVIDIA_L4",
        accelerator_count=1,
    )
    request = json_format.ParseDict(body, model_garden_service.DeployRequest.pb()())
    assert request.custom_model.gcs_uri.endswith("/checkpoints/final")
    spec = request.deploy_config.dedicated_resources.machine_spec
    assert (spec.machine_type, spec.accelerator_count) == ("g2-standard-12", 1)
    assert (
        json_format.MessageToDict(request)["deployConfig"]["dedicatedResources"]["machineSpec"][
            "acceleratorType"
        ]
        == "NVIDIA_L4"
    )
    assert request.endpoint_config.endpoint_display_name == "droptune-job-1"


def test_the_default_shape_is_the_seed_shape_and_large_models_are_refused_before_tuning() -> None:
    auto = Settings.from_environ(SETTINGS)
    target = serving_target("google/gemma3@gemma-3-1b-it", auto)
    assert target is not None and target.shape is not None
    assert (target.shape.machine_type, target.shape.accelerator_type) == ("g2-standard-12", "NVIDIA_L4")
    assert preflight_problem("google/gemma3@gemma-3-1b-it", auto) is None
    problem = preflight_problem("meta/llama3-3@llama-3.3-70b-instruct", auto)
    assert problem is not None and "DROPTUNE_DEPLOY=shape-from-catalog" in problem


def test_shape_from_catalog_and_never_change_where_a_model_goes() -> None:
    catalog = Settings.from_environ({**SETTINGS, "DROPTUNE_DEPLOY": "shape-from-catalog"})
    target = serving_target("meta/llama3-3@llama-3.3-70b-instruct", catalog)
    assert target is not None and target.shape is not None and target.shape.accelerator_count > 1
    assert preflight_problem("meta/llama3-3@llama-3.3-70b-instruct", catalog) is None
    never = Settings.from_environ({**SETTINGS, "DROPTUNE_DEPLOY": "never"})
    assert serving_target("google/gemma3@gemma-3-1b-it", never) is None
    managed = serving_target("translation-llm-002", Settings.from_environ(SETTINGS))
    assert managed is not None and managed.shape is None
