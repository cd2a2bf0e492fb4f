"""The Terraform in infra/ against the code it deploys (issue 7 §4, SPEC M4.7).

The HCL is parsed with python-hcl2 and compared name for name with droptune.topology.TOPOLOGY
(topics, push subscriptions, dead-letter topics and policies, filters, ack deadlines, backoff,
the hold subscriptions), with droptune.settings (every environment variable a function gets is
one Settings reads, and every variable Settings requires is set) and with the entry points the
services define. A rename on either side fails here instead of in a deployed project.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 parses infra/*.tf (dev extra)")

from droptune import settings as settings_module  # noqa: E402
from droptune.topology import SERVICES, TOPOLOGY  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

EXPECTED_ENTRY_POINTS = {
    "validator": "handle_dataset_upload",
    "launcher": "handle_tune_request",
    "poller": "handle_poller_message",
    "deployer": "handle_job_succeeded",
}

# Resource types that take a `labels` argument in the google provider, and those that do not
# (IAM grants, service accounts, APIs, notifications, Firestore, Scheduler). A resource type in
# neither list fails the label test, so a new kind of resource must be classified on purpose.
LABELLED_TYPES = frozenset(
    {
        "google_storage_bucket",
        "google_pubsub_topic",
        "google_pubsub_subscription",
        "google_cloudfunctions2_function",
        "google_artifact_registry_repository",
    }
)
UNLABELLED_TYPES = frozenset(
    {
        "google_storage_bucket_object",
        "google_storage_notification",
        "google_service_account",
        "google_project_service",
        "google_project_iam_member",
        "google_storage_bucket_iam_member",
        "google_pubsub_topic_iam_member",
        "google_pubsub_subscription_iam_member",
        "google_service_account_iam_member",
        "google_cloud_run_v2_service_iam_member",
        "google_artifact_registry_repository_iam_member",
        "google_kms_crypto_key_iam_member",
        "google_firestore_database",
        "google_firestore_index",
        "google_firestore_field",
        "google_cloud_scheduler_job",
    }
)


def _load(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with path.open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = hcl2.load(handle, serialization_options=options)
    return loaded


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    files = sorted(INFRA.glob("*.tf"))
    assert files, f"no Terraform files in {INFRA}"
    return {path.name: _load(path) for path in files}


def _resources(parsed: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for document in parsed.values():
        for block in document.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    yield rtype, name, body


def _resource(parsed: Mapping[str, Mapping[str, Any]], rtype: str, name: str) -> dict[str, Any]:
    found = [body for t, n, body in _resources(parsed) if (t, n) == (rtype, name)]
    assert len(found) == 1, f"expected exactly one resource {rtype}.{name} in infra/, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def local_values(parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for document in parsed.values():
        for block in document.get("locals", []):
            for key, value in block.items():
                assert key not in values, f"local.{key} is defined twice in infra/"
                values[key] = value
    return values


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"{duration!r} is not a duration in seconds such as '10s'"
    return int(match.group(1))


# --- the messaging topology, name for name ------------------------------------------------


def test_topics_match_topology_name_for_name(local_values: dict[str, Any]) -> None:
    main_topics = set(local_values["topics"])
    dead_letters = [s["dead_letter_topic"] for s in local_values["push_subscriptions"].values()]
    terraform_topics = sorted([*main_topics, *dead_letters])
    assert len(set(terraform_topics)) == len(terraform_topics), (
        f"a topic is declared twice: {terraform_topics}"
    )
    assert terraform_topics == sorted(TOPOLOGY.topic_names()), (
        "infra/pubsub.tf topics differ from droptune.topology.TOPOLOGY: "
        f"only in Terraform {sorted(set(terraform_topics) - set(TOPOLOGY.topic_names()))}, "
        f"only in TOPOLOGY {sorted(set(TOPOLOGY.topic_names()) - set(terraform_topics))}"
    )


def test_topic_resources_are_created_from_those_names(parsed: dict[str, dict[str, Any]]) -> None:
    main = _resource(parsed, "google_pubsub_topic", "main")
    assert (main["for_each"], main["name"]) == ("${local.topics}", "${each.key}")
    dead_letter = _resource(parsed, "google_pubsub_topic", "dead_letter")
    assert dead_letter["for_each"] == "${local.push_subscriptions}"
    assert dead_letter["name"] == "${each.value.dead_letter_topic}"


def test_push_subscriptions_match_topology(local_values: dict[str, Any]) -> None:
    declared = local_values["push_subscriptions"]
    assert sorted(declared) == sorted(s.name for s in TOPOLOGY.push_subscriptions), (
        "push subscription names differ between infra/pubsub.tf and TOPOLOGY"
    )
    for expected in TOPOLOGY.push_subscriptions:
        actual = declared[expected.name]
        observed = {
            "topic": actual["topic"],
            "service": actual["service"],
            "dead_letter_topic": actual["dead_letter_topic"],
            "max_delivery_attempts": actual["max_delivery_attempts"],
            "ack_deadline_seconds": actual["ack_deadline_seconds"],
            "filter": actual["filter"],
            "minimum_backoff_seconds": _seconds(actual["minimum_backoff"]),
            "maximum_backoff_seconds": _seconds(actual["maximum_backoff"]),
        }
        wanted = {key: getattr(expected, key) for key in observed}
        assert observed == wanted, f"subscription {expected.name}: Terraform {observed} != TOPOLOGY {wanted}"


def test_hold_subscriptions_match_topology(local_values: dict[str, Any]) -> None:
    declared = local_values["push_subscriptions"]
    holds = {s["hold_subscription"]: s["dead_letter_topic"] for s in declared.values()}
    expected = {p.name: p.topic for p in TOPOLOGY.pull_subscriptions}
    assert holds == expected, f"hold subscriptions (name -> dead-letter topic) {holds} != TOPOLOGY {expected}"
    retention = {p.message_retention_seconds for p in TOPOLOGY.pull_subscriptions}
    assert retention == {_seconds(local_values["hold_message_retention"])}


def test_subscription_resources_apply_every_declared_setting(parsed: dict[str, dict[str, Any]]) -> None:
    push = _resource(parsed, "google_pubsub_subscription", "push")
    assert push["for_each"] == "${local.push_subscriptions}"
    assert push["name"] == "${each.key}"
    assert push["topic"] == "${google_pubsub_topic.main[each.value.topic].id}"
    assert push["filter"] == "${each.value.filter}"
    assert push["ack_deadline_seconds"] == "${each.value.ack_deadline_seconds}"
    (dead_letter,) = push["dead_letter_policy"]
    assert dead_letter == {
        "dead_letter_topic": "${google_pubsub_topic.dead_letter[each.key].id}",
        "max_delivery_attempts": "${each.value.max_delivery_attempts}",
    }
    (retry,) = push["retry_policy"]
    assert retry == {
        "minimum_backoff": "${each.value.minimum_backoff}",
        "maximum_backoff": "${each.value.maximum_backoff}",
    }
    (config,) = push["push_config"]
    assert config["push_endpoint"].startswith(
        "${google_cloudfunctions2_function.service[each.value.service]."
    ), "each push subscription must deliver to the function of its own service"
    (oidc,) = config["oidc_token"]
    assert oidc["service_account_email"] == "${google_service_account.push_invoker[each.key].email}", (
        "each push subscription must authenticate as its own trigger service account"
    )

    hold = _resource(parsed, "google_pubsub_subscription", "dead_letter_hold")
    assert hold["name"] == "${each.value.hold_subscription}"
    assert hold["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert hold["message_retention_duration"] == "${local.hold_message_retention}"
    assert "push_config" not in hold, "hold subscriptions are pull subscriptions"


# --- the functions ---------------------------------------------------------------------------


def test_one_function_per_service_with_its_entry_point(
    parsed: dict[str, dict[str, Any]], local_values: dict[str, Any]
) -> None:
    functions = local_values["functions"]
    assert sorted(functions) == sorted(SERVICES)
    entry_points = {name: spec["entry_point"] for name, spec in functions.items()}
    assert entry_points == EXPECTED_ENTRY_POINTS

    resource = _resource(parsed, "google_cloudfunctions2_function", "service")
    assert resource["for_each"] == "${local.functions}"
    (build,) = resource["build_config"]
    assert build["entry_point"] == "${each.value.entry_point}"
    assert build["runtime"] == "python311", "SPEC/issue 7: the functions run on Python 3.11"
    assert "event_trigger" not in resource, "functions are reached by push subscriptions (decision 0002)"


@pytest.mark.parametrize("service", SERVICES)
def test_entry_point_is_defined_by_the_service(service: str) -> None:
    main = REPO / "services" / service / "main.py"
    if not main.is_file():
        pytest.skip(f"{main} is not written yet")
    tree = ast.parse(main.read_text(encoding="utf-8"))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert EXPECTED_ENTRY_POINTS[service] in defined, (
        f"{main} defines {sorted(defined)}; Terraform deploys entry point {EXPECTED_ENTRY_POINTS[service]}"
    )


def test_function_timeouts_fit_their_subscriptions(local_values: dict[str, Any]) -> None:
    # A function still running when its delivery's ack deadline passes gets a duplicate
    # delivery; every function must end within the longest deadline of its subscriptions.
    functions = local_values["functions"]
    for service in SERVICES:
        deadlines = [s.ack_deadline_seconds for s in TOPOLOGY.subscriptions_of(service)]
        assert deadlines, f"no push subscription reaches {service}"
        timeout = functions[service]["timeout_seconds"]
        assert 0 < timeout < max(deadlines), f"{service}: timeout {timeout}s vs ack deadlines {deadlines}"


def _settings_reads() -> tuple[set[str], set[str]]:
    """Every variable name Settings.from_environ looks up, and those it requires."""

    class Recording(dict[str, str]):
        def __init__(self, values: dict[str, str]) -> None:
            super().__init__(values)
            self.asked: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.asked.add(key)
            return super().get(key, default)

    samples = {"DROPTUNE_PROJECT": "droptune-test-123", "DROPTUNE_DATASETS_BUCKET": "droptune-test-datasets"}
    values: dict[str, str] = {}
    required: set[str] = set()
    asked: set[str] = set()
    for _ in range(20):
        environ = Recording(values)
        try:
            settings_module.Settings.from_environ(environ)
        except settings_module.SettingsError as error:
            assert error.variable in samples, (
                f"Settings now requires {error.variable}; set it in infra/locals.tf function_environment "
                "and give this test a sample value"
            )
            required.add(error.variable)
            values[error.variable] = samples[error.variable]
            continue
        asked |= environ.asked
        return asked, required
    raise AssertionError("Settings.from_environ kept failing")


def test_function_environment_is_what_settings_reads(
    parsed: dict[str, dict[str, Any]], local_values: dict[str, Any]
) -> None:
    reads, required = _settings_reads()
    environment = set(local_values["function_environment"])
    unknown = environment - reads
    assert not unknown, f"infra/locals.tf sets variables droptune.settings never reads: {sorted(unknown)}"
    missing = required - environment
    assert not missing, f"Settings requires {sorted(missing)} but the functions do not get them"
    emulators = {name for name in environment if name.endswith("_EMULATOR_HOST")}
    assert not emulators, f"emulator hosts must never reach the cloud functions: {sorted(emulators)}"
    (service_config,) = _resource(parsed, "google_cloudfunctions2_function", "service")["service_config"]
    assert service_config["environment_variables"] == "${local.function_environment}"


# --- the rest of the wiring -------------------------------------------------------------------


def test_bucket_notifies_the_uploads_topic_on_finalize(parsed: dict[str, dict[str, Any]]) -> None:
    notification = _resource(parsed, "google_storage_notification", "dataset_uploads")
    assert notification["topic"] == '${google_pubsub_topic.main["dataset-uploads"].id}'
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["payload_format"] == "JSON_API_V1"
    assert notification["object_name_prefix"] == "${var.watch_prefix}"


def test_scheduler_ticks_the_poller_topic(parsed: dict[str, dict[str, Any]]) -> None:
    job = _resource(parsed, "google_cloud_scheduler_job", "poller_tick")
    (target,) = job["pubsub_target"]
    assert target["topic_name"] == '${google_pubsub_topic.main["poller-ticks"].id}'
    assert any(s.topic == "poller-ticks" and s.service == "poller" for s in TOPOLOGY.push_subscriptions)


def test_firestore_indexes_and_ttl(local_values: dict[str, Any], parsed: dict[str, dict[str, Any]]) -> None:
    indexes = {
        (spec["collection"], tuple(tuple(field) for field in spec["fields"]))
        for spec in local_values["composite_indexes"].values()
    }
    assert ("jobs", (("state", "ASCENDING"), ("created_at", "ASCENDING"))) in indexes
    assert ("jobs", (("state", "ASCENDING"), ("queued_at", "ASCENDING"))) in indexes
    ttl = _resource(parsed, "google_firestore_field", "expire_at")
    assert ttl["field"] == "expire_at"
    assert "ttl_config" in ttl
    assert local_values["ttl_collections"], "no collection has a TTL policy"


def test_every_resource_is_labelled(parsed: dict[str, dict[str, Any]]) -> None:
    for rtype, name, body in _resources(parsed):
        assert rtype in LABELLED_TYPES | UNLABELLED_TYPES, (
            f"{rtype}.{name}: classify {rtype} in this test as taking labels or not"
        )
        if rtype in LABELLED_TYPES:
            assert body.get("labels") == "${local.labels}", f"{rtype}.{name} lacks labels = local.labels"


def test_each_role_grant_says_why() -> None:
    # STYLE: one comment per role saying why it is needed. A grant directly preceded by
    # another resource's closing brace (no comment in between) fails.
    grant = re.compile(r'^resource "google_\w+_iam_member" "(\w+)"', re.MULTILINE)
    for path in sorted(INFRA.glob("*.tf")):
        text = path.read_text(encoding="utf-8")
        for match in grant.finditer(text):
            before = text[: match.start()].rstrip().splitlines()
            assert before and before[-1].lstrip().startswith("#"), (
                f"{path.name}: grant {match.group(1)} has no comment saying why it is needed"
            )


def test_checkov_skips_carry_a_reason() -> None:
    skip = re.compile(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+):(.*)$")
    for path in sorted(INFRA.glob("*.tf")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if "checkov:skip" not in line:
                continue
            match = skip.search(line)
            assert match, f"{path.name}:{number}: malformed checkov skip {line.strip()!r}"
            assert len(match.group(2).strip()) >= 20, (
                f"{path.name}:{number}: skip {match.group(1)} has no reason"
            )
