"""One typed settings object, read once per process from the environment.

Every configuration name droptune reads is declared here and nowhere else. A missing or invalid
required setting stops the service at start with a message naming the variable and the remedy,
instead of failing later deep inside a handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from droptune import topology
from droptune.catalog import OPEN_MODEL_REGIONS, PALM_REGIONS

# Regions where open-model tuning runs (SPEC M1.2), plus those of the PaLM pipeline (M3.6):
# the catalog narrows this per model.
KNOWN_REGIONS = frozenset(OPEN_MODEL_REGIONS) | frozenset(PALM_REGIONS)

DeployPolicy = Literal["auto", "shape-from-catalog", "never"]
RetiredModelPolicy = Literal["reject", "allow", "convert"]
OverBudgetPolicy = Literal["hold", "reject"]

_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
# Bucket names: https://cloud.google.com/storage/docs/buckets#naming (dotted names excluded).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")
_TOPIC = re.compile(r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")
_HOST_PORT = re.compile(r"^(?:https?://)?[A-Za-z0-9.-]+:\d{1,5}$")
_ENDPOINT = re.compile(r"^(https?://[A-Za-z0-9.-]+(?::\d{1,5})?|[a-z0-9-]+-aiplatform\.googleapis\.com)$")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and how to fix it."""

    def __init__(self, variable: str, problem: str, remedy: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}. {remedy}")


