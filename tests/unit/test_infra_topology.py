"""The Terraform in infra/ against the code it deploys (issue 7 §4, SPEC M4.7).

The HCL is parsed with python-hcl2 and compared name for name with droptune.topology.TOPOLOGY
(topics, push subscriptions, dead-letter topics and policies, filters, ack deadlines, backoff,
the hold subscriptions), with droptune.settings (every environment variable a function gets is
one Settings reads, and every variable Settings requires is set) and with the entry points the
services define. A rename on either side fails here instead of in a deployed project.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 parses infra/*.tf (dev extra)")

from droptune import settings as settings_module  # noqa: E402
from droptune.jobs.record import SLOTS_COLLECTION, TRANSITION_CLAIMS_COLLECTION  # noqa: E402
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
        "google_project_service_identity",
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


def test_firestore_indexes(local_values: dict[str, Any]) -> None:
    indexes = {
        (spec["collection"], tuple(tuple(field) for field in spec["fields"]))
        for spec in local_values["composite_indexes"].values()
    }
    assert ("jobs", (("state", "ASCENDING"), ("created_at", "ASCENDING"))) in indexes
    assert ("jobs", (("state", "ASCENDING"), ("queued_at", "ASCENDING"))) in indexes


# A document field that says when the document may go: expire_at, expires_at, expiry, ttl, ...
EXPIRY_FIELD = re.compile(r"^(expire|expires|expiry|expiration|ttl)(_|$)|_(expire_at|expires_at|expiry|ttl)$")
WRITE_METHODS = frozenset({"set", "create", "update"})
# Where the deployed code lives: the library and the functions' entry modules.
CODE_ROOTS = (REPO / "shared" / "droptune", REPO / "services")


def _expiry_keys(node: ast.AST) -> set[str]:
    if not isinstance(node, ast.Dict):
        return set()
    return {
        key.value
        for key in node.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and EXPIRY_FIELD.search(key.value)
    }


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
        return call.func.attr if call.func.value.id == "self" else None
    return None


def _module_name(path: Path) -> str:
    relative = path.relative_to(REPO / "shared") if path.is_relative_to(REPO / "shared") else None
    return ".".join(relative.with_suffix("").parts) if relative else ""


class _Module:
    """One module's functions, for following a document reference to its collection constant."""

    def __init__(self, path: Path) -> None:
        self.path = path
        tree = ast.parse(path.read_text(encoding="utf-8"))
        self.tree = tree
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {
            node.name: node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        # A nested function (a transaction body) sees the variables of the functions around it.
        self.enclosing: dict[int, list[ast.AST]] = {}
        for outer in self.functions.values():
            for inner in ast.walk(outer):
                if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                    self.enclosing.setdefault(id(inner), []).append(outer)

    def returned_dicts(self, name: str | None) -> list[ast.Dict]:
        fn = self.functions.get(name or "")
        if fn is None:
            return []
        return [n.value for n in ast.walk(fn) if isinstance(n, ast.Return) and isinstance(n.value, ast.Dict)]

    def constants(self, expr: ast.AST, scope: ast.AST, depth: int = 0) -> set[str]:
        """The *_COLLECTION names an expression is built from, through variables and helpers."""
        found: set[str] = set()
        if depth > 3:
            return found
        for node in ast.walk(expr):
            if isinstance(node, ast.Name) and node.id.endswith("_COLLECTION"):
                found.add(node.id)
            elif isinstance(node, ast.Name):
                for outer in self.enclosing.get(id(scope), [scope]):
                    for assign in ast.walk(outer):
                        if isinstance(assign, ast.Assign) and any(
                            isinstance(target, ast.Name) and target.id == node.id for target in assign.targets
                        ):
                            found |= self.constants(assign.value, outer, depth + 1)
            elif isinstance(node, ast.Call) and (helper := self.functions.get(_callee(node) or "")):
                for ret in ast.walk(helper):
                    if isinstance(ret, ast.Return) and ret.value is not None:
                        found |= self.constants(ret.value, helper, depth + 1)
        return found

    def writes(self) -> Iterator[tuple[ast.Call, ast.AST, ast.AST, list[ast.Dict]]]:
        """(call, scope, document reference, dicts with an expiry field) of every Firestore write."""
        for scope in self.functions.values():
            for call in ast.walk(scope):
                if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
                    continue
                if call.func.attr not in WRITE_METHODS or not call.args:
                    continue
                if len(call.args) >= 2:  # batch.set(ref, data), transaction.update(ref, data)
                    ref, data = call.args[0], call.args[1]
                else:  # ref.create(data), ref.set(data)
                    ref, data = call.func.value, call.args[0]
                dicts = [data] if isinstance(data, ast.Dict) else []
                if isinstance(data, ast.Call):
                    dicts = self.returned_dicts(_callee(data))
                dicts = [d for d in dicts if _expiry_keys(d)]
                if dicts:
                    yield call, scope, ref, dicts


def _expiring_collections() -> tuple[set[str], set[str]]:
    """The expiry field names the deployed code writes, and the collections it writes them to.

    Found statically: every Firestore write (`ref.create(data)`, `ref.set(data)`,
    `batch.set(ref, data)`, `transaction.update(ref, data)`) whose data is a dict literal with an
    expiry field, or a call to a function of the same module returning one. The document
    reference is followed (through local variables and helper functions of the same module) to
    the `*_COLLECTION` constant it names, whose value is read from the imported module.
    """
    fields: set[str] = set()
    collections: set[str] = set()
    unattributed: list[str] = []
    for path in sorted(p for root in CODE_ROOTS for p in root.rglob("*.py")):
        module = _Module(path)
        attributed: set[int] = set()
        for call, scope, ref, dicts in module.writes():
            names = module.constants(ref, scope)
            assert names, f"{path}:{call.lineno}: cannot tell which collection this write goes to"
            imported = importlib.import_module(_module_name(path))
            collections |= {getattr(imported, name) for name in names}
            for d in dicts:
                fields |= _expiry_keys(d)
                attributed.add(id(d))
        unattributed += [
            f"{path.relative_to(REPO)}:{node.lineno} {sorted(_expiry_keys(node))}"
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Dict) and _expiry_keys(node) and id(node) not in attributed
        ]
    assert not unattributed, (
        "expiry fields written outside a Firestore write this test can follow; extend "
        f"_expiring_collections so the TTL policies stay checked: {unattributed}"
    )
    return fields, collections


def test_ttl_policies_cover_exactly_the_expiring_collections(
    local_values: dict[str, Any], parsed: dict[str, dict[str, Any]]
) -> None:
    ttl = _resource(parsed, "google_firestore_field", "expire_at")
    assert ttl["for_each"] == "${toset(local.ttl_collections)}"
    assert ttl["collection"] == "${each.key}"
    assert "ttl_config" in ttl
    fields, expiring = _expiring_collections()
    assert fields == {ttl["field"]}, (
        f"the code writes expiry fields {sorted(fields)}; "
        f"infra/firestore.tf has a TTL policy on {ttl['field']!r} only"
    )
    # What the code is known to expire today, by the library's own constants: a change there
    # must show up in the derivation above (and so in infra/firestore.tf) as well.
    assert {TRANSITION_CLAIMS_COLLECTION, SLOTS_COLLECTION} <= expiring
    declared = local_values["ttl_collections"]
    assert len(set(declared)) == len(declared), f"a TTL collection is listed twice: {declared}"
    assert sorted(declared) == sorted(expiring), (
        f"infra/firestore.tf ttl_collections {sorted(declared)} != collections whose documents the code "
        f"gives {ttl['field']!r}: {sorted(expiring)}"
    )


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


def _storage_users() -> set[str]:
    """The services whose process creates a Cloud Storage client.

    Clients are created in each service's main.py (the library receives them injected), so a
    service uses Cloud Storage exactly when its main.py calls storage_client or imports
    google.cloud.storage; the library itself must not create one anywhere else.
    """
    uses = re.compile(
        r"\bstorage_client\s*\(|^\s*(?:import|from)\s+google\.cloud\.storage\b"
        r"|^\s*from\s+google\.cloud\s+import\s[^\n]*\bstorage\b",
        re.MULTILINE,
    )
    library = REPO / "shared" / "droptune"
    elsewhere = [
        str(path.relative_to(REPO))
        for path in sorted(library.rglob("*.py"))
        if path.name != "cloud_clients.py" and uses.search(path.read_text(encoding="utf-8"))
    ]
    assert not elsewhere, f"library modules create Cloud Storage clients themselves: {elsewhere}"
    return {
        service
        for service in SERVICES
        if (main := REPO / "services" / service / "main.py").is_file()
        and uses.search(main.read_text(encoding="utf-8"))
    }