@dataclass(frozen=True)
class Settings:
    project: str
    datasets_bucket: str
    region: str = "us-central1"
    # Uploads outside this prefix are ignored, so reports, manifests and tuning outputs written
    # into the same bucket never trigger a validation.
    watch_prefix: str = "datasets/"
    tune_topic: str = topology.TUNE_REQUESTS
    events_topic: str = topology.EVENTS
    control_topic: str = topology.JOB_CONTROL
    firestore_database: str = "(default)"
    vertex_api_endpoint: str | None = None
    storage_emulator_host: str | None = None
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None
    # Concurrent tuning jobs allowed per project; Vertex's default quota is at least one (M1.11).
    max_concurrent_jobs: int = 1
    # A job whose state has not moved for this long is reported as stalled (an event, not a failure).
    stall_after_seconds: int = 6 * 3600
    deploy_policy: DeployPolicy = "auto"
    retired_models: RetiredModelPolicy = "reject"
    default_base_model: str = "google/gemma3@gemma-3-1b-it"
    # Where tuning outputs go: gs://<bucket>/<output_prefix><job_id>/
    output_prefix: str = "tuned/"
    tuning_service_account: str | None = None
    kms_key_name: str | None = None
    # A tokenizer.json (gs:// or a local path, or a folder holding one) for exact token counts of
    # base models without a tokenizer of their own at hand; the local stack names the stand-in's.
    tokenizer_uri: str | None = None
    # Timeout applied to every blocking call to a Google API.
    api_timeout_seconds: float = 30.0
    # Pairs, not a dict: Settings is frozen and hashable, so clients can be cached per settings.
    label_pairs: tuple[tuple[str, str], ...] = ()
    # Estimated billable training tokens (tokens × epochs, M1.12) above which a job does not start
    # by itself: it is held for `droptune jobs approve` ("hold") or failed ("reject"). None: no guard.
    training_token_budget: int | None = None
    over_budget: OverBudgetPolicy = "hold"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Read settings from a mapping of environment variables (`os.environ` at the edge)."""
        reader = _Reader(environ)
        return cls(
            project=reader.required(
                "DROPTUNE_PROJECT", _PROJECT_ID, "a Google Cloud project id such as my-project-123"
            ),
            datasets_bucket=reader.required(
                "DROPTUNE_DATASETS_BUCKET", _BUCKET, "the datasets bucket name, without gs://"
            ),
            region=reader.choice("DROPTUNE_REGION", KNOWN_REGIONS, "us-central1"),
            watch_prefix=reader.prefix("DROPTUNE_WATCH_PREFIX", "datasets/"),
            tune_topic=reader.optional(
                "DROPTUNE_TUNE_TOPIC", _TOPIC, "a Pub/Sub topic id", topology.TUNE_REQUESTS
            ),
            events_topic=reader.optional(
                "DROPTUNE_EVENTS_TOPIC", _TOPIC, "a Pub/Sub topic id", topology.EVENTS
            ),
            control_topic=reader.optional(
                "DROPTUNE_CONTROL_TOPIC", _TOPIC, "a Pub/Sub topic id", topology.JOB_CONTROL
            ),
            firestore_database=reader.text("DROPTUNE_FIRESTORE_DATABASE", "(default)"),
            vertex_api_endpoint=reader.optional_or_none(
                "DROPTUNE_VERTEX_API_ENDPOINT",
                _ENDPOINT,
                "http://HOST:PORT for a local stand-in, or REGION-aiplatform.googleapis.com",
            ),
            storage_emulator_host=reader.optional_or_none(
                "STORAGE_EMULATOR_HOST", re.compile(r"^https?://[A-Za-z0-9.-]+:\d{1,5}$"), "http://HOST:PORT"
            ),
            pubsub_emulator_host=reader.optional_or_none("PUBSUB_EMULATOR_HOST", _HOST_PORT, "HOST:PORT"),
            firestore_emulator_host=reader.optional_or_none(
                "FIRESTORE_EMULATOR_HOST", _HOST_PORT, "HOST:PORT"
            ),
            max_concurrent_jobs=reader.integer("DROPTUNE_MAX_CONCURRENT_JOBS", 1, minimum=1, maximum=100),
            stall_after_seconds=reader.integer(
                "DROPTUNE_STALL_AFTER_SECONDS", 6 * 3600, minimum=60, maximum=30 * 86400
            ),
            deploy_policy=reader.choice(
                "DROPTUNE_DEPLOY", frozenset({"auto", "shape-from-catalog", "never"}), "auto"
            ),  # type: ignore[arg-type]
            retired_models=reader.choice(
                "DROPTUNE_RETIRED_MODELS", frozenset({"reject", "allow", "convert"}), "reject"
            ),  # type: ignore[arg-type]
            default_base_model=reader.text("DROPTUNE_DEFAULT_BASE_MODEL", "google/gemma3@gemma-3-1b-it"),
            output_prefix=reader.prefix("DROPTUNE_OUTPUT_PREFIX", "tuned/"),
            tuning_service_account=reader.optional_or_none(
                "DROPTUNE_TUNING_SERVICE_ACCOUNT",
                re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\.iam\.gserviceaccount\.com$"),
                "a service account email NAME@PROJECT.iam.gserviceaccount.com",
            ),
            kms_key_name=reader.optional_or_none(
                "DROPTUNE_KMS_KEY_NAME",
                re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$"),
                "projects/P/locations/L/keyRings/R/cryptoKeys/K",
            ),
            tokenizer_uri=reader.optional_or_none(
                "DROPTUNE_TOKENIZER_URI",
                re.compile(r"^(gs://[a-z0-9][a-z0-9._-]{1,220}/\S+|/\S+)$"),
                "a gs://bucket/path or an absolute path of a tokenizer.json, or of a folder holding one",
            ),
            api_timeout_seconds=reader.number(
                "DROPTUNE_API_TIMEOUT_SECONDS", 30.0, minimum=1.0, maximum=600.0
            ),
            label_pairs=tuple(sorted(reader.labels("DROPTUNE_LABELS").items())),
            training_token_budget=reader.optional_integer(
                "DROPTUNE_TRAINING_TOKEN_BUDGET", minimum=1, maximum=10**15
            ),
            over_budget=reader.choice("DROPTUNE_OVER_BUDGET", frozenset({"hold", "reject"}), "hold"),  # type: ignore[arg-type]
        )

    @property
    def option_defaults(self) -> dict[str, str]:
        """The tuning options an upload gets where neither its metadata nor its manifest sets them."""
        return {"base_model": self.default_base_model, "region": self.region}

    @property
    def labels(self) -> dict[str, str]:
        """Labels put on every Vertex AI resource droptune creates, besides its own."""
        return dict(self.label_pairs)

    @property
    def is_local(self) -> bool:
        """True when every Google API is an emulator or a stand-in (anonymous credentials apply)."""
        return bool(self.storage_emulator_host and self.pubsub_emulator_host and self.firestore_emulator_host)

    def describe(self) -> dict[str, object]:
        """The settings as plain data, for logs and `droptune status` (nothing here is secret)."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"labels": dict(self.labels)}


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def required(self, name: str, pattern: re.Pattern[str], meaning: str) -> str:
        value = self._raw(name)
        if value is None:
            raise SettingsError(name, "is required but not set", f"Set it to {meaning}.")
        return self._matching(name, value, pattern, meaning)

    def optional(self, name: str, pattern: re.Pattern[str], meaning: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else self._matching(name, value, pattern, meaning)

    def optional_or_none(self, name: str, pattern: re.Pattern[str], meaning: str) -> str | None:
        value = self._raw(name)
        return None if value is None else self._matching(name, value, pattern, meaning)

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def prefix(self, name: str, default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if value.startswith("/") or ".." in value.split("/"):
            raise SettingsError(
                name, f"{value!r} is not a relative object prefix", "Use a prefix such as datasets/."
            )
        return value if value.endswith("/") else value + "/"

    def choice(self, name: str, allowed: frozenset[str], default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if value not in allowed:
            raise SettingsError(
                name, f"{value!r} is not allowed", f"Use one of: {', '.join(sorted(allowed))}."
            )
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(
                name, f"{value!r} is not a whole number", f"Use a number from {minimum} to {maximum}."
            ) from None
        if not minimum <= number <= maximum:
            raise SettingsError(
                name, f"{number} is out of range", f"Use a number from {minimum} to {maximum}."
            )
        return number

    def optional_integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        return (
            None if self._raw(name) is None else self.integer(name, minimum, minimum=minimum, maximum=maximum)
        )

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(
                name, f"{value!r} is not a number", f"Use a number from {minimum} to {maximum}."
            ) from None
        if not minimum <= number <= maximum:
            raise SettingsError(
                name, f"{number} is out of range", f"Use a number from {minimum} to {maximum}."
            )
        return number

    def labels(self, name: str) -> dict[str, str]:
        """`key=value,key=value`, checked against the label rules of Google Cloud."""
        value = self._raw(name)
        if value is None:
            return {}
        label = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
        result: dict[str, str] = {}
        for pair in value.split(","):
            key, sep, item = pair.strip().partition("=")
            if not sep or not label.match(key) or not re.match(r"^[a-z0-9_-]{0,63}$", item):
                raise SettingsError(
                    name,
                    f"{pair!r} is not a valid label",
                    "Use key=value pairs of lowercase letters, digits, - and _, separated by commas.",
                )
            result[key] = item
        return result

    @staticmethod
    def _matching(name: str, value: str, pattern: re.Pattern[str], meaning: str) -> str:
        if not pattern.match(value):
            raise SettingsError(name, f"{value!r} is not valid", f"Set it to {meaning}.")
        return value