def test_only_functions_that_use_cloud_storage_hold_a_bucket_role(parsed: dict[str, dict[str, Any]]) -> None:
    member = re.compile(r'^\$\{google_service_account\.function\[(?:"(\w+)"|each\.key)\]\.member\}$')
    granted: set[str] = set()
    for rtype, name, body in _resources(parsed):
        if rtype != "google_storage_bucket_iam_member":
            continue
        match = member.match(str(body["member"]))
        if not match:
            continue
        if match.group(1):
            granted.add(match.group(1))
        else:
            services = re.findall(r'"(\w+)"', str(body["for_each"]))
            assert services, f"{rtype}.{name}: cannot read the functions of for_each {body['for_each']!r}"
            granted |= set(services)
    users = _storage_users()
    assert granted <= users, (
        f"functions {sorted(granted - users)} hold a role on a bucket but never create a Cloud Storage client"
    )
    assert users <= granted, f"functions {sorted(users - granted)} use Cloud Storage without a bucket role"


# --- cloudbuild.yaml against the Makefile -------------------------------------------------------


def _make_recipe(target: str) -> list[list[str]]:
    """The commands of a Makefile target, $(VAR)s expanded and $(BIN)/ dropped, as argv lists."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    variables = dict(re.findall(r"^(\w+)\s*:?=\s*(.*?)\s*$", text, re.MULTILINE))
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    commands: list[list[str]] = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        command = line.strip()
        if command.startswith("#"):
            continue
        command = command.replace("$(BIN)/", "")
        command = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), command)
        commands.append(shlex.split(command))
    return commands


def _step_commands(step: Mapping[str, Any], venv_bin: str) -> list[list[str]]:
    script = step["args"][-1]
    return [
        shlex.split(line.strip().removeprefix(venv_bin))
        for line in script.splitlines()
        if line.strip().startswith(venv_bin)
    ]


@pytest.fixture(scope="module")
def cloudbuild() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="pyyaml reads cloudbuild.yaml (dev extra)")
    loaded: dict[str, Any] = yaml.safe_load((REPO / "cloudbuild.yaml").read_text(encoding="utf-8"))
    return loaded


def _steps(cloudbuild: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in cloudbuild["steps"]}


def test_cloudbuild_steps_have_ids_pinned_images_and_fit_the_build_timeout(
    cloudbuild: dict[str, Any],
) -> None:
    steps = cloudbuild["steps"]
    ids = [step.get("id") for step in steps]
    assert ids == ["lint", "unit", "integration", "package", "plan", "apply", "smoke"]
    for step in steps:
        assert re.fullmatch(r"\$\{_\w+_IMAGE\}", step["name"]), (
            f"{step['id']}: image not pinned by a substitution"
        )
        assert step["name"][2:-1] in cloudbuild["substitutions"], (
            f"{step['id']}: {step['name']} is not defined"
        )
    # Each step waits for the previous one, so the build must allow the sum of their timeouts.
    for previous, step in itertools.pairwise(steps):
        assert step.get("waitFor") == [previous["id"]], f"{step['id']} does not wait for {previous['id']}"
    total = sum(_seconds(step["timeout"]) for step in steps)
    assert total <= _seconds(cloudbuild["timeout"]), (
        f"step timeouts sum to {total}s, more than the build timeout {cloudbuild['timeout']}"
    )


def test_cloudbuild_installs_and_checks_what_the_makefile_does(cloudbuild: dict[str, Any]) -> None:
    steps = _steps(cloudbuild)
    installs = [command for command in _make_recipe("$(STAMP)") if command[:2] == ["pip", "install"]]
    assert any("standin" in " ".join(command) for command in installs), installs

    lint = _step_commands(steps["lint"], "/workspace/.venv/bin/")
    assert [c for c in lint if c[:2] == ["pip", "install"]] == installs, (
        "lint installs differ from `make venv`"
    )
    checks = [c for c in lint if c[:2] != ["pip", "install"]]
    assert checks == _make_recipe("lint") + _make_recipe("typecheck"), (
        "the lint step runs other checks than `make lint typecheck`"
    )

    integration = _step_commands(steps["integration"], "/tmp/venv/bin/")
    assert [c for c in integration if c[:2] == ["pip", "install"]] == installs, (
        "the integration step installs differ from `make venv` (the stand-in needs the standin extra)"
    )
    (wanted,) = _make_recipe("integration")
    ran = [c for c in integration if c[:3] == ["python", "-m", "pytest"]]
    assert len(ran) == 1 and ran[0][: len(wanted)] == wanted, f"integration runs {ran}, make runs {wanted}"
